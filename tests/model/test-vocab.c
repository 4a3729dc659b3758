/* Tokenizer tests: llama.cpp's reference tokenizations for every shared model, plus targeted
 * cases (digits, spaces, tabs, newlines, accents, emoji, special tokens, invalid UTF-8, the
 * streaming detokenizer). */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <glob.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/gguf/gguf.h"
#include "model/tokenizer/vocab.h"

/* ---- helpers ---- */

struct loaded {
    struct hs_gguf *g;
    struct hs_vocab *v;
};

static const char *models_dir(void)
{
    const char *d = getenv("HS_MODELS_DIR");
    return d ? d : "../shared/models";
}

static struct loaded load(const char *file)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", models_dir(), file);
    struct loaded l = {0};
    struct hs_error err = {0};
    hs_status st = hs_gguf_open(path, &l.g, &err);
    cr_assert_eq(st, HS_OK, "open %s: %s", path, err.message);
    st = hs_vocab_load(l.g, &l.v, &err);
    cr_assert_eq(st, HS_OK, "vocab %s: %s", path, err.message);
    return l;
}

static void unload(struct loaded *l)
{
    hs_vocab_destroy(l->v);
    hs_gguf_close(l->g);
}

/* Tokenizes into a malloc'd array (free with free()). */
static hs_token *tok(const struct hs_vocab *v, const char *s, size_t len, bool add_special,
                     bool parse_special, size_t *n)
{
    size_t need = 0;
    hs_status st = hs_tokenize(v, s, len, add_special, parse_special, NULL, 0, &need);
    cr_assert(st == HS_OK || st == HS_E_RANGE, "tokenize: %s", hs_status_name(st));
    hs_token *out = malloc((need + 1) * sizeof(*out));
    cr_assert_not_null(out);
    st = hs_tokenize(v, s, len, add_special, parse_special, out, need, n);
    cr_assert_eq(st, HS_OK);
    cr_assert_eq(*n, need);
    return out;
}

/* Raw pieces concatenated (no UTF-8 handling). */
static size_t pieces(const struct hs_vocab *v, const hs_token *t, size_t n, bool special, char *buf,
                     size_t cap)
{
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        size_t k = hs_vocab_piece(v, t[i], special, buf + len, cap - len);
        cr_assert_leq(len + k, cap);
        len += k;
    }
    return len;
}

/* SentencePiece: a lone U+2581 that fell back to byte tokens stays "▁" in llama.cpp's output;
 * map it back to a space to compare with the input. Returns the new length. */
static size_t unescape_spm(char *buf, size_t len)
{
    size_t w = 0;
    for (size_t i = 0; i < len;) {
        if (i + 3 <= len && memcmp(buf + i, "\xe2\x96\x81", 3) == 0) {
            buf[w++] = ' ';
            i += 3;
        } else {
            buf[w++] = buf[i++];
        }
    }
    return w;
}

static char *piece_str(const struct hs_vocab *v, hs_token t)
{
    static char buf[512];
    size_t n = hs_vocab_piece(v, t, false, buf, sizeof(buf) - 1);
    cr_assert_lt(n, sizeof(buf));
    buf[n] = '\0';
    return buf;
}

/* Naive UTF-8 validity, table-free: the reference the detokenizer's output is checked against. */
static size_t naive_char_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t need;
    unsigned long cp;
    if (c < 0x80) {
        return 1;
    } else if ((c >> 5) == 6) {
        need = 2, cp = c & 0x1f;
    } else if ((c >> 4) == 14) {
        need = 3, cp = c & 0x0f;
    } else if ((c >> 3) == 30) {
        need = 4, cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < need) {
        return 0;
    }
    for (size_t i = 1; i < need; i++) {
        if ((s[i] >> 6) != 2) {
            return 0;
        }
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    static const unsigned long min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[need] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
        return 0;
    }
    return need;
}

static bool naive_valid(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t k = naive_char_len((const unsigned char *)s + i, n - i);
        if (k == 0) {
            return false;
        }
        i += k;
    }
    return true;
}

/* Keeps valid characters other than U+FFFD; drops invalid bytes and U+FFFD. Returns length. */
static size_t strip_replacement(const char *s, size_t n, char *out)
{
    size_t w = 0;
    for (size_t i = 0; i < n;) {
        size_t k = naive_char_len((const unsigned char *)s + i, n - i);
        if (k == 0) {
            i++;
            continue;
        }
        if (!(k == 3 && memcmp(s + i, "\xef\xbf\xbd", 3) == 0)) {
            memcpy(out + w, s + i, k);
            w += k;
        }
        i += k;
    }
    return w;
}

static void assert_tokens(const struct hs_vocab *v, const char *s, bool add_special,
                          bool parse_special, const hs_token *want, size_t n_want)
{
    size_t n;
    hs_token *got = tok(v, s, strlen(s), add_special, parse_special, &n);
    cr_assert_eq(n, n_want, "'%s': %zu tokens, expected %zu", s, n, n_want);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(got[i], want[i], "'%s' token %zu: %d, expected %d", s, i, got[i], want[i]);
    }
    free(got);
}

