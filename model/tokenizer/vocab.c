/* Tokenizers: SentencePiece-style bigram merging by score ("llama") and byte-level BPE with a
 * regex-equivalent pre-tokenizer ("gpt2"). Behaviour follows llama.cpp's llama-vocab so that
 * token ids match its reference output; the implementation is our own. */
#include "model/tokenizer/vocab.h"

#include <stdlib.h>
#include <string.h>

#include "model/gguf/gguf.h"
#include "model/tokenizer/pretok-impl.h"

/* ---- small helpers ---- */

#define HS__MAX_EOG 32
#define HS__NO_ID   (-1)

struct hs__str_table {
    int32_t *slots; /* capacity entries, -1 empty */
    size_t mask;
};

struct hs_vocab {
    enum hs_vocab_type type;
    enum hs__pre pre;
    int32_t n_tokens;
    char *text_arena;   /* NUL-terminated token texts */
    uint32_t *text_off; /* [n_tokens] into text_arena (< 4 GiB, checked at load) */
    uint32_t *text_len; /* [n_tokens] */
    float *scores;      /* [n_tokens] */
    uint8_t *attr;      /* [n_tokens] enum hs_token_attr */
    struct hs__str_table tokens;

    /* BPE merges: "left right", rank = index */
    char *merge_arena;
    uint32_t *merge_off;   /* [n_merges] into merge_arena */
    uint32_t *merge_left;  /* [n_merges] length of left part */
    uint32_t *merge_right; /* [n_merges] length of right part */
    int32_t n_merges;
    struct hs__str_table merges;

    hs_token byte_token[256];  /* SPM: <0xNN>; BPE: the mapped character; -1 when absent */
    uint8_t byte_utf8[256][2]; /* BPE: UTF-8 of GPT-2's code point for each byte (1-2 bytes) */
    int16_t cp_byte[256 + 68]; /* BPE: the byte each mapped code point stands for */
    hs_token *special;         /* ids of CONTROL/USER_DEFINED/UNKNOWN tokens, longest text first */
    int32_t n_special;

    hs_token bos, eos, unk, eot;
    hs_token eog[HS__MAX_EOG];
    int32_t n_eog;
    bool add_bos, add_eos, add_space_prefix, ignore_merges;
};

static uint64_t hash_bytes(uint64_t h, const void *p, size_t n)
{
    const uint8_t *s = p;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

#define HS__HASH_SEED 0xcbf29ce484222325ull

static uint64_t hash_finish(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

static hs_status table_init(struct hs__str_table *t, size_t n)
{
    size_t cap = 16;
    while (cap < n + n / 2) { /* load factor <= 2/3 */
        cap *= 2;
    }
    t->slots = malloc(cap * sizeof(*t->slots));
    if (t->slots == NULL) {
        return HS_E_NOMEM;
    }
    memset(t->slots, 0xff, cap * sizeof(*t->slots));
    t->mask = cap - 1;
    return HS_OK;
}

/* ---- GPT-2 byte <-> unicode mapping ---- */

static bool byte_is_printable(unsigned b)
{
    return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
}

static uint32_t byte_to_cp(uint8_t b)
{
    if (byte_is_printable(b)) {
        return b;
    }
    unsigned n = 0;
    for (unsigned i = 0; i < b; i++) {
        n += !byte_is_printable(i);
    }
    return 256 + n;
}

/* ---- lookups ---- */

static hs_token token_lookup(const struct hs_vocab *v, const char *s, size_t n)
{
    size_t i = hash_finish(hash_bytes(HS__HASH_SEED, s, n)) & v->tokens.mask;
    for (;;) {
        int32_t id = v->tokens.slots[i];
        if (id < 0) {
            return HS__NO_ID;
        }
        if (v->text_len[id] == n && memcmp(v->text_arena + v->text_off[id], s, n) == 0) {
            return id;
        }
        i = (i + 1) & v->tokens.mask;
    }
}

static uint64_t merge_hash(const char *l, size_t nl, const char *r, size_t nr)
{
    uint64_t h = hash_bytes(HS__HASH_SEED, l, nl);
    h = hash_bytes(h ^ 0x5bd1e995u, &nl, sizeof(nl));
    return hash_finish(hash_bytes(h, r, nr));
}

/* Rank of merging left and right, or -1. */
static int32_t merge_rank(const struct hs_vocab *v, const char *l, size_t nl, const char *r,
                          size_t nr)
{
    if (v->n_merges == 0) {
        return -1;
    }
    size_t i = merge_hash(l, nl, r, nr) & v->merges.mask;
    for (;;) {
        int32_t m = v->merges.slots[i];
        if (m < 0) {
            return -1;
        }
        const char *s = v->merge_arena + v->merge_off[m];
        if (v->merge_left[m] == nl && v->merge_right[m] == nr && memcmp(s, l, nl) == 0 &&
            memcmp(s + nl + 1, r, nr) == 0) {
            return m;
        }
        i = (i + 1) & v->merges.mask;
    }
}

/* ---- output vector ---- */

struct tokvec {
    hs_token *data;
    size_t n, cap;
    bool oom;
};

static void tv_push(struct tokvec *tv, hs_token t)
{
    if (tv->oom) {
        return;
    }
    if (tv->n == tv->cap) {
        size_t cap = tv->cap ? tv->cap * 2 : 64;
        hs_token *d = realloc(tv->data, cap * sizeof(*d));
        if (d == NULL) {
            tv->oom = true;
            return;
        }
        tv->data = d;
        tv->cap = cap;
    }
    tv->data[tv->n++] = t;
}

/* ---- bigram merging shared by SPM and BPE ---- */

struct sym {
    int32_t prev, next;
    size_t off, n; /* bytes of the work text */
};

struct bigram {
    int32_t left, right;
    double score; /* higher first; BPE uses -rank */
    size_t size;
};

struct merger {
    struct sym *syms;
    size_t n_syms, cap_syms;
    struct bigram *heap;
    size_t n_heap, cap_heap;
    bool oom;
};

static bool bigram_before(const struct bigram *a, const struct bigram *b)
{
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static void heap_push(struct merger *m, struct bigram b)
{
    if (m->n_heap == m->cap_heap) {
        size_t cap = m->cap_heap ? m->cap_heap * 2 : 64;
        struct bigram *h = realloc(m->heap, cap * sizeof(*h));
        if (h == NULL) {
            m->oom = true;
            return;
        }
        m->heap = h;
        m->cap_heap = cap;
    }
    size_t i = m->n_heap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!bigram_before(&b, &m->heap[p])) {
            break;
        }
        m->heap[i] = m->heap[p];
        i = p;
    }
    m->heap[i] = b;
}

static struct bigram heap_pop(struct merger *m)
{
    struct bigram top = m->heap[0];
    struct bigram last = m->heap[--m->n_heap];
    size_t i = 0, n = m->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) {
            break;
        }
        if (c + 1 < n && bigram_before(&m->heap[c + 1], &m->heap[c])) {
            c++;
        }
        if (!bigram_before(&m->heap[c], &last)) {
            break;
        }
        m->heap[i] = m->heap[c];
        i = c;
    }
    if (n > 0) {
        m->heap[i] = last;
    }
    return top;
}

