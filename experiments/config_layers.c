/* The model part of the config schema: `model.blocks` (default options per block type) and
 * `model.layers` in its three forms — an explicit per-layer list, one block name (or block map)
 * per slot, or placement maps with default / every (period, offset) / at (index lists) — turned
 * into one resolved hy_block_cfg per mixer and ffn slot. No block or option name is known here:
 * everything goes through the registry, so new blocks work without touching this file. */
#include "core/error.h"
#include "experiments/yaml_tree.h"
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Which block fills one slot (mixer or ffn) of one layer, and where the config said so. */
typedef struct {
    bool assigned;
    const hy_block_ops *ops;    /* NULL = none */
    const yt_node *entry;       /* node that named the block (for messages) */
    bool entry_key;             /* entry's location is its key (every: rules) */
    const yt_node *over;        /* block map {type, options...} with options for this slot, or NULL */
} slot;

typedef struct {
    const yt_doc *d;
    const hy_model_config *m;
    int nb;                               /* registered blocks */
    hy_opts *bopts;                       /* per block: defaults + model.blocks.<name> */
    const yt_node *(*bsrc)[HY_MAX_OPTS];  /* per block and option: the model.blocks node that set it */
    const yt_node **bnode;                /* per block: model.blocks.<name>, or NULL */
    bool *used;                           /* per block: placed in some layer */
    slot *slots;                          /* 2 per layer: [2i] mixer, [2i+1] ffn */
} lctx;

static const char *kind_word(unsigned kind) { return kind == HY_KIND_MIXER ? "mixer" : "ffn"; }

/* Registry index of ops. */
static int block_index(const hy_block_ops *ops) {
    for (int i = 0; i < hy_block_count(); i++)
        if (hy_block_at(i) == ops) return i;
    return -1;
}

/* The block called `name` for a slot of `kind` (*ops = NULL for an ffn of none), or an error at n
 * (its key when at_key) listing the registered blocks of that kind (hy_block_lookup's wording). */
static int find_block(lctx *c, const yt_node *n, bool at_key, const char *name, unsigned kind,
                      const hy_block_ops **ops) {
    char msg[768];
    if (hy_block_lookup(name, kind, ops, msg, sizeof msg) < 0) return yt_fail(c->d, n, at_key, NULL, "%s", msg);
    return 0;
}

/* Index of option `k->key` of ops, or an error at the key listing the block's options. */
static int option_key(lctx *c, const yt_node *k, const hy_block_ops *ops) {
    char msg[768];
    int idx = hy_block_option_lookup(ops, k->key, msg, sizeof msg);
    return idx >= 0 ? idx : yt_fail(c->d, k, true, NULL, "%s", msg);
}

/* Applies the options of block map n (every key but `type`) to o; src[i] = the node of option i. */
static int apply_options(lctx *c, const yt_node *n, const hy_block_ops *ops, hy_opts *o, const yt_node **src) {
    for (int i = 0; i < n->n; i++) {
        const yt_node *k = n->kids[i];
        if (strcmp(k->key, "type") == 0) continue;
        int idx = option_key(c, k, ops), rc;
        if (idx < 0) return idx;
        if ((rc = yt_read_opt(c->d, k, ops, o, idx)) < 0) return rc;
        if (src) src[idx] = k;
    }
    return 0;
}

/* model.blocks: a map from block name to a map of that block's options. */
static int parse_blocks(lctx *c, const yt_node *blocks) {
    char what[160], msg[768];
    if (yt_is_null(blocks)) return 0;   /* `blocks:` with every entry commented out */
    if (blocks->kind != YT_MAP)
        return yt_fail(c->d, blocks, false, NULL, "must be a map from block name to options, got %s",
                       yt_describe(blocks, what, sizeof what));
    for (int i = 0; i < blocks->n; i++) {
        const yt_node *b = blocks->kids[i];
        const hy_block_ops *ops;
        if (hy_block_lookup(b->key, 0, &ops, msg, sizeof msg) < 0) return yt_fail(c->d, b, true, NULL, "%s", msg);
        if (b->kind != YT_MAP)
            return yt_fail(c->d, b, false, NULL, "must be a map of %s options, got %s", ops->name,
                           yt_describe(b, what, sizeof what));
        if (yt_get(b, "type"))
            return yt_fail(c->d, yt_get(b, "type"), true, NULL,
                           "unknown option 'type' for %s (the key above names the block)", ops->name);
        int bi = block_index(ops), rc;
        c->bnode[bi] = b;
        if ((rc = apply_options(c, b, ops, &c->bopts[bi], c->bsrc[bi])) < 0) return rc;
    }
    return 0;
}

/* A block for a slot of `kind`: a name ("attention", "none") or a map {type: NAME, option: value...}.
 * Options are checked here (so a spec no layer ends up using is still validated). */
