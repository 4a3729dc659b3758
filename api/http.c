/* api/http.c: connections. libmicrohttpd polls every socket from a small thread pool (epoll);
 * this file decides what a connection may cost: how many there are (in total and per client
 * address), how long each phase may take (headers, body, keep-alive: enforced by a reaper thread
 * that shuts the socket of whoever is late), what is refused before a body is read (framing
 * that could smuggle a request, a foreign Host or Origin, a missing or wrong API key, a body too
 * big or of the wrong type) and how much body memory all connections may hold together. */
#include "api/server-impl.h"
#include "api/vision.h"
#include "api/reasoning.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "model/chat/chat-template.h"
#include "model/model.h"
#include "model/tokenizer/vocab.h"
#include "server/engine.h"

#define REAPER_TICK_MS 100 /* how late a deadline or a hung-up client may be noticed */

int64_t hs__now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* ---- tenants: SipHash-2-4 keyed by a per-process random key ---- */

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = ROTL(v1, 13);                                                                         \
        v1 ^= v0;                                                                                  \
        v0 = ROTL(v0, 32);                                                                         \
        v2 += v3;                                                                                  \
        v3 = ROTL(v3, 16);                                                                         \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = ROTL(v3, 21);                                                                         \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = ROTL(v1, 17);                                                                         \
        v1 ^= v2;                                                                                  \
        v2 = ROTL(v2, 32);                                                                         \
    } while (0)

static uint64_t siphash24(const uint64_t k[2], const unsigned char *in, size_t n)
{
    uint64_t v0 = UINT64_C(0x736f6d6570736575) ^ k[0], v1 = UINT64_C(0x646f72616e646f6d) ^ k[1];
    uint64_t v2 = UINT64_C(0x6c7967656e657261) ^ k[0], v3 = UINT64_C(0x7465646279746573) ^ k[1];
    uint64_t b = (uint64_t)n << 56;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t m = 0;
        for (int j = 0; j < 8; j++) {
            m |= (uint64_t)in[i + (size_t)j] << (8 * j);
        }
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    for (int j = 0; i + (size_t)j < n; j++) {
        b |= (uint64_t)in[i + (size_t)j] << (8 * j);
    }
    v3 ^= b;
    SIPROUND;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

uint64_t hs__tenant_salt(const struct hs_api_server *s, int32_t tenant, const char *salt,
                         size_t n_salt)
{
    if (tenant == 0 && !salt) {
        return 0;
    }
    /* tenant (4 bytes), a flag, then the salt: (tenant, salt) pairs map to distinct inputs */
    unsigned char in[4 + 1 + HS__API_MAX_CACHE_SALT];
    n_salt = salt ? HS_MIN(n_salt, (size_t)HS__API_MAX_CACHE_SALT) : 0;
    for (int i = 0; i < 4; i++) {
        in[i] = (unsigned char)((uint32_t)tenant >> (8 * i));
    }
    in[4] = salt ? 1 : 0;
    if (n_salt > 0) {
        memcpy(in + 5, salt, n_salt);
    }
    uint64_t h = siphash24(s->salt_key, in, 5 + n_salt);
    return h ? h : 1;
}

/* ---- responses ---- */

static const char *error_type(int http)
{
    switch (http) {
    case 400:
    case 404:
    case 405:
    case 413:
    case 415:
        return http == 404 ? "not_found_error" : "invalid_request_error";
    case 401:
        return "authentication_error";
    case 403:
        return "permission_error";
    case 429:
        return "rate_limit_error";
    case 503:
        return "service_unavailable_error";
    default:
        return "server_error";
    }
}

json_t *hs__error_body(int http, const char *param, const char *code, const char *message)
{
    if (!code) {
        code = http == 401   ? "invalid_api_key"
               : http == 429 ? "rate_limit_exceeded"
               : http == 413 ? "request_too_large"
               : http == 504 ? "timeout"
                             : NULL;
    }
    json_t *msg = hs__api_json_str(message, strlen(message));
    return json_pack("{s:{s:o?,s:s,s:s?,s:s?}}", "error", "message", msg, "type", error_type(http),
                     "param", param && *param ? param : NULL, "code", code && *code ? code : NULL);
}

void hs__add_common_headers(struct hs_api_server *s, struct MHD_Response *r)
{
    if (s->p.cors) {
        MHD_add_response_header(r, "Access-Control-Allow-Origin", "*");
    }
    if (atomic_load(&s->quiesced)) {
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    }
}

/* Queues r; a request whose body was refused unread closes its connection (what is left of the
 * body would otherwise be read as the next request). */
enum MHD_Result hs__queue_response(struct hs_api_server *s, struct MHD_Connection *c,
                                   struct hs__req *rq, unsigned code, struct MHD_Response *r)
{
    hs__add_common_headers(s, r);
    struct hs__rl_view rl[2];
    if (rq->tenant > 0 && s->keys.limited &&
        hs__keyring_view(&s->keys, rq->tenant, hs__now_ms(), rl)) {
        hs__rl_add_headers(r, rl);
    }
    if (rq->has_body && !rq->body_done && !atomic_load(&s->quiesced)) {
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    }
    enum MHD_Result ret = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    rq->status = (int)code;
    return ret;
}

enum MHD_Result hs__send_text(struct hs_api_server *s, struct MHD_Connection *c, struct hs__req *rq,
                              unsigned code, const char *ctype, char *text, size_t len,
                              const char *h1, const char *v1)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(
        len, text, text ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!r) {
        free(text);
        return MHD_NO;
    }
    if (ctype) {
        MHD_add_response_header(r, "Content-Type", ctype);
    }
    if (h1) {
        MHD_add_response_header(r, h1, v1);
    }
    return hs__queue_response(s, c, rq, code, r);
}

