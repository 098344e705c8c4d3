/* Backward of the gated_deltanet block (layers/gated_deltanet/gated_deltanet.c): o_proj, the gate
 * and o_norm, the gated delta rule (hy_gdn_backward), the q/k L2 norms, β and the decay, silu and
 * the convs (hy_cconv_backward), the six projections, in that order; parameter gradients
 * accumulated, dx overwritten. */
#include "core/error.h"
#include "core/gemm.h"
#include "core/mem.h"
#include "core/vmath.h"
#include "layers/gated_deltanet/gated_deltanet_priv.h"
#include <math.h>
#include <string.h>


int hy_gdn_block_backward(hy_layer *L, const float *dy, float *dx, int B, int T) {
    gdn_priv *P = L->priv;
    if (B <= 0 || T <= 0) return 0;
    if (!P || !P->have_fwd || P->B != B || P->T != T)
        return hy_fail("gated_deltanet: backward without a matching forward (keep_for_backward)");
    gdn_geom g = gdn_geom_of(&L->opts, L->d_model);
    gdn_fwd *F = &P->F;
    const int H = g.H, HV = g.HV, dk = g.dk, dv = g.dv, Cx = g.Cx;
    const size_t rows = (size_t)B * T;
    if (!hy_buf_grab(&P->dyg, rows * g.nv) || !hy_buf_grab(&P->dout, rows * g.nv) || !hy_buf_grab(&P->dproj, rows * g.W) ||
        !hy_buf_grab(&P->dxc, rows * Cx) || !hy_buf_grab(&P->dqn, rows * g.nqk) || !hy_buf_grab(&P->dkn, rows * g.nqk) ||
        !hy_buf_grab(&P->dbg, rows * 2 * HV) || !hy_buf_grab(&P->tmp, rows * (g.nv > 2 * HV ? g.nv : 2 * HV)))
        return HY_ERR_NOMEM;
    float *const *p = L->p, *const *gr = L->g;
    float *dyg = P->dyg.p, *dout = P->dout.p, *dproj = P->dproj.p, *dxc = P->dxc.p, *tmp = P->tmp.p;
    const float *proj = F->proj.p, *o = F->o.p, *rstd = F->rstd.p, *ow = p[P_ONORM];
    /* o_proj: dyg = dy W_o;  dW_o += dyᵀ yg */
    hy_linear_backward(dyg, gr[P_O], NULL, dy, F->yg.p, p[P_O], (int)rows, g.nv, g.d, false);
    /* gate and o_norm: y = o·r·w·silu(z). dz into dproj; tmp = dy·o·r·silu(z) (for dw); dout = do */
    #pragma omp parallel for schedule(static) if (rows * g.nv > GDN_PAR_MIN)
    for (long r = 0; r < (long)rows; r++)
        for (int j = 0; j < HV; j++) {
            size_t oo = (size_t)r * g.nv + (size_t)j * dv;
            const float *x = o + oo, *z = proj + (size_t)r * g.W + g.off_g + (size_t)j * dv, *gy = dyg + oo;
            float *dz = dproj + (size_t)r * g.W + g.off_g + (size_t)j * dv, *tw = tmp + oo, *dox = dout + oo;
            const float rs = rstd[(size_t)r * HV + j];
            /* element-wise part as its own loop (the sum ao below, in the same order, kept
             * gcc 12 from vectorizing it inside the parallel region) */
            #pragma omp simd
            for (int c = 0; c < dv; c++) {
                float s = hy_sigmoidf(z[c]), sl = z[c] * s, on = x[c] * rs;
                dz[c] = gy[c] * on * ow[c] * s * (1.0f + z[c] * (1.0f - s));
                tw[c] = gy[c] * on * sl;
                dox[c] = gy[c] * ow[c] * sl;
            }
            float ao = 0;
            for (int c = 0; c < dv; c++) ao += dox[c] * x[c];
            const float f = rs * rs * rs * ao / dv;
            for (int c = 0; c < dv; c++) dox[c] = rs * dox[c] - f * x[c];
        }
    hy_colsum_add(gr[P_ONORM], tmp, rows * HV, dv, dv);
    /* the gated delta rule: dq̂, dk̂, dv (into dxc's v columns), dβ, dg */
    float *bg = F->bg.p, *dbg = P->dbg.p;
    hy_gdn_in in = {B, T, H, HV, dk, dv, HY_GDN_CHUNK, F->qn.p, F->kn.p, F->xc.p + 2 * g.nqk, bg, bg + HV, g.nqk, Cx, 2 * HV};
    hy_gdn_keep kp = {P->u_keep.p, P->ckpt.p};
    int rc = hy_gdn_backward(&in, &kp, dout, g.nv, P->dqn.p, P->dkn.p, dxc + 2 * g.nqk, dbg, dbg + HV, &F->ws);
    if (rc < 0) return rc;
    /* L2 norms: y = c·x·s, s = 1/sqrt(Σx² + ε): dx = c·s·dy − c·s³·x·(x·dy) */
    const float qscale = 1.0f / sqrtf((float)dk);
    const float *xc = F->xc.p;
    #pragma omp parallel for schedule(static) if (rows * Cx > GDN_PAR_MIN)
    for (long r = 0; r < (long)rows; r++) {
        for (int h = 0; h < 2 * H; h++) {
            bool isq = h < H;
            int hh = isq ? h : h - H;
            const float *x = xc + (size_t)r * Cx + (size_t)h * dk;
            const float *gy = (isq ? P->dqn.p : P->dkn.p) + (size_t)r * g.nqk + (size_t)hh * dk;
            const float s = (isq ? F->qinv.p : F->kinv.p)[(size_t)r * H + hh], c = isq ? qscale : 1.0f;
            float xd = 0;
            for (int i = 0; i < dk; i++) xd += x[i] * gy[i];
            float *d = dxc + (size_t)r * Cx + (size_t)h * dk;
            const float f = c * s * s * s * xd;
            for (int i = 0; i < dk; i++) d[i] = c * s * gy[i] - f * x[i];
        }
    }
    /* β = sigmoid(b): db = dβ·β(1−β);  g = −A·softplus(araw): dA_log = Σ dg·g, d araw = −dg·A·sigmoid(araw) */
    {
        float *dalog = tmp, *daraw = tmp + rows * HV;   /* (rows, HV) each, then column sums */
        const float *araw = F->araw.p;
        for (size_t r = 0; r < rows; r++)
            for (int j = 0; j < HV; j++) {
                const float be = bg[r * 2 * HV + j], gg = bg[r * 2 * HV + HV + j], dgg = dbg[r * 2 * HV + HV + j];
                dproj[r * g.W + g.off_b + j] = dbg[r * 2 * HV + j] * be * (1.0f - be);
                dalog[r * HV + j] = dgg * gg;
                float da = -dgg * expf(p[P_A_LOG][j]) * hy_sigmoidf(araw[r * HV + j]);
                daraw[r * HV + j] = da;
                dproj[r * g.W + g.off_a + j] = da;
            }
        hy_colsum_add(gr[P_A_LOG], dalog, rows, HV, HV);
        hy_colsum_add(gr[P_DT_BIAS], daraw, rows, HV, HV);
    }
    /* silu and the convs (no bias): weight gradients, d q|k|v into dproj's first Cx columns */
    hy_cconv cv = gdn_conv_of(&g, F, B, T);
    const hy_cconv_weight gw = gdn_conv_weight(&g, gr);
    hy_cconv_backward(&cv, dxc, F->pre.p, NULL, &gw, dproj, g.W);
    /* the six projections: dx = Σ dproj_i W_i;  dW_i += dproj_iᵀ u */
    const int off[6] = {0, g.nqk, 2 * g.nqk, g.off_g, g.off_a, g.off_b}, n[6] = {g.nqk, g.nqk, g.nv, g.nv, HV, HV};
    for (int i = 0; i < 6; i++) {
        hy_gemm(false, false, (int)rows, g.d, n[i], 1.0f, dproj + off[i], g.W, p[P_Q + i], g.d, i ? 1.0f : 0.0f, dx, g.d);
        hy_gemm(true, false, n[i], g.d, (int)rows, 1.0f, dproj + off[i], g.W, P->x, g.d, 1.0f, gr[P_Q + i], g.d);
    }
    return 0;
}
