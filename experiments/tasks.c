/* Synthetic tasks (see tasks.h) and the trainer's data source. Every example is made from its own
 * 64-bit seed, so a fixed training set of `examples` sequences needs no storage: example i of the
 * training split is always regenerated from mix(seed, i). */
#include "experiments/tasks.h"
#include "core/error.h"
#include "core/mem.h"
#include "core/timer.h"
#include "models/model.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

#define TASK_VAL_SALT 0x76a1u

static const char *const task_names[] = {"none", "mqar", "selective_copy", "induction"};

const char *hy_task_name(hy_task_type type) { return task_names[type <= HY_TASK_INDUCTION ? type : 0]; }

void hy_task_defaults(hy_task_type type, hy_task_config *t) {
    memset(t, 0, sizeof *t);
    t->type = type;
    t->vocab = type == HY_TASK_MQAR ? 64 : 16;
    t->num_kv_pairs = 8;
    t->power_a = 0.01;
    t->n_tokens = 16;
    t->examples = type == HY_TASK_MQAR ? 100000 : 0;
}

/* splitmix64: decorrelates nearby seeds (example i and i+1). */
static uint64_t mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

int hy_task_kv_pairs(const hy_task_config *t, int T) {
    if (t->num_kv_pairs > 0) return t->num_kv_pairs;
    return T / 16 > 1 ? T / 16 : 1;
}

int hy_task_check(const hy_task_config *t, int T, int vocab_size, char *msg, size_t len) {
    if (t->type == HY_TASK_NONE) return 0;
    const int K = hy_task_kv_pairs(t, T);
    if (t->vocab > vocab_size) {
        snprintf(msg, len, "the task uses %d tokens but model.vocab_size is %d", t->vocab, vocab_size);
        return -1;
    }
    switch (t->type) {
    case HY_TASK_MQAR:
        if (t->vocab / 2 - 1 < K || t->vocab - t->vocab / 2 < K) {
            snprintf(msg, len, "mqar needs vocab >= 2 * num_kv_pairs + 2 (keys from 1..vocab/2-1, values from "
                               "vocab/2..vocab-1, all distinct), got vocab %d, num_kv_pairs %d%s", t->vocab, K,
                     t->num_kv_pairs > 0 ? "" : " (auto: seq_len / 16)");
            return -1;
        }
        if (T < 4 * K) {
            snprintf(msg, len, "mqar needs seq_len >= 4 * num_kv_pairs = %d (K pairs, then K queries at distinct "
                               "gaps), got %d", 4 * K, T);
            return -1;
        }
        return 0;
    case HY_TASK_SELECTIVE_COPY:
        if (t->vocab < 3) {
            snprintf(msg, len, "selective_copy needs vocab >= 3 (noise, marker and data tokens), got %d", t->vocab);
            return -1;
        }
        if (T < 2 * t->n_tokens + 1) {
            snprintf(msg, len, "selective_copy needs seq_len >= 2 * n_tokens + 1 = %d, got %d", 2 * t->n_tokens + 1, T);
            return -1;
        }
        return 0;
    case HY_TASK_INDUCTION:
        if (t->vocab < 3 || T < 4) {
            snprintf(msg, len, "induction needs vocab >= 3 and seq_len >= 4, got vocab %d, seq_len %d", t->vocab, T);
            return -1;
        }
        return 0;
    default: snprintf(msg, len, "unknown task"); return -1;
    }
}

/* MQAR (Zoology): s = k1 v1 ... kK vK, then random filler in which each key is queried once at
 * a power-law distributed gap g (position 2K + 2g) and followed by its value; the label is at
 * the query position (predict the value). Keys are distinct in [1, V/2), values distinct in
 * [V/2, V). */
static void mqar(const hy_task_config *t, hy_rng *r, int T, int32_t *s, int32_t *tg) {
    int K = hy_task_kv_pairs(t, T), V = t->vocab, half = V / 2, space = (T - 2 * K) / 2;
    int32_t keys[1024], vals[1024];
    for (int i = 0; i < K; i++) {   /* distinct draws by rejection (K is far below the range) */
        int ok;
        do {
            keys[i] = 1 + (int32_t)hy_rng_below(r, (uint64_t)(half - 1));
            ok = 1;
            for (int j = 0; j < i; j++) ok &= keys[j] != keys[i];
        } while (!ok);
        do {
            vals[i] = half + (int32_t)hy_rng_below(r, (uint64_t)(V - half));
            ok = 1;
            for (int j = 0; j < i; j++) ok &= vals[j] != vals[i];
        } while (!ok);
        s[2 * i] = keys[i], s[2 * i + 1] = vals[i];
    }
    for (int p = 2 * K; p <= T; p++) s[p] = (int32_t)hy_rng_below(r, (uint64_t)V);
    for (int p = 0; p < T; p++) tg[p] = -1;
    /* K distinct gaps with P(g) ~ a (g+1)^(a-1), drawn one by one without replacement. */
    double total = 0;
    for (int g = 0; g < space; g++) total += t->power_a * pow(g + 1.0, t->power_a - 1.0);
    unsigned char *taken = hy_calloc((size_t)space);
    for (int i = 0; i < K && taken; i++) {
        double u = hy_rng_uniform(r) * total, acc = 0;
        int g = -1;
        for (int c = 0; c < space; c++) {
            if (taken[c]) continue;
            g = c;
            acc += t->power_a * pow(c + 1.0, t->power_a - 1.0);
            if (acc > u) break;
        }
        taken[g] = 1;
        total -= t->power_a * pow(g + 1.0, t->power_a - 1.0);
        int q = 2 * K + 2 * g;
        s[q] = keys[i], s[q + 1] = vals[i];
        tg[q] = vals[i];
    }
    hy_free(taken);
}

