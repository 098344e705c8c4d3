/* The experiment schema (see experiment.h): top level, variants (inline model or a model file),
 * sweep, budget, bench. Every run's plain run-config tree is composed from clones of the located
 * nodes of the experiment file and of the model files (so messages name the right file), and is
 * read by the run-config schema of config.c. */
#include "core/error.h"
#include "experiments/experiment.h"
#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const top_keys[] = {"name",  "seed",   "threads", "out_dir", "compute", "data",      "train",
                                       "variants", "sweep", "budget", "bench",   "eval",    "reference", NULL};
/* the swept axes, in this order (seed is also given as `seeds: N`) */
static const char *const sweep_keys[] = {"seq_len", "d_model", "d_state", "lr", "seed", "precision", NULL};
enum { AX_SEQ, AX_DMODEL, AX_DSTATE, AX_LR, AX_SEED, AX_PREC, N_AXES };
static const char *const precision_values[] = {"f32", "bf16", NULL};   /* = compute.precision's words */
#define HY_EXP_MAX_SEEDS 1000
static const char *const budget_keys[] = {"steps", "tokens", "seconds", NULL};

void hy_experiment_detect(const char *path, bool *is_exp) {
    yt_doc d = {.file = path};
    *is_exp = false;
    if (yt_parse_file(&d, path) == 0)
        for (int k = 7; top_keys[k]; k++) *is_exp |= yt_get(d.root, top_keys[k]) != NULL;
    yt_free(&d);
}

/* What loading needs beside the experiment: the parsed model files (kept until the end). */
typedef struct {
    yt_doc exp;
    yt_doc *models;
    char **model_paths;
    int n_models;
    unsigned long long *seeds;   /* the swept seeds (freed with the context) */
    hy_experiment *e;
} ectx;

/* Parses the model file named by scalar n (relative to the experiment's folder); *model = its
 * `model` node. A model file holds `model:` and optionally `name:`. */
static int model_file(ectx *c, const yt_node *n, const yt_node **model, const char **file) {
    static const char *const keys[] = {"name", "model", NULL};
    char path[HY_PATH_MAX * 2];
    const char *slash = strrchr(c->exp.file, '/');
    if (n->text[0] == '/' || !slash) snprintf(path, sizeof path, "%s", n->text);
    else snprintf(path, sizeof path, "%.*s/%s", (int)(slash - c->exp.file), c->exp.file, n->text);
    for (int i = 0; i < c->n_models; i++)
        if (!strcmp(c->model_paths[i], path)) {
            *model = yt_get(c->models[i].root, "model"), *file = c->model_paths[i];
            return 0;
        }
    FILE *f = fopen(path, "r");
    if (!f) return yt_fail(&c->exp, n, false, NULL, "cannot open the model file %s", path);
    fclose(f);
    yt_doc *nm = realloc(c->models, sizeof *nm * (size_t)(c->n_models + 1));
    char **np = realloc(c->model_paths, sizeof *np * (size_t)(c->n_models + 1));
    if (nm) c->models = nm;
    if (np) c->model_paths = np;
    if (!nm || !np) return HY_ERR_NOMEM;
    char *keep = strdup(path);
    if (!keep) return HY_ERR_NOMEM;
    c->model_paths[c->n_models] = keep;
    c->models[c->n_models] = (yt_doc){.file = keep};
    yt_doc *d = &c->models[c->n_models++];
    int rc = yt_parse_file(d, keep);
    if (rc < 0 || (rc = yt_check_map(d, d->root, keys)) < 0) return rc;
    if (!(*model = yt_get(d->root, "model")))
        return yt_fail(d, d->root, false, "model", "missing required key (a model file holds `model:`)");
    *file = keep;
    return 0;
}

/* A non-empty list (sweep values), or an error. */
static int want_list(ectx *c, const yt_node *n) {
    char what[160];
    if (n->kind != YT_SEQ || n->n == 0)
        return yt_fail(&c->exp, n, false, NULL, "must be a non-empty list, e.g. [64, 256, 1024], got %s",
                       yt_describe(n, what, sizeof what));
    return 0;
}

