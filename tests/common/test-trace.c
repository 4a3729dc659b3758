#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "common/common.h"
#include "common/trace.h"

#if defined(__SANITIZE_ADDRESS__)
#define HAVE_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HAVE_LSAN 1
#endif
#endif
#ifdef HAVE_LSAN
#include <sanitizer/lsan_interface.h>
#endif

/* LeakSanitizer's report at exit goes unnoticed: Criterion ignores a worker's exit status once its
 * test has passed. So each test of this suite runs a leak check when it ends, and aborts on a leak:
 * Criterion counts an assert in .fini as nothing, but a crash in teardown fails the run. */
static void check_leaks(void)
{
#ifdef HAVE_LSAN
    if (__lsan_do_recoverable_leak_check() != 0) {
        abort();
    }
#endif
}

TestSuite(trace, .fini = check_leaks);

/* ---- helpers ---- */

struct tmp_trace {
    char dir[64];
    char path[96];
};

static void tmp_trace_init(struct tmp_trace *tt)
{
    snprintf(tt->dir, sizeof(tt->dir), "/tmp/hs-trace-XXXXXX");
    cr_assert_not_null(mkdtemp(tt->dir));
    snprintf(tt->path, sizeof(tt->path), "%s/trace.json", tt->dir);
}

static void tmp_trace_finish(struct tmp_trace *tt)
{
    unlink(tt->path);
    rmdir(tt->dir);
}

/* The whole closed file as a JSON array (jansson rejects invalid UTF-8 and bad escapes). */
static json_t *load_events(const char *path)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    cr_assert_not_null(root, "%s:%d: %s", path, jerr.line, jerr.text);
    cr_assert(json_is_array(root), "the trace is a JSON array");
    return root;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 2);
    cr_assert_not_null(s);
    cr_assert_eq(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return s;
}

static const char *str_field(json_t *ev, const char *key)
{
    json_t *v = json_object_get(ev, key);
    cr_assert(json_is_string(v), "\"%s\" is a string", key);
    return json_string_value(v);
}

/* The fields the trace-event format requires for each phase, with their JSON types. */
static void check_event_shape(json_t *ev)
{
    cr_assert(json_is_object(ev));
    const char *ph = str_field(ev, "ph");
    cr_assert(json_is_integer(json_object_get(ev, "pid")));
    cr_assert(json_is_number(json_object_get(ev, "ts")));
    json_t *args = json_object_get(ev, "args");
    if (strcmp(ph, "X") == 0) {
        str_field(ev, "name");
        cr_assert(json_is_integer(json_object_get(ev, "tid")));
        json_t *dur = json_object_get(ev, "dur");
        cr_assert(json_is_number(dur));
        cr_assert_geq(json_number_value(dur), 0.0);
        cr_assert(!json_object_get(ev, "cat") || json_is_string(json_object_get(ev, "cat")));
        cr_assert(!args || json_is_object(args));
    } else if (strcmp(ph, "M") == 0) {
        const char *name = str_field(ev, "name");
        cr_assert(strcmp(name, "process_name") == 0 || strcmp(name, "thread_name") == 0);
        if (strcmp(name, "thread_name") == 0) {
            cr_assert(json_is_integer(json_object_get(ev, "tid")));
        }
        cr_assert(json_is_object(args));
        str_field(args, "name");
    } else if (strcmp(ph, "C") == 0) {
        str_field(ev, "name");
        cr_assert(json_is_object(args) && json_object_size(args) > 0);
        const char *k;
        json_t *v;
        json_object_foreach(args, k, v)
        {
            cr_assert(json_is_number(v), "counter series %s is a number", k);
        }
    } else {
        cr_assert_fail("unexpected ph %s", ph);
    }
}

/* ---- two writer threads ---- */

#define N_EVENTS 3000 /* per thread: several 64 KiB buffers, so flushes race with appends */

/* The label of event i: quotes, backslashes, control characters and UTF-8, varying with i. */
static void make_label(char *buf, size_t size, int tid, int i)
{
    static const char *const pieces[] = {
        "plain",           "q\"uote",
        "back\\slash",     "nl\nand\ttab",
        "ctl\x01\x1f\x7f", "caf\xc3\xa9 \xf0\x9f\x98\x80 \xe4\xb8\xad",
        "</script>",       "a/b",
    };
    snprintf(buf, size, "t%d-%d %s", tid, i, pieces[i % (int)HS_ARRAY_LEN(pieces)]);
}