/* Splits text[0..len) into one symbol per character (invalid bytes alone). */
static void merger_reset(struct merger *m, const char *text, size_t len)
{
    m->n_syms = 0;
    m->n_heap = 0;
    if (m->cap_syms < len) {
        struct sym *s = realloc(m->syms, len * sizeof(*s));
        if (s == NULL) {
            m->oom = true;
            return;
        }
        m->syms = s;
        m->cap_syms = len;
    }
    size_t off = 0;
    while (off < len) {
        size_t adv;
        (void)hs__utf8_decode((const uint8_t *)text + off, len - off, &adv);
        struct sym *s = &m->syms[m->n_syms];
        s->off = off;
        s->n = adv;
        s->prev = (int32_t)m->n_syms - 1;
        s->next = off + adv < len ? (int32_t)m->n_syms + 1 : -1;
        m->n_syms++;
        off += adv;
    }
}

static void try_add_bigram(const struct hs_vocab *v, struct merger *m, const char *text,
                           int32_t left, int32_t right)
{
    if (left < 0 || right < 0) {
        return;
    }
    const struct sym *l = &m->syms[left], *r = &m->syms[right];
    struct bigram b = {.left = left, .right = right, .size = l->n + r->n};
    if (v->type == HS_VOCAB_SPM) {
        hs_token t = token_lookup(v, text + l->off, b.size);
        if (t < 0) {
            return;
        }
        b.score = v->scores[t];
    } else {
        int32_t rank = merge_rank(v, text + l->off, l->n, text + r->off, r->n);
        if (rank < 0) {
            return;
        }
        b.score = -(double)rank;
    }
    heap_push(m, b);
}

static void merger_run(const struct hs_vocab *v, struct merger *m, const char *text)
{
    for (size_t i = 1; i < m->n_syms; i++) {
        try_add_bigram(v, m, text, (int32_t)i - 1, (int32_t)i);
    }
    while (m->n_heap > 0 && !m->oom) {
        struct bigram b = heap_pop(m);
        struct sym *l = &m->syms[b.left], *r = &m->syms[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size) {
            continue; /* outdated: one side was merged already */
        }
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) {
            m->syms[r->next].prev = b.left;
        }
        try_add_bigram(v, m, text, l->prev, b.left);
        try_add_bigram(v, m, text, b.left, l->next);
    }
}

static void merger_free(struct merger *m)
{
    free(m->syms);
    free(m->heap);
}

/* ---- SentencePiece ---- */

static void emit_byte(const struct hs_vocab *v, uint8_t b, struct tokvec *out)
{
    hs_token t = v->byte_token[b] >= 0 ? v->byte_token[b] : v->unk;
    if (t >= 0) {
        tv_push(out, t);
    }
}

static void spm_fragment(const struct hs_vocab *v, struct merger *m, const char *frag, size_t len,
                         bool prefix, char **work, size_t *work_cap, struct tokvec *out)
{
    /* ' ' -> U+2581 (3 bytes), plus an optional leading one */
    size_t need = 3 * (len + 1);
    if (*work_cap < need) {
        char *w = realloc(*work, need);
        if (w == NULL) {
            out->oom = true;
            return;
        }
        *work = w;
        *work_cap = need;
    }
    char *text = *work;
    size_t n = 0;
    if (prefix) {
        memcpy(text, "\xe2\x96\x81", 3);
        n = 3;
    }
    for (size_t i = 0; i < len; i++) {
        if (frag[i] == ' ') {
            memcpy(text + n, "\xe2\x96\x81", 3);
            n += 3;
        } else {
            text[n++] = frag[i];
        }
    }
    if (n == 0) {
        return;
    }
    merger_reset(m, text, n);
    if (m->oom) {
        out->oom = true;
        return;
    }
    merger_run(v, m, text);
    for (int32_t i = 0; i >= 0 && !m->oom; i = m->syms[i].next) {
        const struct sym *s = &m->syms[i];
        hs_token t = token_lookup(v, text + s->off, s->n);
        if (t >= 0) {
            tv_push(out, t);
        } else {
            for (size_t j = 0; j < s->n; j++) {
                emit_byte(v, (uint8_t)text[s->off + j], out);
            }
        }
    }
    out->oom |= m->oom;
}

/* ---- byte-level BPE ---- */

struct bpe_ctx {
    const struct hs_vocab *v;
    struct merger *m;
    char *work;
    size_t work_cap;
    struct tokvec *out;
};

