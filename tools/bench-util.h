/* SPDX-License-Identifier: MIT */
/* What the benchmarks share: the clock, a data generator's random numbers,
 * medians and the allocator setting they print. */
#ifndef SPARDL_TOOLS_BENCH_UTIL_H
#define SPARDL_TOOLS_BENCH_UTIL_H

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

static inline double bench_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Sleeps for sec seconds (the whole time, across signals). */
static inline void bench_sleep(double sec)
{
	struct timespec ts = { (time_t)sec, (long)((sec - (double)(time_t)sec) * 1e9) };

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

/* xorshift64: reproducible data. */
static inline uint64_t bench_rng_next(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

/* N(0,1) floats (Box-Muller) from the xorshift state *s: realistic data for timings. */
static inline void bench_gen_normal(float *g, size_t n, uint64_t *s)
{
	size_t i;

	for (i = 0; i < n; i += 2) {
		double u1 = ((double)(bench_rng_next(s) >> 11) + 1.0) / 9007199254740993.0;
		double u2 = (double)(bench_rng_next(s) >> 11) / 9007199254740992.0;
		double r = sqrt(-2.0 * log(u1));

		g[i] = (float)(r * cos(2 * M_PI * u2));
		if (i + 1 < n)
			g[i + 1] = (float)(r * sin(2 * M_PI * u2));
	}
}

static inline int bench_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Sorts v. */
static inline double bench_median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), bench_cmp_double);
	return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* GLIBC_TUNABLES, which changes large-buffer timings 5-10x: printed with every result. */
static inline const char *bench_tunables(void)
{
	const char *t = getenv("GLIBC_TUNABLES");

	return t ? t : "(unset)";
}

#endif