/* bench: off | on | {blocks: all | [names], min_T, max_T, d_model, quick}. */
static int read_bench(ectx *c, const yt_node *n, hy_exp_bench *b) {
    static const char *const keys[] = {"blocks", "min_T", "max_T", "d_model", "quick", NULL};
    b->min_T = 64, b->max_T = 4096, b->d_model = 256;
    if (n->kind == YT_SCALAR) {
        bool on;
        if (!strcmp(n->text, "on") || !strcmp(n->text, "off")) on = !strcmp(n->text, "on");
        else {
            int rc = yt_read_bool(&c->exp, n, &on);
            if (rc < 0) return yt_fail(&c->exp, n, false, NULL, "must be off, on, or a map {blocks, min_T, max_T, d_model, quick}");
        }
        b->enabled = on;
        return 0;
    }
    int rc = yt_check_map(&c->exp, n, keys);
    if (rc < 0) return rc;
    b->enabled = true;
    long long v;
    const yt_node *k;
    if ((k = yt_get(n, "min_T")) && (rc = yt_read_int(&c->exp, k, 1, 1 << 24, &v)) == 0) b->min_T = (int)v;
    if (rc < 0) return rc;
    if ((k = yt_get(n, "max_T")) && (rc = yt_read_int(&c->exp, k, 1, 1 << 24, &v)) == 0) b->max_T = (int)v;
    if (rc < 0) return rc;
    if ((k = yt_get(n, "d_model")) && (rc = yt_read_int(&c->exp, k, 1, 65536, &v)) == 0) b->d_model = (int)v;
    if (rc < 0) return rc;
    if ((k = yt_get(n, "quick")) && (rc = yt_read_bool(&c->exp, k, &b->quick)) < 0) return rc;
    if (b->max_T < b->min_T)
        return yt_fail(&c->exp, yt_get(n, "max_T"), false, NULL, "must be >= bench.min_T (%d), got %d", b->min_T, b->max_T);
    const yt_node *bl = yt_get(n, "blocks");
    if (!bl || (bl->kind == YT_SCALAR && !strcmp(bl->text, "all"))) return 0;
    if (want_list(c, bl) < 0) return HY_ERR_CONFIG;
    char names[512];
    hy_block_names(0, names, sizeof names);
    for (int i = 0; i < bl->n; i++) {
        const yt_node *it = bl->kids[i];
        if (it->kind != YT_SCALAR || !hy_block_find(it->text))
            return yt_fail(&c->exp, it, false, NULL, "unknown block (registered: %s)", names);
        size_t len = strlen(b->blocks);
        snprintf(b->blocks + len, sizeof b->blocks - len, "%s%s", len ? "," : "", it->text);
    }
    return 0;
}

/* The sweep's axes: for each key, its list (NULL = not swept) and values read as numbers. The
 * seeds are kept as numbers (from `seed: [...]` or `seeds: N` counting up from the top-level seed). */
typedef struct {
    const yt_node *list[N_AXES];   /* seq_len, d_model, d_state, lr, seed, precision */
    int len[N_AXES];
    unsigned long long *seeds;     /* len[AX_SEED] values when seeds are swept */
    const yt_node *seed_at;        /* where the seeds were given (for messages and locations) */
} axes;

/* sweep.seeds: N -> seeds base, base+1, ..., base+N-1 (base = the top-level seed, default 1234). */
static int read_seed_count(ectx *c, const yt_node *sweep, axes *a) {
    const yt_node *n = yt_get(sweep, "seeds"), *top = yt_get(c->exp.root, "seed");
    long long count, base = 1234;
    int rc = yt_read_int(&c->exp, n, 1, HY_EXP_MAX_SEEDS, &count);
    if (rc < 0) return rc;
    if (yt_get(sweep, "seed")) return yt_fail(&c->exp, n, true, NULL, "sweep.seed is also set: give the seeds in one place");
    if (top && (rc = yt_read_int(&c->exp, top, 0, LLONG_MAX, &base)) < 0) return rc;
    if (!(c->seeds = a->seeds = calloc((size_t)count, sizeof *a->seeds))) return HY_ERR_NOMEM;
    for (long long i = 0; i < count; i++) a->seeds[i] = (unsigned long long)base + (unsigned long long)i;
    a->len[AX_SEED] = (int)count, a->seed_at = n;
    return 0;
}

