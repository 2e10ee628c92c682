/* SPDX-License-Identifier: MIT */
/* Tests of the wire layout of sparse blocks and of the k-way list merge. */
#include <check.h>

#include "unit.h"
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lists.h"
#include "wire.h"

/* ---- wire ---- */

START_TEST(test_wire_bytes)
{
	ck_assert_uint_eq(SPARDL_WIRE_HDR, 8);
	ck_assert_uint_eq(spardl_wire_bytes(0), 8);
	ck_assert_uint_eq(spardl_wire_bytes(1), 16);
	ck_assert_uint_eq(spardl_wire_bytes(3), 32);
	ck_assert_uint_eq(spardl_wire_bytes(1000), 8008);
}
END_TEST

/* put then view gives back the block, the layout is {id, count, idx[], val[]}. */
START_TEST(test_wire_round_trip)
{
	static const uint32_t idx[5] = { 0, 3, 17, 4096, 0xfffffffeu };
	float val[5];
	uint64_t storage[16];
	uint8_t *buf = (uint8_t *)storage;
	struct spardl_list in = { 0 }, out;
	uint32_t h[2], w;
	size_t bytes, i;

	val[0] = 1.5f;
	val[1] = -0.0f;
	val[2] = NAN;
	val[3] = -INFINITY;
	val[4] = from_bits(1u); /* a denormal */
	memset(storage, 0xa5, sizeof(storage));
	in.block = 7;
	in.count = 5;
	in.idx = idx;
	in.val = val;
	bytes = spardl_wire_put(buf, &in);
	ck_assert_uint_eq(bytes, 8 + 5 * 8);
	ck_assert_uint_eq(bytes, spardl_wire_bytes(5));
	/* The bytes after the block are untouched. */
	for (i = bytes; i < sizeof(storage); i++)
		ck_assert_uint_eq(buf[i], 0xa5);
	/* Layout, read independently of the decoder. */
	memcpy(h, buf, 8);
	ck_assert_uint_eq(h[0], 7);
	ck_assert_uint_eq(h[1], 5);
	for (i = 0; i < 5; i++) {
		memcpy(&w, buf + 8 + 4 * i, 4);
		ck_assert_uint_eq(w, idx[i]);
		memcpy(&w, buf + 8 + 20 + 4 * i, 4);
		ck_assert_uint_eq(w, bits(val[i]));
	}

	ck_assert_int_eq(spardl_wire_view(buf, bytes, 5, &out), 0);
	ck_assert_uint_eq(out.block, 7);
	ck_assert_uint_eq(out.count, 5);
	/* A view, not a copy. */
	ck_assert_ptr_eq(out.idx, (const void *)(buf + 8));
	ck_assert_ptr_eq(out.val, (const void *)(buf + 8 + 20));
	for (i = 0; i < 5; i++) {
		ck_assert_uint_eq(out.idx[i], idx[i]);
		ck_assert_uint_eq(bits(out.val[i]), bits(val[i]));
	}
	/* More room than needed and a larger max are fine. */
	ck_assert_int_eq(spardl_wire_view(buf, sizeof(storage), 1000, &out), 0);
	ck_assert_uint_eq(out.count, 5);
	ck_assert_uint_eq(spardl_wire_idx(buf)[2], 17);
	ck_assert_uint_eq(bits(spardl_wire_val(buf, 5)[3]), bits(-INFINITY));
}
END_TEST

START_TEST(test_wire_hdr_helpers)
{
	uint64_t storage[4] = { 0 };
	struct spardl_list l;

	spardl_wire_put_hdr(storage, 0xabcdef01u, 2);
	spardl_wire_idx(storage)[0] = 9;
	spardl_wire_idx(storage)[1] = 11;
	spardl_wire_val(storage, 2)[0] = 2.5f;
	spardl_wire_val(storage, 2)[1] = -1.0f;
	ck_assert_int_eq(spardl_wire_view(storage, sizeof(storage), 2, &l), 0);
	ck_assert_uint_eq(l.block, 0xabcdef01u);
	ck_assert_uint_eq(l.count, 2);
	ck_assert_uint_eq(l.idx[0], 9);
	ck_assert_uint_eq(l.idx[1], 11);
	ck_assert_float_eq(l.val[0], 2.5f);
	ck_assert_float_eq(l.val[1], -1.0f);
}
END_TEST

