/* api/admit.c: who may use the server and how much. API keys (flags and a key file) in a
 * keyring searched in constant time, and per-key rate limits: requests and tokens per minute as
 * token buckets that refill continuously (a full minute's allowance at most), reported in
 * OpenAI's x-ratelimit-* headers. Tokens are charged when a completion is admitted (prompt +
 * the most it may generate) and settled with its usage when it ends. */
#include "api/server-impl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define RL_WINDOW_MS      INT64_C(60000)
#define MAX_KEYFILE_BYTES ((size_t)16 << 20)

/* ---- the keyring ---- */

void hs__keyring_init(struct hs__keyring *kr)
{
    memset(kr, 0, sizeof(*kr));
    pthread_mutex_init(&kr->mu, NULL);
}

void hs__keyring_finish(struct hs__keyring *kr)
{
    if (kr->keys) {
        explicit_bzero(kr->keys, (size_t)kr->cap * sizeof(*kr->keys));
    }
    free(kr->keys);
    pthread_mutex_destroy(&kr->mu);
    memset(kr, 0, sizeof(*kr));
}

static bool key_bytes_valid(const char *k, size_t n)
{
    if (n == 0 || n > HS__MAX_KEY_BYTES) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (k[i] <= ' ' || k[i] >= 0x7f) {
            return false;
        }
    }
    return true;
}

/* The index of the key equal to k (not constant time: start-up only), or -1. */
static int32_t key_index(const struct hs__keyring *kr, const char *k, size_t n)
{
    for (int32_t i = 0; i < kr->n; i++) {
        if (kr->keys[i].len == n && !memcmp(kr->keys[i].bytes, k, n)) {
            return i;
        }
    }
    return -1;
}

static void bucket_init(struct hs__bucket *b, int64_t limit, int64_t now_ms)
{
    b->limit = limit;
    b->level = limit * RL_WINDOW_MS;
    b->t_ms = now_ms;
}

hs_status hs__keyring_add(struct hs__keyring *kr, const char *key, size_t n, int64_t rpm,
                          int64_t tpm, int32_t line, struct hs_error *err)
{
    if (!key || !key_bytes_valid(key, n)) {
        return hs_error_set(err, HS_E_INVAL,
                            "an API key must be 1 to %d visible ASCII characters (no spaces); "
                            "an empty key would turn authentication off",
                            HS__MAX_KEY_BYTES);
    }
    if (rpm < 0 || rpm > HS__MAX_RATE || tpm < 0 || tpm > HS__MAX_RATE) {
        return hs_error_set(err, HS_E_INVAL, "rate limits must be 1 to %lld per minute",
                            (long long)HS__MAX_RATE);
    }
    int32_t dup = key_index(kr, key, n);
    if (dup >= 0) {
        /* never the key itself in a message: messages reach logs */
        return hs_error_set(err, HS_E_INVAL, "an API key is given twice (%s%s%d)",
                            kr->keys[dup].line > 0 ? "first on line " : "",
                            kr->keys[dup].line > 0 ? "" : "first as --api-key number ",
                            kr->keys[dup].line > 0 ? (int)kr->keys[dup].line : (int)dup + 1);
    }
    if (kr->n == kr->cap) {
        int32_t cap = kr->cap ? kr->cap * 2 : 8;
        struct hs__key *k = calloc((size_t)cap, sizeof(*k));
        if (!k) {
            return hs_error_set(err, HS_E_NOMEM, "out of memory");
        }
        if (kr->keys) {
            memcpy(k, kr->keys, (size_t)kr->n * sizeof(*k));
            explicit_bzero(kr->keys, (size_t)kr->cap * sizeof(*kr->keys));
            free(kr->keys);
        }
        kr->keys = k;
        kr->cap = cap;
    }
    struct hs__key *k = &kr->keys[kr->n++];
    memset(k, 0, sizeof(*k));
    memcpy(k->bytes, key, n);
    k->len = n;
    k->line = line;
    int64_t now = hs__now_ms();
    bucket_init(&k->req, rpm, now);
    bucket_init(&k->tok, tpm, now);
    kr->limited |= rpm > 0 || tpm > 0;
    return HS_OK;
}

