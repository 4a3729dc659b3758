/* libFuzzer target: the input is a chat template; it is parsed and, when it parses, rendered
 * with a small fixed conversation under tight limits. Any crash, sanitizer report or leak is a
 * bug; errors are expected. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "model/chat/chat-template.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct hs_tmpl_value *make_context(void)
{
    struct hs_tmpl_value *ctx = hs_tmpl_object();
    struct hs_tmpl_value *msgs = hs_tmpl_array();
    hs_tmpl_array_push(msgs, hs_tmpl_message("system", "Be brief."));
    hs_tmpl_array_push(msgs, hs_tmpl_message("user", "Hi <b>there</b>\n"));
    struct hs_tmpl_value *asst = hs_tmpl_message("assistant", "<think>\nhm\n</think>\n\nHello");
    struct hs_tmpl_value *calls = hs_tmpl_array();
    struct hs_tmpl_value *call = hs_tmpl_object();
    struct hs_tmpl_value *fn = hs_tmpl_object();
    struct hs_tmpl_value *args = hs_tmpl_object();
    hs_tmpl_object_set(args, "x", hs_tmpl_float(1.5));
    hs_tmpl_object_set(args, "s", hs_tmpl_string("\xc3\xa9\"\\"));
    hs_tmpl_object_set(fn, "name", hs_tmpl_string("f"));
    hs_tmpl_object_set(fn, "arguments", args);
    hs_tmpl_object_set(call, "id", hs_tmpl_string("abcdef123"));
    hs_tmpl_object_set(call, "function", fn);
    hs_tmpl_array_push(calls, call);
    hs_tmpl_object_set(asst, "tool_calls", calls);
    hs_tmpl_array_push(msgs, asst);
    hs_tmpl_array_push(msgs, hs_tmpl_message("tool", "{\"ok\": true}"));
    hs_tmpl_array_push(msgs, hs_tmpl_message("user", NULL));
    hs_tmpl_object_set(ctx, "messages", msgs);
    struct hs_tmpl_value *tools = hs_tmpl_array();
    struct hs_tmpl_value *tool = hs_tmpl_object();
    hs_tmpl_object_set(tool, "type", hs_tmpl_string("function"));
    hs_tmpl_object_set(tool, "n", hs_tmpl_int(-3));
    hs_tmpl_array_push(tools, tool);
    hs_tmpl_object_set(ctx, "tools", tools);
    hs_tmpl_object_set(ctx, "add_generation_prompt", hs_tmpl_bool(true));
    hs_tmpl_object_set(ctx, "bos_token", hs_tmpl_string("<s>"));
    hs_tmpl_object_set(ctx, "eos_token", hs_tmpl_string("</s>"));
    return ctx;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct hs_tmpl_value *ctx;
    if (!ctx) {
        ctx = make_context(); /* lives for the process, read-only */
    }
    struct hs_chat_template *t = NULL;
    struct hs_error err;
    if (hs_chat_template_parse((const char *)data, size, &t, &err) != HS_OK) {
        return 0;
    }
    struct hs_chat_template_limits lim = {
        .max_output_bytes = 1 << 20,
        .max_memory_bytes = 32 << 20,
        .max_loop_iterations = 100000,
        .max_call_depth = 24,
    };
    hs_chat_template_set_limits(t, &lim);
    char *out = NULL;
    size_t len = 0;
    if (hs_chat_template_render(t, ctx, &out, &len, &err) == HS_OK) {
        free(out);
    }
    hs_chat_template_destroy(t);
    return 0;
}
