/* api/ internals shared by its three parts: http.c (connections: limits, timeouts, framing,
 * Host/Origin, authentication at header time, bodies, suspend/resume, lifecycle), server.c
 * (routes and the small handlers) and generate.c (completion jobs: engine events -> JSON/SSE).
 * Not for users, who see api/api.h only.
 *
 * Objects: one struct hs__conn per TCP connection (MHD's socket context), on s->conns; one
 * struct hs__req per HTTP request (MHD's request context), attached to its connection while it
 * runs; a generation request adds a struct hs__job, which waits for the engine with the
 * connection suspended and is resumed by the engine's notify callback.
 *
 * Locks, in the only order they are taken: s->conns_mu (the connection list, phases, deadlines,
 * conn->req), then a job's mu (its suspended/pending flags), then MHD's own. The engine calls
 * notify with the handle's notify lock held and notify takes the job's mu: so nobody may wait
 * for a handle's release (hs_engine_release) while holding a job's mu or s->conns_mu. */
#ifndef HS_API_SERVER_IMPL_H
#define HS_API_SERVER_IMPL_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api/api.h"
#include "api/request.h"
#include "api/tools.h"

struct hs_vocab;
struct hs_chat_template;
struct hs__job;
struct hs__req;

/* ---- routes (server.c) ---- */

enum hs__route_id {
    HS__R_CHAT,
    HS__R_COMPLETIONS,
    HS__R_MODELS,
    HS__R_HEALTH,
    HS__R_METRICS,
    HS__R_TOKENIZE,
    HS__R_DETOKENIZE,
    HS__R_COUNT,
};

struct hs__route {
    const char *path;
    const char *method; /* "GET" routes answer HEAD too */
    enum hs__route_id id;
    bool auth;  /* needs an API key (when keys are configured) */
    bool drain; /* still served while draining (health, metrics) */
};

/* The route of (path up to '?', method). NULL with *allow set to the methods the path takes
 * ("POST, OPTIONS") when only the method is wrong, NULL with *allow NULL when the path is
 * unknown. OPTIONS on a known path returns NULL with *allow set and *preflight true. */
const struct hs__route *hs__route_find(const char *url, const char *method, const char **allow,
                                       bool *preflight);

/* Runs the route's handler once the body is complete. HTTP threads. */
enum MHD_Result hs__route_run(struct hs_api_server *s, struct MHD_Connection *c,
                              struct hs__req *rq);

/* ---- connections and requests (http.c) ---- */

enum hs__phase {
    HS__PH_HEADERS, /* connected, waiting for a request's headers (header deadline) */
    HS__PH_BODY,    /* headers in, receiving the body (body deadline) */
    HS__PH_ACTIVE,  /* being answered (no deadline: the request's own timeout rules) */
    HS__PH_IDLE,    /* keep-alive between requests (keep-alive deadline) */
};

struct hs__conn {
    struct hs__conn *prev, *next; /* s->conns */
    struct MHD_Connection *c;
    MHD_socket fd;
    enum hs__phase phase;
    int64_t deadline_ms; /* monotonic ms when the reaper shuts the socket; 0: none */
    struct hs__req *req; /* the request being answered, or NULL */
    bool shut;           /* the reaper called shutdown() on fd */
    char addr[48];       /* client address for logs */
};

struct hs__req {
    uint64_t id;
    struct hs__conn *conn; /* NULL when MHD gave no socket context */
    const char *uri_raw;   /* in MHD's read buffer, valid during the first access call */
    size_t uri_len;
    bool started;   /* the header-time checks ran */
    bool has_body;  /* Content-Length > 0 or chunked */
    bool body_done; /* all of it was read: the connection may be kept */
    const struct hs__route *route;
    int32_t tenant; /* 0: no API key configured; k + 1: the k-th key */
    struct hs__buf body;
    size_t body_charged;       /* bytes of body capacity charged to s->body_bytes */
    bool too_big, over_budget; /* discard the rest of the body, answer 413 / 503 */
    int status;                /* answered HTTP status, for the log line */
    char method[8];
    char path_log[96];   /* escaped, for the log line */
    struct hs__job *job; /* a completion in progress, owned */
};

/* ---- admission (admit.c) ---- */

#define HS__MAX_KEY_BYTES 256
#define HS__MAX_RATE      INT64_C(1000000000) /* per minute, requests or tokens */

/* A token bucket: holds up to limit units, refilled at limit per minute. */
struct hs__bucket {
    int64_t limit; /* per minute; 0: no limit */
    int64_t level; /* units x 60000 (refilled by limit each ms); < 0: in debt */
    int64_t t_ms;  /* monotonic ms level was brought up to date */
};

struct hs__key {
    unsigned char bytes[HS__MAX_KEY_BYTES + 1]; /* the key, zero-padded: compared in full */
    size_t len;
    int32_t line; /* of the key file; 0: a flag */
    struct hs__bucket req, tok;
};