int32_t hs__keyring_find(const struct hs__keyring *kr, const char *tok, size_t n)
{
    /* The probe is compared with every key over the whole padded width, differences OR-ed and
     * the match selected by a mask: the time depends on the number of keys only, never on
     * where (or whether) a key and the token differ. */
    unsigned char probe[HS__MAX_KEY_BYTES + 1] = {0};
    memcpy(probe, tok, HS_MIN(n, sizeof(probe)));
    uint32_t found = 0;
    for (int32_t k = 0; k < kr->n; k++) {
        const unsigned char *b = kr->keys[k].bytes;
        uint32_t diff = (uint32_t)(kr->keys[k].len ^ n);
        for (size_t i = 0; i < sizeof(probe); i++) {
            diff |= (uint32_t)(probe[i] ^ b[i]);
        }
#if defined(__GNUC__)
        __asm__ __volatile__("" : "+r"(diff)); /* keep the compiler from branching on it */
#endif
        uint32_t eq = ((diff | (0u - diff)) >> 31) ^ 1u; /* 1 when diff == 0 */
        found |= (0u - eq) & (uint32_t)(k + 1);
    }
    explicit_bzero(probe, sizeof(probe));
    return found ? (int32_t)found : -1;
}

/* ---- the key file ---- */

/* A whole number 1 .. HS__MAX_RATE in [p, p + n). */
static bool parse_rate(const char *p, size_t n, int64_t *out)
{
    if (n == 0 || n > 10) {
        return false;
    }
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return false;
        }
        v = v * 10 + (p[i] - '0');
    }
    *out = v;
    return v >= 1 && v <= HS__MAX_RATE;
}

hs_status hs__keyring_parse(struct hs__keyring *kr, const char *name, const char *text, size_t n,
                            struct hs_error *err)
{
    if (memchr(text, '\0', n)) {
        return hs_error_set(err, HS_E_FORMAT, "%s: holds a NUL byte (a key file is text)", name);
    }
    const int32_t n_before = kr->n;
    const char *p = text, *end = text + n;
    for (int32_t line = 1; p < end; line++) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        eol = eol ? eol : end;
        const char *le = eol > p && eol[-1] == '\r' ? eol - 1 : eol;
        const char *key = NULL;
        size_t n_key = 0;
        int64_t rate[2] = {0, 0}; /* rpm, tpm */
        int32_t field = 0;
        for (const char *q = p; q < le;) {
            while (q < le && (*q == ' ' || *q == '\t')) {
                q++;
            }
            if (q == le || *q == '#') {
                break; /* the rest is a comment */
            }
            const char *f = q;
            while (q < le && *q != ' ' && *q != '\t') {
                q++;
            }
            size_t fl = (size_t)(q - f);
            field++;
            if (field == 1) {
                key = f;
                n_key = fl;
                continue;
            }
            int which = fl > 4 && !memcmp(f, "rpm=", 4)   ? 0
                        : fl > 4 && !memcmp(f, "tpm=", 4) ? 1
                                                          : -1;
            if (which < 0) {
                /* not echoed: it may be a second key */
                return hs_error_set(err, HS_E_FORMAT,
                                    "%s:%d: field %d is not rpm=N or tpm=N (the format is one "
                                    "key per line: KEY [rpm=N] [tpm=N])",
                                    name, (int)line, (int)field);
            }
            if (rate[which] != 0) {
                return hs_error_set(err, HS_E_FORMAT, "%s:%d: %s is given twice", name, (int)line,
                                    which ? "tpm" : "rpm");
            }
            if (!parse_rate(f + 4, fl - 4, &rate[which])) {
                return hs_error_set(err, HS_E_FORMAT,
                                    "%s:%d: %s must be a whole number from 1 to %lld (leave it "
                                    "out for no limit)",
                                    name, (int)line, which ? "tpm" : "rpm",
                                    (long long)HS__MAX_RATE);
            }
        }
        p = eol < end ? eol + 1 : end;
        if (!key) {
            continue; /* blank or comment */
        }
        if (!key_bytes_valid(key, n_key)) {
            return hs_error_set(err, HS_E_FORMAT,
                                "%s:%d: the key must be 1 to %d visible ASCII characters", name,
                                (int)line, HS__MAX_KEY_BYTES);
        }
        struct hs_error e = {0};
        hs_status st = hs__keyring_add(kr, key, n_key, rate[0], rate[1], line, &e);
        if (st != HS_OK) {
            return hs_error_set(err, st == HS_E_NOMEM ? st : HS_E_FORMAT, "%s:%d: %s", name,
                                (int)line, e.message);
        }
    }
    if (kr->n == n_before) {
        return hs_error_set(err, HS_E_FORMAT,
                            "%s: no keys (one per line: KEY [rpm=N] [tpm=N]; an empty key file "
                            "would turn authentication off)",
                            name);
    }
    return HS_OK;
}

