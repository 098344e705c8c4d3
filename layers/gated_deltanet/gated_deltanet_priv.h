/* Private to the gated_deltanet block (layers/gated_deltanet/gated_deltanet.c: options, init,
 * forward, streaming, accounting; gated_deltanet_backward.c: backward): parameter and option
 * indices, geometry, the buffers of a forward and the caches kept for backward. */
#ifndef HY_LAYERS_GATED_DELTANET_PRIV_H
#define HY_LAYERS_GATED_DELTANET_PRIV_H
#include "core/mem.h"
#include "layers/common/causal_conv.h"
#include "layers/gated_deltanet/delta.h"
#include "layers/registry.h"
#include <stdbool.h>

/* Elementwise loops smaller than this run on one thread. */
#define GDN_PAR_MIN 16384

enum { OPT_N_HEADS, OPT_N_V_HEADS, OPT_HEAD_K_DIM, OPT_EXPAND_V, OPT_CONV_SIZE, GDN_N_OPTS };

enum { P_Q, P_K, P_V, P_G, P_A, P_B, P_QCONV, P_KCONV, P_VCONV, P_A_LOG, P_DT_BIAS, P_ONORM, P_O, GDN_N_PARAMS };

/* Sizes: H q/k heads of dk, HV value heads of dv, conv width K. The projections write one row of W
 * floats per token: [q | k | v | gate | a | b] with q, k nqk = H·dk wide, v and gate nv = HV·dv, a
 * and b HV; the first Cx = 2·nqk + nv columns are the convolutions' input channels. */
typedef struct {
    int d, H, HV, dk, dv, K, nqk, nv, Cx, W;
    int off_g, off_a, off_b;   /* column of gate, a, b in a projection row */
} gdn_geom;

static inline gdn_geom gdn_geom_of(const hy_opts *o, int d) {
    gdn_geom g;
    g.d = d;
    g.H = hy_opt_int(o, OPT_N_HEADS);
    g.HV = hy_opt_int(o, OPT_N_V_HEADS);
    g.dk = hy_opt_int(o, OPT_HEAD_K_DIM);
    g.dv = (int)(o->v[OPT_EXPAND_V] * g.dk + 0.5);
    g.K = hy_opt_int(o, OPT_CONV_SIZE);
    g.nqk = g.H * g.dk, g.nv = g.HV * g.dv, g.Cx = 2 * g.nqk + g.nv;
    g.off_g = g.Cx, g.off_a = g.Cx + g.nv, g.off_b = g.off_a + g.HV, g.W = g.off_b + g.HV;
    return g;
}

/* The buffers of one forward (rows = B·T): one set in the layer for training, one per streaming
 * state. proj (rows, W); xpad (B, K−1+T, Cx): per sequence the K−1 conv inputs before t = 0 (zeros or
 * the streaming state) then the q|k|v projections; pre (rows, Cx) the convolution, xc = silu(pre)
 * (v is read from it directly); qn, kn (rows, nqk) the normalised q (× dk^-0.5) and k, qinv, kinv
 * (rows, H) their 1/sqrt(Σx² + 1e-6); araw (rows, HV) = a + dt_bias; bg (rows, 2·HV) = [β | g];
 * o (rows, nv) the recurrence's output; rstd (rows, HV) o_norm's 1/rms; yg (rows, nv) into o_proj;
 * wT (K, Cx) the three conv weights transposed; ws the recurrence's workspace. */
typedef struct {
    hy_buf proj, xpad, pre, xc, qn, kn, qinv, kinv, araw, bg, o, rstd, yg, wT, ws;
} gdn_fwd;

/* The layer's caches: the forward kept for backward and the backward's own buffers. */
typedef struct {
    gdn_fwd F;
    hy_buf u_keep, ckpt;   /* what hy_gdn_backward needs (hy_gdn_keep) */
    const float *x;              /* input of the kept forward (owned by the caller) */
    int B, T;
    bool have_fwd;
    hy_buf dyg, dout, dproj, dxc, dqn, dkn, dbg, tmp;
} gdn_priv;

/* The three short convs (q | k | v channels) as one conv over Cx channels on F's xpad and wT. */
static inline hy_cconv gdn_conv_of(const gdn_geom *g, gdn_fwd *F, int B, int T) {
    return (hy_cconv){B, T, g->Cx, g->K, F->xpad.p, F->wT.p};
}

/* The conv weight, or its gradient (t = L->g), as the q, k and v conv tensors of t. */
static inline hy_cconv_weight gdn_conv_weight(const gdn_geom *g, float *const *t) {
    return (hy_cconv_weight){3, {g->nqk, g->nqk, g->nv}, {t[P_QCONV], t[P_KCONV], t[P_VCONV]}};
}

/* The block's backward (layers/gated_deltanet/gated_deltanet_backward.c). */
int hy_gdn_block_backward(hy_layer *L, const float *dy, float *dx, int B, int T);

#endif
