/* The modal long convolution shared by s4d and hyena: kernel generator, FFT convolution (fftwf),
 * their backwards, and the recurrent (complex modal state) form. See modal_conv.h for the math.
 *
 * Kernel powers. z^l for l = 64·b + j is W_b · w_j with w_j = z^j (j < 64) and W_b = (z^64)^b,
 * both built in double (the error of a product chain of ≤ T/64 doubles stays ~1e-14), so every
 * float entry of the kernel is within a few ulp of the exact one; the inner loops (over j, or
 * reductions over j) are plain float FMA loops that vectorize. Modes whose W_b has decayed below
 * 1e-30 are skipped (|z| < 1 always, since Re A = -exp(log_A_real) < 0). */
#include "layers/ssm_conv/modal_conv.h"
#include "core/error.h"
#include "core/mem.h"
#include <complex.h>
#include <fftw3.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <omp.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>

enum { LB = 64 };   /* lags per block of the kernel generator */

/* ---------------------------------------------------------------- modal coefficients ---- */

/* The continuous and discrete quantities of mode (h, m), in double. */
typedef struct {
    double dt;
    double complex A, Cc, q, Ct, z;   /* q = (z - 1)/A, Ct = C·q, z = exp(A·dt) */
} mode;

static mode mode_of(const hy_modal_params *p, int M, int h, int m) {
    mode o;
    size_t i = (size_t)h * M + m;
    o.dt = exp((double)p->log_dt[h]);
    o.A = CMPLX(-exp((double)p->log_A_real[i]), (double)p->A_imag[i]);
    o.Cc = CMPLX((double)p->C[2 * i], (double)p->C[2 * i + 1]);
    o.z = cexp(o.A * o.dt);
    o.q = (o.z - 1.0) / o.A;
    o.Ct = o.Cc * o.q;
    return o;
}

void hy_modal_coeffs(const hy_modal_params *p, int H, int M, float *zr, float *zi, float *ctr, float *cti) {
    for (int h = 0; h < H; h++)
        for (int m = 0; m < M; m++) {
            mode o = mode_of(p, M, h, m);
            size_t i = (size_t)h * M + m;
            zr[i] = (float)creal(o.z), zi[i] = (float)cimag(o.z);
            ctr[i] = (float)creal(o.Ct), cti[i] = (float)cimag(o.Ct);
        }
}

/* Packs the four parameter tensors (H + 4·H·M floats) into key. */
static void pack_params(float *key, const hy_modal_params *p, int H, int M) {
    size_t hm = (size_t)H * M;
    memcpy(key, p->log_dt, (size_t)H * sizeof(float));
    memcpy(key + H, p->C, 2 * hm * sizeof(float));
    memcpy(key + H + 2 * hm, p->log_A_real, hm * sizeof(float));
    memcpy(key + H + 3 * hm, p->A_imag, hm * sizeof(float));
}

int hy_modal_cache_update(hy_modal_cache *c, const hy_modal_params *p, int H, int M) {
    size_t hm = (size_t)H * M, nk = (size_t)H + 4 * hm;
    bool same = c->H == H && c->M == M && c->key.p;
    if (same) {
        const float *src[4] = {p->log_dt, p->C, p->log_A_real, p->A_imag};
        size_t len[4] = {(size_t)H, 2 * hm, hm, hm}, off = 0;
        for (int a = 0; a < 4 && same; off += len[a], a++)
            same = memcmp(src[a], c->key.p + off, len[a] * sizeof(float)) == 0;
    }
    if (same) return 0;
    if (!hy_buf_reserve(&c->key, nk) || !hy_buf_reserve(&c->zr, hm) || !hy_buf_reserve(&c->zi, hm) ||
        !hy_buf_reserve(&c->ctr, hm) || !hy_buf_reserve(&c->cti, hm))
        return HY_ERR_NOMEM;
    pack_params(c->key.p, p, H, M);
    hy_modal_coeffs(p, H, M, c->zr.p, c->zi.p, c->ctr.p, c->cti.p);
    c->H = H, c->M = M;
    return 0;
}

