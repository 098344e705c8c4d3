/* hy_model_config helpers: resolve and validate a config built by any source (YAML loader,
 * checkpoint JSON, tests), deep copy, free; and the walk over a block's options that both config
 * writers (checkpoint JSON, resolved YAML) share. */
#include "core/error.h"
#include "core/strbuf.h"
#include "models/model.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void hy_model_config_defaults(hy_model_config *c) {
    memset(c, 0, sizeof *c);
    c->vocab_size = 256;
    c->tie_embeddings = true;
    c->router_aux_coef = 0.001f;
}

/* "mixer" / "ffn", for messages. */
static const char *kind_word(unsigned kind) { return kind == HY_KIND_MIXER ? "mixer" : "ffn"; }

/* "block 'swiglu' cannot be used as a mixer (mixers: ...)" into msg: the one wording of a block in
 * the wrong slot, for the lookup below and for resolve_block. */
static void wrong_kind(const hy_block_ops *ops, unsigned kind, char *msg, size_t len) {
    char names[512];
    hy_block_names(kind, names, sizeof names);
    snprintf(msg, len, "block '%s' cannot be used as %s (%ss: %s%s)", ops->name,
             kind == HY_KIND_MIXER ? "a mixer" : "an ffn", kind_word(kind), names, kind == HY_KIND_FFN ? ", none" : "");
}

int hy_block_lookup(const char *name, unsigned kind, const hy_block_ops **ops, char *msg, size_t len) {
    *ops = NULL;
    if (kind == HY_KIND_FFN && strcmp(name, "none") == 0) return 0;
    const hy_block_ops *b = hy_block_find(name);
    if (!b) {
        char names[512];
        hy_block_names(kind, names, sizeof names);
        if (!kind) snprintf(msg, len, "unknown block '%.100s' (registered: %s)", name, names);
        else
            snprintf(msg, len, "unknown %s block '%.100s' (registered %ss: %s%s)", kind_word(kind), name,
                     kind_word(kind), names, kind == HY_KIND_FFN ? ", none" : "");
        return -1;
    }
    if (kind && !(b->kinds & kind)) {
        wrong_kind(b, kind, msg, len);
        return -1;
    }
    *ops = b;
    return 0;
}

int hy_block_option_lookup(const hy_block_ops *ops, const char *key, char *msg, size_t len) {
    int idx = hy_opt_index(ops, key);
    if (idx >= 0) return idx;
    char list[512] = "";
    for (int i = 0; i < ops->n_opts; i++) {
        strncat(list, i ? ", " : "", sizeof list - strlen(list) - 1);
        strncat(list, ops->opts[i].name, sizeof list - strlen(list) - 1);
    }
    snprintf(msg, len, "unknown option '%.100s' for %s (options: %s)", key, ops->name, ops->n_opts ? list : "none");
    return -1;
}

int hy_block_option_parse(const hy_block_ops *ops, hy_opts *o, int idx, const char *text, char *msg, size_t len) {
    char raw[512];
    if (hy_opt_parse(ops, o, idx, text, raw, sizeof raw) == 0) return 0;
    /* "n_heads must be an integer, got 'x'" -> "must be an integer, got 'x'": the caller names the key */
    const char *name = ops->opts[idx].name, *p = raw;
    size_t n = strlen(name);
    if (!strncmp(raw, name, n) && raw[n] == ' ' && raw[n + 1] != '=') p = raw + n + 1;
    snprintf(msg, len, "%s", p);
    return -1;
}

/* Checks explicit option values against their specs (a config built in code skips the parser),
 * then runs the block's resolve() with d_model. `where` is "layers[3].mixer". */