/* Pieces of s's tokens (no special tokens added), checked one by one. */
static void assert_pieces(const struct hs_vocab *v, const char *s, const char *const *want,
                          size_t n_want)
{
    size_t n;
    hs_token *got = tok(v, s, strlen(s), false, false, &n);
    cr_assert_eq(n, n_want, "'%s': %zu tokens, expected %zu", s, n, n_want);
    for (size_t i = 0; i < n; i++) {
        cr_assert_str_eq(piece_str(v, got[i]), want[i], "'%s' piece %zu", s, i);
    }
    free(got);
}

/* ---- reference tokenizations from llama.cpp ---- */

static void check_reference(const char *json_path, int *n_cases)
{
    json_error_t jerr;
    json_t *root = json_load_file(json_path, 0, &jerr);
    cr_assert_not_null(root, "%s: %s", json_path, jerr.text);
    const char *model = json_string_value(json_object_get(root, "model"));
    cr_assert_not_null(model, "%s: no model", json_path);
    const char *base = strrchr(model, '/');
    struct loaded l = load(base ? base + 1 : model);
    bool spm = hs_vocab_type(l.v) == HS_VOCAB_SPM;

    json_t *cases = json_object_get(root, "cases");
    cr_assert(json_is_array(cases) && json_array_size(cases) > 0);
    size_t ci;
    json_t *c;
    json_array_foreach(cases, ci, c)
    {
        const char *prompt = json_string_value(json_object_get(c, "prompt"));
        json_t *want = json_object_get(c, "prompt_tokens");
        cr_assert(prompt && json_is_array(want));
        size_t n;
        hs_token *got = tok(l.v, prompt, strlen(prompt), true, false, &n);
        cr_assert_eq(n, json_array_size(want), "%s case %zu '%s': %zu tokens, expected %zu", model,
                     ci, prompt, n, json_array_size(want));
        for (size_t i = 0; i < n; i++) {
            cr_assert_eq(got[i], json_integer_value(json_array_get(want, i)),
                         "%s case %zu token %zu: %d, expected %lld", model, ci, i, got[i],
                         json_integer_value(json_array_get(want, i)));
        }

        /* the prompt tokens detokenize back to the prompt (SPM: less the added space) */
        struct hs_detok d;
        hs_detok_init(&d, l.v, false);
        d.strip_leading_space = spm;
        char *buf = malloc(1 << 16);
        cr_assert_not_null(buf);
        size_t len = 0;
        for (size_t i = 0; i < n; i++) {
            len += hs_detok_push(&d, got[i], buf + len, (1 << 16) - len);
        }
        len += hs_detok_flush(&d, buf + len, (1 << 16) - len);
        cr_assert_eq(len, strlen(prompt), "%s case %zu: detok length %zu", model, ci, len);
        cr_assert(memcmp(buf, prompt, len) == 0, "%s case %zu: detok '%.*s'", model, ci, (int)len,
                  buf);
        free(got);

        /* steps: each token's piece is the step text; llama-server replaced invalid UTF-8 by
         * U+FFFD (sometimes in a neighbouring step), so compare with those removed */
        json_t *steps = json_object_get(c, "steps");
        const char *completion = json_string_value(json_object_get(c, "completion"));
        cr_assert(json_is_array(steps) && completion);
        hs_detok_init(&d, l.v, false);
        len = 0;
        size_t si;
        json_t *s;
        char piece[512], a[512], b[512];
        json_array_foreach(steps, si, s)
        {
            hs_token t = (hs_token)json_integer_value(json_object_get(s, "token"));
            const char *text = json_string_value(json_object_get(s, "text"));
            cr_assert_not_null(text);
            size_t pn = hs_vocab_piece(l.v, t, false, piece, sizeof(piece));
            cr_assert_leq(pn, sizeof(piece));
            size_t na = strip_replacement(piece, pn, a);
            size_t nb = strip_replacement(text, strlen(text), b);
            cr_assert(na == nb && memcmp(a, b, na) == 0,
                      "%s case %zu step %zu token %d: '%.*s' "
                      "vs '%s'",
                      model, ci, si, t, (int)pn, piece, text);
            if (strstr(text, "\xef\xbf\xbd") == NULL && naive_valid(piece, pn)) {
                cr_assert(pn == strlen(text) && memcmp(piece, text, pn) == 0);
            }
            size_t k = hs_detok_push(&d, t, buf + len, (1 << 16) - len);
            cr_assert(naive_valid(buf + len, k), "%s: detok output not valid UTF-8", model);
            len += k;
        }
        len += hs_detok_flush(&d, buf + len, (1 << 16) - len);
        cr_assert(naive_valid(buf, len));
        char *x = malloc(len + 1), *y = malloc(strlen(completion) + 1);
        cr_assert(x && y);
        size_t nx = strip_replacement(buf, len, x);
        size_t ny = strip_replacement(completion, strlen(completion), y);
        cr_assert(nx == ny && memcmp(x, y, nx) == 0, "%s case %zu: stream '%.*s' vs '%s'", model,
                  ci, (int)len, buf, completion);
        if (strstr(completion, "\xef\xbf\xbd") == NULL) {
            cr_assert(len == strlen(completion) && memcmp(buf, completion, len) == 0);
        }
        free(x);
        free(y);
        free(buf);
        (*n_cases)++;
    }
    unload(&l);
    json_decref(root);
}

