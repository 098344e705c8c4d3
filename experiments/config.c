/* Run configuration: the strict YAML schema (top level, compute, data, train; the model's layer
 * pattern is in config_layers.c), --set overrides, defaults, and writing the resolved config back
 * as YAML with every key explicit. The file is parsed into a located node tree (yaml_tree.c), the
 * overrides edit that tree, and one walk fills hy_run_config, so a value from the file and one
 * from the command line are checked by the same code and every error names its source. */
#include "experiments/config.h"
#include "experiments/experiment.h"
#include "core/error.h"
#include "core/fileio.h"
#include "core/strbuf.h"
#include "experiments/tokenizer.h"
#include "experiments/yaml_tree.h"
#include <ctype.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void hy_run_config_defaults(hy_run_config *c) {
    memset(c, 0, sizeof *c);
    c->seed = 1234;
    c->threads = 0;
    hy_model_config_defaults(&c->model);
    c->gemm = HY_GEMM_AUTO;
    c->precision = HY_PREC_F32;
    snprintf(c->corpus, sizeof c->corpus, "default");
    c->val_fraction = 0.1;
    c->data_format = HY_DATA_AUTO;
    snprintf(c->tokenizer_type, sizeof c->tokenizer_type, "bpe");
    c->seq_len = 256, c->batch_size = 16;
    c->steps = 1000;
    snprintf(c->optimizer, sizeof c->optimizer, "adamw");
    c->lr = 3e-3, c->min_lr = 3e-4, c->min_lr_ratio = 0.1;
    c->warmup_steps = 100;
    hy_optim_opts o;   /* the optimizer's defaults are the API's (hy_optim_opts_defaults) */
    hy_optim_opts_defaults(&o);
    c->weight_decay = o.weight_decay, c->beta1 = o.beta1, c->beta2 = o.beta2, c->eps = o.eps, c->momentum = o.momentum;
    c->grad_clip = o.grad_clip, c->ssm_lr = o.ssm_lr;
    c->eval_every = 200, c->eval_batches = 20, c->log_every = 10, c->checkpoint_every = 0;
    c->shard_optimizer = false, c->bucket_mb = HY_DEFAULT_BUCKET_MB;
}

void hy_run_config_free(hy_run_config *c) {
    hy_model_config_free(&c->model);
}

/* ---- the schema of scalar keys ---- */

typedef enum { F_INT, F_LONG, F_U64, F_NUM, F_FLOAT, F_BOOL, F_STR, F_ENUM, F_WORD, F_SECTION } ftype;

typedef struct {
    const char *key;
    ftype type;
    size_t off;                /* into hy_run_config */
    double min, max;           /* F_INT/F_LONG/F_NUM/F_FLOAT */
    bool open_min, open_max;   /* F_NUM */
    const char *const *words;  /* F_ENUM (stores the index as an int) / F_WORD (stores the word) */
    size_t len;                /* F_STR / F_WORD buffer size */
} field;

#define OFF(m) offsetof(hy_run_config, m)
#define INT(k, m, lo, hi) {k, F_INT, OFF(m), lo, hi, false, false, NULL, 0}
#define LONG(k, m, lo) {k, F_LONG, OFF(m), lo, (double)LONG_MAX, false, false, NULL, 0}
#define NUM(k, m, lo, hi, olo, ohi) {k, F_NUM, OFF(m), lo, hi, olo, ohi, NULL, 0}
#define STR(k, m) {k, F_STR, OFF(m), 0, 0, false, false, NULL, sizeof(((hy_run_config *)0)->m)}
#define SECTION(k) {k, F_SECTION, 0, 0, 0, false, false, NULL, 0}

static const char *const gemm_words[] = {"auto", "openblas", "onednn", NULL};   /* = hy_gemm_backend */
static const char *const precision_words[] = {"f32", "bf16", NULL};              /* = hy_precision */
static const char *const optimizer_words[] = {"adamw", "sgd", NULL};