static void bpe_word(struct bpe_ctx *c, const char *word, size_t len)
{
    const struct hs_vocab *v = c->v;
    if (len == 0) {
        return;
    }
    size_t need = 2 * len;
    if (c->work_cap < need) {
        char *w = realloc(c->work, need);
        if (w == NULL) {
            c->out->oom = true;
            return;
        }
        c->work = w;
        c->work_cap = need;
    }
    char *text = c->work;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        const uint8_t *e = v->byte_utf8[(uint8_t)word[i]];
        text[n++] = (char)e[0];
        if (e[0] >= 0x80) {
            text[n++] = (char)e[1];
        }
    }
    if (v->ignore_merges) {
        hs_token t = token_lookup(v, text, n);
        if (t >= 0) {
            tv_push(c->out, t);
            return;
        }
    }
    struct merger *m = c->m;
    merger_reset(m, text, n);
    if (m->oom) {
        c->out->oom = true;
        return;
    }
    merger_run(v, m, text);
    for (int32_t i = 0; i >= 0 && !m->oom; i = m->syms[i].next) {
        const struct sym *s = &m->syms[i];
        hs_token t = token_lookup(v, text + s->off, s->n);
        if (t >= 0) {
            tv_push(c->out, t);
            continue;
        }
        /* not a token (inconsistent merges): fall back to its bytes */
        size_t off = s->off;
        while (off < s->off + s->n) {
            size_t adv;
            uint32_t cp = hs__utf8_decode((const uint8_t *)text + off, s->off + s->n - off, &adv);
            int b = cp < HS_ARRAY_LEN(v->cp_byte) ? v->cp_byte[cp] : -1;
            if (b >= 0) {
                emit_byte(v, (uint8_t)b, c->out);
            }
            off += adv;
        }
    }
    c->out->oom |= m->oom;
}

struct pre_buf {
    uint32_t *cps;
    size_t *offs, *seg_a, *seg_b;
    size_t cap;
};

static void pre_buf_free(struct pre_buf *b)
{
    free(b->cps);
    free(b->offs);
    free(b->seg_a);
    free(b->seg_b);
}

static void bpe_fragment(struct bpe_ctx *c, const char *frag, size_t len, struct pre_buf *pb)
{
    if (pb->cap < len + 1) {
        pre_buf_free(pb);
        *pb = (struct pre_buf){0};
        pb->cps = malloc((len + 1) * sizeof(*pb->cps));
        pb->offs = malloc((len + 1) * sizeof(*pb->offs));
        pb->seg_a = malloc(2 * (len + 1) * sizeof(*pb->seg_a));
        pb->seg_b = malloc(2 * (len + 1) * sizeof(*pb->seg_b));
        if (!pb->cps || !pb->offs || !pb->seg_a || !pb->seg_b) {
            c->out->oom = true;
            return;
        }
        pb->cap = len + 1;
    }
    size_t n = 0, off = 0;
    while (off < len) {
        size_t adv;
        pb->cps[n] = hs__utf8_decode((const uint8_t *)frag + off, len - off, &adv);
        pb->offs[n++] = off;
        off += adv;
    }
    pb->offs[n] = len;

    const size_t *seg = NULL;
    const size_t n_seg = hs__pretok_split(c->v->pre, pb->cps, n, pb->seg_a, pb->seg_b, &seg);
    for (size_t k = 0; k < n_seg && !c->out->oom; k++) {
        size_t a = pb->offs[seg[2 * k]], b = pb->offs[seg[2 * k + 1]];
        bpe_word(c, frag + a, b - a);
    }
}

/* ---- special-token partition ---- */

struct frag {
    hs_token token; /* -1: raw text */
    size_t off, len;
};

struct fragvec {
    struct frag *data;
    size_t n, cap;
};

static bool fv_push(struct fragvec *fv, struct frag f)
{
    if (fv->n == fv->cap) {
        size_t cap = fv->cap ? fv->cap * 2 : 16;
        struct frag *d = realloc(fv->data, cap * sizeof(*d));
        if (d == NULL) {
            return false;
        }
        fv->data = d;
        fv->cap = cap;
    }
    fv->data[fv->n++] = f;
    return true;
}

/* Splits text into raw runs and special tokens: each special token, longest first, is cut out of
 * every raw run where it occurs. USER_DEFINED tokens always; CONTROL/UNKNOWN when parse_special.
 * plain (NULL: none): bytes marked 1 are plain text, so no special token covering one of them
 * is cut out. */
static hs_status partition(const struct hs_vocab *v, const char *text, size_t len,
                           bool parse_special, const uint8_t *plain, struct fragvec *a)
{
    struct fragvec b = {0};
    a->n = 0;
    if (len > 0 && !fv_push(a, (struct frag){.token = -1, .off = 0, .len = len})) {
        return HS_E_NOMEM;
    }
    for (int32_t k = 0; k < v->n_special; k++) {
        hs_token id = v->special[k];
        if (!parse_special && v->attr[id] != HS_TOKEN_USER_DEFINED) {
            continue;
        }
        const char *st = v->text_arena + v->text_off[id];
        size_t sl = v->text_len[id];
        if (sl == 0) {
            continue;
        }
        b.n = 0;
        bool changed = false;
        for (size_t f = 0; f < a->n; f++) {
            struct frag fr = a->data[f];
            if (fr.token >= 0 || fr.len < sl) {
                if (!fv_push(&b, fr)) {
                    goto nomem;
                }
                continue;
            }
            size_t pos = fr.off, seg = fr.off, end = fr.off + fr.len;
            while (pos < end) {
                const char *hit = memmem(text + pos, end - pos, st, sl);
                if (hit == NULL) {
                    break;
                }
                size_t h = (size_t)(hit - text);
                if (plain && memchr(plain + h, 1, sl)) {
                    pos = h + 1; /* client text: stays raw; a later hit may still count */
                    continue;
                }
                changed = true;
                if (h > seg && !fv_push(&b, (struct frag){-1, seg, h - seg})) {
                    goto nomem;
                }
                if (!fv_push(&b, (struct frag){id, h, sl})) {
                    goto nomem;
                }
                pos = seg = h + sl;
            }
            if (seg < end && !fv_push(&b, (struct frag){-1, seg, end - seg})) {
                goto nomem;
            }
        }
        if (changed) {
            struct fragvec t = *a;
            *a = b;
            b = t;
        }
    }
    free(b.data);
    return HS_OK;
nomem:
    free(b.data);
    return HS_E_NOMEM;
}

/* ---- tokenize ---- */