/* The API keys; tenant k + 1 is keys[k]. Keys are added before the server starts and never
 * change; mu guards the buckets. */
struct hs__keyring {
    struct hs__key *keys; /* [n] of [cap], owned; wiped when freed */
    int32_t n, cap;
    bool limited; /* some key has a limit */
    pthread_mutex_t mu;
};

/* What a charge would have needed: one bucket's limit and the units asked. */
struct hs__rl_refusal {
    bool tokens;     /* the tokens bucket refused (else the requests one) */
    bool never;      /* need exceeds the limit itself: waiting cannot help */
    int64_t limit;   /* per minute */
    int64_t need;    /* units this request asked */
    int64_t retry_s; /* seconds until it would be admitted (>= 1) */
};

/* One bucket as OpenAI's x-ratelimit-* headers show it. */
struct hs__rl_view {
    int64_t limit, remaining; /* limit 0: no limit (no headers) */
    int64_t reset_ms;         /* until the bucket is full again */
};

/* _init/_finish: caller memory, start-up and shut-down thread. */
void hs__keyring_init(struct hs__keyring *kr);
void hs__keyring_finish(struct hs__keyring *kr);
/* Adds a key of n bytes (1 to HS__MAX_KEY_BYTES visible ASCII) with limits per minute (0: none)
 * from key-file line (0: a flag). Errors: HS_E_INVAL (a bad or duplicate key, a limit out of
 * 0 .. HS__MAX_RATE; the message never holds the key), HS_E_NOMEM. Start-up thread. */
hs_status hs__keyring_add(struct hs__keyring *kr, const char *key, size_t n, int64_t rpm,
                          int64_t tpm, int32_t line, struct hs_error *err);
/* Adds the keys of a key file's text: one key per line, "KEY [rpm=N] [tpm=N]", blank lines and
 * '#' comments (from a field starting with '#' to the end of the line) skipped, CRLF accepted.
 * Errors: HS_E_FORMAT with "NAME:LINE: reason" (no key ever quoted), also for a file without
 * keys; HS_E_NOMEM. Keys of lines before the error stay added. Start-up thread. */
hs_status hs__keyring_parse(struct hs__keyring *kr, const char *name, const char *text, size_t n,
                            struct hs_error *err);
/* Reads and parses the key file at path (warns when others may read it). Errors: those of
 * hs__keyring_parse, HS_E_IO (cannot open or read, not a regular file). Start-up thread. */
hs_status hs__keyring_load(struct hs__keyring *kr, const char *path, struct hs_error *err);
/* The tenant (k + 1) whose key is tok[0..n), or -1. Constant time: every key is compared over
 * its whole padded width, whatever the token. Thread: any. */
int32_t hs__keyring_find(const struct hs__keyring *kr, const char *tok, size_t n);
/* Charges n_req requests and n_tok tokens to tenant's buckets, both or neither: false with *why
 * when a bucket (with a limit) lacks them. Tenants <= 0 and keys without limits always pass.
 * Thread: any. */
bool hs__keyring_charge(struct hs__keyring *kr, int32_t tenant, int64_t n_req, int64_t n_tok,
                        int64_t now_ms, struct hs__rl_refusal *why);
/* Gives back charged - used tokens (or takes the overrun) once a request's usage is known.
 * Thread: any. */
void hs__keyring_settle(struct hs__keyring *kr, int32_t tenant, int64_t charged, int64_t used,
                        int64_t now_ms);
/* The tenant's buckets now ([0] requests, [1] tokens); false when it has no limits. Thread:
 * any. */
bool hs__keyring_view(struct hs__keyring *kr, int32_t tenant, int64_t now_ms,
                      struct hs__rl_view v[2]);
/* ms as OpenAI's reset headers write durations: "250ms", "1s", "1.5s", "6m0s". Returns the
 * length written (snprintf's). Thread: any. */
size_t hs__rl_duration(char *out, size_t cap, int64_t ms);
/* Adds x-ratelimit-{limit,remaining,reset}-{requests,tokens} for the buckets with a limit. */
void hs__rl_add_headers(struct MHD_Response *r, const struct hs__rl_view v[2]);
/* Answers 429 rate_limit_exceeded for why: Retry-After when waiting helps, else
 * X-Should-Retry: false (the OpenAI SDKs' no-retry signal). HTTP threads. */
enum MHD_Result hs__rl_refuse(struct hs_api_server *s, struct MHD_Connection *c, struct hs__req *rq,
                              const struct hs__rl_refusal *why);

