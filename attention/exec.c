/* Attention over spans (see attention.h): single-span sequences grouped into one normalised call
 * per (backend, cache); multi-span sequences as partials per span, merged in order of the
 * spans. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attention/attention.h"

struct hs_attn_exec {
    struct hs_attn_seq *list; /* [cap_seqs] one backend call's sequences */
    bool *done;               /* [cap_seqs] sequences already in a call */
    int32_t cap_seqs;
    float *buf; /* acc o, m, l, then one span's o, m, l */
    size_t cap_floats;
};

hs_status hs_attn_exec_create(struct hs_attn_exec **out)
{
    *out = calloc(1, sizeof(**out));
    return *out ? HS_OK : HS_E_NOMEM;
}

void hs_attn_exec_destroy(struct hs_attn_exec *x)
{
    if (x) {
        free(x->list);
        free(x->done);
        free(x->buf);
        free(x);
    }
}

static hs_status reserve(struct hs_attn_exec *x, int32_t n_seqs, size_t n_floats)
{
    if (n_seqs > x->cap_seqs) {
        struct hs_attn_seq *l = realloc(x->list, (size_t)n_seqs * sizeof(*l));
        if (!l) {
            return HS_E_NOMEM;
        }
        x->list = l;
        bool *d = realloc(x->done, (size_t)n_seqs * sizeof(*d));
        if (!d) {
            return HS_E_NOMEM;
        }
        x->done = d;
        x->cap_seqs = n_seqs;
    }
    if (n_floats > x->cap_floats) {
        float *b = realloc(x->buf, n_floats * sizeof(float));
        if (!b) {
            return HS_E_NOMEM;
        }
        x->buf = b;
        x->cap_floats = n_floats;
    }
    return HS_OK;
}

static struct hs_attn_seq seq_of(const struct hs_attn_span_seq *s, const struct hs_attn_span *sp,
                                 int32_t q_row)
{
    return (struct hs_attn_seq){.n_past = s->n_past,
                                .n_new = s->n_new,
                                .q_row = q_row,
                                .block_table = sp->block_table,
                                .kv_begin = sp->kv_begin,
                                .kv_end = sp->kv_end};
}

/* The multi-span sequence s: partials of each span into the scratch, merged into out. */
static hs_status run_spans(struct hs_attn_exec *x, const struct hs_tensor *q, struct hs_tensor *out,
                           const struct hs_attn_span_seq *s, int32_t block_size, float scale,
                           int32_t n_batch_rows)
{
    const int64_t hd = q->ne[0], n_head = q->ne[1];
    const int64_t n_vec = (int64_t)s->n_new * n_head;
    const size_t part = (size_t)(n_vec * hd + 2 * n_vec);
    HS_TRY(reserve(x, 1, 2 * part));
    const struct hs_attn_partial acc = {x->buf, x->buf + n_vec * hd, x->buf + n_vec * hd + n_vec};
    float *pb = x->buf + part;
    const struct hs_attn_partial one = {pb, pb + n_vec * hd, pb + n_vec * hd + n_vec};
    hs_attn_partial_clear(&acc, n_vec, hd);
    /* q of this sequence alone, as its own small tensor: rows [q_row, q_row + n_new) */
    struct hs_tensor qs = *q;
    qs.data = (char *)q->data + (size_t)s->q_row * q->nb[2];
    qs.ne[2] = s->n_new;
    struct hs_tensor os, ms, ls;
    int64_t ne_o[3] = {hd, n_head, s->n_new};
    int64_t ne_m[2] = {n_head, s->n_new};
    HS_TRY(hs_tensor_init(&os, HS_TYPE_F32, 3, ne_o, one.o));
    HS_TRY(hs_tensor_init(&ms, HS_TYPE_F32, 2, ne_m, one.m));
    HS_TRY(hs_tensor_init(&ls, HS_TYPE_F32, 2, ne_m, one.l));
    for (int32_t i = 0; i < s->n_spans; i++) {
        const struct hs_attn_span *sp = &s->spans[i];
        const struct hs_attn_seq as = seq_of(s, sp, 0);
        const struct hs_attn_args args = {
            .q = &qs,
            .out = &os,
            .k_cache = sp->k_cache,
            .v_cache = sp->v_cache,
            .block_size = block_size,
            .seqs = &as,
            .n_seqs = 1,
            .scale = scale,
            .m = &ms,
            .l = &ls,
            .n_batch_rows = n_batch_rows > 0 ? n_batch_rows : (int32_t)q->ne[2],
        };
        HS_TRY(hs_backend_attention(sp->be, &args));
        hs_attn_partial_combine(&acc, &one, n_vec, hd);
    }
    float *dst = (float *)((char *)out->data + (size_t)s->q_row * out->nb[2]);
    hs_attn_partial_finalize(&acc, n_vec, hd, dst);
    return HS_OK;
}

hs_status hs_attn_run(struct hs_attn_exec *x, const struct hs_tensor *q, struct hs_tensor *out,
                      const struct hs_attn_span_seq *seqs, int32_t n_seqs, int32_t block_size,
                      float scale, int32_t n_batch_rows)
{
    if (n_seqs <= 0) {
        return n_seqs == 0 ? HS_OK : HS_E_INVAL;
    }
    for (int32_t i = 0; i < n_seqs; i++) {
        if (seqs[i].n_spans < 1 || !seqs[i].spans) {
            return HS_E_INVAL;
        }
    }
    HS_TRY(reserve(x, n_seqs, 0));
    /* Single-span sequences: one call per (backend, cache), in batch order within each. */
    memset(x->done, 0, (size_t)n_seqs * sizeof(*x->done));
    for (int32_t i = 0; i < n_seqs; i++) {
        const struct hs_attn_span *lead = &seqs[i].spans[0];
        if (seqs[i].n_spans != 1 || x->done[i]) {
            continue;
        }
        int32_t n = 0;
        for (int32_t j = i; j < n_seqs; j++) {
            const struct hs_attn_span *o = &seqs[j].spans[0];
            if (seqs[j].n_spans == 1 && o->be == lead->be && o->k_cache == lead->k_cache) {
                x->list[n++] = seq_of(&seqs[j], o, seqs[j].q_row);
                x->done[j] = true;
            }
        }
        const struct hs_attn_args args = {
            .q = q,
            .out = out,
            .k_cache = lead->k_cache,
            .v_cache = lead->v_cache,
            .block_size = block_size,
            .seqs = x->list,
            .n_seqs = n,
            .scale = scale,
            .n_batch_rows = n_batch_rows,
        };
        HS_TRY(hs_backend_attention(lead->be, &args));
    }
    for (int32_t i = 0; i < n_seqs; i++) {
        if (seqs[i].n_spans > 1) {
            HS_TRY(run_spans(x, q, out, &seqs[i], block_size, scale, n_batch_rows));
        }
    }
    return HS_OK;
}
