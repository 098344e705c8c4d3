/* Experiments: the experiment config (composition of runs, located errors), the runner (CSV schemas of SPEC §5,
 * skipping complete runs, resuming, rerunning a changed run) and the plots (gnuplot exit status,
 * the files, the crossover point) from tiny CSV files. */
#include "core/error.h"
#include "core/fileio.h"
#include "core/mem.h"
#include "experiments/experiment.h"
#include "experiments/results.h"
#include "experiments/tasks.h"
#include "tests/testutil.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define EXP "tests/configs/exp/"
#define BADX "tests/configs/bad-exp/"

/* ---- experiment configs ---- */

START_TEST(compose_runs) {
    hy_experiment e;
    const char *sets[] = {"out_dir=/tmp/unused"};
    ck_assert_msg(hy_experiment_load(EXP "tiny-exp.yaml", sets, 1, &e) == 0, "%s", hy_last_error());
    ck_assert_int_eq(e.n_runs, 4);
    static const char *const ids[] = {"a-T8", "a-T16", "b-T8", "b-T16"};
    for (int i = 0; i < 4; i++) {
        const hy_run_config *c = &e.runs[i].cfg;
        ck_assert_str_eq(e.runs[i].id, ids[i]);
        ck_assert_int_eq(c->seq_len, i % 2 ? 16 : 8);
        ck_assert_int_eq(c->steps, 3);                       /* budget */
        ck_assert_int_eq(c->batch_size, 2);                  /* experiment train */
        ck_assert_int_eq(c->seed, 3);
        ck_assert_int_eq(c->model.d_model, 16);
        ck_assert_int_eq(hy_opt_int(&c->model.layers[0].mixer.opts, 0), i < 2 ? 2 : 4);   /* the variant's model */
        ck_assert_double_eq(c->lr, i < 2 ? 0.01 : 0.005);   /* per-variant override */
        char want[128];
        snprintf(want, sizeof want, "/tmp/unused/runs/%s", ids[i]);
        ck_assert_str_eq(c->out_dir, want);
    }
    hy_experiment_free(&e);
    /* a d_model sweep labels the variants; --set reaches the experiment file */
    const char *more[] = {"sweep.d_model=", "budget.steps=2"};
    ck_assert_int_eq(hy_experiment_load(EXP "tiny-exp.yaml", more, 2, &e), HY_ERR_CONFIG);   /* null is no list */
    bool is_exp;
    hy_experiment_detect(EXP "tiny-exp.yaml", &is_exp);
    ck_assert(is_exp);
    hy_experiment_detect("tests/configs/tiny-train.yaml", &is_exp);
    ck_assert(!is_exp);
    /* --set with a flow list replaces a whole sweep list; malformed lists are errors */
    const char *list[] = {"out_dir=/tmp/unused", "sweep.seq_len=[4, 8 ,12]"};
    ck_assert_msg(hy_experiment_load(EXP "tiny-exp.yaml", list, 2, &e) == 0, "%s", hy_last_error());
    ck_assert_int_eq(e.n_runs, 6);
    for (int i = 0; i < 6; i++) ck_assert_int_eq(e.runs[i].cfg.seq_len, 4 * (i % 3 + 1));
    ck_assert_str_eq(e.runs[5].id, "b-T12");
    hy_experiment_free(&e);
    static const char *const bad[] = {"sweep.seq_len=[]", "sweep.seq_len=[8,,16]", "sweep.seq_len=[8, [16]]",
                                      "sweep.seq_len=[8, x]", "budget.steps=[2, 3]"};
    for (int k = 0; k < 5; k++) {
        const char *one[] = {"out_dir=/tmp/unused", bad[k]};
        ck_assert_msg(hy_experiment_load(EXP "tiny-exp.yaml", one, 2, &e) == HY_ERR_CONFIG, "%s accepted", bad[k]);
        ck_assert_msg(strstr(hy_last_error(), bad[k]), "%s: %s", bad[k], hy_last_error());
    }
}
END_TEST

/* Seeds x lrs x seq_len at constant tokens per step: run order, folders, batch sizes, the common
 * evaluation; and `seeds: N` counting up from the top-level seed. */
START_TEST(compose_seeds_lr_batch_tokens) {
    hy_experiment e;
    const char *sets[] = {"out_dir=/tmp/unused"};
    ck_assert_msg(hy_experiment_load(EXP "tiny-seeds.yaml", sets, 1, &e) == 0, "%s", hy_last_error());
    ck_assert_int_eq(e.n_runs, 8);
    static const char *const ids[] = {"a-T8-lr0.01-s5",  "a-T16-lr0.01-s5",  "a-T8-lr0.01-s6",  "a-T16-lr0.01-s6",
                                      "a-T8-lr0.003-s5", "a-T16-lr0.003-s5", "a-T8-lr0.003-s6", "a-T16-lr0.003-s6"};
    for (int i = 0; i < 8; i++) {
        const hy_run_config *c = &e.runs[i].cfg;
        ck_assert_str_eq(e.runs[i].id, ids[i]);
        ck_assert_str_eq(e.runs[i].variant, "a");   /* the lr and the seed are columns, not labels */
        ck_assert_int_eq(c->seq_len, i % 2 ? 16 : 8);
        ck_assert_int_eq(c->batch_tokens, 32);
        ck_assert_int_eq(c->batch_size, i % 2 ? 2 : 4);   /* 32 tokens per step at either length */
        ck_assert_int_eq(c->seed, (i / 2) % 2 ? 6 : 5);
        ck_assert_double_eq(c->lr, i < 4 ? 0.01 : 0.003);
    }
    ck_assert_int_eq(e.n_eval, 2);
    ck_assert_int_eq(e.eval_seq_len[0], 8);
    ck_assert_int_eq(e.eval_seq_len[1], 16);
    ck_assert_int_eq(e.eval_tokens, 256);
    ck_assert_int_eq(e.eval_seed, 5);
    /* the resolved config keeps batch_tokens and loads again to the same batch */
    char *text = hy_run_config_text(&e.runs[1].cfg);
    ck_assert_ptr_nonnull(strstr(text, "  batch_size: 2\n  batch_tokens: 32\n"));
    free(text);
    hy_experiment_free(&e);
    const char *count[] = {"out_dir=/tmp/unused", "sweep.seeds=2"};
    ck_assert_msg(hy_experiment_load(EXP "tiny-exp.yaml", count, 2, &e) == 0, "%s", hy_last_error());
    ck_assert_int_eq(e.n_runs, 8);   /* 2 variants x 2 seeds x 2 lengths */
    ck_assert_str_eq(e.runs[0].id, "a-T8-s3");
    ck_assert_str_eq(e.runs[3].id, "a-T16-s4");
    ck_assert_int_eq(e.runs[3].cfg.seed, 4);
    ck_assert_int_eq(e.runs[3].cfg.batch_size, 2);   /* no batch_tokens: batch_size as given */
    ck_assert_int_eq(e.eval_seed, 3);
    hy_experiment_free(&e);
}
END_TEST

/* sweep.precision: each variant at f32 and bf16, labelled and in its own folder, compute.precision
 * set per run next to the experiment's other compute keys. */