void hy_modal_cache_free(hy_modal_cache *c) {
    hy_buf_free(&c->key), hy_buf_free(&c->zr), hy_buf_free(&c->zi), hy_buf_free(&c->ctr), hy_buf_free(&c->cti);
    memset(c, 0, sizeof *c);
}

/* w_j = z^j for j < LB into wr, wi (float), by a double product chain. */
static void power_table(double complex z, float *restrict wr, float *restrict wi) {
    double complex w = 1.0;
    for (int j = 0; j < LB; j++) {
        wr[j] = (float)creal(w), wi[j] = (float)cimag(w);
        w *= z;
    }
}

/* Per-thread scratch of the generator: power tables (M × LB, real and imaginary), block powers W
 * and the per-mode step z^LB. */
typedef struct {
    float *wr, *wi;
    double complex *W, *z64;
    mode *md;
} gen_scratch;

static int gen_scratch_new(gen_scratch *s, int M) {
    s->wr = hy_malloc((size_t)M * LB * sizeof(float));
    s->wi = hy_malloc((size_t)M * LB * sizeof(float));
    s->W = hy_malloc((size_t)M * sizeof(double complex));
    s->z64 = hy_malloc((size_t)M * sizeof(double complex));
    s->md = hy_malloc((size_t)M * sizeof(mode));
    return s->wr && s->wi && s->W && s->z64 && s->md ? 0 : HY_ERR_NOMEM;
}

static void gen_scratch_free(gen_scratch *s) {
    hy_free(s->wr), hy_free(s->wi), hy_free(s->W), hy_free(s->z64), hy_free(s->md);
}

/* Fills the scratch for channel h: modes, w tables, W = 1, z^LB. */
static void gen_prepare(gen_scratch *s, const hy_modal_params *p, int M, int h) {
    for (int m = 0; m < M; m++) {
        s->md[m] = mode_of(p, M, h, m);
        power_table(s->md[m].z, s->wr + (size_t)m * LB, s->wi + (size_t)m * LB);
        s->W[m] = 1.0;
        s->z64[m] = cexp(s->md[m].A * s->md[m].dt * (double)LB);
    }
}

/* Kern[h, 64b + j] = Σ_m Re(2·C̃_m·W_b,m · w_j,m): per block, one float FMA loop over j per mode. */
int hy_modal_kernel(const hy_modal_params *p, int H, int M, int T, float *kern) {
    int nb = (T + LB - 1) / LB, failed = 0;
    #pragma omp parallel if ((size_t)H * M * T > HY_PAR_MIN)
    {
        gen_scratch s;
        int ok = gen_scratch_new(&s, M) == 0;
        if (!ok) {
            #pragma omp atomic write
            failed = 1;
        }
        #pragma omp for schedule(static)
        for (int h = 0; h < H; h++) {
            if (!ok) continue;
            gen_prepare(&s, p, M, h);
            for (int b = 0; b < nb; b++) {
                float acc[LB] = {0};
                for (int m = 0; m < M; m++) {
                    if (creal(s.W[m]) * creal(s.W[m]) + cimag(s.W[m]) * cimag(s.W[m]) < 1e-60) continue;   /* |W| < 1e-30, without hypot */
                    double complex c = 2.0 * s.md[m].Ct * s.W[m];
                    float cr = (float)creal(c), ci = (float)cimag(c);
                    const float *restrict wr = s.wr + (size_t)m * LB, *restrict wi = s.wi + (size_t)m * LB;
                    for (int j = 0; j < LB; j++) acc[j] += cr * wr[j] - ci * wi[j];
                    s.W[m] *= s.z64[m];
                }
                int len = T - b * LB < LB ? T - b * LB : LB;
                memcpy(kern + (size_t)h * T + (size_t)b * LB, acc, (size_t)len * sizeof(float));
            }
        }
        gen_scratch_free(&s);
    }
    return failed ? HY_ERR_NOMEM : 0;
}

