/* Chat templates: a Jinja-subset interpreter for a model's tokenizer.chat_template, plus a ChatML
 * fallback for models without one. Behaves like Hugging Face transformers' renderer
 * (trim_blocks and lstrip_blocks on, one trailing newline of the template dropped, tojson with
 * Python's ", " / ": " spacing and no ASCII escaping).
 *
 * Values: a small dynamic type (null, bool, int, float, string, array, object with insertion
 * order) that callers build the render context with. Values built by callers form trees: every
 * container owns its children, and a value may be added to one container only.
 *
 * Thread: a parsed template is immutable and may be rendered from any number of threads at once;
 * a value tree belongs to one thread while it is being built, and is only read by render. */
#ifndef HS_MODEL_CHAT_TEMPLATE_H
#define HS_MODEL_CHAT_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

struct hs_tmpl_value;
struct hs_chat_template;

enum hs_tmpl_kind {
    HS_TMPL_NULL,
    HS_TMPL_BOOL,
    HS_TMPL_INT,
    HS_TMPL_FLOAT,
    HS_TMPL_STRING,
    HS_TMPL_ARRAY,
    HS_TMPL_OBJECT,
    HS_TMPL_KIND_COUNT,
};
const char *hs_tmpl_kind_str(enum hs_tmpl_kind k);

/* ---- building values ----
 * Constructors return new values (free with hs_tmpl_value_destroy unless handed to a container),
 * or NULL when out of memory. Strings are copied (UTF-8, may hold NUL bytes with _string_n). */
struct hs_tmpl_value *hs_tmpl_null(void);
struct hs_tmpl_value *hs_tmpl_bool(bool b);
struct hs_tmpl_value *hs_tmpl_int(int64_t i);
struct hs_tmpl_value *hs_tmpl_float(double f);
struct hs_tmpl_value *hs_tmpl_string(const char *s);
struct hs_tmpl_value *hs_tmpl_string_n(const char *s, size_t len);
struct hs_tmpl_value *hs_tmpl_array(void);
struct hs_tmpl_value *hs_tmpl_object(void);

/* Appends item to arr; takes ownership of item, also on failure (so a NULL item from a failed
 * constructor is reported here). Errors: HS_E_INVAL (arr not an array, or NULL), HS_E_NOMEM. */
hs_status hs_tmpl_array_push(struct hs_tmpl_value *arr, struct hs_tmpl_value *item);

/* Sets obj[key] = v, replacing (and destroying) an earlier value of that key in place, else
 * appending; takes ownership of v, also on failure. Errors: HS_E_INVAL (obj not an object or
 * NULL), HS_E_NOMEM. */
hs_status hs_tmpl_object_set(struct hs_tmpl_value *obj, const char *key, struct hs_tmpl_value *v);

/* Read access (borrowed results, valid while the value lives). */
enum hs_tmpl_kind hs_tmpl_value_kind(const struct hs_tmpl_value *v);
/* The value of key in obj, or NULL when absent or obj is not an object. */
const struct hs_tmpl_value *hs_tmpl_object_get(const struct hs_tmpl_value *obj, const char *key);

/* Frees v and everything it owns. NULL is ignored. */
void hs_tmpl_value_destroy(struct hs_tmpl_value *v);

/* Marks v and everything it holds as client text (message contents, names, tool definitions
 * and arguments: what a request wrote, not the template): every string, and the keys of every
 * object. Rendering keeps track of which output bytes came from marked strings, through
 * concatenation, slicing, strip, split, join, replace and indent byte for byte; other filters,
 * printed containers and tojson mark their whole result when any input held client text. The
 * caller then treats those bytes as plain text (hs_chat_template_render_marked). NULL: no-op. */
void hs_tmpl_value_mark_client(struct hs_tmpl_value *v);

/* Convenience for the message list of a chat: returns new {"role": role, "content": content}
 * (content NULL: null), or NULL when out of memory. Add "reasoning_content", "tool_calls" (array
 * of {"id", "type": "function", "function": {"name", "arguments"}}) with hs_tmpl_object_set. */
struct hs_tmpl_value *hs_tmpl_message(const char *role, const char *content);

/* ---- templates ---- */

/* Guards against runaway templates (a loop over range(10**9), string doubling). */
struct hs_chat_template_limits {
    size_t max_output_bytes;      /* rendered text; default 16 MiB */
    size_t max_memory_bytes;      /* values made while rendering; default 256 MiB */
    uint64_t max_loop_iterations; /* all for-loop bodies together; default 10 million */
    int max_call_depth;           /* nested macro calls; default 64 */
};

/* Parses len bytes of Jinja source. Errors: HS_E_FORMAT (syntax error: err says what, with the
 * 1-based line and column, and err->offset the byte offset), HS_E_NOMEM. On error *out is NULL.
 * Returns new (free with hs_chat_template_destroy); src is copied. Thread: any. */
hs_status hs_chat_template_parse(const char *src, size_t len, struct hs_chat_template **out,
                                 struct hs_error *err);
void hs_chat_template_destroy(struct hs_chat_template *t);

/* Replaces the limits (zero fields keep the default). Not thread-safe against concurrent
 * renders of t. */
void hs_chat_template_set_limits(struct hs_chat_template *t,
                                 const struct hs_chat_template_limits *limits);

/* Renders t with context, an object whose keys become the template's global variables: messages
 * (array of message objects), add_generation_prompt, bos_token, eos_token, tools, plus any
 * chat_template_kwargs merged in by the caller. The context is only read. On success *out is a
 * new NUL-terminated string (free with free()) and *out_len its length in bytes. Errors:
 * HS_E_INVAL (context not an object; runtime error such as an unknown filter, a type error or
 * raise_exception(msg): err carries the message and line), HS_E_RANGE (a limit was hit),
 * HS_E_NOMEM. On error *out is NULL. Thread: any. */
hs_status hs_chat_template_render(const struct hs_chat_template *t,
                                  const struct hs_tmpl_value *context, char **out, size_t *out_len,
                                  struct hs_error *err);

/* As hs_chat_template_render, and *client_mask (not NULL) receives which output bytes came from
 * client text (hs_tmpl_value_mark_client): NULL when none did, else new [*out_len] bytes, 1 for
 * client text and 0 for the template's own (free with free()). On error it is NULL. */
hs_status hs_chat_template_render_marked(const struct hs_chat_template *t,
                                         const struct hs_tmpl_value *context, char **out,
                                         size_t *out_len, uint8_t **client_mask,
                                         struct hs_error *err);

/* The ChatML rendering used when a model has no template:
 * "<|im_start|>{role}\n{content}<|im_end|>\n" per message, then "<|im_start|>assistant\n" when
 * add_generation_prompt. Content given as an array of parts joins the parts' "text" fields.
 * Errors: HS_E_INVAL (messages not an array of objects with a string role), HS_E_NOMEM. Returns
 * a new string (free with free()). Thread: any. */
hs_status hs_chat_template_render_chatml(const struct hs_tmpl_value *messages,
                                         bool add_generation_prompt, char **out, size_t *out_len,
                                         struct hs_error *err);
/* The same with client marks, as hs_chat_template_render_marked. */
hs_status hs_chat_template_render_chatml_marked(const struct hs_tmpl_value *messages,
                                                bool add_generation_prompt, char **out,
                                                size_t *out_len, uint8_t **client_mask,
                                                struct hs_error *err);

#endif
