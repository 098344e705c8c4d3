/* The fuzz targets (targets.h): each input becomes an anonymous in-memory file (memfd, opened by
 * the loaders through /proc/self/fd/N like any path), goes through the normal loaders, and what
 * they accept is used a little (a forward pass, streaming steps, a save) so a size that passed a
 * check but is wrong shows up under the sanitizers. */
#include "tests/fuzz/targets.h"
#include "core/error.h"
#include "core/mem.h"
#include "experiments/config.h"
#include "experiments/dump.h"
#include "experiments/experiment.h"
#include "models/checkpoint.h"
#include "models/generate.h"
#include "models/json.h"
#include "models/model.h"
#include "models/safetensors.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static hy_model *fuzz_model;     /* the model of the state, dump and train-state targets */
static char fuzz_ckpt[1024];     /* its checkpoint file */

/* Models larger than this (parameters) are loaded but not run: a forward pass would slow the
 * fuzzer down without testing the loader more. */
#define RUN_MAX_PARAMS (1 << 18)

/* The input as a file: an anonymous memory file named /proc/self/fd/N in path. Returns its fd. */
static int input_file(const uint8_t *data, size_t size, char *path, size_t len) {
    int fd = memfd_create("hy-fuzz-input", 0);
    if (fd < 0) {
        perror("memfd_create");
        abort();
    }
    for (size_t done = 0; done < size;) {
        ssize_t w = write(fd, data + done, size - done);
        if (w <= 0) {
            perror("write");
            abort();
        }
        done += (size_t)w;
    }
    snprintf(path, len, "/proc/self/fd/%d", fd);
    return fd;
}