static hs_status tokenize(const struct hs_vocab *v, const char *text, size_t len, bool add_special,
                          bool parse_special, const uint8_t *plain, hs_token *out, size_t cap,
                          size_t *n_out)
{
    if (v == NULL || (text == NULL && len > 0) || (out == NULL && cap > 0) || n_out == NULL ||
        len > HS_VOCAB_MAX_TEXT_BYTES) {
        return HS_E_INVAL;
    }
    *n_out = 0;
    hs_status st = HS_OK;
    struct tokvec tv = {0};
    struct fragvec fv = {0};
    struct merger m = {0};
    struct bpe_ctx bc = {.v = v, .m = &m, .out = &tv};
    struct pre_buf pb = {0};

    st = partition(v, text, len, parse_special, plain, &fv);
    if (st != HS_OK) {
        goto done;
    }
    if (add_special && v->add_bos && v->bos >= 0) {
        tv_push(&tv, v->bos);
    }
    bool prev_special = true; /* SPM: the first raw run gets the space prefix */
    for (size_t i = 0; i < fv.n && !tv.oom; i++) {
        const struct frag *f = &fv.data[i];
        if (f->token >= 0) {
            tv_push(&tv, f->token);
            prev_special = true;
            continue;
        }
        if (v->type == HS_VOCAB_SPM) {
            spm_fragment(v, &m, text + f->off, f->len, v->add_space_prefix && prev_special,
                         &bc.work, &bc.work_cap, &tv);
        } else {
            bpe_fragment(&bc, text + f->off, f->len, &pb);
        }
        prev_special = false;
    }
    if (add_special && v->add_eos && v->eos >= 0) {
        tv_push(&tv, v->eos);
    }
    if (tv.oom) {
        st = HS_E_NOMEM;
        goto done;
    }
    *n_out = tv.n;
    if (tv.n > cap) {
        st = HS_E_RANGE;
        goto done;
    }
    if (tv.n > 0) {
        memcpy(out, tv.data, tv.n * sizeof(*out));
    }
done:
    free(tv.data);
    free(fv.data);
    merger_free(&m);
    free(bc.work);
    pre_buf_free(&pb);
    return st;
}

hs_status hs_tokenize(const struct hs_vocab *v, const char *text, size_t len, bool add_special,
                      bool parse_special, hs_token *out, size_t cap, size_t *n_out)
{
    return tokenize(v, text, len, add_special, parse_special, NULL, out, cap, n_out);
}

hs_status hs_tokenize_marked(const struct hs_vocab *v, const char *text, size_t len,
                             bool add_special, const uint8_t *plain, hs_token *out, size_t cap,
                             size_t *n_out)
{
    return tokenize(v, text, len, add_special, true, plain, out, cap, n_out);
}

/* ---- pieces and streaming ---- */

static size_t put(char *buf, size_t cap, size_t n, const void *src, size_t len)
{
    if (n < cap) {
        memcpy(buf + n, src, HS_MIN(len, cap - n));
    }
    return n + len;
}

size_t hs_vocab_piece(const struct hs_vocab *v, hs_token t, bool special, char *buf, size_t cap)
{
    if (v == NULL || t < 0 || t >= v->n_tokens) {
        return 0;
    }
    const char *s = v->text_arena + v->text_off[t];
    size_t len = v->text_len[t], n = 0;
    uint8_t attr = v->attr[t];
    if (attr == HS_TOKEN_CONTROL || attr == HS_TOKEN_UNKNOWN) {
        return special ? put(buf, cap, 0, s, len) : 0;
    }
    if (attr == HS_TOKEN_USER_DEFINED) {
        return put(buf, cap, 0, s, len); /* written as is, like llama.cpp */
    }
    if (attr == HS_TOKEN_UNUSED) {
        return 0;
    }
    if (v->type == HS_VOCAB_SPM) {
        if (attr == HS_TOKEN_BYTE && len == 6 && memcmp(s, "<0x", 3) == 0 && s[5] == '>' &&
            hs_hex_digit(s[3]) >= 0 && hs_hex_digit(s[4]) >= 0) {
            uint8_t b = (uint8_t)(hs_hex_digit(s[3]) * 16 + hs_hex_digit(s[4]));
            return put(buf, cap, 0, &b, 1);
        }
        for (size_t i = 0; i < len;) {
            if (i + 3 <= len && memcmp(s + i, "\xe2\x96\x81", 3) == 0) {
                n = put(buf, cap, n, " ", 1);
                i += 3;
            } else {
                n = put(buf, cap, n, s + i, 1);
                i++;
            }
        }
        return n;
    }
    for (size_t i = 0; i < len;) {
        size_t adv;
        uint32_t cp = hs__utf8_decode((const uint8_t *)s + i, len - i, &adv);
        int b = cp < HS_ARRAY_LEN(v->cp_byte) ? v->cp_byte[cp] : -1;
        if (b >= 0) {
            uint8_t c = (uint8_t)b;
            n = put(buf, cap, n, &c, 1);
        } else {
            n = put(buf, cap, n, s + i, adv); /* outside the mapping: keep as written */
        }
        i += adv;
    }
    return n;
}

void hs_detok_init(struct hs_detok *d, const struct hs_vocab *v, bool special)
{
    if (d == NULL) {
        return;
    }
    memset(d, 0, sizeof(*d));
    d->vocab = v;
    d->special = special;
    d->at_start = true;
}

/* Rewrites buf[r0..end) into buf[0..) as valid UTF-8 (each invalid maximal subpart becomes
 * U+FFFD, or '?' where there is no room), keeping back an incomplete tail into d->pending unless
 * final. Needs r0 >= 0 bytes of slack in front; returns the bytes written. */
static size_t sanitize(struct hs_detok *d, char *buf, size_t r, size_t end, bool final)
{
    size_t w = 0;
    d->n_pending = 0;
    while (r < end) {
        int k = hs__utf8_check((const uint8_t *)buf + r, end - r);
        if (k == 0 && !final) {
            d->n_pending = (int32_t)(end - r);
            memcpy(d->pending, buf + r, end - r);
            break;
        }
        if (k > 0) {
            memmove(buf + w, buf + r, (size_t)k);
            w += (size_t)k;
            r += (size_t)k;
            continue;
        }
        size_t m = k == 0 ? end - r : (size_t)-k;
        if (w + 3 <= r + m) {
            memcpy(buf + w, "\xef\xbf\xbd", 3);
            w += 3;
        } else {
            buf[w++] = '?';
        }
        r += m;
    }
    return w;
}

