/* The OpenAI-compatible HTTP layer (libmicrohttpd + jansson) over one serving engine.
 *
 * Routes: POST /v1/chat/completions, POST /v1/completions (streaming as server-sent events),
 * GET /v1/models, GET /health, GET /metrics (Prometheus text, vLLM's meanings under the
 * "hetserve:" prefix), POST /tokenize, POST /detokenize (llama.cpp server shapes; /tokenize also
 * takes vLLM's chat form, messages and tools, and gives the prompt a chat request gets). Errors use
 * OpenAI's body {"error": {"message", "type", "param", "code"}}.
 *
 * Connections are event-driven: a small pool of libmicrohttpd threads polls every socket
 * (epoll), so idle or slow clients cost a socket and a little memory, never a thread. A request
 * waiting for the engine suspends its connection; the engine's per-request notify resumes it.
 * Limits (see hs_api_params and README "Security"): connections in total and per client
 * address, deadlines for headers, bodies and keep-alive, body size and total body memory,
 * output per request. When the headers arrive, before any body is read, requests are refused
 * for ambiguous framing (400), a Host or browser Origin that is not allowed (403, against DNS
 * rebinding and other sites' pages), a missing or wrong API key (401), a POST without
 * Content-Type: application/json (415), a declared body over the limit (413) or a key over its
 * requests-per-minute limit (429; tokens per minute are checked once the body is parsed). Every
 * answer to a key with limits carries OpenAI's x-ratelimit-* headers. Prefix-cache
 * blocks are shared only within a tenant: one API key and one request cache_salt.
 *
 * JSON appears only in api/. Thread: the functions below from one controlling thread. */
#ifndef HS_API_API_H
#define HS_API_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

struct hs_model;
struct hs_engine;
struct hs_api_server;

struct hs_api_params {
    const char *host;    /* numeric IPv4 or IPv6 address to listen on; default "127.0.0.1" */
    uint16_t port;       /* 0: any free port (hs_api_server_port tells which); default 8080 */
    const char *api_key; /* NULL: no authentication (unless api_keys gives some); "" is an
                          * error (HS_E_INVAL). Otherwise every route but /health and
                          * /metrics needs "Authorization: Bearer <key>" */
    const char *const *api_keys; /* [n_api_keys] further keys; each key is a tenant whose prefix
                                  * cache is its own. Keys are 1 to 256 visible ASCII bytes */
    int32_t n_api_keys;
    const char *api_key_file;     /* NULL: none. A file of further keys, read at start: one per
                                   * line, "KEY [rpm=N] [tpm=N]" (requests and tokens per minute
                                   * for that key; absent: no limit), blank lines and '#' comments
                                   * skipped. A malformed file, or one without keys, is HS_E_INVAL
                                   * naming the line (README "Admission control") */
    const char *model_name;       /* the id of the model in responses; NULL: "hetserve". A request
                                   * naming another model gets 404 model_not_found */
    size_t max_body_bytes;        /* larger bodies get 413; default 4 MiB */
    size_t max_body_memory_bytes; /* bodies of all connections together, buffered while they
                                   * arrive: past it a request gets 503; default 64 MiB */
    int32_t max_json_depth;       /* deeper nesting gets 400; default 64 */
    int64_t max_output_items;     /* per request: prompts x choices x max_tokens x (1 + top_logprobs
                                   * when logprobs are asked), else 400; default 262144 */
    int32_t max_connections;      /* open connections; past it requests get 503 and the connection
                                   * closes (and past 5/4 of it new ones wait in the listen
                                   * backlog); default 1024 */
    int32_t max_connections_per_ip; /* from one client address; more are closed at once;
                                     * 0: no limit; default 256 */
    int32_t http_threads;           /* threads polling the connections; default 4 */
    int64_t header_timeout_ms;      /* a request's headers must arrive within this; default 10000 */
    int64_t body_timeout_ms;        /* its body within this after the headers; also the longest a
                                     * connection may make no progress; default 30000 */
    int64_t keepalive_timeout_ms;   /* an idle keep-alive connection closes after; default 5000 */
    const char *const *allowed_hosts; /* [n_allowed_hosts] names accepted in Host (and Origin)
                                       * besides IP literals, "localhost", "*.localhost" and
                                       * this machine's name; "*.example.com" matches
                                       * subdomains; "*" turns the check off */
    int32_t n_allowed_hosts;
    /* Thinking blocks of chat answers (README "Reasoning"): where they go, "reasoning_content"
     * (NULL, default), "reasoning" or "none" (inline), and the markers: a family ("think":
     * <think>…</think>, split only where both are tokens of the vocabulary; "hunyuan":
     * <think>…</think><answer>…</answer>, markers of any number of tokens) or "OPEN,CLOSE" (any
     * number of tokens); NULL: the family of the chat template. A request's reasoning_format
     * overrides the format. */
    const char *reasoning_format;
    const char *reasoning_markers;
    /* Chat requests that say nothing about thinking (no reasoning_effort, thinking budget,
     * enable_thinking, /think or /no_think) get auto mode (reasoning_effort "auto") when the
     * model's template has both modes (it reads enable_thinking) and the markers are known;
     * default true. False: the template's own default. */
    bool reasoning_auto;
    bool cors; /* answer CORS preflights (allowing the headers asked for), allow
                * any origin; default off: cross-origin Origins get 403 */
    /* Image input: the projector GGUF (llama.cpp's mmproj) loaded at start (a bad file fails
     * the start); NULL: chat image parts are 400s. allow_image_urls lets http(s) image URLs
     * through the refusal, to the "fetching is not implemented" 400. vision_threads: the
     * encoder's CPU threads (<= 0: 2). */
    const char *mmproj;
    bool allow_image_urls;
    int32_t vision_threads;
};