START_TEST(compose_precision_sweep) {
    hy_experiment e;
    const char *sets[] = {"out_dir=/tmp/unused"};
    ck_assert_msg(hy_experiment_load(EXP "tiny-precision.yaml", sets, 1, &e) == 0, "%s", hy_last_error());
    ck_assert_int_eq(e.n_runs, 4);
    static const char *const ids[] = {"a:precision=f32-T8", "a:precision=bf16-T8", "b:precision=f32-T8",
                                      "b:precision=bf16-T8"};
    for (int i = 0; i < 4; i++) {
        const hy_run_config *c = &e.runs[i].cfg;
        ck_assert_str_eq(e.runs[i].id, ids[i]);
        ck_assert_int_eq(c->precision, i % 2 ? HY_PREC_BF16 : HY_PREC_F32);
        ck_assert_int_eq(c->gemm, HY_GEMM_ONEDNN);   /* the experiment's compute map is kept */
        ck_assert_double_eq(c->lr, i < 2 ? 0.01 : 0.005);
        char *text = hy_run_config_text(c);   /* the resolved config reruns the same precision */
        ck_assert_ptr_nonnull(strstr(text, i % 2 ? "compute:\n  gemm: onednn\n  precision: bf16\n"
                                                 : "compute:\n  gemm: onednn\n  precision: f32\n"));
        free(text);
    }
    ck_assert_str_eq(e.runs[1].variant, "a:precision=bf16");
    hy_experiment_free(&e);
    /* a value given by --set is checked like the file's */
    const char *dup[] = {"out_dir=/tmp/unused", "sweep.precision[1]=f32"};
    ck_assert_int_eq(hy_experiment_load(EXP "tiny-precision.yaml", dup, 2, &e), HY_ERR_CONFIG);
    ck_assert_msg(strstr(hy_last_error(), "--set sweep.precision[1]=f32: duplicate precision f32") != NULL, "%s", hy_last_error());
}
END_TEST

typedef struct {
    const char *file, *where, *path, *problem;
} bad_case;

static const bad_case bad_cases[] = {
    {"unknown-top.yaml", "3:1", "sweeep", "unknown key 'sweeep' (allowed: name, seed, threads, out_dir, compute, data, train, "
                                          "variants, sweep, budget, bench, eval, reference)"},
    {"seed-dup.yaml", "5:16", "sweep.seed[2]", "duplicate seed 1"},
    {"seed-both.yaml", "3:1", "seed", "sweep.seed is also set: give the seeds in one place"},
    {"seeds-and-list.yaml", "4:3", "sweep.seeds", "sweep.seed is also set: give the seeds in one place"},
    {"batch-tokens.yaml", "4:17", "train.batch_tokens", "must be a multiple of train.seq_len (8), got 100"},
    {"batch-disagree.yaml", "5:15", "train.batch_size", "is 2, but train.batch_tokens 64 / seq_len 8 = 8 sequences per step"},
    {"eval-bad.yaml", "4:16", "eval.seq_len[1]", "must be an integer in [1, 16777216], got 0"},
    {"variants-map.yaml", "2:3", "variants", "must be a non-empty list of {name, model, train}, got a map"},
    {"variant-no-name.yaml", "2:5", "variants[0].name", "missing required key"},
    {"variant-duplicate.yaml", "3:12", "variants[1].name", "duplicate variant name 'a' (also variants[0])"},
    {"model-missing.yaml", "2:22", "variants[0].model", "cannot open the model file tests/configs/bad-exp/models/nope.yaml"},
    {"inline-model-error.yaml", "6:23", "variants[0].model.layers.mixer", "unknown mixer block 'attentoin'"},
    {"sweep-not-list.yaml", "2:12", "sweep.seq_len", "must be a non-empty list"},
    {"sweep-item.yaml", "2:17", "sweep.seq_len[1]", "must be an integer in [1, 16777216], got 'big'"},
    {"too-many-runs.yaml", "2:3", "sweep", "11000 runs: more than 10000"},
    {"precision-item.yaml", "2:20", "sweep.precision[1]", "must be one of f32, bf16; got 'f16'"},
    {"precision-dup.yaml", "1:32", "sweep.precision[2]", "duplicate precision bf16"},
    {"precision-both.yaml", "2:3", "compute.precision", "is swept (sweep.precision): remove it here"},
    {"budget-conflict.yaml", "4:3", "budget.steps", "train.steps is also set: give the budget in one place"},
    {"budget-empty.yaml", "1:9", "budget", "give at least one of steps, tokens, seconds"},
    {"swept-in-variant.yaml", "5:13", "variants[0].train.seq_len", "is swept (sweep.seq_len): remove it here"},
    {"bench-block.yaml", "2:23", "bench.blocks[1]", "unknown block (registered: "},
    {"nothing.yaml", "1:1", "variants", "missing required key"},
    {"bench-unused.yaml", "2:1", "train", "has no effect in an experiment without variants"},
    {"task-length.yaml", "3:23", "sweep.seq_len[1]", "mqar needs seq_len >= 4 * num_kv_pairs = 32"},
    {"task-eval.yaml", "3:1", "eval", "is for corpus experiments; a task experiment evaluates at data.task.eval_seq_len"},
    {"task-option.yaml", "2:27", "data.task.num_kv_pairs", "unknown key 'num_kv_pairs' (allowed: type, vocab, examples, "
                                                            "eval_seq_len, streaming)"},
};

START_TEST(bad_experiment) {
    const bad_case *b = &bad_cases[_i];
    char path[256], want[1024];
    snprintf(path, sizeof path, BADX "%s", b->file);
    snprintf(want, sizeof want, "%s:%s: %s: %s", path, b->where, b->path, b->problem);
    hy_experiment e;
    ck_assert_int_eq(hy_experiment_load(path, NULL, 0, &e), HY_ERR_CONFIG);
    const char *msg = hy_last_error();
    ck_assert_msg(strncmp(msg, want, strlen(want)) == 0, "\nexpected: %s...\n     got: %s", want, msg);
    ck_assert_ptr_null(e.runs);
}
END_TEST

/* An error inside a model file names the model file, its line and column. */
START_TEST(model_file_error) {
    hy_experiment e;
    ck_assert_int_eq(hy_experiment_load(BADX "model-file-error.yaml", NULL, 0, &e), HY_ERR_CONFIG);
    const char *want = BADX "models/broken.yaml:4:33: model.blocks.attention.n_heads: must be an integer, got 'three'";
    ck_assert_msg(!strncmp(hy_last_error(), want, strlen(want)), "got %s", hy_last_error());
}
END_TEST

