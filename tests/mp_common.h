/* SPDX-License-Identifier: MIT */
/* Helpers shared by the multi-process test programs. */
#ifndef SPARDL_TESTS_MP_COMMON_H
#define SPARDL_TESTS_MP_COMMON_H

#include <stdint.h>

static inline int is_pow2(int x)
{
	return x > 0 && !(x & (x - 1));
}

/* A stateless hash: every rank can regenerate every rank's data. */
static inline uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x;
}

#endif