hs_status hs__keyring_load(struct hs__keyring *kr, const char *path, struct hs_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        return hs_error_set(err, HS_E_IO, "cannot open the API key file %s: %s", path,
                            strerror(errno));
    }
    hs_status st = HS_OK;
    char *text = NULL;
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = hs_error_set(err, HS_E_IO, "the API key file %s is not a regular file", path);
        goto done;
    }
    if ((size_t)sb.st_size > MAX_KEYFILE_BYTES) {
        st = hs_error_set(err, HS_E_FORMAT, "the API key file %s is over %zu MiB", path,
                          MAX_KEYFILE_BYTES >> 20);
        goto done;
    }
    if (sb.st_mode & (S_IRWXG | S_IRWXO)) {
        HS_LOG_WARN("the API key file %s can be read by other users (chmod 600 it)", path);
    }
    text = malloc((size_t)sb.st_size + 1);
    if (!text) {
        st = hs_error_set(err, HS_E_NOMEM, "out of memory");
        goto done;
    }
    size_t n = fread(text, 1, (size_t)sb.st_size, f);
    if (ferror(f)) {
        st = hs_error_set(err, HS_E_IO, "cannot read the API key file %s", path);
        goto done;
    }
    st = hs__keyring_parse(kr, path, text, n, err);
done:
    if (text) {
        explicit_bzero(text, (size_t)sb.st_size);
    }
    free(text);
    fclose(f);
    return st;
}

/* ---- rate limits ---- */

static void bucket_refill(struct hs__bucket *b, int64_t now_ms)
{
    int64_t dt = now_ms - b->t_ms;
    if (dt <= 0) {
        return;
    }
    b->level = HS_MIN(b->level + HS_MIN(dt, RL_WINDOW_MS) * b->limit, b->limit * RL_WINDOW_MS);
    b->t_ms = now_ms;
}

/* Milliseconds until the bucket holds need units (0: now). */
static int64_t bucket_wait_ms(const struct hs__bucket *b, int64_t need)
{
    int64_t short_by = need * RL_WINDOW_MS - b->level;
    return short_by <= 0 ? 0 : (short_by + b->limit - 1) / b->limit;
}

static void bucket_view(const struct hs__bucket *b, struct hs__rl_view *v)
{
    v->limit = b->limit;
    v->remaining = b->limit > 0 ? HS_MAX(b->level, 0) / RL_WINDOW_MS : 0;
    v->reset_ms = b->limit > 0 ? bucket_wait_ms(b, b->limit) : 0;
}

bool hs__keyring_charge(struct hs__keyring *kr, int32_t tenant, int64_t n_req, int64_t n_tok,
                        int64_t now_ms, struct hs__rl_refusal *why)
{
    memset(why, 0, sizeof(*why));
    if (tenant <= 0 || tenant > kr->n) {
        return true;
    }
    struct hs__key *k = &kr->keys[tenant - 1];
    struct hs__bucket *b[2] = {&k->req, &k->tok};
    const int64_t need[2] = {n_req, n_tok};
    pthread_mutex_lock(&kr->mu);
    bool ok = true;
    for (int i = 0; i < 2; i++) {
        if (b[i]->limit == 0 || need[i] <= 0) {
            continue;
        }
        bucket_refill(b[i], now_ms);
        if (need[i] > b[i]->limit) {
            *why = (struct hs__rl_refusal){
                .tokens = i == 1, .limit = b[i]->limit, .need = need[i], .never = true};
            ok = false;
            break;
        }
        int64_t w = bucket_wait_ms(b[i], need[i]);
        if (w > 0) {
            *why = (struct hs__rl_refusal){.tokens = i == 1,
                                           .limit = b[i]->limit,
                                           .need = need[i],
                                           .retry_s = (w + 999) / 1000};
            ok = false;
            break;
        }
    }
    for (int i = 0; ok && i < 2; i++) {
        if (b[i]->limit > 0 && need[i] > 0) {
            b[i]->level -= need[i] * RL_WINDOW_MS;
        }
    }
    pthread_mutex_unlock(&kr->mu);
    return ok;
}

