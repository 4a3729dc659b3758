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

struct hs_api_server {
    struct MHD_Daemon *d;
    MHD_socket listen_fd; /* after quiesce: shut, closed once MHD has stopped */
    struct hs_model *model;
    struct hs_engine *eng;
    const struct hs_vocab *vocab;
    struct hs_chat_template *tmpl;
    struct hs__api_vision *vision; /* --mmproj (api/vision.h), owns; NULL: none */
    struct hs_api_params p; /* defaults filled in; pointers below replace the caller's */
    char **keys;            /* [n_keys] owned copies */
    int32_t n_keys;
    char **hosts; /* [n_hosts] allowed Host names, lower case, owned */
    int32_t n_hosts;
    bool any_host;      /* "*" among them: no Host/Origin check */
    char hostname[128]; /* this machine's name, lower case: always allowed */
    char *model_name;
    uint16_t port;
    int64_t created;
    struct hs__api_ctx pctx;
    struct hs__tools_caps tools_caps; /* what tmpl does with tools: pctx.tools */
    uint64_t salt_key[2]; /* random per process: keys the tenants' prefix-cache salts */

    _Atomic uint64_t next_id;
    atomic_int n_conns;
    _Atomic int64_t body_bytes; /* request body memory held now, all connections */
    atomic_bool quiesced;
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
