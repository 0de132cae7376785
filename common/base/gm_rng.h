/*
 * gm_rng: a small seeded random generator (xoshiro256**, seeded by splitmix64).
 *
 * The state is a plain value owned by whoever needs randomness (a net's dropout,
 * an initialiser, a data shuffler), so runs are reproducible and nothing is global.
 */
#ifndef GM_RNG_H
#define GM_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t s[4];
} gm_rng;

void gm_rng_seed(gm_rng *rng, uint64_t seed);
uint64_t gm_rng_next(gm_rng *rng);
/* Uniform in [0, 1) with 24 random bits, so every value is an exact float. */
float gm_rng_uniform(gm_rng *rng);
/* Uniform integer in [0, n); n > 0. */
uint32_t gm_rng_below(gm_rng *rng, uint32_t n);
/* Standard normal (Box-Muller). */
float gm_rng_normal(gm_rng *rng);

#endif
