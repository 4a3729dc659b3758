/* api/ internals: tool calls. What a model's chat template does with tools (probed once per
 * template), the request fields tools / tool_choice / parallel_tool_calls, the grammar that
 * constrains a required or named call, and the parser that turns the text a model wrote into
 * OpenAI's message.tool_calls (or, streamed, delta.tool_calls fragments).
 *
 * Output formats, by template family:
 *   HERMES   <tool_call>\n{"name": "f", "arguments": {...}}\n</tool_call>, one block per call
 *            (Qwen2.5, Qwen3, Hermes 2 Pro)
 *   LLAMA3   {"name": "f", "parameters": {...}} as the whole answer (Llama 3.1 - 3.3), one call
 *   MISTRAL  [TOOL_CALLS] [{"name": "f", "arguments": {...}}, ...] (Mistral v3 / Nemo); the
 *            control token does not reach the text, so a reply opening with [{ counts too
 *   GENERIC  templates that know nothing of tools: the tools are described in a system message
 *            (or the first user message when the template takes no system message), and the
 *            model answers in the HERMES form, as plain text
 * With tool_choice "auto" nothing constrains the output: the model writes text or calls, and the
 * parser finds the calls (no lazy grammar: a wrong call is returned as the model wrote it). With
 * "required" or a named function the whole output is grammar-constrained to one call (or, with
 * parallel_tool_calls, one or more) in the family's form, arguments following each function's
 * parameters schema (api/json-schema.h). Thread: any; nothing here keeps state between calls but
 * a parser, which belongs to one thread at a time. */
#ifndef HS_API_TOOLS_H
#define HS_API_TOOLS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api/request.h"
#include "common/common.h"

struct hs_chat_template;
struct hs_vocab;

const char *hs__tool_format_str(enum hs__tool_format f);

/* What a chat template does with tools, from renders of small probe conversations. */
struct hs__tools_caps {
    enum hs__tool_format format;
    bool renders_tools;     /* writes the `tools` list */
    bool renders_calls;     /* writes an assistant message's tool_calls */
    bool renders_tool_role; /* writes the content of "tool" messages */
    bool renders_system;    /* writes a system message's content */
};

/* Probes t (NULL: the ChatML fallback, which knows no tools: GENERIC) with bos/eos of v.
 * Never fails: a probe the template rejects counts as "does not render". Thread: any. */
void hs__tools_probe(const struct hs_chat_template *t, const struct hs_vocab *v,
                     struct hs__tools_caps *out);

/* Parses tools, tool_choice and parallel_tool_calls of body b against caps into *out, and with
 * tool_choice required or a named function writes the grammar of the call(s) to *grammar (new,
 * free()); *grammar stays NULL otherwise. has_format: the request already constrains its output
 * (response_format json / grammar), which tool_choice required or named cannot be combined with;
 * with auto it leaves the output unparsed. Errors (400, err filled, param naming the field):
 * malformed tools (not an array of {"type": "function", "function": {"name", "parameters"}},
 * names not [A-Za-z0-9_-]{1,64} or given twice), a tool_choice that is not none / auto /
 * required / {"type": "function", "function": {"name"}} or names no tool, required or named
 * without tools, a parameters schema the grammar cannot express (naming the keyword); 503 when
 * out of memory. */
hs_status hs__tools_parse_request(const json_t *b, const struct hs__tools_caps *caps,
                                  bool has_format, struct hs__api_tools *out, char **grammar,
                                  struct hs__api_err *err);

/* A call written in format f (for assistant history the template does not render): new text
 * (free()), NULL when out of memory. args: the arguments as JSON text. */
char *hs__tools_call_text(enum hs__tool_format f, const char *name, const char *args,
                          size_t n_args);

/* The system text describing tools (a JSON array of OpenAI tool objects) for GENERIC templates:
 * new (free()), NULL when out of memory. */
char *hs__tools_generic_prompt(const json_t *tools);

/* ---- the output parser ---- */

/* What the parser found, as it finds it. Content bytes are the text outside calls; a call
 * begins with its index (0, 1, ... in order), id and name, and its arguments follow in one or
 * more pieces that together are the JSON text the model wrote. */
struct hs__tool_sink {
    void (*content)(void *user, const char *s, size_t n);
    void (*call)(void *user, int32_t index, const char *id, const char *name, size_t n_name);
    void (*args)(void *user, int32_t index, const char *s, size_t n);
    void *user;
};

struct hs__tool_parser {
    enum hs__tool_format fmt;
    bool parallel;
    struct hs__buf text; /* everything fed so far */
    size_t pos;          /* bytes of text dealt with */
    int state;
    size_t open;     /* where the call being read began: its opener's first byte */
    size_t start;    /* where its JSON object begins (after the opener) */
    size_t ws_from;  /* TEXT: start of a held-back run of whitespace, SIZE_MAX: none */
    bool after_call; /* TEXT: the last thing seen was a call (its trailing whitespace is dropped) */
    bool in_list;    /* MISTRAL: inside [ ... ] */
    int32_t n_calls;
    size_t scan;   /* JSON scanner: the next byte to look at */
    int32_t depth; /* its nesting depth */
    bool in_str, esc;
    uint64_t rng; /* ids */
    bool oom;
};

/* Starts a parser for format fmt; seed varies the call ids. */
void hs__tool_parser_init(struct hs__tool_parser *p, enum hs__tool_format fmt, bool parallel,
                          uint64_t seed);
/* Feeds n bytes of output text; reports what is certain so far to sink. */
void hs__tool_parser_feed(struct hs__tool_parser *p, const char *s, size_t n,
                          const struct hs__tool_sink *sink);
/* The output ended: reports what was held back (an unfinished call whose arguments were
 * streamed stays a call; other unfinished text is content). */
void hs__tool_parser_finish(struct hs__tool_parser *p, const struct hs__tool_sink *sink);
void hs__tool_parser_free(struct hs__tool_parser *p);

#endif
