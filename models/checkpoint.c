/* Config <-> JSON, model checkpoints and training-state files, on top of models/safetensors.c. */
#include "models/checkpoint.h"
#include "core/error.h"
#include "core/strbuf.h"
#include "models/json.h"
#include "models/safetensors.h"
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- config -> JSON ---- */

/* One option as `, "name": value` (hy_block_cfg_each_opt's visitor for the JSON). */
static void json_opt(void *ctx, const char *name, const char *value) {
    hy_strbuf *b = ctx;
    hy_sb_add(b, ", ");
    hy_sb_json_string(b, name);
    hy_sb_printf(b, ": %s", value);
}

/* {"type": NAME, every option: value} of one block, or {"type": "none"}. */
static void block_to_json(hy_strbuf *b, const hy_block_cfg *c) {
    hy_sb_add(b, "{\"type\": ");
    hy_sb_json_string(b, c->ops ? c->ops->name : "none");
    hy_block_cfg_each_opt(c, false, json_opt, b);
    hy_sb_add(b, "}");
}

int hy_model_config_to_json(const hy_model_config *cfg, char **out) {
    *out = NULL;
    hy_strbuf b = {0};
    char coef[32];
    hy_format_float(cfg->router_aux_coef, coef, sizeof coef);
    hy_sb_printf(&b, "{\"d_model\": %d, \"vocab_size\": %d, \"n_layers\": %d, \"tie_embeddings\": %s, "
                     "\"router_aux_coef\": %s, \"layers\": [",
                 cfg->d_model, cfg->vocab_size, cfg->n_layers, cfg->tie_embeddings ? "true" : "false", coef);
    for (int i = 0; i < cfg->n_layers; i++) {
        hy_sb_add(&b, i ? ", {\"mixer\": " : "{\"mixer\": ");
        block_to_json(&b, &cfg->layers[i].mixer);
        hy_sb_add(&b, ", \"ffn\": ");
        block_to_json(&b, &cfg->layers[i].ffn);
        hy_sb_add(&b, "}");
    }
    hy_sb_add(&b, "]}");
    *out = hy_sb_take(&b);
    return *out ? 0 : HY_ERR_NOMEM;
}

/* ---- JSON -> config ---- */

/* Refuses keys of object `o` outside `allowed` (NULL-terminated); `where` names the object. */
static int check_keys(const json_t *o, const char *where, const char *const *allowed) {
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)o, key, v) {
        bool ok = false;
        for (int k = 0; allowed[k] && !ok; k++) ok = strcmp(key, allowed[k]) == 0;
        if (ok) continue;
        char list[256] = "";
        for (int k = 0; allowed[k]; k++) {
            strncat(list, k ? ", " : "", sizeof list - strlen(list) - 1);
            strncat(list, allowed[k], sizeof list - strlen(list) - 1);
        }
        return hy_fail_code(HY_ERR_CONFIG, "%s: unknown key '%.100s' (expected %s)", where, key, list);
    }
    return 0;
}

/* What a required key must hold. */
typedef enum { NEED_STRING, NEED_BOOL, NEED_NUMBER, NEED_ARRAY } need_kind;

/* The value of a required key, of the given kind. */
static const json_t *need(const json_t *o, const char *where, const char *key, need_kind kind, int *rc) {
    static const char *const names[] = {"a string", "a boolean", "a number", "an array"};
    const json_t *v = json_object_get(o, key);
    bool ok = v && (kind == NEED_STRING ? json_is_string(v) : kind == NEED_BOOL ? json_is_boolean(v)
                    : kind == NEED_NUMBER ? json_is_number(v) : json_is_array(v));
    if (!v) *rc = hy_fail_code(HY_ERR_CONFIG, "%s: missing key '%s'", where, key);
    else if (!ok)
        *rc = hy_fail_code(HY_ERR_CONFIG, "%s.%s: expected %s, got %s", where, key, names[kind], hy_json_type_name(v));
    return *rc < 0 ? NULL : v;
}