Test(vocab, reference_tokenizations_all_models)
{
    char pattern[1024];
    snprintf(pattern, sizeof(pattern), "%s/reference/*.gguf.json", models_dir());
    glob_t gl;
    cr_assert_eq(glob(pattern, 0, NULL, &gl), 0, "no references under %s", pattern);
    int n_files = 0, n_cases = 0;
    for (size_t i = 0; i < gl.gl_pathc; i++) {
        check_reference(gl.gl_pathv[i], &n_cases);
        n_files++;
    }
    globfree(&gl);
    cr_log_info("reference: %d models, %d prompts", n_files, n_cases);
    cr_assert_geq(n_files, 13);
}

/* ---- SentencePiece ---- */

Test(vocab, spm_metadata)
{
    struct loaded l = load("tiny-f32.gguf");
    cr_assert_eq(hs_vocab_type(l.v), HS_VOCAB_SPM);
    cr_assert_eq(hs_vocab_n_tokens(l.v), 4096);
    cr_assert_eq(hs_vocab_bos(l.v), 1);
    cr_assert_eq(hs_vocab_eos(l.v), 2);
    cr_assert(hs_vocab_add_bos(l.v));
    cr_assert(!hs_vocab_add_eos(l.v));
    cr_assert(hs_vocab_is_eog(l.v, 2));
    cr_assert(!hs_vocab_is_eog(l.v, 1));
    cr_assert(hs_vocab_is_control(l.v, 1));
    cr_assert(!hs_vocab_is_control(l.v, 300));
    cr_assert_str_eq(hs_vocab_token_text(l.v, 1), "<s>");
    cr_assert_null(hs_vocab_token_text(l.v, 4096));
    cr_assert_null(hs_vocab_token_text(l.v, -1));
    cr_assert_eq(hs_vocab_find(l.v, "<0x41>"), 3 + 0x41);
    cr_assert_eq(hs_vocab_find(l.v, "no such token"), -1);
    unload(&l);
}

Test(vocab, spm_empty_and_space_prefix)
{
    struct loaded l = load("tiny-f32.gguf");
    hs_token bos = 1;
    assert_tokens(l.v, "", true, false, &bos, 1);
    assert_tokens(l.v, "", false, false, NULL, 0);
    /* "a" becomes "▁a" */
    hs_token a = hs_vocab_find(l.v, "\xe2\x96\x81"
                                    "a");
    cr_assert_geq(a, 0);
    hs_token want[] = {1, a};
    assert_tokens(l.v, "a", true, false, want, 2);
    unload(&l);
}

Test(vocab, spm_byte_fallback)
{
    struct loaded l = load("tiny-f32.gguf");
    /* é, 😀 and a tab are not pieces of the synthetic vocabulary: they come out as bytes */
    const char *s = "\xc3\xa9\t\xf0\x9f\x98\x80";
    size_t n;
    hs_token *t = tok(l.v, s, strlen(s), false, false, &n);
    cr_assert_geq(n, 7);
    const uint8_t bytes[] = {0xc3, 0xa9, 0x09, 0xf0, 0x9f, 0x98, 0x80};
    for (size_t i = 0; i < 7; i++) {
        char name[8];
        snprintf(name, sizeof(name), "<0x%02X>", bytes[i]);
        cr_assert_eq(t[n - 7 + i], hs_vocab_find(l.v, name), "byte %zu", i);
    }
    char buf[64];
    size_t len = unescape_spm(buf, pieces(l.v, t, n, false, buf, sizeof(buf)));
    cr_assert_eq(len, strlen(s) + 1);
    cr_assert(buf[0] == ' ' && memcmp(buf + 1, s, strlen(s)) == 0);
    free(t);
    unload(&l);
}

Test(vocab, spm_multiple_spaces_and_newlines)
{
    struct loaded l = load("tiny-f32.gguf");
    const char *s = "ab  cd\n\nef   g";
    size_t n;
    hs_token *t = tok(l.v, s, strlen(s), false, false, &n);
    char buf[128];
    size_t len = unescape_spm(buf, pieces(l.v, t, n, false, buf, sizeof(buf)));
    cr_assert_eq(len, strlen(s) + 1);
    cr_assert(buf[0] == ' ' && memcmp(buf + 1, s, strlen(s)) == 0, "'%.*s'", (int)len, buf);
    /* "\n" has no piece: byte token 0x0A */
    size_t nl = 0;
    for (size_t i = 0; i < n; i++) {
        nl += t[i] == hs_vocab_find(l.v, "<0x0A>");
    }
    cr_assert_eq(nl, 2);
    free(t);
    unload(&l);
}

Test(vocab, spm_parse_special)
{
    struct loaded l = load("tiny-f32.gguf");
    size_t n;
    hs_token *t = tok(l.v, "<s>a</s>", 8, false, true, &n);
    cr_assert_eq(n, 3);
    cr_assert_eq(t[0], 1);
    /* text after a special token gets the space prefix again, as in llama.cpp */
    cr_assert_eq(t[1], hs_vocab_find(l.v, "\xe2\x96\x81"
                                          "a"));
    cr_assert_eq(t[2], 2);
    free(t);
    t = tok(l.v, "<s>a</s>", 8, false, false, &n);
    cr_assert_gt(n, 3);
    for (size_t i = 0; i < n; i++) {
        cr_assert(t[i] != 1 && t[i] != 2);
    }
    free(t);
    unload(&l);
}

