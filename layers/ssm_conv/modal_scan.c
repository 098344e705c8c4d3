/* The scan path of the modal long convolution (SPEC §2's recurrent form as a training path):
 * y = Kern ∗ u computed by x_t = z·x_{t-1} + u_t, y_t = 2·Re(Σ_m C̃_m x_t[m]) without forming the
 * kernel, and its backward by the adjoint recurrence run backwards in time. The (B, T, H) layout
 * puts HY_VW consecutive channels in one vector (core/simd.h), so every lane runs its own channel's
 * recurrence and the modes of a register block are independent chains.
 *
 * Backward, per channel and mode (dy real, from t = T-1 down to 0, g_T = k_T = 0):
 *   g_t = z·g_{t+1} + dy_t                   = Σ_{s≥t} z^(s-t)·dy_s
 *   k_t = z·k_{t+1} + g_t                    = Σ_{s≥t} (s-t+1)·z^(s-t)·dy_s
 *   du_t = 2·Re Σ_m C̃_m g_t[m]               (= Σ_{s≥t} Kern[s-t]·dy_s)
 *   S0 = Σ_t u_t·conj(g_t),  S1 = Σ_t u_t·conj(k_t) - S0
 * S0 = Σ_l dKern[l]·conj(z)^l and S1 = Σ_l l·dKern[l]·conj(z)^l are the two sums through which the
 * kernel's gradient reaches the parameters (hy_modal_grads_from_sums), so dKern itself is never
 * formed either. The per-lane sums are kept in float over FLUSH steps and added into doubles. */
#include "core/error.h"
#include "core/mem.h"
#include "core/simd.h"
#include "layers/ssm_conv/modal_conv.h"
#include <complex.h>
#include <omp.h>
#include <string.h>

enum {
    NK = 5,        /* packed coefficients per mode: zr, zi, -zi, 2·Re C̃, -2·Im C̃ */
    FMB = 8,       /* modes per register block of the forward */
    BMB = 4,       /* modes per register block of the backward (8 running vectors per mode) */
    MQ = FMB,      /* modes are padded to a multiple of this (zero modes contribute nothing) */
    FLUSH = 64,    /* steps between additions of the float sums S0, S1 into doubles */
};

int hy_modal_scan_modes(int M) { return (M + MQ - 1) / MQ * MQ; }

size_t hy_modal_scan_coef_floats(int H, int M) {
    return (size_t)(H + HY_VW - 1) / HY_VW * hy_modal_scan_modes(M) * NK * HY_VW;
}

size_t hy_modal_scan_sum_doubles(int H, int M) { return (size_t)(H + HY_VW - 1) / HY_VW * HY_VW * hy_modal_scan_modes(M) * 4; }

/* co[((g·Mp + m)·NK + k)·HY_VW + lane] for channel h = g·HY_VW + lane; zeros past H and M. */
int hy_modal_scan_pack(const hy_modal_params *p, int H, int M, float *co) {
    int Mp = hy_modal_scan_modes(M), ng = (H + HY_VW - 1) / HY_VW;
    size_t hm = (size_t)H * M;
    float *c = hy_malloc(4 * hm * sizeof(float) + 1);
    if (!c) return HY_ERR_NOMEM;
    hy_modal_coeffs(p, H, M, c, c + hm, c + 2 * hm, c + 3 * hm);
    memset(co, 0, hy_modal_scan_coef_floats(H, M) * sizeof(float));
    for (int g = 0; g < ng; g++)
        for (int m = 0; m < M; m++)
            for (int lane = 0; lane < HY_VW && g * HY_VW + lane < H; lane++) {
                size_t i = (size_t)(g * HY_VW + lane) * M + m;
                float *o = co + ((size_t)g * Mp + m) * NK * HY_VW + lane;
                o[0] = c[i], o[HY_VW] = c[hm + i], o[2 * HY_VW] = -c[hm + i];
                o[3 * HY_VW] = 2.0f * c[2 * hm + i], o[4 * HY_VW] = -2.0f * c[3 * hm + i];
            }
    hy_free(c);
    return 0;
}

/* Loads and stores of one row of a group: whole vectors, or the first lanes of the last group. */
static inline __attribute__((always_inline)) vw row_load(const float *p, int full, vw_mask mk) {
    return full ? vw_load(p) : vw_load_masked(p, mk);
}
static inline __attribute__((always_inline)) void row_store(float *p, vw v, int full, vw_mask mk) {
    if (full) vw_store(p, v);
    else vw_store_masked(p, mk, v);
}