/* A required positive int key. */
static int need_int(const json_t *o, const char *where, const char *key, int *out) {
    int rc = 0;
    const json_t *v = need(o, where, key, NEED_NUMBER, &rc);
    char num[48];
    if (!v) return rc;
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > INT_MAX)
        return hy_fail_code(HY_ERR_CONFIG, "%s.%s: expected a positive integer, got %s", where, key,
                            hy_json_number_text(v, num, sizeof num));
    *out = (int)json_integer_value(v);
    return 0;
}

/* One block {"type": ..., options...} of `kind` into c. */
static int block_from_json(const json_t *o, const char *where, unsigned kind, hy_block_cfg *c) {
    int rc = 0;
    if (!json_is_object(o))
        return hy_fail_code(HY_ERR_CONFIG, "%s: expected an object, got %s", where, hy_json_type_name(o));
    const json_t *type = need(o, where, "type", NEED_STRING, &rc);
    if (!type) return rc;
    const char *type_name = json_string_value(type), *key;
    json_t *v;
    char names[512];
    hy_block_names(kind, names, sizeof names);
    const char *what = kind == HY_KIND_MIXER ? "mixer" : "ffn";
    c->ops = NULL;
    if (kind == HY_KIND_FFN && strcmp(type_name, "none") == 0) {
        json_object_foreach((json_t *)o, key, v)
            if (strcmp(key, "type"))
                return hy_fail_code(HY_ERR_CONFIG, "%s: unknown key '%.100s' (an ffn of type none has no options)", where, key);
        return 0;
    }
    const hy_block_ops *ops = hy_block_find(type_name);
    if (!ops)
        return hy_fail_code(HY_ERR_CONFIG, "%s: unknown block type '%.100s' (registered: %s%s)", where, type_name, names,
                            kind == HY_KIND_FFN ? ", none" : "");
    if (!(ops->kinds & kind))
        return hy_fail_code(HY_ERR_CONFIG, "%s: block '%s' is not %s (%ss: %s%s)", where, ops->name,
                            kind == HY_KIND_MIXER ? "a mixer" : "an ffn", what, names,
                            kind == HY_KIND_FFN ? ", none" : "");
    c->ops = ops;
    hy_opts_defaults(ops, &c->opts);
    json_object_foreach((json_t *)o, key, v) {
        if (strcmp(key, "type") == 0) continue;
        int idx = hy_opt_index(ops, key);
        if (idx < 0) {
            char list[512] = "";
            for (int k = 0; k < ops->n_opts; k++) {
                strncat(list, k ? ", " : "", sizeof list - strlen(list) - 1);
                strncat(list, ops->opts[k].name, sizeof list - strlen(list) - 1);
            }
            return hy_fail_code(HY_ERR_CONFIG, "%s: unknown option '%.100s' for %s (options: %s)", where, key, ops->name,
                                ops->n_opts ? list : "none");
        }
        char num[48];
        const char *text = json_is_number(v) ? hy_json_number_text(v, num, sizeof num)
                         : json_is_boolean(v) ? (json_is_true(v) ? "true" : "false")
                         : json_is_null(v)    ? "null"
                         : json_is_string(v) && strcmp(json_string_value(v), "auto") == 0 ? "auto" : NULL;
        if (!text)
            return hy_fail_code(HY_ERR_CONFIG, "%s.%s: expected a number, true, false or null, got %s", where, key,
                                hy_json_type_name(v));
        char msg[512];
        if (hy_opt_parse(ops, &c->opts, idx, text, msg, sizeof msg) < 0)
            return hy_fail_code(HY_ERR_CONFIG, "%s: %s", where, msg);
    }
    return 0;
}