static const field top_fields[] = {
    STR("name", name),
    {"seed", F_U64, OFF(seed), 0, 0, false, false, NULL, 0},
    INT("threads", threads, 0, 65536),
    STR("out_dir", out_dir),
    SECTION("model"), SECTION("compute"), SECTION("data"), SECTION("train"),
    {0},
};
static const field model_fields[] = {
    INT("d_model", model.d_model, 1, 65536),
    INT("n_layers", model.n_layers, 1, 1024),
    INT("vocab_size", model.vocab_size, 1, 1 << 24),
    {"tie_embeddings", F_BOOL, OFF(model.tie_embeddings), 0, 0, false, false, NULL, 0},
    {"router_aux_coef", F_FLOAT, OFF(model.router_aux_coef), 0, INFINITY, false, false, NULL, 0},
    SECTION("blocks"), SECTION("layers"),
    {0},
};
static const field compute_fields[] = {
    {"gemm", F_ENUM, OFF(gemm), 0, 0, false, false, gemm_words, 0},
    {"precision", F_ENUM, OFF(precision), 0, 0, false, false, precision_words, 0},
    {0},
};
static const field data_fields[] = {
    STR("corpus", corpus),
    STR("train", train_path),
    STR("val", val_path),
    {"format", F_ENUM, OFF(data_format), 0, 0, false, false, hy_data_format_words, 0},
    SECTION("tokenizer"),
    SECTION("task"),
    NUM("val_fraction", val_fraction, 0, 0.5, true, false),
    {0},
};
static const field train_fields[] = {
    INT("seq_len", seq_len, 1, 1 << 20),
    INT("batch_size", batch_size, 1, 1 << 20),
    LONG("batch_tokens", batch_tokens, 0),
    LONG("steps", steps, 0),
    NUM("tokens", max_tokens, 0, INFINITY, false, false),
    NUM("seconds", max_seconds, 0, INFINITY, false, false),
    {"optimizer", F_WORD, OFF(optimizer), 0, 0, false, false, optimizer_words, sizeof(((hy_run_config *)0)->optimizer)},
    NUM("lr", lr, 0, INFINITY, true, false),
    NUM("min_lr", min_lr, 0, INFINITY, false, false),
    NUM("min_lr_ratio", min_lr_ratio, 0, 1, false, false),
    LONG("warmup_steps", warmup_steps, 0),
    NUM("weight_decay", weight_decay, 0, INFINITY, false, false),
    NUM("beta1", beta1, 0, 1, false, true),
    NUM("beta2", beta2, 0, 1, false, true),
    NUM("eps", eps, 0, INFINITY, true, false),
    NUM("momentum", momentum, 0, 1, false, true),
    NUM("grad_clip", grad_clip, 0, INFINITY, false, false),
    NUM("ssm_lr", ssm_lr, 0, INFINITY, true, false),
    LONG("eval_every", eval_every, 1),
    LONG("eval_batches", eval_batches, 1),
    LONG("log_every", log_every, 1),
    LONG("checkpoint_every", checkpoint_every, 0),
    {"shard_optimizer", F_BOOL, OFF(shard_optimizer), 0, 0, false, false, NULL, 0},
    NUM("bucket_mb", bucket_mb, 0, 65536, true, false),
    {0},
};

/* Reads node n into the field f of c. */
static int read_field(const yt_doc *d, const yt_node *n, const field *f, hy_run_config *c) {
    char *p = (char *)c + f->off;
    long long i;
    double x;
    int rc = 0, k;
    switch (f->type) {
    case F_INT:
        if ((rc = yt_read_int(d, n, (long long)f->min, (long long)f->max, &i)) == 0) *(int *)p = (int)i;
        break;
    case F_LONG:
        if ((rc = yt_read_int(d, n, (long long)f->min, LONG_MAX, &i)) == 0) *(long *)p = (long)i;
        break;
    case F_U64: {
        unsigned long long u;
        if ((rc = yt_read_u64(d, n, &u)) == 0) *(uint64_t *)p = (uint64_t)u;
        break;
    }
    case F_NUM:
        if ((rc = yt_read_num(d, n, f->min, f->max, f->open_min, f->open_max, &x)) == 0) *(double *)p = x;
        break;
    case F_FLOAT:
        if ((rc = yt_read_num(d, n, f->min, f->max, f->open_min, f->open_max, &x)) == 0) *(float *)p = (float)x;
        break;
    case F_BOOL: rc = yt_read_bool(d, n, (bool *)p); break;
    case F_STR: rc = yt_read_str(d, n, p, f->len); break;
    case F_ENUM:
        if ((rc = yt_read_enum(d, n, f->words, &k)) == 0) *(int *)p = k;
        break;
    case F_WORD:
        if ((rc = yt_read_enum(d, n, f->words, &k)) == 0) snprintf(p, f->len, "%s", f->words[k]);
        break;
    case F_SECTION: break;
    }
    return rc;
}

