/* The data commands of hybrid-exp: `tokenizer train`, `tokenize`, `eval`, and the text codec
 * (bytes or a checkpoint's SentencePiece model) that `generate` and `eval` read text through. */
#include "cli/cli.h"
#include "core/error.h"
#include "core/fileio.h"
#include "core/mem.h"
#include "core/strbuf.h"
#include "core/timer.h"
#include "experiments/csv_schema.h"
#include "experiments/data.h"
#include "experiments/tasks.h"
#include "hybrid.h"
#include "models/checkpoint.h"
#include "models/model.h"
#include <dirent.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- the text codec ---- */

int cli_codec_open(cli_codec *c, const char *cmd, const char *ckpt, const char *given, int V) {
    memset(c, 0, sizeof *c);
    char note[2048];
    int rc = hy_checkpoint_tokenizer(ckpt, given, V, c->tokenizer, note, sizeof note);
    if (rc < 0) {
        fprintf(stderr, "hybrid-exp %s: %s\n", cmd, hy_last_error());
        return rc == HY_ERR_CONFIG ? 2 : 1;
    }
    if (note[0]) fprintf(stderr, "hybrid-exp %s: note: %s\n", cmd, note);
    if (!c->tokenizer[0]) return 0;
    if (hy_tokenizer_load(c->tokenizer, &c->tok) < 0) return fail(1, "cannot load the tokenizer");
    c->n = hy_tokenizer_vocab(c->tok);
    hy_strbuf b = {0};
    c->at = malloc(sizeof *c->at * ((size_t)c->n + 1));
    for (int id = 0; c->at && id < c->n; id++) {   /* every id's text, once */
        char piece[512];
        int len = hy_tokenizer_piece(c->tok, id, piece, sizeof piece);
        c->at[id] = b.len;
        hy_sb_addn(&b, piece, len > (int)sizeof piece ? sizeof piece : (size_t)(len > 0 ? len : 0));
    }
    if (c->at) c->at[c->n] = b.len;
    c->pieces = hy_sb_take(&b);
    if (!c->at || !c->pieces) {
        fprintf(stderr, "hybrid-exp %s: out of memory for the tokenizer's pieces\n", cmd);
        return 1;
    }
    return 0;
}

void cli_codec_free(cli_codec *c) {
    hy_tokenizer_free(c->tok);
    free(c->pieces);
    free(c->at);
    memset(c, 0, sizeof *c);
}

int cli_codec_encode(const cli_codec *c, const char *cmd, const char *text, size_t len, int V, int32_t **ids, size_t *n) {
    *ids = NULL, *n = 0;
    if (c->tok) {
        if (hy_tokenizer_encode(c->tok, text, len, ids, n) < 0) return fail(1, "cannot encode the prompt");
        for (size_t i = 0; i < *n; i++)
            if ((*ids)[i] >= V) {
                fprintf(stderr, "hybrid-exp %s: token %d of the prompt is outside the model's vocabulary of %d\n", cmd,
                        (*ids)[i], V);
                return 2;
            }
        return 0;
    }
    *ids = malloc(sizeof(int32_t) * (len + 1));
    if (!*ids) {
        fprintf(stderr, "hybrid-exp %s: out of memory for a prompt of %zu bytes\n", cmd, len);
        return 1;
    }
    *n = len;
    for (size_t i = 0; i < len; i++) {
        (*ids)[i] = (unsigned char)text[i];
        if ((*ids)[i] >= V) {
            fprintf(stderr, "hybrid-exp %s: prompt byte %zu (0x%02x) is outside the model's vocabulary of %d\n", cmd, i,
                    (unsigned)(*ids)[i], V);
            return 2;
        }
    }
    return 0;
}

void cli_codec_emit(const cli_codec *c, int32_t id, FILE *out) {
    if (!c->tok) fputc(id, out);
    else if (id >= 0 && id < c->n) fwrite(c->pieces + c->at[id], 1, c->at[id + 1] - c->at[id], out);
}

/* ---- tokenizer train ---- */

