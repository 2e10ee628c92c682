/* SPDX-License-Identifier: MIT */
/* Tests of a plan's work arena (src/arena.c). */
#include <check.h>

#include "unit.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"

/* Buffers from the mapping: 64-byte aligned, zero, disjoint, inside it;
 * what does not fit comes from calloc; trimming keeps every buffer. */
START_TEST(test_arena_carve)
{
	struct spardl_arena a;
	uint8_t *b[6];
	static const size_t len[6] = { 1, 100, 4096, 3u << 20, 1, (8u << 20) };
	size_t i, j;

	spardl_arena_open(&a, 4u << 20);
	for (i = 0; i < 6; i++) {
		b[i] = spardl_arena_alloc(&a, len[i]);
		ck_assert_ptr_nonnull(b[i]);
		for (j = 0; j < len[i] && b[i][j] == 0; j++)
			;
		ck_assert_msg(j == len[i], "buffer %zu byte %zu not zero", i, j);
		memset(b[i], (int)(0x11 * (i + 1)), len[i]);
	}
	if (a.base) {
		/* The first five fit in 4 MiB; the sixth (8 MiB) does not. */
		ck_assert_uint_eq((uintptr_t)a.base % (2u << 20), 0);
		for (i = 0; i < 5; i++) {
			ck_assert_uint_eq((uintptr_t)b[i] % 64, 0);
			ck_assert(b[i] >= a.base && b[i] + len[i] <= a.base + a.len);
		}
		ck_assert(b[5] < a.base || b[5] >= a.base + a.len);
		spardl_arena_trim(&a);
		ck_assert_uint_ge(a.len, a.used);
		ck_assert_uint_eq(a.len % (2u << 20), 0);
	}
	/* Nothing overlapped: every buffer still holds its own byte. */
	for (i = 0; i < 6; i++)
		for (j = 0; j < len[i]; j += 997)
			ck_assert_uint_eq(b[i][j], (uint8_t)(0x11 * (i + 1)));
	for (i = 0; i < 6; i++)
		spardl_arena_free(&a, b[i]);
	spardl_arena_close(&a);
	ck_assert_ptr_null(a.base);
}
END_TEST

/* Without a mapping (no arena, or a zero reserve) every buffer is a
 * calloc'd one, freed by spardl_arena_free. */
START_TEST(test_arena_calloc)
{
	struct spardl_arena a;
	uint8_t *p, *q;

	spardl_arena_open(&a, 0);
	ck_assert_ptr_null(a.base);
	p = spardl_arena_alloc(&a, 1000);
	q = spardl_arena_alloc(NULL, 0);
	ck_assert_ptr_nonnull(p);
	ck_assert_ptr_nonnull(q);
	ck_assert_uint_eq(p[999], 0);
	spardl_arena_free(&a, p);
	spardl_arena_free(NULL, q);
	spardl_arena_free(&a, NULL);
	spardl_arena_trim(&a);
	spardl_arena_close(&a);
}
END_TEST

static Suite *arena_suite(void)
{
	Suite *s = suite_create("arena");
	TCase *tc = tcase_create("arena");

	tcase_add_test(tc, test_arena_carve);
	tcase_add_test(tc, test_arena_calloc);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return run_unit_suite(arena_suite());
}