/* ---- byte-level BPE ---- */

Test(vocab, bpe_qwen3_metadata)
{
    struct loaded l = load("qwen3-vocab-f16.gguf");
    cr_assert_eq(hs_vocab_type(l.v), HS_VOCAB_BPE);
    cr_assert_eq(hs_vocab_n_tokens(l.v), 151669);
    cr_assert(!hs_vocab_add_bos(l.v));
    cr_assert_eq(hs_vocab_eos(l.v), 151645);
    cr_assert(hs_vocab_is_eog(l.v, 151645));  /* <|im_end|> */
    cr_assert(hs_vocab_is_eog(l.v, 151643));  /* <|endoftext|> */
    cr_assert(!hs_vocab_is_eog(l.v, 151644)); /* <|im_start|> */
    cr_assert(!hs_vocab_is_eog(l.v, 9707));
    cr_assert(hs_vocab_is_control(l.v, 151644));
    cr_assert_str_eq(hs_vocab_token_text(l.v, 151667), "<think>");
    /* GPT-2 byte order: '!' is 0, '0' is 15, ' ' (Ġ) is 220, '\n' (Ċ) is 198, '\t' 197 */
    cr_assert_eq(hs_vocab_find(l.v, "!"), 0);
    cr_assert_eq(hs_vocab_find(l.v, "0"), 15);
    cr_assert_eq(hs_vocab_find(l.v, "\xc4\xa0"), 220);
    cr_assert_eq(hs_vocab_find(l.v, "\xc4\x8a"), 198);
    cr_assert_eq(hs_vocab_find(l.v, "\xc4\x89"), 197);
    unload(&l);
}

Test(vocab, bpe_load_time_151k)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/qwen3-vocab-f16.gguf", models_dir());
    struct hs_gguf *g = NULL;
    struct hs_error err = {0};
    cr_assert_eq(hs_gguf_open(path, &g, &err), HS_OK, "%s", err.message);
    /* best of three, so that a busy machine does not fail the test */
    double ms = 1e9;
    for (int k = 0; k < 3; k++) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        struct hs_vocab *v = NULL;
        cr_assert_eq(hs_vocab_load(g, &v, &err), HS_OK, "%s", err.message);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double t = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
        ms = t < ms ? t : ms;
        hs_vocab_destroy(v);
    }
    cr_log_info("qwen3 vocab (151669 tokens, 151387 merges) loaded in %.1f ms", ms);
    cr_assert_lt(ms, 1000.0);
    hs_gguf_close(g);
}

Test(vocab, bpe_qwen2_digits_one_by_one)
{
    struct loaded l = load("qwen3-vocab-f16.gguf");
    const char *const want[] = {"1", "2", "3", "4", "5"};
    assert_pieces(l.v, "12345", want, 5);
    hs_token ids[] = {16, 17, 18, 19, 20}; /* '1'..'5' */
    assert_tokens(l.v, "12345", true, false, ids, 5);
    unload(&l);
}

Test(vocab, bpe_llama3_digits_in_threes)
{
    struct loaded l = load("llama3-bpe-f32.gguf");
    size_t n;
    hs_token *t = tok(l.v, "1234567", 7, false, false, &n);
    /* pre-tokens "123", "456", "7": whatever the merges, no token crosses those borders */
    char buf[64];
    size_t at = 0;
    int cuts = 0;
    for (size_t i = 0; i < n; i++) {
        at += hs_vocab_piece(l.v, t[i], false, buf, sizeof(buf));
        cuts += at == 3 || at == 6;
    }
    cr_assert_eq(at, 7);
    cr_assert_eq(cuts, 2);
    free(t);
    /* BOS added as the file asks */
    t = tok(l.v, "hi", 2, true, false, &n);
    cr_assert_eq(t[0], 1756);
    free(t);
    unload(&l);
}

Test(vocab, bpe_spaces_tabs_newlines)
{
    struct loaded l = load("qwen3-vocab-f16.gguf");
    {
        /* \s+(?!\S) leaves the last space to the next word */
        const char *const want[] = {"a", "  ", " b"};
        assert_pieces(l.v, "a   b", want, 3);
    }
    {
        const char *const want[] = {"a", "\n\n", "b"};
        assert_pieces(l.v, "a\n\nb", want, 3);
    }
    {
        /* trailing spaces at the end of text stay together */
        const char *const want[] = {"x", "   "};
        assert_pieces(l.v, "x   ", want, 2);
    }
    {
        /* \s*[\r\n]+ takes spaces before a newline with it */
        const char *const want[] = {"x", "  \n", "y"};
        assert_pieces(l.v, "x  \ny", want, 3);
    }
    {
        /* a tab before a letter belongs to the word ([^\r\n\p{L}\p{N}]?\p{L}+) */
        size_t n;
        hs_token *t = tok(l.v, "a\tb", 3, false, false, &n);
        cr_assert_str_eq(piece_str(l.v, t[0]), "a");
        char buf[16];
        size_t len = pieces(l.v, t + 1, n - 1, false, buf, sizeof(buf));
        cr_assert(len == 2 && memcmp(buf, "\tb", 2) == 0);
        free(t);
    }
    {
        const char *const want[] = {"don", "'t", " stop"};
        assert_pieces(l.v, "don't stop", want, 3);
    }
    {
        const char *const want[] = {"DON", "'T"};
        assert_pieces(l.v, "DON'T", want, 2);
    }
    unload(&l);
}