/* With S0_m = Σ_l dK_l·conj(z_m)^l and S1_m = Σ_l l·dK_l·conj(z_m)^l (Wirtinger gradients,
 * g_w = ∂L/∂Re w + i ∂L/∂Im w):
 *   g_C̃ = 2·S0,  g_dtA (through z^l) = 2·conj(C̃)·S1,  g_C = conj(q)·g_C̃,
 *   g_A = conj(C·∂q/∂A)·g_C̃ + dt·g_dtA,  ∂L/∂dt = Re(conj(g_C̃)·C·z) + Re(conj(g_dtA)·A),
 * with q = (z-1)/A, ∂q/∂A = (dt·z·A - (z-1))/A²; then A = -exp(log_A_real) + i·A_imag and
 * dt = exp(log_dt) give the real parameter gradients of channel h (accumulated into g). Shared by
 * both paths: the FFT path forms the sums from dKern, the scan path from its adjoint recurrence. */
void hy_modal_grads_from_sums(const hy_modal_params *p, const hy_modal_params *g, int M, int h,
                              const double complex *S0, const double complex *S1) {
    double gdt = 0, dt = 0;
    for (int m = 0; m < M; m++) {
        mode o = mode_of(p, M, h, m);
        size_t i = (size_t)h * M + m;
        double complex gct = 2.0 * S0[m], gdta = 2.0 * conj(o.Ct) * S1[m];
        double complex gc = conj(o.q) * gct;
        double complex dqdA = (o.dt * o.z * o.A - (o.z - 1.0)) / (o.A * o.A);
        double complex gA = conj(o.Cc * dqdA) * gct + o.dt * gdta;
        gdt += creal(conj(gct) * o.Cc * o.z) + creal(conj(gdta) * o.A);
        g->C[2 * i] += (float)creal(gc);
        g->C[2 * i + 1] += (float)cimag(gc);
        g->log_A_real[i] += (float)(creal(gA) * creal(o.A));
        g->A_imag[i] += (float)cimag(gA);
        dt = o.dt;
    }
    g->log_dt[h] += (float)(gdt * dt);
}

/* The sums S0, S1 of every mode of every channel from dKern (H, T) (see hy_modal_grads_from_sums),
 * by the same exact power tables as the generator. */
int hy_modal_kernel_backward(const hy_modal_params *p, int H, int M, int T, const float *dkern,
                             const hy_modal_params *g) {
    int nb = (T + LB - 1) / LB, failed = 0;
    static const float jf[LB] = {
        0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21,
        22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43,
        44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63};
    #pragma omp parallel if ((size_t)H * M * T > HY_PAR_MIN)
    {
        gen_scratch s;
        int ok = gen_scratch_new(&s, M) == 0;
        double complex *S0 = hy_malloc((size_t)M * sizeof(double complex)),
                       *S1 = hy_malloc((size_t)M * sizeof(double complex));
        ok = ok && S0 && S1;
        if (!ok) {
            #pragma omp atomic write
            failed = 1;
        }
        #pragma omp for schedule(static)
        for (int h = 0; h < H; h++) {
            if (!ok) continue;
            gen_prepare(&s, p, M, h);
            for (int m = 0; m < M; m++) S0[m] = S1[m] = 0;
            for (int b = 0; b < nb; b++) {
                float dk[LB] = {0}, jdk[LB];
                int len = T - b * LB < LB ? T - b * LB : LB;
                memcpy(dk, dkern + (size_t)h * T + (size_t)b * LB, (size_t)len * sizeof(float));
                for (int j = 0; j < LB; j++) jdk[j] = jf[j] * dk[j];
                for (int m = 0; m < M; m++) {
                    if (creal(s.W[m]) * creal(s.W[m]) + cimag(s.W[m]) * cimag(s.W[m]) < 1e-60) continue;   /* |W| < 1e-30, without hypot */
                    const float *restrict wr = s.wr + (size_t)m * LB, *restrict wi = s.wi + (size_t)m * LB;
                    float tr = 0, ti = 0, ur = 0, ui = 0;
                    #pragma omp simd reduction(+ : tr, ti, ur, ui)
                    for (int j = 0; j < LB; j++) {
                        tr += dk[j] * wr[j], ti += dk[j] * wi[j];
                        ur += jdk[j] * wr[j], ui += jdk[j] * wi[j];
                    }
                    double complex cw = conj(s.W[m]), t0 = CMPLX(tr, -ti), t1 = CMPLX(ur, -ui);
                    S0[m] += cw * t0;
                    S1[m] += cw * ((double)b * LB * t0 + t1);
                    s.W[m] *= s.z64[m];
                }
            }
            hy_modal_grads_from_sums(p, g, M, h, S0, S1);
        }
        hy_free(S0), hy_free(S1);
        gen_scratch_free(&s);
    }
    return failed ? HY_ERR_NOMEM : 0;
}

