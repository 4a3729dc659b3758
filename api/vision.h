/* Image input on the API: the projector (--mmproj), image URLs of chat content parts decoded
 * (HTTP threads, while parsing) and encoded into embedding rows by the encoder's own thread on its
 * own CPU backend, so a long encode holds no HTTP thread; a small cache keyed by the image's hash
 * keeps a repeated screenshot from being encoded again; and the prompt's placeholder tokens. */
#ifndef HS_API_VISION_H
#define HS_API_VISION_H

#include <stdbool.h>
#include <stdint.h>

#include "api/request.h"

struct hs__api_vision;

/* Loads the projector at path for a language model of width lm_n_embd and starts the encoder's
 * thread; each encode becomes an event on trace (borrowed; NULL: none). Errors: the projector's
 * (HS_E_IO, HS_E_FORMAT, HS_E_NOTSUP), HS_E_INVAL when its output width is not lm_n_embd.
 * Returns new (free with hs__api_vision_destroy). */
struct hs_trace;
hs_status hs__api_vision_create(const char *path, int32_t lm_n_embd, int32_t n_threads,
                                bool allow_urls, struct hs_trace *trace,
                                struct hs__api_vision **out, struct hs_error *err);
void hs__api_vision_destroy(struct hs__api_vision *av);

/* Decodes the image at url into out: its hash and grid, and its rows when the cache has them,
 * else its pixels (out->img) for hs__api_vision_submit (both new, freed by hs__api_req_free).
 * Errors with err filled: 400 for a broken, huge or unsupported image, an http(s) or non-data
 * URL; 503 for out of memory. */
hs_status hs__api_vision_image(struct hs__api_vision *av, const char *url, size_t n,
                               const char *param, struct hs__api_image *out,
                               struct hs__api_err *err);

/* Images encoded and answered from the cache so far, and the time spent preprocessing and
 * encoding them (for /metrics). */
struct hs__api_vision_stats {
    uint64_t n_encoded, n_hits;
    double encode_s;
    int32_t n_pending; /* requests queued for the encoder's thread or being encoded by it */
};

/* Thread: any. av NULL: zeros. */
void hs__api_vision_get_stats(struct hs__api_vision *av, struct hs__api_vision_stats *out);

/* True when an image of r still has no rows (hs__api_vision_image left its pixels). */
bool hs__api_vision_pending(const struct hs__api_req *r);

/* Queues r's pending images for the encoder's thread, which calls notify(user) once it is done
 * (from its own thread, at most once). r (heap) is the task's from here: take it back with
 * hs__api_vision_task_take, or give it up with hs__api_vision_task_abandon. HS_E_NOMEM: nothing
 * queued, r still the caller's. */
struct hs__api_vision_task;
hs_status hs__api_vision_submit(struct hs__api_vision *av, struct hs__api_req *r,
                                void (*notify)(void *user), void *user,
                                struct hs__api_vision_task **out);

/* When the task is done: false if not yet; else frees the task, *r the request back (its images
 * encoded and er.images pointed at them when *st is HS_OK, else err says why: 503). */
bool hs__api_vision_task_take(struct hs__api_vision_task *t, struct hs__api_req **r, hs_status *st,
                              struct hs__api_err *err);

/* The owner gives up (the client left, the server stops): the task and its request are freed
 * now or, if the thread is encoding them, when it is done; notify is not called after this
 * returns. NULL: nothing. */
void hs__api_vision_task_abandon(struct hs__api_vision_task *t);

/* The marker api/chat.c writes for image k of r into the content, unguessable by the client
 * (r->marker_nonce): "<|hs-image-NONCE-k|>". buf holds 64 bytes. */
void hs__api_vision_marker(const struct hs__api_req *r, int32_t k, char *buf);

/* Tokenizes a rendered chat prompt holding image markers into r->prompts[0]: the text around
 * them as hs__api_tokenize would (add_special at the start only; client marks as there), each
 * marker becoming the image's tokens as libmtmd lays them out (hs_vision_prompt: Qwen
 * "<|vision_start|>", its rows, "<|vision_end|>"; idefics3 its tiles and overview), the rows'
 * places holding ids drawn from its hash (so the prefix cache tells images apart);
 * r->er.images then lists the spans, one per view. 400 when the template dropped or repeated an
 * image, or the vocabulary lacks a token the layout needs. */
hs_status hs__api_tokenize_images(const struct hs__api_ctx *c, const char *text, size_t len,
                                  bool add_special, const uint8_t *client, struct hs__api_req *r,
                                  struct hs__api_err *err);

#endif
