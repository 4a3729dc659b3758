/* The OpenAI-compatible HTTP layer (libmicrohttpd + jansson) over one serving engine.
 *
 * Routes: POST /v1/chat/completions, POST /v1/completions (streaming as server-sent events),
 * GET /v1/models, GET /health, GET /metrics (Prometheus text, vLLM's meanings under the
 * "hetserve:" prefix), POST /tokenize, POST /detokenize (llama.cpp server shapes). Errors use
 * OpenAI's body {"error": {"message", "type", "param", "code"}}.
 *
 * One thread per connection: a streaming response's reader waits on the request's engine
 * channel with a short timeout and watches the socket, so a client that disconnects cancels
 * its request (the engine frees its KV blocks within one step).
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
    const char *host;        /* numeric IPv4 or IPv6 address to listen on; default "127.0.0.1" */
    uint16_t port;           /* 0: any free port (hs_api_server_port tells which); default 8080 */
    const char *api_key;     /* NULL or "": no authentication; else every route but /health and
                              * /metrics needs "Authorization: Bearer <key>" */
    const char *model_name;  /* the id of the model in responses; NULL: "hetserve" */
    size_t max_body_bytes;   /* larger bodies get 413; default 4 MiB */
    int32_t max_json_depth;  /* deeper nesting gets 400; default 64 */
    int32_t max_connections; /* default 256 */
    bool cors;               /* answer CORS preflights, allow any origin; default off */
};

/* Defaults as documented above. Thread: any. */
struct hs_api_params hs_api_default_params(void);

/* Parses the model's chat template (ChatML when it has none) and starts listening. Borrows
 * model and engine: both must outlive the server. Errors: HS_E_FORMAT (the model's chat
 * template does not parse: err gives line, column and reason), HS_E_INVAL (bad host), HS_E_IO
 * (cannot listen: err says why), HS_E_NOMEM. *out stays NULL on error. Returns
 * new (free with hs_api_server_stop). */
hs_status hs_api_server_start(struct hs_model *model, struct hs_engine *engine,
                              const struct hs_api_params *p, struct hs_api_server **out,
                              struct hs_error *err);

/* The port the server listens on. */
uint16_t hs_api_server_port(const struct hs_api_server *s);

/* Graceful shutdown, step 1: stops accepting connections; /health answers 503 from now on.
 * Requests in flight go on (drain the engine next, then wait for the connections). */
void hs_api_server_quiesce(struct hs_api_server *s);

/* Waits until no connection is open or timeout_ms passes (< 0: forever). Returns true when
 * idle. */
bool hs_api_server_wait_idle(struct hs_api_server *s, int64_t timeout_ms);

/* Closes every connection and frees the server. NULL: no-op. */
void hs_api_server_stop(struct hs_api_server *s);

/* Maps a status to its HTTP code (one table: HS_E_INVAL 400, HS_E_BUSY 429, ...). */
int hs_api_http_status(hs_status st);

#endif