static int resolve_block(hy_block_cfg *b, unsigned kind, int d_model, const char *where) {
    char names[512], msg[768];
    if (!b->ops) {
        if (kind == HY_KIND_FFN) return 0;
        hy_block_names(HY_KIND_MIXER, names, sizeof names);
        return hy_fail_code(HY_ERR_CONFIG, "%s: every layer needs a mixer (mixers: %s)", where, names);
    }
    if (!(b->ops->kinds & kind)) {
        wrong_kind(b->ops, kind, msg, sizeof msg);
        return hy_fail_code(HY_ERR_CONFIG, "%s: %s", where, msg);
    }
    for (int k = 0; k < b->ops->n_opts; k++) {
        const hy_opt_spec *s = &b->ops->opts[k];
        double v = b->opts.v[k];
        if (b->opts.is_null[k] && !(s->flags & (HY_OPT_NULLABLE | HY_OPT_DEFAULT_NULL)))
            return hy_fail_code(HY_ERR_CONFIG, "%s.%s: may not be null", where, s->name);
        if (b->opts.is_auto[k] && !(s->flags & (HY_OPT_AUTO | HY_OPT_DEFAULT_AUTO)))
            return hy_fail_code(HY_ERR_CONFIG, "%s.%s: does not accept auto", where, s->name);
        if (b->opts.is_null[k] || b->opts.is_auto[k]) continue;
        if (!isfinite(v) || v < s->min || v > s->max || (s->type == HY_OPT_INT && v != floor(v)) ||
            (s->type == HY_OPT_BOOL && v != 0 && v != 1))
            return hy_fail_code(HY_ERR_CONFIG, "%s.%s: %.9g is out of range [%g, %g]%s", where, s->name, v, s->min, s->max,
                                s->type == HY_OPT_INT ? " or not an integer" : "");
    }
    if (!b->ops->resolve) return 0;
    msg[0] = 0;
    int bad = -1;
    if (b->ops->resolve(&b->opts, d_model, &bad, msg, sizeof msg) >= 0) return 0;
    if (bad >= 0 && bad < b->ops->n_opts)
        return hy_fail_code(HY_ERR_CONFIG, "%s.%s: %s", where, b->ops->opts[bad].name, msg[0] ? msg : "invalid value");
    return hy_fail_code(HY_ERR_CONFIG, "%s: %s", where, msg[0] ? msg : "invalid options");
}

int hy_model_config_resolve(hy_model_config *cfg) {
    if (cfg->d_model < 1) return hy_fail_code(HY_ERR_CONFIG, "d_model: must be >= 1, got %d", cfg->d_model);
    if (cfg->n_layers < 1) return hy_fail_code(HY_ERR_CONFIG, "n_layers: must be >= 1, got %d", cfg->n_layers);
    if (cfg->vocab_size < 1) return hy_fail_code(HY_ERR_CONFIG, "vocab_size: must be >= 1, got %d", cfg->vocab_size);
    if (!isfinite(cfg->router_aux_coef) || cfg->router_aux_coef < 0)
        return hy_fail_code(HY_ERR_CONFIG, "router_aux_coef: must be a number >= 0, got %g", (double)cfg->router_aux_coef);
    if (!cfg->layers) return hy_fail_code(HY_ERR_CONFIG, "layers: missing (n_layers is %d)", cfg->n_layers);
    for (int i = 0; i < cfg->n_layers; i++) {
        char where[48];
        int rc;
        snprintf(where, sizeof where, "layers[%d].mixer", i);
        if ((rc = resolve_block(&cfg->layers[i].mixer, HY_KIND_MIXER, cfg->d_model, where)) < 0) return rc;
        snprintf(where, sizeof where, "layers[%d].ffn", i);
        if ((rc = resolve_block(&cfg->layers[i].ffn, HY_KIND_FFN, cfg->d_model, where)) < 0) return rc;
    }
    return 0;
}

int hy_model_config_copy(hy_model_config *dst, const hy_model_config *src) {
    hy_layer_cfg *layers = NULL;
    if (src->n_layers > 0 && src->layers) {
        layers = malloc((size_t)src->n_layers * sizeof *layers);
        if (!layers) return hy_fail_code(HY_ERR_NOMEM, "config: out of memory copying %d layers", src->n_layers);
        memcpy(layers, src->layers, (size_t)src->n_layers * sizeof *layers);
    }
    *dst = *src;
    dst->layers = layers;
    return 0;
}