/* A zero-pair block is a header alone, 8 bytes. */
START_TEST(test_wire_zero_count)
{
	static const uint32_t no_idx[1] = { 0 };
	static const float no_val[1] = { 0 };
	uint64_t storage[2];
	uint8_t *buf = (uint8_t *)storage;
	struct spardl_list in = { 0 }, out;
	uint32_t h[2];

	memset(storage, 0x5a, sizeof(storage));
	in.block = 3;
	in.count = 0;
	in.idx = no_idx; /* not NULL: memcpy(dst, NULL, 0) is undefined */
	in.val = no_val;
	ck_assert_uint_eq(spardl_wire_put(buf, &in), 8);
	memcpy(h, buf, 8);
	ck_assert_uint_eq(h[0], 3);
	ck_assert_uint_eq(h[1], 0);
	ck_assert_uint_eq(buf[8], 0x5a);
	memset(&out, 0xff, sizeof(out));
	ck_assert_int_eq(spardl_wire_view(buf, 8, 0, &out), 0);
	ck_assert_uint_eq(out.block, 3);
	ck_assert_uint_eq(out.count, 0);
	ck_assert_int_eq(spardl_wire_view(buf, 8, 100, &out), 0);
	ck_assert_uint_eq(out.count, 0);
	/* Less than a header is not a block. */
	ck_assert_int_eq(spardl_wire_view(buf, 7, 100, &out), -1);
}
END_TEST

/* Truncated buffers: header cut, pairs cut; counts over max_count. */
START_TEST(test_wire_rejects)
{
	static const uint32_t idx[4] = { 1, 2, 3, 4 };
	static const float val[4] = { 1, 2, 3, 4 };
	uint64_t storage[8];
	uint8_t *buf = (uint8_t *)storage;
	struct spardl_list in = { 0 }, out;
	size_t len;
	uint32_t h[2];

	in.block = 1;
	in.count = 4;
	in.idx = idx;
	in.val = val;
	ck_assert_uint_eq(spardl_wire_put(buf, &in), 40);
	for (len = 0; len < 40; len++)
		ck_assert_msg(spardl_wire_view(buf, len, 4, &out) == -1, "len %zu accepted", len);
	ck_assert_int_eq(spardl_wire_view(buf, 40, 4, &out), 0);
	/* count > max_count, even with room for the pairs */
	ck_assert_int_eq(spardl_wire_view(buf, 64, 3, &out), -1);
	ck_assert_int_eq(spardl_wire_view(buf, 64, 0, &out), -1);
	ck_assert_int_eq(spardl_wire_view(buf, 64, 4, &out), 0);
	/* A corrupt count as large as a u32 gets: no overflow, rejected. */
	h[0] = 1;
	h[1] = UINT32_MAX;
	memcpy(buf, h, 8);
	ck_assert_int_eq(spardl_wire_view(buf, 64, SIZE_MAX, &out), -1);
	ck_assert_int_eq(spardl_wire_view(buf, 64, 4, &out), -1);
	h[1] = 7; /* 8 + 56 = 64: fits exactly in 64, not in 63 */
	memcpy(buf, h, 8);
	ck_assert_int_eq(spardl_wire_view(buf, 64, 7, &out), 0);
	ck_assert_int_eq(spardl_wire_view(buf, 63, 7, &out), -1);
	ck_assert_int_eq(spardl_wire_view(buf, 64, 6, &out), -1);
}
END_TEST

