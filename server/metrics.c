/* Engine metrics: the histogram bounds, observing into the histograms, the KV gauges, and the
 * snapshot behind hs_engine_get_metrics (with the MoE expert accessors).
 *
 * Owns nothing: the counters live in struct hs_engine (e->m), relaxed atomics. The engine thread
 * writes them (hs__metrics_*, INC); any thread reads them (hs_engine_get_metrics,
 * hs_engine_expert_*). */
#include "server/engine.h"
#include "server/engine-impl.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>

/* ---- histogram bounds (vLLM's) ---- */

const double hs_engine_ttft_bounds_s[HS_ENGINE_TTFT_BUCKETS] = {
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25,  0.5,   0.75,
    1.0,   2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
};
const double hs_engine_tpot_bounds_s[HS_ENGINE_TPOT_BUCKETS] = {
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,  0.3,  0.4,  0.5,
    0.75, 1.0,   2.5,  5.0,   7.5, 10.0, 20.0, 40.0, 80.0,
};
const double hs_engine_e2e_bounds_s[HS_ENGINE_E2E_BUCKETS] = {
    0.3,  0.5,  0.8,  1.0,  1.5,   2.0,   2.5,   5.0,   10.0,   15.0,   20.0,
    30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
};

const double hs_engine_lenerr_bounds[HS_ENGINE_LENERR_BUCKETS] = {
    0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 4.0, 10.0,
};

const char *hs_cancel_phase_str(enum hs_cancel_phase p)
{
    static const char *const names[HS_CANCEL_COUNT] = {"queue", "prefill", "decode"};
    return p >= 0 && p < HS_CANCEL_COUNT ? names[p] : "none";
}

/* ---- engine thread: observing ---- */

void hs__metrics_observe(struct histo *h, const double *bounds, int n, double s)
{
    int i = 0;
    while (i < n && s > bounds[i]) {
        i++;
    }
    atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_ns, (uint64_t)(s > 0 ? s * 1e9 : 0), memory_order_relaxed);
}

void hs__metrics_update_kv_gauges(struct hs_engine *e)
{
    int32_t used = 0, cached = 0, free_blocks = 0;
    for (int32_t s = 0; s < e->n_pools; s++) {
        const int32_t u = hs_kv_pool_n_used(e->pools[s]);
        atomic_store_explicit(&e->m.store_used[s], u, memory_order_relaxed);
        used += u;
        cached += hs_kv_pool_n_cached(e->pools[s]);
        free_blocks += hs_kv_pool_n_free(e->pools[s]);
    }
    atomic_store_explicit(&e->m.kv_used, used, memory_order_relaxed);
    atomic_store_explicit(&e->m.kv_cached, cached, memory_order_relaxed);
    atomic_store_explicit(&e->m.kv_free, free_blocks, memory_order_relaxed);
}

void hs__metrics_publish_placement(struct hs_engine *e)
{
    struct hs_backend_stats st[HS_KV_STORES_MAX];
    for (int32_t s = 0; s < e->n_pools; s++) {
        hs_backend_get_stats(hs_context_store_backend(e->ctx, s), &st[s]);
    }
    struct hs_backend_stats total;
    hs_context_get_stats(e->ctx, &total);
    struct hs_split_stats sp;
    hs_context_get_split_stats(e->ctx, &sp);
    pthread_mutex_lock(&e->m.placement_mu);
    memcpy(e->m.be_stats, st, sizeof(st[0]) * (size_t)e->n_pools);
    e->m.be_total = total;
    e->m.split = sp;
    pthread_mutex_unlock(&e->m.placement_mu);
}

/* ---- any thread: snapshots ---- */

#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)

static void histo_snapshot(const struct histo *h, const double *bounds, int n,
                           struct hs_engine_histogram *out)
{
    memset(out, 0, sizeof(*out));
    out->n_buckets = n;
    out->bounds_s = bounds;
    uint64_t acc = 0;
    for (int i = 0; i < n; i++) {
        acc += LOAD(h->bucket[i]);
        out->le[i] = acc;
    }
    out->count = acc + LOAD(h->bucket[n]);
    out->sum_s = (double)LOAD(h->sum_ns) / 1e9;
}

void hs_engine_get_backend_stats(const struct hs_engine *e, struct hs_backend_stats *out)
{
    struct hs_engine *me = (struct hs_engine *)e; /* the mutex only */
    pthread_mutex_lock(&me->m.placement_mu);
    *out = me->m.be_total;
    pthread_mutex_unlock(&me->m.placement_mu);
}

uint64_t hs_engine_expert_tokens(const struct hs_engine *e, int32_t il, int32_t expert)
{
    /* The MoE state is fixed after creation; its counters are relaxed atomics. */
    return hs_moe_expert_tokens(hs_context_moe(e->ctx), il, expert);
}

const char *hs_engine_expert_backend(const struct hs_engine *e, int32_t il, int32_t expert)
{
    return hs_context_expert_backend(e->ctx, il, expert);
}

/* The counters copied as they are: a uint64_t field (or array) of the snapshot and the engine's
 * _Atomic uint64_t of the same length (a negative array size stops the build where not). */