/* Every shipped experiment and every model file in configs/models/ loads. */
START_TEST(shipped_configs) {
    static const char *const exps[] = {"configs/quick-sweep.yaml", "configs/crossover.yaml", "configs/mqar.yaml",
                                       "configs/selective-copy.yaml", "configs/induction.yaml",
                                       "configs/jamba-like.yaml", "configs/jamba-like-full.yaml", "configs/stripedhyena-like.yaml",
                                       "configs/corpus-context.yaml", "configs/precision.yaml",
                                       "configs/modern-hybrids.yaml"};
    for (size_t i = 0; i < sizeof exps / sizeof *exps; i++) {
        hy_experiment e;
        bool is_exp;
        hy_experiment_detect(exps[i], &is_exp);
        ck_assert_msg(is_exp, "%s is not detected as an experiment", exps[i]);
        ck_assert_msg(hy_experiment_load(exps[i], NULL, 0, &e) == 0, "%s", hy_last_error());
        ck_assert(e.n_runs > 0 || e.bench.enabled);
        if (strstr(exps[i], "precision")) {   /* mamba, transformer x f32, bf16 at the shape */
            ck_assert_int_eq(e.n_runs, 4);
            static const char *const ids[] = {"mamba:precision=f32-T1024", "mamba:precision=bf16-T1024",
                                              "transformer:precision=f32-T1024", "transformer:precision=bf16-T1024"};
            for (int r = 0; r < 4; r++) {
                ck_assert_str_eq(e.runs[r].id, ids[r]);
                ck_assert_int_eq(e.runs[r].cfg.precision, r % 2 ? HY_PREC_BF16 : HY_PREC_F32);
                ck_assert_int_eq(e.runs[r].cfg.model.d_model, 512);
                ck_assert_int_eq(e.runs[r].cfg.model.n_layers, 8);
                ck_assert_int_eq(e.runs[r].cfg.seq_len, 1024);
                ck_assert_int_eq(e.runs[r].cfg.steps, 1000);
                ck_assert_int_eq(e.runs[r].cfg.seed, 1234);
            }
        }
        if (strstr(exps[i], "modern-hybrids")) {   /* 4 variants x lr {0.003, 0.006, 0.012} x 2 seeds x T {32, 128} */
            ck_assert_int_eq(e.n_runs, 48);
            ck_assert_str_eq(e.runs[0].id, "transformer-T32-lr0.003-s1234");
            ck_assert_str_eq(e.runs[47].id, "qwen3-next-like-T128-lr0.012-s1235");
            ck_assert_int_eq(e.runs[0].cfg.batch_size, 64);   /* 2048 tokens per step at either T */
            ck_assert_int_eq(e.runs[1].cfg.batch_size, 16);
            ck_assert_int_eq(e.runs[47].cfg.steps, 1000);
            ck_assert(e.runs[4].cfg.lr == 0.006);
            ck_assert(e.runs[8].cfg.lr == 0.012);
            /* the Mamba-2 hybrid: attention at layer 2 of 4; the Qwen3-Next-like one: at layer 3 */
            const hy_model_config *m2 = &e.runs[24].cfg.model, *q3 = &e.runs[36].cfg.model;
            ck_assert_str_eq(e.runs[24].variant, "mamba2-hybrid");
            ck_assert_str_eq(e.runs[36].variant, "qwen3-next-like");
            for (int l = 0; l < 4; l++) {
                ck_assert_ptr_eq(m2->layers[l].mixer.ops, hy_block_find(l == 2 ? "attention" : "mamba2"));
                ck_assert_ptr_eq(q3->layers[l].mixer.ops, hy_block_find(l == 3 ? "attention" : "gated_deltanet"));
                ck_assert_int_eq(m2->d_model, 64);
                ck_assert_int_eq(q3->d_model, 64);
            }
        }
        if (strstr(exps[i], "mqar")) {   /* a d_model sweep: labelled variants, auto options follow the width */
            /* attention, mamba, mamba2, gated-deltanet, hyena x d_model {32, 64} x lr {0.003, 0.01} x
             * 3 seeds x T {64, 128} */
            ck_assert_int_eq(e.n_runs, 120);
            ck_assert_str_eq(e.runs[0].variant, "attention:d_model=32");
            ck_assert_str_eq(e.runs[13].id, "attention:d_model=64-T128-lr0.003-s1234");
            ck_assert_int_eq(e.runs[0].cfg.model.d_model, 32);
            ck_assert_int_eq(e.runs[12].cfg.model.d_model, 64);
            ck_assert_int_ne(hy_opt_int(&e.runs[0].cfg.model.layers[0].ffn.opts, 0),
                             hy_opt_int(&e.runs[12].cfg.model.layers[0].ffn.opts, 0));
            /* min_lr_ratio 1: every run holds its own swept lr */
            ck_assert(e.runs[0].cfg.lr == 0.003 && e.runs[0].cfg.min_lr == 0.003);
            ck_assert(e.runs[6].cfg.lr == 0.01 && e.runs[6].cfg.min_lr == 0.01);
            ck_assert_int_eq(e.runs[0].cfg.task.type, HY_TASK_MQAR);
        }
        hy_experiment_free(&e);
    }
    hy_run_config c;
    ck_assert_msg(hy_run_config_load("configs/transformer.yaml", NULL, 0, &c) == 0, "%s", hy_last_error());
    hy_run_config_free(&c);
    static const char *const models[] = {"transformer", "transformer-small", "mamba", "s4d", "rwkv7", "hyena",
                                         "jamba-like", "hybrid-1-3", "striped-1-1", "transformer-d64", "mamba-d64",
                                         "hybrid-1-3-d64", "hyena-d64", "striped-1-1-d64", "mamba2", "mamba2-hybrid",
                                         "gated-deltanet", "qwen3-next-like", "mamba2-hybrid-d64",
                                         "qwen3-next-like-d64"};
    char path[256], text[512];
    snprintf(path, sizeof path, "/tmp/hybrid-test-exp-models-%d.yaml", (int)getpid());
    int loaded = 0;
    for (size_t i = 0; i < sizeof models / sizeof *models; i++) {
        char cwd[256];
        ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
        snprintf(text, sizeof text, "variants:\n  - {name: m, model: %s/configs/models/%s.yaml}\n", cwd, models[i]);
        ck_assert_int_eq(hy_write_file_atomic(path, text, strlen(text)), 0);
        hy_experiment e;
        ck_assert_msg(hy_experiment_load(path, NULL, 0, &e) == 0, "%s: %s", models[i], hy_last_error());
        loaded++;
        ck_assert_int_eq(e.runs[0].cfg.model.d_model, strstr(models[i], "small") || strstr(models[i], "d64") ? 64 : 128);
        hy_experiment_free(&e);
    }
    ck_assert_int_eq(loaded, (int)(sizeof models / sizeof *models));
    unlink(path);
}
END_TEST

/* ---- running ---- */

static void first_line_is(const char *dir, const char *name, const char *header) {
    char *t = tu_slurp(dir, name, NULL);
    ck_assert_msg(!strncmp(t, header, strlen(header)), "%s/%s starts with\n%.200s\nnot\n%s", dir, name, t, header);
    hy_free(t);
}

static int count_lines(const char *text) {
    int n = 0;
    for (; *text; text++) n += *text == '\n';
    return n;
}

/* Blanks the fields 11, 12, 13 (train_s, tokens_per_s, peak_bytes) of each sweep.csv row in place. */
static void drop_measured(char *csv) {
    char *w = csv;
    int field = 0;
    for (char *r = csv; *r; r++) {
        if (*r == '\n') field = 0;
        else if (*r == ',') field++;
        else if (field >= 11 && field <= 13) continue;
        *w++ = *r;
    }
    *w = 0;
}

static void load_exp(hy_experiment *e, const char *file, const char *dir, const char *extra) {
    char set[600];
    snprintf(set, sizeof set, "out_dir=%s", dir);
    const char *sets[] = {set, extra};
    ck_assert_msg(hy_experiment_load(file, sets, extra ? 2 : 1, e) == 0, "%s", hy_last_error());
}