/* Checks the keys of map n against `fields` and reads every scalar field present. A null section
 * (a key with every child commented out) counts as empty when allow_null. */
static int read_section(const yt_doc *d, const yt_node *n, const field *fields, bool allow_null, hy_run_config *c) {
    const char *keys[40];
    int nk = 0, rc;
    if (allow_null && yt_is_null(n)) return 0;
    for (const field *f = fields; f->key; f++) keys[nk++] = f->key;
    keys[nk] = NULL;
    if ((rc = yt_check_map(d, n, keys)) < 0) return rc;
    for (const field *f = fields; f->key; f++) {
        const yt_node *v = yt_get(n, f->key);
        if (v && (rc = read_field(d, v, f, c)) < 0) return rc;
    }
    return 0;
}

/* Name characters: it names the run in CSV rows and folders. */
static bool name_char(char ch) {
    return isalnum((unsigned char)ch) || strchr("._+-=@:", ch) != NULL;
}

/* Default name: the file name without folder and .yaml/.yml, other characters -> '_'. */
static void default_name(const char *path, char *out, size_t len) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    if (n > 5 && !strcmp(base + n - 5, ".yaml")) n -= 5;
    else if (n > 4 && !strcmp(base + n - 4, ".yml")) n -= 4;
    if (n >= len) n = len - 1;
    for (size_t i = 0; i < n; i++) out[i] = name_char(base[i]) ? base[i] : '_';
    out[n] = 0;
    if (!n) snprintf(out, len, "run");
}

/* data.task: {type: mqar | selective_copy | induction, options of that task}. */
static int read_task(const yt_doc *d, const yt_node *n, hy_task_config *t) {
    static const char *const types[] = {"none", "mqar", "selective_copy", "induction", NULL};
    static const char *const keys[][8] = {
        {"type", NULL},
        {"type", "vocab", "examples", "eval_seq_len", "streaming", "num_kv_pairs", "power_a", NULL},
        {"type", "vocab", "examples", "eval_seq_len", "streaming", "n_tokens", NULL},
        {"type", "vocab", "examples", "eval_seq_len", "streaming", NULL},
    };
    char what[160], path[1024];
    int type, rc;
    if (yt_is_null(n)) return 0;
    if (n->kind != YT_MAP)
        return yt_fail(d, n, false, NULL, "must be a map {type: mqar | selective_copy | induction, options}, got %s",
                       yt_describe(n, what, sizeof what));
    const yt_node *tn = yt_get(n, "type");
    snprintf(path, sizeof path, "%s.type", n->path);
    if (!tn) return yt_fail(d, n, false, path, "missing required key (mqar, selective_copy, induction or none)");
    if ((rc = yt_read_enum(d, tn, types, &type)) < 0) return rc;
    hy_task_defaults((hy_task_type)type, t);
    if ((rc = yt_check_map(d, n, keys[type])) < 0) return rc;
    long long v;
    double x;
    const yt_node *k;
    if ((k = yt_get(n, "vocab")) && (rc = yt_read_int(d, k, 3, 1 << 20, &v)) == 0) t->vocab = (int)v;
    if (rc < 0) return rc;
    if ((k = yt_get(n, "examples")) && (rc = yt_read_int(d, k, 0, LLONG_MAX, &v)) == 0) t->examples = (long)v;
    if (rc < 0) return rc;
    if ((k = yt_get(n, "num_kv_pairs")) && k->kind == YT_SCALAR && !strcmp(k->text, "auto")) t->num_kv_pairs = 0;
    else if (k && (rc = yt_read_int(d, k, 1, 1024, &v)) == 0) t->num_kv_pairs = (int)v;
    if (rc < 0) return rc;
    if ((k = yt_get(n, "n_tokens")) && (rc = yt_read_int(d, k, 1, 1 << 20, &v)) == 0) t->n_tokens = (int)v;
    if (rc < 0) return rc;
    if ((k = yt_get(n, "power_a")) && (rc = yt_read_num(d, k, 0, 1, true, false, &x)) == 0) t->power_a = x;
    if (rc < 0) return rc;
    if ((k = yt_get(n, "streaming")) && (rc = yt_read_bool(d, k, &t->eval_streaming)) < 0) return rc;
    if ((k = yt_get(n, "eval_seq_len"))) {
        if (k->kind != YT_SEQ || k->n > HY_TASK_MAX_EVAL)
            return yt_fail(d, k, false, NULL, "must be a list of at most %d sequence lengths, got %s", HY_TASK_MAX_EVAL,
                           yt_describe(k, what, sizeof what));
        for (int i = 0; i < k->n; i++) {
            if ((rc = yt_read_int(d, k->kids[i], 1, 1 << 24, &v)) < 0) return rc;
            t->eval_seq_len[t->n_eval++] = (int)v;
        }
    }
    return 0;
}

