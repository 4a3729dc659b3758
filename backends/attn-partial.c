/* The exact merge of flash-decoding partials (attn-partial.h; the formulas are in
 * attention/attention.h). Each float operation of the formulas is its own statement, so no
 * compiler contracts a product and a sum into a fused multiply-add and every build gives the
 * same bits; finalisation is the CPU backend's
 * own last step (o * (1 / l)), so one partial finalised equals the monolithic op. */
#include <math.h>
#include <string.h>

#include "backends/attn-partial.h"
#include "common/common.h"

void hs_attn_partial_clear(const struct hs_attn_partial *acc, int64_t n_vec, int64_t head_dim)
{
    for (int64_t i = 0; i < n_vec; i++) {
        acc->m[i] = -INFINITY;
        acc->l[i] = 0.0f;
    }
    memset(acc->o, 0, (size_t)(n_vec * head_dim) * sizeof(float));
}

void hs_attn_partial_combine(const struct hs_attn_partial *acc, const struct hs_attn_partial *part,
                             int64_t n_vec, int64_t head_dim)
{
    for (int64_t i = 0; i < n_vec; i++) {
        const float ma = acc->m[i];
        const float mp = part->m[i];
        const float mx = ma > mp ? ma : mp;
        float *o = acc->o + i * head_dim;
        const float *po = part->o + i * head_dim;
        /* An empty side scales by exp(-inf) = 0 and the other by exp(0) = 1, so the result is
         * the other side: acc stays when part is empty (both empty included), and takes part's
         * values when it is empty itself. Leaving or copying also keeps the sign of a zero that
         * the formula's 0 + -0 would lose. */
        if (mp == -INFINITY) {
            continue;
        }
        if (ma == -INFINITY) {
            memcpy(o, po, (size_t)head_dim * sizeof(float));
            acc->m[i] = mp;
            acc->l[i] = part->l[i];
            continue;
        }
        const float sa = expf(ma - mx);
        const float sp = expf(mp - mx);
        for (int64_t d = 0; d < head_dim; d++) {
            const float a = o[d] * sa;
            const float b = po[d] * sp;
            o[d] = a + b;
        }
        const float la = acc->l[i] * sa;
        const float lp = part->l[i] * sp;
        acc->l[i] = la + lp;
        acc->m[i] = mx;
    }
}

void hs_attn_partial_finalize(const struct hs_attn_partial *p, int64_t n_vec, int64_t head_dim,
                              float *out)
{
    for (int64_t i = 0; i < n_vec; i++) {
        const float inv = p->l[i] == 0.0f ? 0.0f : 1.0f / p->l[i];
        for (int64_t d = 0; d < head_dim; d++) {
            out[i * head_dim + d] = p->o[i * head_dim + d] * inv;
        }
    }
}

void hs_attn_merge(const struct hs_attn_partial *parts, int n_parts,
                   const struct hs_attn_partial *acc, int64_t n_vec, int64_t head_dim, float *out)
{
    /* acc may be parts[0]: it then already holds what combining parts[0] into the empty partial
     * gives (that combination copies it). */
    int first = 0;
    if (n_parts > 0 && acc->o == parts[0].o) {
        HS_ASSERT(acc->m == parts[0].m && acc->l == parts[0].l);
        first = 1;
    } else {
        hs_attn_partial_clear(acc, n_vec, head_dim);
    }
    for (int i = first; i < n_parts; i++) {
        hs_attn_partial_combine(acc, &parts[i], n_vec, head_dim);
    }
    hs_attn_partial_finalize(acc, n_vec, head_dim, out);
}