/* A message is a sequence of blocks; walk it back. */
START_TEST(test_wire_message)
{
	enum { NB = 6 };
	uint32_t idx[NB][8];
	float val[NB][8];
	uint32_t cnt[NB] = { 3, 0, 8, 1, 0, 5 };
	uint64_t storage[128];
	uint8_t *buf = (uint8_t *)storage;
	size_t pos = 0, total = 0, b, j;

	for (b = 0; b < NB; b++) {
		struct spardl_list l = { 0 };

		for (j = 0; j < cnt[b]; j++) {
			idx[b][j] = (uint32_t)(b * 100 + j * 3);
			val[b][j] = (float)b - 0.25f * (float)j;
		}
		l.block = (uint32_t)(10 + b);
		l.count = cnt[b];
		l.idx = idx[b];
		l.val = val[b];
		total += spardl_wire_put(buf + total, &l);
	}
	ck_assert_uint_le(total, sizeof(storage));
	for (b = 0; b < NB; b++) {
		struct spardl_list l;

		ck_assert_int_eq(spardl_wire_view(buf + pos, total - pos, 8, &l), 0);
		ck_assert_uint_eq(l.block, 10 + b);
		ck_assert_uint_eq(l.count, cnt[b]);
		for (j = 0; j < cnt[b]; j++) {
			ck_assert_uint_eq(l.idx[j], idx[b][j]);
			ck_assert_float_eq(l.val[j], val[b][j]);
		}
		pos += spardl_wire_bytes(l.count);
	}
	ck_assert_uint_eq(pos, total);
	/* Nothing left: a view of the end fails. */
	{
		struct spardl_list l;

		ck_assert_int_eq(spardl_wire_view(buf + pos, total - pos, 8, &l), -1);
	}
}
END_TEST

/* ---- merge ---- */

struct gpair {
	uint64_t g;
	uint32_t list;
	float v;
};

static int gpair_cmp(const void *pa, const void *pb)
{
	const struct gpair *a = pa, *b = pb;

	if (a->g != b->g)
		return a->g < b->g ? -1 : 1;
	return a->list < b->list ? -1 : a->list > b->list;
}

/* Reference merge: sort all pairs by (global index, list), add in that order. */
static size_t ref_merge(const struct spardl_list *lists, size_t nl, uint64_t bs, uint64_t *oidx,
			float *oval)
{
	size_t tot = 0, n = 0, i, j;
	struct gpair *all;

	for (i = 0; i < nl; i++)
		tot += lists[i].count;
	all = malloc((tot ? tot : 1) * sizeof(*all));
	ck_assert_ptr_nonnull(all);
	for (i = 0, tot = 0; i < nl; i++)
		for (j = 0; j < lists[i].count; j++, tot++) {
			all[tot].g = (uint64_t)lists[i].block * bs + lists[i].idx[j];
			all[tot].list = (uint32_t)i;
			all[tot].v = lists[i].val[j];
		}
	qsort(all, tot, sizeof(*all), gpair_cmp);
	for (i = 0; i < tot; i++) {
		if (n && oidx[n - 1] == all[i].g) {
			oval[n - 1] += all[i].v;
		} else {
			oidx[n] = all[i].g;
			oval[n] = all[i].v;
			n++;
		}
	}
	free(all);
	return n;
}

/* Merge with the library and compare with the reference, bit for bit. */
static size_t check_merge(const struct spardl_list *lists, size_t nl, uint64_t bs, const char *what)
{
	size_t tot = 0, i, n, rn;
	uint64_t *oidx, *ridx;
	float *oval, *rval;
	struct spardl_merge_heap *heap = malloc((nl ? nl : 1) * sizeof(*heap));

	for (i = 0; i < nl; i++)
		tot += lists[i].count;
	oidx = malloc((tot + 4) * sizeof(*oidx));
	oval = malloc((tot + 4) * sizeof(*oval));
	ridx = malloc((tot + 1) * sizeof(*ridx));
	rval = malloc((tot + 1) * sizeof(*rval));
	ck_assert(heap && oidx && oval && ridx && rval);
	for (i = 0; i < tot + 4; i++) {
		oidx[i] = 0xdeadbeefdeadbeefull;
		oval[i] = 12345.0f;
	}
	n = spardl_lists_merge(lists, nl, bs, heap, oidx, oval);
	rn = ref_merge(lists, nl, bs, ridx, rval);
	ck_assert_msg(n == rn, "%s: merged %zu pairs, expected %zu", what, n, rn);
	for (i = 0; i < n; i++) {
		if (oidx[i] != ridx[i] || bits(oval[i]) != bits(rval[i]))
			ck_abort_msg("%s: pair %zu is (%llu, %a), expected (%llu, %a)", what, i,
				     (unsigned long long)oidx[i], (double)oval[i], (unsigned long long)ridx[i],
				     (double)rval[i]);
		if (i && oidx[i - 1] >= oidx[i])
			ck_abort_msg("%s: indices not strictly ascending at %zu", what, i);
	}
	/* The output may serve as scratch up to the counts' sum (a merge in
	 * parts), never past it. */
	for (i = tot; i < tot + 4; i++)
		if (oidx[i] != 0xdeadbeefdeadbeefull)
			ck_abort_msg("%s: written past the counts' sum at %zu", what, i);
	free(heap);
	free(oidx);
	free(oval);
	free(ridx);
	free(rval);
	return n;
}