static int file_exists(const char *dir, const char *name) {
    char path[700];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    struct stat st;
    return stat(path, &st) == 0 && st.st_size > 0;
}

START_TEST(sweep_resume_and_schema) {
    char dir[256];
    tu_fresh_dir(dir, sizeof dir, "exp-resume", false);
    hy_experiment e;
    hy_exp_result r;
    load_exp(&e, EXP "tiny-exp.yaml", dir, NULL);
    /* a first call that stops after one run */
    hy_exp_opts o = {.stop_after_runs = 1, .no_plots = true};
    ck_assert_msg(hy_experiment_run(&e, &o, &r) == 0, "%s", hy_last_error());
    ck_assert_int_eq(r.trained, 1);
    ck_assert(r.interrupted);
    char *first = tu_slurp(dir, "runs/a-T8/result.csv", NULL);
    /* the next call trains the other three only */
    hy_exp_opts all = {0};
    ck_assert_msg(hy_experiment_run(&e, &all, &r) == 0, "%s", hy_last_error());
    ck_assert_int_eq(r.trained, 3);
    ck_assert_int_eq(r.skipped, 1);
    ck_assert(!r.interrupted);
    char *again = tu_slurp(dir, "runs/a-T8/result.csv", NULL);
    ck_assert_str_eq(first, again);
    hy_free(again);
    /* SPEC §5 headers, one sweep row per variant x seq_len, in run order */
    first_line_is(dir, "sweep.csv", "variant,seq_len,seed,lr,batch_size,batch_tokens,steps,tokens,stopped_by,params,"
                                    "flop_per_token,train_s,tokens_per_s,peak_bytes,state_bytes,val_loss,val_ppl,"
                                    "val_bits_per_byte,bytes_per_token,lr_selected\n");
    first_line_is(dir, "train.csv", "variant,seq_len,seed,peak_lr,step,tokens,train_loss,val_loss,lr,grad_norm,tokens_per_s,"
                                    "elapsed_s,aux_loss,comm_s,val_bits_per_byte,val_accuracy\n");
    first_line_is(dir, "eval.csv", "variant,seq_len,seed,lr,task,eval_seq_len,val_loss,val_bits_per_byte,accuracy,labels,"
                                   "bytes_per_token\n");
    first_line_is(dir, "position.csv", "variant,seq_len,seed,lr,eval_seq_len,position,loss\n");
    char *sweep = tu_slurp(dir, "sweep.csv", NULL);
    ck_assert_int_eq(count_lines(sweep), 5);
    ck_assert_ptr_nonnull(strstr(sweep, "\na,8,"));
    ck_assert_ptr_nonnull(strstr(sweep, "\nb,16,"));
    size_t at_a8 = (size_t)(strstr(sweep, "\na,8,") - sweep), at_a16 = (size_t)(strstr(sweep, "\na,16,") - sweep),
           at_b8 = (size_t)(strstr(sweep, "\nb,8,") - sweep);
    ck_assert(at_a8 < at_a16 && at_a16 < at_b8);
    char *train = tu_slurp(dir, "train.csv", NULL);
    ck_assert_ptr_nonnull(strstr(train, "\nb,16,3,0.005,3,"));   /* every run's rows: variant, seq_len, seed, lr, step */
    hy_free(train);
    hy_csv TR;   /* a corpus run: val_accuracy is empty on every row */
    char tpath[600];
    snprintf(tpath, sizeof tpath, "%s/train.csv", dir);
    ck_assert_int_eq(hy_csv_load(tpath, &TR), 0);
    ck_assert_int_gt(TR.n_rows, 4);
    for (int i = 0; i < TR.n_rows; i++) ck_assert(isnan(hy_csv_num(&TR, i, hy_csv_col(&TR, "val_accuracy"))));
    hy_csv_free(&TR);
    ck_assert(file_exists(dir, "experiment.yaml") && file_exists(dir, "runs/b-T16/config.yaml"));
    ck_assert(file_exists(dir, "report.md") && file_exists(dir, "quality.png") && file_exists(dir, "learning.svg"));
    /* everything complete: nothing is trained again */
    ck_assert_int_eq(hy_experiment_run(&e, &o, &r), 0);
    ck_assert_int_eq(r.trained, 0);
    ck_assert_int_eq(r.skipped, 4);
    /* a run whose result is lost is finished from its checkpoint, with the same numbers */
    char path[600];
    snprintf(path, sizeof path, "%s/runs/b-T8/result.csv", dir);
    char *before = tu_slurp(dir, "runs/b-T8/result.csv", NULL);
    ck_assert_int_eq(unlink(path), 0);
    ck_assert_int_eq(hy_experiment_run(&e, &all, &r), 0);
    ck_assert_int_eq(r.trained, 1);
    char *after = tu_slurp(dir, "runs/b-T8/result.csv", NULL), *sweep2 = tu_slurp(dir, "sweep.csv", NULL);
    drop_measured(before), drop_measured(after);   /* train_s, tokens_per_s, peak_bytes are measurements */
    ck_assert_str_eq(before, after);
    hy_free(before), hy_free(after);
    ck_assert_int_eq(count_lines(sweep2), 5);
    hy_free(sweep2), hy_free(sweep);
    hy_experiment_free(&e);
    /* checkpoint_every says how a run is kept, not what it computes: complete runs stay complete, and a
     * run whose result is lost resumes from its checkpoint with the same numbers */
    load_exp(&e, EXP "tiny-exp.yaml", dir, "train.checkpoint_every=1");
    ck_assert_int_eq(hy_experiment_run(&e, &o, &r), 0);
    ck_assert_int_eq(r.trained, 0);
    ck_assert_int_eq(r.skipped, 4);
    before = tu_slurp(dir, "runs/b-T8/result.csv", NULL);
    ck_assert_int_eq(unlink(path), 0);
    ck_assert_int_eq(hy_experiment_run(&e, &all, &r), 0);
    ck_assert_int_eq(r.trained, 1);
    after = tu_slurp(dir, "runs/b-T8/result.csv", NULL);
    drop_measured(before), drop_measured(after);
    ck_assert_str_eq(before, after);
    hy_free(before), hy_free(after);
    hy_experiment_free(&e);
    /* a changed config retrains the runs it changes */
    load_exp(&e, EXP "tiny-exp.yaml", dir, "budget.steps=2");
    ck_assert_int_eq(hy_experiment_run(&e, &o, &r), 0);
    ck_assert_int_eq(r.trained, 1);
    char *changed = tu_slurp(dir, "runs/a-T8/result.csv", NULL);
    ck_assert_str_ne(first, changed);
    hy_free(changed), hy_free(first);
    hy_experiment_free(&e);
    tu_remove_dir(dir);
}
END_TEST

/* The same experiment trained twice from scratch with the same thread count writes the same numbers: eval.csv
 * and position.csv byte for byte, sweep.csv but for its measured columns (train_s, tokens_per_s, peak_bytes). */