struct writer {
    struct hs_trace *trace;
    int tid;
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    char name[32];
    snprintf(name, sizeof(name), "cpu:%d (%s)", w->tid, w->tid == 1 ? "ffn" : "attention");
    hs_trace_name_thread(w->trace, 1, w->tid, name);
    for (int i = 0; i < N_EVENTS; i++) {
        char label[96];
        make_label(label, sizeof(label), w->tid, i);
        double t0 = hs_trace_now_us(w->trace);
        struct hs_trace_arg args[] = {
            HS_TRACE_INT("i", i),
            HS_TRACE_STR("label", label),
            HS_TRACE_STR("sub_batch", i % 2 ? "B" : "A"),
            HS_TRACE_DBL("sim_us", 0.5 * i),
        };
        hs_trace_complete(w->trace, 1, w->tid, w->tid == 1 ? "ffn" : "attention", "layer", t0,
                          hs_trace_now_us(w->trace) - t0, args, HS_ARRAY_LEN(args));
        if (i % 100 == 0) {
            hs_trace_counter(w->trace, 1, "kv_blocks", hs_trace_now_us(w->trace),
                             &HS_TRACE_INT("held", i), 1);
        }
    }
    return NULL;
}

Test(trace, two_threads_write_whole_events_in_order)
{
    struct tmp_trace tt;
    tmp_trace_init(&tt);
    struct hs_trace *tr = NULL;
    cr_assert_eq(hs_trace_open(tt.path, &tr, NULL), HS_OK);
    hs_trace_name_process(tr, 1, "hetserve");

    struct writer w[2] = {{tr, 1}, {tr, 2}};
    pthread_t th[2];
    for (int k = 0; k < 2; k++) {
        cr_assert_eq(pthread_create(&th[k], NULL, writer_main, &w[k]), 0);
    }
    for (int k = 0; k < 2; k++) {
        pthread_join(th[k], NULL);
    }
    cr_assert_eq(hs_trace_close(tr), HS_OK);

    json_t *root = load_events(tt.path);
    int n_x[3] = {0}, n_threads_named = 0, n_process_named = 0, n_counters = 0;
    double last_ts[3] = {-1.0, -1.0, -1.0};
    size_t i;
    json_t *ev;
    json_array_foreach(root, i, ev)
    {
        check_event_shape(ev);
        const char *ph = str_field(ev, "ph");
        if (strcmp(ph, "C") == 0) {
            n_counters++;
            continue;
        }
        if (strcmp(ph, "M") == 0) {
            if (strcmp(str_field(ev, "name"), "process_name") == 0) {
                cr_assert_str_eq(str_field(json_object_get(ev, "args"), "name"), "hetserve");
                n_process_named++;
            } else {
                n_threads_named++;
            }
            continue;
        }
        int tid = (int)json_integer_value(json_object_get(ev, "tid"));
        cr_assert(tid == 1 || tid == 2);
        double ts = json_number_value(json_object_get(ev, "ts"));
        cr_assert_geq(ts, last_ts[tid], "ts monotonic per thread");
        last_ts[tid] = ts;
        json_t *args = json_object_get(ev, "args");
        cr_assert_eq(json_integer_value(json_object_get(args, "i")), n_x[tid],
                     "each thread's events arrive whole and in order");
        char label[96];
        make_label(label, sizeof(label), tid, n_x[tid]);
        cr_assert_str_eq(str_field(args, "label"), label, "escapes round-trip");
        cr_assert_float_eq(json_number_value(json_object_get(args, "sim_us")), 0.5 * n_x[tid],
                           1e-9);
        cr_assert_str_eq(str_field(ev, "cat"), "layer");
        n_x[tid]++;
    }
    cr_assert_eq(n_x[1], N_EVENTS);
    cr_assert_eq(n_x[2], N_EVENTS);
    cr_assert_eq(n_threads_named, 2);
    cr_assert_eq(n_process_named, 1);
    cr_assert_eq(n_counters, 2 * N_EVENTS / 100);
    json_decref(root);
    tmp_trace_finish(&tt);
}

/* ---- strings and numbers ---- */

