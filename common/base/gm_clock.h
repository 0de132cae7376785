/*
 * gm_clock: wall-clock time and the median of repeated timings, the one way
 * every latency and throughput in gmorph is measured.
 */
#ifndef GM_CLOCK_H
#define GM_CLOCK_H

/* Seconds on the monotonic clock. */
double gm_now_s(void);

/* Median of v[0..n) (n >= 1); sorts v in place. */
double gm_median(double *v, int n);

#endif
