#include "common/trace.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

/* ---- one event, formatted on the caller's stack ---- */

/* Worst cases, from the caps: every input byte of a string may become a 6-byte escape. */
#define TRACE_STR_BYTES  (2 + 6 * HS_TRACE_STR_MAX_BYTES)
#define TRACE_KEY_BYTES  (2 + 6 * HS_TRACE_KEY_MAX_BYTES)
#define TRACE_NUM_BYTES  32 /* an int64, a %.15g double or a fixed-point time */
#define TRACE_ARG_BYTES  (TRACE_KEY_BYTES + 1 + TRACE_STR_BYTES + 1)
#define TRACE_LINE_BYTES (256 + 2 * TRACE_STR_BYTES + HS_TRACE_MAX_ARGS * TRACE_ARG_BYTES)

_Static_assert(TRACE_NUM_BYTES < TRACE_STR_BYTES, "a number arg fits where a string would");
_Static_assert(TRACE_LINE_BYTES < HS_TRACE_BUFFER_BYTES, "an event fits in an empty buffer");

/* Starts with the ",\n" separator; the first event of the file is copied without it. */
struct trace_line {
    size_t len;
    char data[TRACE_LINE_BYTES];
};

static void line_put(struct trace_line *l, const char *s, size_t n)
{
    HS_ASSERT(n <= sizeof(l->data) - l->len); /* the caps make this impossible to break */
    memcpy(l->data + l->len, s, n);
    l->len += n;
}

#define LINE_LIT(l, lit) line_put((l), (lit), sizeof(lit) - 1)

static void line_put_i64(struct trace_line *l, int64_t v)
{
    char tmp[24];
    size_t n = 0;
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[sizeof(tmp) - 1 - n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) {
        tmp[sizeof(tmp) - 1 - n++] = '-';
    }
    line_put(l, tmp + sizeof(tmp) - n, n);
}

/* Microseconds with 3 decimals, by integer arithmetic: cheaper than %f, and no locale can turn
 * the point into a comma. |us| <= 1e15 (checked by the callers) keeps the ns in an int64. */
static void line_put_us(struct trace_line *l, double us)
{
    int64_t ns = llround(us * 1000.0);
    if (ns < 0) {
        LINE_LIT(l, "-");
        ns = -ns;
    }
    line_put_i64(l, ns / 1000);
    char frac[4] = {'.', (char)('0' + ns / 100 % 10), (char)('0' + ns / 10 % 10),
                    (char)('0' + ns % 10)};
    line_put(l, frac, sizeof(frac));
}

static void line_put_f64(struct trace_line *l, double v)
{
    if (!isfinite(v)) {
        LINE_LIT(l, "null");
        return;
    }
    char tmp[TRACE_NUM_BYTES];
    int n = snprintf(tmp, sizeof(tmp), "%.15g", v);
    HS_ASSERT(n > 0 && (size_t)n + 2 < sizeof(tmp));
    bool integral = true;
    for (int i = 0; i < n; i++) {
        if (tmp[i] == ',') {
            tmp[i] = '.'; /* a decimal-comma LC_NUMERIC, should anyone call setlocale */
        }
        integral = integral && tmp[i] != '.' && tmp[i] != 'e';
    }
    if (integral) {
        memcpy(tmp + n, ".0", 2); /* stays a real for readers that type numbers (12.0, not 12) */
        n += 2;
    }
    line_put(l, tmp, (size_t)n);
}

/* Length of the valid UTF-8 sequence at s (RFC 3629: no overlongs, surrogates or code points
 * past U+10FFFF), or 0 when s does not start one. s is NUL-terminated. */
static size_t utf8_seq_len(const unsigned char *s)
{
    unsigned char c = s[0];
    if (c >= 0xc2 && c <= 0xdf) {
        return (s[1] & 0xc0) == 0x80 ? 2 : 0;
    }
    if (c >= 0xe0 && c <= 0xef) {
        unsigned char lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
        return s[1] >= lo && s[1] <= hi && (s[2] & 0xc0) == 0x80 ? 3 : 0;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        unsigned char lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
        return s[1] >= lo && s[1] <= hi && (s[2] & 0xc0) == 0x80 && (s[3] & 0xc0) == 0x80 ? 4 : 0;
    }
    return 0;
}