START_TEST(test_merge_one)
{
	static const uint32_t idx[4] = { 0, 2, 5, 9 };
	static const float val[4] = { 1, -2, 3, -4 };
	struct spardl_list l = { 3, 4, idx, val };
	struct spardl_merge_heap heap[1];
	uint64_t oidx[4];
	float oval[4];
	size_t i;

	ck_assert_uint_eq(spardl_lists_merge(&l, 1, 10, heap, oidx, oval), 4);
	for (i = 0; i < 4; i++) {
		ck_assert_uint_eq(oidx[i], 30 + idx[i]);
		ck_assert_float_eq(oval[i], val[i]);
	}
	check_merge(&l, 1, 10, "one list");
	check_merge(&l, 1, 1000000007ull, "one list, large block size");
}
END_TEST

START_TEST(test_merge_two)
{
	static const uint32_t ia[4] = { 1, 4, 6, 8 }, ib[3] = { 0, 4, 8 };
	static const float va[4] = { 1, 2, 3, 4 }, vb[3] = { 10, 20, 30 };
	struct spardl_list l[2] = { { 5, 4, ia, va }, { 5, 3, ib, vb } };
	struct spardl_merge_heap heap[2];
	uint64_t oidx[7];
	float oval[7];
	static const uint64_t ei[5] = { 50, 51, 54, 56, 58 };
	static const float ev[5] = { 10, 1, 22, 3, 34 };
	size_t i;

	ck_assert_uint_eq(spardl_lists_merge(l, 2, 10, heap, oidx, oval), 5);
	for (i = 0; i < 5; i++) {
		ck_assert_uint_eq(oidx[i], ei[i]);
		ck_assert_float_eq(oval[i], ev[i]);
	}
	check_merge(l, 2, 10, "two lists, same block");
	/* Two lists of different blocks, both orders. */
	l[1].block = 2;
	check_merge(l, 2, 10, "two lists, blocks 5 then 2");
	l[1].block = 7;
	check_merge(l, 2, 10, "two lists, blocks 5 then 7");
	/* One of them empty. */
	l[1].block = 5;
	l[1].count = 0;
	ck_assert_uint_eq(check_merge(l, 2, 10, "two lists, second empty"), 4);
	l[0].count = 0;
	l[1].count = 3;
	ck_assert_uint_eq(check_merge(l, 2, 10, "two lists, first empty"), 3);
}
END_TEST