static int read_sweep(ectx *c, const yt_node *sweep, axes *a) {
    static const char *const allowed[] = {"seq_len", "d_model", "d_state", "lr", "seed", "seeds", "precision", NULL};
    memset(a, 0, sizeof *a);
    for (int k = 0; k < N_AXES; k++) a->len[k] = 1;
    if (!sweep) return 0;
    int rc = yt_check_map(&c->exp, sweep, allowed);
    if (rc < 0) return rc;
    if (yt_get(sweep, "seeds") && (rc = read_seed_count(c, sweep, a)) < 0) return rc;
    for (int k = 0; k < N_AXES; k++) {
        const yt_node *l = yt_get(sweep, sweep_keys[k]);
        if (!l || (k == AX_SEED && a->seeds)) continue;
        if ((rc = want_list(c, l)) < 0) return rc;
        if (k == AX_SEED && l->n > HY_EXP_MAX_SEEDS)
            return yt_fail(&c->exp, l, false, NULL, "at most %d seeds, got %d", HY_EXP_MAX_SEEDS, l->n);
        if (k == AX_SEED && yt_get(c->exp.root, "seed"))
            return yt_fail(&c->exp, yt_get(c->exp.root, "seed"), true, NULL,
                           "sweep.seed is also set: give the seeds in one place (or use sweep.seeds: N from this seed)");
        if (k == AX_SEED && !(c->seeds = a->seeds = calloc((size_t)l->n, sizeof *a->seeds))) return HY_ERR_NOMEM;
        for (int i = 0; i < l->n; i++) {   /* typed now, so labels and folder names are numbers */
            long long v;
            double x;
            if (k == AX_PREC) {   /* a word of compute.precision, each once */
                const yt_node *it = l->kids[i];
                bool known = false;
                for (int w = 0; precision_values[w] && it->kind == YT_SCALAR; w++) known |= !strcmp(it->text, precision_values[w]);
                char what[160];
                if (!known)
                    return yt_fail(&c->exp, it, false, NULL, "must be one of f32, bf16; got %s", yt_describe(it, what, sizeof what));
                for (int j = 0; j < i; j++)
                    if (!strcmp(l->kids[j]->text, it->text)) return yt_fail(&c->exp, it, false, NULL, "duplicate precision %s", it->text);
                continue;
            }
            rc = k == AX_LR     ? yt_read_num(&c->exp, l->kids[i], 0, 1e9, true, false, &x)
                 : k == AX_SEED ? yt_read_int(&c->exp, l->kids[i], 0, LLONG_MAX, &v)
                                : yt_read_int(&c->exp, l->kids[i], 1, 1 << 24, &v);
            if (rc < 0) return rc;
            if (k == AX_SEED) {
                a->seeds[i] = (unsigned long long)v;
                for (int j = 0; j < i; j++)
                    if (a->seeds[j] == a->seeds[i]) return yt_fail(&c->exp, l->kids[i], false, NULL, "duplicate seed %lld", v);
            }
        }
        a->list[k] = l, a->len[k] = l->n;
        if (k == AX_SEED) a->seed_at = l;
    }
    return 0;
}

/* eval: {seq_len: [..], tokens: N | bytes: N} — the common evaluation of every corpus run: at its
 * own seq_len and at each of these lengths (default: the swept seq_len values), over the same
 * first `tokens` tokens of the validation split (default 262144), or over the tokens that cover
 * its first `bytes` bytes of text (the same text for a byte model and a tokenized one). */
static int read_eval(ectx *c, const axes *a, hy_experiment *e) {
    static const char *const keys[] = {"seq_len", "tokens", "bytes", NULL};
    const yt_node *n = yt_get(c->exp.root, "eval"), *l = n ? yt_get(n, "seq_len") : NULL, *t = n ? yt_get(n, "tokens") : NULL,
                  *b = n ? yt_get(n, "bytes") : NULL;
    int rc;
    e->eval_tokens = 262144;
    if (n && yt_get(yt_get(c->exp.root, "data"), "task"))
        return yt_fail(&c->exp, n, true, NULL, "is for corpus experiments; a task experiment evaluates at "
                                               "data.task.eval_seq_len on the task's own held-out examples");
    if (n && (rc = yt_check_map(&c->exp, n, keys)) < 0) return rc;
    if (t && b) return yt_fail(&c->exp, b, true, NULL, "give eval.tokens or eval.bytes, not both");
    if (t || b) {
        long long v;
        if ((rc = yt_read_int(&c->exp, t ? t : b, 1, 1LL << 40, &v)) < 0) return rc;
        if (t) e->eval_tokens = (long)v;
        else e->eval_bytes = (long)v;
    }
    if (!l) l = a->list[AX_SEQ];
    else if ((rc = want_list(c, l)) < 0) return rc;
    for (int i = 0; l && i < l->n; i++) {
        long long v;
        if ((rc = yt_read_int(&c->exp, l->kids[i], 1, 1 << 24, &v)) < 0) return rc;
        bool dup = false;
        for (int j = 0; j < e->n_eval; j++) dup |= e->eval_seq_len[j] == (int)v;
        if (dup) continue;
        if (e->n_eval == HY_EXP_MAX_EVAL)
            return yt_fail(&c->exp, l, false, NULL, "at most %d evaluation lengths", HY_EXP_MAX_EVAL);
        e->eval_seq_len[e->n_eval++] = (int)v;
    }
    return 0;
}