/* Fills *out from a parsed root object (no resolve). */
static int config_from_tree(const json_t *root, hy_model_config *out) {
    static const char *const top[] = {"d_model", "vocab_size", "n_layers", "tie_embeddings", "router_aux_coef", "layers", NULL};
    static const char *const layer_keys[] = {"mixer", "ffn", NULL};
    int rc = 0;
    if (!json_is_object(root))
        return hy_fail_code(HY_ERR_CONFIG, "config: expected an object, got %s", hy_json_type_name(root));
    if ((rc = check_keys(root, "config", top)) < 0 || (rc = need_int(root, "config", "d_model", &out->d_model)) < 0 ||
        (rc = need_int(root, "config", "vocab_size", &out->vocab_size)) < 0)
        return rc;
    int n_layers = 0;
    if ((rc = need_int(root, "config", "n_layers", &n_layers)) < 0) return rc;
    const json_t *tie = need(root, "config", "tie_embeddings", NEED_BOOL, &rc);
    const json_t *coef = tie ? need(root, "config", "router_aux_coef", NEED_NUMBER, &rc) : NULL;
    const json_t *layers = coef ? need(root, "config", "layers", NEED_ARRAY, &rc) : NULL;
    if (!layers) return rc;
    out->tie_embeddings = json_is_true(tie);
    out->router_aux_coef = (float)json_number_value(coef);   /* jansson refuses numbers beyond a double */
    if (!isfinite(out->router_aux_coef))
        return hy_fail_code(HY_ERR_CONFIG, "config.router_aux_coef: %g is not a finite float", json_number_value(coef));
    if (json_array_size(layers) != (size_t)n_layers)
        return hy_fail_code(HY_ERR_CONFIG, "config.layers: %zu entries, but n_layers is %d", json_array_size(layers), n_layers);
    out->layers = calloc((size_t)n_layers, sizeof(hy_layer_cfg));
    if (!out->layers) return hy_fail_code(HY_ERR_NOMEM, "config: out of memory");
    out->n_layers = n_layers;
    for (int i = 0; i < n_layers; i++) {
        char where[64], sub[80];
        snprintf(where, sizeof where, "config.layers[%d]", i);
        const json_t *L = json_array_get(layers, (size_t)i);
        if (!json_is_object(L))
            return hy_fail_code(HY_ERR_CONFIG, "%s: expected an object, got %s", where, hy_json_type_name(L));
        if ((rc = check_keys(L, where, layer_keys)) < 0) return rc;
        const json_t *mixer = json_object_get(L, "mixer"), *ffn = json_object_get(L, "ffn");
        if (!mixer || !ffn) return hy_fail_code(HY_ERR_CONFIG, "%s: missing key '%s'", where, mixer ? "ffn" : "mixer");
        snprintf(sub, sizeof sub, "%s.mixer", where);
        if ((rc = block_from_json(mixer, sub, HY_KIND_MIXER, &out->layers[i].mixer)) < 0) return rc;
        snprintf(sub, sizeof sub, "%s.ffn", where);
        if ((rc = block_from_json(ffn, sub, HY_KIND_FFN, &out->layers[i].ffn)) < 0) return rc;
    }
    return 0;
}

int hy_model_config_from_json(const char *json, hy_model_config *out) {
    memset(out, 0, sizeof *out);
    json_t *root;
    if (hy_json_parse(json, strlen(json), &root) < 0) {
        hy_error_prefix("config: invalid JSON");
        return HY_ERR_CONFIG;
    }
    int rc = config_from_tree(root, out);
    json_decref(root);
    if (rc == 0 && (rc = hy_model_config_resolve(out)) < 0) {   /* "layers[0].mixer.x: ..." -> "config.layers[0]..." */
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", hy_last_error());
        hy_fail_code(rc, "config.%s", msg);
    }
    if (rc < 0) {
        hy_model_config_free(out);
        memset(out, 0, sizeof *out);
    }
    return rc;
}

/* ---- checkpoints ---- */

/* The tensor entries of every parameter of m, data from `arena` (laid out like m->data), named
 * "<prefix><param name>"; names[] is scratch of n_params * 2 * HY_MAX_NAME bytes. */
static void param_entries(const hy_model *m, const float *arena, const char *prefix, char *names, hy_st_entry *e) {
    for (int i = 0; i < m->n_params; i++) {
        const hy_param *p = &m->params[i];
        char *name = names + (size_t)i * 2 * HY_MAX_NAME;
        snprintf(name, 2 * HY_MAX_NAME, "%s%s", prefix, p->name);
        e[i] = (hy_st_entry){.name = name, .dtype = HY_DT_F32, .ndim = p->ndim, .data = arena + (p->data - m->data)};
        for (int d = 0; d < p->ndim; d++) e[i].shape[d] = p->shape[d];
    }
}

