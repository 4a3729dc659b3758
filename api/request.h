/* api/ internals: an HTTP body (JSON) -> a validated generation request (token ids, sampling,
 * stops), chat messages rendered through the model's chat template. Also the helpers the HTTP
 * layer shares: a nesting-depth check before parsing, lossy UTF-8 -> JSON strings written into
 * common/buf.h's text buffer, and escaping of client strings for log lines.
 * Thread: any; nothing here keeps state between calls. */
#ifndef HS_API_REQUEST_H
#define HS_API_REQUEST_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/common.h"
#include "server/engine.h"

struct hs_vocab;
struct hs_chat_template;
struct hs_tmpl_value;
struct hs__tools_caps;

#define HS__API_MAX_PROMPTS 16 /* prompts of one /v1/completions request */
/* Alternatives per token: OpenAI's limit (the engine takes up to HS_ENGINE_MAX_TOP_LOGPROBS). */
#define HS__API_MAX_TOP_LOGPROBS 20
#define HS__API_MAX_LOGIT_BIAS   1024   /* entries of logit_bias */
#define HS__API_MAX_CACHE_SALT   256    /* bytes of cache_salt */
#define HS__API_MAX_OUTPUT_ITEMS 262144 /* default of hs_api_params.max_output_items */

/* Appends n bytes of s as a quoted JSON string; invalid UTF-8 and NUL become U+FFFD. */
void hs__buf_json_str(struct hs__buf *b, const char *s, size_t n);

/* Writes n bytes of client-provided s into dst[cap] (always NUL-terminated) for a log line:
 * printable ASCII stays, everything else (newlines, control bytes, '"', '\\', bytes >= 0x80)
 * becomes \xHH, so a request cannot forge or split log lines; cut with "..." when too long. */
void hs__api_log_escape(char *dst, size_t cap, const char *s, size_t n);

enum hs__api_kind {
    HS__API_CHAT,
    HS__API_COMPLETION,
};

/* What a failed request answers: the HTTP status and OpenAI's error fields. */
struct hs__api_err {
    int http;       /* 400, 413, ... */
    char param[64]; /* the offending field ("messages[0].content"), "" when none */
    char code[32];  /* OpenAI's error code ("model_not_found"), "" when none */
    char message[384];
};

struct hs__api_ctx {
    const struct hs_vocab *vocab;
    const struct hs_chat_template *tmpl; /* NULL: ChatML */
    int32_t max_depth;                   /* JSON nesting limit */
    const char *model_name;              /* the served model's id: another non-empty "model" is 404
                                          * model_not_found; NULL: any name is accepted */
    int32_t n_ctx;            /* context of one sequence (caps max_tokens); <= 0: unknown */
    int64_t max_output_items; /* cap on prompts x choices x max_tokens x (1 + top_logprobs when
                               * logprobs are asked); <= 0: HS__API_MAX_OUTPUT_ITEMS */
    const struct hs__tools_caps *tools; /* what tmpl does with tools (hs__tools_probe, borrowed);
                                         * NULL: probed per request */
    const char *reasoning_format;  /* hs_api_params.reasoning_format (borrowed; NULL: default) */
    const char *reasoning_markers; /* hs_api_params.reasoning_markers (borrowed; NULL: <think>) */
    int reasoning_family; /* enum hs__reasoning_family of the chat template (api/reasoning.h) */
    struct hs__api_vision *vision; /* --mmproj's encoder (api/vision.h); NULL: images are 400s */
    bool reasoning_auto; /* hs_api_params.reasoning_auto, and the template has both modes */
};

/* How a model writes tool calls, by chat template family (api/tools.h has the forms). */
enum hs__tool_format {
    HS__TOOLS_HERMES,
    HS__TOOLS_LLAMA3,
    HS__TOOLS_MISTRAL,
    HS__TOOLS_GENERIC,
    HS__TOOLS_FORMAT_COUNT,
};

