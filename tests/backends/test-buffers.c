/* Memory owned by a backend (buffers, set/get/copy, the copy counters) on every registered
 * backend, and the CPU thread pool: every thread runs once per dispatch, pools pinned on
 * disjoint cores; host tasks shared out over a backend's threads. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "backends/backend-impl.h"
#include "backends/cpu/pool.h"
#include "hs-config.h"

static struct hs_backend *make_backend(int reg)
{
    struct hs_backend_params p = hs_backend_default_params();
    p.n_threads = 1;
    p.pin_threads = false;
    struct hs_backend *be = NULL;
    cr_assert_eq(hs_backend_create(hs_backend_reg_name(reg), &p, &be), HS_OK);
    return be;
}

Test(buffers, alloc_set_get_zeroed_and_counted)
{
    for (int reg = 0; reg < hs_backend_reg_count(); reg++) {
        struct hs_backend *be = make_backend(reg);
        struct hs_backend_buffer *buf = NULL;
        cr_assert_eq(hs_backend_buffer_alloc(be, 1000, &buf), HS_OK);
        cr_assert_eq(hs_backend_buffer_size(buf), 1000);
        cr_assert_eq(hs_backend_buffer_backend(buf), be);
        cr_assert_eq((uintptr_t)hs_backend_buffer_base(buf) % HS_ALIGN_BYTES, 0);
        struct hs_backend_stats st;
        hs_backend_get_stats(be, &st);
        cr_assert_eq(st.buffer_bytes, 1000);

        unsigned char in[300], out[300];
        for (int i = 0; i < 300; i++) {
            in[i] = (unsigned char)(i * 7 + 3);
        }
        cr_assert_eq(hs_backend_buffer_get(buf, 700, out, 300), HS_OK);
        for (int i = 0; i < 300; i++) {
            cr_assert_eq(out[i], 0, "fresh buffers are zero-filled");
        }
        cr_assert_eq(hs_backend_buffer_set(buf, 700, in, 300), HS_OK);
        cr_assert_eq(hs_backend_buffer_get(buf, 700, out, 300), HS_OK);
        cr_assert_eq(memcmp(in, out, 300), 0);
        /* ranges past the end, and offsets that wrap */
        cr_assert_eq(hs_backend_buffer_set(buf, 701, in, 300), HS_E_RANGE);
        cr_assert_eq(hs_backend_buffer_get(buf, 1001, out, 0), HS_E_RANGE);
        cr_assert_eq(hs_backend_buffer_get(buf, SIZE_MAX, out, 2), HS_E_RANGE);
        cr_assert_eq(hs_backend_buffer_set(buf, 1000, in, 0), HS_OK);
        hs_backend_reset_stats(be);
        hs_backend_get_stats(be, &st);
        cr_assert_eq(st.buffer_bytes, 1000, "a reset keeps the gauge of memory held");
        hs_backend_buffer_free(buf);
        hs_backend_get_stats(be, &st);
        cr_assert_eq(st.buffer_bytes, 0);
        cr_assert_eq(hs_backend_buffer_alloc(be, 0, &buf), HS_E_INVAL);
        cr_assert_null(buf);
        hs_backend_destroy(be);
    }
}

Test(buffers, copy_between_two_backends_counts_bytes)
{
    struct hs_backend *a = make_backend(0);
    struct hs_backend *b = make_backend(0);
    struct hs_backend_buffer *ba = NULL, *bb = NULL;
    cr_assert_eq(hs_backend_buffer_alloc(a, 4096, &ba), HS_OK);
    cr_assert_eq(hs_backend_buffer_alloc(b, 4096, &bb), HS_OK);
    unsigned char in[1024], out[1024];
    for (int i = 0; i < 1024; i++) {
        in[i] = (unsigned char)(i ^ 0x5a);
    }
    cr_assert_eq(hs_backend_buffer_set(ba, 100, in, 1024), HS_OK);
    cr_assert_eq(hs_backend_buffer_copy(ba, 100, bb, 3000, 1024), HS_OK);
    cr_assert_eq(hs_backend_buffer_get(bb, 3000, out, 1024), HS_OK);
    cr_assert_eq(memcmp(in, out, 1024), 0);
    cr_assert_eq(hs_backend_buffer_copy(ba, 100, bb, 3100, 1024), HS_E_RANGE);
    struct hs_backend_stats sa, sb;
    hs_backend_get_stats(a, &sa);
    hs_backend_get_stats(b, &sb);
    cr_assert_eq(sa.bytes_copied_out, 1024);
    cr_assert_eq(sa.bytes_copied_in, 0);
    cr_assert_eq(sb.bytes_copied_in, 1024);
    /* within one backend: moved, not counted as traffic between backends */
    cr_assert_eq(hs_backend_buffer_copy(bb, 3000, bb, 3500, 500), HS_OK);
    cr_assert_eq(hs_backend_buffer_get(bb, 3500, out, 500), HS_OK);
    cr_assert_eq(memcmp(in, out, 500), 0);
    hs_backend_get_stats(b, &sb);
    cr_assert_eq(sb.bytes_copied_in, 1024);
    hs_backend_buffer_free(ba);
    hs_backend_buffer_free(bb);
    hs_backend_destroy(a);
    hs_backend_destroy(b);
}