size_t hs_detok_push(struct hs_detok *d, hs_token t, char *out, size_t cap)
{
    if (d == NULL || d->vocab == NULL || out == NULL) {
        return 0;
    }
    size_t p = (size_t)d->n_pending;
    if (cap < p) {
        return 0;
    }
    size_t n = hs_vocab_piece(d->vocab, t, d->special, NULL, 0);
    n = HS_MIN(n, cap - p);
    size_t start = cap - p - n;
    memcpy(out + start, d->pending, p);
    size_t got = hs_vocab_piece(d->vocab, t, d->special, out + start + p, n);
    (void)got;
    if (d->at_start && n > 0) {
        d->at_start = false;
        if (d->strip_leading_space && out[start + p] == ' ' && p == 0) {
            start++;
        }
    }
    return sanitize(d, out, start, cap, false);
}

size_t hs_detok_flush(struct hs_detok *d, char *out, size_t cap)
{
    if (d == NULL || out == NULL || d->n_pending == 0) {
        return 0;
    }
    /* at most 3 pending bytes -> one U+FFFD */
    char tmp[16];
    size_t p = (size_t)d->n_pending;
    memcpy(tmp + 8, d->pending, p);
    size_t w = sanitize(d, tmp, 8, 8 + p, true);
    d->n_pending = 0;
    size_t n = HS_MIN(w, cap);
    memcpy(out, tmp, n);
    return n;
}

/* ---- accessors ---- */

const char *hs_vocab_type_str(enum hs_vocab_type t)
{
    switch (t) {
    case HS_VOCAB_SPM:
        return "spm";
    case HS_VOCAB_BPE:
        return "bpe";
    default:
        return "unknown";
    }
}

enum hs_vocab_type hs_vocab_type(const struct hs_vocab *v)
{
    return v->type;
}

int32_t hs_vocab_n_tokens(const struct hs_vocab *v)
{
    return v->n_tokens;
}

hs_token hs_vocab_bos(const struct hs_vocab *v)
{
    return v->bos;
}

hs_token hs_vocab_eos(const struct hs_vocab *v)
{
    return v->eos;
}

bool hs_vocab_add_bos(const struct hs_vocab *v)
{
    return v->add_bos;
}

bool hs_vocab_add_eos(const struct hs_vocab *v)
{
    return v->add_eos;
}

bool hs_vocab_is_eog(const struct hs_vocab *v, hs_token t)
{
    if (t < 0) {
        return false;
    }
    for (int32_t i = 0; i < v->n_eog; i++) {
        if (v->eog[i] == t) {
            return true;
        }
    }
    return false;
}

bool hs_vocab_is_control(const struct hs_vocab *v, hs_token t)
{
    return t >= 0 && t < v->n_tokens && v->attr[t] == HS_TOKEN_CONTROL;
}

enum hs_token_attr hs_vocab_token_attr(const struct hs_vocab *v, hs_token t)
{
    return t >= 0 && t < v->n_tokens ? (enum hs_token_attr)v->attr[t] : (enum hs_token_attr)0;
}

const char *hs_vocab_token_text(const struct hs_vocab *v, hs_token t)
{
    if (v == NULL || t < 0 || t >= v->n_tokens) {
        return NULL;
    }
    return v->text_arena + v->text_off[t];
}

hs_token hs_vocab_find(const struct hs_vocab *v, const char *s)
{
    if (v == NULL || s == NULL) {
        return HS__NO_ID;
    }
    return token_lookup(v, s, strlen(s));
}

/* ---- loading ---- */

void hs_vocab_destroy(struct hs_vocab *v)
{
    if (v == NULL) {
        return;
    }
    free(v->text_arena);
    free(v->text_off);
    free(v->text_len);
    free(v->scores);
    free(v->attr);
    free(v->tokens.slots);
    free(v->merge_arena);
    free(v->merge_off);
    free(v->merge_left);
    free(v->merge_right);
    free(v->merges.slots);
    free(v->special);
    free(v);
}

static void add_eog(struct hs_vocab *v, hs_token t)
{
    if (t < 0 || t >= v->n_tokens || hs_vocab_is_eog(v, t) || v->n_eog == HS__MAX_EOG) {
        return;
    }
    v->eog[v->n_eog++] = t;
}

/* Reads an optional token id key: absent keeps *id; out-of-range values (llama.cpp writes
 * 0xffffffff for "none") give -1. */
static hs_status load_id(const struct hs_gguf *g, const char *key, struct hs_vocab *v, hs_token *id,
                         struct hs_error *err)
{
    int64_t x;
    hs_status st = hs_gguf_get_int(g, key, &x);
    if (st == HS_E_NOENT) {
        return HS_OK;
    }
    if (st != HS_OK) {
        return hs_error_set(err, HS_E_FORMAT, "vocab: %s is not an integer", key);
    }
    *id = (x >= 0 && x < v->n_tokens) ? (hs_token)x : HS__NO_ID;
    return HS_OK;
}

static hs_status load_bool(const struct hs_gguf *g, const char *key, bool *b, struct hs_error *err)
{
    hs_status st = hs_gguf_get_bool(g, key, b);
    if (st == HS_OK || st == HS_E_NOENT) {
        return HS_OK;
    }
    return hs_error_set(err, HS_E_FORMAT, "vocab: %s is not a bool", key);
}

static int cmp_special(const void *a, const void *b, void *ctx)
{
    const struct hs_vocab *v = ctx;
    hs_token x = *(const hs_token *)a, y = *(const hs_token *)b;
    if (v->text_len[x] != v->text_len[y]) {
        return v->text_len[x] > v->text_len[y] ? -1 : 1;
    }
    return x < y ? -1 : x > y;
}

