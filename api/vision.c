/* Image input on the API (api/vision.h). */
#include "api/vision.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backends/backend.h"
#include "common/buf.h"
#include "common/log.h"
#include "common/trace.h"
#include "model/vision/vision.h"
#include "model/tokenizer/vocab.h"
#include "server/engine.h"

/* Encoded images kept for reuse: an agent resends the same screenshot in each turn. */
#define CACHE_SLOTS 8

struct cache_entry {
    uint64_t hash;
    int32_t gx, gy;
    float *rows; /* owned; NULL: empty slot */
    uint64_t used;
};

/* One request's images still to encode, queued for the encoder's thread. The task owns the
 * request from hs__api_vision_submit until its owner takes it back (hs__api_vision_task_take)
 * or abandons it (then whoever comes last, owner or thread, frees both). */
struct hs__api_vision_task {
    struct hs__api_vision_task *next;
    struct hs__api_req *r;
    void (*notify)(void *user);
    void *user;
    pthread_mutex_t mu;
    bool done, abandoned; /* under mu */
    hs_status st;
    struct hs__api_err err;
};

struct hs__api_vision {
    struct hs_vision *v;
    struct hs_backend *be;  /* the encoder's: its thread alone drives it */
    struct hs_trace *trace; /* the engine's (borrowed), NULL: none */
    bool allow_urls;
    int32_t n_embd;
    atomic_uint_fast64_t n_encoded, n_hits;
    atomic_uint_fast64_t encode_ns; /* preprocessing and encoding, summed */

    pthread_mutex_t mu; /* the cache, the queue and quit */
    struct cache_entry cache[CACHE_SLOTS];
    uint64_t tick;
    pthread_cond_t cv;
    struct hs__api_vision_task *head, *tail;
    bool busy; /* the thread is on a task */
    bool quit;
    pthread_t thread;
};

static void *encoder_main(void *arg);

hs_status hs__api_vision_create(const char *path, int32_t lm_n_embd, int32_t n_threads,
                                bool allow_urls, struct hs_trace *trace,
                                struct hs__api_vision **out, struct hs_error *err)
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
    pthread_cond_init(&av->cv, NULL);
    av->allow_urls = allow_urls;
    av->n_embd = lm_n_embd;
    av->trace = trace;
    hs_trace_name_thread(trace, 1, HS_ENGINE_TRACE_TID_VISION, "vision encoder thread (cpu)");
    atomic_init(&av->n_encoded, 0);
    atomic_init(&av->n_hits, 0);
    atomic_init(&av->encode_ns, 0);
    if (pthread_create(&av->thread, NULL, encoder_main, av) != 0) {
        pthread_cond_destroy(&av->cv);
        pthread_mutex_destroy(&av->mu);
        hs_backend_destroy(av->be);
        hs_vision_free(av->v);
        free(av);
        return hs_error_set(err, HS_E_NOMEM, "cannot start the vision encoder's thread");
    }
    *out = av;
    return HS_OK;
}

static void task_free(struct hs__api_vision_task *t)
{
    if (t->r) {
        hs__api_req_free(t->r);
        free(t->r);
    }
    pthread_mutex_destroy(&t->mu);
    free(t);
}

void hs__api_vision_destroy(struct hs__api_vision *av)
{
    if (!av) {
        return;
    }
    pthread_mutex_lock(&av->mu);
    av->quit = true;
    pthread_cond_signal(&av->cv);
    pthread_mutex_unlock(&av->mu);
    pthread_join(av->thread, NULL);
    for (int i = 0; i < CACHE_SLOTS; i++) {
        free(av->cache[i].rows);
    }
    pthread_cond_destroy(&av->cv);
    pthread_mutex_destroy(&av->mu);
    hs_backend_destroy(av->be);
    hs_vision_free(av->v);
    free(av);
}

void hs__api_vision_get_stats(struct hs__api_vision *av, struct hs__api_vision_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (av) {
        out->n_encoded = atomic_load_explicit(&av->n_encoded, memory_order_relaxed);
        out->n_hits = atomic_load_explicit(&av->n_hits, memory_order_relaxed);
        out->encode_s = (double)atomic_load_explicit(&av->encode_ns, memory_order_relaxed) * 1e-9;
        pthread_mutex_lock(&av->mu);
        out->n_pending = av->busy ? 1 : 0;
        for (const struct hs__api_vision_task *t = av->head; t; t = t->next) {
            out->n_pending++;
        }
        pthread_mutex_unlock(&av->mu);
    }
}

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ULL + (uint64_t)t.tv_nsec;
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