static const char *TOKENIZER_HELP =
    "usage: hybrid-exp tokenizer train --data CORPUS --vocab N --out T.model [--type bpe|unigram]\n"
    "                                  [--val-fraction F] [--max-sentences N] [--threads N]\n"
    "Trains a SentencePiece model (BPE or unigram) on the text of CORPUS: a file, a folder, a glob or\n"
    "`default` (the built-in corpus), read as data.corpus is; every line is a training sentence.\n"
    "The model keeps text exactly (no normalization, whitespace kept, unknown bytes as byte tokens),\n"
    "so decode(encode(text)) = text.\n"
    "  --vocab N          pieces (at least 260: 256 byte pieces, unk, bos, eos and one more)\n"
    "  --type T           bpe (default) or unigram\n"
    "  --val-fraction F   train on the first 1-F of the corpus only (as data.val_fraction splits it),\n"
    "                     so the validation text stays unseen; default 0 (all of it)\n"
    "  --max-sentences N  sample at most N lines (default 0 = every line)\n"
    "  --threads N        threads (default 0 = all cores)\n";

enum { TOK_DATA = 256, TOK_OUT, TOK_TYPE, TOK_VOCAB, TOK_MAX_SENTENCES, TOK_THREADS, TOK_VAL_FRACTION };
static const struct option TOKENIZER_OPTS[] = {
    {"data", required_argument, NULL, TOK_DATA},   {"out", required_argument, NULL, TOK_OUT},
    {"type", required_argument, NULL, TOK_TYPE},   {"vocab", required_argument, NULL, TOK_VOCAB},
    {"max-sentences", required_argument, NULL, TOK_MAX_SENTENCES},
    {"threads", required_argument, NULL, TOK_THREADS},
    {"val-fraction", required_argument, NULL, TOK_VAL_FRACTION},
    {"help", no_argument, NULL, 'h'},              {NULL, 0, NULL, 0}};

/* `hybrid-exp tokenizer train` (argv[0]: "tokenizer", argv[1]: "train"). */
int cmd_tokenizer(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(TOKENIZER_HELP, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "train") != 0) {
        hy_fail_code(HY_ERR_CONFIG, "unknown subcommand '%s' (train)", argv[1]);
        return cli_usage("tokenizer", TOKENIZER_HELP);
    }
    const char *data = NULL, *out = NULL, *type = "bpe", *v;
    long vocab = 0, max_sentences = 0, threads = 0;
    double vf = 0;
    hy_args w;
    hy_args_init(&w, argc - 1, argv + 1, "h", TOKENIZER_OPTS);
    for (int c; (c = hy_args_next(&w, &v)) != HY_ARG_END;) {
        int rc = 0;
        switch (c) {
        case 'h': fputs(TOKENIZER_HELP, stdout); return 0;
        case TOK_DATA: data = v; break;
        case TOK_OUT: out = v; break;
        case TOK_TYPE:
            if (strcmp(v, "bpe") && strcmp(v, "unigram"))
                rc = hy_fail_code(HY_ERR_CONFIG, "--type: expected bpe or unigram, got '%s'", v);
            type = v;
            break;
        case TOK_VOCAB: rc = hy_arg_long("--vocab", v, 260, 1 << 20, &vocab); break;
        case TOK_MAX_SENTENCES: rc = hy_arg_long("--max-sentences", v, 0, LONG_MAX, &max_sentences); break;
        case TOK_THREADS: rc = hy_arg_long("--threads", v, 0, 4096, &threads); break;
        case TOK_VAL_FRACTION: rc = hy_arg_double("--val-fraction", v, 0, 1, HY_ARG_OPEN_HI, &vf); break;
        case HY_ARG_POSITIONAL:
            hy_fail_code(HY_ERR_CONFIG, "unexpected argument '%s'", v);
            return cli_usage("tokenizer train", TOKENIZER_HELP);
        default: return cli_usage("tokenizer train", TOKENIZER_HELP);
        }
        if (rc < 0) return cli_usage("tokenizer train", NULL);
    }
    if (!data || !out || !vocab) {
        hy_fail_code(HY_ERR_CONFIG, "--data, --vocab and --out are required");
        return cli_usage("tokenizer train", TOKENIZER_HELP);
    }
    hy_set_threads((int)threads);
    hy_corpus c;
    hy_data_spec s = {.corpus = data, .val_fraction = vf, .format = HY_DATA_BYTES};
    if (hy_corpus_open(&c, &s) < 0) return fail(1, "cannot read the corpus");
    const hy_token_stream *tr = &c.split[0];
    const char **text = malloc(sizeof *text * (size_t)(tr->n_spans + 1));
    size_t *len = malloc(sizeof *len * (size_t)(tr->n_spans + 1));
    int rc = text && len ? 0 : HY_ERR_NOMEM;
    for (int i = 0; rc == 0 && i < tr->n_spans; i++) text[i] = (const char *)tr->spans[i].data, len[i] = tr->spans[i].n;
    double t0 = hy_now();
    hy_tokenizer_train_opts o = {.type = type, .vocab = (int)vocab, .max_sentences = max_sentences, .threads = hy_threads()};
    if (rc == 0) rc = hy_tokenizer_train(text, len, tr->n_spans, &o, out);
    if (rc == 0)
        fprintf(stderr, "[tokenizer] wrote %s: %s, %ld pieces, trained on %zu bytes of text (%d files) in %.1f s\n", out, type,
                vocab, tr->len, c.n_files, hy_now() - t0);
    free(text), free(len);
    hy_corpus_free(&c);
    return rc < 0 ? fail(1, "tokenizer training failed") : 0;
}