static hs_status load_tokens(const struct hs_gguf *g, struct hs_vocab *v, struct hs_error *err)
{
    const struct hs_gguf_value *arr;
    if (hs_gguf_get_arr(g, "tokenizer.ggml.tokens", HS_GGUF_TYPE_STRING, &arr) != HS_OK) {
        return hs_error_set(err, HS_E_FORMAT,
                            "vocab: tokenizer.ggml.tokens missing or not an "
                            "array of strings");
    }
    if (arr->arr.n == 0 || arr->arr.n > INT32_MAX / 4) {
        return hs_error_set(err, HS_E_FORMAT, "vocab: tokenizer.ggml.tokens has %llu entries",
                            (unsigned long long)arr->arr.n);
    }
    int32_t n = (int32_t)arr->arr.n;
    const struct hs_gguf_str *strs = arr->arr.data;
    v->n_tokens = n;
    size_t total = 0;
    for (int32_t i = 0; i < n; i++) {
        if (strs[i].len > UINT32_MAX / 2 || hs_add_overflow(total, strs[i].len + 1, &total) ||
            total > UINT32_MAX) {
            return hs_error_set(err, HS_E_FORMAT, "vocab: token %d is too long", i);
        }
    }
    v->text_arena = malloc(total);
    v->text_off = malloc((size_t)n * sizeof(*v->text_off));
    v->text_len = malloc((size_t)n * sizeof(*v->text_len));
    v->scores = calloc((size_t)n, sizeof(*v->scores));
    v->attr = malloc((size_t)n);
    if (v->text_arena == NULL || v->text_off == NULL || v->text_len == NULL || v->scores == NULL ||
        v->attr == NULL || table_init(&v->tokens, (size_t)n) != HS_OK) {
        return hs_error_set(err, HS_E_NOMEM, "vocab: out of memory for %d tokens", n);
    }
    size_t off = 0;
    for (int32_t i = 0; i < n; i++) {
        size_t len = (size_t)strs[i].len;
        if (len > 0) {
            memcpy(v->text_arena + off, strs[i].data, len);
        }
        v->text_arena[off + len] = '\0';
        v->text_off[i] = (uint32_t)off;
        v->text_len[i] = (uint32_t)len;
        off += len + 1;
        /* insert; a duplicate text maps to its last id, as in llama.cpp */
        size_t h = hash_finish(hash_bytes(HS__HASH_SEED, v->text_arena + v->text_off[i], len)) &
                   v->tokens.mask;
        for (;;) {
            int32_t id = v->tokens.slots[h];
            if (id < 0 ||
                (v->text_len[id] == len && memcmp(v->text_arena + v->text_off[id],
                                                  v->text_arena + v->text_off[i], len) == 0)) {
                v->tokens.slots[h] = i;
                break;
            }
            h = (h + 1) & v->tokens.mask;
        }
    }

    memset(v->attr, HS_TOKEN_NORMAL, (size_t)n);
    if (hs_gguf_get_arr(g, "tokenizer.ggml.token_type", HS_GGUF_TYPE_COUNT, &arr) == HS_OK) {
        if (arr->arr.n != (uint64_t)n || arr->arr.type == HS_GGUF_TYPE_STRING ||
            arr->arr.type == HS_GGUF_TYPE_ARRAY || arr->arr.type == HS_GGUF_TYPE_FLOAT32 ||
            arr->arr.type == HS_GGUF_TYPE_FLOAT64) {
            return hs_error_set(err, HS_E_FORMAT,
                                "vocab: tokenizer.ggml.token_type must be %d "
                                "integers",
                                n);
        }
        for (int32_t i = 0; i < n; i++) {
            int64_t t = hs_gguf_arr_get_int(arr, (uint64_t)i);
            v->attr[i] =
                (t >= HS_TOKEN_NORMAL && t <= HS_TOKEN_BYTE) ? (uint8_t)t : HS_TOKEN_NORMAL;
        }
    }
    if (hs_gguf_get_arr(g, "tokenizer.ggml.scores", HS_GGUF_TYPE_COUNT, &arr) == HS_OK) {
        if (arr->arr.n != (uint64_t)n ||
            (arr->arr.type != HS_GGUF_TYPE_FLOAT32 && arr->arr.type != HS_GGUF_TYPE_FLOAT64)) {
            return hs_error_set(err, HS_E_FORMAT,
                                "vocab: tokenizer.ggml.scores must be %d "
                                "floats",
                                n);
        }
        for (int32_t i = 0; i < n; i++) {
            v->scores[i] = (float)hs_gguf_arr_get_float(arr, (uint64_t)i);
        }
    }
    return HS_OK;
}

static hs_status load_merges(const struct hs_gguf *g, struct hs_vocab *v, struct hs_error *err)
{
    const struct hs_gguf_value *arr;
    if (hs_gguf_get_arr(g, "tokenizer.ggml.merges", HS_GGUF_TYPE_STRING, &arr) != HS_OK) {
        return hs_error_set(err, HS_E_FORMAT,
                            "vocab: tokenizer.ggml.merges missing or not an "
                            "array of strings");
    }
    if (arr->arr.n > INT32_MAX / 4) {
        return hs_error_set(err, HS_E_FORMAT, "vocab: too many merges");
    }
    size_t n = (size_t)arr->arr.n, total = 0;
    const struct hs_gguf_str *strs = arr->arr.data;
    for (size_t i = 0; i < n; i++) {
        if (strs[i].len > UINT32_MAX / 2 || hs_add_overflow(total, strs[i].len + 1, &total) ||
            total > UINT32_MAX) {
            return hs_error_set(err, HS_E_FORMAT, "vocab: merge %zu is too long", i);
        }
    }
    v->merge_arena = malloc(total + 1);
    v->merge_off = malloc((n + 1) * sizeof(*v->merge_off));
    v->merge_left = malloc((n + 1) * sizeof(*v->merge_left));
    v->merge_right = malloc((n + 1) * sizeof(*v->merge_right));
    if (v->merge_arena == NULL || v->merge_off == NULL || v->merge_left == NULL ||
        v->merge_right == NULL || table_init(&v->merges, n) != HS_OK) {
        return hs_error_set(err, HS_E_NOMEM, "vocab: out of memory for %zu merges", n);
    }
    size_t off = 0;
    int32_t m = 0;
    for (size_t i = 0; i < n; i++) {
        const char *s = strs[i].data;
        size_t len = (size_t)strs[i].len;
        /* split at the first space after the first byte */
        const char *sp = len > 1 ? memchr(s + 1, ' ', len - 1) : NULL;
        v->merge_off[i] = (uint32_t)off;
        v->merge_left[i] = 0;
        v->merge_right[i] = 0;
        if (sp == NULL) {
            continue; /* unusable, but it still takes its rank */
        }
        size_t nl = (size_t)(sp - s), nr = len - nl - 1;
        memcpy(v->merge_arena + off, s, len);
        v->merge_arena[off + len] = '\0';
        size_t h = merge_hash(s, nl, sp + 1, nr) & v->merges.mask;
        bool dup = false;
        for (;;) {
            int32_t e = v->merges.slots[h];
            if (e < 0) {
                break;
            }
            const char *es = v->merge_arena + v->merge_off[e];
            if (v->merge_left[e] == nl && v->merge_right[e] == nr && memcmp(es, s, len) == 0) {
                dup = true; /* keep the first (lowest) rank */
                break;
            }
            h = (h + 1) & v->merges.mask;
        }
        /* rank = index in the file, so keep the index even for duplicates */
        v->merge_off[i] = (uint32_t)off;
        v->merge_left[i] = (uint32_t)nl;
        v->merge_right[i] = (uint32_t)nr;
        if (!dup) {
            v->merges.slots[h] = (int32_t)i;
        }
        off += len + 1;
        m++;
    }
    v->n_merges = m;
    return HS_OK;
}

