/* api/ reasoning: a request's thinking controls (reasoning_effort, thinking_budget_tokens,
 * chat_template_kwargs.enable_thinking, /think and /no_think, reasoning_format) and the output
 * splitter that separates the thinking block from the answer, streamed or not.
 * Thread: any; nothing here keeps state between calls. */
#ifndef HS_API_REASONING_H
#define HS_API_REASONING_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api/request.h"

/* Default budgets of reasoning_effort (thinking tokens); "high" has none. */
#define HS__REASONING_BUDGET_LOW    256
#define HS__REASONING_BUDGET_MEDIUM 1024

enum hs__reasoning_format {
    HS__REASONING_CONTENT, /* message.reasoning_content (DeepSeek's, llama.cpp's, vLLM's old) */
    HS__REASONING_FIELD,   /* message.reasoning (vLLM's newer name) */
    HS__REASONING_NONE,    /* left inline in content */
    HS__REASONING_FORMAT_COUNT,
};

/* A chat request's thinking settings (from the body, before the prompt is rendered). */
struct hs__reasoning_req {
    bool markers; /* the vocabulary has the open and close markers as tokens */
    char open[32], close[32];
    hs_token open_tok, close_tok;
    int thinking;   /* 1: asked on, 0: asked off (enable_thinking false, /no_think,
                     * reasoning_effort "none"), -1: the template's default */
    int32_t budget; /* < 0: none */
    enum hs__reasoning_format format;
    int auto_class; /* reasoning_effort "auto": the history class, -1: not auto */
    bool auto_long;
};

/* Reads the reasoning fields of body b: reasoning_effort ("none", "low", "medium", "high"),
 * thinking_budget_tokens (>= 0), reasoning_format ("reasoning_content", "reasoning", "none"),
 * chat_template_kwargs.enable_thinking (boolean) and /think or /no_think in the last user
 * message. Markers are <think> and </think> when the vocabulary has them as tokens. 400 on bad
 * values. */
hs_status hs__reasoning_parse(const struct hs__api_ctx *c, const json_t *b,
                              struct hs__reasoning_req *out, struct hs__api_err *err);

/* Fills r->er.reasoning from q and the rendered prompt (text[n]): whether the prompt ends inside
 * a thinking block, the close sequence forced on budget (close marker + "\n\n"). */
hs_status hs__reasoning_finish(const struct hs__api_ctx *c, const struct hs__reasoning_req *q,
                               const char *text, size_t n, struct hs__api_req *r,
                               struct hs__api_err *err);

/* ---- auto mode (reasoning_effort "auto") ---- */

/* True when a chat template's source (NULL: none) lets the client choose between thinking and
 * not (it reads enable_thinking, as Qwen3's does): auto mode may then be the default. */
bool hs__reasoning_template_has_modes(const char *src);

#define HS__REASONING_AUTO_CLASSES 16

/* The class of a request for the history (by the last user message's length and cues), and
 * whether long thinking suits it: cues of reasoning (math, proofs, "step by step", code) say
 * long, a short message without them says short; otherwise the mean thinking length of earlier
 * requests of the class decides (short when at least 4 thought under 32 tokens on average).
 * Thread: any. */
bool hs__reasoning_auto_choose(const char *text, size_t n, int *cls);
/* Records that a request of class cls thought n_tokens (long mode only). Thread: any. */
void hs__reasoning_auto_record(int cls, int32_t n_tokens);

/* ---- the splitter ---- */

struct hs__reasoning_sink {
    void (*reasoning)(void *user, const char *s, size_t n);
    void (*content)(void *user, const char *s, size_t n);
    void *user;
};

struct hs__reasoning_split {
    char open[32], close[32];
    int state;           /* before, think, answer */
    bool lead;           /* still dropping the leading whitespace of the current part */
    struct hs__buf hold; /* held back: a possible marker prefix or trailing whitespace */
};

/* Starts a splitter; in_block: the prompt opened the block already. */
void hs__reasoning_split_init(struct hs__reasoning_split *p, const char *open, const char *close,
                              bool in_block);
void hs__reasoning_split_feed(struct hs__reasoning_split *p, const char *s, size_t n,
                              const struct hs__reasoning_sink *sink);
/* The output ended: what was held back goes out (an unclosed block stays reasoning). */
void hs__reasoning_split_finish(struct hs__reasoning_split *p,
                                const struct hs__reasoning_sink *sink);
void hs__reasoning_split_free(struct hs__reasoning_split *p);

#endif