enum hs__tool_choice {
    HS__TOOL_CHOICE_NONE,     /* no tools, or "none": the output is text */
    HS__TOOL_CHOICE_AUTO,     /* text or calls, parsed from what the model wrote */
    HS__TOOL_CHOICE_REQUIRED, /* at least one call, grammar-constrained */
    HS__TOOL_CHOICE_NAMED,    /* a call of one named function, grammar-constrained */
    HS__TOOL_CHOICE_COUNT,
};

/* A request's tool settings. */
struct hs__api_tools {
    enum hs__tool_choice choice;
    enum hs__tool_format format;
    bool parallel;  /* parallel_tool_calls (default true) */
    bool parse;     /* find calls in the output (choice AUTO, REQUIRED or NAMED, and no
                     * response_format or grammar) */
    char name[128]; /* NAMED: the function */
};

/* An image of a chat request (api/vision.h): decoded while parsing, encoded later by the
 * encoder's thread unless the encoder's cache had it. */
#define HS__API_MAX_IMAGES 8
/* Placeholder spans of a request's images: idefics3 gives each image its tiles and an overview
 * (SmolVLM's 4x4 tiles at most, + 1); more is a 400. */
#define HS__API_MAX_SPANS (HS__API_MAX_IMAGES * 17)
struct hs_image;
struct hs__api_image {
    uint64_t hash;        /* of the decoded pixels and size */
    int32_t nx, ny;       /* the decoded size (the prompt layout depends on it) */
    int32_t gx, gy;       /* merged grid; gx * gy embedding rows (all views) */
    float *rows;          /* [gx * gy][n_embd], owned; NULL: not encoded yet */
    struct hs_image *img; /* the decoded pixels until encoded (owned), else NULL */
};

struct hs__api_prompt {
    hs_token *ids;
    int32_t n;
};

/* How a chat answer's thinking block is reported (api/reasoning.h). */
struct hs__api_reasoning {
    bool split;    /* separate the block from the answer (markers known, format not none) */
    int format;    /* enum hs__reasoning_format */
    bool in_block; /* the prompt ends inside the block */
    char open[32], close[32];
    char answer_open[16], answer_close[16]; /* the family's answer wrapper ("": none) */
    hs_token open_tok, close_tok;           /* -1: the marker is several tokens */
    int auto_class; /* reasoning_effort "auto": the request's class in the history, -1: not auto */
    bool auto_long; /* auto: long thinking chosen (else short: no thinking) */
};