static hs_status load_pre(const struct hs_gguf *g, struct hs_vocab *v, struct hs_error *err)
{
    struct hs_gguf_str pre;
    hs_status st = hs_gguf_get_str(g, "tokenizer.ggml.pre", &pre);
    if (st == HS_E_NOENT) {
        v->pre = HS__PRE_DEFAULT;
        return HS_OK;
    }
    if (st != HS_OK) {
        return hs_error_set(err, HS_E_FORMAT, "vocab: tokenizer.ggml.pre is not a string");
    }
    static const struct {
        const char *name;
        enum hs__pre pre;
    } names[] = {
        {"default", HS__PRE_DEFAULT},  {"gpt-2", HS__PRE_GPT2},
        {"llama-bpe", HS__PRE_LLAMA3}, {"llama3", HS__PRE_LLAMA3},
        {"llama-v3", HS__PRE_LLAMA3},  {"falcon3", HS__PRE_LLAMA3},
        {"qwen2", HS__PRE_QWEN2},      {"deepseek-r1-qwen", HS__PRE_QWEN2},
        {"megrez", HS__PRE_QWEN2},
    };
    for (size_t i = 0; i < HS_ARRAY_LEN(names); i++) {
        if (hs_gguf_str_eq(pre, names[i].name)) {
            v->pre = names[i].pre;
            return HS_OK;
        }
    }
    int shown = (int)HS_MIN(pre.len, 64);
    return hs_error_set(err, HS_E_NOTSUP, "vocab: pre-tokenizer '%.*s' is not supported", shown,
                        pre.data);
}

/* The token with one of the texts (first found), or -1; found tokens become CONTROL, as llama.cpp
 * does for control-looking tokens a converter left typed otherwise. */
static hs_token find_control(struct hs_vocab *v, const char *const *texts, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        hs_token t = hs_vocab_find(v, texts[i]);
        if (t >= 0) {
            v->attr[t] = HS_TOKEN_CONTROL;
            return t;
        }
    }
    return HS__NO_ID;
}

#define HS__FIND_CONTROL(v, ...)                                                                   \
    find_control((v), (const char *const[]){__VA_ARGS__},                                          \
                 sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *))

/* End-of-generation ids, after llama.cpp: eos, eot, eom, the FIM pad/repo/file-separator tokens,
 * every token whose text marks the end of a turn, and tokenizer.ggml.eog when present. */
static void load_eog(const struct hs_gguf *g, struct hs_vocab *v)
{
    hs_token eom = HS__NO_ID, fim_pad = HS__NO_ID, fim_rep = HS__NO_ID, fim_sep = HS__NO_ID;
    (void)load_id(g, "tokenizer.ggml.eom_token_id", v, &eom, NULL);
    (void)load_id(g, "tokenizer.ggml.fim_pad_token_id", v, &fim_pad, NULL);
    (void)load_id(g, "tokenizer.ggml.fim_rep_token_id", v, &fim_rep, NULL);
    (void)load_id(g, "tokenizer.ggml.fim_sep_token_id", v, &fim_sep, NULL);
    if (v->eot < 0) {
        v->eot = HS__FIND_CONTROL(v, "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>",
                                  "<|endoftext|>", "<EOT>",
                                  "<\xef\xbd\x9c"
                                  "end\xe2\x96\x81of\xe2\x96\x81sentence"
                                  "\xef\xbd\x9c>");
    }
    if (eom < 0) {
        eom = HS__FIND_CONTROL(v, "<|eom_id|>");
    }
    (void)HS__FIND_CONTROL(v, "<|fim_prefix|>", "<fim-prefix>", "<PRE>");
    (void)HS__FIND_CONTROL(v, "<|fim_suffix|>", "<fim-suffix>", "<SUF>");
    (void)HS__FIND_CONTROL(v, "<|fim_middle|>", "<fim-middle>", "<MID>");
    if (fim_pad < 0) {
        fim_pad = HS__FIND_CONTROL(v, "<|fim_pad|>", "<fim-pad>", "<PAD>");
    }
    if (fim_rep < 0) {
        fim_rep = HS__FIND_CONTROL(v, "<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>");
    }
    if (fim_sep < 0) {
        fim_sep = HS__FIND_CONTROL(v, "<|file_sep|>");
    }
    add_eog(v, fim_pad);
    add_eog(v, fim_rep);
    add_eog(v, fim_sep);
    static const char *const names[] = {"<|eot_id|>",    "<|im_end|>", "<|end|>", "<end_of_turn>",
                                        "<|endoftext|>", "<|eom_id|>", "<EOT>"};
    for (size_t i = 0; i < HS_ARRAY_LEN(names); i++) {
        add_eog(v, HS__FIND_CONTROL(v, names[i]));
    }
    add_eog(v, v->eos);
    add_eog(v, v->eot);
    add_eog(v, eom);
    const struct hs_gguf_value *val = hs_gguf_get(g, "tokenizer.ggml.eog");
    if (val != NULL && val->type == HS_GGUF_TYPE_ARRAY && val->arr.type != HS_GGUF_TYPE_STRING &&
        val->arr.type != HS_GGUF_TYPE_ARRAY && val->arr.type != HS_GGUF_TYPE_FLOAT32 &&
        val->arr.type != HS_GGUF_TYPE_FLOAT64) {
        for (uint64_t i = 0; i < val->arr.n; i++) {
            int64_t t = hs_gguf_arr_get_int(val, i);
            if (t >= 0 && t < v->n_tokens) {
                add_eog(v, (hs_token)t);
            }
        }
    } else if (val != NULL) {
        hs_token t = HS__NO_ID;
        (void)load_id(g, "tokenizer.ggml.eog", v, &t, NULL);
        add_eog(v, t);
    }
}