#if HS_HAVE_HWLOC
struct where {
    int cpu[8];
};

static void record_cpu(void *ctx, int ith, int nth)
{
    (void)nth;
    struct where *w = ctx;
    w->cpu[ith] = sched_getcpu();
}

/* Two pinned pools of one thread each, with first cores 0 and 1, run their callers on two
 * different CPUs once bound (where the machine has two cores). */
Test(buffers, pinned_pools_take_disjoint_cores)
{
    if (hs__pool_physical_cores() < 2) {
        cr_skip_test("one core: nothing to keep apart");
    }
    struct hs_pool *p0 = NULL, *p1 = NULL;
    cr_assert_eq(hs__pool_create(1, true, 0, &p0), HS_OK);
    cr_assert_eq(hs__pool_create(1, true, 1, &p1), HS_OK);
    cpu_set_t before;
    cr_assert_eq(sched_getaffinity(0, sizeof(before), &before), 0);
    struct where w0 = {{-1}}, w1 = {{-1}};
    hs__pool_bind_caller(p0);
    hs__pool_run(p0, record_cpu, &w0);
    hs__pool_bind_caller(p1);
    hs__pool_run(p1, record_cpu, &w1);
    cr_assert_geq(w0.cpu[0], 0);
    cr_assert_geq(w1.cpu[0], 0);
    cr_assert_neq(w0.cpu[0], w1.cpu[0], "both pools' callers ran on CPU %d", w0.cpu[0]);
    cr_assert_eq(sched_setaffinity(0, sizeof(before), &before), 0);
    hs__pool_destroy(p0);
    hs__pool_destroy(p1);
}
#endif

/* ---- thread pool ---- */

struct pool_probe {
    atomic_int calls[4];
    atomic_int bad_nth;
};

static void pool_probe_fn(void *ctx, int ith, int nth)
{
    struct pool_probe *p = ctx;
    if (nth != 3 || ith < 0 || ith >= 3) {
        atomic_fetch_add(&p->bad_nth, 1);
        return;
    }
    atomic_fetch_add(&p->calls[ith], 1);
}

Test(backend_pool, every_thread_runs_once_per_dispatch_spinning_and_after_sleep)
{
    struct hs_pool *pool = NULL;
    cr_assert_eq(hs__pool_create(3, true, 0, &pool), HS_OK);
    cr_assert_eq(hs__pool_n_threads(pool), 3);
    struct pool_probe p = {0};
    for (int i = 0; i < 20000; i++) {
        hs__pool_run(pool, pool_probe_fn, &p);
        cr_assert_eq(atomic_load(&p.calls[1]), i + 1, "barrier: worker 1 done before return");
        cr_assert_eq(atomic_load(&p.calls[2]), i + 1);
        if (i % 5000 == 0) {
            usleep(2000); /* past the spin window: workers sleep on the futex */
        }
    }
    cr_assert_eq(atomic_load(&p.calls[0]), 20000);
    cr_assert_eq(atomic_load(&p.bad_nth), 0);
    hs__pool_destroy(pool);
    hs__pool_destroy(NULL);
}

/* Prefetch hints are advice: spans anywhere (none, unmapped, longer than memory) or for threads
 * that are not workers change nothing, and a hinted worker still takes every dispatch, spinning
 * and after sleeping. */
Test(backend_pool, hints_change_nothing_a_worker_does)
{
    struct hs_pool *pool = NULL;
    cr_assert_eq(hs__pool_create(3, false, 0, &pool), HS_OK);
    static char buf[1 << 16];
    const struct hs__pool_span spans[HS__POOL_HINT_SPANS] = {
        {buf, sizeof(buf)}, {NULL, 4096}, {(const void *)(uintptr_t)64, SIZE_MAX}, {buf, 0}};
    struct pool_probe p = {0};
    for (int i = 0; i < 20000; i++) {
        hs__pool_hint(pool, i % 4, spans + i % 3, HS__POOL_HINT_SPANS - i % 3);
        hs__pool_hint(pool, -1, spans, HS__POOL_HINT_SPANS);
        hs__pool_run(pool, pool_probe_fn, &p);
        cr_assert_eq(atomic_load(&p.calls[1]), i + 1);
        cr_assert_eq(atomic_load(&p.calls[2]), i + 1);
        if (i % 5000 == 0) {
            usleep(2000); /* past the spin window: workers sleep on the futex */
        }
    }
    cr_assert_eq(atomic_load(&p.bad_nth), 0);
    hs__pool_destroy(pool);
}

