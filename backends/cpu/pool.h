/* CPU compute thread pool: n threads (the caller plus n - 1 workers), created once, pinned to
 * distinct physical cores with hwloc where available. A dispatch publishes (fn, ctx) through an
 * atomic generation counter that idle workers spin on for a short while before sleeping on a
 * futex, so back-to-back ops cost about a microsecond each. Internal to backends/cpu (and tests).
 *
 * Thread: a pool is driven by one thread at a time (the engine thread). */
#ifndef HS_BACKENDS_CPU_POOL_H
#define HS_BACKENDS_CPU_POOL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/common.h"

struct hs_pool;

/* A parallel task: called once per thread with ith in [0, nth); ith 0 runs on the caller. */
typedef void (*hs_pool_fn)(void *ctx, int ith, int nth);

/* Number of physical cores (hwloc), else the online CPUs (sysconf); at least 1. Thread: any. */
int hs__pool_physical_cores(void);

/* Creates a pool of n_threads threads (<= 0: one per physical core). With pin, worker i is bound
 * to physical core first_core + i (modulo the cores) when hwloc is available and there are at
 * least n_threads cores; the caller (ith 0) stays where it is unless it calls
 * hs__pool_bind_caller. Two pools given disjoint [first_core, first_core + n_threads) ranges so
 * run on disjoint cores. Pinning failures are not errors. Returns HS_E_NOMEM / HS_E_INTERNAL
 * (thread creation); *out stays NULL on failure. Free with hs__pool_destroy. */
hs_status hs__pool_create(int n_threads, bool pin, int first_core, struct hs_pool **out);

/* Binds the calling thread (the one that will drive the pool, ith 0) to core first_core, when
 * the pool pins. */
void hs__pool_bind_caller(struct hs_pool *pool);

/* Stops and joins the workers and frees the pool; NULL is a no-op. */
void hs__pool_destroy(struct hs_pool *pool);

int hs__pool_n_threads(const struct hs_pool *pool);

/* Runs fn(ctx, ith, nth) on every thread and returns when all have finished (a full barrier:
 * writes made by fn on any thread are visible to the caller afterwards). Runs fn on the caller
 * alone when nth == 1. Not reentrant: fn must not call hs__pool_run. */
void hs__pool_run(struct hs_pool *pool, hs_pool_fn fn, void *ctx);

/* hs__pool_run, counted under name (borrowed: a string literal) when the environment had
 * HS_PROFILE=1 at the pool's creation: per op the calls, wall time, time inside fn, workers'
 * wake-up latency and load imbalance (time threads waited for the slowest), logged at WARN by
 * hs__pool_destroy. Without HS_PROFILE it costs one branch. */
void hs__pool_run_named(struct hs_pool *pool, hs_pool_fn fn, void *ctx, const char *name);

/* hs__pool_run_named for a dynamic task: fn must share its work out through a counter that
 * every thread draws from until it is exhausted (never by ith), so that the caller's fn alone
 * completes the task. Workers that have not started it when the caller's fn returns are
 * cancelled (compare-and-swap on their claim) rather than waited for. */
void hs__pool_run_dyn_named(struct hs_pool *pool, hs_pool_fn fn, void *ctx, const char *name);

/* A span of memory: a hint to prefetch it. */
struct hs__pool_span {
    const void *p;
    size_t n;
};
#define HS__POOL_HINT_SPANS 4

/* Asks worker ith (1 .. n_threads - 1; others are ignored) to prefetch spans[0 .. n) (n at most
 * HS__POOL_HINT_SPANS, in order; NULL ones skipped; the first MiB of each) while it waits: the
 * memory its next task will read first. Replaces its previous hint. Only advice: the spans need
 * not be mapped (prefetches never fault) and no task need follow; a task dispatched meanwhile
 * runs at once, the worker going on with the spans after it. Thread: the caller's. */
void hs__pool_hint(struct hs_pool *pool, int ith, const struct hs__pool_span *spans, int n);

/* fn(ctx, 0, 1) on the caller alone (a task too small to split), counted under name as
 * hs__pool_run_named counts. */
void hs__pool_run1_named(struct hs_pool *pool, hs_pool_fn fn, void *ctx, const char *name);

/* Chunks [0, n) of a dynamic task, in contiguous shares of about n / nth: thread ith takes its
 * own share's chunks in order first (one sequential run through memory a thread, the hardware
 * prefetcher's best case), then the chunks left at the front of the others'. Every thread draws
 * until all are taken, as hs__pool_run_dyn_named asks: the caller alone can take them all. With
 * more threads than shares, threads ith and ith + HS__POOL_SHARES_MAX start on the same share. */
#define HS__POOL_SHARES_MAX 16

struct hs__pool_chunks {
    struct {
        _Alignas(64) atomic_llong next;
    } share[HS__POOL_SHARES_MAX];
    int64_t n;
    int n_shares;
};

/* Shares n chunks among nth threads (nth >= 1). */
void hs__pool_chunks_init(struct hs__pool_chunks *c, int64_t n, int nth);
/* Thread ith's own share, chunks [*first, *end): what it claims first, in order, unless others
 * took them. */
void hs__pool_chunks_share(const struct hs__pool_chunks *c, int ith, int64_t *first, int64_t *end);
/* The next chunk for thread ith, or -1 when all are taken. Thread: any. */
int64_t hs__pool_chunks_claim(struct hs__pool_chunks *c, int ith);

#endif