hs_status hs_vocab_load(const struct hs_gguf *g, struct hs_vocab **out, struct hs_error *err)
{
    if (out == NULL) {
        return HS_E_INVAL;
    }
    *out = NULL;
    if (g == NULL) {
        return hs_error_set(err, HS_E_INVAL, "vocab: no GGUF");
    }
    hs_status st;
    struct hs_vocab *v = calloc(1, sizeof(*v));
    if (v == NULL) {
        return hs_error_set(err, HS_E_NOMEM, "vocab: out of memory");
    }
    struct hs_gguf_str model;
    if (hs_gguf_get_str(g, "tokenizer.ggml.model", &model) != HS_OK) {
        st = hs_error_set(err, HS_E_FORMAT,
                          "vocab: tokenizer.ggml.model missing or not a "
                          "string");
        goto fail;
    }
    if (hs_gguf_str_eq(model, "llama")) {
        v->type = HS_VOCAB_SPM;
    } else if (hs_gguf_str_eq(model, "gpt2")) {
        v->type = HS_VOCAB_BPE;
    } else {
        st = hs_error_set(err, HS_E_NOTSUP, "vocab: tokenizer model '%.*s' is not supported",
                          (int)HS_MIN(model.len, 64), model.data);
        goto fail;
    }
    st = load_tokens(g, v, err);
    if (st != HS_OK) {
        goto fail;
    }
    v->bos = v->eos = v->unk = v->eot = HS__NO_ID;
    if (v->type == HS_VOCAB_SPM) {
        v->bos = HS_MIN(1, v->n_tokens - 1);
        v->eos = HS_MIN(2, v->n_tokens - 1);
        v->unk = 0;
        v->add_bos = true;
        v->add_space_prefix = true;
    } else {
        st = load_pre(g, v, err);
        if (st == HS_OK) {
            st = load_merges(g, v, err);
        }
        if (st != HS_OK) {
            goto fail;
        }
        v->add_bos = v->pre == HS__PRE_LLAMA3;
        v->ignore_merges = v->pre == HS__PRE_LLAMA3;
    }
    if ((st = load_id(g, "tokenizer.ggml.bos_token_id", v, &v->bos, err)) != HS_OK ||
        (st = load_id(g, "tokenizer.ggml.eos_token_id", v, &v->eos, err)) != HS_OK ||
        (st = load_id(g, "tokenizer.ggml.unknown_token_id", v, &v->unk, err)) != HS_OK ||
        (st = load_id(g, "tokenizer.ggml.eot_token_id", v, &v->eot, err)) != HS_OK ||
        (st = load_bool(g, "tokenizer.ggml.add_bos_token", &v->add_bos, err)) != HS_OK ||
        (st = load_bool(g, "tokenizer.ggml.add_eos_token", &v->add_eos, err)) != HS_OK ||
        (st = load_bool(g, "tokenizer.ggml.add_space_prefix", &v->add_space_prefix, err)) !=
            HS_OK) {
        goto fail;
    }
    if (v->type == HS_VOCAB_BPE) {
        v->add_space_prefix = false;
    }

    memset(v->cp_byte, 0xff, sizeof(v->cp_byte));
    for (int b = 0; b < 256; b++) {
        v->byte_token[b] = HS__NO_ID;
        if (v->type == HS_VOCAB_SPM) {
            static const char hex[] = "0123456789ABCDEF";
            char name[7] = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>', '\0'};
            hs_token t = token_lookup(v, name, 6);
            if (t < 0) {
                char c = (char)b;
                t = token_lookup(v, &c, 1);
            }
            v->byte_token[b] = t;
        } else {
            uint8_t buf[4];
            uint32_t cp = byte_to_cp((uint8_t)b);
            size_t n = hs__utf8_encode(cp, buf);
            memcpy(v->byte_utf8[b], buf, 2);
            v->cp_byte[cp] = (int16_t)b;
            v->byte_token[b] = token_lookup(v, (const char *)buf, n);
        }
    }

    load_eog(g, v); /* before the special list: it may retype tokens as CONTROL */
    int32_t n_special = 0;
    for (int32_t i = 0; i < v->n_tokens; i++) {
        uint8_t a = v->attr[i];
        n_special += a == HS_TOKEN_CONTROL || a == HS_TOKEN_USER_DEFINED || a == HS_TOKEN_UNKNOWN;
    }
    if (n_special > 0) {
        v->special = malloc((size_t)n_special * sizeof(*v->special));
        if (v->special == NULL) {
            st = hs_error_set(err, HS_E_NOMEM, "vocab: out of memory");
            goto fail;
        }
        for (int32_t i = 0; i < v->n_tokens; i++) {
            uint8_t a = v->attr[i];
            if (a == HS_TOKEN_CONTROL || a == HS_TOKEN_USER_DEFINED || a == HS_TOKEN_UNKNOWN) {
                v->special[v->n_special++] = i;
            }
        }
        qsort_r(v->special, (size_t)v->n_special, sizeof(*v->special), cmp_special, v);
    }
    *out = v;
    return HS_OK;
fail:
    hs_vocab_destroy(v);
    return st;
}