/* data.tokenizer: a SentencePiece model file, or {vocab: N, type: bpe | unigram} to train one on
 * the training text. A file must load and have no more pieces than model.vocab_size. */
static int read_tokenizer(const yt_doc *d, const yt_node *n, hy_run_config *c) {
    static const char *const keys[] = {"vocab", "type", NULL}, *const types[] = {"bpe", "unigram", NULL};
    char what[160];
    int rc;
    if (n->kind == YT_SCALAR && !yt_is_null(n)) {
        if ((rc = yt_read_str(d, n, c->tokenizer, sizeof c->tokenizer)) < 0) return rc;
        hy_tokenizer *t;
        if (hy_tokenizer_load(c->tokenizer, &t) < 0) return yt_fail(d, n, false, NULL, "%s", hy_last_error());
        int V = hy_tokenizer_vocab(t);
        hy_tokenizer_free(t);
        if (V > c->model.vocab_size)
            return yt_fail(d, n, false, NULL, "%s has %d pieces but model.vocab_size is %d: raise vocab_size to at least %d",
                           c->tokenizer, V, c->model.vocab_size, V);
        return 0;
    }
    if (n->kind != YT_MAP)
        return yt_fail(d, n, false, NULL, "must be a SentencePiece model file or a map {vocab: N, type: bpe | unigram}, got %s",
                       yt_describe(n, what, sizeof what));
    if ((rc = yt_check_map(d, n, keys)) < 0) return rc;
    const yt_node *v = yt_get(n, "vocab"), *t = yt_get(n, "type");
    char path[1024];
    snprintf(path, sizeof path, "%s.vocab", n->path);
    if (!v) return yt_fail(d, n, false, path, "missing required key (the number of pieces of the tokenizer to train)");
    long long vocab;
    int type = 0;
    if ((rc = yt_read_int(d, v, 260, 1 << 20, &vocab)) < 0) return rc;
    if (t && (rc = yt_read_enum(d, t, types, &type)) < 0) return rc;
    if (vocab > c->model.vocab_size)
        return yt_fail(d, v, false, NULL, "a tokenizer of %lld pieces needs model.vocab_size >= %lld, got %d", vocab, vocab,
                       c->model.vocab_size);
    c->tokenizer_vocab = (int)vocab;
    snprintf(c->tokenizer_type, sizeof c->tokenizer_type, "%s", types[type]);
    return 0;
}

/* Rules between the data keys: data.train and data.val go together and replace data.corpus and
 * val_fraction; none of them (nor format or tokenizer) with data.task. */
static int check_data(const yt_doc *d, const yt_node *data) {
    const yt_node *tr = yt_get(data, "train"), *va = yt_get(data, "val"), *co = yt_get(data, "corpus"),
                  *vf = yt_get(data, "val_fraction"), *task = yt_get(data, "task");
    if (task && !yt_is_null(task)) {
        static const char *const unused[] = {"train", "val", "format", "tokenizer"};
        for (int k = 0; k < 4; k++)
            if (yt_get(data, unused[k]))
                return yt_fail(d, yt_get(data, unused[k]), true, NULL, "has no effect with data.task (a synthetic task)");
        return 0;
    }
    if ((tr != NULL) != (va != NULL))
        return yt_fail(d, tr ? tr : va, true, NULL, "needs data.%s too (a training and a validation source), or use "
                                                    "data.corpus with val_fraction", tr ? "val" : "train");
    if (tr && co) return yt_fail(d, co, true, NULL, "give data.corpus (split by val_fraction) or data.train + data.val, not both");
    if (tr && vf) return yt_fail(d, vf, true, NULL, "has no effect with data.val (the validation data are given)");
    return 0;
}