/* Writes one X event named name with one string arg and returns the parsed file. */
static json_t *one_event(struct tmp_trace *tt, const char *name, const char *key, const char *value)
{
    struct hs_trace *tr = NULL;
    cr_assert_eq(hs_trace_open(tt->path, &tr, NULL), HS_OK);
    hs_trace_complete(tr, 1, 1, name, NULL, 1.0, 2.0, &HS_TRACE_STR(key, value), 1);
    cr_assert_eq(hs_trace_close(tr), HS_OK);
    json_t *root = load_events(tt->path);
    cr_assert_eq(json_array_size(root), 1);
    return root;
}

Test(trace, strings_escape_and_round_trip)
{
    struct tmp_trace tt;
    tmp_trace_init(&tt);
    char ctl[40];
    size_t n = 0;
    for (int c = 1; c < 0x20; c++) {
        ctl[n++] = (char)c;
    }
    ctl[n++] = 0x7f;
    ctl[n] = '\0';
    const char *cases[] = {
        "",
        "\"",
        "\\",
        "\\\"",
        "a\"b\\c/d",
        ctl,
        "caf\xc3\xa9 \xf0\x9f\x98\x80 \xe4\xb8\xad",
        "\xef\xbf\xbf \xf4\x8f\xbf\xbf", /* U+FFFF and U+10FFFF are valid */
    };
    for (size_t k = 0; k < HS_ARRAY_LEN(cases); k++) {
        json_t *root = one_event(&tt, cases[k], "k\"ey", cases[k]);
        json_t *ev = json_array_get(root, 0);
        cr_assert_str_eq(str_field(ev, "name"), cases[k], "case %zu", k);
        cr_assert_str_eq(str_field(json_object_get(ev, "args"), "k\"ey"), cases[k]);
        json_decref(root);
    }
    /* The raw file holds escapes, never a raw control byte. */
    struct hs_trace *tr = NULL;
    cr_assert_eq(hs_trace_open(tt.path, &tr, NULL), HS_OK);
    hs_trace_name_thread(tr, 1, 2, ctl);
    cr_assert_eq(hs_trace_close(tr), HS_OK);
    size_t len;
    char *raw = read_file(tt.path, &len);
    for (size_t k = 0; k < len; k++) {
        cr_assert((unsigned char)raw[k] >= 0x20 || raw[k] == '\n', "byte %zu is raw", k);
        cr_assert_neq(raw[k], 0x7f);
    }
    cr_assert_not_null(strstr(raw, "\\u0001\\u0002"));
    cr_assert_not_null(strstr(raw, "\\b\\t\\n\\u000b\\f\\r"));
    free(raw);
    tmp_trace_finish(&tt);
}

Test(trace, invalid_utf8_becomes_replacement_characters)
{
    struct tmp_trace tt;
    tmp_trace_init(&tt);
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"a\xff-z", "a\xef\xbf\xbd-z"},                                           /* never valid */
        {"a\xc3", "a\xef\xbf\xbd"},                                               /* cut short */
        {"\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"},                                 /* overlong '/' */
        {"\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},                 /* surrogate */
        {"\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* > U+10FFFF */
        {"\xe4\xb8-x", "\xef\xbf\xbd\xef\xbf\xbd-x"}, /* 3-byte cut short */
    };
    for (size_t k = 0; k < HS_ARRAY_LEN(cases); k++) {
        json_t *root = one_event(&tt, cases[k].in, "s", cases[k].in);
        json_t *ev = json_array_get(root, 0);
        cr_assert_str_eq(str_field(ev, "name"), cases[k].out, "case %zu", k);
        cr_assert_str_eq(str_field(json_object_get(ev, "args"), "s"), cases[k].out);
        json_decref(root);
    }
    tmp_trace_finish(&tt);
}