void hy_model_config_free(hy_model_config *c) {
    if (!c) return;
    free(c->layers);
    c->layers = NULL;
}

/* Formats each option once, here, so the two config writers differ only in their punctuation. */
void hy_block_cfg_each_opt(const hy_block_cfg *b, bool exact_floats, hy_opt_visit_fn fn, void *ctx) {
    for (int k = 0; b->ops && k < b->ops->n_opts; k++) {
        char val[64];
        hy_opt_format(b->ops, &b->opts, k, val, sizeof val);
        if (exact_floats && b->ops->opts[k].type == HY_OPT_FLOAT && !b->opts.is_null[k] && !b->opts.is_auto[k] &&
            strtod(val, NULL) != b->opts.v[k])
            hy_format_double(b->opts.v[k], val, sizeof val);   /* more digits than %.9g keeps */
        fn(ctx, b->ops->opts[k].name, val);
    }
}

/* ---- the C config builder (include/hybrid.h) ---- */

int hy_model_config_new(int d_model, int n_layers, int vocab_size, hy_model_config **out) {
    *out = NULL;
    if (d_model < 1) return hy_fail_code(HY_ERR_CONFIG, "d_model: must be >= 1, got %d", d_model);
    if (n_layers < 1 || n_layers > 1024)
        return hy_fail_code(HY_ERR_CONFIG, "n_layers: must be in [1, 1024], got %d", n_layers);
    if (vocab_size < 1) return hy_fail_code(HY_ERR_CONFIG, "vocab_size: must be >= 1, got %d", vocab_size);
    hy_model_config *c = malloc(sizeof *c);
    if (!c) return hy_fail_code(HY_ERR_NOMEM, "config: out of memory");
    hy_model_config_defaults(c);
    c->d_model = d_model, c->n_layers = n_layers, c->vocab_size = vocab_size;
    c->layers = calloc((size_t)n_layers, sizeof *c->layers);
    if (!c->layers) {
        free(c);
        return hy_fail_code(HY_ERR_NOMEM, "config: out of memory for %d layers", n_layers);
    }
    *out = c;
    return 0;
}

/* "layers[3]" or, for layer -1, "layers[*]": how the builder's messages name a layer. */
static void layer_name(char *out, size_t len, int layer) {
    if (layer < 0) snprintf(out, len, "layers[*]");
    else snprintf(out, len, "layers[%d]", layer);
}

/* Refuses a layer index outside [lo, n_layers). */
static int check_layer(const hy_model_config *cfg, int layer, int lo) {
    if (layer >= lo && layer < cfg->n_layers) return 0;
    return hy_fail_code(HY_ERR_CONFIG, "layer %d: out of range (n_layers is %d%s)", layer, cfg->n_layers,
                        lo < 0 ? "; -1 means every layer" : "");
}

int hy_model_config_set_layer(hy_model_config *cfg, int layer, const char *mixer, const char *ffn) {
    char where[32], msg[768];
    int rc = check_layer(cfg, layer, -1);
    if (rc < 0) return rc;
    layer_name(where, sizeof where, layer);
    const hy_block_ops *mo, *fo;
    if (!mixer) return hy_fail_code(HY_ERR_CONFIG, "%s.mixer: every layer needs a mixer, got NULL", where);
    if (hy_block_lookup(mixer, HY_KIND_MIXER, &mo, msg, sizeof msg) < 0)
        return hy_fail_code(HY_ERR_CONFIG, "%s.mixer: %s", where, msg);
    if (hy_block_lookup(ffn ? ffn : "none", HY_KIND_FFN, &fo, msg, sizeof msg) < 0)
        return hy_fail_code(HY_ERR_CONFIG, "%s.ffn: %s", where, msg);
    for (int i = layer < 0 ? 0 : layer; i < (layer < 0 ? cfg->n_layers : layer + 1); i++) {
        hy_layer_cfg *L = &cfg->layers[i];
        memset(L, 0, sizeof *L);
        L->mixer.ops = mo;
        hy_opts_defaults(mo, &L->mixer.opts);
        L->ffn.ops = fo;
        if (fo) hy_opts_defaults(fo, &L->ffn.opts);
    }
    return 0;
}

