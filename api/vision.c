/* Image input on the API (api/vision.h). */
#include "api/vision.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/backend.h"
#include "common/log.h"
#include "model/vision/vision.h"
#include "model/tokenizer/vocab.h"

/* Encoded images kept for reuse: an agent resends the same screenshot in each turn. */
#define CACHE_SLOTS 8

struct cache_entry {
    uint64_t hash;
    int32_t gx, gy;
    float *rows; /* owned; NULL: empty slot */
    uint64_t used;
};

struct hs__api_vision {
    struct hs_vision *v;
    struct hs_backend *be; /* the encoder's, used under mu */
    pthread_mutex_t mu;
    bool allow_urls;
    int32_t n_embd;
    struct cache_entry cache[CACHE_SLOTS];
    uint64_t tick;
    atomic_uint_fast64_t n_encoded, n_hits;
};

hs_status hs__api_vision_create(const char *path, int32_t lm_n_embd, int32_t n_threads,
                                bool allow_urls, struct hs__api_vision **out,
                                struct hs_error *err)
{
    *out = NULL;
    struct hs__api_vision *av = calloc(1, sizeof(*av));
    if (!av) {
        return hs_error_set(err, HS_E_NOMEM, "out of memory");
    }
    hs_status st = hs_vision_load(path, &av->v, err);
    if (st != HS_OK) {
        free(av);
        return st;
    }
    const struct hs_vision_hparams *hp = hs_vision_get_hparams(av->v);
    if (hp->proj_dim != lm_n_embd) {
        hs_error_set(err, HS_E_INVAL,
                     "the projector %s gives rows of %d, the language model takes %d: not its "
                     "projector",
                     path, hp->proj_dim, lm_n_embd);
        hs_vision_free(av->v);
        free(av);
        return HS_E_INVAL;
    }
    struct hs_backend_params bp = hs_backend_default_params();
    bp.n_threads = n_threads > 0 ? n_threads : 2;
    st = hs_backend_create("cpu", &bp, &av->be);
    if (st != HS_OK) {
        hs_error_set(err, st, "cannot create the vision encoder's CPU backend");
        hs_vision_free(av->v);
        free(av);
        return st;
    }
    pthread_mutex_init(&av->mu, NULL);
    av->allow_urls = allow_urls;
    av->n_embd = lm_n_embd;
    atomic_init(&av->n_encoded, 0);
    atomic_init(&av->n_hits, 0);
    *out = av;
    return HS_OK;
}

void hs__api_vision_destroy(struct hs__api_vision *av)
{
    if (!av) {
        return;
    }
    for (int i = 0; i < CACHE_SLOTS; i++) {
        free(av->cache[i].rows);
    }
    pthread_mutex_destroy(&av->mu);
    hs_backend_destroy(av->be);
    hs_vision_free(av->v);
    free(av);
}

void hs__api_vision_counts(struct hs__api_vision *av, uint64_t *n_encoded, uint64_t *n_hits)
{
    *n_encoded = av ? atomic_load_explicit(&av->n_encoded, memory_order_relaxed) : 0;
    *n_hits = av ? atomic_load_explicit(&av->n_hits, memory_order_relaxed) : 0;
}

/* FNV-1a over the size and pixels, then a final mix: the cache key and the seed of the
 * placeholder ids (not a cryptographic hash). */
static uint64_t image_hash(const struct hs_image *img)
{
    uint64_t h = 1469598103934665603ULL;
    const uint32_t dims[2] = {(uint32_t)img->nx, (uint32_t)img->ny};
    const uint8_t *d = (const uint8_t *)dims;
    for (size_t i = 0; i < sizeof(dims); i++) {
        h = (h ^ d[i]) * 1099511628211ULL;
    }
    const size_t n = (size_t)img->nx * img->ny * 3;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ img->rgb[i]) * 1099511628211ULL;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h;
}

static hs_status api_fail(struct hs__api_err *err, int http, const char *param, const char *msg)
{
    err->http = http;
    snprintf(err->param, sizeof(err->param), "%s", param);
    err->code[0] = '\0';
    snprintf(err->message, sizeof(err->message), "%.60s: %.300s", param, msg);
    return http == 503 ? HS_E_NOMEM : HS_E_INVAL;
}