START_TEST(sweep_rerun_identical) {
    char dir[2][256];
    char *eval[2], *position[2], *sweep[2];
    for (int k = 0; k < 2; k++) {
        tu_fresh_dir(dir[k], sizeof dir[k], k ? "exp-rerun-b" : "exp-rerun-a", false);
        hy_experiment e;
        hy_exp_result r;
        load_exp(&e, EXP "tiny-rerun.yaml", dir[k], NULL);
        hy_exp_opts o = {.no_plots = true};
        ck_assert_msg(hy_experiment_run(&e, &o, &r) == 0, "%s", hy_last_error());
        ck_assert_int_eq(r.trained, 12);
        eval[k] = tu_slurp(dir[k], "eval.csv", NULL);
        position[k] = tu_slurp(dir[k], "position.csv", NULL);
        sweep[k] = tu_slurp(dir[k], "sweep.csv", NULL);
        hy_experiment_free(&e);
    }
    ck_assert_int_eq(count_lines(sweep[0]), 13);
    ck_assert_int_eq(count_lines(eval[0]), 25);   /* every run scored at T 8 and 32 */
    ck_assert_int_gt(count_lines(position[0]), 12 * 32);
    ck_assert_str_eq(eval[0], eval[1]);
    ck_assert_str_eq(position[0], position[1]);
    for (int k = 0; k < 2; k++) {   /* sweep.csv: train_s, tokens_per_s, peak_bytes are fields 11-13 */
        drop_measured(sweep[k]);
        hy_free(eval[k]), hy_free(position[k]);
        tu_remove_dir(dir[k]);
    }
    ck_assert_str_eq(sweep[0], sweep[1]);
    hy_free(sweep[0]), hy_free(sweep[1]);
}
END_TEST

/* Ctrl-C in the middle of a run: the run is resumed from its checkpoint by the next call and
 * ends with the numbers of an uninterrupted run. */
typedef struct {
    volatile sig_atomic_t flag;
    int resumes, ticks;
} interrupt_ctx;

static void interrupt_at_first_tick(void *ctx, const hy_exp_progress *p) {
    interrupt_ctx *c = ctx;
    if (!strcmp(p->event, "tick") && c->ticks++ == 0) c->flag = 1;
    if (!strcmp(p->event, "resume")) c->resumes++;
}

START_TEST(interrupt_and_resume) {
    char a[256], b[256];
    tu_fresh_dir(a, sizeof a, "exp-straight", false);
    tu_fresh_dir(b, sizeof b, "exp-interrupted", false);
    hy_experiment ea, eb;
    hy_exp_result r;
    load_exp(&ea, EXP "tiny-exp.yaml", a, NULL);
    load_exp(&eb, EXP "tiny-exp.yaml", b, NULL);
    hy_exp_opts one = {.stop_after_runs = 1, .no_plots = true};
    ck_assert_int_eq(hy_experiment_run(&ea, &one, &r), 0);
    interrupt_ctx ic = {0};
    hy_exp_opts o = {.stop_after_runs = 1, .no_plots = true, .on_progress = interrupt_at_first_tick, .ctx = &ic,
                     .stop = &ic.flag};
    ck_assert_int_eq(hy_experiment_run(&eb, &o, &r), 0);
    ck_assert(r.interrupted);
    ck_assert_int_eq(r.trained, 0);
    ck_assert(file_exists(b, "runs/a-T8/checkpoint.safetensors") && !file_exists(b, "runs/a-T8/result.csv"));
    ic.flag = 0;
    ck_assert_int_eq(hy_experiment_run(&eb, &o, &r), 0);
    ck_assert_int_eq(ic.resumes, 1);
    ck_assert_int_eq(r.trained, 1);
    char *ra = tu_slurp(a, "runs/a-T8/result.csv", NULL), *rb = tu_slurp(b, "runs/a-T8/result.csv", NULL);
    drop_measured(ra), drop_measured(rb);
    ck_assert_str_eq(ra, rb);
    hy_free(ra), hy_free(rb);
    hy_experiment_free(&ea), hy_experiment_free(&eb);
    tu_remove_dir(a), tu_remove_dir(b);
}
END_TEST

/* The fair-comparison machinery end to end on tiny-seeds.yaml (2 lrs x 2 seeds x T 8, 16 at 32
 * tokens per step): equal tokens and steps at every T, one sweep row per run with its seed and lr,
 * the lr selection against the mean over seeds, the common evaluation on the same windows, and
 * position.csv whose mean over positions is eval.csv's loss at the longest length. */