/* y (+)= the contribution of NM modes (coefficients co) of one group of channels over T steps
 * from a zero state; u, y point at the group's first channel, rows ld floats apart; full (a
 * constant): the group has HY_VW channels. Four partial sums keep the modes' products off one
 * dependency chain. */
static inline __attribute__((always_inline)) void fwd_block(const float *co, const float *u, float *y, size_t ld, int T,
                                                            int full, vw_mask mk, int first, const int NM) {
    vw xr[FMB], xi[FMB];
    for (int m = 0; m < NM; m++) xr[m] = xi[m] = vw_splat(0);
    for (int t = 0; t < T; t++) {
        vw x = row_load(u + (size_t)t * ld, full, mk);
        vw acc[4] = {first ? vw_splat(0) : row_load(y + (size_t)t * ld, full, mk), vw_splat(0), vw_splat(0), vw_splat(0)};
        for (int m = 0; m < NM; m++) {
            const float *c = co + (size_t)m * NK * HY_VW;
            vw zr = vw_load(c), zi = vw_load(c + HY_VW), nzi = vw_load(c + 2 * HY_VW);
            vw nr = vw_fma(zr, xr[m], vw_fma(nzi, xi[m], x)), ni = vw_fma(zr, xi[m], zi * xr[m]);
            xr[m] = nr, xi[m] = ni;
            acc[m & 3] = vw_fma(vw_load(c + 3 * HY_VW), nr, vw_fma(vw_load(c + 4 * HY_VW), ni, acc[m & 3]));
        }
        row_store(y + (size_t)t * ld, (acc[0] + acc[1]) + (acc[2] + acc[3]), full, mk);
    }
}

/* One group of channels of one sequence: every mode block over the whole sequence. */
static void fwd_group(const float *co, int Mp, const float *u, float *y, size_t ld, int T, int gw) {
    vw_mask mk = vw_mask_first(gw);
    for (int m0 = 0; m0 < Mp; m0 += FMB) {
        const float *c = co + (size_t)m0 * NK * HY_VW;
        if (gw == HY_VW) fwd_block(c, u, y, ld, T, 1, mk, m0 == 0, FMB);
        else fwd_block(c, u, y, ld, T, 0, mk, m0 == 0, FMB);
    }
}

void hy_modal_scan_forward(const float *co, int H, int M, const float *u, float *y, int B, int T) {
    int Mp = hy_modal_scan_modes(M), ng = (H + HY_VW - 1) / HY_VW;
    #pragma omp parallel for collapse(2) schedule(static) if ((size_t)B * H * M * T > HY_PAR_MIN)
    for (int b = 0; b < B; b++)
        for (int g = 0; g < ng; g++) {
            int h0 = g * HY_VW, gw = H - h0 < HY_VW ? H - h0 : HY_VW;
            size_t off = (size_t)b * T * H + h0;
            fwd_group(co + (size_t)g * Mp * NK * HY_VW, Mp, u + off, y + off, (size_t)H, T, gw);
        }
}

/* Adds the float sums s (4 per mode: Σu·gr, Σu·gi, Σu·kr, Σu·ki, HY_VW lanes each) into the
 * doubles S and clears them. */
static inline __attribute__((always_inline)) void flush_sums(vw *s, double *S, int NM) {
    for (int k = 0; k < 4 * NM; k++) {
        float lanes[HY_VW];
        vw_store(lanes, s[k]);   /* through memory, so s itself stays in registers in the loop */
        for (int lane = 0; lane < HY_VW; lane++) S[(size_t)k * HY_VW + lane] += lanes[lane];
        s[k] = vw_splat(0);
    }
}

/* du (+)= the adjoint recurrence of NM modes of one group over one sequence, and the sums S0, S1
 * of those modes added into S ((NM, 4, HY_VW) doubles). FULL (a constant): the group has HY_VW
 * channels. Steps run backwards in spans of FLUSH, the float sums emptied into S after each. */