int hy_checkpoint_save(const hy_model *m, const char *path, long step) {
    return hy_checkpoint_save_meta(m, path, step, 0, NULL, NULL);
}

int hy_checkpoint_save_meta(const hy_model *m, const char *path, long step, int n_meta, const char *const *meta_keys,
                            const char *const *meta_values) {
    char *config = NULL, step_s[32];
    enum { MAX_META = 16 };
    if (n_meta > MAX_META) return hy_fail("%s: more than %d metadata keys", path, MAX_META);
    for (int k = 0; k < n_meta; k++)
        if (!strcmp(meta_keys[k], "format") || !strcmp(meta_keys[k], "step") || !strcmp(meta_keys[k], "config"))
            return hy_fail("%s: metadata key '%s' is reserved", path, meta_keys[k]);
    int rc = hy_model_config_to_json(&m->cfg, &config);
    if (rc < 0) return rc;
    hy_st_entry *e = malloc(sizeof *e * (size_t)(m->n_params + 1));
    char *names = malloc((size_t)(m->n_params + 1) * 2 * HY_MAX_NAME);
    if (!e || !names) rc = hy_fail_code(HY_ERR_NOMEM, "%s: out of memory", path);
    else {
        param_entries(m, m->data, "", names, e);
        snprintf(step_s, sizeof step_s, "%ld", step);
        const char *keys[3 + MAX_META] = {"format", "step", "config"}, *vals[3 + MAX_META] = {"hybrid", step_s, config};
        for (int k = 0; k < n_meta; k++) keys[3 + k] = meta_keys[k], vals[3 + k] = meta_values[k];
        rc = hy_st_write(path, 3 + n_meta, keys, vals, m->n_params, e);
    }
    free(e);
    free(names);
    free(config);
    return rc;
}

/* A config that asks for more memory than the file could fill is refused before allocating it
 * (hy_model_config_scalars): a checkpoint holds every parameter, so the model may exceed the
 * file's values by at most CONFIG_SLACK (smaller mismatches, such as one missing tensor, are then
 * reported tensor by tensor, by name). */
#define CONFIG_SLACK (1 << 20)

/* Copies tensor `name` of f into dst after checking it is F32 with p's shape. */
static int load_param(const hy_st_file *f, const char *name, const hy_param *p, float *dst) {
    const hy_st_tensor *t = hy_st_find(f, name);
    if (!t) return hy_fail("%s: tensor '%s' is missing", f->path, name);
    int64_t shape[4];
    for (int d = 0; d < p->ndim; d++) shape[d] = p->shape[d];
    int rc = hy_st_check(f, t, HY_DT_F32, p->ndim, shape, "the model's");
    if (rc == 0) memcpy(dst, t->data, p->numel * sizeof(float));
    return rc;
}

/* Refuses a tensor of f that is not "<prefix><param>" for one of the given prefixes. */
static int check_no_extra(const hy_st_file *f, const hy_model *m, int n_prefixes, const char *const *prefixes) {
    for (int t = 0; t < f->n_tensors; t++) {
        const char *name = f->tensors[t].name;
        bool known = false;
        for (int s = 0; s < n_prefixes && !known; s++) {
            size_t pl = strlen(prefixes[s]);
            if (strncmp(name, prefixes[s], pl) != 0) continue;
            for (int i = 0; i < m->n_params && !known; i++) known = strcmp(name + pl, m->params[i].name) == 0;
        }
        if (!known) return hy_fail("%s: unexpected tensor '%.200s' (not a parameter of this model)", f->path, name);
    }
    return 0;
}