START_TEST(seeds_lr_position_end_to_end) {
    char dir[256];
    tu_fresh_dir(dir, sizeof dir, "exp-seeds", false);
    hy_experiment e;
    hy_exp_result r;
    load_exp(&e, EXP "tiny-seeds.yaml", dir, NULL);
    hy_exp_opts o = {.no_plots = true};
    ck_assert_msg(hy_experiment_run(&e, &o, &r) == 0, "%s", hy_last_error());
    ck_assert_int_eq(r.trained, 8);
    hy_results R;
    ck_assert_int_eq(hy_results_load(dir, &R), 0);
    const hy_csv *S = &R.sweep, *E = &R.eval, *P = &R.position;
    ck_assert_int_eq(S->n_rows, 8);
    int c_T = hy_csv_col(S, "seq_len"), c_seed = hy_csv_col(S, "seed"), c_lr = hy_csv_col(S, "lr"),
        c_steps = hy_csv_col(S, "steps"), c_tok = hy_csv_col(S, "tokens"), c_bs = hy_csv_col(S, "batch_size"),
        c_bt = hy_csv_col(S, "batch_tokens"), c_stop = hy_csv_col(S, "stopped_by"), c_sel = hy_csv_col(S, "lr_selected"),
        c_loss = hy_csv_col(S, "val_loss");
    double mean[2][2] = {{0}};   /* [T index][lr index]: mean val_loss over the two seeds */
    for (int i = 0; i < 8; i++) {
        int T = (int)hy_csv_num(S, i, c_T), ti = T == 16, li = hy_csv_num(S, i, c_lr) < 0.005;
        ck_assert_int_eq((int)hy_csv_num(S, i, c_steps), 3);            /* equal steps ... */
        ck_assert_int_eq((int)hy_csv_num(S, i, c_tok), 3 * 32);         /* ... and equal tokens at each T */
        ck_assert_int_eq((int)hy_csv_num(S, i, c_bs), 32 / T);
        ck_assert_int_eq((int)hy_csv_num(S, i, c_bt), 32);
        ck_assert_str_eq(hy_csv_str(S, i, c_stop), "steps");
        int seed = (int)hy_csv_num(S, i, c_seed);
        ck_assert(seed == 5 || seed == 6);
        mean[ti][li] += hy_csv_num(S, i, c_loss) / 2;
    }
    for (int i = 0; i < 8; i++) {   /* the selected lr is the one with the lower mean over seeds */
        int ti = (int)hy_csv_num(S, i, c_T) == 16, li = hy_csv_num(S, i, c_lr) < 0.005;
        int best = mean[ti][1] < mean[ti][0];
        ck_assert_int_eq((int)hy_csv_num(S, i, c_sel), li == best);
    }
    /* the seeds differ in their result; the evaluation does not depend on them (same windows) */
    ck_assert_double_ne(hy_csv_num(S, 0, c_loss), hy_csv_num(S, 2, c_loss));
    ck_assert_int_eq(E->n_rows, 16);   /* every run at T 8 and 16 */
    int e_len = hy_csv_col(E, "eval_seq_len"), e_loss = hy_csv_col(E, "val_loss"), e_lab = hy_csv_col(E, "labels"),
        e_T = hy_csv_col(E, "seq_len"), e_seed = hy_csv_col(E, "seed"), e_lr = hy_csv_col(E, "lr"),
        e_bits = hy_csv_col(E, "val_bits_per_byte");
    for (int i = 0; i < E->n_rows; i++) {
        ck_assert_str_eq(hy_csv_str(E, i, hy_csv_col(E, "task")), "corpus");
        ck_assert_int_eq((int)hy_csv_num(E, i, e_lab), 256);   /* eval.tokens = 256 at either length */
        ck_assert_double_eq_tol(hy_csv_num(E, i, e_bits), hy_csv_num(E, i, e_loss) / log(2.0), 1e-5);
    }
    /* position.csv: 16 positions per run at the longest length; their mean is eval.csv's loss */
    ck_assert_int_eq(P->n_rows, 8 * 16);
    int p_T = hy_csv_col(P, "seq_len"), p_seed = hy_csv_col(P, "seed"), p_lr = hy_csv_col(P, "lr"),
        p_pos = hy_csv_col(P, "position"), p_loss = hy_csv_col(P, "loss"), p_len = hy_csv_col(P, "eval_seq_len");
    int checked = 0;
    for (int i = 0; i < E->n_rows; i++) {
        if ((int)hy_csv_num(E, i, e_len) != 16) continue;
        double sum = 0;
        int n = 0;
        for (int k = 0; k < P->n_rows; k++)
            if (!strcmp(hy_csv_str(P, k, p_T), hy_csv_str(E, i, e_T)) &&
                !strcmp(hy_csv_str(P, k, p_seed), hy_csv_str(E, i, e_seed)) &&
                !strcmp(hy_csv_str(P, k, p_lr), hy_csv_str(E, i, e_lr))) {
                ck_assert_int_eq((int)hy_csv_num(P, k, p_pos), n);
                ck_assert_int_eq((int)hy_csv_num(P, k, p_len), 16);
                sum += hy_csv_num(P, k, p_loss), n++;
            }
        ck_assert_int_eq(n, 16);
        ck_assert_double_eq_tol(sum / n, hy_csv_num(E, i, e_loss), 2e-6);
        checked++;
    }
    ck_assert_int_eq(checked, 8);
    /* the sweep row's val_loss is the common evaluation at the run's own T */
    for (int i = 0; i < 8; i++)
        for (int k = 0; k < E->n_rows; k++)
            if (!strcmp(hy_csv_str(E, k, e_T), hy_csv_str(S, i, c_T)) && !strcmp(hy_csv_str(E, k, e_len), hy_csv_str(S, i, c_T)) &&
                !strcmp(hy_csv_str(E, k, e_seed), hy_csv_str(S, i, c_seed)) && !strcmp(hy_csv_str(E, k, e_lr), hy_csv_str(S, i, c_lr)))
                ck_assert_double_eq_tol(hy_csv_num(E, k, e_loss), hy_csv_num(S, i, c_loss), 1e-6);
    hy_results_free(&R);
    hy_experiment_free(&e);
    /* a run cut by the wall clock is flagged in sweep.csv and marked in the report */
    char cut[300];
    snprintf(cut, sizeof cut, "%s-cut", dir);
    const char *sets[] = {"budget.seconds=0.000001", "budget.steps=1000000"};
    char set0[600];
    snprintf(set0, sizeof set0, "out_dir=%s", cut);
    const char *all[] = {set0, sets[0], sets[1]};
    ck_assert_msg(hy_experiment_load(EXP "tiny-seeds.yaml", all, 3, &e) == 0, "%s", hy_last_error());
    hy_exp_opts plots = {0};
    ck_assert_msg(hy_experiment_run(&e, &plots, &r) == 0, "%s", hy_last_error());
    char *sw = tu_slurp(cut, "sweep.csv", NULL), *rep = tu_slurp(cut, "report.md", NULL);
    int n_cut = 0;
    for (const char *q = sw; (q = strstr(q, ",seconds,")); q++) n_cut++;
    ck_assert_int_eq(n_cut, 8);   /* every run, and only as stopped_by */
    ck_assert_ptr_nonnull(strstr(rep, "†"));
    hy_free(sw), hy_free(rep);
    hy_experiment_free(&e);
    tu_remove_dir(cut);
    tu_remove_dir(dir);
}
END_TEST

START_TEST(task_experiment) {
    char dir[256];
    tu_fresh_dir(dir, sizeof dir, "exp-mqar", false);
    hy_experiment e;
    hy_exp_result r;
    load_exp(&e, EXP "tiny-mqar.yaml", dir, NULL);
    hy_exp_opts o = {0};
    ck_assert_msg(hy_experiment_run(&e, &o, &r) == 0, "%s", hy_last_error());
    hy_csv E;
    char path[600];
    snprintf(path, sizeof path, "%s/eval.csv", dir);
    ck_assert_int_eq(hy_csv_load(path, &E), 0);
    ck_assert_int_eq(E.n_rows, 2);   /* the training length and the extra evaluation length */
    for (int i = 0; i < 2; i++) {
        ck_assert_str_eq(hy_csv_str(&E, i, hy_csv_col(&E, "task")), "mqar");
        double acc = hy_csv_num(&E, i, hy_csv_col(&E, "accuracy"));
        ck_assert(acc >= 0 && acc <= 1);
        /* only the answers count: K = 2 labels per sequence, batch 4, 2 batches */
        ck_assert_int_eq((int)hy_csv_num(&E, i, hy_csv_col(&E, "labels")), 2 * 4 * 2);
    }
    ck_assert_int_eq((int)hy_csv_num(&E, 1, hy_csv_col(&E, "eval_seq_len")), 32);
    hy_csv_free(&E);
    /* train.csv: val_accuracy at the evaluated rows (steps 0 and 2), in [0, 1]; empty at step 1 (logged only) */
    snprintf(path, sizeof path, "%s/train.csv", dir);
    ck_assert_int_eq(hy_csv_load(path, &E), 0);
    ck_assert_int_eq(E.n_rows, 3);
    int c_step = hy_csv_col(&E, "step"), c_acc = hy_csv_col(&E, "val_accuracy"), c_val = hy_csv_col(&E, "val_loss");
    for (int i = 0; i < 3; i++) {
        double acc = hy_csv_num(&E, i, c_acc);
        ck_assert_int_eq((int)hy_csv_num(&E, i, c_step), i);
        if (i == 1) ck_assert(isnan(acc) && isnan(hy_csv_num(&E, i, c_val)));
        else ck_assert_msg(acc >= 0 && acc <= 1 && isfinite(hy_csv_num(&E, i, c_val)), "row %d: accuracy %g", i, acc);
    }
    hy_csv_free(&E);
    ck_assert(file_exists(dir, "generalization.png") && file_exists(dir, "quality.svg"));
    char *rep = tu_slurp(dir, "report.md", NULL);
    ck_assert_ptr_nonnull(strstr(rep, "| accuracy |"));
    hy_free(rep);
    hy_experiment_free(&e);
    tu_remove_dir(dir);
}
END_TEST

/* The program end to end on a benchmark-only experiment: layers.csv with SPEC §5's header, its
 * plots and report, the progress display, and `plot` redrawing from the CSVs. */