Test(trace, long_strings_are_cut_at_a_character_boundary)
{
    struct tmp_trace tt;
    tmp_trace_init(&tt);
    char lng[HS_TRACE_STR_MAX_BYTES + 64], want[HS_TRACE_STR_MAX_BYTES + 1];
    memset(lng, 'x', sizeof(lng) - 1);
    lng[sizeof(lng) - 1] = '\0';
    memset(want, 'x', HS_TRACE_STR_MAX_BYTES);
    want[HS_TRACE_STR_MAX_BYTES] = '\0';
    char key[HS_TRACE_KEY_MAX_BYTES + 10], want_key[HS_TRACE_KEY_MAX_BYTES + 1];
    memset(key, 'k', sizeof(key) - 1);
    key[sizeof(key) - 1] = '\0';
    memset(want_key, 'k', HS_TRACE_KEY_MAX_BYTES);
    want_key[HS_TRACE_KEY_MAX_BYTES] = '\0';

    json_t *root = one_event(&tt, lng, key, lng);
    json_t *ev = json_array_get(root, 0);
    cr_assert_str_eq(str_field(ev, "name"), want);
    cr_assert_str_eq(str_field(json_object_get(ev, "args"), want_key), want);
    json_decref(root);

    /* 127 'x' then a 2-byte character that would end past the cap: dropped whole. */
    memcpy(lng + HS_TRACE_STR_MAX_BYTES - 1, "\xc3\xa9", 3);
    root = one_event(&tt, lng, "s", lng);
    want[HS_TRACE_STR_MAX_BYTES - 1] = '\0';
    cr_assert_str_eq(str_field(json_array_get(root, 0), "name"), want);
    json_decref(root);

    /* The worst case: every byte of every string escaped to \u00XX, all args strings. */
    char ctl[HS_TRACE_STR_MAX_BYTES + 1];
    memset(ctl, 0x01, sizeof(ctl) - 1);
    ctl[sizeof(ctl) - 1] = '\0';
    char kctl[HS_TRACE_KEY_MAX_BYTES + 1];
    struct hs_trace_arg args[HS_TRACE_MAX_ARGS];
    char keys[HS_TRACE_MAX_ARGS][HS_TRACE_KEY_MAX_BYTES + 1];
    memset(kctl, 0x02, sizeof(kctl) - 1);
    kctl[sizeof(kctl) - 1] = '\0';
    for (int a = 0; a < HS_TRACE_MAX_ARGS; a++) {
        memcpy(keys[a], kctl, sizeof(kctl));
        keys[a][0] = (char)('a' + a); /* distinct keys */
        args[a] = HS_TRACE_STR(keys[a], ctl);
    }
    struct hs_trace *tr = NULL;
    cr_assert_eq(hs_trace_open(tt.path, &tr, NULL), HS_OK);
    hs_trace_complete(tr, -1, INT32_MIN, ctl, ctl, -1e15, 1e15, args, HS_TRACE_MAX_ARGS);
    cr_assert_eq(hs_trace_close(tr), HS_OK);
    root = load_events(tt.path);
    ev = json_array_get(root, 0);
    cr_assert_str_eq(str_field(ev, "cat"), ctl);
    cr_assert_eq(json_object_size(json_object_get(ev, "args")), HS_TRACE_MAX_ARGS);
    cr_assert_eq(json_integer_value(json_object_get(ev, "tid")), INT32_MIN);
    json_decref(root);
    tmp_trace_finish(&tt);
}

