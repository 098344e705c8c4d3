/* Model checkpoints, training-state files and the model config as JSON (SPEC §4).
 *
 * A checkpoint (hy_checkpoint_save/load in include/hybrid.h) is a safetensors file holding every
 * parameter as F32 under its SPEC name, with __metadata__ {format: "hybrid", step, config: JSON}.
 * The training state is a second safetensors file beside it (format "hybrid-train-state"): each
 * optimizer slot (an arena laid out like the model's parameter arena) as tensors
 * "<slot>.<param name>", plus string key/values (step, RNG, ...). Loading refuses any mismatch —
 * a missing or extra tensor, a wrong dtype or shape — with a message naming file and tensor. */
#ifndef HY_MODELS_CHECKPOINT_H
#define HY_MODELS_CHECKPOINT_H
#include "models/model.h"

/* Parses the SPEC §4 config JSON (as hy_model_config_to_json writes it) into *out and resolves it.
 * Refuses an unknown key or block type, a missing key, a wrong type; messages name the key
 * ("config.layers[3].mixer: unknown block type 'mamba2' (registered: attention)"). Options that are
 * absent take their defaults. On error *out is left freed (empty). */
int hy_model_config_from_json(const char *json, hy_model_config *out);

/* String key/values read from a training state's metadata. Zero-initialised = empty. */
typedef struct {
    int n;
    char **keys, **values;
} hy_kv_list;
const char *hy_kv_get(const hy_kv_list *l, const char *key);   /* NULL if absent */
void hy_kv_free(hy_kv_list *l);

/* hy_checkpoint_save with n_meta more string pairs in __metadata__ (what the model was trained
 * on: the trainer records the data format and the tokenizer). "format", "step", "config" are
 * reserved. */
int hy_checkpoint_save_meta(const hy_model *m, const char *path, long step, int n_meta, const char *const *meta_keys,
                            const char *const *meta_values);
/* Every __metadata__ pair of the safetensors file at path (free with hy_kv_free). */
int hy_checkpoint_meta(const char *path, hy_kv_list *meta);

/* Writes slots[s] (each m->numel floats, parameter i at offset m->params[i].data - m->data) as
 * tensors "<slot_names[s]>.<param name>", and the metadata pairs (plus format). Atomic. */
int hy_train_state_save(const char *path, const hy_model *m, int n_slots, const char *const *slot_names,
                        float *const *slots, int n_meta, const char *const *meta_keys, const char *const *meta_values);
/* Fills slots[] from a file written by hy_train_state_save for the same model; *meta gets every
 * metadata pair (free with hy_kv_free; left empty on error). */
int hy_train_state_load(const char *path, const hy_model *m, int n_slots, const char *const *slot_names,
                        float *const *slots, hy_kv_list *meta);

#endif