enum MHD_Result hs__send_json(struct hs_api_server *s, struct MHD_Connection *c, struct hs__req *rq,
                              unsigned code, json_t *j, const char *h1, const char *v1)
{
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text) {
        static char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\","
                            "\"param\":null,\"code\":null}}";
        struct MHD_Response *r =
            MHD_create_response_from_buffer(strlen(oom), oom, MHD_RESPMEM_PERSISTENT);
        if (!r) {
            return MHD_NO;
        }
        MHD_add_response_header(r, "Content-Type", "application/json");
        return hs__queue_response(s, c, rq, 503, r);
    }
    return hs__send_text(s, c, rq, code, "application/json", text, strlen(text), h1, v1);
}

enum MHD_Result hs__send_error_ex(struct hs_api_server *s, struct MHD_Connection *c,
                                  struct hs__req *rq, int http, const char *param, const char *code,
                                  const char *h1, const char *v1, const char *message)
{
    if (!h1 && (http == 429 || http == 503)) {
        h1 = "Retry-After";
        v1 = "1";
    } else if (!h1 && http == 401) {
        h1 = "WWW-Authenticate";
        v1 = "Bearer";
    }
    if (http >= 500) {
        HS_LOG_WARN("req=%llu error %d: %s", (unsigned long long)rq->id, http, message);
    }
    return hs__send_json(s, c, rq, (unsigned)http, hs__error_body(http, param, code, message), h1,
                         v1);
}

enum MHD_Result hs__send_error(struct hs_api_server *s, struct MHD_Connection *c,
                               struct hs__req *rq, int http, const char *param, const char *fmt,
                               ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return hs__send_error_ex(s, c, rq, http, param, NULL, NULL, NULL, msg);
}

bool hs__socket_gone(MHD_socket fd)
{
    /* End of input (POLLRDHUP, a read of 0) is not a hang-up: a client may shut down its
     * sending side once its request is out and still read the answer. A peer that closed
     * entirely resets the connection at our next write, which POLLHUP/POLLERR then show. */
    struct pollfd pfd = {.fd = fd, .events = 0};
    if (poll(&pfd, 1, 0) <= 0) {
        return false;
    }
    return (pfd.revents & (POLLHUP | POLLERR | POLLNVAL)) != 0;
}

/* ---- header-time checks ---- */

struct header_counts {
    int content_length, transfer_encoding, host;
};

static enum MHD_Result count_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value)
{
    struct header_counts *n = cls;
    (void)kind;
    (void)value;
    n->content_length += !strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH);
    n->transfer_encoding += !strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    n->host += !strcasecmp(key, MHD_HTTP_HEADER_HOST);
    return MHD_YES;
}

/* A NUL byte in the request line cuts what MHD hands over at the NUL (so "GET /health\0..."
 * would be served as /health): MHD's method, URI and version strings sit in one buffer, so a
 * URI whose text ends before the version begins held a NUL (likewise the method). */
static bool request_line_clean(const struct hs__req *rq, const char *method, const char *version)
{
    if (!rq->uri_raw || !version || !*version) {
        return true;
    }
    if (version <= rq->uri_raw || (size_t)(version - 1 - rq->uri_raw) != rq->uri_len) {
        return false;
    }
    const char *p = method + strlen(method);
    if (p >= rq->uri_raw) {
        return false;
    }
    for (p++; p < rq->uri_raw; p++) {
        if (*p != ' ') {
            return false;
        }
    }
    return true;
}

/* Splits "host[:port]" / "[v6]:port" into a lower-case host; false when malformed. */
static bool host_part(const char *v, size_t n, char *out, size_t cap, bool *is_ip)
{
    const char *end = v + n;
    const char *h = v, *he;
    *is_ip = false;
    if (n == 0) {
        return false;
    }
    if (*v == '[') {
        he = memchr(v, ']', n);
        if (!he) {
            return false;
        }
        h = v + 1;
        if (he + 1 != end && he[1] != ':') {
            return false;
        }
        *is_ip = true;
    } else {
        he = memchr(v, ':', n);
        he = he ? he : end;
    }
    size_t len = (size_t)(he - h);
    if (len == 0 || len >= cap) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        char ch = h[i];
        if (ch <= ' ' || ch >= 0x7f || ch == '/' || ch == '@' || ch == '\\') {
            return false;
        }
        out[i] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
    }
    out[len] = '\0';
    const char *port = *v == '[' ? (he + 1 < end ? he + 2 : NULL) : (he < end ? he + 1 : NULL);
    if (port && (port == end || strspn(port, "0123456789") != (size_t)(end - port))) {
        return false;
    }
    if (!*is_ip) {
        struct in_addr a4;
        *is_ip = inet_pton(AF_INET, out, &a4) == 1;
    } else {
        struct in6_addr a6;
        if (inet_pton(AF_INET6, out, &a6) != 1) {
            return false;
        }
    }
    return true;
}

static bool name_allowed(const struct hs_api_server *s, const char *h)
{
    size_t n = strlen(h);
    if (!strcmp(h, "localhost") || (n > 10 && !strcmp(h + n - 10, ".localhost")) ||
        (s->hostname[0] && !strcmp(h, s->hostname))) {
        return true;
    }
    for (int32_t i = 0; i < s->n_hosts; i++) {
        const char *a = s->hosts[i];
        if (!strcmp(a, h)) {
            return true;
        }
        size_t an = strlen(a);
        if (an > 2 && a[0] == '*' && a[1] == '.' && n > an - 1 &&
            !strcmp(h + n - (an - 1), a + 1)) {
            return true;
        }
    }
    return false;
}