struct hs__api_req {
    enum hs__api_kind kind;
    struct hs_engine_request er; /* everything but prompt/n_prompt/notify; points into this */
    struct hs__api_prompt prompts[HS__API_MAX_PROMPTS];
    bool echo;                            /* completions: the prompt goes before the text */
    char *echo_text[HS__API_MAX_PROMPTS]; /* with echo: each prompt's text (n_echo_text[i]
                                           * bytes; token-id prompts detokenized), else NULL */
    size_t n_echo_text[HS__API_MAX_PROMPTS];
    int32_t n_prompts;  /* 1 for chat */
    int32_t n_return;   /* choices returned per prompt: n; er.n is best_of (>= n_return), the
                         * best n_return by cumulative logprob are kept */
    bool want_logprobs; /* the client asked for logprobs (er.logprobs may be on for best_of) */
    char *cache_salt;   /* the request's cache_salt (n_cache_salt bytes, owned), NULL when absent:
                         * the HTTP layer turns it, with the tenant, into er.cache_salt */
    size_t n_cache_salt;
    char *grammar; /* GBNF from response_format, grammar or a required tool call (owned), NULL:
                    * none; er.grammar */
    struct hs__api_tools tools;         /* chat: tools, tool_choice, parallel_tool_calls */
    struct hs__api_reasoning reasoning; /* chat: the thinking block */
    char *stops[HS_ENGINE_MAX_STOP];
    struct hs_logit_bias *bias;
    bool stream;
    bool include_usage;
    bool seed_given;
    char user[64]; /* for logs: escaped (hs__api_log_escape) and truncated */
    /* chat: images in the order of their markers in the rendered prompt; eimages points the
     * engine request (er.images) at their placeholder spans */
    struct hs__api_image images[HS__API_MAX_IMAGES];
    /* one span per view of each image (Qwen: one; idefics3: its tiles and overview) */
    struct hs_engine_image eimages[HS__API_MAX_SPANS];
    int8_t span_image[HS__API_MAX_SPANS]; /* eimages[i] is a span of images[span_image[i]] */
    int32_t span_row[HS__API_MAX_SPANS];  /* ... whose rows start at its row span_row[i] */
    int32_t n_images;
    uint64_t marker_nonce; /* makes the markers unguessable by the client's text */
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
 * Refused (400 unless said): max_tokens 0; logit_bias keys not in canonical decimal, or more
 * than HS__API_MAX_LOGIT_BIAS of them; a non-empty suffix; best_of below n or with stream;
 * echo with logprobs; output items over c->max_output_items; a "model" other than "" and
 * c->model_name (404, code model_not_found, HS_E_NOENT). Returns HS_OK, or HS_E_INVAL /
 * HS_E_NOENT / HS_E_NOMEM with err filled. */
hs_status hs__api_parse(const struct hs__api_ctx *c, enum hs__api_kind kind, const char *body,
                        size_t len, struct hs__api_req *out, struct hs__api_err *err);
void hs__api_req_free(struct hs__api_req *r);

/* Fills err (HTTP status http, param, printf-style message) and returns HS_E_NOMEM for 503,
 * else HS_E_INVAL. */
#if defined(__GNUC__)
__attribute__((format(printf, 4, 5)))
#endif
hs_status
hs__api_fail(struct hs__api_err *err, int http, const char *param, const char *fmt, ...);

/* Tokenizes len bytes of text into p->ids (new, owned by p). client: NULL, or [len] marks of
 * client text in which no special token is made (hs_tokenize_marked); else special tokens are
 * parsed everywhere. An empty result is a 400. */
hs_status hs__api_tokenize(const struct hs__api_ctx *c, const char *text, size_t len,
                           bool add_special, const uint8_t *client, struct hs__api_prompt *p,
                           struct hs__api_err *err);

/* ---- chat prompts (api/chat.c) ---- */

/* A template value tree of j (returns new, NULL when out of memory). */
struct hs_tmpl_value *hs__api_to_tmpl(const json_t *j);

/* The chat part of hs__api_parse: tools, tool_choice and parallel_tool_calls of body b into
 * r->tools (a required or named call's grammar into r->grammar), then the messages rendered
 * through the template (NULL: ChatML) with add_generation_prompt, bos/eos and
 * chat_template_kwargs (an object or absent) in the context, and tokenized into r->prompts[0].
 * Roles are system, developer (rendered as system), user, assistant and tool; content is a
 * string, text parts or null (rendered as ""); an assistant's tool_calls reach the template with
 * their arguments parsed to objects, or are written into its content in the template's call
 * format when it does not render them; tool messages become user messages wrapped in
 * <tool_response> where the template has no tool role; templates that do not render tools get
 * them described in a system message (when tool_choice is not none). Every string of the request
 * is marked client text: the template's markup may make special tokens, client text never does.
 * Errors as hs__api_parse. Thread: any (c->tools NULL: the template is probed here). */
hs_status hs__api_chat_prompt(const struct hs__api_ctx *c, const json_t *b, struct hs__api_req *r,
                              struct hs__api_err *err);
/* A JSON string of n bytes of s, invalid UTF-8 replaced by U+FFFD. NULL when out of memory. */
json_t *hs__api_json_str(const char *s, size_t n);

#endif