Test(vocab, bpe_roundtrip_accents_emoji)
{
    struct loaded l = load("qwen3-vocab-f16.gguf");
    static const char *const texts[] = {
        "naïve café, Ångström, Ελληνικά, 日本語のテキスト",
        "emoji 😀👍🏽 and 🇫🇷 flags",
        "tabs\tand\t\ttabs\r\nwindows\r\n\r\nlines",
        "   leading and trailing   ",
        "ÀÉÎÕÜ àéîõü ß ẞ",
        "x² ½ ٣ Ⅻ numbers",
        "\xe3\x80\x80ideographic\xc2\xa0space",
    };
    for (size_t k = 0; k < HS_ARRAY_LEN(texts); k++) {
        size_t n;
        hs_token *t = tok(l.v, texts[k], strlen(texts[k]), false, false, &n);
        char buf[512];
        size_t len = pieces(l.v, t, n, false, buf, sizeof(buf));
        cr_assert(len == strlen(texts[k]) && memcmp(buf, texts[k], len) == 0,
                  "roundtrip '%s' -> '%.*s'", texts[k], (int)len, buf);
        for (size_t i = 0; i < n; i++) {
            cr_assert(t[i] >= 0 && t[i] < 151643, "'%s': special token %d", texts[k], t[i]);
        }
        free(t);
    }
    unload(&l);
}

Test(vocab, bpe_parse_special_chatml)
{
    static const char *const files[] = {"qwen3-vocab-f16.gguf", "qwen2-bpe-f32.gguf"};
    for (size_t f = 0; f < HS_ARRAY_LEN(files); f++) {
        struct loaded l = load(files[f]);
        hs_token start = hs_vocab_find(l.v, "<|im_start|>");
        hs_token end = hs_vocab_find(l.v, "<|im_end|>");
        cr_assert(start >= 0 && end >= 0);
        cr_assert(hs_vocab_is_eog(l.v, end));
        const char *s = "<|im_start|>user\nhi<|im_end|>";
        size_t n;
        hs_token *t = tok(l.v, s, strlen(s), true, true, &n);
        cr_assert_geq(n, 5);
        cr_assert_eq(t[0], start);
        cr_assert_eq(t[n - 1], end);
        char buf[64];
        size_t len = pieces(l.v, t + 1, n - 2, false, buf, sizeof(buf));
        cr_assert(len == 7 && memcmp(buf, "user\nhi", 7) == 0);
        if (f == 0) {
            hs_token want[] = {start, hs_vocab_find(l.v, "user"), 198, hs_vocab_find(l.v, "hi"),
                               end};
            cr_assert(want[1] >= 0 && want[3] >= 0);
            assert_tokens(l.v, s, false, true, want, 5);
        }
        /* the special token's piece shows only when asked */
        cr_assert_eq(hs_vocab_piece(l.v, start, false, buf, sizeof(buf)), 0);
        cr_assert_eq(hs_vocab_piece(l.v, start, true, buf, sizeof(buf)), 12);
        cr_assert(memcmp(buf, "<|im_start|>", 12) == 0);
        free(t);
        /* without parse_special the markers are plain text */
        t = tok(l.v, s, strlen(s), false, false, &n);
        for (size_t i = 0; i < n; i++) {
            cr_assert(t[i] != start && t[i] != end);
        }
        len = pieces(l.v, t, n, false, buf, sizeof(buf));
        cr_assert(len == strlen(s) && memcmp(buf, s, len) == 0);
        free(t);
        unload(&l);
    }
}

Test(vocab, bpe_user_defined_always_split)
{
    /* USER_DEFINED tokens (<think>) are cut out even without parse_special, as llama.cpp does */
    struct loaded l = load("qwen3-vocab-f16.gguf");
    size_t n;
    hs_token *t = tok(l.v, "a<think>b", 9, false, false, &n);
    cr_assert_eq(n, 3);
    cr_assert_eq(t[1], 151667);
    free(t);
    unload(&l);
}

Test(vocab, tokenize_buffer_too_small)
{
    struct loaded l = load("qwen3-vocab-f16.gguf");
    hs_token out[2];
    size_t n = 0;
    cr_assert_eq(hs_tokenize(l.v, "1 2 3 4", 7, false, false, out, 2, &n), HS_E_RANGE);
    cr_assert_eq(n, 7);
    cr_assert_eq(hs_tokenize(NULL, "x", 1, false, false, out, 2, &n), HS_E_INVAL);
    unload(&l);
}

/* ---- invalid input ---- */

