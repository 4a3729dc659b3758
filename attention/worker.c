/* The attention backend's driver thread: one job in flight, posted and awaited by the engine
 * thread (see attention.h). Two generation counters carry the hand-off; each side spins for a
 * short while before sleeping on the condition variable, so a layer's two hand-offs cost
 * microseconds when both threads have cores of their own, and nothing when the worker idles. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "attention/attention.h"

/* How long a waiting side spins before it sleeps. */
#define HS__WORKER_SPIN_NS 50000

struct hs_attn_worker {
    struct hs_backend *be;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    _Atomic uint64_t posted; /* jobs posted (engine writes) */
    _Atomic uint64_t done;   /* jobs finished (worker writes) */
    atomic_bool stop;
    hs_attn_job_fn fn; /* published before posted is bumped */
    void *arg;
    hs_status result; /* published before done is bumped */
    _Atomic uint64_t busy_ns;
};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Waits until *word reaches want (or stop is set, for the worker): spin, then sleep. */
static void wait_for(struct hs_attn_worker *w, _Atomic uint64_t *word, uint64_t want,
                     bool stoppable)
{
    const int64_t t0 = now_ns();
    for (unsigned i = 0;; i++) {
        if (atomic_load_explicit(word, memory_order_acquire) >= want ||
            (stoppable && atomic_load(&w->stop))) {
            return;
        }
        if ((i & 255) == 255) {
            if (now_ns() - t0 > HS__WORKER_SPIN_NS) {
                break;
            }
            sched_yield(); /* an oversubscribed machine may need our core for the other side */
        }
    }
    pthread_mutex_lock(&w->mu);
    while (atomic_load_explicit(word, memory_order_acquire) < want &&
           !(stoppable && atomic_load(&w->stop))) {
        pthread_cond_wait(&w->cv, &w->mu);
    }
    pthread_mutex_unlock(&w->mu);
}

static void bump(struct hs_attn_worker *w, _Atomic uint64_t *word)
{
    pthread_mutex_lock(&w->mu);
    atomic_fetch_add_explicit(word, 1, memory_order_release);
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void *worker_main(void *arg)
{
    struct hs_attn_worker *w = arg;
    hs_backend_bind_caller(w->be);
    for (uint64_t next = 1;; next++) {
        wait_for(w, &w->posted, next, true);
        if (atomic_load_explicit(&w->posted, memory_order_acquire) < next) {
            break; /* stopped with nothing posted */
        }
        const int64_t t0 = now_ns();
        w->result = w->fn(w->arg);
        atomic_fetch_add_explicit(&w->busy_ns, (uint64_t)(now_ns() - t0), memory_order_relaxed);
        bump(w, &w->done);
    }
    return NULL;
}

hs_status hs_attn_worker_create(struct hs_backend *be, struct hs_attn_worker **out)
{
    *out = NULL;
    struct hs_attn_worker *w = calloc(1, sizeof(*w));
    if (!w) {
        return HS_E_NOMEM;
    }
    w->be = be;
    atomic_init(&w->posted, 0);
    atomic_init(&w->done, 0);
    atomic_init(&w->stop, false);
    atomic_init(&w->busy_ns, 0);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
        pthread_mutex_destroy(&w->mu);
        pthread_cond_destroy(&w->cv);
        free(w);
        return HS_E_INTERNAL;
    }
    *out = w;
    return HS_OK;
}

void hs_attn_worker_destroy(struct hs_attn_worker *w)
{
    if (!w) {
        return;
    }
    (void)hs_attn_worker_wait(w);
    pthread_mutex_lock(&w->mu);
    atomic_store(&w->stop, true);
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
}

void hs_attn_worker_post(struct hs_attn_worker *w, hs_attn_job_fn fn, void *arg)
{
    HS_ASSERT(atomic_load(&w->done) == atomic_load(&w->posted)); /* one job at a time */
    w->fn = fn;
    w->arg = arg;
    bump(w, &w->posted);
}

hs_status hs_attn_worker_wait(struct hs_attn_worker *w)
{
    const uint64_t want = atomic_load_explicit(&w->posted, memory_order_relaxed);
    if (atomic_load_explicit(&w->done, memory_order_acquire) >= want) {
        return want == 0 ? HS_OK : w->result;
    }
    wait_for(w, &w->done, want, false);
    return w->result;
}

double hs_attn_worker_busy_s(const struct hs_attn_worker *w)
{
    return w ? (double)atomic_load_explicit(&w->busy_ns, memory_order_relaxed) * 1e-9 : 0.0;
}