/* Refuses a file whose __metadata__ format is not `want`. */
static int check_format(const hy_st_file *f, const char *want) {
    const char *fmt = hy_st_meta(f, "format");
    if (!fmt) return hy_fail("%s: no 'format' in __metadata__ (expected \"%s\")", f->path, want);
    if (strcmp(fmt, want) != 0) return hy_fail("%s: __metadata__ format is \"%.100s\", expected \"%s\"", f->path, fmt, want);
    return 0;
}

int hy_checkpoint_load(const char *path, hy_model **out, long *step) {
    *out = NULL;
    if (step) *step = 0;
    hy_st_file f;
    int rc = hy_st_open(path, &f);
    if (rc < 0) return rc;
    hy_model_config cfg;
    memset(&cfg, 0, sizeof cfg);
    hy_model *m = NULL;
    const char *config = hy_st_meta(&f, "config"), *step_s = hy_st_meta(&f, "step");
    long st = 0;
    if ((rc = check_format(&f, "hybrid")) < 0) goto done;
    if (!config) {
        rc = hy_fail("%s: no 'config' in __metadata__ (the model's JSON config)", path);
        goto done;
    }
    if (step_s) {
        char *end;
        errno = 0;
        st = strtol(step_s, &end, 10);
        if (errno || end == step_s || *end || st < 0) {
            rc = hy_fail("%s: __metadata__ step '%.40s' is not a non-negative integer", path, step_s);
            goto done;
        }
    }
    if ((rc = hy_model_config_from_json(config, &cfg)) < 0) {
        hy_error_prefix("%s", path);
        goto done;
    }
    double want = hy_model_config_scalars(&cfg), have = 0;
    for (int i = 0; i < f.n_tensors; i++) have += (double)(f.tensors[i].end - f.tensors[i].begin) / sizeof(float);
    if (want > have + CONFIG_SLACK) {   /* have: the F32 values the file's data could fill */
        rc = hy_fail("%s: the config describes a model of %.0f parameters but the file holds only %.0f values", path, want,
                     floor(have));
        goto done;
    }
    if ((rc = hy_model_create(&cfg, 0, &m)) < 0) {
        hy_error_prefix("%s", path);
        goto done;
    }
    for (int i = 0; rc == 0 && i < m->n_params; i++) rc = load_param(&f, m->params[i].name, &m->params[i], m->params[i].data);
    const char *none = "";
    if (rc == 0) rc = check_no_extra(&f, m, 1, &none);
done:
    if (rc == 0) {
        *out = m;
        if (step) *step = st;
    } else
        hy_model_free(m);
    if (cfg.layers) hy_model_config_free(&cfg);
    hy_st_close(&f);
    return rc;
}

int hy_checkpoint_meta(const char *path, hy_kv_list *meta) {
    memset(meta, 0, sizeof *meta);
    hy_st_file f;
    int rc = hy_st_open(path, &f);
    if (rc < 0) return rc;
    meta->keys = calloc((size_t)f.n_meta + 1, sizeof(char *));
    meta->values = calloc((size_t)f.n_meta + 1, sizeof(char *));
    if (!meta->keys || !meta->values) rc = hy_fail_code(HY_ERR_NOMEM, "%s: out of memory", path);
    for (int k = 0; rc == 0 && k < f.n_meta; k++) {
        meta->keys[k] = strdup(f.meta_keys[k]), meta->values[k] = strdup(f.meta_values[k]);
        meta->n++;
        if (!meta->keys[k] || !meta->values[k]) rc = hy_fail_code(HY_ERR_NOMEM, "%s: out of memory", path);
    }
    hy_st_close(&f);
    if (rc < 0) hy_kv_free(meta);
    return rc;
}

/* ---- training state ---- */

const char *hy_kv_get(const hy_kv_list *l, const char *key) {
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->keys[i], key) == 0) return l->values[i];
    return NULL;
}

void hy_kv_free(hy_kv_list *l) {
    for (int i = 0; i < l->n; i++) {
        free(l->keys[i]);
        free(l->values[i]);
    }
    free(l->keys);
    free(l->values);
    memset(l, 0, sizeof *l);
}