Test(vocab, invalid_utf8_and_nul_bytes)
{
    static const char *const files[] = {"qwen3-vocab-f16.gguf", "tiny-f32.gguf",
                                        "llama3-bpe-f32.gguf"};
    static const char s[] = "ok\xff\xfe \xc3 \xe2\x82 \xed\xa0\x80 \xc0\xaf \xf4\x90\x80\x80"
                            " a\0b \x80\x80 end\xf0\x9f\x98";
    size_t len = sizeof(s) - 1;
    for (size_t f = 0; f < HS_ARRAY_LEN(files); f++) {
        struct loaded l = load(files[f]);
        bool spm = hs_vocab_type(l.v) == HS_VOCAB_SPM;
        for (int ps = 0; ps < 2; ps++) {
            size_t n;
            hs_token *t = tok(l.v, s, len, false, ps, &n);
            /* no byte is lost: raw pieces give the input back */
            char buf[256];
            size_t got = pieces(l.v, t, n, false, buf, sizeof(buf));
            size_t off = spm ? 1 : 0;
            if (spm) {
                got = unescape_spm(buf, got);
            }
            cr_assert_eq(got, len + off, "%s: %zu bytes back of %zu", files[f], got, len);
            cr_assert(memcmp(buf + off, s, len) == 0, "%s", files[f]);
            /* the stream gives valid UTF-8 */
            struct hs_detok d;
            hs_detok_init(&d, l.v, true);
            char out[1024];
            size_t w = 0;
            for (size_t i = 0; i < n; i++) {
                w += hs_detok_push(&d, t[i], out + w, sizeof(out) - w);
            }
            w += hs_detok_flush(&d, out + w, sizeof(out) - w);
            cr_assert(naive_valid(out, w), "%s: stream not valid UTF-8", files[f]);
            free(t);
        }
        unload(&l);
    }
}

/* ---- streaming detokenizer ---- */

static void stream_bytes_case(const struct hs_vocab *v, const hs_token *t, size_t n,
                              const char *want)
{
    struct hs_detok d;
    hs_detok_init(&d, v, false);
    char out[256];
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        size_t k = hs_detok_push(&d, t[i], out + w, sizeof(out) - w);
        cr_assert(naive_valid(out + w, k), "chunk %zu not valid UTF-8", i);
        /* a chunk never ends inside a character, so only the last byte token shows it */
        w += k;
    }
    w += hs_detok_flush(&d, out + w, sizeof(out) - w);
    cr_assert(w == strlen(want) && memcmp(out, want, w) == 0, "got '%.*s' want '%s'", (int)w, out,
              want);
}

Test(vocab, detok_utf8_split_across_byte_tokens_spm)
{
    struct loaded l = load("tiny-f32.gguf");
    hs_token a = hs_vocab_find(l.v, "\xe2\x96\x81"
                                    "a");
    hs_token b[4];
    const uint8_t emoji[] = {0xf0, 0x9f, 0x98, 0x80};
    for (int i = 0; i < 4; i++) {
        char name[8];
        snprintf(name, sizeof(name), "<0x%02X>", emoji[i]);
        b[i] = hs_vocab_find(l.v, name);
    }
    struct hs_detok d;
    hs_detok_init(&d, l.v, false);
    char out[128];
    cr_assert_eq(hs_detok_push(&d, a, out, sizeof(out)), 2);
    cr_assert(memcmp(out, " a", 2) == 0);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(hs_detok_push(&d, b[i], out, sizeof(out)), 0, "byte %d held back", i);
    }
    cr_assert_eq(hs_detok_push(&d, b[3], out, sizeof(out)), 4);
    cr_assert(memcmp(out, emoji, 4) == 0);
    cr_assert_eq(hs_detok_flush(&d, out, sizeof(out)), 0);

    /* an unfinished character followed by text becomes U+FFFD, then the text */
    hs_token seq[] = {b[0], b[1], a};
    stream_bytes_case(l.v, seq, 3, "\xef\xbf\xbd a");
    /* unfinished at the end: flushed as U+FFFD */
    hs_token tail[] = {a, b[0]};
    stream_bytes_case(l.v, tail, 2, " a\xef\xbf\xbd");
    /* a stray continuation byte */
    hs_token stray[] = {b[2], a};
    stream_bytes_case(l.v, stray, 2, "\xef\xbf\xbd a");
    /* strip_leading_space drops the first piece's space only */
    hs_detok_init(&d, l.v, false);
    d.strip_leading_space = true;
    cr_assert_eq(hs_detok_push(&d, 1, out, sizeof(out)), 0); /* <s>: nothing */
    cr_assert_eq(hs_detok_push(&d, a, out, sizeof(out)), 1);
    cr_assert_eq(out[0], 'a');
    cr_assert_eq(hs_detok_push(&d, a, out, sizeof(out)), 2);
    unload(&l);
}

Test(vocab, detok_utf8_split_across_byte_tokens_bpe)
{
    struct loaded l = load("qwen3-vocab-f16.gguf");
    /* é = C3 A9: GPT-2 maps byte C3 to U+00C3 'Ã' and A9 to U+00A9 '©' */
    hs_token c3 = hs_vocab_find(l.v, "\xc3\x83"), a9 = hs_vocab_find(l.v, "\xc2\xa9");
    cr_assert(c3 >= 0 && a9 >= 0);
    struct hs_detok d;
    hs_detok_init(&d, l.v, false);
    char out[128];
    cr_assert_eq(hs_detok_push(&d, c3, out, sizeof(out)), 0);
    cr_assert_eq(hs_detok_push(&d, a9, out, sizeof(out)), 2);
    cr_assert(memcmp(out, "\xc3\xa9", 2) == 0);
    /* control tokens: empty unless special */
    cr_assert_eq(hs_detok_push(&d, 151645, out, sizeof(out)), 0);
    hs_detok_init(&d, l.v, true);
    cr_assert_eq(hs_detok_push(&d, 151645, out, sizeof(out)), 10);
    cr_assert(memcmp(out, "<|im_end|>", 10) == 0);
    unload(&l);
}

