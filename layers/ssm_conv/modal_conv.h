/* The modal long convolution shared by the s4d and hyena mixers (SPEC §2):
 *
 *   dt = exp(log_dt); A = -exp(log_A_real) + i·A_imag; dtA = A·dt; z = exp(dtA)
 *   C̃ = C · (z - 1) / A
 *   Kern[h, l] = 2 · Re( Σ_m C̃[h,m] · z[h,m]^l )                l = 0..T-1
 *   y[b, t, h] = Σ_{l≤t} Kern[h, l] · u[b, t-l, h]                 (causal convolution)
 *
 * The pieces, each with its backward:
 *  - the training path (hy_modal_conv, modal_scan.c): the recurrence x_t = z·x_{t-1} + u_t,
 *    y_t = 2·Re(Σ_m C̃_m x_t[m]) run over the whole sequence with HY_VW channels per vector, and
 *    its adjoint backwards in time, which gives du and the parameter gradients without forming
 *    the kernel or its gradient;
 *  - the FFT path, the reference the scan is tested against (SPEC: "both must agree"): the kernel
 *    generator (H·M·T work, powers of z built from an exact table, never a recurrence over the
 *    whole length) and the causal convolution by real FFTs of length n ≥ 2T (fftwf; one r2c/c2r
 *    plan pair per n, created once under a lock and reused from every thread with the new-array
 *    execute calls), whose backward gives du (a correlation with the kernel) and dKern (the
 *    correlation of dy with u, summed over the batch, also by FFT);
 *  - the recurrent twin for streaming: the same recurrence one channel at a time from any state
 *    (step and prefill).
 * Layouts: u, y (B, T, H) row-major; Kern (H, T); C (H, M, 2) as (real, imag); the modal state of
 * B sequences (B, H, 2, M): M real parts, then M imaginary parts per channel. */
#ifndef HY_LAYERS_MODAL_CONV_H
#define HY_LAYERS_MODAL_CONV_H
#include "core/mem.h"
#include "layers/registry.h"
#include <complex.h>
#include <stdbool.h>
#include <stddef.h>

/* C11's CMPLX: glibc defines it for gcc only; clang has the builtin it stands for. */
#ifndef CMPLX
#define CMPLX(x, y) __builtin_complex((double)(x), (double)(y))
#endif

/* Loops of the modal blocks over fewer elements than this run on one thread: a parallel region
 * costs more than it saves there (and much more when the cores are oversubscribed). */
#define HY_PAR_MIN 32768

/* The four SSM parameter tensors of one layer (views into L->p or L->g). */
typedef struct {
    float *log_dt;       /* (H) */
    float *C;            /* (H, M, 2) */
    float *log_A_real;   /* (H, M) */
    float *A_imag;       /* (H, M) */
} hy_modal_params;

/* Kern (H, T) from the parameters. 0 or HY_ERR_NOMEM. */
int hy_modal_kernel(const hy_modal_params *p, int H, int M, int T, float *kern);
/* Backward of hy_modal_kernel: ACCUMULATES into the gradients g of the parameters from dKern (H, T). */
int hy_modal_kernel_backward(const hy_modal_params *p, int H, int M, int T, const float *dkern,
                             const hy_modal_params *g);

/* z = exp(dtA) and C̃ of every mode, split into real and imaginary arrays (H, M) each: the
 * coefficients of the recurrent form. */
void hy_modal_coeffs(const hy_modal_params *p, int H, int M, float *zr, float *zi, float *ctr, float *cti);
/* Recurrent form over T tokens: s (B, H, 2, M) is the state before the first token and after the
 * last; y (B, T, H) = the convolution part only (no D term). */
void hy_modal_scan(int H, int M, const float *zr, const float *zi, const float *ctr, const float *cti, float *s,
                   const float *u, float *y, int B, int T);

/* State files (the registry's state_* ops). The modal state (B, H, 2, M) is saved as the tensor
 * (B, H, M, 2) of (re, im) pairs, the layout of C (H, M, 2), so torch.view_as_complex reads it as
 * the (B, H, M) complex state. BH = B·H channels. */
void hy_modal_state_to_pairs(const float *s, float *dst, size_t BH, int M);
void hy_modal_state_from_pairs(float *s, const float *src, size_t BH, int M);

/* hy_modal_coeffs cached for streaming: recomputed only when the parameters changed since the
 * last call (compared against a copy of them). Zero-initialised = empty. */
typedef struct {
    int H, M;
    hy_buf key;                 /* copy of log_dt, C, log_A_real, A_imag */
    hy_buf zr, zi, ctr, cti;    /* (H, M) each */
} hy_modal_cache;
int hy_modal_cache_update(hy_modal_cache *c, const hy_modal_params *p, int H, int M);
void hy_modal_cache_free(hy_modal_cache *c);

/* Workspace of the FFT convolution for one layer: the kernel spectrum of the last forward (needed
 * by the backward) and the FFT length. Zero-initialised = empty. */
typedef struct {
    int n, H, T;          /* FFT length, channels and sequence length of the kept spectrum */
    hy_buf khat;          /* (H, n/2+1) complex, interleaved */
} hy_fftconv;