int hy_train_state_save(const char *path, const hy_model *m, int n_slots, const char *const *slot_names,
                        float *const *slots, int n_meta, const char *const *meta_keys, const char *const *meta_values) {
    size_t n = (size_t)n_slots * (size_t)m->n_params;
    hy_st_entry *e = malloc(sizeof *e * (n + 1));
    char *names = malloc((n + 1) * 2 * HY_MAX_NAME);
    const char **keys = malloc(sizeof(char *) * (size_t)(n_meta + 1)), **vals = malloc(sizeof(char *) * (size_t)(n_meta + 1));
    int rc = 0;
    if (!e || !names || !keys || !vals) rc = hy_fail_code(HY_ERR_NOMEM, "%s: out of memory", path);
    if (rc == 0) keys[0] = "format", vals[0] = "hybrid-train-state";
    for (int k = 0; rc == 0 && k < n_meta; k++) {
        if (strcmp(meta_keys[k], "format") == 0) rc = hy_fail("%s: metadata key 'format' is reserved", path);
        keys[k + 1] = meta_keys[k], vals[k + 1] = meta_values[k];
    }
    for (int s = 0; rc == 0 && s < n_slots; s++) {
        char prefix[HY_MAX_NAME];
        snprintf(prefix, sizeof prefix, "%s.", slot_names[s]);
        if (strlen(slot_names[s]) + 1 >= HY_MAX_NAME) rc = hy_fail("%s: slot name '%s' too long", path, slot_names[s]);
        else param_entries(m, slots[s], prefix, names + (size_t)s * m->n_params * 2 * HY_MAX_NAME, e + (size_t)s * m->n_params);
    }
    if (rc == 0) rc = hy_st_write(path, n_meta + 1, keys, vals, (int)n, e);
    free(e), free(names), free(keys), free(vals);
    return rc;
}

int hy_train_state_load(const char *path, const hy_model *m, int n_slots, const char *const *slot_names,
                        float *const *slots, hy_kv_list *meta) {
    memset(meta, 0, sizeof *meta);
    hy_st_file f;
    int rc = hy_st_open(path, &f);
    if (rc < 0) return rc;
    char **prefixes = calloc((size_t)n_slots + 1, sizeof(char *));
    if (!prefixes) rc = hy_fail_code(HY_ERR_NOMEM, "%s: out of memory", path);
    if (rc == 0) rc = check_format(&f, "hybrid-train-state");
    for (int s = 0; rc == 0 && s < n_slots; s++) {
        size_t len = strlen(slot_names[s]) + 2;
        if (!(prefixes[s] = malloc(len))) rc = hy_fail_code(HY_ERR_NOMEM, "%s: out of memory", path);
        else snprintf(prefixes[s], len, "%s.", slot_names[s]);
        for (int i = 0; rc == 0 && i < m->n_params; i++) {
            char name[3 * HY_MAX_NAME];
            snprintf(name, sizeof name, "%s%s", prefixes[s], m->params[i].name);
            rc = load_param(&f, name, &m->params[i], slots[s] + (m->params[i].data - m->data));
        }
    }
    if (rc == 0) rc = check_no_extra(&f, m, n_slots, (const char *const *)prefixes);
    if (rc == 0) {
        meta->keys = calloc((size_t)f.n_meta + 1, sizeof(char *));
        meta->values = calloc((size_t)f.n_meta + 1, sizeof(char *));
        if (!meta->keys || !meta->values) rc = hy_fail_code(HY_ERR_NOMEM, "%s: out of memory", path);
        for (int i = 0; rc == 0 && i < f.n_meta; i++) {
            meta->keys[i] = strdup(f.meta_keys[i]);
            meta->values[i] = strdup(f.meta_values[i]);
            meta->n = i + 1;
            if (!meta->keys[i] || !meta->values[i]) rc = hy_fail_code(HY_ERR_NOMEM, "%s: out of memory", path);
        }
    }
    if (rc < 0) hy_kv_free(meta);
    for (int s = 0; prefixes && s < n_slots; s++) free(prefixes[s]);
    free(prefixes);
    hy_st_close(&f);
    return rc;
}
