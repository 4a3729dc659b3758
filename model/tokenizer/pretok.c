/* Byte-level BPE pre-tokenization: UTF-8 decoding, Unicode character classes (utf8proc) and the
 * pre-tokenizer regexes of llama.cpp's "gpt2" tokenizers as hand-written state machines. */
#include "model/tokenizer/pretok-impl.h"

#include <stdbool.h>

#include <utf8proc.h>

#include "common/common.h"

/* ---- UTF-8 ---- */

/* Decodes one character at s[0..len) (len > 0). Invalid or truncated sequences give
 * HS__CP_INVALID_BASE + byte and consume one byte. */
uint32_t hs__utf8_decode(const uint8_t *s, size_t len, size_t *adv)
{
    uint8_t c = s[0];
    *adv = 1;
    if (c < 0x80) {
        return c;
    }
    size_t need;
    uint32_t cp;
    uint8_t lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) {
        need = 1;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        need = 2;
        cp = c & 0x0f;
        if (c == 0xe0) {
            lo = 0xa0;
        } else if (c == 0xed) {
            hi = 0x9f;
        }
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 3;
        cp = c & 0x07;
        if (c == 0xf0) {
            lo = 0x90;
        } else if (c == 0xf4) {
            hi = 0x8f;
        }
    } else {
        return HS__CP_INVALID_BASE + c;
    }
    if (len < need + 1) {
        return HS__CP_INVALID_BASE + c;
    }
    for (size_t i = 1; i <= need; i++) {
        uint8_t b = s[i];
        if (b < lo || b > hi) {
            return HS__CP_INVALID_BASE + c;
        }
        lo = 0x80;
        hi = 0xbf;
        cp = (cp << 6) | (b & 0x3f);
    }
    *adv = need + 1;
    return cp;
}

/* Length of the valid prefix of a character at s[0..len): returns n > 0 for a complete valid
 * character of n bytes, 0 when s is a valid but incomplete start (more bytes may complete it),
 * and -m when the first m bytes are an invalid maximal subpart. */
int hs__utf8_check(const uint8_t *s, size_t len)
{
    uint8_t c = s[0];
    if (c < 0x80) {
        return 1;
    }
    size_t need;
    uint8_t lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) {
        need = 1;
    } else if (c >= 0xe0 && c <= 0xef) {
        need = 2;
        lo = c == 0xe0 ? 0xa0 : 0x80;
        hi = c == 0xed ? 0x9f : 0xbf;
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 3;
        lo = c == 0xf0 ? 0x90 : 0x80;
        hi = c == 0xf4 ? 0x8f : 0xbf;
    } else {
        return -1;
    }
    for (size_t i = 1; i <= need; i++) {
        if (i >= len) {
            return 0;
        }
        if (s[i] < lo || s[i] > hi) {
            return -(int)i;
        }
        lo = 0x80;
        hi = 0xbf;
    }
    return (int)need + 1;
}

size_t hs__utf8_encode(uint32_t cp, uint8_t *out)
{
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xc0 | (cp >> 6));
        out[1] = (uint8_t)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xe0 | (cp >> 12));
        out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (uint8_t)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (uint8_t)(0xf0 | (cp >> 18));
    out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (uint8_t)(0x80 | (cp & 0x3f));
    return 4;
}

/* ---- character classes ---- */

static bool cp_is_letter(uint32_t cp)
{
    if (cp < 0x80) {
        return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z';
    }
    if (cp >= HS__CP_INVALID_BASE) {
        return false;
    }
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_LO;
}

static bool cp_is_number(uint32_t cp)
{
    if (cp < 0x80) {
        return cp >= '0' && cp <= '9';
    }
    if (cp >= HS__CP_INVALID_BASE) {
        return false;
    }
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return c >= UTF8PROC_CATEGORY_ND && c <= UTF8PROC_CATEGORY_NO;
}