Test(trace, numbers_are_valid_json_and_bad_times_are_dropped)
{
    struct tmp_trace tt;
    tmp_trace_init(&tt);
    struct hs_trace *tr = NULL;
    cr_assert_eq(hs_trace_open(tt.path, &tr, NULL), HS_OK);
    struct hs_trace_arg args[] = {
        HS_TRACE_INT("min", INT64_MIN), HS_TRACE_INT("max", INT64_MAX),
        HS_TRACE_DBL("nan", NAN),       HS_TRACE_DBL("inf", -INFINITY),
        HS_TRACE_DBL("big", 1e300),     HS_TRACE_DBL("tiny", 1.5e-300),
        HS_TRACE_DBL("third", 1.0 / 3), HS_TRACE_DBL("whole", -12.0),
    };
    hs_trace_complete(tr, 7, 8, "n", "c", 12.3456, -5.0, args, HS_ARRAY_LEN(args));
    hs_trace_complete(tr, 7, 8, "dropped", NULL, NAN, 1.0, NULL, 0);
    hs_trace_complete(tr, 7, 8, "dropped", NULL, 1.0, INFINITY, NULL, 0);
    hs_trace_complete(tr, 7, 8, "dropped", NULL, 2e15, 1.0, NULL, 0);
    hs_trace_counter(tr, 7, "dropped", 1.0, &HS_TRACE_DBL("v", NAN), 1);
    hs_trace_counter(tr, 7, "ctr", -0.0004,
                     (struct hs_trace_arg[]){HS_TRACE_DBL("a", 2.5), HS_TRACE_INT("b", -3)}, 2);
    hs_trace_complete(tr, 7, 8, "no args", NULL, 0.0, 0.0, NULL, 0);
    hs_trace_complete(tr, 7, 8, "null string", NULL, 0.0, 0.0, &HS_TRACE_STR("null", NULL), 1);
    cr_assert_eq(hs_trace_close(tr), HS_OK);

    json_t *root = load_events(tt.path);
    cr_assert_eq(json_array_size(root), 4, "non-finite or huge times are dropped");
    json_t *ev = json_array_get(root, 0);
    check_event_shape(ev);
    cr_assert_float_eq(json_number_value(json_object_get(ev, "ts")), 12.346, 1e-12);
    cr_assert_float_eq(json_number_value(json_object_get(ev, "dur")), 0.0, 0.0);
    json_t *a = json_object_get(ev, "args");
    cr_assert_eq(json_integer_value(json_object_get(a, "min")), INT64_MIN);
    cr_assert_eq(json_integer_value(json_object_get(a, "max")), INT64_MAX);
    cr_assert(json_is_null(json_object_get(a, "nan")));
    cr_assert(json_is_null(json_object_get(a, "inf")));
    cr_assert_float_eq(json_number_value(json_object_get(a, "big")), 1e300, 1e286);
    cr_assert_float_eq(json_number_value(json_object_get(a, "tiny")), 1.5e-300, 1e-314);
    cr_assert_float_eq(json_number_value(json_object_get(a, "third")), 1.0 / 3, 1e-15);
    cr_assert(json_is_real(json_object_get(a, "whole")), "a double stays a real: -12.0");
    cr_assert_float_eq(json_real_value(json_object_get(a, "whole")), -12.0, 0.0);
    cr_assert(json_is_integer(json_object_get(a, "min")));

    ev = json_array_get(root, 1);
    check_event_shape(ev);
    cr_assert_str_eq(str_field(ev, "ph"), "C");
    cr_assert_float_eq(json_number_value(json_object_get(ev, "ts")), 0.0, 0.0);
    a = json_object_get(ev, "args");
    cr_assert_float_eq(json_number_value(json_object_get(a, "a")), 2.5, 0.0);
    cr_assert_eq(json_integer_value(json_object_get(a, "b")), -3);

    ev = json_array_get(root, 2);
    check_event_shape(ev);
    cr_assert_null(json_object_get(ev, "args"));
    cr_assert_null(json_object_get(ev, "cat"));
    cr_assert_str_eq(str_field(json_object_get(json_array_get(root, 3), "args"), "null"), "");
    json_decref(root);
    tmp_trace_finish(&tt);
}

Test(trace, now_us_is_monotonic_from_open)
{
    cr_assert_float_eq(hs_trace_now_us(NULL), 0.0, 0.0);
    struct tmp_trace tt;
    tmp_trace_init(&tt);
    struct hs_trace *tr = NULL;
    cr_assert_eq(hs_trace_open(tt.path, &tr, NULL), HS_OK);
    double a = hs_trace_now_us(tr);
    usleep(2000);
    double b = hs_trace_now_us(tr);
    cr_assert_geq(a, 0.0);
    cr_assert_lt(a, 1e6, "counted from open");
    cr_assert_geq(b - a, 2000.0);
    cr_assert_eq(hs_trace_close(tr), HS_OK);
    tmp_trace_finish(&tt);
}

/* ---- files: crash, errors ---- */

/* What a crash leaves is the file as of the last flush: an array without its `]`, of whole
 * events; closing it the way chrome://tracing does gives valid JSON. */