/* Defaults as documented above. Thread: any. */
struct hs_api_params hs_api_default_params(void);

/* Starts listening without a model: until hs_api_server_attach, /health answers 503
 * {"status":"loading"} and every other route 503 with OpenAI's error body (code
 * "model_loading") and Retry-After, as llama-server does while it loads. Errors and ownership as
 * hs_api_server_start's (but for the chat template's). Thread: the controlling thread. */
hs_status hs_api_server_listen(const struct hs_api_params *p, struct hs_api_server **out,
                               struct hs_error *err);

/* Serves model and engine from now on (borrowed: both must outlive the server); loads the
 * projector (mmproj) when one is set. Errors: HS_E_FORMAT (the model's chat template does not
 * parse), the projector's errors, HS_E_INVAL (a model is attached already); the server then
 * stays loading. Thread: the controlling thread, once. */
hs_status hs_api_server_attach(struct hs_api_server *s, struct hs_model *model,
                               struct hs_engine *engine, struct hs_error *err);

/* hs_api_server_listen and hs_api_server_attach in one. Parses the model's chat template
 * (ChatML when it has none) and starts listening. Borrows
 * model and engine: both must outlive the server. Raises the soft limit of open files when
 * max_connections needs it (process-wide). Errors: HS_E_FORMAT (the model's chat template does
 * not parse: err gives line, column and reason), HS_E_INVAL (bad host, an empty, malformed or
 * repeated API key, a malformed key file, a bad limit), HS_E_IO (cannot listen or read the key
 * file: err says why), HS_E_NOMEM. *out stays NULL on error. Returns
 * new (free with hs_api_server_stop). */
hs_status hs_api_server_start(struct hs_model *model, struct hs_engine *engine,
                              const struct hs_api_params *p, struct hs_api_server **out,
                              struct hs_error *err);

/* The port the server listens on. */
uint16_t hs_api_server_port(const struct hs_api_server *s);

/* Graceful shutdown, step 1: stops accepting connections; /health answers 503 from now on,
 * new requests on open connections get 503, idle keep-alive connections close at once and
 * every response closes its connection. Requests in flight go on (drain the engine next, then
 * wait for the connections); those the drain cancels get 503 (an error event in a stream). */
void hs_api_server_quiesce(struct hs_api_server *s);

/* Waits until no connection is open or timeout_ms passes (< 0: forever). Returns true when
 * idle. */
bool hs_api_server_wait_idle(struct hs_api_server *s, int64_t timeout_ms);

/* Closes every connection (requests in flight are cancelled) and frees the server. NULL:
 * no-op. */
void hs_api_server_stop(struct hs_api_server *s);

/* Maps a status to its HTTP code (one table: HS_E_INVAL 400, HS_E_BUSY 429, ...). */
int hs_api_http_status(hs_status st);

#endif
