/* Sampling (temperature, top-k, top-p) and generation: the prompt goes through the multi-token
 * prefill, then each sampled token is stepped into the state and reported through a callback. */
#include "models/generate.h"
#include "core/error.h"
#include "core/mem.h"
#include "models/model.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

int hy_sample_opts_check(const hy_sample_opts *o) {
    if (!(o->temperature >= 0) || !isfinite(o->temperature))
        return hy_fail_code(HY_ERR_CONFIG, "temperature = %g must be a finite number >= 0 (0 = greedy)", (double)o->temperature);
    if (o->top_k < 0) return hy_fail_code(HY_ERR_CONFIG, "top_k = %d must be >= 0 (0 = no limit)", o->top_k);
    if (!(o->top_p > 0 && o->top_p <= 1))
        return hy_fail_code(HY_ERR_CONFIG, "top_p = %g must be in (0, 1] (1 = no limit)", (double)o->top_p);
    return 0;
}

/* Descending logit, then ascending token id: a total order, so ties are broken the same way on
 * every machine and run. */
static int by_logit_desc(const void *a, const void *b) {
    const hy_sample_pair *x = a, *y = b;
    if (x->z != y->z) return x->z > y->z ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* The first index of the largest logit. */
static int32_t argmax(const float *z, int V) {
    int32_t best = 0;
    for (int v = 1; v < V; v++)
        if (z[v] > z[best]) best = v;
    return best;
}

/* Fills work[0..n) with the candidates, most likely first, and their unnormalised probabilities
 * exp((z - max) / T) in .z; n is cut by top_k, then by top_p. Returns n (>= 1) or an error. */
static int candidates(const float *logits, int V, const hy_sample_opts *o, hy_sample_pair *work) {
    for (int v = 0; v < V; v++) {
        if (isnan(logits[v])) return hy_fail("sampling: logit of token %d is NaN", v);
        work[v] = (hy_sample_pair){logits[v], v};
    }
    int n = V;
    bool cut = (o->top_k > 0 && o->top_k < V) || o->top_p < 1;
    if (cut) qsort(work, (size_t)V, sizeof *work, by_logit_desc);
    if (o->top_k > 0 && o->top_k < V) n = o->top_k;
    float mx = work[0].z;
    for (int i = 1; !cut && i < n; i++) mx = work[i].z > mx ? work[i].z : mx;
    double total = 0;
    for (int i = 0; i < n; i++) {
        work[i].z = (float)exp(((double)work[i].z - mx) / o->temperature);
        total += work[i].z;
    }
    if (o->top_p < 1) {   /* the smallest prefix whose probability reaches top_p */
        double acc = 0;
        int keep = 0;
        while (keep < n && acc < o->top_p * total) acc += work[keep++].z;
        n = keep > 0 ? keep : 1;
    }
    return n;
}

int32_t hy_sample(const float *logits, int V, const hy_sample_opts *o, hy_rng *rng, hy_sample_pair *work) {
    if (o->temperature == 0) {
        for (int v = 0; v < V; v++)
            if (isnan(logits[v])) return hy_fail("sampling: logit of token %d is NaN", v);
        return argmax(logits, V);
    }
    int n = candidates(logits, V, o, work);
    if (n < 0) return n;
    double total = 0;
    for (int i = 0; i < n; i++) total += work[i].z;
    double u = (double)hy_rng_uniform(rng) * total, acc = 0;
    for (int i = 0; i < n; i++) {
        acc += work[i].z;
        if (u < acc) return work[i].id;
    }
    return work[n - 1].id;   /* u rounded up to the total */
}

int hy_sample_support(const float *logits, int V, const hy_sample_opts *o, hy_sample_pair *work, int32_t *ids) {
    if (o->temperature == 0) {
        ids[0] = argmax(logits, V);
        return 1;
    }
    int n = candidates(logits, V, o, work);
    for (int i = 0; i < n; i++) ids[i] = work[i].id;
    return n;
}

int hy_generate(hy_model *m, hy_model_state *s, const int32_t *prompt, int n_prompt, int n_new,
                const hy_sample_opts *o, hy_token_fn on_token, void *user, int32_t *out) {
    int V = m->cfg.vocab_size, rc = hy_sample_opts_check(o);
    if (rc < 0) return rc;
    if (s->B != 1) return hy_fail("generate: the state holds %d sequences (generation needs 1)", s->B);
    if (n_prompt < 0 || n_new < 0) return hy_fail("generate: negative prompt length or token count");
    if (n_prompt > 0 && (rc = hy_model_prefill(m, s, prompt, n_prompt, NULL, false)) < 0) return rc;
    if (n_new > 0 && !s->have_logits)
        return hy_fail("generate: nothing to continue from (empty prompt and a state that has consumed no tokens)");
    hy_sample_pair *work = hy_malloc(sizeof *work * (size_t)V);
    if (!work) return HY_ERR_NOMEM;
    hy_rng rng;
    hy_rng_seed(&rng, o->seed);
    int produced = 0;
    for (; produced < n_new; produced++) {
        int32_t tok = hy_sample(s->logits, V, o, &rng, work);
        if (tok < 0) {
            rc = tok;
            break;
        }
        if (out) out[produced] = tok;
        int stop = on_token ? on_token(tok, user) : 0;
        if ((rc = hy_model_step(m, s, &tok, NULL)) < 0) break;   /* consumed: the state holds all text */
        if (stop) {
            produced++;
            break;
        }
    }
    hy_free(work);
    return rc < 0 ? rc : produced;
}