static bool ip_is_loopback(const char *ip)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, ip, &a4) == 1) {
        return (ntohl(a4.s_addr) >> 24) == 127;
    }
    return inet_pton(AF_INET6, ip, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

/* Host: an IP literal (no DNS name, so no DNS rebinding), localhost, this machine's name or a
 * configured name. */
static bool host_ok(const struct hs_api_server *s, const char *v)
{
    char h[256];
    bool ip;
    if (s->any_host) {
        return true;
    }
    return host_part(v, strlen(v), h, sizeof(h), &ip) && (ip || name_allowed(s, h));
}

/* Origin (a browser page's): the same names, and IP literals only for loopback or the listen
 * address (a page from any other address is another site). */
static bool origin_ok(const struct hs_api_server *s, const char *v)
{
    char h[256];
    bool ip;
    if (s->any_host || s->p.cors) {
        return true;
    }
    const char *p = strstr(v, "://");
    if (!p) {
        return false; /* "null" (sandboxed or file: pages) included */
    }
    p += 3;
    size_t n = strcspn(p, "/");
    if (!host_part(p, n, h, sizeof(h), &ip)) {
        return false;
    }
    return ip ? ip_is_loopback(h) || !strcasecmp(h, s->p.host) : name_allowed(s, h);
}

/* The tenant of a request: 0 when no key is configured, k + 1 for the k-th key, -1 when the
 * key is missing or wrong. Whitespace around the token is ignored ("Bearer k1 " is k1). */
static int32_t authorize(const struct hs_api_server *s, struct MHD_Connection *c)
{
    if (s->keys.n == 0) {
        return 0;
    }
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) {
        return -1;
    }
    h += 7;
    h += strspn(h, " \t");
    size_t n = strlen(h);
    while (n > 0 && (h[n - 1] == ' ' || h[n - 1] == '\t')) {
        n--;
    }
    return hs__keyring_find(&s->keys, h, n);
}

static bool json_content_type(struct MHD_Connection *c)
{
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    if (!ct) {
        return false;
    }
    ct += strspn(ct, " \t");
    return strncasecmp(ct, "application/json", 16) == 0 &&
           (ct[16] == '\0' || ct[16] == ';' || ct[16] == ' ' || ct[16] == '\t');
}

/* CORS preflight: the headers the page asks for are echoed back when they are plain header
 * names (the OpenAI JS SDK sends x-stainless-*, OpenAI-Organization, ...); else a fixed list. */
static enum MHD_Result preflight(struct hs_api_server *s, struct MHD_Connection *c,
                                 struct hs__req *rq, const char *allow)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    if (!r) {
        return MHD_NO;
    }
    MHD_add_response_header(r, "Allow", allow);
    if (s->p.cors) {
        const char *want =
            MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Access-Control-Request-Headers");
        bool plain = want && strlen(want) < 1024 &&
                     strspn(want, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                  "0123456789-_, ") == strlen(want);
        MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
        MHD_add_response_header(
            r, "Access-Control-Allow-Headers",
            plain ? want
                  : "Authorization, Content-Type, Accept, OpenAI-Organization, OpenAI-Project, "
                    "OpenAI-Beta, X-Stainless-Lang, X-Stainless-Package-Version, X-Stainless-OS, "
                    "X-Stainless-Arch, X-Stainless-Runtime, X-Stainless-Runtime-Version, "
                    "X-Stainless-Retry-Count, X-Stainless-Timeout, X-Stainless-Async, "
                    "X-Stainless-Helper-Method, X-Stainless-Poll-Helper, "
                    "X-Stainless-Custom-Poll-Interval");
        MHD_add_response_header(r, "Access-Control-Max-Age", "86400");
    }
    return hs__queue_response(s, c, rq, 204, r);
}

static void set_phase(struct hs_api_server *s, struct hs__req *rq, enum hs__phase ph,
                      int64_t timeout_ms)
{
    if (!rq->conn) {
        return;
    }
    pthread_mutex_lock(&s->conns_mu);
    rq->conn->phase = ph;
    rq->conn->deadline_ms = timeout_ms > 0 ? hs__now_ms() + timeout_ms : 0;
    pthread_mutex_unlock(&s->conns_mu);
}

/* The first call for a request: its headers are in, its body (if any) is not. Everything that
 * can be refused is refused here, so a refused body is never read. */