/* Copies the rows of cache entry e into out (under mu). */
static hs_status from_cache(struct hs__api_vision *av, struct cache_entry *e,
                            struct hs__api_image *out)
{
    const size_t n = (size_t)e->gx * e->gy * (size_t)av->n_embd;
    out->rows = malloc(n * sizeof(float));
    if (!out->rows) {
        return HS_E_NOMEM;
    }
    memcpy(out->rows, e->rows, n * sizeof(float));
    out->gx = e->gx;
    out->gy = e->gy;
    e->used = ++av->tick;
    return HS_OK;
}

hs_status hs__api_vision_image(struct hs__api_vision *av, const char *url, size_t n,
                               const char *param, struct hs__api_image *out,
                               struct hs__api_err *err)
{
    memset(out, 0, sizeof(*out));
    struct hs_image img;
    struct hs_error e;
    hs_status st = hs_image_decode_url(url, n, av->allow_urls, NULL, &img, &e);
    if (st != HS_OK) {
        return api_fail(err, st == HS_E_NOMEM ? 503 : 400, param, e.message);
    }
    out->hash = image_hash(&img);
    pthread_mutex_lock(&av->mu);
    for (int i = 0; i < CACHE_SLOTS; i++) {
        struct cache_entry *c = &av->cache[i];
        if (c->rows && c->hash == out->hash) {
            st = from_cache(av, c, out);
            pthread_mutex_unlock(&av->mu);
            hs_image_finish(&img);
            if (st != HS_OK) {
                return api_fail(err, 503, param, "out of memory");
            }
            atomic_fetch_add_explicit(&av->n_hits, 1, memory_order_relaxed);
            return HS_OK;
        }
    }
    struct hs_vision_input in;
    st = hs_vision_preprocess(av->v, &img, &in, &e);
    hs_image_finish(&img);
    float *rows = NULL;
    if (st == HS_OK) {
        const int32_t nt = hs_vision_n_tokens(av->v, in.nx, in.ny);
        rows = malloc((size_t)nt * av->n_embd * sizeof(float));
        st = rows ? hs_vision_encode(av->v, av->be, &in, rows, &e) : HS_E_NOMEM;
        const int32_t f = hs_vision_get_hparams(av->v)->patch_size *
                          hs_vision_get_hparams(av->v)->n_merge;
        out->gx = in.nx / f;
        out->gy = in.ny / f;
    }
    hs_vision_input_finish(&in);
    if (st != HS_OK) {
        pthread_mutex_unlock(&av->mu);
        free(rows);
        HS_LOG_ERROR("vision: encoding an image failed: %s", e.message);
        return api_fail(err, 503, param, "the image could not be encoded (out of memory)");
    }
    atomic_fetch_add_explicit(&av->n_encoded, 1, memory_order_relaxed);
    /* the least recently used slot takes a copy */
    int victim = 0;
    for (int i = 1; i < CACHE_SLOTS; i++) {
        if (!av->cache[i].rows ||
            (av->cache[victim].rows && av->cache[i].used < av->cache[victim].used)) {
            victim = i;
        }
    }
    struct cache_entry *c = &av->cache[victim];
    const size_t bytes = (size_t)out->gx * out->gy * (size_t)av->n_embd * sizeof(float);
    float *copy = malloc(bytes);
    if (copy) {
        memcpy(copy, rows, bytes);
        free(c->rows);
        *c = (struct cache_entry){out->hash, out->gx, out->gy, copy, ++av->tick};
    }
    pthread_mutex_unlock(&av->mu);
    out->rows = rows;
    return HS_OK;
}

/* ---- prompts with images ---- */

void hs__api_vision_marker(const struct hs__api_req *r, int32_t k, char *buf)
{
    snprintf(buf, 64, "<|hs-image-%016llx-%d|>", (unsigned long long)r->marker_nonce, (int)k);
}

struct ids {
    hs_token *p;
    size_t n, cap;
};

