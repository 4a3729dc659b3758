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

/* How a model family writes its thinking block (README "Reasoning"). */
enum hs__reasoning_family {
    HS__REASONING_FAMILY_THINK,   /* <think>…</think>, then "\n\n" (Qwen3, DeepSeek-R1) */
    HS__REASONING_FAMILY_HUNYUAN, /* <think>\n…\n</think>\n<answer>\n…\n</answer>
                                   * (Hunyuan-A13B, Hunyuan-TurboS) */
    HS__REASONING_FAMILY_COUNT,
};
const char *hs__reasoning_family_str(enum hs__reasoning_family f);

/* The family a chat template's source (NULL: none) writes: Hunyuan's when it has Hunyuan's
 * turn tokens (<|extra_0|>, <｜hy_Assistant｜>) or an <answer> block; else <think>. */
enum hs__reasoning_family hs__reasoning_template_family(const char *src);

/* A chat request's thinking settings (from the body, before the prompt is rendered). */
struct hs__reasoning_req {
    bool markers; /* a thinking block can be tracked: the markers are tokens of the vocabulary,
                   * or the family (Hunyuan) or the flag names them as text */
    char open[32], close[32];
    char forced[32];                        /* forced on budget: close marker and separator */
    char answer_open[16], answer_close[16]; /* the answer's wrapper, stripped ("": none) */
    char text_open[32], text_close[32];     /* the markers the engine tracks on the text when
                                             * they are several tokens (hs_reasoning_params) */
    hs_token open_tok, close_tok;           /* -1: the marker is several tokens */
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
 * message. The markers are the family's (c->reasoning_family, or the one c->reasoning_markers
 * names: "think", "hunyuan" or "OPEN,CLOSE"): <think> and </think> count when the vocabulary
 * has them as tokens; Hunyuan's and the flag's also when they are several tokens. 400 on bad
 * values. */
hs_status hs__reasoning_parse(const struct hs__api_ctx *c, const json_t *b,
                              struct hs__reasoning_req *out, struct hs__api_err *err);

/* Fills r->er.reasoning from q and the rendered prompt (text[n]): whether the prompt ends inside
 * a thinking block, the close sequence forced on budget (the family's close marker and
 * separator: "</think>\n\n", Hunyuan's "\n</think>\n<answer>\n"), the text markers. */
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
    char aopen[16], aclose[16]; /* the answer's wrapper ("": none) */
    int state;                  /* before, think, answer lead, answer, after the answer */
    bool lead;                  /* still dropping the leading whitespace of the current part */
    struct hs__buf hold;        /* held back: a possible marker prefix or trailing whitespace */
};

/* Starts a splitter; in_block: the prompt opened the block already. */
void hs__reasoning_split_init(struct hs__reasoning_split *p, const char *open, const char *close,
                              bool in_block);
/* Sets the answer's wrapper (Hunyuan's <answer>…</answer>; "" or NULL: none): an open marker
 * at the start of the answer and the close marker are dropped from the content, with the
 * whitespace next to them. */
void hs__reasoning_split_wrap(struct hs__reasoning_split *p, const char *open, const char *close);
void hs__reasoning_split_feed(struct hs__reasoning_split *p, const char *s, size_t n,
                              const struct hs__reasoning_sink *sink);
/* The output ended: what was held back goes out (an unclosed block stays reasoning). */
void hs__reasoning_split_finish(struct hs__reasoning_split *p,
                                const struct hs__reasoning_sink *sink);
void hs__reasoning_split_free(struct hs__reasoning_split *p);

#endif
