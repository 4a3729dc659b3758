/* Thread pool: generation counter + spin-then-futex wait; see pool.h. */
#include "backends/cpu/pool.h"

#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "hs-config.h"

#if HS_HAVE_HWLOC
#include <hwloc.h>
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define HS__CPU_RELAX() _mm_pause()
#else
#define HS__CPU_RELAX() ((void)0)
#endif

/* Lines of a hinted span an idle worker prefetches between two checks of gen, and the most
 * bytes of a span it takes (more is cut: a worker prefetching does not sleep). */
#define HS__POOL_HINT_LINES 4
#define HS__POOL_HINT_MAX   ((size_t)1 << 20)

/* How long an idle worker spins before it sleeps on the futex. */
#define HS__POOL_SPIN_NS 50000

struct hs__pool_worker {
    struct hs_pool *pool;
    pthread_t thread;
    int ith;
    bool started;
    /* Profiling (HS_PROFILE=1): this worker's start and end of the current task, written before
     * its n_pending release, read by the caller after it sees n_pending reach 0. */
    uint64_t prof_start_ns, prof_end_ns;
    bool prof_cancelled; /* the caller took this worker's part of the current task */
    /* The last generation this worker claimed, or the caller cancelled for it: whoever moves it
     * to the current generation first (compare-and-swap) owns the worker's part of the task. */
    _Alignas(64) _Atomic uint32_t claim;
    /* The spans to prefetch while idle (hs__pool_hint): published by the caller with a bump of
     * hint_seq (release), read by this worker between its looks at gen. */
    _Alignas(64) _Atomic(uintptr_t) hint_p[HS__POOL_HINT_SPANS];
    _Atomic size_t hint_n[HS__POOL_HINT_SPANS];
    _Atomic uint32_t hint_seq;
    /* This worker's own: the hint_seq it last took, and what it has not yet prefetched of
     * those spans (addresses as integers: they need not point into anything), kept from one
     * wait to the next so that a hint given before a task is fetched after it. */
    uint32_t hint_taken;
    uintptr_t hint_at[HS__POOL_HINT_SPANS];
    size_t hint_left[HS__POOL_HINT_SPANS];
};

/* Per-op totals of the profiler; an op is a name given to hs__pool_run_named. */
#define HS__POOL_PROF_OPS 32
struct hs__pool_prof_op {
    const char *name; /* borrowed: a string literal */
    uint64_t calls;
    uint64_t serial_calls; /* of calls, run on the caller alone (too small to split) */
    uint64_t wall_ns;      /* caller's dispatch to the last thread's end */
    uint64_t work_ns;      /* summed over threads: time inside fn */
    uint64_t wake_ns;      /* summed over workers: dispatch to the start of fn */
    uint64_t imbal_ns;     /* summed over threads: own end to the last thread's end */
    uint64_t cancelled;    /* worker parts the caller took because the worker had not started */
};

struct hs_pool {
    int n_threads;
    int first_core;
    bool pin;

    /* Published by the caller before bumping gen; read by workers after seeing the new gen. */
    hs_pool_fn fn;
    void *ctx;
    atomic_bool stop; /* atomic: read by workers that may have seen gen with a relaxed load */
    bool cancellable; /* the current task is shared out dynamically (see hs__pool_run_dyn_named) */

    _Alignas(64) _Atomic uint32_t gen;  /* futex word: bumped once per dispatch */
    _Alignas(64) atomic_int n_sleepers; /* workers inside (or about to enter) futex_wait */
    _Alignas(64) atomic_int n_pending;  /* workers that have not finished the current task */

    struct hs__pool_worker *workers; /* [n_threads - 1] */

    bool prof;                   /* HS_PROFILE=1 at creation */
    uint64_t prof_caller_end_ns; /* the caller's end of fn in the current dispatch */
    uint64_t prof_last_end_ns;   /* end of the previous dispatch (0: none yet) */
    uint64_t prof_gap_ns;   /* caller time between dispatches (serial work, engine, sampling) */
    uint64_t prof_first_ns; /* first dispatch */
    int n_prof;
    struct hs__pool_prof_op prof_ops[HS__POOL_PROF_OPS];

#if HS_HAVE_HWLOC
    hwloc_topology_t topo;
    bool have_topo;
#endif
};

static void pool_prof_log(struct hs_pool *pool);