double hy_modal_kernel_flop(int H, int M, int T) { return 4.0 * H * M * (double)T; }

/* ---------------------------------------------------------------- recurrent form ---- */

/* Per (sequence, channel): x ← z·x + u_t over the modes, y_t = 2·Re(Σ C̃·x). */
void hy_modal_scan(int H, int M, const float *zr, const float *zi, const float *ctr, const float *cti, float *s,
                   const float *u, float *y, int B, int T) {
    #pragma omp parallel for collapse(2) schedule(static) if ((size_t)B * H * M * T > HY_PAR_MIN)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            float *restrict sr = s + ((size_t)b * H + h) * 2 * M, *restrict si = sr + M;
            const float *restrict ar = zr + (size_t)h * M, *restrict ai = zi + (size_t)h * M,
                                  *restrict cr = ctr + (size_t)h * M, *restrict ci = cti + (size_t)h * M;
            for (int t = 0; t < T; t++) {
                size_t r = ((size_t)b * T + t) * H + h;
                float x = u[r], acc = 0;
                #pragma omp simd reduction(+ : acc)
                for (int m = 0; m < M; m++) {
                    float nr = ar[m] * sr[m] - ai[m] * si[m] + x, ni = ar[m] * si[m] + ai[m] * sr[m];
                    sr[m] = nr, si[m] = ni;
                    acc += cr[m] * nr - ci[m] * ni;
                }
                y[r] = 2.0f * acc;
            }
        }
}

/* ---------------------------------------------------------------- FFT plans ---- */

/* One r2c/c2r pair per length, created once (the FFTW planner is not thread-safe: the table and
 * the planner calls are under one lock) and executed afterwards from any thread with the
 * new-array functions, on buffers with the planning buffers' alignment (64 bytes, hy_malloc). */
typedef struct {
    int n;
    fftwf_plan r2c, c2r;
} plan_pair;
static plan_pair *plans;          /* grown by doubling; callers keep plan values, never entries */
static int n_plans, cap_plans;
static pthread_mutex_t plan_lock = PTHREAD_MUTEX_INITIALIZER;

static int plans_for(int n, fftwf_plan *r2c, fftwf_plan *c2r) {
    int rc = 0;
    pthread_mutex_lock(&plan_lock);
    int i = 0;
    while (i < n_plans && plans[i].n != n) i++;
    if (i == n_plans) {
        if (n_plans == cap_plans) {
            int cap = cap_plans ? 2 * cap_plans : 16;
            plan_pair *grown = realloc(plans, (size_t)cap * sizeof *grown);
            if (grown) plans = grown, cap_plans = cap;
        }
        float *a = hy_malloc(((size_t)n + 2) * sizeof(float)), *c = hy_malloc(((size_t)n + 2) * sizeof(float));
        if (!a || !c || n_plans == cap_plans) rc = hy_fail_code(HY_ERR_NOMEM, "fftconv: out of memory planning length %d", n);
        else {
            plans[i].r2c = fftwf_plan_dft_r2c_1d(n, a, (fftwf_complex *)c, FFTW_ESTIMATE);
            plans[i].c2r = fftwf_plan_dft_c2r_1d(n, (fftwf_complex *)c, a, FFTW_ESTIMATE);
            if (!plans[i].r2c || !plans[i].c2r) rc = hy_fail("fftconv: FFTW could not plan length %d", n);
            else plans[i].n = n, n_plans++;
        }
        hy_free(a), hy_free(c);
    }
    if (rc == 0) *r2c = plans[i].r2c, *c2r = plans[i].c2r;
    pthread_mutex_unlock(&plan_lock);
    return rc;
}