/* Copies the rows of the image hashed im->hash from the cache into im, if there (takes mu).
 * HS_E_NOENT: not cached. */
static hs_status from_cache(struct hs__api_vision *av, struct hs__api_image *im)
{
    hs_status st = HS_E_NOENT;
    pthread_mutex_lock(&av->mu);
    for (int i = 0; i < CACHE_SLOTS; i++) {
        struct cache_entry *e = &av->cache[i];
        if (e->rows && e->hash == im->hash) {
            const size_t n = (size_t)e->gx * e->gy * (size_t)av->n_embd;
            im->rows = malloc(n * sizeof(float));
            if (im->rows) {
                memcpy(im->rows, e->rows, n * sizeof(float));
                e->used = ++av->tick;
            }
            st = im->rows ? HS_OK : HS_E_NOMEM;
            break;
        }
    }
    pthread_mutex_unlock(&av->mu);
    if (st == HS_OK) {
        atomic_fetch_add_explicit(&av->n_hits, 1, memory_order_relaxed);
    }
    return st;
}

/* Keeps a copy of im's rows in the least recently used slot (takes mu); none when out of
 * memory (the cache is an optimisation). */
static void to_cache(struct hs__api_vision *av, const struct hs__api_image *im)
{
    const size_t bytes = (size_t)im->gx * im->gy * (size_t)av->n_embd * sizeof(float);
    float *copy = malloc(bytes);
    if (!copy) {
        return;
    }
    memcpy(copy, im->rows, bytes);
    pthread_mutex_lock(&av->mu);
    int victim = 0;
    for (int i = 1; i < CACHE_SLOTS; i++) {
        if (!av->cache[i].rows ||
            (av->cache[victim].rows && av->cache[i].used < av->cache[victim].used)) {
            victim = i;
        }
    }
    struct cache_entry *c = &av->cache[victim];
    free(c->rows);
    *c = (struct cache_entry){im->hash, im->gx, im->gy, copy, ++av->tick};
    pthread_mutex_unlock(&av->mu);
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
    out->nx = img.nx;
    out->ny = img.ny;
    const struct hs_vision_hparams *hp = hs_vision_get_hparams(av->v);
    int32_t nx, ny;
    hs_vision_target_size(av->v, img.nx, img.ny, &nx, &ny);
    out->gx = nx / (hp->patch_size * hp->n_merge);
    out->gy = ny / (hp->patch_size * hp->n_merge);
    st = from_cache(av, out);
    if (st == HS_E_NOENT && (out->img = malloc(sizeof(img))) != NULL) {
        *out->img = img; /* the encoder's thread takes it from here */
        return HS_OK;
    }
    hs_image_finish(&img);
    return st == HS_OK ? HS_OK : api_fail(err, 503, param, "out of memory");
}

bool hs__api_vision_pending(const struct hs__api_req *r)
{
    for (int32_t i = 0; i < r->n_images; i++) {
        if (!r->images[i].rows) {
            return true;
        }
    }
    return false;
}

/* Points the engine request's image spans at the rows (all encoded now). */
static void bind_rows(struct hs__api_req *r, int32_t n_embd)
{
    for (int32_t i = 0; i < r->er.n_images; i++) {
        r->eimages[i].rows = r->images[r->span_image[i]].rows + (size_t)r->span_row[i] * n_embd;
    }
}

