/* Chrome trace-event writer: engine steps as a JSON file that Perfetto (ui.perfetto.dev) and
 * chrome://tracing open, one track per backend and stage.
 *
 * Usage (the engine behind --trace FILE.json; every call is a no-op on a NULL trace, so the engine
 * calls them unconditionally):
 *
 *     struct hs_trace *tr = NULL;
 *     HS_TRY(hs_trace_open(path, &tr, err));
 *     hs_trace_name_process(tr, 1, "hetserve");
 *     hs_trace_name_thread(tr, 1, 10, "cpu (ffn)");
 *     hs_trace_name_thread(tr, 1, 11, "cpu:1 (attention)");
 *     double t0 = hs_trace_now_us(tr);
 *     ... run layers 0-29 of sub-batch A on the attention backend ...
 *     struct hs_trace_arg a[] = {HS_TRACE_STR("layers", "0-29"), HS_TRACE_STR("sub_batch", "A"),
 *                                HS_TRACE_INT("n_seqs", 8), HS_TRACE_DBL("sim_us", 12.5)};
 *     hs_trace_complete(tr, 1, 11, "attention", "step", t0, hs_trace_now_us(tr) - t0, a, 4);
 *     hs_trace_counter(tr, 1, "kv_blocks", hs_trace_now_us(tr), &HS_TRACE_INT("held", 412), 1);
 *     hs_trace_flush(tr);                                  // end of step
 *     hs_status st = hs_trace_close(tr);                   // HS_E_IO: the file is incomplete
 *
 * File format: the JSON Array Format, `[` then events separated by `,\n`; close appends `\n]\n`,
 * so a closed trace is valid JSON. Why not the object form ({"traceEvents":[...], ...}): a process
 * that crashes or is killed leaves `[ev,\nev,\n...` without the closing bracket, and only the array
 * form survives that: Perfetto accepts an unterminated array (and rejects an unterminated object
 * as "JSON trace file is incomplete"), and chrome://tracing appends the missing `]` itself. What
 * the object form would add is not needed: displayTimeUnit's default is already "ms", and
 * otherData is not shown. Each event starts with "ph" and "ts" so that Perfetto's older
 * tokenizers, which scan for "ts" with a reader that knows no \u escapes, never meet one first.
 *
 * Events: complete ("ph":"X": name, cat, pid, tid, ts, dur, args), metadata ("ph":"M":
 * process_name / thread_name, which turn (pid, tid) pairs into named tracks) and counters
 * ("ph":"C": one numeric series per arg, e.g. KV blocks held). Times are microseconds as doubles,
 * written with 3 decimals (ns); use hs_trace_now_us for real times and any timeline of your own
 * (simulated time) for others. Strings are JSON-escaped (quotes, backslashes, control characters
 * and DEL as escapes; valid UTF-8 passes through; each invalid byte becomes U+FFFD) and cut at a
 * character boundary after HS_TRACE_STR_MAX_BYTES input bytes (HS_TRACE_KEY_MAX_BYTES for arg
 * keys).
 *
 * Threads and buffering: any thread may write events to one trace at the same time (the engine
 * thread and an attention-backend driver do). An event is formatted into a stack buffer outside
 * any lock (no malloc), then copied whole into one per-trace buffer under a mutex, so events never
 * interleave; when that buffer passes HS_TRACE_BUFFER_BYTES it is written out under the same
 * mutex (one write of 64 KiB into the page cache every few hundred events, ~10 us; an event costs
 * ~0.5 us all told with two threads writing flat out on a busy 2-core machine). Per-thread
 * buffers would avoid that short wait but need per-thread registration, lose more on a crash and
 * scatter each thread's events in chunks; two writer threads do not need them. Events reach the
 * file when the buffer fills, at hs_trace_flush and at hs_trace_close; a crash loses what was
 * still buffered.
 *
 * Errors: a failed write (disk full) is not reported per event: it is remembered, later events
 * are dropped, one warning is logged, and hs_trace_close returns HS_E_IO. Nothing here aborts
 * except HS_ASSERT on a caller bug (NULL name, too many args, a string counter). */
#ifndef HS_COMMON_TRACE_H
#define HS_COMMON_TRACE_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/status.h"

#define HS_TRACE_STR_MAX_BYTES 128   /* name, cat, string arg values: input bytes kept */
#define HS_TRACE_KEY_MAX_BYTES 32    /* arg keys: input bytes kept */
#define HS_TRACE_MAX_ARGS      8     /* args per event */
#define HS_TRACE_BUFFER_BYTES  65536 /* pending bytes that trigger a write */