/* ---- load errors ---- */

static struct hs_gguf *mem_gguf(const char *model, const char *pre, bool with_merges, void **data)
{
    struct hs_gguf_writer *w = NULL;
    cr_assert_eq(hs_gguf_writer_create(&w), HS_OK);
    const char *toks[] = {"a", "b", "ab", "<|end|>"};
    int32_t types[] = {1, 1, 1, 3};
    const char *merges[] = {"a b"};
    if (model) {
        cr_assert_eq(hs_gguf_writer_set_str(w, "tokenizer.ggml.model", model), HS_OK);
    }
    if (pre) {
        cr_assert_eq(hs_gguf_writer_set_str(w, "tokenizer.ggml.pre", pre), HS_OK);
    }
    cr_assert_eq(hs_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, 4), HS_OK);
    cr_assert_eq(
        hs_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", HS_GGUF_TYPE_INT32, types, 4),
        HS_OK);
    if (with_merges) {
        cr_assert_eq(hs_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", merges, 1), HS_OK);
    }
    size_t size;
    cr_assert_eq(hs_gguf_writer_write_memory(w, data, &size), HS_OK);
    hs_gguf_writer_destroy(w);
    struct hs_gguf *g = NULL;
    struct hs_error err = {0};
    cr_assert_eq(hs_gguf_open_memory(*data, size, &g, &err), HS_OK, "%s", err.message);
    return g;
}

Test(vocab, load_errors)
{
    struct {
        const char *model, *pre;
        bool merges;
        hs_status want;
        const char *needle;
    } cases[] = {
        {"gpt2", "bogus-pre", true, HS_E_NOTSUP, "bogus-pre"},
        {"bert", NULL, true, HS_E_NOTSUP, "bert"},
        {NULL, NULL, true, HS_E_FORMAT, "tokenizer.ggml.model"},
        {"gpt2", "qwen2", false, HS_E_FORMAT, "tokenizer.ggml.merges"},
        {"gpt2", "qwen2", true, HS_OK, NULL},
        {"gpt2", NULL, true, HS_OK, NULL},
    };
    for (size_t i = 0; i < HS_ARRAY_LEN(cases); i++) {
        void *data = NULL;
        struct hs_gguf *g = mem_gguf(cases[i].model, cases[i].pre, cases[i].merges, &data);
        struct hs_vocab *v = NULL;
        struct hs_error err = {0};
        hs_status st = hs_vocab_load(g, &v, &err);
        cr_assert_eq(st, cases[i].want, "case %zu: %s", i, hs_status_name(st));
        if (cases[i].needle) {
            cr_assert_null(v);
            cr_assert_not_null(strstr(err.message, cases[i].needle), "case %zu: '%s'", i,
                               err.message);
        } else {
            /* the tiny vocabulary merges a+b and knows <|end|> as end of generation */
            hs_token want[] = {2, 3};
            assert_tokens(v, "ab<|end|>", false, true, want, 2);
            cr_assert(hs_vocab_is_eog(v, 3));
        }
        hs_vocab_destroy(v);
        hs_gguf_close(g);
        free(data);
    }
}

/* ---- pre-tokenizers on a made-up byte-level vocabulary ---- */

/* GPT-2's byte -> code point table, written out from its definition. */
static unsigned gpt2_cp(unsigned b)
{
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174) {
        return b;
    }
    unsigned n = 0;
    for (unsigned i = 0; i < b; i++) {
        n += !((i >= 33 && i <= 126) || (i >= 161 && i <= 172) || i >= 174);
    }
    return 256 + n;
}