static long futex_call(_Atomic uint32_t *addr, int op, uint32_t val)
{
    return syscall(SYS_futex, (uint32_t *)addr, op, val, NULL, NULL, 0);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int hs__pool_physical_cores(void)
{
    int n = 0;
#if HS_HAVE_HWLOC
    hwloc_topology_t topo;
    if (hwloc_topology_init(&topo) == 0) {
        if (hwloc_topology_load(topo) == 0) {
            n = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_CORE);
        }
        hwloc_topology_destroy(topo);
    }
#endif
    if (n <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n = c > 0 && c < INT_MAX ? (int)c : 1;
    }
    return n;
}

static void pool_pin(struct hs_pool *pool, int core)
{
#if HS_HAVE_HWLOC
    if (!pool->have_topo) {
        return;
    }
    const int n_cores = hwloc_get_nbobjs_by_type(pool->topo, HWLOC_OBJ_CORE);
    if (n_cores <= 0) {
        return;
    }
    hwloc_obj_t obj = hwloc_get_obj_by_type(pool->topo, HWLOC_OBJ_CORE, (unsigned)(core % n_cores));
    if (!obj || !obj->cpuset) {
        return;
    }
    hwloc_bitmap_t set = hwloc_bitmap_dup(obj->cpuset);
    if (!set) {
        return;
    }
    hwloc_bitmap_singlify(set);
    (void)hwloc_set_cpubind(pool->topo, set, HWLOC_CPUBIND_THREAD);
    hwloc_bitmap_free(set);
#else
    (void)pool;
    (void)core;
#endif
}

/* Waits until gen differs from seen: spins first, then sleeps on the futex. While it spins, a
 * worker (w not NULL) prefetches its hinted spans, HS__POOL_HINT_LINES lines between two looks
 * at gen, so that a new task is seen as soon as without a hint. */
static uint32_t pool_wait_gen(struct hs_pool *pool, struct hs__pool_worker *w, uint32_t seen)
{
    uint32_t g;
    uint64_t t0 = 0;
    int cur = 0; /* the span being prefetched */
    for (unsigned i = 0;; i++) {
        g = atomic_load_explicit(&pool->gen, memory_order_acquire);
        if (g != seen) {
            return g;
        }
        if (w) {
            const uint32_t q = atomic_load_explicit(&w->hint_seq, memory_order_acquire);
            if (q != w->hint_taken) {
                /* a hint being replaced meanwhile gives a mix of two: advice all the same */
                w->hint_taken = q;
                for (int k = 0; k < HS__POOL_HINT_SPANS; k++) {
                    w->hint_at[k] = atomic_load_explicit(&w->hint_p[k], memory_order_relaxed);
                    w->hint_left[k] = atomic_load_explicit(&w->hint_n[k], memory_order_relaxed);
                }
                cur = 0;
            }
            uintptr_t *const hp = w->hint_at;
            size_t *const hn = w->hint_left;
            while (cur < HS__POOL_HINT_SPANS && hn[cur] == 0) {
                cur++;
            }
            if (cur < HS__POOL_HINT_SPANS) {
                for (int k = 0; k < HS__POOL_HINT_LINES && hn[cur] > 0; k++) {
                    __builtin_prefetch((const void *)hp[cur], 0, 3); /* never faults */
                    hp[cur] += 64;
                    hn[cur] = hn[cur] > 64 ? hn[cur] - 64 : 0;
                }
                continue;
            }
        }
        HS__CPU_RELAX();
        if ((i & 255) == 255) {
            /* On an oversubscribed machine the thread that will bump gen may be waiting for
             * this core: give it the core instead of spinning out the time slice. */
            sched_yield();
            uint64_t t = now_ns();
            if (t0 == 0) {
                t0 = t;
            } else if (t - t0 > HS__POOL_SPIN_NS) {
                break;
            }
        }
    }
    for (;;) {
        /* Dekker with the caller's store of gen then load of n_sleepers (both seq_cst). */
        atomic_fetch_add(&pool->n_sleepers, 1);
        g = atomic_load(&pool->gen);
        if (g == seen) {
            (void)futex_call(&pool->gen, FUTEX_WAIT_PRIVATE, seen);
        }
        atomic_fetch_sub(&pool->n_sleepers, 1);
        g = atomic_load_explicit(&pool->gen, memory_order_acquire);
        if (g != seen) {
            return g;
        }
    }
}