struct hs_trace;

enum hs_trace_arg_type {
    HS_TRACE_ARG_STR,
    HS_TRACE_ARG_INT,
    HS_TRACE_ARG_DOUBLE,
    HS_TRACE_ARG_COUNT,
};

/* One typed key/value of an event's "args" object. Keys and strings are borrowed for the call. */
struct hs_trace_arg {
    const char *key;
    enum hs_trace_arg_type type;
    union {
        const char *s; /* HS_TRACE_ARG_STR; NULL is written as "" */
        int64_t i;     /* HS_TRACE_ARG_INT */
        double d;      /* HS_TRACE_ARG_DOUBLE; NaN and infinities are written as null */
    };
};

#define HS_TRACE_STR(k, v) ((struct hs_trace_arg){.key = (k), .type = HS_TRACE_ARG_STR, .s = (v)})
#define HS_TRACE_INT(k, v) ((struct hs_trace_arg){.key = (k), .type = HS_TRACE_ARG_INT, .i = (v)})
#define HS_TRACE_DBL(k, v)                                                                         \
    ((struct hs_trace_arg){.key = (k), .type = HS_TRACE_ARG_DOUBLE, .d = (v)})

/* Static name ("str", "int", "double"; "?" out of range). Thread: any. */
const char *hs_trace_arg_type_str(enum hs_trace_arg_type type);

/* Creates or truncates path (mode 0644) and writes the opening `[`. Errors: HS_E_NOENT (a
 * directory on the path does not exist), HS_E_IO (cannot create or write it: err says why),
 * HS_E_NOMEM. *out stays NULL on error and nothing is left allocated; a file that was created
 * stays. Returns new (close with hs_trace_close). Thread: any. */
hs_status hs_trace_open(const char *path, struct hs_trace **out, struct hs_error *err);

/* Writes what is buffered and the closing `]`, closes the file and frees the trace, also on
 * error. Returns HS_OK, or HS_E_IO when any write (or the close) failed: the file then lacks
 * the events after the failure and may lack its `]`. NULL: no-op, HS_OK. Thread: any, once no
 * other thread uses the trace. */
hs_status hs_trace_close(struct hs_trace *trace);

/* Writes what is buffered now (e.g. at the end of each engine step) so that a crash loses only
 * later events. Returns HS_OK, or HS_E_IO once a write has failed (sticky). NULL: HS_OK.
 * Thread: any. */
hs_status hs_trace_flush(struct hs_trace *trace);

/* Microseconds on CLOCK_MONOTONIC since hs_trace_open (fractional: ns resolution), the
 * timeline of the trace's real times. NULL: 0, without reading the clock. Thread: any. */
double hs_trace_now_us(const struct hs_trace *trace);

/* A complete event ("ph":"X") on track (pid, tid): name (required) and cat (NULL: omitted), start
 * ts_us and duration dur_us (negative durations are written as 0; an event whose ts_us or dur_us
 * is not finite or beyond 1e15 us is dropped), and n_args args (0..HS_TRACE_MAX_ARGS; args may
 * be NULL when n_args is 0). Borrows everything for the call. Thread: any. */
void hs_trace_complete(struct hs_trace *trace, int32_t pid, int32_t tid, const char *name,
                       const char *cat, double ts_us, double dur_us,
                       const struct hs_trace_arg *args, size_t n_args);

/* Metadata ("ph":"M") naming process pid ("process_name") or thread (pid, tid) ("thread_name");
 * tracks are shown under these names. Write them once, before or after the track's events.
 * Thread: any. */
void hs_trace_name_process(struct hs_trace *trace, int32_t pid, const char *name);
void hs_trace_name_thread(struct hs_trace *trace, int32_t pid, int32_t tid, const char *name);

/* A counter sample ("ph":"C") of process pid at ts_us: one series per value (1..HS_TRACE_MAX_ARGS,
 * each HS_TRACE_ARG_INT or HS_TRACE_ARG_DOUBLE), shown as the track "name key". A sample with a
 * non-finite ts or value is dropped. Borrows everything for the call. Thread: any. */
void hs_trace_counter(struct hs_trace *trace, int32_t pid, const char *name, double ts_us,
                      const struct hs_trace_arg *values, size_t n_values);

#endif