/* A dynamic task: chunks claimed from a counter, each chunk's cell incremented by whoever
 * claims it; a worker's late run would touch a later dispatch's cells or find the counter
 * exhausted. */
struct pool_dyn {
    atomic_int next;
    int n_chunks;
    atomic_int cells[64];
    atomic_int ran[4];
};

static void pool_dyn_fn(void *ctx, int ith, int nth)
{
    struct pool_dyn *d = ctx;
    (void)nth;
    atomic_fetch_add(&d->ran[ith], 1);
    for (int c; (c = atomic_fetch_add(&d->next, 1)) < d->n_chunks;) {
        atomic_fetch_add(&d->cells[c], 1);
    }
}

Test(backend_pool, dynamic_tasks_run_every_chunk_once_with_late_workers_cancelled)
{
    struct hs_pool *pool = NULL;
    cr_assert_eq(hs__pool_create(3, false, 0, &pool), HS_OK);
    int ran_workers = 0;
    for (int i = 0; i < 20000; i++) {
        struct pool_dyn d = {.n_chunks = 1 + i % 64};
        if (i % 5000 == 4999) {
            usleep(2000); /* workers asleep: the caller likely finishes alone */
        }
        hs__pool_run_dyn_named(pool, pool_dyn_fn, &d, "test");
        for (int c = 0; c < 64; c++) {
            cr_assert_eq(atomic_load(&d.cells[c]), c < d.n_chunks ? 1 : 0, "dispatch %d chunk %d",
                         i, c);
        }
        cr_assert_eq(atomic_load(&d.ran[0]), 1);
        /* d goes out of scope here: a cancelled worker must never run this dispatch later. */
        ran_workers += atomic_load(&d.ran[1]) + atomic_load(&d.ran[2]);
    }
    /* Interleaved with static dispatches, which always wait for every worker. */
    struct pool_probe p = {0};
    for (int i = 0; i < 1000; i++) {
        hs__pool_run(pool, pool_probe_fn, &p);
        cr_assert_eq(atomic_load(&p.calls[1]), i + 1);
        cr_assert_eq(atomic_load(&p.calls[2]), i + 1);
    }
    cr_assert_leq(ran_workers, 2 * 20000);
    hs__pool_destroy(pool);
}

/* hs__pool_chunks alone: a thread takes its own share in order, then what the others left from
 * the front of their shares, each chunk once; more threads than shares wrap around. */
Test(backend_pool, chunks_own_share_first_then_the_others_each_once)
{
    struct hs__pool_chunks c;
    hs__pool_chunks_init(&c, 10, 3); /* shares [0, 3) [3, 6) [6, 10) */
    const int64_t first[] = {0, 3, 6}, end[] = {3, 6, 10};
    for (int i = 0; i < 3; i++) {
        int64_t f, e;
        hs__pool_chunks_share(&c, i, &f, &e);
        cr_assert(f == first[i] && e == end[i], "share %d: [%lld, %lld)", i, (long long)f,
                  (long long)e);
    }
    const int64_t want[] = {3, 4, 5, 6, 7, 8, 9, 0, 1, 2};
    for (int i = 0; i < 10; i++) {
        cr_assert_eq(hs__pool_chunks_claim(&c, 1), want[i], "claim %d", i);
    }
    cr_assert_eq(hs__pool_chunks_claim(&c, 1), -1);
    cr_assert_eq(hs__pool_chunks_claim(&c, 0), -1);

    /* thread 0 takes 0 and 1; thread 2 then takes its share, then 2 (left in share 0) */
    hs__pool_chunks_init(&c, 7, 3); /* [0, 2) [2, 4) [4, 7) */
    cr_assert_eq(hs__pool_chunks_claim(&c, 0), 0);
    cr_assert_eq(hs__pool_chunks_claim(&c, 2), 4);
    cr_assert_eq(hs__pool_chunks_claim(&c, 0), 1);
    cr_assert_eq(hs__pool_chunks_claim(&c, 0), 2); /* share 0 done: share 1's front */
    const int64_t rest[] = {5, 6, 3};
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(hs__pool_chunks_claim(&c, 2), rest[i]);
    }
    cr_assert_eq(hs__pool_chunks_claim(&c, 1), -1);

    for (int nth = 1; nth <= 2 * HS__POOL_SHARES_MAX + 3; nth++) {
        for (int64_t n = 0; n <= 40; n++) {
            hs__pool_chunks_init(&c, n, nth);
            int seen[40] = {0};
            const int ith = nth - 1;
            for (int64_t k; (k = hs__pool_chunks_claim(&c, ith)) >= 0;) {
                cr_assert(k < n && seen[k] == 0, "nth %d n %lld chunk %lld", nth, (long long)n,
                          (long long)k);
                seen[k] = 1;
            }
            for (int64_t k = 0; k < n; k++) {
                cr_assert_eq(seen[k], 1, "nth %d n %lld chunk %lld", nth, (long long)n,
                             (long long)k);
            }
        }
    }
}

