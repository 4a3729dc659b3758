/* api/ internals: an HTTP body (JSON) -> a validated generation request (token ids, sampling,
 * stops), chat messages rendered through the model's chat template. Also the helpers the HTTP
 * layer shares: a nesting-depth check before parsing, and lossy UTF-8 -> JSON strings.
 * Thread: any; nothing here keeps state between calls. */
#ifndef HS_API_REQUEST_H
#define HS_API_REQUEST_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/common.h"
#include "server/engine.h"

struct hs_vocab;
struct hs_chat_template;

#define HS__API_MAX_PROMPTS 16 /* prompts of one /v1/completions request */
/* Alternatives per token: OpenAI's limit (the engine takes up to HS_ENGINE_MAX_TOP_LOGPROBS). */
#define HS__API_MAX_TOP_LOGPROBS 20

enum hs__api_kind {
    HS__API_CHAT,
    HS__API_COMPLETION,
};

/* What a failed request answers: the HTTP status and OpenAI's error fields. */
struct hs__api_err {
    int http;       /* 400, 413, ... */
    char param[64]; /* the offending field ("messages[0].content"), "" when none */
    char message[384];
};

struct hs__api_ctx {
    const struct hs_vocab *vocab;
    const struct hs_chat_template *tmpl; /* NULL: ChatML */
    int32_t max_depth;                   /* JSON nesting limit */
};

struct hs__api_prompt {
    hs_token *ids;
    int32_t n;
};

struct hs__api_req {
    enum hs__api_kind kind;
    struct hs_engine_request er; /* everything but prompt/n_prompt/notify; points into this */
    struct hs__api_prompt prompts[HS__API_MAX_PROMPTS];
    int32_t n_prompts; /* 1 for chat */
    char *stops[HS_ENGINE_MAX_STOP];
    struct hs_logit_bias *bias;
    bool stream;
    bool include_usage;
    bool seed_given;
    char user[64]; /* for logs, truncated */
};

/* Returns false (err filled, 400) when body nests arrays/objects deeper than max_depth;
 * strings are skipped properly. */
bool hs__api_depth_ok(const char *body, size_t len, int32_t max_depth, struct hs__api_err *err);

/* Parses body as one JSON object (after the depth check). Returns new (json_decref) or NULL
 * with err filled (400). */
json_t *hs__api_load_object(const char *body, size_t len, int32_t max_depth,
                            struct hs__api_err *err);

/* Parses and validates a /v1/chat/completions (kind CHAT) or /v1/completions body into *out
 * (zeroed first; free with hs__api_req_free, also after failure). Unknown fields are ignored.
 * Returns HS_OK, or HS_E_INVAL / HS_E_NOTSUP / HS_E_NOMEM with err filled. */
hs_status hs__api_parse(const struct hs__api_ctx *c, enum hs__api_kind kind, const char *body,
                        size_t len, struct hs__api_req *out, struct hs__api_err *err);
void hs__api_req_free(struct hs__api_req *r);

/* Renders an OpenAI messages array through the template (NULL: ChatML) with
 * add_generation_prompt and chat_template_kwargs (an object or NULL) merged into the context.
 * *out: new string (free()). Errors as hs__api_parse. */
hs_status hs__api_render_chat(const struct hs__api_ctx *c, const json_t *messages,
                              const json_t *kwargs, const json_t *tools, char **out,
                              size_t *out_len, struct hs__api_err *err);

/* A JSON string of n bytes of s, invalid UTF-8 replaced by U+FFFD. NULL when out of memory. */
json_t *hs__api_json_str(const char *s, size_t n);

#endif