static struct hs_gguf *byte_vocab_gguf(const char *pre, void **data)
{
    static char store[256][4];
    const char *toks[256 + 6];
    int32_t types[256 + 6];
    for (unsigned b = 0; b < 256; b++) {
        unsigned cp = gpt2_cp(b);
        if (cp < 0x80) {
            store[b][0] = (char)cp;
            store[b][1] = 0;
        } else {
            store[b][0] = (char)(0xc0 | (cp >> 6));
            store[b][1] = (char)(0x80 | (cp & 0x3f));
            store[b][2] = 0;
        }
        toks[b] = store[b];
        types[b] = 1;
    }
    toks[256] = "20";
    toks[257] = "202";
    toks[258] = "2024";
    toks[259] = ",b";
    toks[260] = "'M";
    toks[261] = "<|endoftext|>";
    types[256] = types[257] = types[258] = types[259] = types[260] = 1;
    types[261] = 3;
    const char *merges[] = {"2 0", "20 2", "202 4", ", b", "' M"};
    struct hs_gguf_writer *w = NULL;
    cr_assert_eq(hs_gguf_writer_create(&w), HS_OK);
    cr_assert_eq(hs_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2"), HS_OK);
    if (pre != NULL) {
        cr_assert_eq(hs_gguf_writer_set_str(w, "tokenizer.ggml.pre", pre), HS_OK);
    }
    cr_assert_eq(hs_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, 262), HS_OK);
    cr_assert_eq(
        hs_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", HS_GGUF_TYPE_INT32, types, 262),
        HS_OK);
    cr_assert_eq(hs_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", merges, 5), HS_OK);
    size_t size;
    cr_assert_eq(hs_gguf_writer_write_memory(w, data, &size), HS_OK);
    hs_gguf_writer_destroy(w);
    struct hs_gguf *g = NULL;
    struct hs_error err = {0};
    cr_assert_eq(hs_gguf_open_memory(*data, size, &g, &err), HS_OK, "%s", err.message);
    return g;
}

Test(vocab, pre_tokenizer_variants)
{
    struct {
        const char *pre;
        const char *text;
        const char *pieces[8];
    } cases[] = {
        /* gpt-2: \p{N}+ keeps the digits whole, so the merges make one token */
        {"gpt-2", "2024", {"2024"}},
        /* default: [0-9]{3} cuts them after \p{N}+ */
        {"default", "2024", {"202", "4"}},
        {NULL, "2024", {"202", "4"}},
        /* llama-bpe: \p{N}{1,3} */
        {"llama-bpe", "2024", {"202", "4"}},
        /* qwen2: one digit at a time */
        {"qwen2", "2024", {"2", "0", "2", "4"}},
        /* llama3: [^\r\n\p{L}\p{N}]?\p{L}+ takes the comma with the word after it */
        {"llama-bpe", "a,b", {"a", ",b"}},
        /* default and gpt-2 keep punctuation apart, so the ", b" merge never applies */
        {"default", "a,b", {"a", ",", "b"}},
        {"gpt-2", "a,b", {"a", ",", "b"}},
        /* gpt-2 contractions are case-sensitive; llama3's are not */
        {"gpt-2", "I'M", {"I", "'", "M"}},
        {"llama-bpe", "I'M", {"I", "'M"}},
    };
    for (size_t k = 0; k < HS_ARRAY_LEN(cases); k++) {
        void *data = NULL;
        struct hs_gguf *g = byte_vocab_gguf(cases[k].pre, &data);
        struct hs_vocab *v = NULL;
        struct hs_error err = {0};
        cr_assert_eq(hs_vocab_load(g, &v, &err), HS_OK, "%s", err.message);
        size_t n;
        hs_token *t = tok(v, cases[k].text, strlen(cases[k].text), false, false, &n);
        size_t want_n = 0;
        while (want_n < 8 && cases[k].pieces[want_n]) {
            want_n++;
        }
        /* byte tokens are single bytes, so compare joined pieces token by token */
        size_t at = 0;
        for (size_t i = 0; i < n; i++) {
            char buf[16];
            size_t len = hs_vocab_piece(v, t[i], false, buf, sizeof(buf));
            const char *w = cases[k].pieces[at];
            if (w == NULL || strlen(w) != len || memcmp(w, buf, len) != 0) {
                /* a multi-byte expected piece made of single byte tokens would show here */
                cr_assert_fail("case %zu (%s '%s'): piece %zu is '%.*s', expected '%s'", k,
                               cases[k].pre ? cases[k].pre : "(none)", cases[k].text, i, (int)len,
                               buf, w ? w : "(end)");
            }
            at++;
        }
        cr_assert_eq(at, want_n, "case %zu: %zu pieces", k, at);
        free(t);
        hs_vocab_destroy(v);
        hs_gguf_close(g);
        free(data);
    }
}

Test(vocab, eog_set_follows_llama_cpp)
{
    struct loaded l = load("qwen3-vocab-f16.gguf");
    /* FIM pad / repo / file separator end generation; the converter typed them USER_DEFINED and
     * they are retyped CONTROL */
    static const char *const eog[] = {"<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
                                      "<|endoftext|>", "<|im_end|>"};
    for (size_t i = 0; i < HS_ARRAY_LEN(eog); i++) {
        hs_token t = hs_vocab_find(l.v, eog[i]);
        cr_assert_geq(t, 0);
        cr_assert(hs_vocab_is_eog(l.v, t), "%s", eog[i]);
        cr_assert(hs_vocab_is_control(l.v, t), "%s", eog[i]);
    }
    static const char *const not_eog[] = {"<think>", "<tool_call>", "<|im_start|>",
                                          "<|fim_prefix|>"};
    for (size_t i = 0; i < HS_ARRAY_LEN(not_eog); i++) {
        cr_assert(!hs_vocab_is_eog(l.v, hs_vocab_find(l.v, not_eog[i])), "%s", not_eog[i]);
    }
    cr_assert(!hs_vocab_is_control(l.v, hs_vocab_find(l.v, "<think>")));
    cr_assert(hs_vocab_is_control(l.v, hs_vocab_find(l.v, "<|fim_prefix|>")));
    /* the USER_DEFINED <think> shows even without special; CONTROL ones do not */
    char buf[32];
    cr_assert_eq(hs_vocab_piece(l.v, hs_vocab_find(l.v, "<think>"), false, buf, sizeof(buf)), 7);
    cr_assert_eq(hs_vocab_piece(l.v, hs_vocab_find(l.v, "<|file_sep|>"), false, buf, 32), 0);
    unload(&l);
}