/* Puts a clone of n under key `key` into map m. */
static int put_clone(yt_node *m, const yt_node *n, const char *key) {
    yt_node *k = yt_clone(n, NULL, 0, NULL);
    if (!k) return HY_ERR_NOMEM;
    free(k->key);
    k->key = strdup(key);
    return k->key ? yt_put(m, k) : HY_ERR_NOMEM;
}

/* model.blocks.<B>.d_state = item for every registered block with a d_state option. */
static int put_d_state(yt_node *model, const yt_node *item) {
    yt_node *blocks = (yt_node *)yt_get(model, "blocks");
    if (!blocks || blocks->kind != YT_MAP) {
        yt_node *nb = yt_new_map("blocks", "model.blocks", item);
        if (!nb || yt_put(model, nb) < 0) return HY_ERR_NOMEM;
        blocks = nb;
    }
    for (int i = 0; i < hy_block_count(); i++) {
        const hy_block_ops *ops = hy_block_at(i);
        if (hy_opt_index(ops, "d_state") < 0) continue;
        yt_node *b = (yt_node *)yt_get(blocks, ops->name);
        if (!b || b->kind != YT_MAP) {
            char path[256];
            snprintf(path, sizeof path, "model.blocks.%s", ops->name);
            yt_node *nb = yt_new_map(ops->name, path, item);
            if (!nb || yt_put(blocks, nb) < 0) return HY_ERR_NOMEM;
            b = nb;
        }
        if (put_clone(b, item, "d_state") < 0) return HY_ERR_NOMEM;
    }
    return 0;
}

