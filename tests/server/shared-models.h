/* The GGUF files of ../shared/models (HS_MODELS_DIR) that the every-model tests walk: all 13,
 * every architecture, tokenizer and weight type the shared references cover. One list for
 * test-cli.c and test-engine-split.c. */
#ifndef HS_TESTS_SERVER_SHARED_MODELS_H
#define HS_TESTS_SERVER_SHARED_MODELS_H

static const char *const hs_test_shared_models[] = {
    "stories260K.gguf",
    "tiny-f32.gguf",
    "tiny-f16.gguf",
    "tiny-q8_0.gguf",
    "tiny-q4_k_m.gguf",
    "qwen2-bpe-f32.gguf",
    "qwen3-bpe-q8_0.gguf",
    "llama3-bpe-f32.gguf",
    "qwen3-vocab-f16.gguf",
    "moe-mixtral-mini-f32.gguf",
    "moe-qwen2-mini-f32.gguf",
    "moe-qwen2-mini-q8_0.gguf",
    "moe-qwen3-mini-q8_0.gguf",
};
#define HS_TEST_N_SHARED_MODELS (sizeof(hs_test_shared_models) / sizeof(hs_test_shared_models[0]))

#endif