static inline __attribute__((always_inline)) void bwd_block(const float *co, const float *u, const float *dy, float *du,
                                                            double *S, size_t ld, int T, const int FULL, vw_mask mk,
                                                            int first, const int NM) {
    vw gr[BMB], gi[BMB], kr[BMB], ki[BMB], s[4 * BMB];
    for (int m = 0; m < NM; m++) gr[m] = gi[m] = kr[m] = ki[m] = vw_splat(0);
    for (int k = 0; k < 4 * NM; k++) s[k] = vw_splat(0);
    for (int end = T; end > 0; end -= FLUSH) {
        int start = end - FLUSH > 0 ? end - FLUSH : 0;
        for (int t = end - 1; t >= start; t--) {
            vw d = row_load(dy + (size_t)t * ld, FULL, mk), x = row_load(u + (size_t)t * ld, FULL, mk);
            vw acc[2] = {first ? vw_splat(0) : row_load(du + (size_t)t * ld, FULL, mk), vw_splat(0)};
            for (int m = 0; m < NM; m++) {
                const float *c = co + (size_t)m * NK * HY_VW;
                vw zr = vw_load(c), zi = vw_load(c + HY_VW), nzi = vw_load(c + 2 * HY_VW);
                vw nr = vw_fma(zr, gr[m], vw_fma(nzi, gi[m], d)), ni = vw_fma(zr, gi[m], zi * gr[m]);
                gr[m] = nr, gi[m] = ni;
                vw qr = vw_fma(zr, kr[m], vw_fma(nzi, ki[m], nr)), qi = vw_fma(zr, ki[m], vw_fma(zi, kr[m], ni));
                kr[m] = qr, ki[m] = qi;
                acc[m & 1] = vw_fma(vw_load(c + 3 * HY_VW), nr, vw_fma(vw_load(c + 4 * HY_VW), ni, acc[m & 1]));
                s[4 * m] = vw_fma(x, nr, s[4 * m]), s[4 * m + 1] = vw_fma(x, ni, s[4 * m + 1]);
                s[4 * m + 2] = vw_fma(x, qr, s[4 * m + 2]), s[4 * m + 3] = vw_fma(x, qi, s[4 * m + 3]);
            }
            row_store(du + (size_t)t * ld, acc[0] + acc[1], FULL, mk);
        }
        flush_sums(s, S, NM);
    }
}

int hy_modal_scan_backward(const float *co, const hy_modal_params *p, const hy_modal_params *g, int H, int M,
                           const float *u, const float *dy, float *du, double *sums, int B, int T) {
    int Mp = hy_modal_scan_modes(M), ng = (H + HY_VW - 1) / HY_VW;
    memset(sums, 0, hy_modal_scan_sum_doubles(H, M) * sizeof(double));
    #pragma omp parallel for schedule(static) if ((size_t)B * H * M * T > HY_PAR_MIN)
    for (int gr = 0; gr < ng; gr++) {
        int h0 = gr * HY_VW, gw = H - h0 < HY_VW ? H - h0 : HY_VW, full = gw == HY_VW;
        vw_mask mk = vw_mask_first(gw);
        const float *cg = co + (size_t)gr * Mp * NK * HY_VW;
        double *Sg = sums + (size_t)gr * Mp * 4 * HY_VW;
        for (int b = 0; b < B; b++) {
            size_t off = (size_t)b * T * H + h0;
            for (int m0 = 0; m0 < Mp; m0 += BMB) {
                const float *c = cg + (size_t)m0 * NK * HY_VW;
                double *S = Sg + (size_t)m0 * 4 * HY_VW;
                if (full) bwd_block(c, u + off, dy + off, du + off, S, (size_t)H, T, 1, mk, m0 == 0, BMB);
                else bwd_block(c, u + off, dy + off, du + off, S, (size_t)H, T, 0, mk, m0 == 0, BMB);
            }
        }
    }
    /* S0 = Σ u·conj(g), S1 = Σ u·conj(k) - S0 per channel and mode, then the parameter gradients */
    int failed = 0;
    #pragma omp parallel if ((size_t)H * M > 4096)
    {
        double complex *S0 = hy_malloc((size_t)M * sizeof(double complex)),
                       *S1 = hy_malloc((size_t)M * sizeof(double complex));
        if (!S0 || !S1) {
            #pragma omp atomic write
            failed = 1;
        }
        #pragma omp for schedule(static)
        for (int h = 0; h < H; h++) {
            if (!S0 || !S1) continue;
            const double *Sg = sums + (size_t)(h / HY_VW) * Mp * 4 * HY_VW + h % HY_VW;
            for (int m = 0; m < M; m++) {
                const double *s = Sg + (size_t)m * 4 * HY_VW;
                S0[m] = CMPLX(s[0], -s[HY_VW]);
                S1[m] = CMPLX(s[2 * HY_VW], -s[3 * HY_VW]) - S0[m];
            }
            hy_modal_grads_from_sums(p, g, M, h, S0, S1);
        }
        hy_free(S0), hy_free(S1);
    }
    return failed ? HY_ERR_NOMEM : 0;
}

double hy_modal_scan_flop(int H, int M, int T) { return 11.0 * H * M * (double)T; }