/* One run: the composed tree of variant v at sweep point idx[], read as a run config. */
static int compose_run(ectx *c, const yt_node *var, const yt_node *model, const char *model_file, const axes *a,
                       const int idx[N_AXES], hy_exp_run *run) {
    const yt_node *root = c->exp.root, *vname = yt_get(var, "name");
    hy_experiment *e = c->e;
    int rc = HY_ERR_NOMEM;
    /* labels */
    snprintf(run->variant, sizeof run->variant, "%s", vname->text);
    static const int labelled[] = {AX_DMODEL, AX_DSTATE, AX_PREC};   /* the lr and the seed are columns of their own */
    for (int li = 0; li < 3; li++) {
        int k = labelled[li];
        if (a->list[k] && a->len[k] > 1) {
            size_t len = strlen(run->variant);
            snprintf(run->variant + len, sizeof run->variant - len, ":%s=%s", sweep_keys[k], a->list[k]->kids[idx[k]]->text);
        }
    }
    const yt_node *seq = a->list[0] ? a->list[0]->kids[idx[0]] : NULL;
    yt_node *r = yt_new_map(NULL, "", NULL), *m = NULL, *t = NULL;
    if (!r) return rc;
    static const char *const copy[] = {"seed", "threads", "compute", "data"};
    for (int k = 0; k < 4; k++)
        if (yt_get(root, copy[k]) && !(k == 0 && a->seeds) && put_clone(r, yt_get(root, copy[k]), copy[k]) < 0) goto out;
    yt_node *name = yt_new_scalar("name", run->variant, vname->path, vname);
    if (!name || yt_put(r, name) < 0) goto out;
    /* model */
    if (!(m = yt_clone(model, model_file, 0, NULL))) goto out;
    free(m->key);
    if (!(m->key = strdup("model")) || yt_put(r, m) < 0) goto out;
    if (a->list[AX_DMODEL] && put_clone(m, a->list[AX_DMODEL]->kids[idx[AX_DMODEL]], "d_model") < 0) goto out;
    if (a->list[AX_DSTATE] && put_d_state(m, a->list[AX_DSTATE]->kids[idx[AX_DSTATE]]) < 0) goto out;
    if (a->list[AX_PREC]) {   /* compute.precision of the run, in the experiment's compute map or a new one */
        yt_node *cm = (yt_node *)yt_get(r, "compute");
        if (!cm) {
            if (!(cm = yt_new_map("compute", "compute", a->list[AX_PREC])) || yt_put(r, cm) < 0) goto out;
        }
        if (cm->kind == YT_MAP && put_clone(cm, a->list[AX_PREC]->kids[idx[AX_PREC]], "precision") < 0) goto out;
    }
    if (a->seeds) {   /* the run's seed replaces the top-level one */
        char text[32];
        snprintf(text, sizeof text, "%llu", a->seeds[idx[AX_SEED]]);
        yt_node *sn = yt_new_scalar("seed", text, a->seed_at->path, a->seed_at);
        if (!sn || yt_put(r, sn) < 0) goto out;
    }
    /* train: experiment train, budget, variant train, sweep point */
    const yt_node *tr = yt_get(root, "train"), *budget = yt_get(root, "budget"), *vt = yt_get(var, "train");
    t = tr && tr->kind == YT_MAP ? yt_clone(tr, NULL, 0, NULL) : yt_new_map("train", "train", NULL);
    if (!t || yt_put(r, t) < 0) goto out;
    for (int i = 0; budget && i < budget->n; i++)
        if (put_clone(t, budget->kids[i], budget->kids[i]->key) < 0) goto out;
    for (int i = 0; vt && i < vt->n; i++)
        if (put_clone(t, vt->kids[i], vt->kids[i]->key) < 0) goto out;
    if (seq && put_clone(t, seq, "seq_len") < 0) goto out;
    if (a->list[AX_LR] && put_clone(t, a->list[AX_LR]->kids[idx[AX_LR]], "lr") < 0) goto out;
    /* out_dir: filled after the seq_len is known */
    yt_doc d = {.file = c->exp.file, .sets = c->exp.sets, .n_sets = c->exp.n_sets, .root = r};
    if ((rc = hy_run_config_from_tree(&d, &run->cfg)) < 0) goto out;
    run->seq_len = run->cfg.seq_len;
    /* the folder: variant and T, then the lr and the seed where they are swept */
    int len = snprintf(run->id, sizeof run->id, "%s-T%d", run->variant, run->seq_len);
    if (a->list[AX_LR] && a->len[AX_LR] > 1)
        len += snprintf(run->id + len, sizeof run->id - (size_t)len, "-lr%s", a->list[AX_LR]->kids[idx[AX_LR]]->text);
    if (a->seeds && a->len[AX_SEED] > 1 && len < (int)sizeof run->id)
        snprintf(run->id + len, sizeof run->id - (size_t)len, "-s%llu", a->seeds[idx[AX_SEED]]);
    if (snprintf(run->cfg.out_dir, sizeof run->cfg.out_dir, "%s/runs/%s", e->out_dir, run->id) >= HY_PATH_MAX)
        rc = hy_fail_code(HY_ERR_CONFIG, "%s: out_dir %s/runs/%s is too long", c->exp.file, e->out_dir, run->id);
    snprintf(run->cfg.cache_dir, sizeof run->cfg.cache_dir, "%s", e->out_dir);   /* tokenized text, shared by the runs */
out:
    yt_node_free(r);
    return rc;
}

/* Rules across sections: budget keys not also in train, swept keys not also in a variant. */
static int check_conflicts(ectx *c, const yt_node *var) {
    const yt_node *root = c->exp.root, *budget = yt_get(root, "budget"), *tr = yt_get(root, "train"),
                  *sweep = yt_get(root, "sweep"), *vt = yt_get(var, "train");
    for (int i = 0; budget && tr && i < budget->n; i++)
        if (yt_get(tr, budget->kids[i]->key))
            return yt_fail(&c->exp, budget->kids[i], true, NULL, "train.%s is also set: give the budget in one place",
                           budget->kids[i]->key);
    const yt_node *comp = yt_get(root, "compute"), *cp = comp && comp->kind == YT_MAP ? yt_get(comp, "precision") : NULL;
    if (sweep && yt_get(sweep, "precision") && cp)
        return yt_fail(&c->exp, cp, true, NULL, "is swept (sweep.precision): remove it here");
    static const char *const swept_train[] = {"seq_len", "lr"};
    for (int k = 0; k < 2 && sweep; k++) {
        if (!yt_get(sweep, swept_train[k])) continue;
        if (tr && yt_get(tr, swept_train[k]))
            return yt_fail(&c->exp, yt_get(tr, swept_train[k]), true, NULL, "is swept (sweep.%s): remove it here",
                           swept_train[k]);
        if (vt && yt_get(vt, swept_train[k]))
            return yt_fail(&c->exp, yt_get(vt, swept_train[k]), true, NULL, "is swept (sweep.%s): remove it here",
                           swept_train[k]);
    }
    return 0;
}

