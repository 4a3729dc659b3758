/* Tokenizers built from GGUF metadata: SentencePiece-style (tokenizer.ggml.model = "llama") and
 * byte-level BPE ("gpt2", pre-tokenizer from tokenizer.ggml.pre). Thread: a vocab is immutable
 * after load and may be shared; a detokenizer stream belongs to one thread. */
#ifndef HS_MODEL_VOCAB_H
#define HS_MODEL_VOCAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

struct hs_gguf;
struct hs_vocab;

enum hs_vocab_type {
    HS_VOCAB_SPM, /* "llama" */
    HS_VOCAB_BPE, /* "gpt2" */
    HS_VOCAB_TYPE_COUNT,
};
const char *hs_vocab_type_str(enum hs_vocab_type t);

/* Token attributes (tokenizer.ggml.token_type). */
enum hs_token_attr {
    HS_TOKEN_NORMAL = 1,
    HS_TOKEN_UNKNOWN = 2,
    HS_TOKEN_CONTROL = 3,
    HS_TOKEN_USER_DEFINED = 4,
    HS_TOKEN_UNUSED = 5,
    HS_TOKEN_BYTE = 6,
};

/* Loads the tokenizer from g's tokenizer.ggml.* keys. Errors: HS_E_FORMAT (missing or
 * inconsistent keys: err names the key), HS_E_NOTSUP (tokenizer model or pre-tokenizer we do not
 * implement), HS_E_NOMEM. Copies what it needs; g may be closed afterwards. Returns new (free
 * with hs_vocab_destroy). */
hs_status hs_vocab_load(const struct hs_gguf *g, struct hs_vocab **out, struct hs_error *err);
void hs_vocab_destroy(struct hs_vocab *v);

enum hs_vocab_type hs_vocab_type(const struct hs_vocab *v);
int32_t hs_vocab_n_tokens(const struct hs_vocab *v);
hs_token hs_vocab_bos(const struct hs_vocab *v); /* -1 when none */
hs_token hs_vocab_eos(const struct hs_vocab *v);
bool hs_vocab_add_bos(const struct hs_vocab *v);
bool hs_vocab_add_eos(const struct hs_vocab *v);
/* End of generation, as llama.cpp decides it: eos, eot, eom, tokenizer.ggml.eog, the FIM
 * pad/repo/file-separator tokens, and tokens written <|im_end|>, <|endoftext|>, <|eot_id|>,
 * <end_of_turn>, <|end|>, <|eom_id|>, <EOT> (retyped CONTROL at load if they were not). */
bool hs_vocab_is_eog(const struct hs_vocab *v, hs_token t);
bool hs_vocab_is_control(const struct hs_vocab *v, hs_token t);
/* The token's attribute (tokenizer.ggml.token_type, as retyped at load); 0 for ids out of
 * range. */
enum hs_token_attr hs_vocab_token_attr(const struct hs_vocab *v, hs_token t);
/* The token's stored text (NUL-terminated, borrowed), or NULL for ids out of range. */
const char *hs_vocab_token_text(const struct hs_vocab *v, hs_token t);
/* Id of the token whose stored text is exactly s, or -1. */
hs_token hs_vocab_find(const struct hs_vocab *v, const char *s);

/* Longest text hs_tokenize takes (symbol indices are 32-bit). */
#define HS_VOCAB_MAX_TEXT_BYTES ((size_t)256 << 20)

/* Tokenizes len bytes of text. add_special: BOS/EOS as the model asks; parse_special: control
 * tokens written in the text ("<|im_start|>") become their ids (USER_DEFINED tokens such as
 * "<think>" are always split out, as llama.cpp does). Writes at most cap ids and sets *n_out to
 * the number the whole text needs (so a too-small buffer returns HS_E_RANGE with the size to
 * retry with). Invalid UTF-8 is tokenized byte-wise (each invalid byte its own character, kept
 * exactly: byte-level BPE and byte fallback give it back), never rejected; NUL bytes are text.
 * Errors: HS_E_INVAL (NULL arguments, len > HS_VOCAB_MAX_TEXT_BYTES), HS_E_NOMEM. Thread: any;
 * allocates scratch per call. */
hs_status hs_tokenize(const struct hs_vocab *v, const char *text, size_t len, bool add_special,
                      bool parse_special, hs_token *out, size_t cap, size_t *n_out);

/* As hs_tokenize with parse_special, except where plain (NULL: nowhere; else [len] bytes) marks
 * bytes 1: no special token, control or user-defined, is made from text covering such a byte,
 * which is tokenized as the plain text it is. A rendered chat prompt passes the client-text marks
 * of hs_chat_template_render_marked, so a message that writes "<|im_end|>" or "</think>" gets
 * those characters, never the control tokens; the tokens of everything else are what
 * hs_tokenize gives. Errors as hs_tokenize. Thread: any. */
hs_status hs_tokenize_marked(const struct hs_vocab *v, const char *text, size_t len,
                             bool add_special, const uint8_t *plain, hs_token *out, size_t cap,
                             size_t *n_out);

/* The bytes token t stands for (byte tokens decoded, "▁" -> ' ', GPT-2 byte mapping undone);
 * control and unknown tokens give their text only when special, USER_DEFINED tokens their text
 * as written. Returns the number of bytes the piece has (0 for ids out of range); writes at most
 * cap (no NUL), so cap 0 with buf NULL measures. */
size_t hs_vocab_piece(const struct hs_vocab *v, hs_token t, bool special, char *buf, size_t cap);

/* Streaming detokenizer: holds back bytes of an incomplete UTF-8 character (and SentencePiece's
 * leading space of the first token when asked) so that no character is split across two
 * outputs. */
struct hs_detok {
    const struct hs_vocab *vocab;
    bool special;
    bool strip_leading_space; /* SPM: drop the space of the first piece (prompt continuation) */
    bool at_start;
    uint8_t pending[8];
    int32_t n_pending;
};

void hs_detok_init(struct hs_detok *d, const struct hs_vocab *v, bool special);
/* Appends token t; writes complete UTF-8 to out (at most cap bytes) and returns the count.
 * cap of 64 bytes plus the longest piece always suffices. */
size_t hs_detok_push(struct hs_detok *d, hs_token t, char *out, size_t cap);
/* Flushes pending bytes at the end of a stream (invalid leftovers become U+FFFD). */
size_t hs_detok_flush(struct hs_detok *d, char *out, size_t cap);

#endif