void hy_fftconv_shutdown(void) {
    pthread_mutex_lock(&plan_lock);
    for (int i = 0; i < n_plans; i++) fftwf_destroy_plan(plans[i].r2c), fftwf_destroy_plan(plans[i].c2r);
    free(plans);
    plans = NULL, n_plans = cap_plans = 0;
    fftwf_cleanup();
    pthread_mutex_unlock(&plan_lock);
}

int hy_fftconv_len(int T) {
    for (int n = 2 * T > 2 ? 2 * T : 2;; n++) {
        int r = n;
        while (r % 2 == 0) r /= 2;
        while (r % 3 == 0) r /= 3;
        while (r % 5 == 0) r /= 5;
        while (r % 7 == 0) r /= 7;
        if (r == 1) return n;
    }
}

double hy_fftconv_flop(int H, int T) {
    double n = hy_fftconv_len(T);
    return H * (2 * 2.5 * n * log2(n) + 6.0 * (n / 2 + 1));
}

/* ---------------------------------------------------------------- FFT convolution ---- */

enum { G = 16 };   /* channels gathered together: one cache line of a (B, T, H) row */

/* Floats per spectrum slot, rounded up to 64 bytes so every slot keeps the plans' alignment. */
static size_t spec_stride(int n) { return ((size_t)n + 2 + 15) / 16 * 16; }

/* Per-thread FFT buffers: G real signals of n (gathered channels), two spectra, G accumulators. */
typedef struct {
    float *buf;
    size_t per_thread;
} fft_scratch;

static int scratch_new(fft_scratch *s, int n, int n_acc) {
    size_t st = spec_stride(n);
    s->per_thread = st * (2 * G + 2 + (size_t)n_acc);
    s->buf = hy_malloc(s->per_thread * (size_t)omp_get_max_threads() * sizeof(float));
    return s->buf ? 0 : HY_ERR_NOMEM;
}

hy_train_bytes hy_fftconv_train_bytes(int H, int M, int T, int threads) {
    double st = (double)spec_stride(hy_fftconv_len(T));
    double fft = st * (3 * G + 2) * threads;   /* the backward's, with the kernel gradient: more than the forward's */
    double gen = (double)threads * (2.0 * M * LB * sizeof(float) + 2.0 * M * sizeof(double complex) + M * sizeof(mode) +
                                    2.0 * M * sizeof(double complex));   /* kernel backward: + S0, S1 */
    return (hy_train_bytes){(double)H * st * sizeof(float), fmax(fft * sizeof(float), gen)};
}

/* Copies channels h0..h0+gw-1 of sequence b of x (B, T, H) into gw zero-padded rows of n. */
static void gather(const float *x, int b, int T, int H, int h0, int gw, float *rows, size_t st, int n) {
    for (int c = 0; c < gw; c++) memset(rows + c * st + T, 0, (size_t)(n - T) * sizeof(float));
    for (int t = 0; t < T; t++) {
        const float *src = x + ((size_t)b * T + t) * H + h0;
        for (int c = 0; c < gw; c++) rows[c * st + t] = src[c];
    }
}