/* A JSON string of at most max_in input bytes of s, cut at a character boundary. */
static void line_put_str(struct trace_line *l, const char *s, size_t max_in)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    size_t used = 0;
    LINE_LIT(l, "\"");
    while (*p) {
        unsigned char c = *p;
        size_t n = 1;
        if (c >= 0x80) {
            n = utf8_seq_len(p);
            if (used + (n ? n : 1) > max_in) {
                break;
            }
            if (n) {
                line_put(l, (const char *)p, n);
            } else {
                LINE_LIT(l, "\\ufffd");
                n = 1;
            }
        } else {
            if (used + 1 > max_in) {
                break;
            }
            switch (c) {
            case '"':
                LINE_LIT(l, "\\\"");
                break;
            case '\\':
                LINE_LIT(l, "\\\\");
                break;
            case '\b':
                LINE_LIT(l, "\\b");
                break;
            case '\f':
                LINE_LIT(l, "\\f");
                break;
            case '\n':
                LINE_LIT(l, "\\n");
                break;
            case '\r':
                LINE_LIT(l, "\\r");
                break;
            case '\t':
                LINE_LIT(l, "\\t");
                break;
            default:
                if (c < 0x20 || c == 0x7f) { /* DEL too: some readers use iscntrl() */
                    char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
                    line_put(l, esc, sizeof(esc));
                } else {
                    line_put(l, (const char *)p, 1);
                }
            }
        }
        p += n;
        used += n;
    }
    LINE_LIT(l, "\"");
}

/* ,"args":{"k":v,...} */
static void line_put_args(struct trace_line *l, const struct hs_trace_arg *args, size_t n_args)
{
    LINE_LIT(l, ",\"args\":{");
    for (size_t i = 0; i < n_args; i++) {
        const struct hs_trace_arg *a = &args[i];
        HS_ASSERT(a->key);
        if (i) {
            LINE_LIT(l, ",");
        }
        line_put_str(l, a->key, HS_TRACE_KEY_MAX_BYTES);
        LINE_LIT(l, ":");
        switch (a->type) {
        case HS_TRACE_ARG_STR:
            line_put_str(l, a->s, HS_TRACE_STR_MAX_BYTES);
            break;
        case HS_TRACE_ARG_INT:
            line_put_i64(l, a->i);
            break;
        case HS_TRACE_ARG_DOUBLE:
            line_put_f64(l, a->d);
            break;
        default:
            HS_ASSERT(!"unknown hs_trace_arg_type");
        }
    }
    LINE_LIT(l, "}");
}

/* {"ph":"P","ts":T,"pid":P — the common head, "ph" and "ts" first (see trace.h). */
static void line_begin(struct trace_line *l, const char *ph_head, double ts_us, int32_t pid)
{
    l->len = 0;
    LINE_LIT(l, ",\n");
    line_put(l, ph_head, strlen(ph_head));
    line_put_us(l, ts_us);
    LINE_LIT(l, ",\"pid\":");
    line_put_i64(l, pid);
}

static bool time_ok(double us)
{
    return isfinite(us) && fabs(us) <= 1e15;
}

/* ---- the shared buffer and the file ---- */

struct hs_trace {
    pthread_mutex_t mu; /* guards everything below */
    int fd;
    bool failed;        /* a write failed: status is HS_E_IO, later events are dropped */
    bool written;       /* an event is in the file or buffer: the next one needs its separator */
    uint64_t n_dropped; /* events with non-finite or huge times */
    size_t len;         /* pending bytes in buf, whole events only */
    char *buf;          /* [HS_TRACE_BUFFER_BYTES] */
    char *path;         /* owned copy, for messages */
    struct timespec t0;
};

