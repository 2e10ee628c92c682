/* SPDX-License-Identifier: MIT */
/* Helpers shared by the multi-process test programs. */
#ifndef SPARDL_TESTS_MP_COMMON_H
#define SPARDL_TESTS_MP_COMMON_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <spardl/spardl.h>

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

/* The communicator from the launcher's environment; a test that cannot
 * have one ends here, saying why. */
static inline struct spardl_comm *mp_comm_create(void)
{
	struct spardl_comm *comm;
	int ret = spardl_comm_create(NULL, &comm);

	if (ret) {
		fprintf(stderr, "comm_create: %s: %s\n", spardl_strerror(ret), spardl_last_error());
		exit(1);
	}
	return comm;
}

/* A check that ran: counted, and reported on stderr with the rank when it
 * failed. Returns ok. */
static int mp_rank, mp_checks, mp_failures;

__attribute__((format(printf, 2, 3))) static inline int mp_check(int ok, const char *fmt, ...)
{
	va_list ap;

	mp_checks++;
	if (ok)
		return 1;
	mp_failures++;
	fprintf(stderr, "FAIL rank %d: ", mp_rank);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 0;
}

#endif