/* Values are added in list order: 1e8 + 1 - 1e8 is 0 in float, 1e8 - 1e8 + 1 is 1. */
START_TEST(test_merge_order)
{
	static const uint32_t i0[1] = { 4 };
	static const float big[1] = { 1e8f }, one[1] = { 1.0f }, nbig[1] = { -1e8f };
	struct spardl_merge_heap heap[4];
	uint64_t oidx[4];
	float oval[4];
	struct spardl_list l[3];
	size_t n;

	l[0] = (struct spardl_list){ 2, 1, i0, big };
	l[1] = (struct spardl_list){ 2, 1, i0, one };
	l[2] = (struct spardl_list){ 2, 1, i0, nbig };
	n = spardl_lists_merge(l, 3, 8, heap, oidx, oval);
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(oidx[0], 20);
	ck_assert_msg(oval[0] == 0.0f, "1e8 + 1 - 1e8 gave %a", (double)oval[0]);

	l[1].val = nbig;
	l[2].val = one;
	n = spardl_lists_merge(l, 3, 8, heap, oidx, oval);
	ck_assert_uint_eq(n, 1);
	ck_assert_msg(oval[0] == 1.0f, "1e8 - 1e8 + 1 gave %a", (double)oval[0]);

	/* The same with the order starting at the small value. */
	l[0].val = one;
	l[1].val = big;
	l[2].val = nbig;
	n = spardl_lists_merge(l, 3, 8, heap, oidx, oval);
	ck_assert_msg(n == 1 && oval[0] == 0.0f, "1 + 1e8 - 1e8 gave %a", (double)oval[0]);

	/* Four lists (float spacing at 1e8 is 8; ties round to even):
	 * ((1e8 + 4) + 4) - 1e8 = 0, ((4 + 4) + 1e8) - 1e8 = 8. */
	{
		static const float four[1] = { 4.0f };
		struct spardl_list m4[4];

		m4[0] = (struct spardl_list){ 0, 1, i0, big };
		m4[1] = (struct spardl_list){ 0, 1, i0, four };
		m4[2] = (struct spardl_list){ 0, 1, i0, four };
		m4[3] = (struct spardl_list){ 0, 1, i0, nbig };
		n = spardl_lists_merge(m4, 4, 8, heap, oidx, oval);
		ck_assert_msg(n == 1 && oval[0] == 0.0f, "((1e8 + 4) + 4) - 1e8 gave %a", (double)oval[0]);
		m4[0].val = four;
		m4[2].val = big;
		n = spardl_lists_merge(m4, 4, 8, heap, oidx, oval);
		ck_assert_msg(n == 1 && oval[0] == 8.0f, "((4 + 4) + 1e8) - 1e8 gave %a", (double)oval[0]);
	}
}
END_TEST

/* Lists of distinct blocks in ascending order are concatenated. */
START_TEST(test_merge_concat)
{
	static const uint32_t ia[3] = { 0, 5, 9 }, ib[2] = { 1, 2 }, ic[4] = { 0, 3, 7, 9 };
	static const float va[3] = { 1, 2, 3 }, vb[2] = { 4, 5 }, vc[4] = { 6, 7, 8, 9 };
	struct spardl_list l[4] = { { 0, 3, ia, va }, { 1, 2, ib, vb }, { 2, 0, NULL, NULL }, { 3, 4, ic, vc } };
	struct spardl_merge_heap heap[4];
	uint64_t oidx[9];
	float oval[9];
	static const uint64_t ei[9] = { 0, 5, 9, 11, 12, 30, 33, 37, 39 };
	size_t i, n;

	n = spardl_lists_merge(l, 4, 10, heap, oidx, oval);
	ck_assert_uint_eq(n, 9);
	for (i = 0; i < 9; i++) {
		ck_assert_uint_eq(oidx[i], ei[i]);
		ck_assert_float_eq(oval[i], (float)(i + 1));
	}
	check_merge(l, 4, 10, "concatenation");
	/* Reversed block order still gives a sorted result. */
	{
		struct spardl_list r[4] = { l[3], l[2], l[1], l[0] };

		check_merge(r, 4, 10, "blocks descending");
	}
	/* A repeated block in the middle. */
	{
		struct spardl_list r[4] = { l[0], l[1], l[1], l[3] };

		check_merge(r, 4, 10, "block 1 twice");
	}
}
END_TEST

START_TEST(test_merge_empty)
{
	struct spardl_merge_heap heap[5];
	uint64_t oidx[1] = { 77 };
	float oval[1] = { 7 };
	struct spardl_list l[5] = { { 0 } };
	size_t i;

	ck_assert_uint_eq(spardl_lists_merge(l, 0, 10, heap, oidx, oval), 0);
	for (i = 0; i < 5; i++)
		l[i] = (struct spardl_list){ (uint32_t)(i % 2), 0, NULL, NULL };
	ck_assert_uint_eq(spardl_lists_merge(l, 5, 10, heap, oidx, oval), 0);
	ck_assert_uint_eq(spardl_lists_merge(l, 2, 10, heap, oidx, oval), 0);
	ck_assert_uint_eq(spardl_lists_merge(l, 1, 10, heap, oidx, oval), 0);
	l[1].block = 0;
	ck_assert_uint_eq(spardl_lists_merge(l, 2, 10, heap, oidx, oval), 0);
	ck_assert_uint_eq(oidx[0], 77);
}
END_TEST

/* Many random lists: same block, mixed blocks, with empty ones. */
/* Two long lists of one block, merged in parts side by side: shared
 * indices none, some or most, and counts summing past the block (one
 * part), against the reference. */