/* The model section: sizes, then the layer pattern (config_layers.c), then a final check. */
static int read_model(const yt_doc *d, const yt_node *model, hy_run_config *c) {
    int rc = read_section(d, model, model_fields, false, c);
    if (rc < 0) return rc;
    static const char *const required[] = {"d_model", "n_layers"};
    for (int k = 0; k < 2; k++)
        if (!yt_get(model, required[k])) {
            char path[64];
            snprintf(path, sizeof path, "model.%s", required[k]);
            return yt_fail(d, model, false, path, "missing required key");
        }
    if ((rc = hy_config_layers(d, model, &c->model)) < 0) return rc;
    if ((rc = hy_model_config_resolve(&c->model)) < 0) {
        hy_error_prefix("%s: model", d->file);
        return HY_ERR_CONFIG;
    }
    return 0;
}

/* train.batch_tokens: the batch size that holds tokens per optimizer step constant across seq_len
 * (so that equal tokens also means equal steps in a sweep). batch_size, if also given, must agree. */
static int resolve_batch_tokens(const yt_doc *d, const yt_node *train, hy_run_config *c) {
    const yt_node *bt = yt_get(train, "batch_tokens"), *bs = yt_get(train, "batch_size");
    if (!bt || c->batch_tokens == 0) {
        c->batch_tokens = 0;
        return 0;
    }
    if (c->batch_tokens % c->seq_len != 0)
        return yt_fail(d, bt, false, NULL, "must be a multiple of train.seq_len (%d), got %ld", c->seq_len, c->batch_tokens);
    long b = c->batch_tokens / c->seq_len;
    if (b > (1 << 20)) return yt_fail(d, bt, false, NULL, "gives batch_size %ld, more than %d", b, 1 << 20);
    if (bs && c->batch_size != b)
        return yt_fail(d, bs, false, NULL, "is %d, but train.batch_tokens %ld / seq_len %d = %ld sequences per step: give "
                                           "one of the two, or values that agree", c->batch_size, c->batch_tokens, c->seq_len, b);
    c->batch_size = (int)b;
    return 0;
}

/* Cross-key rules and defaults that depend on other keys: name, out_dir, batch, min_lr, the budget. */
static int finish_run(const yt_doc *d, const yt_node *root, hy_run_config *c) {
    const yt_node *name = yt_get(root, "name"), *train = yt_get(root, "train");
    const yt_node *min_lr = yt_get(train, "min_lr"), *ratio = yt_get(train, "min_lr_ratio"),
                  *steps = yt_get(train, "steps");
    int rc;
    if (!name) default_name(d->file, c->name, sizeof c->name);
    for (const char *p = c->name; *p; p++)
        if (!name_char(*p))
            return yt_fail(d, name, false, NULL, "may use only letters, digits and . _ + - = @ : (it names the run in "
                                                "CSV rows and folders), got '%s'", c->name);
    if (!yt_get(root, "out_dir") && snprintf(c->out_dir, sizeof c->out_dir, "results/%s", c->name) >= HY_PATH_MAX)
        return hy_fail_code(HY_ERR_CONFIG, "%s: out_dir: results/%s is too long", d->file, c->name);
    if (c->task.type != HY_TASK_NONE) {
        char msg[300];
        const yt_node *task = yt_get(yt_get(root, "data"), "task"), *sl = yt_get(train, "seq_len");
        if (hy_task_check(&c->task, c->seq_len, c->model.vocab_size, msg, sizeof msg) < 0)
            return yt_fail(d, sl && !strstr(msg, "vocab_size") ? sl : task, false, NULL, "%s", msg);
        for (int i = 0; i < c->task.n_eval; i++)
            if (hy_task_check(&c->task, c->task.eval_seq_len[i], c->model.vocab_size, msg, sizeof msg) < 0)
                return yt_fail(d, yt_get(task, "eval_seq_len")->kids[i], false, NULL, "%s", msg);
    }
    if ((rc = resolve_batch_tokens(d, train, c)) < 0) return rc;
    if (min_lr && ratio)
        return yt_fail(d, ratio, false, NULL, "give train.min_lr or train.min_lr_ratio, not both (min_lr is %g)", c->min_lr);
    if (!min_lr) c->min_lr = c->min_lr_ratio * c->lr;
    else if (c->min_lr > c->lr) return yt_fail(d, min_lr, false, NULL, "must be <= train.lr (%g), got %g", c->lr, c->min_lr);
    if (!steps) c->steps = c->max_tokens > 0 || c->max_seconds > 0 ? 0 : 1000;
    else if (c->steps == 0 && c->max_tokens <= 0 && c->max_seconds <= 0)
        return yt_fail(d, steps, false, NULL, "0 means no step limit, but neither train.tokens nor train.seconds is set, "
                                              "so training would never stop");
    return 0;
}