/* Selective copying (Mamba): n data tokens (from 1..V-2) at random distinct positions among noise
 * (token 0) in the first T+1-n positions; the last of those is the marker V-1, then the data
 * tokens in order. Labels: the n answer positions (marker and the answers before the last). */
static void selective_copy(const hy_task_config *t, hy_rng *r, int T, int32_t *s, int32_t *tg) {
    int n = t->n_tokens, V = t->vocab, Lc = T + 1 - n;   /* s[0 .. Lc-2] content, s[Lc-1] marker */
    for (int p = 0; p < Lc - 1; p++) s[p] = 0;
    int placed = 0;
    while (placed < n) {
        int p = (int)hy_rng_below(r, (uint64_t)(Lc - 1));
        if (s[p]) continue;
        s[p] = 1 + (int32_t)hy_rng_below(r, (uint64_t)(V - 2));
        placed++;
    }
    s[Lc - 1] = V - 1;
    for (int p = 0, k = 0; p < Lc - 1; p++)
        if (s[p]) s[Lc + k++] = s[p];
    for (int p = 0; p < T; p++) tg[p] = p >= Lc - 1 ? s[p + 1] : -1;
}

/* Induction heads (Mamba): random tokens from 0..V-2; the trigger V-1 appears once early,
 * followed by the answer, and again at the last input position. One label: the answer. */
static void induction(const hy_task_config *t, hy_rng *r, int T, int32_t *s, int32_t *tg) {
    int V = t->vocab;
    for (int p = 0; p <= T; p++) s[p] = (int32_t)hy_rng_below(r, (uint64_t)(V - 1));
    int p = (int)hy_rng_below(r, (uint64_t)(T - 2));
    s[p] = V - 1;
    s[T - 1] = V - 1;
    s[T] = s[p + 1];
    for (int q = 0; q < T; q++) tg[q] = -1;
    tg[T - 1] = s[T];
}

int hy_task_example(const hy_task_config *t, uint64_t seed, int T, int32_t *in, int32_t *tg) {
    char msg[256];
    if (hy_task_check(t, T, t->vocab, msg, sizeof msg) < 0) return hy_fail("task %s: %s", hy_task_name(t->type), msg);
    int32_t *s = hy_malloc(((size_t)T + 1) * sizeof(int32_t));
    if (!s) return HY_ERR_NOMEM;
    hy_rng r;
    hy_rng_seed(&r, mix(seed));
    if (t->type == HY_TASK_MQAR) mqar(t, &r, T, s, tg);
    else if (t->type == HY_TASK_SELECTIVE_COPY) selective_copy(t, &r, T, s, tg);
    else induction(t, &r, T, s, tg);
    memcpy(in, s, (size_t)T * sizeof(int32_t));
    hy_free(s);
    return 0;
}

int hy_task_batch(const hy_task_config *t, uint64_t seed, int split, hy_rng *rng, int B, int T, int32_t *in,
                  int32_t *tg) {
    for (int b = 0; b < B; b++) {
        uint64_t ex;
        if (split == 0 && t->examples > 0) ex = mix(seed) ^ mix(hy_rng_below(rng, (uint64_t)t->examples) + 1);
        else ex = mix(seed ^ (split ? TASK_VAL_SALT : 0)) ^ hy_rng_u64(rng);
        if (split) ex = mix(ex ^ TASK_VAL_SALT);
        int rc = hy_task_example(t, ex, T, in + (size_t)b * T, tg + (size_t)b * T);
        if (rc < 0) return rc;
    }
    return 0;
}

/* ---- the data source ---- */

int hy_data_open(hy_data *d, const hy_data_spec *spec, const hy_task_config *task, uint64_t seed) {
    memset(d, 0, sizeof *d);
    d->seed = seed;
    if (task && task->type != HY_TASK_NONE) {
        d->task = *task;
        return 0;
    }
    return hy_corpus_open(&d->corpus, spec);
}

void hy_data_free(hy_data *d) {
    if (d->task.type == HY_TASK_NONE) hy_corpus_free(&d->corpus);
    memset(d, 0, sizeof *d);
}

int hy_data_batch(const hy_data *d, int split, hy_rng *rng, int B, int T, int32_t *in, int32_t *tg) {
    if (d->task.type != HY_TASK_NONE) return hy_task_batch(&d->task, d->seed, split, rng, B, T, in, tg);
    return hy_corpus_batch(&d->corpus, split, rng, B, T, in, tg);
}

void hy_data_describe(const hy_data *d, char *out, size_t len) {
    const hy_task_config *t = &d->task;
    if (t->type == HY_TASK_NONE) hy_corpus_describe(&d->corpus, out, len);
    else if (t->type == HY_TASK_MQAR && t->num_kv_pairs > 0)
        snprintf(out, len, "task mqar (vocab %d, %d kv pairs, %ld examples)", t->vocab, t->num_kv_pairs, t->examples);
    else if (t->type == HY_TASK_MQAR)
        snprintf(out, len, "task mqar (vocab %d, seq_len/16 kv pairs, %ld examples)", t->vocab, t->examples);
    else if (t->type == HY_TASK_SELECTIVE_COPY)
        snprintf(out, len, "task selective_copy (vocab %d, %d tokens)", t->vocab, t->n_tokens);
    else snprintf(out, len, "task induction (vocab %d)", t->vocab);
}