static hs_status ids_reserve(struct ids *a, size_t more)
{
    if (a->n + more <= a->cap) {
        return HS_OK;
    }
    size_t cap = HS_MAX(a->cap * 2, a->n + more + 64);
    hs_token *p = realloc(a->p, cap * sizeof(hs_token));
    if (!p) {
        return HS_E_NOMEM;
    }
    a->p = p;
    a->cap = cap;
    return HS_OK;
}

/* Appends the tokens of text[0..len) (client: its marks or NULL: template text). */
static hs_status ids_text(const struct hs__api_ctx *c, struct ids *a, const char *text, size_t len,
                          bool add_special, const uint8_t *client)
{
    if (len == 0 && !add_special) {
        return HS_OK;
    }
    for (int tries = 0; tries < 2; tries++) {
        size_t room = len + 8, n = 0;
        HS_TRY(ids_reserve(a, room));
        hs_status st = client ? hs_tokenize_marked(c->vocab, text, len, add_special, client,
                                                   a->p + a->n, a->cap - a->n, &n)
                              : hs_tokenize(c->vocab, text, len, add_special, true, a->p + a->n,
                                            a->cap - a->n, &n);
        if (st == HS_OK) {
            a->n += n;
            return HS_OK;
        }
        if (st != HS_E_RANGE) {
            return st;
        }
        HS_TRY(ids_reserve(a, n));
    }
    return HS_E_INTERNAL;
}

hs_status hs__api_tokenize_images(const struct hs__api_ctx *c, const char *text, size_t len,
                                  bool add_special, const uint8_t *client, struct hs__api_req *r,
                                  struct hs__api_err *err)
{
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "<|hs-image-%016llx-", (unsigned long long)r->marker_nonce);
    const size_t n_prefix = strlen(prefix);
    const int32_t n_vocab = hs_vocab_n_tokens(c->vocab);
    bool seen[HS__API_MAX_IMAGES] = {false};
    struct ids a = {0};
    hs_status st = HS_OK;
    size_t pos = 0;
    int32_t n_spans = 0;
    while (st == HS_OK) {
        const char *m = memmem(text + pos, len - pos, prefix, n_prefix);
        const size_t end = m ? (size_t)(m - text) : len;
        st = ids_text(c, &a, text + pos, end - pos, add_special && pos == 0,
                      client ? client + pos : NULL);
        if (st != HS_OK || !m) {
            break;
        }
        char *after = NULL;
        const long k = strtol(m + n_prefix, &after, 10);
        if (k < 0 || k >= r->n_images || seen[k] || !after || strncmp(after, "|>", 2) != 0) {
            free(a.p);
            return api_fail(err, 400, "messages",
                            "the chat template repeated or garbled an image's place");
        }
        seen[k] = true;
        const struct hs__api_image *im = &r->images[k];
        const int32_t n_tok = im->gx * im->gy;
        st = ids_text(c, &a, "<|vision_start|>", 16, false, NULL);
        if (st == HS_OK && (st = ids_reserve(&a, (size_t)n_tok)) == HS_OK) {
            r->eimages[n_spans++] = (struct hs_engine_image){(int32_t)a.n, n_tok, im->gx, im->gy,
                                                              im->rows};
            uint64_t h = im->hash;
            for (int32_t i = 0; i < n_tok; i++) {
                h = h * 6364136223846793005ULL + 1442695040888963407ULL;
                a.p[a.n++] = (hs_token)((h >> 33) % (uint64_t)n_vocab);
            }
            st = ids_text(c, &a, "<|vision_end|>", 14, false, NULL);
        }
        pos = (size_t)(after + 2 - text);
    }
    if (st != HS_OK) {
        free(a.p);
        return st == HS_E_NOMEM ? api_fail(err, 503, "prompt", "out of memory")
                                : api_fail(err, 400, "prompt", "the prompt cannot be tokenized");
    }
    if (n_spans != r->n_images) {
        free(a.p);
        return api_fail(err, 400, "messages",
                        "the model's chat template dropped an image from the prompt");
    }
    r->prompts[0].ids = a.p;
    r->prompts[0].n = (int32_t)a.n;
    r->er.images = r->eimages;
    r->er.n_images = n_spans;
    return HS_OK;
}