/* ---- tokenize ---- */

static const char *TOKENIZE_HELP =
    "usage: hybrid-exp tokenize --tokenizer T.model IN --out OUT.bin\n"
    "Tokenizes the text of IN (a file, folder, glob or `default`, read as data.corpus is; each file on\n"
    "its own, in path order) with the SentencePiece model T.model and writes one llm.c shard: a\n"
    "1024-byte header (magic 20240520, version 1, token count) and uint16 tokens (a vocabulary over\n"
    "65536: magic 20240801, version 7, uint32 tokens). Train on it with data.train / data.corpus.\n";

int cmd_tokenize(int argc, char **argv) {
    enum { TZ_TOKENIZER = 256, TZ_OUT };
    static const struct option opts[] = {{"tokenizer", required_argument, NULL, TZ_TOKENIZER},
                                         {"out", required_argument, NULL, TZ_OUT},
                                         {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    const char *tok = NULL, *in = NULL, *out = NULL, *v;
    hy_args w;
    hy_args_init(&w, argc, argv, "h", opts);
    for (int c; (c = hy_args_next(&w, &v)) != HY_ARG_END;) {
        switch (c) {
        case 'h': fputs(TOKENIZE_HELP, stdout); return 0;
        case TZ_TOKENIZER: tok = v; break;
        case TZ_OUT: out = v; break;
        case HY_ARG_POSITIONAL:
            if (!in) {
                in = v;
                break;
            }
            hy_fail_code(HY_ERR_CONFIG, "unexpected argument '%s' (one IN)", v);
            return cli_usage("tokenize", TOKENIZE_HELP);
        default: return cli_usage("tokenize", TOKENIZE_HELP);
        }
    }
    if (!tok || !in || !out) {
        hy_fail_code(HY_ERR_CONFIG, "--tokenizer, IN and --out are required");
        return cli_usage("tokenize", TOKENIZE_HELP);
    }
    hy_corpus c;
    hy_data_spec s = {.corpus = in, .val_fraction = 0, .format = HY_DATA_BYTES};
    if (hy_corpus_open(&c, &s) < 0) return fail(1, "cannot read the text");
    size_t n = 0;
    double t0 = hy_now();
    int rc = hy_tokenize_to_shard(&c, 0, tok, out, &n);
    if (rc == 0)
        fprintf(stderr, "[tokenize] wrote %s: %zu tokens from %zu bytes of text (%d files), %.2f bytes per token, %.1f s\n",
                out, n, c.len, c.n_files, (double)c.len / (double)(n ? n : 1), hy_now() - t0);
    hy_corpus_free(&c);
    return rc < 0 ? fail(1, "tokenizing failed") : 0;
}

/* ---- eval ---- */

static const char *EVAL_HELP =
    "usage: hybrid-exp eval --checkpoint M.safetensors --data FILE [--seq-len T]... [--tokenizer T.model]\n"
    "                       [--format F] [--streaming] [--out DIR] [--threads N] [--quiet]\n"
    "Scores a checkpoint on every token of FILE (a file, folder or glob, text or token files): windows\n"
    "of T+1 tokens laid end to end from the start and one shorter window for the rest, so every token\n"
    "after the first is predicted exactly once and the numbers are reproducible. Prints, per T, the\n"
    "loss (nats per token), perplexity and bits per byte of the underlying text.\n"
    "  --seq-len T      window length, repeatable (default: the training seq_len the checkpoint records,\n"
    "                   else 256)\n"
    "  --tokenizer T    the SentencePiece model (default: the one the checkpoint records; refused if its\n"
    "                   SHA-256 differs). Text is tokenized with it; token files are scored with it\n"
    "  --format F       auto (default), bytes, tokens, llmc, nanogpt: how FILE is read (as data.format)\n"
    "  --streaming      token by token through the recurrent step: the same numbers in constant memory\n"
    "                   in T for SSMs\n"
    "  --out DIR        also write DIR/eval.csv and DIR/position.csv (the loss at each position)\n"
    "  --threads N      threads (default 0 = all cores)\n"
    "  --quiet          no progress lines\n";

#define EVAL_MAX_T 16

typedef struct {
    const char *ckpt, *data, *tokenizer, *out;
    int n_T, T[EVAL_MAX_T];
    hy_data_format format;
    bool streaming, quiet;
    long threads;
} eval_args;

enum { EV_CHECKPOINT = 256, EV_DATA, EV_TOKENIZER, EV_OUT, EV_THREADS, EV_SEQ_LEN, EV_FORMAT, EV_STREAMING, EV_QUIET };
static const struct option EVAL_OPTS[] = {
    {"checkpoint", required_argument, NULL, EV_CHECKPOINT}, {"data", required_argument, NULL, EV_DATA},
    {"tokenizer", required_argument, NULL, EV_TOKENIZER},   {"out", required_argument, NULL, EV_OUT},
    {"threads", required_argument, NULL, EV_THREADS},       {"seq-len", required_argument, NULL, EV_SEQ_LEN},
    {"format", required_argument, NULL, EV_FORMAT},         {"streaming", no_argument, NULL, EV_STREAMING},
    {"quiet", no_argument, NULL, EV_QUIET},                 {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0}};

/* --format's word as a data format, or a recorded error. */
static int eval_format(const char *v, hy_data_format *f) {
    char words[128] = "";
    for (int k = 0; hy_data_format_words[k]; k++) {
        if (!strcmp(v, hy_data_format_words[k])) return *f = (hy_data_format)k, 0;
        snprintf(words + strlen(words), sizeof words - strlen(words), "%s%s", k ? ", " : "", hy_data_format_words[k]);
    }
    return hy_fail_code(HY_ERR_CONFIG, "--format: expected one of %s, got '%s'", words, v);
}

/* Parses eval's argv. Returns -1 to go on, or the exit code (0 after --help, 2 after a usage error). */
static int eval_parse(int argc, char **argv, eval_args *e) {
    memset(e, 0, sizeof *e);
    hy_args w;
    hy_args_init(&w, argc, argv, "h", EVAL_OPTS);
    const char *v;
    for (int c; (c = hy_args_next(&w, &v)) != HY_ARG_END;) {
        long T;
        int rc = 0;
        switch (c) {
        case 'h': fputs(EVAL_HELP, stdout); return 0;
        case EV_STREAMING: e->streaming = true; break;
        case EV_QUIET: e->quiet = true; break;
        case EV_CHECKPOINT: e->ckpt = v; break;
        case EV_DATA: e->data = v; break;
        case EV_TOKENIZER: e->tokenizer = v; break;
        case EV_OUT: e->out = v; break;
        case EV_THREADS: rc = hy_arg_long("--threads", v, 0, 4096, &e->threads); break;
        case EV_FORMAT: rc = eval_format(v, &e->format); break;
        case EV_SEQ_LEN:
            if ((rc = hy_arg_long("--seq-len", v, 1, 1 << 24, &T)) == 0 && e->n_T == EVAL_MAX_T)
                rc = hy_fail_code(HY_ERR_CONFIG, "--seq-len: at most %d lengths", EVAL_MAX_T);
            if (rc == 0) e->T[e->n_T++] = (int)T;
            break;
        case HY_ARG_POSITIONAL: hy_fail_code(HY_ERR_CONFIG, "unexpected argument '%s'", v); return cli_usage("eval", EVAL_HELP);
        default: return cli_usage("eval", EVAL_HELP);
        }
        if (rc < 0) return cli_usage("eval", NULL);
    }
    if (!e->ckpt || !e->data) {
        hy_fail_code(HY_ERR_CONFIG, "--checkpoint and --data are required");
        return cli_usage("eval", EVAL_HELP);
    }
    return -1;
}

/* Removes the temporary folder `dir` and the files in it. */
static void remove_temp(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char p[2048];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    if (d) closedir(d);
    rmdir(dir);
}

/* Appends a path as one CSV cell: commas, quotes and whitespace become '_'. */
static void path_cell(hy_strbuf *b, const char *path) {
    for (const char *p = path; *p; p++) hy_sb_addn(b, strchr(", \t\n\r\"", *p) ? "_" : p, 1);
}

/* A CSV cell for a number that may be unknown. */
static void cell(char *out, size_t n, double x) {
    if (isfinite(x)) snprintf(out, n, "%.6f", x);
    else out[0] = 0;
}

/* Opens the data for eval: everything is the evaluated (validation) split; text is tokenized
 * (in a temporary folder) when the model reads tokens. Returns 0 or the exit code. */
static int eval_open(const eval_args *e, const char *tokenizer, const char *trained_on, int V, char *tmp, hy_corpus *c) {
    hy_data_spec s = {.corpus = e->data, .val_fraction = 1.0, .format = e->format, .tokenizer = tokenizer,
                      .cache_dir = tmp, .vocab_size = V, .progress = e->quiet ? NULL : stderr};
    if (hy_data_check(&s) < 0) return fail(1, "bad data");
    if (tokenizer[0] && !mkdtemp(tmp)) {
        fprintf(stderr, "hybrid-exp eval: cannot make a temporary folder %s\n", tmp);
        return 1;
    }
    int rc = hy_corpus_open(c, &s) < 0 ? fail(1, "cannot read the data") : 0;
    if (rc == 0 && trained_on && !strcmp(trained_on, "bytes") && c->tokens) {
        fprintf(stderr, "hybrid-exp eval: %s was trained on bytes, but %s holds tokens\n", e->ckpt, e->data);
        hy_corpus_free(c);
        rc = 2;
    } else if (rc == 0 && trained_on && !strcmp(trained_on, "tokens") && !c->tokens) {
        fprintf(stderr, "hybrid-exp eval: %s was trained on tokens and records no tokenizer; %s is text: pass --tokenizer\n",
                e->ckpt, e->data);
        hy_corpus_free(c);
        rc = 2;
    }
    return rc;
}

/* Writes DIR/eval.csv and DIR/position.csv. */
static int eval_write(const char *dir, hy_strbuf *ev, hy_strbuf *po) {
    char path[HY_DATA_PATH_MAX + 32];
    int rc = hy_mkdirs(dir);
    snprintf(path, sizeof path, "%s/%s", dir, hy_csv_EVAL_CMD.file);
    if (rc == 0) rc = hy_sb_write_file(ev, path);
    snprintf(path, sizeof path, "%s/%s", dir, hy_csv_EVAL_CMD_POSITION.file);
    if (rc == 0) rc = hy_sb_write_file(po, path);
    return rc < 0 ? fail(1, "cannot write the CSV files") : 0;
}

int cmd_eval(int argc, char **argv) {
    eval_args e;
    int rc = eval_parse(argc, argv, &e);
    if (rc >= 0) return rc;
    hy_set_threads((int)e.threads);
    hy_model *m;
    if (hy_checkpoint_load(e.ckpt, &m, NULL) < 0) return fail(1, "cannot load the checkpoint");
    int V = m->cfg.vocab_size;
    hy_kv_list meta;
    if (hy_checkpoint_meta(e.ckpt, &meta) < 0) {
        hy_model_free(m);
        return fail(1, "cannot read the checkpoint");
    }
    if (e.n_T == 0) {
        const char *sl = hy_kv_get(&meta, "seq_len");
        e.T[e.n_T++] = sl && atoi(sl) > 0 ? atoi(sl) : 256;
    }
    char tokenizer[HY_DATA_PATH_MAX], note[2048], tmp[] = "/tmp/hybrid-eval-XXXXXX";
    hy_corpus c;
    rc = hy_checkpoint_tokenizer(e.ckpt, e.tokenizer, V, tokenizer, note, sizeof note);
    if (rc < 0) {
        fprintf(stderr, "hybrid-exp eval: %s\n", hy_last_error());
        rc = rc == HY_ERR_CONFIG ? 2 : 1;
    } else {
        if (note[0]) fprintf(stderr, "hybrid-exp eval: note: %s\n", note);
        rc = eval_open(&e, tokenizer, hy_kv_get(&meta, "data"), V, tmp, &c);
    }
    hy_kv_free(&meta);
    if (rc) {
        if (strcmp(tmp, "/tmp/hybrid-eval-XXXXXX")) remove_temp(tmp);
        hy_model_free(m);
        return rc;
    }
    char desc[512];
    hy_corpus_describe(&c, desc, sizeof desc);
    printf("# %s on %s: %s%s\n", e.ckpt, e.data, desc, e.streaming ? ", streaming" : "");
    printf("%8s %10s %12s %14s %10s %12s %10s\n", "seq_len", "windows", "tokens", "bytes", "loss", "ppl", "bits/byte");
    hy_strbuf ev = {0}, po = {0};
    hy_sb_add(&ev, hy_csv_EVAL_CMD.header);
    hy_sb_add(&po, hy_csv_EVAL_CMD_POSITION.header);
    for (int i = 0; i < e.n_T && rc == 0; i++) {
        int T = e.T[i];
        double *pos = hy_malloc((size_t)T * sizeof(double));
        long *cnt = hy_malloc((size_t)T * sizeof(long));
        hy_eval_result r;
        double t0 = hy_now();
        if (!pos || !cnt) rc = fail(1, "out of memory");
        else if (hy_evaluate_stream(m, &c, 1, T, e.streaming, pos, cnt, &r) < 0) rc = fail(1, "evaluation failed");
        if (rc == 0) {
            long windows = cnt[0];
            char b[32] = "", bits[32];
            if (isfinite(r.bytes)) snprintf(b, sizeof b, "%.0f", r.bytes);
            cell(bits, sizeof bits, r.bits_per_byte);
            printf("%8d %10ld %12ld %14.0f %10.6f %12.4f %10s\n", T, windows, r.labels, r.bytes, r.loss, exp(r.loss),
                   *bits ? bits : "-");
            fflush(stdout);
            if (!e.quiet) fprintf(stderr, "[eval] T %d: %.1f s\n", T, hy_now() - t0);
            path_cell(&ev, e.ckpt);
            hy_sb_add(&ev, ",");
            path_cell(&ev, e.data);
            hy_sb_printf(&ev, ",%d,%ld,%ld,%s,%.6f,%.6f,%s,%d\n", T, windows, r.labels, b, r.loss,
                         exp(r.loss), bits, e.streaming);
            for (int t = 0; t < T; t++)
                if (cnt[t]) hy_sb_printf(&po, "%d,%d,%.6f,%ld\n", T, t, pos[t], cnt[t]);
        }
        hy_free(pos), hy_free(cnt);
    }
    if (rc == 0 && e.out) rc = eval_write(e.out, &ev, &po);
    hy_sb_free(&ev), hy_sb_free(&po);
    hy_corpus_free(&c);
    if (tokenizer[0]) remove_temp(tmp);
    hy_model_free(m);
    return rc;
}
