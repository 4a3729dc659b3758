/* Output length prediction from history (server/lengthpred.h). */
#include "server/lengthpred.h"

#include <stdlib.h>

enum { LEVEL_PROMPT, LEVEL_CLIENT, LEVEL_MODE, N_LEVELS };

/* A running mean of the lengths seen under one key: exact for the first EWMA_AFTER samples,
 * then an exponential average, so that a key's history follows a drift in its lengths. */
struct slot {
    uint64_t tag; /* the key's hash; 0: empty */
    float mean;
    uint32_t n;
};

#define EWMA_AFTER 8

struct hs_lengthpred {
    uint32_t mask; /* slots per table - 1 */
    struct slot *t[N_LEVELS];
};

const char *hs_lengthpred_source_str(enum hs_lengthpred_source s)
{
    static const char *const names[HS_LENGTHPRED_SOURCE_COUNT] = {"exact", "prompt", "client",
                                                                  "mode", "prior"};
    return s >= 0 && s < HS_LENGTHPRED_SOURCE_COUNT ? names[s] : "?";
}

hs_status hs_lengthpred_create(int32_t n_slots, struct hs_lengthpred **out)
{
    *out = NULL;
    if (n_slots <= 0) {
        n_slots = HS_LENGTHPRED_DEFAULT_SLOTS;
    }
    uint32_t n = 1;
    while (n < (uint32_t)n_slots && n < (1u << 20)) {
        n <<= 1;
    }
    struct hs_lengthpred *p = calloc(1, sizeof(*p));
    if (!p) {
        return HS_E_NOMEM;
    }
    p->mask = n - 1;
    for (int l = 0; l < N_LEVELS; l++) {
        p->t[l] = calloc(n, sizeof(*p->t[l]));
        if (!p->t[l]) {
            hs_lengthpred_destroy(p);
            return HS_E_NOMEM;
        }
    }
    *out = p;
    return HS_OK;
}

void hs_lengthpred_destroy(struct hs_lengthpred *p)
{
    if (!p) {
        return;
    }
    for (int l = 0; l < N_LEVELS; l++) {
        free(p->t[l]);
    }
    free(p);
}

size_t hs_lengthpred_bytes(const struct hs_lengthpred *p)
{
    return sizeof(*p) + (size_t)N_LEVELS * ((size_t)p->mask + 1) * sizeof(struct slot);
}

uint64_t hs_lengthpred_hash_tokens(const hs_token *t, int32_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (int32_t i = 0; i < n; i++) {
        uint32_t v = (uint32_t)t[i];
        for (int b = 0; b < 4; b++) {
            h ^= (v >> (8 * b)) & 0xff;
            h *= 0x100000001b3ull;
        }
    }
    return h;
}

/* splitmix64's finaliser: spreads a combined key over the table. */
static uint64_t mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

/* ceil(log2(v)) for v >= 1: requests whose caps differ by less than a factor of two share a
 * bucket (max_tokens 8000 and 8192 are the same workload). */
static uint64_t bucket(int32_t v)
{
    uint64_t b = 0;
    while (b < 31 && (1u << b) < (uint32_t)HS_MAX(v, 1)) {
        b++;
    }
    return b;
}

static uint64_t level_tag(const struct hs_lengthpred_key *k, int level)
{
    uint64_t h = mix((uint64_t)level * 0x9e3779b97f4a7c15ull + bucket(k->max_tokens));
    h = mix(h ^ ((uint64_t)k->mode << 8) ^ (bucket(k->budget_tokens + 1) << 16));
    if (level <= LEVEL_CLIENT) {
        h = mix(h ^ k->client);
    }
    if (level == LEVEL_PROMPT) {
        h = mix(h ^ k->prompt_hash);
    }
    return h | 1; /* 0 marks an empty slot */
}

int32_t hs_lengthpred_predict(const struct hs_lengthpred *p, const struct hs_lengthpred_key *k,
                              enum hs_lengthpred_source *source)
{
    const int32_t cap = HS_MAX(k->max_tokens, 1);
    enum hs_lengthpred_source src = HS_LENGTHPRED_PRIOR;
    double v = HS_LENGTHPRED_PRIOR_TOKENS;
    if (k->ignore_eos) {
        src = HS_LENGTHPRED_EXACT;
        v = cap;
    } else {
        for (int l = 0; l < N_LEVELS; l++) {
            const uint64_t tag = level_tag(k, l);
            const struct slot *s = &p->t[l][tag & p->mask];
            if (s->tag == tag && s->n > 0) {
                src = (enum hs_lengthpred_source)(HS_LENGTHPRED_PROMPT + l);
                v = s->mean;
                break;
            }
        }
    }
    if (source) {
        *source = src;
    }
    int32_t n = v >= cap ? cap : (int32_t)(v + 0.5);
    return HS_MAX(n, 1);
}

void hs_lengthpred_record(struct hs_lengthpred *p, const struct hs_lengthpred_key *k,
                          int32_t n_tokens)
{
    const float x = (float)HS_MAX(n_tokens, 1);
    for (int l = 0; l < N_LEVELS; l++) {
        const uint64_t tag = level_tag(k, l);
        struct slot *s = &p->t[l][tag & p->mask];
        if (s->tag != tag) {
            *s = (struct slot){.tag = tag, .mean = x, .n = 1};
            continue;
        }
        s->n += s->n < UINT32_MAX;
        const float w = s->n <= EWMA_AFTER ? 1.0f / (float)s->n : 1.0f / EWMA_AFTER;
        s->mean += w * (x - s->mean);
    }
}