#define N_U64(type, field) (sizeof(((type *)0)->field) / sizeof(uint64_t))
#define COUNTER(to, from)                                                                          \
    {                                                                                              \
        offsetof(struct hs_engine_metrics, to), offsetof(struct metrics, from),                    \
            N_U64(struct hs_engine_metrics, to) +                                                  \
                0 * sizeof(char[N_U64(struct hs_engine_metrics, to) == N_U64(struct metrics, from) \
                                    ? 1                                                            \
                                    : -1])                                                         \
    }

static const struct {
    size_t to, from, n;
} counters[] = {
    COUNTER(requests_submitted, submitted),
    COUNTER(requests_rejected, rejected),
    COUNTER(requests_finished, finished),
    COUNTER(requests_cancelled, cancelled),
    COUNTER(prompt_tokens, prompt_tokens),
    COUNTER(generation_tokens, gen_tokens),
    COUNTER(prefix_hit_tokens, hit_tokens),
    COUNTER(prefill_tokens, prefill_tokens),
    COUNTER(preemptions, preemptions),
    COUNTER(steps, steps),
    COUNTER(batch_tokens, batch_tokens),
    COUNTER(draws, draws),
    COUNTER(draws_in_tasks, draws_in_tasks),
    COUNTER(migrations, migrations),
    COUNTER(migrated_bytes, migrated_bytes),
    COUNTER(spec_drafts, spec_drafts),
    COUNTER(spec_drafted, spec_drafted),
    COUNTER(spec_accepted, spec_accepted),
    COUNTER(predicted_tokens, predicted_tokens),
    COUNTER(length_abs_error_tokens, lenerr_tokens),
    COUNTER(segment_yields, seg_yields),
    COUNTER(pingpong_reorders, pp_reorders),
    COUNTER(segment_resumes, seg_resumes),
    COUNTER(segment_evictions, seg_evictions),
    COUNTER(recomputed_tokens, recomputed_tokens),
};

void hs_engine_get_metrics(const struct hs_engine *e, struct hs_engine_metrics *m)
{
    struct hs_engine *me = (struct hs_engine *)e; /* atomics are read-only here */
    memset(m, 0, sizeof(*m));
    m->n_running = LOAD(me->m.n_running_req);
    pthread_mutex_lock(&me->mu);
    int32_t inflight = me->n_inflight;
    pthread_mutex_unlock(&me->mu);
    m->n_waiting = HS_MAX(0, inflight - m->n_running);
    m->n_seqs_running = LOAD(me->m.n_seqs_running);
    for (int32_t s = 0; s < e->n_pools; s++) {
        m->kv_blocks_total += hs_kv_pool_n_blocks(e->pools[s]);
    }
    m->kv_blocks_used = LOAD(me->m.kv_used);
    m->kv_blocks_cached = LOAD(me->m.kv_cached);
    m->kv_blocks_free = LOAD(me->m.kv_free);
    for (size_t i = 0; i < HS_ARRAY_LEN(counters); i++) {
        uint64_t *to = (uint64_t *)((char *)m + counters[i].to);
        _Atomic uint64_t *from = (_Atomic uint64_t *)((char *)&me->m + counters[i].from);
        for (size_t k = 0; k < counters[i].n; k++) {
            to[k] = LOAD(from[k]);
        }
    }
    m->sampling_s = (double)LOAD(me->m.sampling_ns) / 1e9;
    m->spec_cost_knee = (double)LOAD(me->m.spec_knee_milli) / 1000.0;
    m->spec_store_bytes = LOAD(me->m.spec_store_bytes);
    m->spec_store_responses = LOAD(me->m.spec_store_responses);
    m->spec_text_bytes = LOAD(me->m.spec_text_bytes);
    m->n_backends = e->n_pools;
    pthread_mutex_lock(&me->m.placement_mu);
    for (int32_t s = 0; s < e->n_pools; s++) {
        struct hs_engine_backend_metrics *b = &m->backends[s];
        struct hs_backend *be = hs_context_store_backend(e->ctx, s);
        b->name = hs_backend_name(be);
        b->role = !e->split ? "all" : s == 0 ? "ffn" : "attention";
        b->busy_s = s == 0 ? me->m.split.ffn_busy_s : me->m.split.attn_busy_s;
        b->sim_s = me->m.be_stats[s].sim_time_s;
        b->bytes_in = me->m.be_stats[s].bytes_copied_in;
        b->bytes_out = me->m.be_stats[s].bytes_copied_out;
        b->kv_blocks_total = hs_kv_pool_n_blocks(e->pools[s]);
        b->kv_blocks_used = LOAD(me->m.store_used[s]);
        b->n_seqs = LOAD(me->m.store_seqs[s]);
        b->n_threads = hs_backend_n_threads(be);
    }
    m->split = me->m.split;
    pthread_mutex_unlock(&me->m.placement_mu);
    m->prefix_hit_rate =
        m->prompt_tokens ? (double)m->prefix_hit_tokens / (double)m->prompt_tokens : 0.0;
    histo_snapshot(&me->m.ttft, hs_engine_ttft_bounds_s, HS_ENGINE_TTFT_BUCKETS, &m->ttft);
    histo_snapshot(&me->m.tpot, hs_engine_tpot_bounds_s, HS_ENGINE_TPOT_BUCKETS, &m->tpot);
    histo_snapshot(&me->m.e2e, hs_engine_e2e_bounds_s, HS_ENGINE_E2E_BUCKETS, &m->e2e);
    histo_snapshot(&me->m.lenerr, hs_engine_lenerr_bounds, HS_ENGINE_LENERR_BUCKETS,
                   &m->length_error);
}
