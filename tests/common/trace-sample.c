/* Writes a small trace of every event kind from two threads to argv[1], for the schema check
 * (check-trace-schema.py --write-with). Exit status 0 when hs_trace_close succeeded. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>

#include "common/common.h"
#include "common/trace.h"

struct writer {
    struct hs_trace *trace;
    int32_t tid;
    const char *track;
};

static void *writer_main(void *arg)
{
    const struct writer *w = arg;
    hs_trace_name_thread(w->trace, 1, w->tid, w->track);
    for (int i = 0; i < 200; i++) {
        char layers[32];
        snprintf(layers, sizeof(layers), "%d-%d", i % 30, i % 30 + 1);
        double t0 = hs_trace_now_us(w->trace);
        struct hs_trace_arg args[] = {
            HS_TRACE_STR("layers", layers),
            HS_TRACE_STR("sub_batch", i % 2 ? "B" : "A"),
            HS_TRACE_INT("n_seqs", 8 + i % 4),
            HS_TRACE_DBL("sim_us", 12.5 * i),
            HS_TRACE_STR("note", "q\"uote \\ nl\n ctl\x01 caf\xc3\xa9 bad\xff"),
            HS_TRACE_DBL("maybe_nan", i % 2 ? NAN : 1.0 / (i + 1)), /* NaN: null */
        };
        hs_trace_complete(w->trace, 1, w->tid, w->tid == 10 ? "ffn" : "attention", "step", t0,
                          hs_trace_now_us(w->trace) - t0, args, HS_ARRAY_LEN(args));
        if (i % 20 == 0) {
            struct hs_trace_arg v[] = {HS_TRACE_INT("held", 400 + i), HS_TRACE_DBL("frac", 0.25)};
            hs_trace_counter(w->trace, 1, "kv_blocks", hs_trace_now_us(w->trace), v, 2);
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUT.json\n", argv[0]);
        return 2;
    }
    struct hs_error err;
    struct hs_trace *tr = NULL;
    if (hs_trace_open(argv[1], &tr, &err) != HS_OK) {
        fprintf(stderr, "%s\n", err.message);
        return 1;
    }
    hs_trace_name_process(tr, 1, "hetserve");
    struct writer w[2] = {{tr, 10, "cpu (ffn)"}, {tr, 11, "cpu:1 (attention)"}};
    pthread_t th[2];
    int n_started = 0;
    for (int k = 0; k < 2; k++) {
        if (pthread_create(&th[k], NULL, writer_main, &w[k]) != 0) {
            break;
        }
        n_started++;
    }
    for (int k = 0; k < n_started; k++) {
        pthread_join(th[k], NULL);
    }
    hs_status st = hs_trace_close(tr);
    if (st != HS_OK || n_started != 2) {
        fprintf(stderr, "trace-sample: %s\n", hs_status_str(st));
        return 1;
    }
    return 0;
}