/* Where node n (of key path `path`) was set, as yt_fail names it, into out; a default when absent. */
static void locate(const yt_doc *d, const yt_node *n, const char *path, char *out, size_t len) {
    if (!n) snprintf(out, len, "%s: %s (default)", d->file, path);
    else if (n->set >= 0 && n->set < d->n_sets) snprintf(out, len, "--set %s", d->sets[n->set]);
    else if (n->line <= 0) snprintf(out, len, "%s: %s", n->file ? n->file : d->file, path);
    else snprintf(out, len, "%s:%d:%d: %s", n->file ? n->file : d->file, n->line, n->col, path);
}

/* The whole schema, walked over the (overridden) tree. */
static int read_root(const yt_doc *d, hy_run_config *c) {
    const yt_node *root = d->root, *model = yt_get(root, "model");
    int rc = read_section(d, root, top_fields, false, c);
    if (rc < 0) return rc;
    if (!model) return yt_fail(d, root, false, "model", "missing required key (d_model, n_layers, layers, ...)");
    if ((rc = read_model(d, model, c)) < 0) return rc;
    static const struct { const char *key; const field *fields; } sections[] = {
        {"compute", compute_fields}, {"data", data_fields}, {"train", train_fields}};
    for (int s = 0; s < 3; s++) {
        const yt_node *n = yt_get(root, sections[s].key);
        if (n && (rc = read_section(d, n, sections[s].fields, true, c)) < 0) return rc;
    }
    const yt_node *data = yt_get(root, "data"), *task = yt_get(data, "task"), *tok = yt_get(data, "tokenizer");
    if (task && (rc = read_task(d, task, &c->task)) < 0) return rc;
    if (data && !yt_is_null(data) && (rc = check_data(d, data)) < 0) return rc;
    if (tok && !yt_is_null(tok) && (rc = read_tokenizer(d, tok, c)) < 0) return rc;
    if (c->train_path[0]) c->corpus[0] = 0;
    locate(d, yt_get(model, "vocab_size"), "model.vocab_size", c->at_vocab_size, sizeof c->at_vocab_size);
    const char *source = c->train_path[0] ? "train" : "corpus";   /* where a data error is located */
    char source_path[16];
    snprintf(source_path, sizeof source_path, "data.%s", source);
    locate(d, yt_get(data, source), source_path, c->at_corpus, sizeof c->at_corpus);
    locate(d, yt_get(yt_get(root, "train"), "seq_len"), "train.seq_len", c->at_seq_len, sizeof c->at_seq_len);
    return finish_run(d, root, c);
}

int hy_run_config_load(const char *path, const char *const *sets, int n_sets, hy_run_config *c) {
    hy_run_config_defaults(c);
    if (strlen(path) >= sizeof c->source) return hy_fail_code(HY_ERR_CONFIG, "%s: path too long", path);
    snprintf(c->source, sizeof c->source, "%s", path);
    yt_doc d = {.file = path, .sets = sets, .n_sets = n_sets};
    int rc = yt_parse_file(&d, path);
    for (int i = 0; rc == 0 && i < n_sets; i++) rc = yt_apply_set(&d, i);
    if (rc == 0) rc = read_root(&d, c);
    yt_free(&d);
    if (rc < 0) hy_run_config_free(c);
    return rc < 0 ? (rc == HY_ERR_NOMEM ? rc : HY_ERR_CONFIG) : 0;
}

int hy_run_config_from_tree(const yt_doc *d, hy_run_config *c) {
    hy_run_config_defaults(c);
    snprintf(c->source, sizeof c->source, "%s", d->file);
    int rc = read_root(d, c);
    if (rc < 0) hy_run_config_free(c);
    return rc < 0 ? (rc == HY_ERR_NOMEM ? rc : HY_ERR_CONFIG) : 0;
}

void hy_run_data_spec(const hy_run_config *c, hy_data_spec *s) {
    *s = (hy_data_spec){.corpus = c->corpus, .train = c->train_path, .val = c->val_path, .val_fraction = c->val_fraction,
                        .format = c->data_format, .tokenizer = c->tokenizer, .tokenizer_vocab = c->tokenizer_vocab,
                        .tokenizer_type = c->tokenizer_type, .cache_dir = c->cache_dir[0] ? c->cache_dir : c->out_dir,
                        .vocab_size = c->model.vocab_size, .min_tokens = (long)c->seq_len + 1};
}