static enum MHD_Result on_headers(struct hs_api_server *s, struct MHD_Connection *c,
                                  struct hs__req *rq, const char *url, const char *method,
                                  const char *version)
{
    set_phase(s, rq, HS__PH_ACTIVE, 0); /* an answer given now is not cut by a deadline */
    hs__api_log_escape(rq->method, sizeof(rq->method), method, strlen(method));
    size_t ulen = strcspn(url, "?");
    hs__api_log_escape(rq->path_log, sizeof(rq->path_log), url, ulen);
    struct header_counts hc = {0};
    MHD_get_connection_values(c, MHD_HEADER_KIND, count_header, &hc);
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
    const char *te = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Transfer-Encoding");
    rq->has_body = te || (cl && strtoull(cl, NULL, 10) > 0);

    if (!request_line_clean(rq, method, version)) {
        rq->has_body = true; /* close: nothing after this line can be trusted */
        return hs__send_error(s, c, rq, 400, NULL, "the request line holds a NUL byte");
    }
    if (hc.content_length > 1 || hc.transfer_encoding > 1 || (hc.content_length && te) ||
        hc.host > 1) {
        rq->has_body = true;
        return hs__send_error(s, c, rq, 400, NULL,
                              "ambiguous message framing: more than one Content-Length, "
                              "Transfer-Encoding or Host header, or both Content-Length and "
                              "Transfer-Encoding (RFC 9112 section 6.3)");
    }
    if (te && strcasecmp(te, "chunked") != 0) {
        rq->has_body = true;
        return hs__send_error(s, c, rq, 400, NULL, "only Transfer-Encoding: chunked is accepted");
    }
    const char *host = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Host");
    if (!host && !strcmp(version, MHD_HTTP_VERSION_1_1)) {
        return hs__send_error(s, c, rq, 400, NULL, "HTTP/1.1 requests need a Host header");
    }
    if (host && !host_ok(s, host)) {
        char esc[96];
        hs__api_log_escape(esc, sizeof(esc), host, strlen(host));
        HS_LOG_INFO("req=%llu refused Host \"%s\"", (unsigned long long)rq->id, esc);
        return hs__send_error(s, c, rq, 403, NULL,
                              "Host '%.80s' is not allowed: use an IP address or localhost, or "
                              "start the server with --allowed-host NAME",
                              host);
    }
    if (atomic_load(&s->n_conns) > s->p.max_connections) {
        rq->has_body = true;
        return hs__send_error(s, c, rq, 503, NULL,
                              "the server is at its connection limit (%d); retry later",
                              (int)s->p.max_connections);
    }
    const char *allow = NULL;
    bool is_preflight = false;
    rq->route = hs__route_find(url, method, &allow, &is_preflight);
    if (is_preflight) {
        return preflight(s, c, rq, allow);
    }
    if (!rq->route && allow) {
        char msg[320];
        snprintf(msg, sizeof(msg), "method %.16s is not allowed on %.200s (allowed: %s)", method,
                 rq->path_log, allow);
        return hs__send_error_ex(s, c, rq, 405, NULL, NULL, "Allow", allow, msg);
    }
    if (!rq->route) {
        return hs__send_error(s, c, rq, 404, NULL, "no route %.16s %.*s", method,
                              (int)HS_MIN(ulen, 200), url);
    }
    if (rq->has_body && strcmp(rq->route->method, "POST") != 0) {
        /* GET routes need no key: buffering their bodies would be memory before
         * authentication */
        return hs__send_error(s, c, rq, 400, NULL, "%s %s takes no request body", method,
                              rq->route->path);
    }
    if (atomic_load(&s->quiesced) && !rq->route->drain) {
        return hs__send_error(s, c, rq, 503, NULL, "the server is shutting down");
    }
    if (!atomic_load(&s->ready) && rq->route->id != HS__R_HEALTH) {
        return hs__send_error_ex(s, c, rq, 503, NULL, "model_loading", "Retry-After", "1",
                                 "the model is still loading; retry in a moment");
    }
    const char *origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
    if (origin && !origin_ok(s, origin)) {
        return hs__send_error(s, c, rq, 403, NULL,
                              "Origin '%.80s' is not allowed: cross-origin browser requests need "
                              "--cors (and an API key)",
                              origin);
    }
    rq->tenant = rq->route->auth ? authorize(s, c) : 0;
    if (rq->tenant < 0) {
        return hs__send_error(s, c, rq, 401, NULL,
                              "missing or wrong API key (send 'Authorization: Bearer <key>')");
    }
    if (!strcmp(rq->route->method, "POST") && !json_content_type(c)) {
        return hs__send_error(s, c, rq, 415, NULL,
                              "POST bodies must be sent with Content-Type: application/json");
    }
    if (cl && strtoull(cl, NULL, 10) > s->p.max_body_bytes) {
        return hs__send_error(s, c, rq, 413, NULL, "request body exceeds the limit of %zu bytes",
                              s->p.max_body_bytes);
    }
    struct hs__rl_refusal why;
    if (rq->tenant > 0 && !hs__keyring_charge(&s->keys, rq->tenant, 1, 0, hs__now_ms(), &why)) {
        return hs__rl_refuse(s, c, rq, &why); /* before the body: it is never read */
    }
    if (rq->has_body) {
        set_phase(s, rq, HS__PH_BODY, s->p.body_timeout_ms);
    }
    return MHD_YES;
}

/* ---- bodies ---- */

static void body_release(struct hs_api_server *s, struct hs__req *rq)
{
    hs__buf_free(&rq->body);
    if (rq->body_charged > 0) {
        atomic_fetch_sub(&s->body_bytes, (int64_t)rq->body_charged);
        rq->body_charged = 0;
    }
}

/* Appends a chunk, charging the buffer's growth to the total of all bodies first: past
 * max_body_memory_bytes the request is refused (503) and the rest of its body discarded. */
