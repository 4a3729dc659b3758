/* Output length prediction from history (RhymeRL's HistoPipe: the lengths earlier responses had
 * say how long the next one will be). The scheduler asks it for each new request and tells it
 * each choice's real length when the choice ends; it orders admission by the answer and /metrics
 * shows how wrong it was.
 *
 * The history is three direct-mapped tables of running means of output length, from the most
 * specific key to the least: the same prompt (its token hash, with the client, reasoning mode and
 * max_tokens bucket); the same client (API key tenant and `user`) with the same mode and bucket;
 * any request of the mode and bucket (the model and its template are the engine's own). A
 * request is predicted from the most specific table that has seen its key; with no history at
 * all, from a prior of HS_LENGTHPRED_PRIOR_TOKENS. ignore_eos makes the length max_tokens
 * exactly, and no prediction exceeds max_tokens. Memory is fixed at create (a slot is 16
 * bytes; a new key takes over its slot), so the history forgets instead of growing.
 *
 * Thread: one predictor belongs to one engine thread; nothing here locks. */
#ifndef HS_SERVER_LENGTHPRED_H
#define HS_SERVER_LENGTHPRED_H

#include <stdbool.h>
#include <stdint.h>

#include "common/common.h"

#define HS_LENGTHPRED_PRIOR_TOKENS  256 /* the guess before any history */
#define HS_LENGTHPRED_DEFAULT_SLOTS 4096

/* Where a prediction came from. */
enum hs_lengthpred_source {
    HS_LENGTHPRED_EXACT,  /* ignore_eos: max_tokens */
    HS_LENGTHPRED_PROMPT, /* the same prompt before */
    HS_LENGTHPRED_CLIENT, /* the same client, mode and max_tokens bucket */
    HS_LENGTHPRED_MODE,   /* any request of the mode and max_tokens bucket */
    HS_LENGTHPRED_PRIOR,  /* no history */
    HS_LENGTHPRED_SOURCE_COUNT,
};
/* "exact", "prompt", "client", "mode", "prior"; "?" out of range. Thread: any. */
const char *hs_lengthpred_source_str(enum hs_lengthpred_source s);

/* The reasoning mode of a request, as far as its length goes. */
enum hs_lengthpred_mode {
    HS_LENGTHPRED_MODE_PLAIN,    /* no thinking block */
    HS_LENGTHPRED_MODE_THINK,    /* thinking, unbounded */
    HS_LENGTHPRED_MODE_BUDGETED, /* thinking with a token budget */
    HS_LENGTHPRED_MODE_COUNT,
};

/* What a prediction is keyed on. */
struct hs_lengthpred_key {
    uint64_t prompt_hash; /* hs_lengthpred_hash_tokens of the prompt */
    uint64_t client;      /* who asks (a hash of tenant and user); 0: anonymous */
    enum hs_lengthpred_mode mode;
    int32_t budget_tokens; /* MODE_BUDGETED: the thinking budget */
    int32_t max_tokens;    /* the request's cap (>= 1) */
    bool ignore_eos;       /* generation runs to max_tokens */
};

struct hs_lengthpred;

/* A predictor with n_slots slots per table (<= 0: HS_LENGTHPRED_DEFAULT_SLOTS; rounded up to a
 * power of two, at most 1 << 20). HS_E_NOMEM. Returns new (free with hs_lengthpred_destroy). */
hs_status hs_lengthpred_create(int32_t n_slots, struct hs_lengthpred **out);
/* NULL: no-op. */
void hs_lengthpred_destroy(struct hs_lengthpred *p);

/* FNV-1a over n token ids. Thread: any. */
uint64_t hs_lengthpred_hash_tokens(const hs_token *t, int32_t n);

/* The predicted output length in tokens, in [1, k->max_tokens]; *source (may be NULL) says
 * which history gave it. */
int32_t hs_lengthpred_predict(const struct hs_lengthpred *p, const struct hs_lengthpred_key *k,
                              enum hs_lengthpred_source *source);

/* Learns that a request keyed k produced n_tokens (a choice that ended on its own or at its
 * cap; canceled ones teach nothing). n_tokens < 1 counts as 1. */
void hs_lengthpred_record(struct hs_lengthpred *p, const struct hs_lengthpred_key *k,
                          int32_t n_tokens);

/* Bytes the predictor holds (fixed at create). */
size_t hs_lengthpred_bytes(const struct hs_lengthpred *p);

#endif