/* ---- the model config of the public API (include/hybrid.h) ---- */

/* Moves the resolved model out of a loaded run config into a config handle of its own. */
static int take_model(hy_run_config *c, hy_model_config **out) {
    hy_model_config *m = malloc(sizeof *m);
    if (!m) {
        hy_run_config_free(c);
        return hy_fail_code(HY_ERR_NOMEM, "config: out of memory");
    }
    *m = c->model;
    c->model.layers = NULL;
    hy_run_config_free(c);
    *out = m;
    return 0;
}

int hy_model_config_from_yaml(const char *yaml_text, const char *name_for_errors, hy_model_config **out) {
    *out = NULL;
    yt_doc d = {.file = name_for_errors ? name_for_errors : "<yaml>"};
    if (!yaml_text) return hy_fail_code(HY_ERR_CONFIG, "%s: the YAML text is NULL", d.file);
    hy_run_config c;
    int rc = yt_parse_string(&d, yaml_text);
    if (rc == 0) rc = hy_run_config_from_tree(&d, &c);   /* on error c is freed */
    yt_free(&d);
    if (rc < 0) return rc == HY_ERR_NOMEM ? rc : HY_ERR_CONFIG;
    return take_model(&c, out);
}

int hy_model_config_load(const char *path, hy_model_config **out) {
    *out = NULL;
    hy_run_config c;
    int rc = hy_run_config_load(path, NULL, 0, &c);
    return rc < 0 ? rc : take_model(&c, out);
}

/* ---- writing ---- */

/* One option as `, name: value` (hy_block_cfg_each_opt's visitor for the YAML). */
static void yaml_opt(void *ctx, const char *name, const char *value) { hy_sb_printf(ctx, ", %s: %s", name, value); }

/* A block as a YAML flow map {type: NAME, option: value, ...} (or none). */
static void write_block(hy_strbuf *b, const hy_block_cfg *blk) {
    if (!blk->ops) {
        hy_sb_add(b, "none");
        return;
    }
    hy_sb_printf(b, "{type: %s", blk->ops->name);
    hy_block_cfg_each_opt(blk, true, yaml_opt, b);
    hy_sb_add(b, "}");
}

/* "  key: value\n" with a double in its shortest exact form. */
static void write_num(hy_strbuf *b, const char *key, double v) {
    char buf[40];
    hy_format_double(v, buf, sizeof buf);
    hy_sb_printf(b, "  %s: %s\n", key, buf);
}

/* data.task as a YAML flow map with every option of the task. */
static void write_task(hy_strbuf *b, const hy_task_config *t) {
    hy_sb_printf(b, "  task: {type: %s, vocab: %d, examples: %ld", hy_task_name(t->type), t->vocab, t->examples);
    if (t->type == HY_TASK_MQAR) {
        char a[40];
        hy_format_double(t->power_a, a, sizeof a);
        if (t->num_kv_pairs > 0) hy_sb_printf(b, ", num_kv_pairs: %d, power_a: %s", t->num_kv_pairs, a);
        else hy_sb_printf(b, ", num_kv_pairs: auto, power_a: %s", a);
    }
    if (t->type == HY_TASK_SELECTIVE_COPY) hy_sb_printf(b, ", n_tokens: %d", t->n_tokens);
    hy_sb_add(b, ", eval_seq_len: [");
    for (int i = 0; i < t->n_eval; i++) hy_sb_printf(b, "%s%d", i ? ", " : "", t->eval_seq_len[i]);
    hy_sb_printf(b, "], streaming: %s}\n", t->eval_streaming ? "true" : "false");
}

/* The data keys: corpus and val_fraction, or train and val; format and tokenizer when set (a
 * byte corpus resolves to the same text as before these keys existed, so its runs stay complete). */