static void *pool_main(void *arg)
{
    struct hs__pool_worker *w = arg;
    struct hs_pool *pool = w->pool;
    if (pool->pin) {
        pool_pin(pool, pool->first_core + w->ith);
    }
    uint32_t seen = 0;
    for (;;) {
        seen = pool_wait_gen(pool, w, seen);
        if (atomic_load_explicit(&pool->stop, memory_order_acquire)) {
            break;
        }
        uint32_t c = atomic_load_explicit(&w->claim, memory_order_relaxed);
        /* Claim only forwards: a worker that saw generation `seen` late may find its claim
         * already moved past it by the caller's cancellations of later tasks; moving it back
         * would run a finished task's fn on a stale ctx and miscount the current one. */
        if ((int32_t)(seen - c) <= 0 || !atomic_compare_exchange_strong(&w->claim, &c, seen)) {
            continue; /* the caller finished the task without this worker */
        }
        if (pool->prof) {
            w->prof_start_ns = now_ns();
            pool->fn(pool->ctx, w->ith, pool->n_threads);
            w->prof_end_ns = now_ns();
        } else {
            pool->fn(pool->ctx, w->ith, pool->n_threads);
        }
        atomic_fetch_sub_explicit(&pool->n_pending, 1, memory_order_release);
    }
    return NULL;
}

/* Publishes a new generation and wakes sleepers. */
static void pool_kick(struct hs_pool *pool)
{
    atomic_fetch_add(&pool->gen, 1);
    if (atomic_load(&pool->n_sleepers) > 0) {
        (void)futex_call(&pool->gen, FUTEX_WAKE_PRIVATE, INT_MAX);
    }
}

hs_status hs__pool_create(int n_threads, bool pin, int first_core, struct hs_pool **out)
{
    hs_status st = HS_E_NOMEM;
    *out = NULL;
    if (n_threads <= 0) {
        n_threads = hs__pool_physical_cores();
    }
    struct hs_pool *pool = calloc(1, sizeof(*pool));
    if (!pool) {
        goto fail;
    }
    pool->n_threads = n_threads;
    pool->first_core = first_core > 0 ? first_core : 0;
    atomic_init(&pool->gen, 0);
    atomic_init(&pool->n_sleepers, 0);
    atomic_init(&pool->n_pending, 0);
    const char *prof = getenv("HS_PROFILE");
    pool->prof = prof && strcmp(prof, "0") != 0 && prof[0] != '\0';
    if (n_threads > 1) {
        pool->workers = calloc((size_t)n_threads - 1, sizeof(*pool->workers));
        if (!pool->workers) {
            goto fail_pool;
        }
    }
#if HS_HAVE_HWLOC
    if (pin && hwloc_topology_init(&pool->topo) == 0) {
        if (hwloc_topology_load(pool->topo) == 0) {
            pool->have_topo = true;
            /* Pin only when every thread can have a core of its own. */
            pool->pin = hwloc_get_nbobjs_by_type(pool->topo, HWLOC_OBJ_CORE) >= n_threads;
        } else {
            hwloc_topology_destroy(pool->topo);
        }
    }
#endif
    for (int i = 1; i < n_threads; i++) {
        struct hs__pool_worker *w = &pool->workers[i - 1];
        w->pool = pool;
        w->ith = i;
        atomic_init(&w->claim, 0);
        if (pthread_create(&w->thread, NULL, pool_main, w) != 0) {
            st = HS_E_INTERNAL;
            goto fail_threads;
        }
        w->started = true;
    }
    *out = pool;
    return HS_OK;

fail_threads:
    hs__pool_destroy(pool);
    return st;
fail_pool:
    free(pool);
fail:
    return st;
}

void hs__pool_destroy(struct hs_pool *pool)
{
    if (!pool) {
        return;
    }
    if (pool->prof) {
        pool_prof_log(pool);
    }
    atomic_store_explicit(&pool->stop, true, memory_order_release);
    pool_kick(pool);
    for (int i = 1; i < pool->n_threads; i++) {
        if (pool->workers && pool->workers[i - 1].started) {
            pthread_join(pool->workers[i - 1].thread, NULL);
        }
    }
#if HS_HAVE_HWLOC
    if (pool->have_topo) {
        hwloc_topology_destroy(pool->topo);
    }
#endif
    free(pool->workers);
    free(pool);
}

void hs__pool_bind_caller(struct hs_pool *pool)
{
    if (pool->pin) {
        pool_pin(pool, pool->first_core);
    }
}

void hs__pool_hint(struct hs_pool *pool, int ith, const struct hs__pool_span *spans, int n)
{
    if (ith < 1 || ith >= pool->n_threads) {
        return;
    }
    struct hs__pool_worker *w = &pool->workers[ith - 1];
    for (int k = 0; k < HS__POOL_HINT_SPANS; k++) {
        const bool set = k < n && spans[k].p;
        atomic_store_explicit(&w->hint_p[k], set ? (uintptr_t)spans[k].p : 0, memory_order_relaxed);
        atomic_store_explicit(&w->hint_n[k], set ? HS_MIN(spans[k].n, HS__POOL_HINT_MAX) : 0,
                              memory_order_relaxed);
    }
    atomic_fetch_add_explicit(&w->hint_seq, 1, memory_order_release);
}