static int load(ectx *c, hy_experiment *e) {
    static const char *const var_keys[] = {"name", "model", "train", NULL};
    const yt_doc *d = &c->exp;
    const yt_node *root = d->root, *vars = yt_get(root, "variants"), *n;
    char what[160];
    int rc = yt_check_map(d, root, top_keys);
    if (rc < 0) return rc;
    /* name, out_dir, threads (the runs' own checks come later) */
    if ((n = yt_get(root, "name")) && (rc = yt_read_str(d, n, e->name, sizeof e->name)) < 0) return rc;
    if (!n) {
        const char *base = strrchr(d->file, '/');
        base = base ? base + 1 : d->file;
        snprintf(e->name, sizeof e->name, "%.*s", (int)strcspn(base, "."), base);
    }
    for (const char *p = e->name; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("._+-=@:", *p))
            return yt_fail(d, n ? n : root, false, "name", "may use only letters, digits and . _ + - = @ :, got '%s'", e->name);
    if ((n = yt_get(root, "out_dir")) && (rc = yt_read_str(d, n, e->out_dir, sizeof e->out_dir)) < 0) return rc;
    if (!n) snprintf(e->out_dir, sizeof e->out_dir, "results/%s", e->name);
    if ((n = yt_get(root, "reference")) && (rc = yt_read_str(d, n, e->reference, sizeof e->reference)) < 0) return rc;
    long long th = 0;
    if ((n = yt_get(root, "threads")) && (rc = yt_read_int(d, n, 0, 65536, &th)) < 0) return rc;
    e->threads = (int)th;
    const yt_node *budget = yt_get(root, "budget");
    if (budget) {
        if ((rc = yt_check_map(d, budget, budget_keys)) < 0) return rc;
        if (budget->n == 0) return yt_fail(d, budget, false, NULL, "give at least one of steps, tokens, seconds");
    }
    axes a;
    if ((rc = read_sweep(c, yt_get(root, "sweep"), &a)) < 0) return rc;
    if ((n = yt_get(root, "bench")) && (rc = read_bench(c, n, &e->bench)) < 0) return rc;
    if (!vars && !e->bench.enabled)
        return yt_fail(d, root, false, "variants", "missing required key (an experiment trains variants, or benchmarks "
                                                  "blocks with bench:)");
    if (!vars) {   /* benchmark only: nothing else would be used, so nothing else may be given */
        static const char *const unused[] = {"seed", "compute", "data", "train", "sweep", "budget", "reference"};
        for (int k = 0; k < 7; k++)
            if ((n = yt_get(root, unused[k])))
                return yt_fail(d, n, true, NULL, "has no effect in an experiment without variants (it only runs bench)");
        return 0;
    }
    if (vars->kind != YT_SEQ || vars->n == 0)
        return yt_fail(d, vars, false, NULL, "must be a non-empty list of {name, model, train}, got %s",
                       yt_describe(vars, what, sizeof what));
    if ((rc = read_eval(c, &a, e)) < 0) return rc;
    e->eval_seed = a.seeds ? a.seeds[0] : 1234;
    if (!a.seeds && (n = yt_get(root, "seed"))) {
        long long v;
        if ((rc = yt_read_int(d, n, 0, LLONG_MAX, &v)) < 0) return rc;
        e->eval_seed = (uint64_t)v;
    }
    long long per = (long long)a.len[0] * a.len[1] * a.len[2] * a.len[3] * a.len[4] * a.len[5];
    if (per * vars->n > HY_EXP_MAX_RUNS)
        return yt_fail(d, yt_get(root, "sweep") ? yt_get(root, "sweep") : vars, false, NULL, "%lld runs: more than %d",
                       per * vars->n, HY_EXP_MAX_RUNS);
    e->runs = calloc((size_t)vars->n * per, sizeof *e->runs);
    if (!e->runs) return HY_ERR_NOMEM;
    for (int v = 0; v < vars->n; v++) {
        const yt_node *var = vars->kids[v], *vn, *vm;
        char path[64];
        if ((rc = yt_check_map(d, var, var_keys)) < 0) return rc;
        snprintf(path, sizeof path, "%s.name", var->path);
        if (!(vn = yt_get(var, "name"))) return yt_fail(d, var, false, path, "missing required key");
        if (vn->kind != YT_SCALAR || yt_is_null(vn))
            return yt_fail(d, vn, false, NULL, "must be a name, got %s", yt_describe(vn, what, sizeof what));
        for (int u = 0; u < v; u++)
            if (!strcmp(yt_get(vars->kids[u], "name")->text, vn->text))
                return yt_fail(d, vn, false, NULL, "duplicate variant name '%s' (also %s)", vn->text, vars->kids[u]->path);
        snprintf(path, sizeof path, "%s.model", var->path);
        if (!(vm = yt_get(var, "model")))
            return yt_fail(d, var, false, path, "missing required key (a map, or a model file such as models/transformer.yaml)");
        const yt_node *model = vm;
        const char *mfile = NULL;
        if (vm->kind == YT_SCALAR && !yt_is_null(vm)) {
            if ((rc = model_file(c, vm, &model, &mfile)) < 0) return rc;
        } else if (vm->kind != YT_MAP)
            return yt_fail(d, vm, false, NULL, "must be a model map or the path of a model file, got %s",
                           yt_describe(vm, what, sizeof what));
        const yt_node *vt = yt_get(var, "train");
        if (vt && vt->kind != YT_MAP)
            return yt_fail(d, vt, false, NULL, "must be a map of train keys, got %s", yt_describe(vt, what, sizeof what));
        if ((rc = check_conflicts(c, var)) < 0) return rc;
        int idx[N_AXES];
        /* order: d_model, d_state, precision, lr, seed, then seq_len innermost */
        static const int nest[N_AXES] = {AX_DMODEL, AX_DSTATE, AX_PREC, AX_LR, AX_SEED, AX_SEQ};
        long long count = per;
        for (long long r = 0; r < count; r++) {
            long long rest = r;
            for (int q = N_AXES - 1; q >= 0; q--) {
                idx[nest[q]] = (int)(rest % a.len[nest[q]]);
                rest /= a.len[nest[q]];
            }
            hy_exp_run *run = &e->runs[e->n_runs];
            if ((rc = compose_run(c, var, model, mfile, &a, idx, run)) < 0) return rc;
            e->n_runs++;
            for (int u = 0; u < e->n_runs - 1; u++)
                if (!strcmp(e->runs[u].id, run->id))
                    return yt_fail(d, vn, false, NULL, "two runs would share the folder runs/%s", run->id);
        }
    }
    return 0;
}