START_TEST(test_merge_two_long)
{
	enum { BS = 60000 };
	static uint32_t ia[BS], ib[BS];
	static float va[BS], vb[BS];
	static const unsigned pa[] = { 10, 25, 60, 90 }, pb[] = { 8, 20, 60, 95 };
	struct spardl_list l[2];
	size_t t, j;
	char what[64];

	rng_seed(777);
	for (t = 0; t < sizeof(pa) / sizeof(pa[0]); t++) {
		uint32_t ca = 0, cb = 0;

		for (j = 0; j < BS; j++) {
			if (rng_next() % 100 < pa[t]) {
				ia[ca] = (uint32_t)j;
				va[ca++] = (float)((int)(rng_next() % 2001) - 1000);
			}
			if (rng_next() % 100 < pb[t]) {
				ib[cb] = (uint32_t)j;
				vb[cb++] = (float)((double)(rng_next() % 2000001) / 1000.0 - 1000.0);
			}
		}
		l[0] = (struct spardl_list){ 3, ca, ia, va };
		l[1] = (struct spardl_list){ 3, cb, ib, vb };
		snprintf(what, sizeof(what), "two long lists, %u and %u entries", ca, cb);
		check_merge(l, 2, BS, what);
		l[0].block = l[1].block = 0;
		check_merge(l, 2, BS, what);
	}
}
END_TEST

START_TEST(test_merge_random)
{
	enum { MAXL = 24, MAXC = 300 };
	static uint32_t idx[MAXL][MAXC];
	static float val[MAXL][MAXC];
	struct spardl_list l[MAXL];
	int round;

	rng_seed(12345);
	for (round = 0; round < 400; round++) {
		size_t nl = 1 + (size_t)(rng_next() % MAXL), i;
		uint64_t bs = 1 + rng_next() % 700;
		int mode = round % 4; /* 0 same block, 1 mixed, 2 ascending distinct, 3 few blocks */
		char what[96];

		for (i = 0; i < nl; i++) {
			uint32_t c = 0, j;
			double dens = (double)(rng_next() % 101) / 100.0;

			for (j = 0; j < bs && c < MAXC; j++) {
				if ((double)(rng_next() % 1000) / 1000.0 >= dens)
					continue;
				idx[i][c] = j;
				switch (rng_next() % 4) {
				case 0:
					val[i][c] = 1e8f;
					break;
				case 1:
					val[i][c] = -1e8f;
					break;
				case 2:
					val[i][c] = 1.0f;
					break;
				default:
					val[i][c] = (float)((double)(rng_next() % 2000001) / 1000.0 - 1000.0);
				}
				c++;
			}
			if (rng_next() % 8 == 0)
				c = 0;
			l[i].count = c;
			l[i].idx = idx[i];
			l[i].val = val[i];
			switch (mode) {
			case 0:
				l[i].block = 3;
				break;
			case 1:
				l[i].block = (uint32_t)(rng_next() % 40);
				break;
			case 2:
				l[i].block = (uint32_t)(i * 2 + 1);
				break;
			default:
				l[i].block = (uint32_t)(rng_next() % 3);
			}
		}
		snprintf(what, sizeof(what), "round %d (%zu lists, block size %llu, mode %d)", round, nl,
			 (unsigned long long)bs, mode);
		check_merge(l, nl, bs, what);
	}
}
END_TEST

/* A value for the vector merge test: mostly ordinary, sometimes a NaN
 * (quiet or signaling, with a payload), a zero of either sign or an
 * infinity, so that sums at shared indices meet every special case. */
static float vec_value(void)
{
	switch (rng_next() % 16) {
	case 0:
		return from_bits(0x7fc00000u | (uint32_t)(rng_next() & 0x3fffff));
	case 1:
		return from_bits(0xff800001u | (uint32_t)(rng_next() & 0x3ffffe));
	case 2:
		return -0.0f;
	case 3:
		return 0.0f;
	case 4:
		return (rng_next() & 1) ? INFINITY : -INFINITY;
	case 5:
		return (rng_next() & 1) ? 1e8f : -1e8f;
	default:
		return (float)((double)(rng_next() % 2000001) / 1000.0 - 1000.0);
	}
}