Test(trace, a_trace_cut_short_is_an_unterminated_array_of_whole_events)
{
    struct tmp_trace tt;
    tmp_trace_init(&tt);
    struct hs_trace *tr = NULL;
    cr_assert_eq(hs_trace_open(tt.path, &tr, NULL), HS_OK);
    size_t len;
    char *raw = read_file(tt.path, &len);
    cr_assert_str_eq(raw, "[\n", "the opening bracket is on disk at once");
    free(raw);

    for (int i = 0; i < 500; i++) {
        hs_trace_complete(tr, 1, 1, "ev \"q\"", "c", i, 1.0, &HS_TRACE_INT("i", i), 1);
    }
    cr_assert_eq(hs_trace_flush(tr), HS_OK);
    hs_trace_complete(tr, 1, 1, "buffered, not on disk yet", NULL, 600.0, 1.0, NULL, 0);

    raw = read_file(tt.path, &len);
    cr_assert_eq(raw[0], '[');
    cr_assert_eq(raw[len - 1], '}', "ends with a whole event, no `]`");
    raw[len] = ']';
    raw[len + 1] = '\0';
    json_error_t jerr;
    json_t *root = json_loads(raw, 0, &jerr);
    cr_assert_not_null(root, "%s", jerr.text);
    cr_assert_eq(json_array_size(root), 500);
    json_decref(root);
    free(raw);

    cr_assert_eq(hs_trace_close(tr), HS_OK);
    root = load_events(tt.path);
    cr_assert_eq(json_array_size(root), 501);
    json_decref(root);
    tmp_trace_finish(&tt);
}

Test(trace, open_on_an_unwritable_path_fails_cleanly)
{
    struct hs_trace *tr = (struct hs_trace *)&tr; /* must be reset to NULL */
    struct hs_error err;
    cr_assert_eq(hs_trace_open("/nonexistent-hs-dir/trace.json", &tr, &err), HS_E_NOENT);
    cr_assert_null(tr);
    cr_assert_eq(err.status, HS_E_NOENT);
    cr_assert_not_null(strstr(err.message, "/nonexistent-hs-dir/trace.json"), "%s", err.message);

    struct tmp_trace tt;
    tmp_trace_init(&tt);
    tr = (struct hs_trace *)&tr;
    cr_assert_eq(hs_trace_open(tt.dir, &tr, &err), HS_E_IO, "a directory");
    cr_assert_null(tr);
    tmp_trace_finish(&tt);

    if (access("/dev/full", W_OK) == 0) { /* writes fail with ENOSPC */
        tr = (struct hs_trace *)&tr;
        cr_assert_eq(hs_trace_open("/dev/full", &tr, NULL), HS_E_IO);
        cr_assert_null(tr);
    }
    /* ASan's leak check at exit covers "nothing leaked". */
}

/* A file that stops growing (RLIMIT_FSIZE: writes past it fail with EFBIG, like a full disk):
 * events keep coming without a crash, flush and close report HS_E_IO. Criterion runs each test
 * in its own process, so the limit stays here. */
Test(trace, a_failed_write_is_reported_by_close)
{
    struct tmp_trace tt;
    tmp_trace_init(&tt);
    struct hs_trace *tr = NULL;
    cr_assert_eq(hs_trace_open(tt.path, &tr, NULL), HS_OK);

    signal(SIGXFSZ, SIG_IGN);
    struct rlimit old, lim;
    cr_assert_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = 4096;
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    for (int i = 0; i < 5000; i++) {
        hs_trace_complete(tr, 1, 1, "ev", "c", i, 1.0, &HS_TRACE_INT("i", i), 1);
    }
    cr_assert_eq(hs_trace_flush(tr), HS_E_IO);
    hs_trace_complete(tr, 1, 1, "after the failure", NULL, 1.0, 1.0, NULL, 0);
    cr_assert_eq(hs_trace_close(tr), HS_E_IO);
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &old), 0);

    size_t len;
    char *raw = read_file(tt.path, &len);
    cr_assert_eq(len, 4096, "the file holds what fit");
    cr_assert_eq(raw[0], '[');
    free(raw);
    tmp_trace_finish(&tt);
}

Test(trace, null_trace_is_a_noop)
{
    hs_trace_name_process(NULL, 1, "p");
    hs_trace_name_thread(NULL, 1, 2, "t");
    hs_trace_complete(NULL, 1, 2, "x", NULL, 0.0, 0.0, NULL, 0);
    hs_trace_counter(NULL, 1, "c", 0.0, &HS_TRACE_INT("v", 1), 1);
    cr_assert_eq(hs_trace_flush(NULL), HS_OK);
    cr_assert_eq(hs_trace_close(NULL), HS_OK);
    cr_assert_str_eq(hs_trace_arg_type_str(HS_TRACE_ARG_DOUBLE), "double");
    cr_assert_str_eq(hs_trace_arg_type_str(HS_TRACE_ARG_COUNT), "?");
}