static void body_add(struct hs_api_server *s, struct hs__req *rq, const char *data, size_t n)
{
    if (rq->too_big || rq->over_budget) {
        return;
    }
    if (rq->body.len + n > s->p.max_body_bytes) {
        rq->too_big = true;
        body_release(s, rq);
        return;
    }
    size_t need = rq->body.len + n + 1;
    if (need > rq->body.cap) {
        size_t cap = HS_MIN(HS_MAX(rq->body.cap * 2, need + 1024), s->p.max_body_bytes + 1);
        cap = HS_MAX(cap, need);
        int64_t grow = (int64_t)(cap - rq->body.cap);
        int64_t now = atomic_fetch_add(&s->body_bytes, grow) + grow;
        char *p = now <= (int64_t)s->p.max_body_memory_bytes ? realloc(rq->body.p, cap) : NULL;
        if (!p) {
            atomic_fetch_sub(&s->body_bytes, grow);
            rq->over_budget = true;
            body_release(s, rq);
            return;
        }
        rq->body.p = p;
        rq->body.cap = cap;
        rq->body_charged += (size_t)grow;
    }
    memcpy(rq->body.p + rq->body.len, data, n);
    rq->body.len += n;
    rq->body.p[rq->body.len] = '\0';
}

/* ---- MHD callbacks ---- */

static struct hs__req *req_new(struct hs_api_server *s, struct MHD_Connection *c)
{
    struct hs__req *rq = calloc(1, sizeof(*rq));
    if (!rq) {
        return NULL;
    }
    rq->id = atomic_fetch_add(&s->next_id, 1) + 1;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    rq->conn = ci ? ci->socket_context : NULL;
    if (rq->conn) {
        pthread_mutex_lock(&s->conns_mu);
        rq->conn->req = rq;
        pthread_mutex_unlock(&s->conns_mu);
    }
    return rq;
}

/* MHD's URI log hook: called for each request line, before MHD cuts or unescapes the URI; its
 * result becomes the request context. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c)
{
    struct hs__req *rq = req_new(cls, c);
    if (rq) {
        rq->uri_raw = uri;
        rq->uri_len = strlen(uri);
    }
    return rq;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **req_cls)
{
    struct hs_api_server *s = cls;
    struct hs__req *rq = *req_cls;
    if (!rq) {
        rq = req_new(s, c);
        if (!rq) {
            return MHD_NO;
        }
        *req_cls = rq;
    }
    if (!rq->started) {
        rq->started = true;
        enum MHD_Result r = on_headers(s, c, rq, url, method, version);
        rq->uri_raw = NULL; /* MHD's buffer moves on */
        return r;
    }
    if (*upload_size > 0) {
        body_add(s, rq, upload_data, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }
    if (rq->job) {
        return hs__generate_resume(s, c, rq);
    }
    if (rq->status != 0) {
        return MHD_YES; /* answered already */
    }
    set_phase(s, rq, HS__PH_ACTIVE, 0);
    rq->body_done = true;
    if (rq->too_big) {
        return hs__send_error(s, c, rq, 413, NULL, "request body exceeds the limit of %zu bytes",
                              s->p.max_body_bytes);
    }
    if (rq->over_budget) {
        return hs__send_error(s, c, rq, 503, NULL,
                              "the server holds too many request bodies now; retry later");
    }
    enum MHD_Result r = hs__route_run(s, c, rq);
    body_release(s, rq); /* parsed: nothing points into it */
    return r;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct hs_api_server *s = cls;
    struct hs__req *rq = *req_cls;
    (void)c;
    if (!rq) {
        return;
    }
    *req_cls = NULL;
    const char *addr = rq->conn ? rq->conn->addr : "?";
    if (rq->status != 0 || toe != MHD_REQUEST_TERMINATED_COMPLETED_OK) {
        HS_LOG_INFO("req=%llu %s %s %s -> %d%s", (unsigned long long)rq->id, addr, rq->method,
                    rq->path_log, rq->status,
                    toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (connection ended early)");
    }
    if (rq->conn) {
        pthread_mutex_lock(&s->conns_mu);
        if (rq->conn->req == rq) {
            rq->conn->req = NULL;
        }
        rq->conn->phase = HS__PH_IDLE;
        rq->conn->deadline_ms =
            atomic_load(&s->quiesced) ? hs__now_ms() : hs__now_ms() + s->p.keepalive_timeout_ms;
        pthread_mutex_unlock(&s->conns_mu);
    }
    hs__job_free(rq->job);
    body_release(s, rq);
    free(rq);
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    struct hs_api_server *s = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        atomic_fetch_add(&s->n_conns, 1);
        struct hs__conn *cn = calloc(1, sizeof(*cn));
        *socket_context = cn;
        if (!cn) {
            return;
        }
        cn->c = c;
        const union MHD_ConnectionInfo *fi =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        cn->fd = fi ? fi->connect_fd : MHD_INVALID_SOCKET;
        const union MHD_ConnectionInfo *ai =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        snprintf(cn->addr, sizeof(cn->addr), "?");
        if (ai && ai->client_addr && ai->client_addr->sa_family == AF_INET) {
            inet_ntop(AF_INET, &((const struct sockaddr_in *)ai->client_addr)->sin_addr, cn->addr,
                      sizeof(cn->addr));
        } else if (ai && ai->client_addr && ai->client_addr->sa_family == AF_INET6) {
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ai->client_addr)->sin6_addr,
                      cn->addr, sizeof(cn->addr));
        }
        cn->phase = HS__PH_HEADERS;
        pthread_mutex_lock(&s->conns_mu);
        cn->deadline_ms = hs__now_ms() + s->p.header_timeout_ms;
        cn->next = s->conns;
        if (s->conns) {
            s->conns->prev = cn;
        }
        s->conns = cn;
        pthread_mutex_unlock(&s->conns_mu);
        return;
    }
    /* Closed: MHD closes the socket only after this returns, so the reaper (which shuts
     * sockets under conns_mu) never touches a reused descriptor. */
    struct hs__conn *cn = *socket_context;
    if (cn) {
        pthread_mutex_lock(&s->conns_mu);
        if (cn->prev) {
            cn->prev->next = cn->next;
        } else {
            s->conns = cn->next;
        }
        if (cn->next) {
            cn->next->prev = cn->prev;
        }
        pthread_mutex_unlock(&s->conns_mu);
        free(cn);
        *socket_context = NULL;
    }
    atomic_fetch_sub(&s->n_conns, 1);
}