/* count sorted distinct indices from lo on: density per 1000, or (dens 0)
 * the same set as ref (an index in both lists everywhere). */
static uint32_t vec_list(uint32_t *idx, float *val, uint32_t cap, uint64_t lo, uint64_t range, unsigned dens,
			 const uint32_t *same, uint32_t nsame)
{
	uint32_t c = 0;
	uint64_t j;

	if (same) {
		for (c = 0; c < nsame && c < cap; c++) {
			idx[c] = same[c];
			val[c] = vec_value();
		}
		return c;
	}
	for (j = 0; j < range && c < cap; j++)
		if (rng_next() % 1000 < dens) {
			idx[c] = (uint32_t)(lo + j);
			val[c++] = vec_value();
		}
	return c;
}

/* The vector merge (AVX-512, spardl_lists_isa 2) against the scalar one
 * (0), bit for bit, for unions and for two-list merges: short and long
 * lists, sparse and dense overlap, the same index set on both sides, one
 * side far longer, NaN payloads and signed zeros at shared indices, and
 * indices at the top of the 32-bit range (where the vector merge must
 * leave the work to the scalar one). Neither may write past its output's
 * capacity. On a CPU without AVX-512 both runs are scalar; the sums are
 * still checked against the reference for lists without NaNs. */
START_TEST(test_merge_vector)
{
	enum { CAP = 6000 };
	static uint32_t ia[CAP], ib[CAP], u32[2][2 * CAP + 4];
	static float va[CAP], vb[CAP], uv[2][2 * CAP + 4], mv[2][2 * CAP + 4];
	static uint64_t m64[2][2 * CAP + 4];
	struct spardl_merge_heap heap[2];
	int saved = spardl_lists_isa, round;

	rng_seed(4242);
	for (round = 0; round < 3000; round++) {
		int mode = round % 6, w;
		uint64_t range = mode == 0 ? 1 + rng_next() % 64 : 64 + rng_next() % 8000;
		uint64_t lo = round % 7 == 3 ? 0x7fffffffull - range / 2 : round % 7 == 5 ? 0xffffffffull - range : 0;
		unsigned da = 1 + (unsigned)(rng_next() % 1000), db = 1 + (unsigned)(rng_next() % 1000);
		uint32_t na, nb, block = (uint32_t)(rng_next() % 4);
		uint64_t bs = lo + range, cap;
		size_t n[2], nm[2], i;
		struct spardl_list l[2];
		char what[128];

		if (mode == 3)
			db = 1 + da / 20; /* one side far longer */
		na = vec_list(ia, va, CAP, lo, range, da, NULL, 0);
		nb = mode == 4 ? vec_list(ib, vb, CAP, lo, range, 0, ia, na) : vec_list(ib, vb, CAP, lo, range, db, NULL, 0);
		cap = (uint64_t)na + nb < bs ? (uint64_t)na + nb : bs;
		snprintf(what, sizeof(what), "round %d: %u and %u entries from %llu over %llu", round, na, nb,
			 (unsigned long long)lo, (unsigned long long)range);
		for (w = 0; w < 2; w++) {
			spardl_lists_isa = w ? 2 : 0;
			for (i = 0; i < 2 * CAP + 4; i++) {
				u32[w][i] = 0xdeadbeefu;
				uv[w][i] = mv[w][i] = 12345.0f;
				m64[w][i] = 0xdeadbeefdeadbeefull;
			}
			n[w] = spardl_union(ia, va, na, ib, vb, nb, u32[w], uv[w]);
			l[0] = (struct spardl_list){ block, na, ia, va };
			l[1] = (struct spardl_list){ block, nb, ib, vb };
			nm[w] = spardl_lists_merge(l, 2, bs, heap, m64[w], mv[w]);
			for (i = na + nb; i < (size_t)na + nb + 4; i++)
				if (u32[w][i] != 0xdeadbeefu || bits(uv[w][i]) != bits(12345.0f))
					ck_abort_msg("%s: union written past its %u pairs (isa %d)", what, na + nb, w ? 2 : 0);
			for (i = cap; i < cap + 4; i++)
				if (m64[w][i] != 0xdeadbeefdeadbeefull || bits(mv[w][i]) != bits(12345.0f))
					ck_abort_msg("%s: merge written past its %llu pairs (isa %d)", what,
						     (unsigned long long)cap, w ? 2 : 0);
		}
		spardl_lists_isa = saved;
		ck_assert_msg(n[0] == n[1], "%s: union of %zu pairs, scalar %zu", what, n[1], n[0]);
		ck_assert_msg(nm[0] == nm[1], "%s: merge of %zu pairs, scalar %zu", what, nm[1], nm[0]);
		for (i = 0; i < n[0]; i++)
			if (u32[0][i] != u32[1][i] || bits(uv[0][i]) != bits(uv[1][i]))
				ck_abort_msg("%s: union pair %zu is (%u, %08x), scalar (%u, %08x)", what, i, u32[1][i],
					     bits(uv[1][i]), u32[0][i], bits(uv[0][i]));
		for (i = 0; i < nm[0]; i++)
			if (m64[0][i] != m64[1][i] || bits(mv[0][i]) != bits(mv[1][i]))
				ck_abort_msg("%s: merge pair %zu is (%llu, %08x), scalar (%llu, %08x)", what, i,
					     (unsigned long long)m64[1][i], bits(mv[1][i]), (unsigned long long)m64[0][i],
					     bits(mv[0][i]));
	}
	/* And against the reference, on values without NaNs. */
	for (round = 0; round < 200; round++) {
		uint64_t range = 64 + rng_next() % 8000;
		uint32_t na = 0, nb = 0;
		struct spardl_list l[2];
		uint64_t j;
		char what[64];

		for (j = 0; j < range; j++) {
			if (rng_next() % 1000 < 300) {
				ia[na] = (uint32_t)j;
				va[na++] = (float)((double)(rng_next() % 2000001) / 1000.0 - 1000.0);
			}
			if (rng_next() % 1000 < 300) {
				ib[nb] = (uint32_t)j;
				vb[nb++] = (rng_next() & 1) ? 1e8f : 1.0f;
			}
		}
		l[0] = (struct spardl_list){ 1, na, ia, va };
		l[1] = (struct spardl_list){ 1, nb, ib, vb };
		snprintf(what, sizeof(what), "reference round %d", round);
		check_merge(l, 2, range, what);
	}
}
END_TEST