/* The inverse of gather for the first T entries of each row, scaled by s. */
static void scatter(float *x, int b, int T, int H, int h0, int gw, const float *rows, size_t st, float s) {
    for (int t = 0; t < T; t++) {
        float *dst = x + ((size_t)b * T + t) * H + h0;
        for (int c = 0; c < gw; c++) dst[c] = s * rows[c * st + t];
    }
}

/* out = a·b or conj(a)·b over nc interleaved complex numbers (accumulating when acc); out may be b. */
static void cmul(float *out, const float *restrict a, const float *b, int nc, int conj_a, int acc) {
    float sg = conj_a ? -1.0f : 1.0f;
    for (int k = 0; k < nc; k++) {
        float ar = a[2 * k], ai = sg * a[2 * k + 1], br = b[2 * k], bi = b[2 * k + 1];
        float re = ar * br - ai * bi, im = ar * bi + ai * br;
        if (acc) out[2 * k] += re, out[2 * k + 1] += im;
        else out[2 * k] = re, out[2 * k + 1] = im;
    }
}

int hy_fftconv_forward(hy_fftconv *w, const float *kern, const float *u, float *y, int B, int T, int H) {
    if (B <= 0 || T <= 0 || H <= 0) return 0;
    int n = hy_fftconv_len(T), nc = n / 2 + 1, ng = (H + G - 1) / G;
    size_t st = spec_stride(n);
    fftwf_plan r2c, c2r;
    int rc = plans_for(n, &r2c, &c2r);
    if (rc < 0) return rc;
    if (!hy_buf_grab(&w->khat, (size_t)H * st)) return HY_ERR_NOMEM;
    w->n = n, w->H = H, w->T = T;
    fft_scratch s;
    if (scratch_new(&s, n, 0) < 0) return HY_ERR_NOMEM;
    float *khat = w->khat.p;
    #pragma omp parallel if ((size_t)B * H * n > HY_PAR_MIN)
    {
        float *rows = s.buf + s.per_thread * (size_t)omp_get_thread_num(), *spec = rows + G * st;
        #pragma omp for schedule(static)
        for (int h = 0; h < H; h++) {
            memcpy(rows, kern + (size_t)h * T, (size_t)T * sizeof(float));
            memset(rows + T, 0, (size_t)(n - T) * sizeof(float));
            fftwf_execute_dft_r2c(r2c, rows, (fftwf_complex *)(khat + (size_t)h * st));
        }
        #pragma omp for collapse(2) schedule(dynamic, 1)
        for (int b = 0; b < B; b++)
            for (int g = 0; g < ng; g++) {
                int h0 = g * G, gw = H - h0 < G ? H - h0 : G;
                gather(u, b, T, H, h0, gw, rows, st, n);
                for (int c = 0; c < gw; c++) {
                    fftwf_execute_dft_r2c(r2c, rows + c * st, (fftwf_complex *)spec);
                    cmul(spec, khat + (size_t)(h0 + c) * st, spec, nc, 0, 0);
                    fftwf_execute_dft_c2r(c2r, (fftwf_complex *)spec, rows + c * st);
                }
                scatter(y, b, T, H, h0, gw, rows, st, 1.0f / (float)n);
            }
    }
    hy_free(s.buf);
    return 0;
}

/* Groups of G channels in parallel, the batch inside (the kernel gradient sums over it in the
 * frequency domain: dKhat = Σ_b conj(Û_b)·DŶ_b, one inverse FFT per channel at the end). */