static int block_spec(lctx *c, const yt_node *n, unsigned kind, const hy_block_ops **ops, const yt_node **over) {
    char what[160];
    *over = NULL;
    if (n->kind == YT_SCALAR && !yt_is_null(n)) return find_block(c, n, false, n->text, kind, ops);
    if (n->kind != YT_MAP)
        return yt_fail(c->d, n, false, NULL, "must be a block name or a map with `type` and options, got %s",
                       yt_describe(n, what, sizeof what));
    const yt_node *type = yt_get(n, "type");
    char path[1024];
    snprintf(path, sizeof path, "%s.type", n->path);
    if (!type) return yt_fail(c->d, n, false, path, "missing required key (the block's name)");
    if (type->kind != YT_SCALAR || yt_is_null(type))
        return yt_fail(c->d, type, false, NULL, "must be a block name, got %s", yt_describe(type, what, sizeof what));
    int rc = find_block(c, type, false, type->text, kind, ops);
    if (rc < 0) return rc;
    if (!*ops) {   /* none */
        for (int i = 0; i < n->n; i++)
            if (strcmp(n->kids[i]->key, "type") != 0)
                return yt_fail(c->d, n->kids[i], true, NULL, "unknown option '%.100s' (an ffn of type none has no options)",
                               n->kids[i]->key);
        return 0;
    }
    hy_opts scratch;
    hy_opts_defaults(*ops, &scratch);
    if ((rc = apply_options(c, n, *ops, &scratch, NULL)) < 0) return rc;
    *over = n;
    return 0;
}

/* Gives layer i's slot to ops, unless a rule already claimed it. */
static int claim(lctx *c, slot *s, int i, const hy_block_ops *ops, const yt_node *entry, bool entry_key,
                 const yt_node *over) {
    if (s[2 * i].assigned) {
        const slot *p = &s[2 * i];
        return yt_fail(c->d, entry, entry_key, NULL, "layer %d is already given to %s by %s", i,
                       p->ops ? p->ops->name : "none", p->entry->path);
    }
    s[2 * i] = (slot){true, ops, entry, entry_key, over};
    return 0;
}

/* every: {NAME: {period: P, offset: O}, ...}: NAME at the layers i with i % P == O. */
static int place_every(lctx *c, const yt_node *every, unsigned kind, slot *s) {
    static const char *const keys[] = {"period", "offset", NULL};
    char what[160];
    if (every->kind != YT_MAP)
        return yt_fail(c->d, every, false, NULL, "must be a map from block name to {period, offset}, got %s",
                       yt_describe(every, what, sizeof what));
    for (int r = 0; r < every->n; r++) {
        const yt_node *rule = every->kids[r], *pn = yt_get(rule, "period"), *on = yt_get(rule, "offset");
        const hy_block_ops *ops;
        long long period, offset = 0;
        char path[1024];
        snprintf(path, sizeof path, "%s.period", rule->path);
        int rc = find_block(c, rule, true, rule->key, kind, &ops);
        if (rc < 0 || (rc = yt_check_map(c->d, rule, keys)) < 0) return rc;
        if (!pn) return yt_fail(c->d, rule, false, path, "missing required key (every: NAME: {period: P, offset: O})");
        if ((rc = yt_read_int(c->d, pn, 1, INT_MAX, &period)) < 0) return rc;
        if (on && (rc = yt_read_int(c->d, on, 0, INT_MAX, &offset)) < 0) return rc;
        if (offset >= period)
            return yt_fail(c->d, on, false, NULL, "must be smaller than period (%lld), got %lld", period, offset);
        for (int i = (int)offset; i < c->m->n_layers; i += (int)period)
            if ((rc = claim(c, s, i, ops, rule, true, NULL)) < 0) return rc;
    }
    return 0;
}

/* at: {NAME: [i, j, ...], ...}: NAME at the listed layers. */
static int place_at(lctx *c, const yt_node *at, unsigned kind, slot *s) {
    char what[160];
    if (at->kind != YT_MAP)
        return yt_fail(c->d, at, false, NULL, "must be a map from block name to a list of layer indices, got %s",
                       yt_describe(at, what, sizeof what));
    for (int r = 0; r < at->n; r++) {
        const yt_node *rule = at->kids[r];
        const hy_block_ops *ops;
        int rc = find_block(c, rule, true, rule->key, kind, &ops);
        if (rc < 0) return rc;
        if (rule->kind != YT_SEQ)
            return yt_fail(c->d, rule, false, NULL, "must be a list of layer indices, got %s",
                           yt_describe(rule, what, sizeof what));
        for (int k = 0; k < rule->n; k++) {
            const yt_node *item = rule->kids[k];
            long long idx;
            if ((rc = yt_read_int(c->d, item, 0, LLONG_MAX, &idx)) < 0) return rc;
            if (idx >= c->m->n_layers)
                return yt_fail(c->d, item, false, NULL,
                               "layer index %lld is out of range: model.n_layers is %d (indices 0..%d)", idx,
                               c->m->n_layers, c->m->n_layers - 1);
            for (int j = 0; j < k; j++) {
                long long prev;
                if (yt_read_int(c->d, rule->kids[j], 0, LLONG_MAX, &prev) == 0 && prev == idx)
                    return yt_fail(c->d, item, false, NULL, "duplicate layer index %lld (already at %s)", idx,
                                   rule->kids[j]->path);
            }
            if ((rc = claim(c, s, (int)idx, ops, item, false, NULL)) < 0) return rc;
        }
    }
    return 0;
}

