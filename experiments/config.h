/* Run configuration: what a YAML file (plus --set overrides) says about the model, the data and
 * the training. Loading is strict: an unknown key, a wrong type, a value out of range or a bad
 * layer pattern is an error that names the file, line, column and key (HY_ERR_CONFIG). */
#ifndef HY_EXPERIMENTS_CONFIG_H
#define HY_EXPERIMENTS_CONFIG_H
#include "core/gemm.h"
#include "experiments/tasks.h"
#include "models/model.h"
#include <stdint.h>

#define HY_PATH_MAX 1024

typedef struct {
    char source[HY_PATH_MAX];    /* the YAML file it came from */
    char name[128];              /* experiment name (default: file name without .yaml) */
    uint64_t seed;               /* default 1234 */
    int threads;                 /* 0 = all cores */
    char out_dir[HY_PATH_MAX];   /* default results/<name> */
    hy_model_config model;       /* resolved */
    /* compute */
    hy_gemm_backend gemm;        /* auto | openblas | onednn */
    hy_precision precision;      /* f32 | bf16 */
    /* data (experiments/data.h) */
    char corpus[HY_PATH_MAX];    /* file, folder or glob; default: the Python standard library's source */
    double val_fraction;         /* 0.1: the last 10% of the corpus (file order) is validation */
    char train_path[HY_PATH_MAX], val_path[HY_PATH_MAX];   /* data.train / data.val ("" = corpus) */
    hy_data_format data_format;  /* data.format */
    char tokenizer[HY_PATH_MAX]; /* data.tokenizer as a SentencePiece model file ("" = none) */
    int tokenizer_vocab;         /* data.tokenizer: {vocab: N, type}: train one (0 = no) */
    char tokenizer_type[16];     /* bpe | unigram */
    char cache_dir[HY_PATH_MAX]; /* not a key: where tokenized text is kept ("" = out_dir; an
                                    experiment's runs share the experiment's folder) */
    hy_task_config task;         /* data.task: a synthetic task instead of the corpus (type NONE = corpus) */
    /* training */
    int seq_len, batch_size;     /* 256, 16 */
    long batch_tokens;           /* > 0: tokens per optimizer step; batch_size = batch_tokens / seq_len */
    long steps;                  /* budget in optimizer steps (0 = unbounded if another budget is set) */
    double max_tokens;           /* budget in training tokens (0 = none) */
    double max_seconds;          /* budget in wall seconds (0 = none) */
    char optimizer[16];          /* adamw | sgd */
    double lr, min_lr;           /* peak, and floor of the cosine */
    double min_lr_ratio;         /* min_lr = min_lr_ratio · lr when min_lr is not given (a swept lr) */
    long warmup_steps;
    double weight_decay, beta1, beta2, eps, momentum, grad_clip, ssm_lr;
    long eval_every, eval_batches, log_every, checkpoint_every;
    /* data parallel (several ranks train one model: experiments/dp.h); no effect in one process */
    bool shard_optimizer;        /* each rank keeps the AdamW moments of one slice of the parameters */
    double bucket_mb;            /* gradients are averaged in buckets of this many MiB (4) */
    /* Where the keys that the checks after loading name were set (hy_run_validate's messages):
     * "FILE:LINE:COL: KEY", "--set KEY=VALUE", or "FILE: KEY (default)". */
    char at_vocab_size[HY_PATH_MAX + 160], at_corpus[HY_PATH_MAX + 160], at_seq_len[HY_PATH_MAX + 160];
} hy_run_config;

#define HY_DEFAULT_BUCKET_MB 4.0

/* Set every field to its default (model left empty). */
void hy_run_config_defaults(hy_run_config *c);
/* Load `path`, apply `n_sets` overrides "key.path=value" (typed and validated like the file;
 * errors name the override), resolve the model. On error: message via hy_last_error(),
 * returns HY_ERR_CONFIG, *c left freed. */
int hy_run_config_load(const char *path, const char *const *sets, int n_sets, hy_run_config *c);
void hy_run_config_free(hy_run_config *c);
/* The data section as hy_corpus_open / hy_data_check take it (pointers into c), with the model's
 * vocabulary and seq_len + 1 tokens per split as the checks. */
void hy_run_data_spec(const hy_run_config *c, hy_data_spec *s);
/* Write the resolved config as YAML (every key explicit) to `path` (temp file + rename). */
int hy_run_config_write(const hy_run_config *c, const char *path);
/* The same text, malloc'd (NULL when out of memory). */
char *hy_run_config_text(const hy_run_config *c);

#endif
