/* libFuzzer target: the tokenizers on arbitrary bytes. Three vocabularies are loaded once (the
 * synthetic SentencePiece one, the llama-bpe one and Qwen3's real 151k BPE vocabulary, from
 * $HS_MODELS_DIR); each input is tokenized with and without parse_special, streamed back through
 * hs_detok, and checked: the stream is valid UTF-8, and byte-level BPE pieces give back the
 * input exactly. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/gguf/gguf.h"
#include "model/tokenizer/vocab.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define N_VOCABS 3

static const char *const files[N_VOCABS] = {"tiny-f32.gguf", "llama3-bpe-f32.gguf",
                                            "qwen3-vocab-f16.gguf"};
static struct hs_gguf *ggufs[N_VOCABS];
static struct hs_vocab *vocabs[N_VOCABS];

static void load_all(void)
{
    const char *dir = getenv("HS_MODELS_DIR");
    if (dir == NULL) {
        dir = "../shared/models";
    }
    for (int i = 0; i < N_VOCABS; i++) {
        char path[1024];
        struct hs_error err = {0};
        snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
        if (hs_gguf_open(path, &ggufs[i], &err) != HS_OK ||
            hs_vocab_load(ggufs[i], &vocabs[i], &err) != HS_OK) {
            fprintf(stderr, "fuzz-vocab: %s: %s (set HS_MODELS_DIR)\n", path, err.message);
            abort();
        }
    }
}

/* Strict UTF-8 check, written independently of the library's. */
static int valid_utf8(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i];
        size_t k;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            k = 2, cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            k = 3, cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            k = 4, cp = c & 0x07;
        } else {
            return 0;
        }
        if (i + k > n) {
            return 0;
        }
        for (size_t j = 1; j < k; j++) {
            if ((s[i + j] & 0xc0) != 0x80) {
                return 0;
            }
            cp = (cp << 6) | (s[i + j] & 0x3f);
        }
        if ((k == 2 && cp < 0x80) || (k == 3 && cp < 0x800) || (k == 4 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
            return 0;
        }
        i += k;
    }
    return 1;
}

static void run(const struct hs_vocab *v, const uint8_t *data, size_t size, int parse_special)
{
    size_t n = 0;
    hs_status st = hs_tokenize(v, (const char *)data, size, true, parse_special, NULL, 0, &n);
    if (st != HS_OK && st != HS_E_RANGE) {
        __builtin_trap();
    }
    hs_token *toks = malloc((n + 1) * sizeof(*toks));
    size_t n2 = 0;
    if (toks == NULL ||
        hs_tokenize(v, (const char *)data, size, true, parse_special, toks, n, &n2) != HS_OK ||
        n2 != n) {
        __builtin_trap();
    }
    size_t longest = 0;
    for (size_t i = 0; i < n; i++) {
        if (toks[i] < 0 || toks[i] >= hs_vocab_n_tokens(v)) {
            __builtin_trap();
        }
        size_t k = hs_vocab_piece(v, toks[i], true, NULL, 0);
        longest = k > longest ? k : longest;
    }
    /* raw pieces: byte-level BPE is lossless (BOS/EOS aside) */
    if (hs_vocab_type(v) == HS_VOCAB_BPE) {
        uint8_t *back = malloc(size + 64 * (n + 1));
        size_t len = 0;
        for (size_t i = 0; i < n && back != NULL; i++) {
            if ((toks[i] == hs_vocab_bos(v) && i == 0 && hs_vocab_add_bos(v)) ||
                (toks[i] == hs_vocab_eos(v) && i == n - 1 && hs_vocab_add_eos(v))) {
                continue;
            }
            len += hs_vocab_piece(v, toks[i], true, (char *)back + len, size + 64 - len);
        }
        if (back == NULL || len != size || (size > 0 && memcmp(back, data, size) != 0)) {
            __builtin_trap();
        }
        free(back);
    }
    /* streaming: every chunk valid UTF-8 */
    for (int special = 0; special < 2; special++) {
        struct hs_detok d;
        hs_detok_init(&d, v, special);
        d.strip_leading_space = hs_vocab_type(v) == HS_VOCAB_SPM;
        size_t cap = 64 + longest;
        char *out = malloc(cap);
        if (out == NULL) {
            __builtin_trap();
        }
        for (size_t i = 0; i < n; i++) {
            size_t k = hs_detok_push(&d, toks[i], out, cap);
            if (k > cap || !valid_utf8((const uint8_t *)out, k)) {
                __builtin_trap();
            }
        }
        size_t k = hs_detok_flush(&d, out, cap);
        if (k > cap || !valid_utf8((const uint8_t *)out, k) || d.n_pending != 0) {
            __builtin_trap();
        }
        free(out);
    }
    free(toks);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (vocabs[0] == NULL) {
        load_all();
    }
    for (int i = 0; i < N_VOCABS; i++) {
        run(vocabs[i], data, size, 0);
        run(vocabs[i], data, size, 1);
    }
    return 0;
}
