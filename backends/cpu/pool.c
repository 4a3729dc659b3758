/* Thread pool: generation counter + spin-then-futex wait; see pool.h. */
#include "backends/cpu/pool.h"

#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

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

/* How long an idle worker spins before it sleeps on the futex. */
#define HS__POOL_SPIN_NS 50000

struct hs__pool_worker {
    struct hs_pool *pool;
    pthread_t thread;
    int ith;
    bool started;
};

struct hs_pool {
    int n_threads;
    int first_core;
    bool pin;

    /* Published by the caller before bumping gen; read by workers after seeing the new gen. */
    hs_pool_fn fn;
    void *ctx;
    bool stop;

    _Alignas(64) _Atomic uint32_t gen;  /* futex word: bumped once per dispatch */
    _Alignas(64) atomic_int n_sleepers; /* workers inside (or about to enter) futex_wait */
    _Alignas(64) atomic_int n_pending;  /* workers that have not finished the current task */

    struct hs__pool_worker *workers; /* [n_threads - 1] */

#if HS_HAVE_HWLOC
    hwloc_topology_t topo;
    bool have_topo;
#endif
};

static long hs__futex(_Atomic uint32_t *addr, int op, uint32_t val)
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
    hwloc_obj_t obj =
        hwloc_get_obj_by_type(pool->topo, HWLOC_OBJ_CORE, (unsigned)(core % n_cores));
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

/* Waits until gen differs from seen: spins first, then sleeps on the futex. */
static uint32_t pool_wait_gen(struct hs_pool *pool, uint32_t seen)
{
    uint32_t g;
    uint64_t t0 = 0;
    for (unsigned i = 0;; i++) {
        g = atomic_load_explicit(&pool->gen, memory_order_acquire);
        if (g != seen) {
            return g;
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
            (void)hs__futex(&pool->gen, FUTEX_WAIT_PRIVATE, seen);
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
        seen = pool_wait_gen(pool, seen);
        if (pool->stop) {
            break;
        }
        pool->fn(pool->ctx, w->ith, pool->n_threads);
        atomic_fetch_sub_explicit(&pool->n_pending, 1, memory_order_release);
    }
    return NULL;
}

/* Publishes a new generation and wakes sleepers. */
static void pool_kick(struct hs_pool *pool)
{
    atomic_fetch_add(&pool->gen, 1);
    if (atomic_load(&pool->n_sleepers) > 0) {
        (void)hs__futex(&pool->gen, FUTEX_WAKE_PRIVATE, INT_MAX);
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
    pool->stop = true;
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

int hs__pool_n_threads(const struct hs_pool *pool)
{
    return pool->n_threads;
}

void hs__pool_run(struct hs_pool *pool, hs_pool_fn fn, void *ctx)
{
    const int nth = pool->n_threads;
    if (nth == 1) {
        fn(ctx, 0, 1);
        return;
    }
    pool->fn = fn;
    pool->ctx = ctx;
    atomic_store_explicit(&pool->n_pending, nth - 1, memory_order_relaxed);
    pool_kick(pool); /* seq_cst: orders fn/ctx/n_pending before the new gen */
    fn(ctx, 0, nth);
    /* Spin; yield now and then so an oversubscribed machine can run the workers we wait on. */
    for (unsigned i = 1; atomic_load_explicit(&pool->n_pending, memory_order_acquire) > 0; i++) {
        HS__CPU_RELAX();
        if ((i & 1023) == 0) {
            sched_yield();
        }
    }
}