int hy_fftconv_backward(hy_fftconv *w, const float *u, const float *dy, float *du, float *dkern, int B, int T, int H) {
    if (B <= 0 || T <= 0 || H <= 0) return 0;
    int n = hy_fftconv_len(T), nc = n / 2 + 1, ng = (H + G - 1) / G;
    if (w->n != n || w->H != H || w->T != T || !w->khat.p)
        return hy_fail("fftconv: backward without a matching forward (T %d, H %d)", T, H);
    size_t st = spec_stride(n);
    fftwf_plan r2c, c2r;
    int rc = plans_for(n, &r2c, &c2r);
    if (rc < 0) return rc;
    fft_scratch s;
    if (scratch_new(&s, n, dkern ? G : 0) < 0) return HY_ERR_NOMEM;
    const float *khat = w->khat.p;
    #pragma omp parallel if ((size_t)B * H * n > HY_PAR_MIN)
    {
        float *drows = s.buf + s.per_thread * (size_t)omp_get_thread_num(), *urows = drows + G * st,
              *sd = urows + G * st, *su = sd + st, *acc = su + st;
        #pragma omp for schedule(dynamic, 1)
        for (int g = 0; g < ng; g++) {
            int h0 = g * G, gw = H - h0 < G ? H - h0 : G;
            if (dkern) memset(acc, 0, (size_t)gw * st * sizeof(float));
            for (int b = 0; b < B; b++) {
                gather(dy, b, T, H, h0, gw, drows, st, n);
                if (dkern) gather(u, b, T, H, h0, gw, urows, st, n);
                for (int c = 0; c < gw; c++) {
                    fftwf_execute_dft_r2c(r2c, drows + c * st, (fftwf_complex *)sd);
                    if (dkern) {
                        fftwf_execute_dft_r2c(r2c, urows + c * st, (fftwf_complex *)su);
                        cmul(acc + c * st, su, sd, nc, 1, 1);
                    }
                    if (du) {
                        cmul(sd, khat + (size_t)(h0 + c) * st, sd, nc, 1, 0);
                        fftwf_execute_dft_c2r(c2r, (fftwf_complex *)sd, drows + c * st);
                    }
                }
                if (du) scatter(du, b, T, H, h0, gw, drows, st, 1.0f / (float)n);
            }
            for (int c = 0; dkern && c < gw; c++) {
                fftwf_execute_dft_c2r(c2r, (fftwf_complex *)(acc + c * st), drows);
                float *dk = dkern + (size_t)(h0 + c) * T;
                for (int l = 0; l < T; l++) dk[l] = drows[l] / (float)n;
            }
        }
    }
    hy_free(s.buf);
    return 0;
}

void hy_fftconv_free(hy_fftconv *w) {
    hy_buf_free(&w->khat);
    memset(w, 0, sizeof *w);
}

/* ---------------------------------------------------------------- the layer's convolution ---- */

int hy_modal_conv_forward(hy_modal_conv *c, const hy_modal_params *p, int H, int M, const float *u, float *y, int B,
                          int T) {
    c->ready = false;
    if (B <= 0 || T <= 0 || H <= 0) return 0;
    if (!hy_buf_grab(&c->coef, hy_modal_scan_coef_floats(H, M))) return HY_ERR_NOMEM;
    int rc = hy_modal_scan_pack(p, H, M, c->coef.p);
    if (rc < 0) return rc;
    hy_modal_scan_forward(c->coef.p, H, M, u, y, B, T);
    c->H = H, c->M = M, c->B = B, c->T = T, c->ready = true;
    return 0;
}

int hy_modal_conv_backward(hy_modal_conv *c, const hy_modal_params *p, const hy_modal_params *g, const float *u,
                           const float *dy, float *du, int B, int T) {
    if (B <= 0 || T <= 0) return 0;
    if (!c->ready || c->B != B || c->T != T)
        return hy_fail("modal convolution: backward without a matching forward (B %d, T %d)", B, T);
    /* doubles in a float buffer: hy_buf's 64-byte alignment holds for them too */
    if (!hy_buf_grab(&c->sums, 2 * hy_modal_scan_sum_doubles(c->H, c->M))) return HY_ERR_NOMEM;
    return hy_modal_scan_backward(c->coef.p, p, g, c->H, c->M, u, dy, du, (double *)(void *)c->sums.p, B, T);
}

void hy_modal_conv_free(hy_modal_conv *c) {
    hy_buf_free(&c->coef), hy_buf_free(&c->sums);
    memset(c, 0, sizeof *c);
}