struct hs_api_server {
    struct MHD_Daemon *d;
    MHD_socket listen_fd; /* after quiesce: shut, closed once MHD has stopped */
    struct hs_model *model;
    struct hs_engine *eng;
    const struct hs_vocab *vocab;
    struct hs_chat_template *tmpl;
    struct hs__api_vision *vision; /* --mmproj (api/vision.h), owns; NULL: none */
    struct hs_api_params p;        /* defaults filled in; pointers below replace the caller's */
    struct hs__keyring keys;       /* none: no authentication */
    char **hosts;                  /* [n_hosts] allowed Host names, lower case, owned */
    int32_t n_hosts;
    bool any_host;      /* "*" among them: no Host/Origin check */
    char hostname[128]; /* this machine's name, lower case: always allowed */
    char *model_name;
    uint16_t port;
    int64_t created;
    struct hs__api_ctx pctx;
    struct hs__tools_caps tools_caps; /* what tmpl does with tools: pctx.tools */
    uint64_t salt_key[2];             /* random per process: keys the tenants' prefix-cache salts */

    _Atomic uint64_t next_id;
    atomic_int n_conns;
    _Atomic int64_t body_bytes; /* request body memory held now, all connections */
    atomic_bool quiesced;
    atomic_bool ready; /* a model is attached: every route is served (else 503 but /health) */
    atomic_bool stopping;

    pthread_mutex_t conns_mu;
    pthread_cond_t reaper_cv; /* with conns_mu: wakes the reaper early */
    struct hs__conn *conns;
    pthread_t reaper;
    bool reaper_started;
    bool reaper_quit; /* under conns_mu */
};

/* Monotonic milliseconds. Thread: any. */
int64_t hs__now_ms(void);

/* Responses. Each sets rq->status, adds the CORS header when enabled and "Connection: close"
 * while draining or when close is true (the request's body was refused unread). text is taken
 * (freed by MHD); h1/v1 an optional extra header. HTTP threads. */
/* Queues r (taking it: destroyed here) with the headers above. */
enum MHD_Result hs__queue_response(struct hs_api_server *s, struct MHD_Connection *c,
                                   struct hs__req *rq, unsigned code, struct MHD_Response *r);
enum MHD_Result hs__send_text(struct hs_api_server *s, struct MHD_Connection *c, struct hs__req *rq,
                              unsigned code, const char *ctype, char *text, size_t len,
                              const char *h1, const char *v1);
enum MHD_Result hs__send_json(struct hs_api_server *s, struct MHD_Connection *c, struct hs__req *rq,
                              unsigned code, json_t *j, const char *h1, const char *v1);
/* OpenAI's error body {"error": {message, type, param, code}}; code NULL: derived from http. */
json_t *hs__error_body(int http, const char *param, const char *code, const char *message);
#if defined(__GNUC__)
__attribute__((format(printf, 6, 7)))
#endif
enum MHD_Result
hs__send_error(struct hs_api_server *s, struct MHD_Connection *c, struct hs__req *rq, int http,
               const char *param, const char *fmt, ...);
/* As hs__send_error with an error code and one extra header (e.g. "Allow"). */
enum MHD_Result hs__send_error_ex(struct hs_api_server *s, struct MHD_Connection *c,
                                  struct hs__req *rq, int http, const char *param, const char *code,
                                  const char *h1, const char *v1, const char *message);
void hs__add_common_headers(struct hs_api_server *s, struct MHD_Response *r);

/* The prefix-cache salt of a request of this tenant with this cache_salt (NULL: none): 0 when
 * both are absent (the shared cache), else a keyed hash no other (tenant, salt) pair reaches.
 * Thread: any. */
uint64_t hs__tenant_salt(const struct hs_api_server *s, int32_t tenant, const char *salt,
                         size_t n_salt);

/* True when the client behind the connection hung up (reset or error pending); a half-close
 * (end of its input only) is not a hang-up. Thread: any. */
bool hs__socket_gone(MHD_socket fd);

/* ---- completion jobs (generate.c) ---- */

/* Parses, submits and starts answering a completion request (kind chat or completions).
 * Streams get an SSE response at once; other requests suspend the connection until the engine
 * has finished. HTTP threads. */
enum MHD_Result hs__generate_start(struct hs_api_server *s, struct MHD_Connection *c,
                                   struct hs__req *rq, enum hs__api_kind kind);
/* A resumed non-streamed job: answers once every choice has finished, else suspends again.
 * HTTP threads. */
enum MHD_Result hs__generate_resume(struct hs_api_server *s, struct MHD_Connection *c,
                                    struct hs__req *rq);
/* The client hung up (reaper): cancels the job's engine requests so its slots free at once;
 * the engine's final events resume the connection, which then closes. Thread: any, with
 * s->conns_mu held. */
void hs__job_client_gone(struct hs__job *j);
/* Server stopping: resumes the job's connection if it is suspended (MHD must not stop with
 * suspended connections); s->stopping is set first, so it is not suspended again. Thread: any,
 * with s->conns_mu held. */
void hs__job_wake(struct hs__job *j);
/* Releases the engine requests (cancelling what has not finished) and frees the job. NULL:
 * no-op. HTTP threads, without s->conns_mu. */
void hs__job_free(struct hs__job *j);

#endif
