#include "gm_rng.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void gm_rng_seed(gm_rng *rng, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        rng->s[i] = splitmix64(&seed);
}

uint64_t gm_rng_next(gm_rng *rng)
{
    uint64_t *s = rng->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float gm_rng_uniform(gm_rng *rng)
{
    return (float)(gm_rng_next(rng) >> 40) * (1.0f / 16777216.0f);
}

uint32_t gm_rng_below(gm_rng *rng, uint32_t n)
{
    /* Lemire's multiply-shift; the tiny bias is irrelevant for shuffling data. */
    return (uint32_t)(((gm_rng_next(rng) >> 32) * (uint64_t)n) >> 32);
}

float gm_rng_normal(gm_rng *rng)
{
    double u1 = ((double)(gm_rng_next(rng) >> 11) + 1.0) * (1.0 / 9007199254740993.0);
    double u2 = (double)(gm_rng_next(rng) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}