/* One slot of form (2)/(3): a block for every layer, or a placement map {default, every, at}. */
static int place_slot(lctx *c, const yt_node *n, unsigned kind, slot *s) {
    static const char *const keys[] = {"default", "every", "at", NULL};
    const hy_block_ops *ops;
    const yt_node *over;
    int rc;
    if (n->kind != YT_MAP || yt_get(n, "type")) {   /* one block on every layer */
        if ((rc = block_spec(c, n, kind, &ops, &over)) < 0) return rc;
        for (int i = 0; i < c->m->n_layers; i++) s[2 * i] = (slot){true, ops, n, false, over};
        return 0;
    }
    if ((rc = yt_check_map(c->d, n, keys)) < 0) return rc;
    const yt_node *every = yt_get(n, "every"), *at = yt_get(n, "at"), *def = yt_get(n, "default");
    if (every && (rc = place_every(c, every, kind, s)) < 0) return rc;
    if (at && (rc = place_at(c, at, kind, s)) < 0) return rc;
    if (def) {
        if ((rc = block_spec(c, def, kind, &ops, &over)) < 0) return rc;
        for (int i = 0; i < c->m->n_layers; i++)
            if (!s[2 * i].assigned) s[2 * i] = (slot){true, ops, def, false, over};
        return 0;
    }
    char list[256] = "";
    int missing = 0;
    for (int i = 0; i < c->m->n_layers; i++) {
        if (s[2 * i].assigned) continue;
        if (missing++ < 16) {
            char num[16];
            snprintf(num, sizeof num, "%s%d", missing > 1 ? ", " : "", i);
            strncat(list, num, sizeof list - strlen(list) - 1);
        }
    }
    if (missing)
        return yt_fail(c->d, n, false, NULL, "layer%s %s%s %s no %s: no rule claims %s and there is no default",
                       missing > 1 ? "s" : "", list, missing > 16 ? ", ..." : "", missing > 1 ? "have" : "has",
                       kind_word(kind), missing > 1 ? "them" : "it");
    return 0;
}

/* Form (1): a list of n_layers maps {mixer: BLOCK, ffn: BLOCK}. */
static int explicit_list(lctx *c, const yt_node *layers) {
    static const char *const keys[] = {"mixer", "ffn", NULL};
    if (layers->n != c->m->n_layers)
        return yt_fail(c->d, layers, false, NULL, "has %d entr%s, but model.n_layers is %d", layers->n,
                       layers->n == 1 ? "y" : "ies", c->m->n_layers);
    for (int i = 0; i < layers->n; i++) {
        const yt_node *L = layers->kids[i], *mixer = yt_get(L, "mixer"), *ffn = yt_get(L, "ffn");
        slot *s = &c->slots[2 * i];
        char path[1024];
        snprintf(path, sizeof path, "%s.mixer", L->path);
        int rc = yt_check_map(c->d, L, keys);
        if (rc < 0) return rc;
        if (!mixer) return yt_fail(c->d, L, false, path, "missing required key");
        if ((rc = block_spec(c, mixer, HY_KIND_MIXER, &s[0].ops, &s[0].over)) < 0) return rc;
        s[0].assigned = true, s[0].entry = mixer;
        s[1].assigned = true, s[1].entry = ffn ? ffn : L;
        if (ffn && (rc = block_spec(c, ffn, HY_KIND_FFN, &s[1].ops, &s[1].over)) < 0) return rc;
    }
    return 0;
}

/* Resolves options with d_model; an error is placed at the option's node, or at the block's entry. */
static int resolve_at(lctx *c, const hy_block_ops *ops, hy_opts *o, const yt_node *const *src, const yt_node *entry,
                      bool entry_key, int layer) {
    if (!ops->resolve) return 0;
    char msg[512] = "", where[64] = "";
    int bad = -1;
    if (ops->resolve(o, c->m->d_model, &bad, msg, sizeof msg) >= 0) return 0;
    const yt_node *n = bad >= 0 && bad < ops->n_opts && src[bad] ? src[bad] : entry;
    bool at_key = n == entry ? entry_key : false;
    char prefix[48];
    snprintf(prefix, sizeof prefix, "model.layers[%d]", layer);
    if (layer >= 0 && strncmp(n->path, prefix, strlen(prefix)) != 0) snprintf(where, sizeof where, " (layer %d)", layer);
    return yt_fail(c->d, n, at_key, NULL, "%s%s", msg[0] ? msg : "invalid options", where);
}