/* The reference itself agrees with hand-computed sums. */
START_TEST(test_reference_merge)
{
	static const uint32_t i0[2] = { 1, 2 }, i1[1] = { 2 };
	static const float v0[2] = { 1e8f, 5 }, v1[1] = { 1 };
	struct spardl_list l[3] = { { 0, 2, i0, v0 }, { 0, 1, i1, v1 }, { 0, 2, i0, v0 } };
	uint64_t oidx[5];
	float oval[5];

	ck_assert_uint_eq(ref_merge(l, 3, 4, oidx, oval), 2);
	ck_assert_uint_eq(oidx[0], 1);
	ck_assert_float_eq(oval[0], 2e8f);
	ck_assert_uint_eq(oidx[1], 2);
	ck_assert_float_eq(oval[1], 11.0f);
}
END_TEST

static Suite *wire_suite(void)
{
	Suite *s = suite_create("wire");
	TCase *tc = tcase_create("wire");
	TCase *tm = tcase_create("merge");

	tcase_add_test(tc, test_wire_bytes);
	tcase_add_test(tc, test_wire_round_trip);
	tcase_add_test(tc, test_wire_hdr_helpers);
	tcase_add_test(tc, test_wire_zero_count);
	tcase_add_test(tc, test_wire_rejects);
	tcase_add_test(tc, test_wire_message);
	suite_add_tcase(s, tc);

	tcase_set_timeout(tm, 60);
	tcase_add_test(tm, test_reference_merge);
	tcase_add_test(tm, test_merge_one);
	tcase_add_test(tm, test_merge_two);
	tcase_add_test(tm, test_merge_two_long);
	tcase_add_test(tm, test_merge_order);
	tcase_add_test(tm, test_merge_concat);
	tcase_add_test(tm, test_merge_empty);
	tcase_add_test(tm, test_merge_random);
	tcase_add_test(tm, test_merge_vector);
	suite_add_tcase(s, tm);
	return s;
}

int main(void)
{
	return run_unit_suite(wire_suite());
}
