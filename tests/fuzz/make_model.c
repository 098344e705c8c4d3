/* Writes the fuzz model (targets.h: tests/fuzz/model.yaml with fixed weights) as a checkpoint, and
 * optionally a training state of it (AdamW's two slots, as the trainer names them), for `make fuzz`
 * to seed the targets and to make state files, dump batches and dumps with hybrid-exp.
 * usage: make-fuzz-model CONFIG.yaml OUT.safetensors [STATE.safetensors] */
#include "core/error.h"
#include "models/checkpoint.h"
#include "tests/fuzz/targets.h"
#include <stdio.h>

int main(int argc, char **argv) {
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: %s CONFIG.yaml OUT.safetensors [STATE.safetensors]\n", argv[0]);
        return 2;
    }
    int rc = hy_fuzz_model_init(argv[1]);
    hy_model *m = hy_fuzz_model();
    if (rc == 0) rc = hy_checkpoint_save(m, argv[2], 0);
    if (rc == 0 && argc == 4) {   /* moments: the weights and their squares, any values will do */
        float *slots[2] = {hy_malloc(m->numel * sizeof(float)), hy_malloc(m->numel * sizeof(float))};
        const char *names[] = {"optim_m", "optim_v"}, *keys[] = {"step", "optimizer"}, *vals[] = {"1", "adamw"};
        if (!slots[0] || !slots[1]) rc = HY_ERR_NOMEM;
        for (size_t i = 0; rc == 0 && i < m->numel; i++) slots[0][i] = m->data[i], slots[1][i] = m->data[i] * m->data[i];
        if (rc == 0) rc = hy_train_state_save(argv[3], m, 2, names, (float *const *)slots, 2, keys, vals);
        hy_free(slots[0]), hy_free(slots[1]);
    }
    if (rc < 0) fprintf(stderr, "make-fuzz-model: %s\n", hy_last_error());
    hy_fuzz_model_free();
    return rc < 0 ? 1 : 0;
}
