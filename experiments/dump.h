/* `hybrid-exp dump` (SPEC §4): one forward and backward of a checkpoint on a given batch, with
 * logits, losses and every parameter's gradient written to a safetensors file. This is how the
 * toolkit is checked against PyTorch, and how users inspect gradients. */
#ifndef HY_EXPERIMENTS_DUMP_H
#define HY_EXPERIMENTS_DUMP_H

/* checkpoint: a model file (hy_checkpoint_save); batch: a safetensors file with `tokens` (I32,
 * shape (B, T+1)): inputs tokens[:, :T], targets tokens[:, 1:]. Writes `out` with `logits`
 * (B, T, V), 0-d `loss`, `ce_loss`, `aux_loss`, and `grad.<name>` for every parameter. */
int hy_dump(const char *checkpoint, const char *batch, const char *out);

#endif