/* Writes all n bytes; on failure marks the trace failed and warns once. Holds mu. */
static void trace_write_locked(struct hs_trace *t, const char *p, size_t n)
{
    while (n && !t->failed) {
        ssize_t w = write(t->fd, p, n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            int e = w < 0 ? errno : EIO;
            char msg[128];
            t->failed = true;
            HS_LOG_WARN("trace: writing %s failed (%s); later events are dropped", t->path,
                        strerror_r(e, msg, sizeof(msg)));
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

static void trace_flush_locked(struct hs_trace *t)
{
    trace_write_locked(t, t->buf, t->len);
    t->len = 0;
}

static void trace_append(struct hs_trace *t, const struct trace_line *l)
{
    pthread_mutex_lock(&t->mu);
    if (!t->failed) {
        size_t skip = t->written ? 0 : 2; /* the first event has no ",\n" */
        size_t n = l->len - skip;
        if (t->len + n > HS_TRACE_BUFFER_BYTES) {
            trace_flush_locked(t);
        }
        if (!t->failed) {
            memcpy(t->buf + t->len, l->data + skip, n);
            t->len += n;
            t->written = true;
        }
    }
    pthread_mutex_unlock(&t->mu);
}

static void trace_drop(struct hs_trace *t)
{
    pthread_mutex_lock(&t->mu);
    t->n_dropped++;
    pthread_mutex_unlock(&t->mu);
}

/* ---- public ---- */

const char *hs_trace_arg_type_str(enum hs_trace_arg_type type)
{
    static const char *names[HS_TRACE_ARG_COUNT] = {"str", "int", "double"};
    return (unsigned)type < HS_TRACE_ARG_COUNT ? names[type] : "?";
}

hs_status hs_trace_open(const char *path, struct hs_trace **out, struct hs_error *err)
{
    HS_ASSERT(path && out);
    *out = NULL;
    hs_status st = HS_E_NOMEM;
    struct hs_trace *t = calloc(1, sizeof(*t));
    if (!t) {
        goto fail;
    }
    t->fd = -1;
    t->buf = malloc(HS_TRACE_BUFFER_BYTES);
    t->path = strdup(path);
    if (!t->buf || !t->path) {
        goto fail;
    }
    t->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (t->fd < 0) {
        int e = errno;
        char msg[128];
        st = e == ENOENT || e == ENOTDIR ? HS_E_NOENT : e == ENOMEM ? HS_E_NOMEM : HS_E_IO;
        hs_error_set(err, st, "cannot create trace file %s: %s", path,
                     strerror_r(e, msg, sizeof(msg)));
        goto fail;
    }
    /* Written at once, so that a trace cut short right away is still an (empty) array. */
    ssize_t w = write(t->fd, "[\n", 2);
    if (w != 2) {
        int e = w < 0 ? errno : EIO;
        char msg[128];
        st = hs_error_set(err, HS_E_IO, "cannot write trace file %s: %s", path,
                          strerror_r(e, msg, sizeof(msg)));
        goto fail;
    }
    if (pthread_mutex_init(&t->mu, NULL) != 0) {
        st = HS_E_NOMEM;
        goto fail;
    }
    clock_gettime(CLOCK_MONOTONIC, &t->t0);
    *out = t;
    return HS_OK;

fail:
    if (st == HS_E_NOMEM) {
        hs_error_set(err, st, "out of memory opening trace file %s", path);
    }
    if (t) {
        if (t->fd >= 0) {
            close(t->fd);
        }
        free(t->path);
        free(t->buf);
        free(t);
    }
    return st;
}

hs_status hs_trace_close(struct hs_trace *trace)
{
    if (!trace) {
        return HS_OK;
    }
    struct hs_trace *t = trace;
    pthread_mutex_lock(&t->mu);
    if (!t->failed) {
        if (t->len + 3 > HS_TRACE_BUFFER_BYTES) {
            trace_flush_locked(t);
        }
        memcpy(t->buf + t->len, "\n]\n", 3);
        t->len += 3;
        trace_flush_locked(t);
    }
    if (close(t->fd) != 0 && !t->failed) {
        HS_LOG_WARN("trace: closing %s failed; the trace may be incomplete", t->path);
        t->failed = true;
    }
    if (t->n_dropped) {
        HS_LOG_WARN("trace: %llu events with non-finite or out-of-range times were dropped from %s",
                    (unsigned long long)t->n_dropped, t->path);
    }
    hs_status st = t->failed ? HS_E_IO : HS_OK;
    pthread_mutex_unlock(&t->mu);
    pthread_mutex_destroy(&t->mu);
    free(t->path);
    free(t->buf);
    free(t);
    return st;
}

hs_status hs_trace_flush(struct hs_trace *trace)
{
    if (!trace) {
        return HS_OK;
    }
    pthread_mutex_lock(&trace->mu);
    trace_flush_locked(trace);
    hs_status st = trace->failed ? HS_E_IO : HS_OK;
    pthread_mutex_unlock(&trace->mu);
    return st;
}

double hs_trace_now_us(const struct hs_trace *trace)
{
    if (!trace) {
        return 0.0;
    }
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - trace->t0.tv_sec) * 1e6 +
           (double)(now.tv_nsec - trace->t0.tv_nsec) * 1e-3;
}

void hs_trace_complete(struct hs_trace *trace, int32_t pid, int32_t tid, const char *name,
                       const char *cat, double ts_us, double dur_us,
                       const struct hs_trace_arg *args, size_t n_args)
{
    if (!trace) {
        return;
    }
    HS_ASSERT(name && n_args <= HS_TRACE_MAX_ARGS && (args || n_args == 0));
    if (!time_ok(ts_us) || !time_ok(dur_us)) {
        trace_drop(trace);
        return;
    }
    struct trace_line l;
    line_begin(&l, "{\"ph\":\"X\",\"ts\":", ts_us, pid);
    LINE_LIT(&l, ",\"tid\":");
    line_put_i64(&l, tid);
    LINE_LIT(&l, ",\"dur\":");
    line_put_us(&l, dur_us > 0 ? dur_us : 0.0);
    LINE_LIT(&l, ",\"name\":");
    line_put_str(&l, name, HS_TRACE_STR_MAX_BYTES);
    if (cat) {
        LINE_LIT(&l, ",\"cat\":");
        line_put_str(&l, cat, HS_TRACE_STR_MAX_BYTES);
    }
    if (n_args) {
        line_put_args(&l, args, n_args);
    }
    LINE_LIT(&l, "}");
    trace_append(trace, &l);
}

static void trace_name(struct hs_trace *trace, int32_t pid, const int32_t *tid, const char *name)
{
    if (!trace) {
        return;
    }
    HS_ASSERT(name);
    struct trace_line l;
    line_begin(&l, "{\"ph\":\"M\",\"ts\":", 0.0, pid);
    if (tid) {
        LINE_LIT(&l, ",\"tid\":");
        line_put_i64(&l, *tid);
        LINE_LIT(&l, ",\"name\":\"thread_name\",\"args\":{\"name\":");
    } else {
        LINE_LIT(&l, ",\"name\":\"process_name\",\"args\":{\"name\":");
    }
    line_put_str(&l, name, HS_TRACE_STR_MAX_BYTES);
    LINE_LIT(&l, "}}");
    trace_append(trace, &l);
}

void hs_trace_name_process(struct hs_trace *trace, int32_t pid, const char *name)
{
    trace_name(trace, pid, NULL, name);
}

void hs_trace_name_thread(struct hs_trace *trace, int32_t pid, int32_t tid, const char *name)
{
    trace_name(trace, pid, &tid, name);
}

void hs_trace_counter(struct hs_trace *trace, int32_t pid, const char *name, double ts_us,
                      const struct hs_trace_arg *values, size_t n_values)
{
    if (!trace) {
        return;
    }
    HS_ASSERT(name && values && n_values >= 1 && n_values <= HS_TRACE_MAX_ARGS);
    bool finite = time_ok(ts_us);
    for (size_t i = 0; i < n_values; i++) {
        HS_ASSERT(values[i].type == HS_TRACE_ARG_INT || values[i].type == HS_TRACE_ARG_DOUBLE);
        finite = finite && (values[i].type == HS_TRACE_ARG_INT || isfinite(values[i].d));
    }
    if (!finite) {
        trace_drop(trace);
        return;
    }
    struct trace_line l;
    line_begin(&l, "{\"ph\":\"C\",\"ts\":", ts_us, pid);
    LINE_LIT(&l, ",\"name\":");
    line_put_str(&l, name, HS_TRACE_STR_MAX_BYTES);
    line_put_args(&l, values, n_values);
    LINE_LIT(&l, "}");
    trace_append(trace, &l);
}