/* Unicode White_Space, which is what \s matches in the regex engines. */
static bool cp_is_space(uint32_t cp)
{
    if (cp < 0x80) {
        return cp == ' ' || (cp >= 0x09 && cp <= 0x0d);
    }
    switch (cp) {
    case 0x85:
    case 0xa0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202f:
    case 0x205f:
    case 0x3000:
        return true;
    default:
        return cp >= 0x2000 && cp <= 0x200a;
    }
}

static bool cp_is_other(uint32_t cp) /* [^\s\p{L}\p{N}] */
{
    return !cp_is_space(cp) && !cp_is_letter(cp) && !cp_is_number(cp);
}

static bool cp_is_nl(uint32_t cp)
{
    return cp == '\r' || cp == '\n';
}

static uint32_t ascii_lower(uint32_t cp)
{
    return cp >= 'A' && cp <= 'Z' ? cp + 32 : cp;
}

/* ---- pre-tokenizer state machines ---- */

/* End (exclusive) of the match of a pre-tokenizer pattern starting at cp[i] (i when none). */
typedef size_t (*hs__pre_match)(const uint32_t *cp, size_t n, size_t i);

/* End (exclusive) of the pre-token starting at cps[i], following
 *   llama3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}
 *           | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 *   qwen2:  the same with \p{N} taken one at a time. */
static size_t pre_llama3(const uint32_t *cp, size_t n, size_t i, size_t max_digits)
{
    uint32_t c = cp[i];
    if (c == '\'' && i + 1 < n) {
        uint32_t a = ascii_lower(cp[i + 1]);
        if (a == 's' || a == 't' || a == 'm' || a == 'd') {
            return i + 2;
        }
        if (i + 2 < n) {
            uint32_t b = ascii_lower(cp[i + 2]);
            if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) {
                return i + 3;
            }
        }
    }
    size_t j = i;
    if (!cp_is_nl(c) && !cp_is_letter(c) && !cp_is_number(c) && i + 1 < n &&
        cp_is_letter(cp[i + 1])) {
        j = i + 1;
    }
    if (cp_is_letter(cp[j])) {
        while (j < n && cp_is_letter(cp[j])) {
            j++;
        }
        return j;
    }
    if (cp_is_number(c)) {
        j = i + 1;
        while (j < n && j - i < max_digits && cp_is_number(cp[j])) {
            j++;
        }
        return j;
    }
    j = i;
    if (c == ' ' && i + 1 < n && cp_is_other(cp[i + 1])) {
        j = i + 1;
    }
    if (cp_is_other(cp[j])) {
        while (j < n && cp_is_other(cp[j])) {
            j++;
        }
        while (j < n && cp_is_nl(cp[j])) {
            j++;
        }
        return j;
    }
    /* c is whitespace */
    size_t e = i, last_nl = SIZE_MAX;
    while (e < n && cp_is_space(cp[e])) {
        if (cp_is_nl(cp[e])) {
            last_nl = e;
        }
        e++;
    }
    if (last_nl != SIZE_MAX) {
        return last_nl + 1;
    }
    if (e < n && e - i >= 2) {
        return e - 1; /* leave one space to prefix the next word */
    }
    return e > i ? e : i + 1;
}

/* GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static size_t pre_gpt2(const uint32_t *cp, size_t n, size_t i)
{
    uint32_t c = cp[i];
    if (c == '\'' && i + 1 < n) {
        uint32_t a = cp[i + 1];
        if (a == 's' || a == 't' || a == 'm' || a == 'd') {
            return i + 2;
        }
        if (i + 2 < n) {
            uint32_t b = cp[i + 2];
            if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) {
                return i + 3;
            }
        }
    }
    size_t j = (c == ' ' && i + 1 < n) ? i + 1 : i;
    bool (*classes[3])(uint32_t) = {cp_is_letter, cp_is_number, cp_is_other};
    for (int k = 0; k < 3; k++) {
        if (classes[k](cp[j])) {
            while (j < n && classes[k](cp[j])) {
                j++;
            }
            return j;
        }
    }
    size_t e = i;
    while (e < n && cp_is_space(cp[e])) {
        e++;
    }
    if (e < n && e - i >= 2) {
        return e - 1;
    }
    return e > i ? e : i + 1;
}

/* \p{P} (any punctuation category) or one of $+<=>^~| */
static bool cp_is_punct_default(uint32_t cp)
{
    if (cp < 0x80) {
        return cp > ' ' && cp < 0x7f && !(cp >= '0' && cp <= '9') && !cp_is_letter(cp) && cp != '`';
    }
    if (cp >= HS__CP_INVALID_BASE) {
        return false;
    }
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return c >= UTF8PROC_CATEGORY_PC && c <= UTF8PROC_CATEGORY_PO;
}

