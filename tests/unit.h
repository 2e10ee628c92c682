/* SPDX-License-Identifier: MIT */
/* The shared main() of the Check unit suites: TAP to stdout for meson, exit 1 on any failure. */
#ifndef SPARDL_TESTS_UNIT_H
#define SPARDL_TESTS_UNIT_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

/* Float bits, for bit-exact comparisons. */
static inline uint32_t bits(float v)
{
	uint32_t u;

	memcpy(&u, &v, sizeof(u));
	return u;
}

static inline float from_bits(uint32_t u)
{
	float v;

	memcpy(&v, &u, sizeof(v));
	return v;
}

/* splitmix64: reproducible test data. */
static uint64_t rng_state;

static inline void rng_seed(uint64_t s)
{
	rng_state = s * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e5ull;
}

static inline uint64_t rng_next(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static inline int run_unit_suite(Suite *s)
{
	SRunner *sr = srunner_create(s);
	int failed;

	/* Expected failures would flood stderr; SPARDL_DEBUG=warn shows them. */
	setenv("SPARDL_DEBUG", "none", 0);
	srunner_set_tap(sr, "-");
	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}

#endif