/* ... and in a dynamic task on a pool: every chunk once, whoever starts late. */
struct pool_chunks_task {
    struct hs__pool_chunks chunks;
    atomic_int cells[64];
};

static void pool_chunks_fn(void *ctx, int ith, int nth)
{
    struct pool_chunks_task *t = ctx;
    (void)nth;
    for (int64_t c; (c = hs__pool_chunks_claim(&t->chunks, ith)) >= 0;) {
        atomic_fetch_add(&t->cells[c], 1);
    }
}

Test(backend_pool, chunks_in_a_dynamic_task_each_run_once)
{
    struct hs_pool *pool = NULL;
    cr_assert_eq(hs__pool_create(3, false, 0, &pool), HS_OK);
    for (int i = 0; i < 20000; i++) {
        struct pool_chunks_task t = {0};
        const int n = i % 65;
        hs__pool_chunks_init(&t.chunks, n, 3);
        if (i % 5000 == 4999) {
            usleep(2000);
        }
        hs__pool_run_dyn_named(pool, pool_chunks_fn, &t, "test");
        for (int c = 0; c < 64; c++) {
            cr_assert_eq(atomic_load(&t.cells[c]), c < n ? 1 : 0, "dispatch %d chunk %d", i, c);
        }
    }
    hs__pool_destroy(pool);
}

/* hs_backend_run_tasks: each task exactly once, and shared among the backend's threads (task 0
 * holds its thread until another thread has run a task, which only a second thread can do). */
struct tasks_probe {
    _Atomic int runs[64];
    _Atomic int other_thread_ran; /* a task ran on a thread other than the caller's */
    pthread_t caller;
    bool wait_for_other;
};

static void probe_task(void *ctx, int32_t i)
{
    struct tasks_probe *p = ctx;
    atomic_fetch_add(&p->runs[i], 1);
    if (!pthread_equal(pthread_self(), p->caller)) {
        atomic_store(&p->other_thread_ran, 1);
    }
    if (i == 0 && p->wait_for_other) {
        for (int k = 0; k < 20000 && !atomic_load(&p->other_thread_ran); k++) {
            usleep(500); /* at most 10 s: a loaded machine may be slow to wake the workers */
        }
    }
}

Test(backend_tasks, run_each_task_once_spread_over_the_backends_threads)
{
    for (int reg = 0; reg < hs_backend_reg_count(); reg++) {
        struct hs_backend_params bp = hs_backend_default_params();
        bp.n_threads = 3;
        bp.pin_threads = false;
        struct hs_backend *be = NULL;
        cr_assert_eq(hs_backend_create(hs_backend_reg_name(reg), &bp, &be), HS_OK);
        for (int rep = 0; rep < 3; rep++) {
            struct tasks_probe p = {.caller = pthread_self(), .wait_for_other = true};
            hs_backend_run_tasks(be, 64, probe_task, &p);
            for (int i = 0; i < 64; i++) {
                cr_assert_eq(atomic_load(&p.runs[i]), 1, "%s: task %d ran %d times",
                             hs_backend_reg_name(reg), i, atomic_load(&p.runs[i]));
            }
            cr_assert(atomic_load(&p.other_thread_ran), "%s: every task ran on the caller",
                      hs_backend_reg_name(reg));
        }
        /* one task, or none: on the caller */
        struct tasks_probe one = {.caller = pthread_self()};
        hs_backend_run_tasks(be, 1, probe_task, &one);
        cr_assert_eq(atomic_load(&one.runs[0]), 1);
        cr_assert_eq(atomic_load(&one.other_thread_ran), 0);
        hs_backend_run_tasks(be, 0, probe_task, &one);
        cr_assert_eq(atomic_load(&one.runs[0]), 1);
        hs_backend_destroy(be);
    }
    /* no backend: the caller runs them in order */
    struct tasks_probe none = {.caller = pthread_self()};
    hs_backend_run_tasks(NULL, 5, probe_task, &none);
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(atomic_load(&none.runs[i]), 1);
    }
    cr_assert_eq(atomic_load(&none.other_thread_ran), 0);
}