double hy_modal_conv_flop(int H, int M, int T) { return hy_modal_scan_flop(H, M, T); }

hy_train_bytes hy_modal_conv_train_bytes(int H, int M, int T, int threads) {
    (void)T;
    double kept = hy_modal_scan_coef_floats(H, M) * sizeof(float) + hy_modal_scan_sum_doubles(H, M) * sizeof(double);
    /* The forward's packing table (4·H·M floats, freed before the scan) is smaller than the
     * backward's kept sums, which are not allocated yet when it exists, so it never lifts the peak
     * above kept; the scratch is the backward's per-thread gradient sums. */
    double scratch = 2.0 * threads * M * sizeof(double complex);
    return (hy_train_bytes){kept, scratch};
}

void hy_causal_conv_direct(const float *kern, const float *u, float *y, int B, int T, int H) {
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int h = 0; h < H; h++) {
                double a = 0;
                for (int l = 0; l <= t; l++) a += (double)kern[(size_t)h * T + l] * u[((size_t)b * T + t - l) * H + h];
                y[((size_t)b * T + t) * H + h] = (float)a;
            }
}

/* ---------------------------------------------------------------- options, init ---- */

/* Options 0, 1, 2 = d_state, dt_min, dt_max: d_state even, dt_min <= dt_max. */
int hy_modal_resolve(hy_opts *o, int d, int *bad_opt, char *msg, size_t msg_len) {
    (void)d;
    if (hy_opt_int(o, 0) % 2) {
        *bad_opt = 0;
        snprintf(msg, msg_len, "d_state = %d must be even (d_state/2 complex modes)", hy_opt_int(o, 0));
        return HY_ERR_CONFIG;
    }
    if (o->v[1] > o->v[2]) {
        *bad_opt = 1;
        snprintf(msg, msg_len, "dt_min = %g is larger than dt_max = %g", o->v[1], o->v[2]);
        return HY_ERR_CONFIG;
    }
    return 0;
}

/* The S4D-Lin init of s4d.py, shared with hyena (p[0..3] = log_dt, C, log_A_real, A_imag):
 * log_dt ~ U(ln dt_min, ln dt_max), C complex normal (real and imaginary parts N(0, 1/2), as
 * torch.randn(cfloat)), log_A_real = ln 0.5, A_imag = π·m. */
void hy_modal_init(float *const *p, int H, int M, double dt_min, double dt_max, hy_rng *rng) {
    double lo = log(dt_min), hi = log(dt_max);
    for (int h = 0; h < H; h++) p[0][h] = (float)(lo + (hi - lo) * hy_rng_uniform(rng));
    hy_rng_fill_normal(rng, p[1], (size_t)H * M * 2, (float)M_SQRT1_2);
    for (int h = 0; h < H; h++)
        for (int m = 0; m < M; m++) {
            p[2][(size_t)h * M + m] = logf(0.5f);
            p[3][(size_t)h * M + m] = (float)(M_PI * m);
        }
}

/* ---------------------------------------------------------------- state files ---- */

/* (B·H, 2, M) split halves -> (B·H, M, 2) interleaved pairs. */
void hy_modal_state_to_pairs(const float *s, float *dst, size_t BH, int M) {
    for (size_t c = 0; c < BH; c++) {
        const float *re = s + c * 2 * M, *im = re + M;
        float *o = dst + c * 2 * M;
        for (int m = 0; m < M; m++) o[2 * m] = re[m], o[2 * m + 1] = im[m];
    }
}

/* (B·H, M, 2) interleaved pairs -> (B·H, 2, M) split halves. */
void hy_modal_state_from_pairs(float *s, const float *src, size_t BH, int M) {
    for (size_t c = 0; c < BH; c++) {
        float *re = s + c * 2 * M, *im = re + M;
        const float *x = src + c * 2 * M;
        for (int m = 0; m < M; m++) re[m] = x[2 * m], im[m] = x[2 * m + 1];
    }
}

