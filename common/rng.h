/* Small deterministic PRNG (xoshiro256**, seeded with splitmix64): same seed, same stream. */
#ifndef HS_COMMON_RNG_H
#define HS_COMMON_RNG_H

#include <stdint.h>

struct hs_rng {
    uint64_t s[4];
};

void hs_rng_seed(struct hs_rng *rng, uint64_t seed);
uint64_t hs_rng_next(struct hs_rng *rng);
/* Uniform in [0, 1). */
double hs_rng_uniform(struct hs_rng *rng);
/* Uniform float in [lo, hi). */
float hs_rng_range(struct hs_rng *rng, float lo, float hi);
/* Standard normal (Box-Muller). */
double hs_rng_normal(struct hs_rng *rng);

#endif