START_TEST(cli_bench_experiment) {
    char dir[256], cmd[1200];
    tu_fresh_dir(dir, sizeof dir, "exp-cli", false);
    const char *exe = tu_exe();
    snprintf(cmd, sizeof cmd, "%s " EXP "tiny-bench.yaml --out %s > %s.log 2>&1", exe, dir, dir);
    ck_assert_msg(system(cmd) == 0, "%s failed (see %s.log)", cmd, dir);
    first_line_is(dir, "layers.csv", "block,d_model,batch,seq_len,pass,ms,gflop,gflops_per_s,peak_bytes,state_bytes,threads,"
                                     "best_f32_gemm_gflops_per_s,ratio_to_best_f32_gemm\n");
    char *layers = tu_slurp(dir, "layers.csv", NULL);
    ck_assert_ptr_nonnull(strstr(layers, "\nattention,16,1,16,fwd,"));
    ck_assert_ptr_nonnull(strstr(layers, "\nswiglu,16,1,32,fwd_bwd,"));
    ck_assert_ptr_null(strstr(layers, ",16,1,64,"));   /* min_T / max_T honoured: no T = 64 row */
    /* every row's ratio is its rate over the run's best f32 GEMM, and that yardstick is positive */
    int rows = 0;
    for (const char *line = strchr(layers, '\n'); line && line[1]; line = strchr(line + 1, '\n'), rows++) {
        const char *f = line + 1;
        double v[13];
        for (int c = 0; c < 13; c++) {
            v[c] = strtod(f, NULL);
            f = strchr(f, ',');
            if (c < 12) {
                ck_assert_ptr_nonnull(f);
                f++;
            }
        }
        ck_assert_msg(v[11] > 0, "best_f32_gemm_gflops_per_s must be positive");
        /* the CSV rounds the rate to 3 decimals and the yardstick to 1: their quotient is off by up to
         * (0.0005 + ratio·0.05) / yardstick, which matters when a loaded machine makes the yardstick small */
        double tol = 1e-4 + (0.0005 + 0.05 * fabs(v[12])) / v[11];
        ck_assert_msg(fabs(v[12] - v[7] / v[11]) <= tol, "ratio %g != %g / %g", v[12], v[7], v[11]);
    }
    ck_assert_int_gt(rows, 0);
    hy_free(layers);
    ck_assert(file_exists(dir, "complexity.svg") && file_exists(dir, "memory.png") && file_exists(dir, "report.md"));
    char *report = tu_slurp(dir, "report.md", NULL);
    ck_assert_ptr_nonnull(strstr(report, "ratio to the best f32 GEMM"));
    ck_assert_ptr_nonnull(strstr(report, "fwd_bwd × GEMM"));
    hy_free(report);
    char unlinked[600];
    snprintf(unlinked, sizeof unlinked, "%s/complexity.png", dir);
    ck_assert_int_eq(unlink(unlinked), 0);
    snprintf(cmd, sizeof cmd, "%s plot %s > /dev/null", exe, dir);
    ck_assert_int_eq(system(cmd), 0);
    ck_assert(file_exists(dir, "complexity.png"));
    snprintf(cmd, sizeof cmd, "%s " BADX "sweep-item.yaml > /dev/null 2>&1", exe);
    int st = system(cmd);
    ck_assert_int_eq(WEXITSTATUS(st), 2);   /* a bad experiment: exit code 2 */
    tu_remove_dir(dir);
}
END_TEST

/* ---- plots ---- */

static void put_file(const char *dir, const char *name, const char *text) {
    char path[700];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    ck_assert_int_eq(hy_write_file_atomic(path, text, strlen(text)), 0);
}

START_TEST(plot_from_csv) {
    char dir[256];
    tu_fresh_dir(dir, sizeof dir, "exp-plot", false);
    ck_assert_int_eq(hy_mkdirs(dir), 0);
    /* attention grows as T^2, "mamba" (made-up numbers) is flat: they cross at 128 * sqrt(2) */
    put_file(dir, "layers.csv",
          "block,d_model,batch,seq_len,pass,ms,gflop,gflops_per_s,peak_bytes,state_bytes,threads\n"
          "attention,64,1,64,fwd,1,0.1,100,1000,4096,2\nattention,64,1,128,fwd,4,0.4,100,2000,8192,2\n"
          "attention,64,1,256,fwd,16,1.6,100,4000,16384,2\nattention,64,1,64,step,0.1,0.1,1,0,4096,2\n"
          "mamba,64,1,64,fwd,8,0.1,12,1000,512,2\nmamba,64,1,128,fwd,8,0.2,25,1000,512,2\n"
          "mamba,64,1,256,fwd,8,0.4,50,1000,512,2\nswiglu,64,1,64,fwd,0.5,0.1,200,100,0,2\n");
    put_file(dir, "sweep.csv",
          "variant,seq_len,params,flop_per_token,tokens,train_s,tokens_per_s,peak_bytes,state_bytes,val_loss,val_ppl,"
          "val_bits_per_byte\nx,64,100,1000,500,1,500,10,10,2.0,7.39,2.885\nx,128,100,1100,500,1,500,10,10,1.9,6.69,2.741\n"
          "y,64,100,900,500,1,500,10,10,2.1,8.17,3.030\ny,128,100,950,500,1,500,10,10,1.8,6.05,2.597\n");
    put_file(dir, "train.csv", "variant,seq_len,step,tokens,train_loss,val_loss,lr,grad_norm,tokens_per_s,elapsed_s\n"
                            "x,64,0,0,,5.5,,,,0\nx,64,1,64,5.0,,0.01,1,64,1\nx,64,2,128,4.0,4.1,0.01,1,64,2\n"
                            "y,128,1,128,5.0,4.9,0.01,1,64,1\n");
    char summary[4096];
    ck_assert_msg(hy_experiment_plot(dir, summary, sizeof summary) == 0, "%s", hy_last_error());
    static const char *const plots[] = {"complexity", "memory", "quality", "learning"};
    tu_assert_plots(dir, plots, 4);
    ck_assert_ptr_nonnull(strstr(summary, "mamba vs attention (fwd): T* = 181"));
    ck_assert_ptr_null(strstr(summary, "swiglu"));   /* an ffn is no alternative to attention */
    char *rep = tu_slurp(dir, "report.md", NULL);
    ck_assert_ptr_nonnull(strstr(rep, "mamba vs attention (fwd): T* = 181"));
    ck_assert_ptr_nonnull(strstr(rep, "![complexity](complexity.svg)"));
    ck_assert_ptr_nonnull(strstr(rep, "| 64 | x | 2.8850 | y | 3.0300 |"));    /* best variant per T */
    ck_assert_ptr_nonnull(strstr(rep, "| 128 | y | 2.5970 | x | 2.7410 |"));
    hy_free(rep);
    hy_csv L;
    char path[600];
    snprintf(path, sizeof path, "%s/layers.csv", dir);
    ck_assert_int_eq(hy_csv_load(path, &L), 0);
    hy_crossover x[8];
    ck_assert_int_eq(hy_crossovers(&L, x, 8), 1);
    ck_assert_int_eq(x[0].kind, 0);
    ck_assert_double_eq_tol(x[0].t_star, 128 * sqrt(2.0), 1e-6);
    ck_assert_double_eq_tol(x[0].ms, 8, 1e-6);
    hy_csv_free(&L);
    /* gnuplot's exit status is checked: without gnuplot on PATH the plot fails and says so */
    char *saved = getenv("PATH") ? strdup(getenv("PATH")) : NULL;
    setenv("PATH", "/nonexistent", 1);
    int rc = hy_experiment_plot(dir, NULL, 0);
    if (saved) setenv("PATH", saved, 1), free(saved);
    ck_assert_int_lt(rc, 0);
    ck_assert_ptr_nonnull(strstr(hy_last_error(), "gnuplot failed"));
    /* nothing to plot: an error, not empty files */
    char empty[300];
    snprintf(empty, sizeof empty, "%s/empty", dir);
    ck_assert_int_eq(hy_mkdirs(empty), 0);
    ck_assert_int_lt(hy_experiment_plot(empty, NULL, 0), 0);
    tu_remove_dir(dir);
}
END_TEST