int hs__pool_n_threads(const struct hs_pool *pool)
{
    return pool->n_threads;
}

static void pool_dispatch(struct hs_pool *pool, hs_pool_fn fn, void *ctx, bool cancellable)
{
    const int nth = pool->n_threads;
    if (nth == 1) {
        fn(ctx, 0, 1);
        return;
    }
    pool->fn = fn;
    pool->ctx = ctx;
    pool->cancellable = cancellable;
    atomic_store_explicit(&pool->n_pending, nth - 1, memory_order_relaxed);
    pool_kick(pool); /* seq_cst: orders fn/ctx/n_pending before the new gen */
    fn(ctx, 0, nth);
    if (pool->prof) {
        pool->prof_caller_end_ns = now_ns();
    }
    /* A dynamic task is done when the caller's fn returns (it claimed whatever was left):
     * workers that have not started it yet need not be waited for. On a loaded machine a
     * descheduled worker otherwise costs a whole time slice per op. */
    const uint32_t g = atomic_load_explicit(&pool->gen, memory_order_relaxed);
    for (int i = 1; i < nth; i++) {
        struct hs__pool_worker *w = &pool->workers[i - 1];
        w->prof_cancelled = false;
        if (!cancellable) {
            continue;
        }
        uint32_t c = atomic_load_explicit(&w->claim, memory_order_relaxed);
        if (c != g && atomic_compare_exchange_strong(&w->claim, &c, g)) {
            w->prof_cancelled = true;
            atomic_fetch_sub_explicit(&pool->n_pending, 1, memory_order_relaxed);
        }
    }
    /* Spin; yield now and then so an oversubscribed machine can run the workers we wait on. */
    for (unsigned i = 1; atomic_load_explicit(&pool->n_pending, memory_order_acquire) > 0; i++) {
        HS__CPU_RELAX();
        if ((i & 1023) == 0) {
            sched_yield();
        }
    }
}

static struct hs__pool_prof_op *pool_prof_find(struct hs_pool *pool, const char *name)
{
    for (int i = 0; i < pool->n_prof; i++) {
        if (pool->prof_ops[i].name == name || strcmp(pool->prof_ops[i].name, name) == 0) {
            return &pool->prof_ops[i];
        }
    }
    if (pool->n_prof == HS__POOL_PROF_OPS) {
        return &pool->prof_ops[HS__POOL_PROF_OPS - 1]; /* lumped */
    }
    struct hs__pool_prof_op *op = &pool->prof_ops[pool->n_prof++];
    op->name = name;
    return op;
}

static void pool_prof_run(struct hs_pool *pool, hs_pool_fn fn, void *ctx, const char *name,
                          bool serial, bool cancellable)
{
    const uint64_t t0 = now_ns();
    if (pool->prof_last_end_ns) {
        pool->prof_gap_ns += t0 - pool->prof_last_end_ns;
    } else {
        pool->prof_first_ns = t0;
    }
    if (serial) {
        fn(ctx, 0, 1);
    } else {
        pool_dispatch(pool, fn, ctx, cancellable);
    }
    const uint64_t caller_end =
        !serial && pool->n_threads > 1 ? pool->prof_caller_end_ns : now_ns();
    const uint64_t t1 = now_ns();
    struct hs__pool_prof_op *op = pool_prof_find(pool, name ? name : "other");
    uint64_t last = caller_end;
    for (int i = 1; i < pool->n_threads && !serial; i++) {
        if (!pool->workers[i - 1].prof_cancelled) {
            last = HS_MAX(last, pool->workers[i - 1].prof_end_ns);
        }
    }
    op->calls++;
    op->wall_ns += t1 - t0;
    op->work_ns += caller_end - t0;
    op->imbal_ns += last - caller_end;
    if (serial) {
        op->serial_calls++;
        pool->prof_last_end_ns = t1;
        return;
    }
    for (int i = 1; i < pool->n_threads; i++) {
        const struct hs__pool_worker *w = &pool->workers[i - 1];
        if (w->prof_cancelled) {
            op->cancelled++;
            continue;
        }
        op->work_ns += w->prof_end_ns - w->prof_start_ns;
        op->wake_ns += w->prof_start_ns > t0 ? w->prof_start_ns - t0 : 0;
        op->imbal_ns += last - w->prof_end_ns;
    }
    pool->prof_last_end_ns = t1;
}