/* A scratch output path, in memory where /dev/shm exists. */
static const char *scratch_path(const char *tag) {
    static char buf[256];
    snprintf(buf, sizeof buf, "%s/hy-fuzz-%s-%d", access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp", tag, (int)getpid());
    return buf;
}

/* Empties the error message, so a refusal without one is seen. */
static void clear_error(void) { hy_fail_code(HY_OK, "%s", ""); }

/* A loader's result must be 0, or negative with a message; anything else aborts (a bug). */
static int clean(int rc, const char *what) {
    if (rc > 0 || (rc < 0 && !hy_last_error()[0])) {
        fprintf(stderr, "%s returned %d with no message\n", what, rc);
        abort();
    }
    clear_error();
    return rc;
}

/* 0 if any of the results is 0 (a loader accepted the input), else the first refusal. */
static int first_accept(int n, const int *rc) {
    for (int i = 0; i < n; i++)
        if (rc[i] == 0) return 0;
    return rc[0];
}

/* A fixed pattern in [-0.1, 0.1] for the weights (1 for norm weights): integers and one division,
 * exact IEEE arithmetic, so every build gets the same bits. */
static void fixed_weights(hy_model *m) {
    for (int k = 0; k < m->n_params; k++) {
        hy_param *p = &m->params[k];
        bool norm = p->ndim == 1 && strstr(p->name, "norm");
        for (size_t i = 0; i < p->numel; i++)
            p->data[i] = norm ? 1.0f : (float)((long)((i * 37 + (size_t)k * 101) % 97) - 48) / 480.0f;
    }
}

int hy_fuzz_model_init(const char *config_yaml) {
    hy_fuzz_model_free();
    hy_run_config c;
    int rc = hy_run_config_load(config_yaml, NULL, 0, &c);
    if (rc < 0) return rc;
    rc = hy_model_create(&c.model, c.seed, &fuzz_model);
    hy_run_config_free(&c);
    if (rc < 0) return rc;
    fixed_weights(fuzz_model);
    snprintf(fuzz_ckpt, sizeof fuzz_ckpt, "%s", scratch_path("model"));
    return hy_checkpoint_save(fuzz_model, fuzz_ckpt, 0);
}

hy_model *hy_fuzz_model(void) { return fuzz_model; }

void hy_fuzz_model_free(void) {
    if (fuzz_model && fuzz_ckpt[0]) unlink(fuzz_ckpt);
    hy_model_free(fuzz_model);
    fuzz_model = NULL;
    fuzz_ckpt[0] = 0;
}

/* ---- YAML ---- */

/* Copies the overrides "#set KEY=VALUE" (one per line) of the input into sets[0..max). */
static int input_sets(const uint8_t *data, size_t size, char sets[][256], int max) {
    int n = 0;
    for (size_t i = 0; i + 5 <= size && n < max; i++) {
        if ((i > 0 && data[i - 1] != '\n') || memcmp(data + i, "#set ", 5) != 0) continue;
        size_t j = i + 5, k = 0;
        while (j < size && data[j] != '\n' && data[j] && k + 1 < sizeof sets[0]) sets[n][k++] = (char)data[j++];
        sets[n++][k] = 0;
    }
    return n;
}

int hy_fuzz_yaml(const uint8_t *data, size_t size) {
    char path[64], sets[8][256];
    const char *set_ptrs[8];
    int n_sets = input_sets(data, size, sets, 8), rc[3];
    for (int i = 0; i < n_sets; i++) set_ptrs[i] = sets[i];
    int fd = input_file(data, size, path, sizeof path);
    clear_error();
    hy_run_config c;
    if ((rc[0] = clean(hy_run_config_load(path, set_ptrs, n_sets, &c), "hy_run_config_load")) == 0) hy_run_config_free(&c);
    bool is_exp;
    hy_experiment_detect(path, &is_exp);
    clear_error();
    hy_experiment e;
    if ((rc[1] = clean(hy_experiment_load(path, set_ptrs, n_sets, &e), "hy_experiment_load")) == 0) hy_experiment_free(&e);
    char *text = malloc(size + 1);
    if (!text) abort();
    memcpy(text, data, size);
    text[size] = 0;
    hy_model_config *mc = NULL;
    rc[2] = clean(hy_model_config_from_yaml(text, "fuzz.yaml", &mc), "hy_model_config_from_yaml");
    hy_model_config_destroy(mc);
    free(text);
    close(fd);
    return first_accept(3, rc);
}

/* ---- JSON and safetensors ---- */

static volatile unsigned byte_sink;   /* keeps the reads of tensor data */

int hy_fuzz_safetensors(const uint8_t *data, size_t size) {
    int rc[2];
    clear_error();
    json_t *j;
    if ((rc[0] = clean(hy_json_parse((const char *)data, size, &j), "hy_json_parse")) == 0) json_decref(j);
    char path[64];
    int fd = input_file(data, size, path, sizeof path);
    hy_st_file f;
    if ((rc[1] = clean(hy_st_open(path, &f), "hy_st_open")) == 0) {
        for (int i = 0; i < f.n_tensors; i++) {
            const hy_st_tensor *t = &f.tensors[i];
            const unsigned char *p = t->data;
            for (size_t b = 0; b < t->end - t->begin; b++) byte_sink += p[b];   /* every byte it claims, in the mapping */
            if (hy_st_find(&f, t->name) != t || hy_st_check(&f, t, t->dtype, t->ndim, t->shape, NULL) != 0) {
                fprintf(stderr, "tensor '%s' is not found or not consistent with itself\n", t->name);
                abort();
            }
        }
        for (int i = 0; i < f.n_meta; i++)
            if (!hy_st_meta(&f, f.meta_keys[i])) abort();
        hy_st_close(&f);
    }
    close(fd);
    return first_accept(2, rc);
}

/* ---- checkpoints ---- */

/* A forward and backward pass over 4 tokens and two streaming steps of a loaded model. */
static void run_model(hy_model *m) {
    if (m->numel > RUN_MAX_PARAMS) return;
    int32_t in[4], tg[4];
    for (int t = 0; t < 4; t++) in[t] = t % m->cfg.vocab_size, tg[t] = (t + 1) % m->cfg.vocab_size;
    hy_loss loss;
    if (clean(hy_model_forward(m, in, tg, 1, 4, true, &loss), "hy_model_forward") == 0) {
        hy_model_zero_grad(m);
        clean(hy_model_backward(m), "hy_model_backward");
    }
    hy_model_state *st = NULL;
    if (clean(hy_model_state_new(m, 1, &st), "hy_model_state_new") == 0) {
        for (int t = 0; t < 2; t++)
            if (clean(hy_model_step(m, st, &in[t], NULL), "hy_model_step") < 0) break;
        hy_model_state_free(m, st);
    }
}

int hy_fuzz_checkpoint(const uint8_t *data, size_t size) {
    char path[64];
    int fd = input_file(data, size, path, sizeof path), rc[2];
    clear_error();
    hy_model *m = NULL;
    long step;
    if ((rc[0] = clean(hy_checkpoint_load(path, &m, &step), "hy_checkpoint_load")) == 0) {
        run_model(m);
        hy_model_free(m);
    }
    rc[1] = rc[0];
    if (fuzz_model) {   /* the same bytes as the training state of the fuzz model (AdamW's two slots) */
        const char *names[] = {"optim_m", "optim_v"};
        float *slots[2] = {hy_malloc(fuzz_model->numel * sizeof(float)), hy_malloc(fuzz_model->numel * sizeof(float))};
        if (!slots[0] || !slots[1]) abort();
        hy_kv_list meta;
        if ((rc[1] = clean(hy_train_state_load(path, fuzz_model, 2, names, slots, &meta), "hy_train_state_load")) == 0)
            hy_kv_free(&meta);
        hy_free(slots[0]), hy_free(slots[1]);
    }
    close(fd);
    return first_accept(2, rc);
}

/* ---- state files ---- */

int hy_fuzz_state(const uint8_t *data, size_t size) {
    if (!fuzz_model) return hy_fail("fuzz: no model for the state target (hy_fuzz_model_init)");
    hy_model *m = fuzz_model;
    char path[64];
    int fd = input_file(data, size, path, sizeof path);
    clear_error();
    hy_model_state *st = NULL;
    int rc = clean(hy_model_state_load(m, path, &st), "hy_model_state_load");
    if (rc == 0) {
        int B = st->B;
        int32_t *tok = calloc((size_t)B * 2, sizeof *tok);
        if (!tok) abort();
        for (int i = 0; i < 2 * B; i++) tok[i] = i % m->cfg.vocab_size;
        if (clean(hy_model_step(m, st, tok, NULL), "hy_model_step") == 0)
            clean(hy_model_prefill(m, st, tok, 2, NULL, false), "hy_model_prefill");
        hy_sample_opts greedy = {.temperature = 0, .top_k = 0, .top_p = 1, .seed = 1};
        int32_t out[2];
        int got = hy_generate(m, st, NULL, 0, 2, &greedy, NULL, NULL, out);
        clean(got > 0 ? 0 : got, "hy_generate");
        const char *again = scratch_path("state");
        clean(hy_model_state_save(m, st, again), "hy_model_state_save");
        unlink(again);
        free(tok);
        hy_model_state_free(m, st);
    }
    close(fd);
    return rc;
}

/* ---- dump batches ---- */

int hy_fuzz_dump(const uint8_t *data, size_t size) {
    if (!fuzz_model) return hy_fail("fuzz: no model for the dump target (hy_fuzz_model_init)");
    char path[64];
    int fd = input_file(data, size, path, sizeof path);
    clear_error();
    const char *out = scratch_path("dump");
    int rc = clean(hy_dump(fuzz_ckpt, path, out), "hy_dump");
    unlink(out);
    close(fd);
    return rc;
}