/* Field `col` of row `row` (1-based) of CSV text, as a number (NAN when empty). */
static double csv_num(const char *csv, const char *col, int row) {
    int at = 0;
    const char *h = csv, *end = csv + strcspn(csv, "\n");
    size_t n = strlen(col);
    while (h < end && !(strncmp(h, col, n) == 0 && (h[n] == ',' || h[n] == '\n'))) h = strchr(h, ',') + 1, at++;
    ck_assert_msg(h < end, "no column %s", col);
    const char *line = csv;
    for (int r = 0; r < row; r++) line = strchr(line, '\n') + 1;
    for (int c = 0; c < at; c++) line = strchr(line, ',') + 1;
    return *line == ',' || *line == '\n' ? NAN : atof(line);
}

/* An experiment on tokens: the tokenizer trained once into the experiment's folder and shared by
 * its runs, bits per byte from the text bytes per token, the common evaluation over the tokens of
 * eval.bytes bytes of text, and the reference experiment's runs in reference.csv and the report.
 * Data that do not fit a run's model stop the experiment before anything is written. */
START_TEST(token_experiment_with_reference) {
    char ref[256], dir[256], set[600];
    tu_fresh_dir(ref, sizeof ref, "exp-tokref", false);
    tu_fresh_dir(dir, sizeof dir, "exp-tokens", false);
    hy_experiment e;
    hy_exp_result r;
    hy_exp_opts o = {0};
    load_exp(&e, EXP "tiny-exp.yaml", ref, NULL);
    ck_assert_msg(hy_experiment_run(&e, &o, &r) == 0, "%s", hy_last_error());
    hy_experiment_free(&e);
    snprintf(set, sizeof set, "reference=%s", ref);
    load_exp(&e, EXP "tiny-tokens.yaml", dir, set);
    ck_assert_int_eq(e.eval_bytes, 2000);
    ck_assert_msg(hy_experiment_run(&e, &o, &r) == 0, "%s", hy_last_error());
    ck_assert_int_eq(r.trained, 2);
    hy_experiment_free(&e);
    char cmd[1200], *o1;
    snprintf(cmd, sizeof cmd, "cd %s && ls tokenizer-bpe300-*.model tokens-*.train.bin tokens-*.val.bin | wc -l > n.txt && "
                              "ls runs/*/*.bin runs/*/*.model 2>/dev/null | wc -l >> n.txt", dir);
    ck_assert_int_eq(system(cmd), 0);
    o1 = tu_slurp(dir, "n.txt", NULL);
    ck_assert_str_eq(o1, "3\n0\n");   /* one tokenizer, one pair of shards, in the experiment's folder only */
    hy_free(o1);
    char *sw = tu_slurp(dir, "sweep.csv", NULL), *ev = tu_slurp(dir, "eval.csv", NULL);
    for (int row = 1; row <= 2; row++) {
        double loss = csv_num(sw, "val_loss", row), bits = csv_num(sw, "val_bits_per_byte", row),
               bpt = csv_num(sw, "bytes_per_token", row);
        ck_assert_msg(bpt > 1.1, "bytes per token %g", bpt);   /* 300 pieces: few merges */
        ck_assert_msg(fabs(bits - loss / log(2.0) / bpt) < 1e-4 * bits, "bits %g, loss %g, bytes/token %g", bits, loss, bpt);
        double labels = csv_num(ev, "labels", row), ebpt = csv_num(ev, "bytes_per_token", row);
        ck_assert_msg(labels * ebpt <= 2000 + 64 && labels * ebpt > 2000 - 16 * 16, "%g tokens x %g bytes", labels, ebpt);
    }
    hy_free(sw), hy_free(ev);
    char *rc = tu_slurp(dir, "reference.csv", NULL);
    ck_assert_msg(!strncmp(rc, "experiment,variant,seq_len,", 27), "%.80s", rc);
    ck_assert_int_eq(count_lines(rc), 5);
    hy_free(rc);
    char *rep = tu_slurp(dir, "report.md", NULL);
    ck_assert_ptr_nonnull(strstr(rep, "## Against the reference (reference.csv)"));
    ck_assert_ptr_nonnull(strstr(rep, "| bytes per token | context (bytes) |"));
    hy_free(rep);
    /* the text read as tokens does not fit: refused before the folder exists */
    char bad[300];
    snprintf(bad, sizeof bad, "%s-bad", dir);
    load_exp(&e, EXP "tiny-tokens.yaml", bad, "data.format=nanogpt");
    ck_assert_int_ne(hy_experiment_run(&e, &o, &r), 0);
    ck_assert_msg(strstr(hy_last_error(), "run t-T8: ") && strstr(hy_last_error(), "model.vocab_size: 320 is too small") &&
                      strstr(hy_last_error(), "tiny-corpus.txt"),
                  "%s", hy_last_error());
    ck_assert_int_ne(access(bad, F_OK), 0);
    hy_experiment_free(&e);
    tu_remove_dir(ref), tu_remove_dir(dir);
}
END_TEST

static Suite *make_experiment_suite(void) {
    Suite *s = suite_create("experiment");
    TCase *t = tcase_create("config");
    tcase_add_test(t, compose_runs);
    tcase_add_test(t, compose_seeds_lr_batch_tokens);
    tcase_add_test(t, compose_precision_sweep);
    tcase_add_loop_test(t, bad_experiment, 0, (int)(sizeof bad_cases / sizeof *bad_cases));
    tcase_add_test(t, model_file_error);
    tcase_add_test(t, shipped_configs);
    suite_add_tcase(s, t);
    t = tcase_create("run");
    tcase_set_timeout(t, getenv("CK_DEFAULT_TIMEOUT") ? atof(getenv("CK_DEFAULT_TIMEOUT")) : 300);   /* trains and plots */
    tcase_add_test(t, sweep_resume_and_schema);
    tcase_add_test(t, sweep_rerun_identical);
    tcase_add_test(t, interrupt_and_resume);
    tcase_add_test(t, cli_bench_experiment);
    tcase_add_test(t, task_experiment);
    tcase_add_test(t, seeds_lr_position_end_to_end);
    tcase_add_test(t, plot_from_csv);
    tcase_add_test(t, token_experiment_with_reference);
    suite_add_tcase(s, t);
    return s;
}
HY_TEST_SUITE(make_experiment_suite)
