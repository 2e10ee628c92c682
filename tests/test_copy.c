/* SPDX-License-Identifier: MIT */
/* Tests of the streaming copy (src/copy.c) the transports and outputs use. */
#include <check.h>

#include "unit.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "copy.h"

/* Every length class around the streaming threshold, at every alignment
 * of both ends within a line: the bytes arrive, and the bytes around the
 * destination stay as they were. */
START_TEST(test_copy_exact)
{
	static const size_t lens[] = { 0, 1, 63, 64, 4096, SPARDL_STREAM_MIN - 1, SPARDL_STREAM_MIN,
				       SPARDL_STREAM_MIN + 1, SPARDL_STREAM_MIN + 63, SPARDL_STREAM_MIN + 64,
				       2 * SPARDL_STREAM_MIN + 37 };
	const size_t len = lens[_i], room = len + 256;
	uint8_t *src = malloc(room), *dst = malloc(room), *want = malloc(room);
	size_t so, d, i;

	ck_assert(src && dst && want);
	rng_seed(77 + (uint64_t)_i);
	for (i = 0; i < room; i++)
		src[i] = (uint8_t)rng_next();
	/* Large lengths at a few offsets (each pass moves megabytes). */
	for (so = 0; so < 64; so += len >= SPARDL_STREAM_MIN ? 21 : 1) {
		for (d = 0; d < 64; d += len >= SPARDL_STREAM_MIN ? 13 : 1) {
			memset(dst, 0x5a, room);
			memset(want, 0x5a, room);
			memcpy(want + 64 + d, src + so, len);
			spardl_copy(dst + 64 + d, src + so, len);
			if (memcmp(dst, want, room) != 0) {
				for (i = 0; i < room && dst[i] == want[i]; i++)
					;
				ck_abort_msg("len %zu, source offset %zu, destination offset %zu: byte %zd differs",
					     len, so, d, (ssize_t)i - 64 - (ssize_t)d);
			}
		}
	}
	free(src);
	free(dst);
	free(want);
}
END_TEST

static Suite *copy_suite(void)
{
	Suite *s = suite_create("copy");
	TCase *tc = tcase_create("copy");

	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_copy_exact, 0, 11);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return run_unit_suite(copy_suite());
}
