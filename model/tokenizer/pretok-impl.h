/* Byte-level BPE pre-tokenization, internal to model/ (vocab.c): UTF-8 helpers and the
 * pre-tokenizer splits. Thread: any; nothing here keeps state. */
#ifndef HS_MODEL_PRETOK_IMPL_H
#define HS_MODEL_PRETOK_IMPL_H

#include <stddef.h>
#include <stdint.h>

/* Which regex split a "gpt2" vocabulary's tokenizer.ggml.pre names. */
enum hs__pre {
    HS__PRE_DEFAULT, /* "default" or no tokenizer.ggml.pre: four regexes applied in turn */
    HS__PRE_GPT2,    /* "gpt-2" */
    HS__PRE_LLAMA3,  /* "llama-bpe", "llama3", "llama-v3", "falcon3" */
    HS__PRE_QWEN2,   /* "qwen2", "deepseek-r1-qwen", "megrez" */
};

/* Code points of invalid UTF-8 bytes: outside Unicode, so no category matches them. */
#define HS__CP_INVALID_BASE 0x110000u

/* Decodes one character at s[0..len) (len > 0). Invalid or truncated sequences give
 * HS__CP_INVALID_BASE + byte and consume one byte. */
uint32_t hs__utf8_decode(const uint8_t *s, size_t len, size_t *adv);

/* Length of the valid prefix of a character at s[0..len): returns n > 0 for a complete valid
 * character of n bytes, 0 when s is a valid but incomplete start (more bytes may complete it),
 * and -m when the first m bytes are an invalid maximal subpart. */
int hs__utf8_check(const uint8_t *s, size_t len);

/* Writes cp as UTF-8 into out (room for 4 bytes); returns the byte count. */
size_t hs__utf8_encode(uint32_t cp, uint8_t *out);

/* Splits cps[0..n) into pre-tokens as the pre-tokenizer pre does. seg_a and seg_b are scratch of
 * 2 * n + 2 entries each; *segs points at the result (one of them): n_seg pairs of [begin, end)
 * code point indices. Returns n_seg. */
size_t hs__pretok_split(enum hs__pre pre, const uint32_t *cps, size_t n, size_t *seg_a,
                        size_t *seg_b, const size_t **segs);

#endif