#if defined(__GNUC__)
__attribute__((format(printf, 2, 0)))
#endif
static void
mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512], esc[600];
    (void)cls;
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    n = HS_MIN(HS_MAX(n, 0), (int)sizeof(msg) - 1);
    while (n > 0 && msg[n - 1] == '\n') {
        n--;
    }
    hs__api_log_escape(esc, sizeof(esc), msg, (size_t)n); /* MHD quotes what clients sent */
    HS_LOG_DEBUG("http: %s", esc);
}

/* ---- the reaper: deadlines and hung-up clients ---- */

static void *reaper_main(void *arg)
{
    struct hs_api_server *s = arg;
    pthread_mutex_lock(&s->conns_mu);
    while (!s->reaper_quit) {
        int64_t now = hs__now_ms();
        for (struct hs__conn *cn = s->conns; cn; cn = cn->next) {
            if (cn->fd == MHD_INVALID_SOCKET) {
                continue;
            }
            if (cn->req && cn->req->job) {
                if (hs__socket_gone(cn->fd)) {
                    hs__job_client_gone(cn->req->job);
                }
            } else if (!cn->shut && cn->deadline_ms > 0 && now >= cn->deadline_ms) {
                /* MHD sees the end of the stream and closes the connection itself */
                shutdown(cn->fd, SHUT_RDWR);
                cn->shut = true;
            }
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += REAPER_TICK_MS * 1000000L;
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&s->reaper_cv, &s->conns_mu, &ts);
    }
    pthread_mutex_unlock(&s->conns_mu);
    return NULL;
}

/* ---- lifecycle ---- */

struct hs_api_params hs_api_default_params(void)
{
    return (struct hs_api_params){
        .host = "127.0.0.1",
        .port = 8080,
        .max_body_bytes = (size_t)4 << 20,
        .max_body_memory_bytes = (size_t)64 << 20,
        .max_json_depth = 64,
        .max_output_items = HS__API_MAX_OUTPUT_ITEMS,
        .max_connections = 1024,
        .max_connections_per_ip = 256,
        .http_threads = 4,
        .header_timeout_ms = 10000,
        .body_timeout_ms = 30000,
        .keepalive_timeout_ms = 5000,
        .reasoning_auto = true,
    };
}

static hs_status copy_config(struct hs_api_server *s, const struct hs_api_params *p,
                             struct hs_error *err)
{
    const struct hs_api_params d = hs_api_default_params();
    s->p = *p;
    s->p.host = p->host ? p->host : d.host;
#define DEFAULT(f)                                                                                 \
    if (s->p.f <= 0) {                                                                             \
        s->p.f = d.f;                                                                              \
    }
    DEFAULT(max_body_bytes);
    DEFAULT(max_body_memory_bytes);
    DEFAULT(max_json_depth);
    DEFAULT(max_output_items);
    DEFAULT(max_connections);
    DEFAULT(http_threads);
    DEFAULT(header_timeout_ms);
    DEFAULT(body_timeout_ms);
    DEFAULT(keepalive_timeout_ms);
#undef DEFAULT
    if (s->p.max_connections_per_ip < 0 || s->p.n_api_keys < 0 || s->p.n_allowed_hosts < 0 ||
        s->p.http_threads > 256) {
        return hs_error_set(err, HS_E_INVAL, "bad connection limits or list sizes");
    }
    if (s->p.max_body_memory_bytes <= s->p.max_body_bytes) {
        return hs_error_set(err, HS_E_INVAL,
                            "the memory for request bodies in total (--max-body-memory, %zu "
                            "bytes) must exceed the largest body (--max-body-bytes, %zu bytes)",
                            s->p.max_body_memory_bytes, s->p.max_body_bytes);
    }
    s->hosts = calloc((size_t)HS_MAX(p->n_allowed_hosts, 1), sizeof(char *));
    if (!s->hosts) {
        return hs_error_set(err, HS_E_NOMEM, "out of memory");
    }
    int32_t n = (p->api_key ? 1 : 0) + p->n_api_keys;
    for (int32_t i = 0; i < n; i++) {
        const char *k = i == 0 && p->api_key ? p->api_key : p->api_keys[i - (p->api_key ? 1 : 0)];
        hs_status st = hs__keyring_add(&s->keys, k, k ? strlen(k) : 0, 0, 0, 0, err);
        if (st != HS_OK) {
            return st;
        }
    }
    if (p->api_key_file) {
        struct hs_error e = {0};
        hs_status st = hs__keyring_load(&s->keys, p->api_key_file, &e);
        if (st != HS_OK) {
            /* a malformed file is a bad argument, as a malformed --api-key is */
            return hs_error_set(err, st == HS_E_FORMAT ? HS_E_INVAL : st, "%s", e.message);
        }
    }
    for (int32_t i = 0; i < p->n_allowed_hosts; i++) {
        const char *h = p->allowed_hosts[i];
        if (!h || !*h || strlen(h) > 253) {
            return hs_error_set(err, HS_E_INVAL, "allowed host names must be 1 to 253 bytes");
        }
        s->any_host |= !strcmp(h, "*");
        char *c = strdup(h);
        if (!c) {
            return hs_error_set(err, HS_E_NOMEM, "out of memory");
        }
        for (char *q = c; *q; q++) {
            *q = (char)(*q >= 'A' && *q <= 'Z' ? *q + 32 : *q);
        }
        s->hosts[s->n_hosts++] = c;
    }
    s->p.api_key = NULL;
    s->p.api_keys = NULL;
    s->p.n_api_keys = 0;
    s->p.api_key_file = NULL;
    s->p.allowed_hosts = NULL;
    s->p.n_allowed_hosts = 0;
    if (gethostname(s->hostname, sizeof(s->hostname)) != 0) {
        s->hostname[0] = '\0';
    }
    s->hostname[sizeof(s->hostname) - 1] = '\0';
    for (char *q = s->hostname; *q; q++) {
        *q = (char)(*q >= 'A' && *q <= 'Z' ? *q + 32 : *q);
    }
    if (getrandom(s->salt_key, sizeof(s->salt_key), 0) != (ssize_t)sizeof(s->salt_key)) {
        return hs_error_set(err, HS_E_IO, "cannot read random bytes for the cache salts");
    }
    return HS_OK;
}