/* Parses `value` for option `key` of ops into *o (unchanged on error); `where` prefixes messages. */
static int parse_option(const hy_block_ops *ops, hy_opts *o, const char *key, const char *value, const char *where,
                        int *idx) {
    char msg[768];
    if (!key) return hy_fail_code(HY_ERR_CONFIG, "%s: option key is NULL", where);
    if ((*idx = hy_block_option_lookup(ops, key, msg, sizeof msg)) < 0)
        return hy_fail_code(HY_ERR_CONFIG, "%s.%s: %s", where, key, msg);
    if (!value) return hy_fail_code(HY_ERR_CONFIG, "%s.%s: value is NULL (write \"null\" for a null option)", where, key);
    if (hy_block_option_parse(ops, o, *idx, value, msg, sizeof msg) < 0)
        return hy_fail_code(HY_ERR_CONFIG, "%s.%s: %s", where, key, msg);
    return 0;
}

int hy_model_config_set_option(hy_model_config *cfg, const char *block, const char *key, const char *value) {
    char msg[768];
    const hy_block_ops *ops;
    if (!block) return hy_fail_code(HY_ERR_CONFIG, "hy_model_config_set_option: block name is NULL");
    if (hy_block_lookup(block, 0, &ops, msg, sizeof msg) < 0) return hy_fail_code(HY_ERR_CONFIG, "%s", msg);
    hy_opts parsed;
    int idx, rc, n = 0;
    hy_opts_defaults(ops, &parsed);
    if ((rc = parse_option(ops, &parsed, key, value, ops->name, &idx)) < 0) return rc;
    for (int i = 0; i < cfg->n_layers; i++) {
        hy_block_cfg *b[2] = {&cfg->layers[i].mixer, &cfg->layers[i].ffn};
        for (int k = 0; k < 2; k++) {
            if (b[k]->ops != ops) continue;
            b[k]->opts.v[idx] = parsed.v[idx];
            b[k]->opts.is_null[idx] = parsed.is_null[idx];
            b[k]->opts.is_auto[idx] = parsed.is_auto[idx];
            n++;
        }
    }
    if (!n)
        return hy_fail_code(HY_ERR_CONFIG, "%s.%s: no layer has block '%s' (place it with hy_model_config_set_layer first)",
                            ops->name, key, ops->name);
    return 0;
}

int hy_model_config_set_layer_option(hy_model_config *cfg, int layer, const char *slot, const char *key,
                                     const char *value) {
    char where[48];
    int rc = check_layer(cfg, layer, 0), idx;
    if (rc < 0) return rc;
    if (!slot || (strcmp(slot, "mixer") != 0 && strcmp(slot, "ffn") != 0))
        return hy_fail_code(HY_ERR_CONFIG, "layers[%d]: slot must be \"mixer\" or \"ffn\", got %s%.40s%s", layer,
                            slot ? "'" : "", slot ? slot : "NULL", slot ? "'" : "");
    hy_block_cfg *b = slot[0] == 'm' ? &cfg->layers[layer].mixer : &cfg->layers[layer].ffn;
    snprintf(where, sizeof where, "layers[%d].%s", layer, slot);
    if (!b->ops)
        return hy_fail_code(HY_ERR_CONFIG, "%s: has no block (give it one with hy_model_config_set_layer first)", where);
    return parse_option(b->ops, &b->opts, key, value, where, &idx);
}

void hy_model_config_set_tie_embeddings(hy_model_config *cfg, bool tie) { cfg->tie_embeddings = tie; }
void hy_model_config_set_router_aux_coef(hy_model_config *cfg, float coef) { cfg->router_aux_coef = coef; }

void hy_model_config_destroy(hy_model_config *cfg) {
    if (!cfg) return;
    hy_model_config_free(cfg);
    free(cfg);
}