void hs__keyring_settle(struct hs__keyring *kr, int32_t tenant, int64_t charged, int64_t used,
                        int64_t now_ms)
{
    if (tenant <= 0 || tenant > kr->n || charged == used) {
        return;
    }
    struct hs__bucket *b = &kr->keys[tenant - 1].tok;
    if (b->limit == 0) {
        return;
    }
    pthread_mutex_lock(&kr->mu);
    bucket_refill(b, now_ms);
    /* a refund fills up to the brim at most; an overrun is a debt paid from later refills */
    b->level = HS_MIN(b->level + (charged - used) * RL_WINDOW_MS, b->limit * RL_WINDOW_MS);
    pthread_mutex_unlock(&kr->mu);
}

bool hs__keyring_view(struct hs__keyring *kr, int32_t tenant, int64_t now_ms,
                      struct hs__rl_view v[2])
{
    if (tenant <= 0 || tenant > kr->n) {
        return false;
    }
    struct hs__key *k = &kr->keys[tenant - 1];
    if (k->req.limit == 0 && k->tok.limit == 0) {
        return false;
    }
    pthread_mutex_lock(&kr->mu);
    bucket_refill(&k->req, now_ms);
    bucket_refill(&k->tok, now_ms);
    bucket_view(&k->req, &v[0]);
    bucket_view(&k->tok, &v[1]);
    pthread_mutex_unlock(&kr->mu);
    return true;
}

size_t hs__rl_duration(char *out, size_t cap, int64_t ms)
{
    int n;
    if (ms < 1000) {
        n = snprintf(out, cap, "%lldms", (long long)HS_MAX(ms, 0));
    } else {
        int64_t m = ms / 60000, s_ms = ms % 60000;
        int64_t frac = s_ms % 1000;
        int digits = 3;
        while (frac > 0 && frac % 10 == 0) { /* "1.500s" -> "1.5s", as Go prints durations */
            frac /= 10;
            digits--;
        }
        char sec[32];
        if (frac == 0) {
            snprintf(sec, sizeof(sec), "%llds", (long long)(s_ms / 1000));
        } else {
            snprintf(sec, sizeof(sec), "%lld.%0*llds", (long long)(s_ms / 1000), digits,
                     (long long)frac);
        }
        n = m > 0 ? snprintf(out, cap, "%lldm%s", (long long)m, sec)
                  : snprintf(out, cap, "%s", sec);
    }
    return n > 0 ? (size_t)n : 0;
}

void hs__rl_add_headers(struct MHD_Response *r, const struct hs__rl_view v[2])
{
    static const char *const names[2][3] = {
        {"x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
         "x-ratelimit-reset-requests"},
        {"x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"},
    };
    for (int i = 0; i < 2; i++) {
        if (v[i].limit == 0) {
            continue;
        }
        char a[24], b[24], c[40];
        snprintf(a, sizeof(a), "%lld", (long long)v[i].limit);
        snprintf(b, sizeof(b), "%lld", (long long)v[i].remaining);
        hs__rl_duration(c, sizeof(c), v[i].reset_ms);
        MHD_add_response_header(r, names[i][0], a);
        MHD_add_response_header(r, names[i][1], b);
        MHD_add_response_header(r, names[i][2], c);
    }
}

enum MHD_Result hs__rl_refuse(struct hs_api_server *s, struct MHD_Connection *c, struct hs__req *rq,
                              const struct hs__rl_refusal *why)
{
    char msg[320], retry[24];
    const char *what = why->tokens ? "tokens" : "requests";
    if (why->never) {
        snprintf(msg, sizeof(msg),
                 "Request too large: it needs %lld %s, over this API key's limit of %lld %s per "
                 "minute (tokens count the prompt plus max_tokens for each choice): lower "
                 "max_tokens or n, or shorten the prompt",
                 (long long)why->need, what, (long long)why->limit, what);
        return hs__send_error_ex(s, c, rq, 429, why->tokens ? "max_tokens" : NULL,
                                 "rate_limit_exceeded", "X-Should-Retry", "false", msg);
    }
    snprintf(msg, sizeof(msg),
             "Rate limit reached for this API key: %lld %s per minute; this request needs %lld. "
             "Please try again in %llds.",
             (long long)why->limit, what, (long long)why->need, (long long)why->retry_s);
    snprintf(retry, sizeof(retry), "%lld", (long long)why->retry_s);
    return hs__send_error_ex(s, c, rq, 429, NULL, "rate_limit_exceeded", "Retry-After", retry, msg);
}