/* Open files: one per connection plus a margin for the model, logs and MHD's own. */
static void raise_fd_limit(struct hs_api_server *s, unsigned hard_conns)
{
    struct rlimit rl;
    rlim_t want = (rlim_t)hard_conns + 128;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want) {
        return;
    }
    rlim_t old = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY ? want : HS_MIN(want, rl.rlim_max);
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < want) {
        int fit = (int)HS_MAX((int64_t)(rl.rlim_cur > old ? rl.rlim_cur : old) - 128, 16) * 4 / 5;
        HS_LOG_WARN("http: open-file limit %llu is too low for %d connections; serving %d",
                    (unsigned long long)HS_MAX(rl.rlim_cur, old), (int)s->p.max_connections, fit);
        s->p.max_connections = fit;
    }
}

hs_status hs_api_server_attach(struct hs_api_server *s, struct hs_model *model,
                               struct hs_engine *engine, struct hs_error *err)
{
    if (atomic_load(&s->ready) || s->model) {
        return hs_error_set(err, HS_E_INVAL, "the server already serves a model");
    }
    /* Nothing below is read by an HTTP thread before ready is set (on_headers refuses every
     * route but /health until then, and /health reads none of it). */
    s->model = model;
    s->eng = engine;
    s->vocab = hs_model_vocab(model);
    const char *src = hs_model_chat_template(model);
    if (src && *src) {
        struct hs_error te = {0};
        if (hs_chat_template_parse(src, strlen(src), &s->tmpl, &te) != HS_OK) {
            /* Rendering chats some other way would silently change every prompt: refuse. */
            s->tmpl = NULL;
            s->model = NULL;
            s->eng = NULL;
            return hs_error_set(err, HS_E_FORMAT,
                                "the model's chat template (tokenizer.chat_template) does not "
                                "parse: %s; use a model file with a valid template",
                                te.message);
        }
    }
    s->pctx = (struct hs__api_ctx){.vocab = s->vocab,
                                   .tmpl = s->tmpl,
                                   .max_depth = s->p.max_json_depth,
                                   .model_name = s->model_name,
                                   .n_ctx = hs_engine_n_ctx(engine),
                                   .max_output_items = s->p.max_output_items,
                                   .tools = &s->tools_caps,
                                   .reasoning_format = s->p.reasoning_format,
                                   .reasoning_markers = s->p.reasoning_markers,
                                   .reasoning_family = (int)hs__reasoning_template_family(src),
                                   .reasoning_auto = s->p.reasoning_auto &&
                                                     hs__reasoning_template_has_modes(src)};
    hs__tools_probe(s->tmpl, s->vocab, &s->tools_caps);
    if (s->p.mmproj) {
        hs_status st =
            hs__api_vision_create(s->p.mmproj, hs_model_hparams(model)->n_embd, s->p.vision_threads,
                                  s->p.allow_image_urls, hs_engine_trace(engine), &s->vision, err);
        if (st != HS_OK) {
            hs_chat_template_destroy(s->tmpl);
            s->tmpl = NULL;
            s->model = NULL;
            s->eng = NULL;
            s->vision = NULL;
            return st;
        }
        s->pctx.vision = s->vision;
    }
    atomic_store(&s->ready, true);
    return HS_OK;
}

hs_status hs_api_server_start(struct hs_model *model, struct hs_engine *engine,
                              const struct hs_api_params *p, struct hs_api_server **out,
                              struct hs_error *err)
{
    hs_status st = hs_api_server_listen(p, out, err);
    if (st == HS_OK && (st = hs_api_server_attach(*out, model, engine, err)) != HS_OK) {
        hs_api_server_stop(*out);
        *out = NULL;
    }
    return st;
}

hs_status hs_api_server_listen(const struct hs_api_params *p, struct hs_api_server **out,
                               struct hs_error *err)
{
    *out = NULL;
    hs_status st = HS_OK;
    struct hs_api_server *s = calloc(1, sizeof(*s));
    if (!s) {
        return hs_error_set(err, HS_E_NOMEM, "out of memory");
    }
    pthread_mutex_init(&s->conns_mu, NULL);
    pthread_cond_init(&s->reaper_cv, NULL);
    hs__keyring_init(&s->keys);
    s->listen_fd = MHD_INVALID_SOCKET;
    st = copy_config(s, p, err);
    if (st != HS_OK) {
        goto fail;
    }
    s->model_name = strdup(p->model_name && *p->model_name ? p->model_name : "hetserve");
    if (!s->model_name) {
        st = hs_error_set(err, HS_E_NOMEM, "out of memory");
        goto fail;
    }
    s->p.model_name = s->model_name;
    s->created = (int64_t)time(NULL);

