/* libFuzzer target: an HTTP request body -> request validation (api/request.c) and chat template
 * rendering. The first byte picks the endpoint (chat or completions) and the template (Qwen3's
 * real Jinja template from qwen3-vocab-f16.gguf, or the ChatML fallback); the rest is the body.
 * Checks: no crash or leak; on success the prompts are non-empty and hold ids inside the vocab,
 * stops and n are inside the engine's limits; on failure an HTTP status and a message are set. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/request.h"
#include "model/chat/chat-template.h"
#include "model/gguf/gguf.h"
#include "model/tokenizer/vocab.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct hs_gguf *gguf;
static struct hs_vocab *vocab;
static struct hs_chat_template *tmpl;

static void load(void)
{
    const char *dir = getenv("HS_MODELS_DIR");
    char path[1024];
    struct hs_error err = {0};
    struct hs_gguf_str src;
    snprintf(path, sizeof(path), "%s/qwen3-vocab-f16.gguf", dir ? dir : "../shared/models");
    if (hs_gguf_open(path, &gguf, &err) != HS_OK || hs_vocab_load(gguf, &vocab, &err) != HS_OK) {
        fprintf(stderr, "fuzz-request: %s: %s (set HS_MODELS_DIR)\n", path, err.message);
        abort();
    }
    if (hs_gguf_get_str(gguf, "tokenizer.chat_template", &src) != HS_OK ||
        hs_chat_template_parse(src.data, src.len, &tmpl, &err) != HS_OK) {
        fprintf(stderr, "fuzz-request: no usable chat template in %s: %s\n", path, err.message);
        abort();
    }
    /* Keep single inputs fast: a template loop over a huge list is bounded anyway. */
    struct hs_chat_template_limits lim = {
        .max_output_bytes = 1 << 20, .max_memory_bytes = 64 << 20, .max_loop_iterations = 100000};
    hs_chat_template_set_limits(tmpl, &lim);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!vocab) {
        load();
    }
    if (size < 1) {
        return 0;
    }
    uint8_t sel = data[0];
    struct hs__api_ctx ctx = {.vocab = vocab, .tmpl = (sel & 2) ? NULL : tmpl, .max_depth = 32};
    enum hs__api_kind kind = (sel & 1) ? HS__API_COMPLETION : HS__API_CHAT;
    struct hs__api_req req;
    struct hs__api_err err = {0};
    hs_status st = hs__api_parse(&ctx, kind, (const char *)data + 1, size - 1, &req, &err);
    if (st == HS_OK) {
        int32_t n_vocab = hs_vocab_n_tokens(vocab);
        if (req.n_prompts < 1 || req.n_prompts > HS__API_MAX_PROMPTS || req.er.n < 1 ||
            req.er.n > HS_ENGINE_MAX_CHOICES || req.er.n_stop < 0 ||
            req.er.n_stop > HS_ENGINE_MAX_STOP) {
            abort();
        }
        for (int32_t i = 0; i < req.n_prompts; i++) {
            if (req.prompts[i].n < 1) {
                abort();
            }
            for (int32_t k = 0; k < req.prompts[i].n; k++) {
                if (req.prompts[i].ids[k] < 0 || req.prompts[i].ids[k] >= n_vocab) {
                    abort();
                }
            }
        }
        for (int32_t i = 0; i < req.er.n_stop; i++) {
            size_t n = strlen(req.er.stop[i]);
            if (n < 1 || n > HS_ENGINE_MAX_STOP_BYTES) {
                abort();
            }
        }
    } else if (err.http < 400 || err.message[0] == '\0') {
        abort();
    }
    hs__api_req_free(&req);
    /* the same body through the lossy JSON string builder */
    json_t *s = hs__api_json_str((const char *)data, size);
    if (!s) {
        abort();
    }
    json_decref(s);
    return 0;
}