/* Encodes image k of r (the encoder's thread), unless the cache got it meanwhile. */
static hs_status encode_one(struct hs__api_vision *av, struct hs__api_req *r, int32_t k,
                            struct hs__api_err *err)
{
    struct hs__api_image *im = &r->images[k];
    const char *param = "messages";
    hs_status st = from_cache(av, im); /* an earlier request had the same picture */
    if (st != HS_E_NOENT) {
        return st == HS_OK ? HS_OK : api_fail(err, 503, param, "out of memory");
    }
    const uint64_t t0 = now_ns();
    const double t0_us = hs_trace_now_us(av->trace);
    struct hs_error e;
    struct hs_vision_input in;
    st = hs_vision_preprocess(av->v, im->img, &in, &e);
    float *rows = NULL;
    if (st == HS_OK) {
        const int32_t nt = hs_vision_n_tokens(av->v, in.nx, in.ny);
        rows = nt == im->gx * im->gy ? malloc((size_t)nt * av->n_embd * sizeof(float)) : NULL;
        st = rows ? hs_vision_encode(av->v, av->be, &in, rows, &e) : HS_E_NOMEM;
        hs_vision_input_finish(&in);
    }
    if (st != HS_OK) {
        free(rows);
        HS_LOG_ERROR("vision: encoding an image failed: %s", e.message);
        return api_fail(err, 503, param, "the image could not be encoded (out of memory)");
    }
    atomic_fetch_add_explicit(&av->n_encoded, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&av->encode_ns, now_ns() - t0, memory_order_relaxed);
    const struct hs_trace_arg args[] = {
        HS_TRACE_INT("req", (int64_t)r->er.id), HS_TRACE_INT("image", k),
        HS_TRACE_INT("width", im->img->nx), HS_TRACE_INT("height", im->img->ny),
        HS_TRACE_INT("tokens", im->gx * im->gy)};
    hs_trace_complete(av->trace, 1, HS_ENGINE_TRACE_TID_VISION, "encode", "vision", t0_us,
                      hs_trace_now_us(av->trace) - t0_us, args, HS_ARRAY_LEN(args));
    im->rows = rows;
    hs_image_finish(im->img);
    free(im->img);
    im->img = NULL;
    to_cache(av, im);
    return HS_OK;
}

/* The encoder's thread: tasks in submit order; an abandoned one is dropped unencoded. */
static void *encoder_main(void *arg)
{
    struct hs__api_vision *av = arg;
    pthread_mutex_lock(&av->mu);
    for (;;) {
        while (!av->head && !av->quit) {
            pthread_cond_wait(&av->cv, &av->mu);
        }
        if (!av->head) {
            break; /* quit, with nothing queued */
        }
        struct hs__api_vision_task *t = av->head;
        av->head = t->next;
        if (!av->head) {
            av->tail = NULL;
        }
        av->busy = true;
        const bool quit = av->quit;
        pthread_mutex_unlock(&av->mu);

        pthread_mutex_lock(&t->mu);
        bool drop = t->abandoned;
        pthread_mutex_unlock(&t->mu);
        hs_status st = HS_OK;
        if (quit) {
            st = api_fail(&t->err, 503, "messages", "the server is shutting down");
        }
        for (int32_t k = 0; !drop && st == HS_OK && k < t->r->n_images; k++) {
            if (!t->r->images[k].rows) {
                st = encode_one(av, t->r, k, &t->err);
            }
        }
        if (st == HS_OK && !drop) {
            bind_rows(t->r, av->n_embd);
        }
        pthread_mutex_lock(&t->mu);
        t->st = st;
        t->done = true;
        drop = t->abandoned;
        if (!drop) {
            t->notify(t->user); /* the owner is alive while we hold mu */
        }
        pthread_mutex_unlock(&t->mu);
        if (drop) {
            task_free(t);
        }
        pthread_mutex_lock(&av->mu);
        av->busy = false;
    }
    pthread_mutex_unlock(&av->mu);
    return NULL;
}

hs_status hs__api_vision_submit(struct hs__api_vision *av, struct hs__api_req *r,
                                void (*notify)(void *user), void *user,
                                struct hs__api_vision_task **out)
{
    *out = NULL;
    struct hs__api_vision_task *t = calloc(1, sizeof(*t));
    if (!t) {
        return HS_E_NOMEM;
    }
    pthread_mutex_init(&t->mu, NULL);
    t->r = r;
    t->notify = notify;
    t->user = user;
    pthread_mutex_lock(&av->mu);
    if (av->tail) {
        av->tail->next = t;
    } else {
        av->head = t;
    }
    av->tail = t;
    pthread_cond_signal(&av->cv);
    pthread_mutex_unlock(&av->mu);
    *out = t;
    return HS_OK;
}