/* One regex of a pre-tokenizer: the end of its match at cp[i] inside a segment ending at n, or i
 * when it does not match there. */

static size_t match_llama3(const uint32_t *cp, size_t n, size_t i)
{
    return pre_llama3(cp, n, i, 3);
}

static size_t match_qwen2(const uint32_t *cp, size_t n, size_t i)
{
    return pre_llama3(cp, n, i, 1);
}

static size_t match_punct(const uint32_t *cp, size_t n, size_t i) /* [\p{P}\$\+<=>\^~\|]+ */
{
    while (i < n && cp_is_punct_default(cp[i])) {
        i++;
    }
    return i;
}

static size_t match_numbers(const uint32_t *cp, size_t n, size_t i) /* \p{N}+ */
{
    while (i < n && cp_is_number(cp[i])) {
        i++;
    }
    return i;
}

static size_t match_three_digits(const uint32_t *cp, size_t n, size_t i) /* [0-9]{3} */
{
    for (size_t k = 0; k < 3; k++) {
        if (i + k >= n || cp[i + k] < '0' || cp[i + k] > '9') {
            return i;
        }
    }
    return i + 3;
}

/* Splits each segment [seg[2k], seg[2k+1]) by m the way a regex split does: matches and the text
 * between them become segments of their own. Returns the new count; out holds up to n_cp pairs. */
static size_t split_pass(const uint32_t *cp, const size_t *seg, size_t n_seg, size_t *out,
                         hs__pre_match m)
{
    size_t k = 0;
    for (size_t s = 0; s < n_seg; s++) {
        size_t start = seg[2 * s], end = seg[2 * s + 1], last = start;
        for (size_t i = start; i < end;) {
            size_t e = m(cp, end, i);
            if (e == i) {
                i++;
                continue;
            }
            if (i > last) {
                out[2 * k] = last;
                out[2 * k + 1] = i;
                k++;
            }
            out[2 * k] = i;
            out[2 * k + 1] = e;
            k++;
            i = last = e;
        }
        if (end > last) {
            out[2 * k] = last;
            out[2 * k + 1] = end;
            k++;
        }
    }
    return k;
}

size_t hs__pretok_split(enum hs__pre pre, const uint32_t *cps, size_t n, size_t *seg_a,
                        size_t *seg_b, const size_t **segs)
{
    hs__pre_match passes[4];
    size_t n_passes = 0;
    switch (pre) {
    case HS__PRE_LLAMA3:
        passes[n_passes++] = match_llama3;
        break;
    case HS__PRE_QWEN2:
        passes[n_passes++] = match_qwen2;
        break;
    case HS__PRE_GPT2:
        passes[n_passes++] = pre_gpt2;
        break;
    default:
        passes[n_passes++] = match_punct;
        passes[n_passes++] = pre_gpt2;
        passes[n_passes++] = match_numbers;
        passes[n_passes++] = match_three_digits;
        break;
    }
    size_t *seg = seg_a, *tmp = seg_b;
    seg[0] = 0;
    seg[1] = n;
    size_t n_seg = n > 0 ? 1 : 0;
    for (size_t p = 0; p < n_passes; p++) {
        n_seg = split_pass(cps, seg, n_seg, tmp, passes[p]);
        size_t *t = seg;
        seg = tmp;
        tmp = t;
    }
    *segs = seg;
    return n_seg;
}