    struct sockaddr_storage ss = {0};
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, s->p.host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(s->p.port);
    } else if (inet_pton(AF_INET6, s->p.host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(s->p.port);
        flags |= MHD_USE_IPv6;
    } else {
        st = hs_error_set(err, HS_E_INVAL,
                          "--host must be a numeric IPv4 or IPv6 address, got '%.100s'", s->p.host);
        goto fail;
    }
    /* New connections past max_connections still get a 503 up to 5/4 of it; past that they wait
     * in the listen backlog. */
    unsigned hard = (unsigned)s->p.max_connections + (unsigned)s->p.max_connections / 4 + 16;
    raise_fd_limit(s, hard);
    hard = (unsigned)s->p.max_connections + (unsigned)s->p.max_connections / 4 + 16;
    unsigned io_timeout_s = (unsigned)HS_MAX((s->p.body_timeout_ms + 999) / 1000, 1);
    if (pthread_create(&s->reaper, NULL, reaper_main, s) != 0) {
        st = hs_error_set(err, HS_E_INTERNAL, "cannot start the connection reaper thread");
        goto fail;
    }
    s->reaper_started = true;
    s->d = MHD_start_daemon(
        flags, s->p.port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)s->p.http_threads, MHD_OPTION_URI_LOG_CALLBACK,
        on_uri, s, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_NOTIFY_CONNECTION,
        on_connection, s, MHD_OPTION_CONNECTION_LIMIT, hard, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        (unsigned)s->p.max_connections_per_ip, MHD_OPTION_CONNECTION_TIMEOUT, io_timeout_s,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)1024, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s,
        MHD_OPTION_END);
    if (!s->d) {
        st = hs_error_set(err, HS_E_IO, "cannot listen on %s port %u: %s", s->p.host,
                          (unsigned)s->p.port, strerror(errno));
        goto fail;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : s->p.port;
    *out = s;
    return HS_OK;
fail:
    hs_api_server_stop(s);
    return st;
}

uint16_t hs_api_server_port(const struct hs_api_server *s)
{
    return s->port;
}

void hs_api_server_quiesce(struct hs_api_server *s)
{
    if (atomic_exchange(&s->quiesced, true)) {
        return;
    }
    /* MHD's threads may still hold the listening socket: it is closed after they stop; shut
     * now, so new connections are refused at once instead of waiting in the backlog. */
    s->listen_fd = MHD_quiesce_daemon(s->d);
    if (s->listen_fd != MHD_INVALID_SOCKET) {
        shutdown(s->listen_fd, SHUT_RDWR);
    }
    /* Nothing more will be served on a connection that has no request now: close those at once
     * instead of at their keep-alive or header deadline. */
    pthread_mutex_lock(&s->conns_mu);
    int64_t now = hs__now_ms();
    for (struct hs__conn *cn = s->conns; cn; cn = cn->next) {
        if (!cn->req && (cn->phase == HS__PH_IDLE || cn->phase == HS__PH_HEADERS)) {
            cn->deadline_ms = now;
        }
    }
    pthread_cond_broadcast(&s->reaper_cv);
    pthread_mutex_unlock(&s->conns_mu);
}

bool hs_api_server_wait_idle(struct hs_api_server *s, int64_t timeout_ms)
{
    int64_t t0 = hs__now_ms();
    for (;;) {
        if (atomic_load(&s->n_conns) <= 0) {
            return true;
        }
        if (timeout_ms >= 0 && hs__now_ms() - t0 >= timeout_ms) {
            return false;
        }
        struct timespec d = {0, 10 * 1000000};
        nanosleep(&d, NULL);
    }
}

void hs_api_server_stop(struct hs_api_server *s)
{
    if (!s) {
        return;
    }
    atomic_store(&s->stopping, true);
    if (s->d) {
        /* MHD must not stop with suspended connections: wake every waiting job (they close). */
        pthread_mutex_lock(&s->conns_mu);
        for (struct hs__conn *cn = s->conns; cn; cn = cn->next) {
            if (cn->req && cn->req->job) {
                hs__job_wake(cn->req->job);
            }
        }
        pthread_mutex_unlock(&s->conns_mu);
        MHD_stop_daemon(s->d);
    }
    if (s->listen_fd != MHD_INVALID_SOCKET) {
        close(s->listen_fd);
    }
    if (s->reaper_started) {
        pthread_mutex_lock(&s->conns_mu);
        s->reaper_quit = true;
        pthread_cond_broadcast(&s->reaper_cv);
        pthread_mutex_unlock(&s->conns_mu);
        pthread_join(s->reaper, NULL);
    }
    hs_chat_template_destroy(s->tmpl);
    hs__api_vision_destroy(s->vision);
    for (int32_t i = 0; i < s->n_hosts; i++) {
        free(s->hosts[i]);
    }
    hs__keyring_finish(&s->keys);
    free(s->hosts);
    free(s->model_name);
    pthread_cond_destroy(&s->reaper_cv);
    pthread_mutex_destroy(&s->conns_mu);
    free(s);
}