bool hs__api_vision_task_take(struct hs__api_vision_task *t, struct hs__api_req **r, hs_status *st,
                              struct hs__api_err *err)
{
    pthread_mutex_lock(&t->mu);
    const bool done = t->done;
    pthread_mutex_unlock(&t->mu);
    if (!done) {
        return false;
    }
    *r = t->r;
    *st = t->st;
    *err = t->err;
    t->r = NULL;
    task_free(t);
    return true;
}

void hs__api_vision_task_abandon(struct hs__api_vision_task *t)
{
    if (!t) {
        return;
    }
    pthread_mutex_lock(&t->mu);
    const bool done = t->done;
    t->abandoned = true;
    pthread_mutex_unlock(&t->mu);
    if (done) {
        task_free(t); /* the thread is past it */
    }
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
    return hs__grow((void **)&a->p, &a->cap, a->n + more, sizeof(*a->p)) ? HS_OK : HS_E_NOMEM;
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

/* Appends image k of r as libmtmd lays it out (hs_vision_prompt), its rows' places filled with
 * ids drawn from its hash (so the prefix cache tells images apart), and one engine span per view
 * (*n_spans of them so far). */
static hs_status put_image(struct hs__api_vision *av, const struct hs_vocab *vocab,
                           struct hs__api_req *r, int32_t k, struct ids *a, int32_t *n_spans,
                           struct hs__api_err *err)
{
    const struct hs__api_image *im = &r->images[k];
    const int32_t n_views = hs_vision_n_views(av->v, im->nx, im->ny);
    const int32_t per_view = im->gx * im->gy / n_views;
    if (*n_spans + n_views > HS__API_MAX_SPANS) {
        return api_fail(err, 400, "messages", "the images are cut into too many tiles");
    }
    int32_t first[HS__API_MAX_SPANS];
    struct hs_error e;
    size_t need = 0;
    hs_status st = hs_vision_prompt(av->v, vocab, im->nx, im->ny, 0, NULL, 0, &need, first, &e);
    if (st == HS_E_RANGE && (st = ids_reserve(a, need)) == HS_OK) {
        st = hs_vision_prompt(av->v, vocab, im->nx, im->ny, 0, a->p + a->n, a->cap - a->n, &need,
                              first, &e);
    }
    if (st != HS_OK) {
        return st == HS_E_NOMEM ? api_fail(err, 503, "prompt", "out of memory")
                                : api_fail(err, 400, "messages", e.message);
    }
    uint64_t h = im->hash;
    for (int32_t v = 0; v < n_views; v++) {
        /* Qwen's one view keeps its grid (M-RoPE); idefics3's views are rows of tokens */
        const bool grid = n_views == 1;
        const int32_t i = (*n_spans)++;
        r->span_image[i] = (int8_t)k;
        r->span_row[i] = v * per_view;
        r->eimages[i] = (struct hs_engine_image){
            (int32_t)a->n + first[v], per_view, grid ? im->gx : per_view, grid ? im->gy : 1,
            im->rows ? im->rows + (size_t)v * per_view * av->n_embd : NULL};
        for (int32_t j = 0; j < per_view; j++) {
            h = h * 6364136223846793005ULL + 1442695040888963407ULL;
            a->p[a->n + first[v] + j] = (hs_token)((h >> 33) % (uint64_t)hs_vocab_n_tokens(vocab));
        }
    }
    a->n += need;
    return HS_OK;
}

hs_status hs__api_tokenize_images(const struct hs__api_ctx *c, const char *text, size_t len,
                                  bool add_special, const uint8_t *client, struct hs__api_req *r,
                                  struct hs__api_err *err)
{
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "<|hs-image-%016llx-", (unsigned long long)r->marker_nonce);
    const size_t n_prefix = strlen(prefix);
    bool seen[HS__API_MAX_IMAGES] = {false};
    struct ids a = {0};
    hs_status st = HS_OK;
    size_t pos = 0;
    int32_t n_spans = 0, n_seen = 0;
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
        n_seen++;
        st = put_image(c->vision, c->vocab, r, k, &a, &n_spans, err);
        if (st != HS_OK) {
            free(a.p);
            return st;
        }
        pos = (size_t)(after + 2 - text);
    }
    if (st != HS_OK) {
        free(a.p);
        return st == HS_E_NOMEM ? api_fail(err, 503, "prompt", "out of memory")
                                : api_fail(err, 400, "prompt", "the prompt cannot be tokenized");
    }
    if (n_seen != r->n_images) {
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