/* The resolved block of one slot. */
static int finish_slot(lctx *c, const slot *s, int layer, hy_block_cfg *out) {
    memset(out, 0, sizeof *out);
    if (!s->ops) return 0;
    int bi = block_index(s->ops), rc;
    const yt_node *src[HY_MAX_OPTS];
    memcpy(src, c->bsrc[bi], sizeof src);
    out->ops = s->ops;
    out->opts = c->bopts[bi];
    c->used[bi] = true;
    if (s->over && (rc = apply_options(c, s->over, s->ops, &out->opts, src)) < 0) return rc;
    return resolve_at(c, s->ops, &out->opts, src, s->entry, s->entry_key, layer);
}

/* Builds every layer from the slots, then validates model.blocks entries no layer uses. */
static int finish(lctx *c, hy_model_config *m) {
    int rc;
    for (int i = 0; i < m->n_layers; i++) {
        if ((rc = finish_slot(c, &c->slots[2 * i], i, &m->layers[i].mixer)) < 0) return rc;
        if ((rc = finish_slot(c, &c->slots[2 * i + 1], i, &m->layers[i].ffn)) < 0) return rc;
    }
    for (int b = 0; b < c->nb; b++) {
        if (!c->bnode[b] || c->used[b]) continue;
        hy_opts o = c->bopts[b];
        if ((rc = resolve_at(c, hy_block_at(b), &o, c->bsrc[b], c->bnode[b], true, -1)) < 0) return rc;
    }
    return 0;
}

/* Dispatches on the form of model.layers. */
static int parse_layers(lctx *c, const yt_node *model) {
    static const char *const keys[] = {"mixer", "ffn", NULL};
    char what[160], path[1024];
    const yt_node *layers = yt_get(model, "layers"), *blocks = yt_get(model, "blocks");
    int rc;
    if (blocks && (rc = parse_blocks(c, blocks)) < 0) return rc;
    snprintf(path, sizeof path, "%s.layers", model->path);
    if (!layers) return yt_fail(c->d, model, false, path, "missing required key (the layer pattern)");
    if (layers->kind == YT_SEQ) return explicit_list(c, layers);
    if (layers->kind != YT_MAP)
        return yt_fail(c->d, layers, false, NULL, "must be a list of {mixer, ffn} or a map with mixer and ffn, got %s",
                       yt_describe(layers, what, sizeof what));
    if ((rc = yt_check_map(c->d, layers, keys)) < 0) return rc;
    const yt_node *mixer = yt_get(layers, "mixer"), *ffn = yt_get(layers, "ffn");
    snprintf(path, sizeof path, "%s.mixer", layers->path);
    if (!mixer) return yt_fail(c->d, layers, false, path, "missing required key");
    if ((rc = place_slot(c, mixer, HY_KIND_MIXER, c->slots)) < 0) return rc;
    if (ffn) return place_slot(c, ffn, HY_KIND_FFN, c->slots + 1);
    for (int i = 0; i < c->m->n_layers; i++) c->slots[2 * i + 1] = (slot){true, NULL, layers, false, NULL};
    return 0;
}

int hy_config_layers(const yt_doc *d, const yt_node *model, hy_model_config *m) {
    lctx c = {.d = d, .m = m, .nb = hy_block_count()};
    size_t nb = (size_t)c.nb + 1;
    c.bopts = calloc(nb, sizeof *c.bopts);
    c.bsrc = calloc(nb, sizeof *c.bsrc);
    c.bnode = calloc(nb, sizeof *c.bnode);
    c.used = calloc(nb, sizeof *c.used);
    c.slots = calloc(2 * (size_t)m->n_layers, sizeof *c.slots);
    free(m->layers);
    m->layers = calloc((size_t)m->n_layers, sizeof *m->layers);
    int rc = 0;
    if (!c.bopts || !c.bsrc || !c.bnode || !c.used || !c.slots || !m->layers)
        rc = hy_fail_code(HY_ERR_NOMEM, "config: out of memory");
    for (int b = 0; rc == 0 && b < c.nb; b++) hy_opts_defaults(hy_block_at(b), &c.bopts[b]);
    if (rc == 0) rc = parse_layers(&c, model);
    if (rc == 0) rc = finish(&c, m);
    free(c.bopts);
    free(c.bsrc);
    free(c.bnode);
    free(c.used);
    free(c.slots);
    return rc;
}