/* The FFT length used for T: the smallest 2^a·3^b·5^c·7^d ≥ 2T. */
int hy_fftconv_len(int T);
/* y = Kern ∗ u (causal, per channel) for B sequences; keeps the kernel spectrum in w. */
int hy_fftconv_forward(hy_fftconv *w, const float *kern, const float *u, float *y, int B, int T, int H);
/* Backward of the last hy_fftconv_forward (same B, T, H) whose input was u: du (B, T, H) is
 * OVERWRITTEN with Σ_{t≥s} Kern[t-s]·dy[t]; dkern (H, T) is OVERWRITTEN with Σ_b Σ_t dy[t]·u[t-l].
 * Either output may be NULL. */
int hy_fftconv_backward(hy_fftconv *w, const float *u, const float *dy, float *du, float *dkern, int B, int T, int H);
void hy_fftconv_free(hy_fftconv *w);
/* Training memory of the convolution part of a layer with H channels and M modes on B sequences
 * of T tokens: kept, the kernel spectrum; scratch, the largest of the FFT convolution's per-thread
 * buffers (forward, backward) and the kernel generator's (forward, backward). */
hy_train_bytes hy_fftconv_train_bytes(int H, int M, int T, int threads);

/* The scan path (modal_scan.c): the recurrence over T with HY_VW channels per vector, from the
 * coefficients packed by hy_modal_scan_pack (z and 2·C̃ per mode, modes padded to a multiple of 8
 * with zero modes, channels to a multiple of HY_VW). y (B, T, H) = the convolution part only, from
 * a zero state. The backward OVERWRITES du (B, T, H) with Σ_{s≥t} Kern[s-t]·dy[s] and ACCUMULATES
 * the gradients g of the four parameters; sums is its workspace (hy_modal_scan_sum_doubles). */
int hy_modal_scan_modes(int M);
size_t hy_modal_scan_coef_floats(int H, int M);
size_t hy_modal_scan_sum_doubles(int H, int M);
int hy_modal_scan_pack(const hy_modal_params *p, int H, int M, float *co);
void hy_modal_scan_forward(const float *co, int H, int M, const float *u, float *y, int B, int T);
int hy_modal_scan_backward(const float *co, const hy_modal_params *p, const hy_modal_params *g, int H, int M,
                           const float *u, const float *dy, float *du, double *sums, int B, int T);
/* FLOPs of the scan forward of one sequence: per token, channel and mode 7 for z·x + u and 4 for
 * the output's 2·Re(C̃·x) and its sum. */
double hy_modal_scan_flop(int H, int M, int T);

/* The parameter gradients of channel h from S0_m = Σ_l dKern[h,l]·conj(z_m)^l and
 * S1_m = Σ_l l·dKern[h,l]·conj(z_m)^l (M each), ACCUMULATED into g. */
void hy_modal_grads_from_sums(const hy_modal_params *p, const hy_modal_params *g, int M, int h,
                              const double complex *S0, const double complex *S1);

/* The long convolution of one layer, y = Kern(p) ∗ u, as the blocks train it: by the scan path
 * (measured faster than kernel generation + FFT at every d_state up to 2048 and T from 256 to 4096,
 * forward and backward; docs/blocks.md). Zero-initialised = empty. */
typedef struct {
    int H, M, B, T;
    bool ready;             /* a forward was run */
    hy_buf coef, sums;      /* packed coefficients of the forward, the backward's sums (doubles) */
} hy_modal_conv;
/* y (B, T, H) = Kern ∗ u (no D term); keeps the coefficients for the backward (u is the caller's). */
int hy_modal_conv_forward(hy_modal_conv *c, const hy_modal_params *p, int H, int M, const float *u, float *y, int B,
                          int T);
/* Backward of the last forward (same B, T) whose input was u: du OVERWRITTEN, the parameter
 * gradients g ACCUMULATED. */
int hy_modal_conv_backward(hy_modal_conv *c, const hy_modal_params *p, const hy_modal_params *g, const float *u,
                           const float *dy, float *du, int B, int T);
void hy_modal_conv_free(hy_modal_conv *c);
/* FLOPs of one forward of one sequence (hy_modal_scan_flop). */
double hy_modal_conv_flop(int H, int M, int T);
/* Training memory of the convolution: kept, the coefficients and the backward's sums; scratch,
 * the coefficient packing's and the gradient conversion's buffers. */
hy_train_bytes hy_modal_conv_train_bytes(int H, int M, int T, int threads);

/* The plain O(T²) causal convolution (the tests' and benchmarks' reference). */
void hy_causal_conv_direct(const float *kern, const float *u, float *y, int B, int T, int H);

/* FLOPs of one forward convolution of one sequence (one r2c and one c2r of length n per channel,
 * 2.5·n·log2(n) each, plus the spectrum product), and of generating the kernel once. */
double hy_fftconv_flop(int H, int T);
double hy_modal_kernel_flop(int H, int M, int T);

/* resolve() of both blocks, whose options 0, 1, 2 are d_state, dt_min, dt_max: d_state must be
 * even and dt_min <= dt_max. */
int hy_modal_resolve(hy_opts *o, int d, int *bad_opt, char *msg, size_t msg_len);
/* The S4D-Lin init of s4d.py into p[0..3] = log_dt, C, log_A_real, A_imag. */
void hy_modal_init(float *const *p, int H, int M, double dt_min, double dt_max, hy_rng *rng);

/* Frees the cached FFTW plans (optional, at exit). */
void hy_fftconv_shutdown(void);

#endif