static void write_data(hy_strbuf *b, const hy_run_config *c) {
    if (c->train_path[0]) {
        hy_sb_add(b, "  train: ");
        hy_sb_json_string(b, c->train_path);
        hy_sb_add(b, "\n  val: ");
        hy_sb_json_string(b, c->val_path);
        hy_sb_add(b, "\n");
    } else {
        hy_sb_add(b, "  corpus: ");
        hy_sb_json_string(b, c->corpus);
        hy_sb_add(b, "\n");
        write_num(b, "val_fraction", c->val_fraction);
    }
    if (c->data_format != HY_DATA_AUTO) hy_sb_printf(b, "  format: %s\n", hy_data_format_name(c->data_format));
    if (c->tokenizer[0]) {
        hy_sb_add(b, "  tokenizer: ");
        hy_sb_json_string(b, c->tokenizer);
        hy_sb_add(b, "\n");
    } else if (c->tokenizer_vocab > 0)
        hy_sb_printf(b, "  tokenizer: {vocab: %d, type: %s}\n", c->tokenizer_vocab, c->tokenizer_type);
}

int hy_run_config_write(const hy_run_config *c, const char *path) {
    char *text = hy_run_config_text(c);
    if (!text) return HY_ERR_NOMEM;
    int rc = hy_write_file_atomic(path, text, strlen(text));
    free(text);
    return rc;
}

char *hy_run_config_text(const hy_run_config *c) {
    hy_strbuf b = {0};
    char buf[40];
    const hy_model_config *m = &c->model;
    hy_sb_add(&b, "# Resolved configuration (every key explicit), written by hybrid " HYBRID_VERSION " from ");
    for (const char *p = c->source; *p; p++) hy_sb_addn(&b, (unsigned char)*p < 0x20 ? "?" : p, 1);
    hy_sb_add(&b, "\nname: ");
    hy_sb_json_string(&b, c->name);
    hy_sb_printf(&b, "\nseed: %llu\nthreads: %d\nout_dir: ", (unsigned long long)c->seed, c->threads);
    hy_sb_json_string(&b, c->out_dir);
    hy_format_float(m->router_aux_coef, buf, sizeof buf);
    hy_sb_printf(&b, "\nmodel:\n  d_model: %d\n  n_layers: %d\n  vocab_size: %d\n  tie_embeddings: %s\n"
                     "  router_aux_coef: %s\n  layers:\n",
                 m->d_model, m->n_layers, m->vocab_size, m->tie_embeddings ? "true" : "false", buf);
    for (int i = 0; i < m->n_layers && m->layers; i++) {
        hy_sb_add(&b, "    - mixer: ");
        write_block(&b, &m->layers[i].mixer);
        hy_sb_add(&b, "\n      ffn: ");
        write_block(&b, &m->layers[i].ffn);
        hy_sb_add(&b, "\n");
    }
    hy_sb_printf(&b, "compute:\n  gemm: %s\n  precision: %s\ndata:\n",
                 gemm_words[c->gemm <= HY_GEMM_ONEDNN ? c->gemm : 0], precision_words[c->precision == HY_PREC_BF16]);
    write_data(&b, c);
    if (c->task.type != HY_TASK_NONE) write_task(&b, &c->task);
    hy_sb_printf(&b, "train:\n  seq_len: %d\n  batch_size: %d\n  batch_tokens: %ld\n  steps: %ld\n", c->seq_len,
                 c->batch_size, c->batch_tokens, c->steps);
    write_num(&b, "tokens", c->max_tokens);
    write_num(&b, "seconds", c->max_seconds);
    hy_sb_printf(&b, "  optimizer: %s\n", c->optimizer);
    write_num(&b, "lr", c->lr);
    write_num(&b, "min_lr", c->min_lr);
    hy_sb_printf(&b, "  warmup_steps: %ld\n", c->warmup_steps);
    write_num(&b, "weight_decay", c->weight_decay);
    write_num(&b, "beta1", c->beta1);
    write_num(&b, "beta2", c->beta2);
    write_num(&b, "eps", c->eps);
    write_num(&b, "momentum", c->momentum);
    write_num(&b, "grad_clip", c->grad_clip);
    write_num(&b, "ssm_lr", c->ssm_lr);
    hy_sb_printf(&b, "  eval_every: %ld\n  eval_batches: %ld\n  log_every: %ld\n  checkpoint_every: %ld\n", c->eval_every,
                 c->eval_batches, c->log_every, c->checkpoint_every);
    /* how the work is spread over ranks, not what is computed: written only when set otherwise
     * than the default, so a run's folder keeps the text that marks it complete (sweep.c) */
    if (c->shard_optimizer) hy_sb_add(&b, "  shard_optimizer: true\n");
    if (c->bucket_mb != HY_DEFAULT_BUCKET_MB) write_num(&b, "bucket_mb", c->bucket_mb);
    return hy_sb_take(&b);
}