int hy_experiment_load(const char *path, const char *const *sets, int n_sets, hy_experiment *e) {
    memset(e, 0, sizeof *e);
    if (strlen(path) >= sizeof e->source) return hy_fail_code(HY_ERR_CONFIG, "%s: path too long", path);
    snprintf(e->source, sizeof e->source, "%s", path);
    ectx c = {.exp = {.file = e->source, .sets = sets, .n_sets = n_sets}, .e = e};
    int rc = yt_parse_file(&c.exp, path);
    for (int i = 0; rc == 0 && i < n_sets; i++) rc = yt_apply_set(&c.exp, i);
    if (rc == 0) rc = load(&c, e);
    yt_free(&c.exp);
    for (int i = 0; i < c.n_models; i++) {
        yt_free(&c.models[i]);
        free(c.model_paths[i]);
    }
    free(c.models), free(c.model_paths), free(c.seeds);
    if (rc < 0) hy_experiment_free(e);
    return rc < 0 ? (rc == HY_ERR_NOMEM ? rc : HY_ERR_CONFIG) : 0;
}

void hy_experiment_free(hy_experiment *e) {
    for (int i = 0; i < e->n_runs; i++) hy_run_config_free(&e->runs[i].cfg);
    free(e->runs);
    e->runs = NULL, e->n_runs = 0;
}