void hs__pool_run_named(struct hs_pool *pool, hs_pool_fn fn, void *ctx, const char *name)
{
    if (pool->prof) {
        pool_prof_run(pool, fn, ctx, name, false, false);
    } else {
        pool_dispatch(pool, fn, ctx, false);
    }
}

void hs__pool_run_dyn_named(struct hs_pool *pool, hs_pool_fn fn, void *ctx, const char *name)
{
    if (pool->prof) {
        pool_prof_run(pool, fn, ctx, name, false, true);
    } else {
        pool_dispatch(pool, fn, ctx, true);
    }
}

void hs__pool_run1_named(struct hs_pool *pool, hs_pool_fn fn, void *ctx, const char *name)
{
    if (pool->prof) {
        pool_prof_run(pool, fn, ctx, name, true, false);
    } else {
        fn(ctx, 0, 1);
    }
}

void hs__pool_run(struct hs_pool *pool, hs_pool_fn fn, void *ctx)
{
    hs__pool_run_named(pool, fn, ctx, NULL);
}

/* Logs the profile, one line per op (WARN: the user asked for it with HS_PROFILE). Times are
 * totals in ms over the pool's life; thread-ms sum over the threads. */
static void pool_prof_log(struct hs_pool *pool)
{
    const int nth = pool->n_threads;
    uint64_t wall = 0;
    for (int i = 0; i < pool->n_prof; i++) {
        wall += pool->prof_ops[i].wall_ns;
    }
    const uint64_t span = pool->prof_last_end_ns - pool->prof_first_ns;
    HS_LOG_WARN("profile: pool of %d threads: %.1f ms from the first dispatch to the last, %.1f "
                "ms inside ops (%.1f%%), %.1f ms between them on the caller",
                nth, 1e-6 * (double)span, 1e-6 * (double)wall,
                span ? 100.0 * (double)wall / (double)span : 0.0, 1e-6 * (double)pool->prof_gap_ns);
    HS_LOG_WARN("profile: %-16s %8s %8s %9s %9s %7s %8s %11s %11s %12s", "op", "calls", "serial",
                "cancelled", "wall ms", "wall%", "us/call", "work thr-ms", "wake thr-ms",
                "imbal thr-ms");
    for (int i = 0; i < pool->n_prof; i++) {
        const struct hs__pool_prof_op *op = &pool->prof_ops[i];
        HS_LOG_WARN("profile: %-16s %8llu %8llu %9llu %9.2f %6.1f%% %8.2f %11.2f %11.2f %12.2f",
                    op->name, (unsigned long long)op->calls, (unsigned long long)op->serial_calls,
                    (unsigned long long)op->cancelled, 1e-6 * (double)op->wall_ns,
                    span ? 100.0 * (double)op->wall_ns / (double)span : 0.0,
                    op->calls ? 1e-3 * (double)op->wall_ns / (double)op->calls : 0.0,
                    1e-6 * (double)op->work_ns, 1e-6 * (double)op->wake_ns,
                    1e-6 * (double)op->imbal_ns);
    }
}

/* ---- chunks of a dynamic task ---- */

/* First chunk of share s of c. */
static int64_t chunks_begin(const struct hs__pool_chunks *c, int s)
{
    return c->n * s / c->n_shares;
}

void hs__pool_chunks_share(const struct hs__pool_chunks *c, int ith, int64_t *first, int64_t *end)
{
    const int s = ith % c->n_shares;
    *first = chunks_begin(c, s);
    *end = chunks_begin(c, s + 1);
}

void hs__pool_chunks_init(struct hs__pool_chunks *c, int64_t n, int nth)
{
    c->n = n;
    c->n_shares = nth < 1 ? 1 : nth > HS__POOL_SHARES_MAX ? HS__POOL_SHARES_MAX : nth;
    for (int s = 0; s < c->n_shares; s++) {
        atomic_init(&c->share[s].next, chunks_begin(c, s));
    }
}

int64_t hs__pool_chunks_claim(struct hs__pool_chunks *c, int ith)
{
    for (int k = 0; k < c->n_shares; k++) {
        const int s = (ith + k) % c->n_shares;
        const int64_t end = chunks_begin(c, s + 1);
        /* a share seen done is skipped without a locked add on its line */
        if (atomic_load_explicit(&c->share[s].next, memory_order_relaxed) >= end) {
            continue;
        }
        const int64_t i = atomic_fetch_add_explicit(&c->share[s].next, 1, memory_order_relaxed);
        if (i < end) {
            return i;
        }
    }
    return -1;
}
