/* SPDX-License-Identifier: MIT */
/* K-way merge of sorted sparse lists; values at a shared index are summed in list order. */
#include <string.h>

#include "fp.h"
#include "lists.h"

static uint64_t gkey(const struct spardl_list *l, uint32_t pos, uint64_t bs)
{
	return (uint64_t)l->block * bs + l->idx[pos];
}

/* Heap order: smaller global index first, then lower list number, which
 * fixes the order of additions at a shared index. */
static int before(const struct spardl_merge_heap *a, const struct spardl_merge_heap *b)
{
	return a->key < b->key || (a->key == b->key && a->list < b->list);
}

static void sift_down(struct spardl_merge_heap *h, size_t n, size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		struct spardl_merge_heap t;

		if (l < n && before(&h[l], &h[m]))
			m = l;
		if (r < n && before(&h[r], &h[m]))
			m = r;
		if (m == i)
			return;
		t = h[i];
		h[i] = h[m];
		h[m] = t;
		i = m;
	}
}

/* Lists of distinct blocks in ascending block order never share an index. */
static int disjoint_in_order(const struct spardl_list *lists, size_t nl)
{
	size_t i;

	for (i = 1; i < nl; i++)
		if (lists[i].block <= lists[i - 1].block)
			return 0;
	return 1;
}

/* One merge of a merge in parts: a[i..na) and b[j..nb), written from n. */
struct mpart {
	const uint32_t *a, *b;
	const float *av, *bv;
	size_t na, nb, i, j, n;
};

/* The next pair of part m, both its sides non-empty: the smaller index;
 * at an index in both, b's value (a union) or a's and b's sum in that
 * order (sum). The output takes local indices (o32) or base + them (o64).
 * Branch-free: which side comes next is data dependent, and the value is
 * chosen as bits under masks, since a conditional float load compiles to a
 * branch. */
static inline __attribute__((always_inline)) void mstep(struct mpart *m, int sum, uint64_t base, uint32_t *o32,
							uint64_t *o64, float *ov)
{
	uint32_t x = m->a[m->i], y = m->b[m->j], ua, ub, us, ma, mb;
	float va = m->av[m->i], vb = m->bv[m->j], both = sum ? spardl_add(va, vb) : vb;
	unsigned lt = x < y, gt = y < x;

	ma = 0u - lt;
	mb = 0u - gt;
	memcpy(&ua, &va, sizeof(ua));
	memcpy(&ub, &vb, sizeof(ub));
	memcpy(&us, &both, sizeof(us));
	us = (ua & ma) | (ub & mb) | (us & ~(ma | mb));
	if (o64)
		o64[m->n] = base + (lt ? x : y);
	else
		o32[m->n] = lt ? x : y;
	memcpy(&ov[m->n++], &us, sizeof(us));
	m->i += !gt;
	m->j += !lt;
}

/* Part m to its end: steps while both sides last, then the rest. */
static inline __attribute__((always_inline)) void mfinish(struct mpart *m, int sum, uint64_t base, uint32_t *o32,
							  uint64_t *o64, float *ov)
{
	while (m->i < m->na && m->j < m->nb)
		mstep(m, sum, base, o32, o64, ov);
	for (; m->i < m->na; m->i++, m->n++) {
		if (o64)
			o64[m->n] = base + m->a[m->i];
		else
			o32[m->n] = m->a[m->i];
		ov[m->n] = m->av[m->i];
	}
	for (; m->j < m->nb; m->j++, m->n++) {
		if (o64)
			o64[m->n] = base + m->b[m->j];
		else
			o32[m->n] = m->b[m->j];
		ov[m->n] = m->bv[m->j];
	}
}

/*
 * The merge of a[0..na) and b[0..nb) (ascending indices), in four parts
 * merged side by side where both lists are long: each step of one merge
 * waits on the loads its previous step chose, so a merge runs at the
 * latency of that chain, and independent ones fill its gaps. a is cut at
 * its quarters, b where its entries reach the part's first a entry, so an
 * index in both lists stays in one part. Each part is written where it
 * would start if no index were shared (the output holds na + nb pairs),
 * then moved down behind the previous one.
 */
#define PARTS 4 /* the loop below takes four steps a turn */
#define PART_MIN 4096u

static inline __attribute__((always_inline)) size_t merge_in_parts(const uint32_t *a, const float *av, size_t na,
								   const uint32_t *b, const float *bv, size_t nb,
								   int parts, int sum, uint64_t base, uint32_t *o32,
								   uint64_t *o64, float *ov)
{
	struct mpart m[PARTS];
	size_t as[PARTS + 1], bs[PARTS + 1], q, n = 0;

	if (!parts || na < PART_MIN || nb < PART_MIN) {
		m[0] = (struct mpart){ .a = a, .av = av, .na = na, .b = b, .bv = bv, .nb = nb };
		mfinish(&m[0], sum, base, o32, o64, ov);
		return m[0].n;
	}
	as[0] = bs[0] = 0;
	for (q = 1; q < PARTS; q++) {
		as[q] = q * na / PARTS;
		bs[q] = spardl_lower_bound(b, nb, a[as[q]]);
	}
	as[PARTS] = na;
	bs[PARTS] = nb;
	for (q = 0; q < PARTS; q++)
		m[q] = (struct mpart){ .a = a + as[q], .av = av + as[q], .na = as[q + 1] - as[q], .b = b + bs[q],
				       .bv = bv + bs[q], .nb = bs[q + 1] - bs[q], .n = as[q] + bs[q] };
	for (;;) {
		/* Steps every part can take with both its sides non-empty:
		 * a step takes at most one entry from each side. */
		size_t steps = SIZE_MAX, k;

		for (q = 0; q < PARTS; q++) {
			k = m[q].na - m[q].i < m[q].nb - m[q].j ? m[q].na - m[q].i : m[q].nb - m[q].j;
			steps = k < steps ? k : steps;
		}
		if (steps < 64)
			break;
		for (k = 0; k < steps; k++) {
			mstep(&m[0], sum, base, o32, o64, ov);
			mstep(&m[1], sum, base, o32, o64, ov);
			mstep(&m[2], sum, base, o32, o64, ov);
			mstep(&m[3], sum, base, o32, o64, ov);
		}
	}
	for (q = 0; q < PARTS; q++) {
		size_t at = as[q] + bs[q], len;

		mfinish(&m[q], sum, base, o32, o64, ov);
		len = m[q].n - at;
		if (at != n) {
			if (o64)
				memmove(o64 + n, o64 + at, len * sizeof(*o64));
			else
				memmove(o32 + n, o32 + at, len * sizeof(*o32));
			memmove(ov + n, ov + at, len * sizeof(*ov));
		}
		n += len;
	}
	return n;
}

size_t spardl_union(const uint32_t *a, const float *av, size_t na, const uint32_t *b, const float *bv, size_t nb,
		    uint32_t *out, float *ov)
{
	return merge_in_parts(a, av, na, b, bv, nb, 1, 0, 0, out, NULL, ov);
}

/* Two lists of one block: indices compared within the block. In parts
 * only where the output, min(the counts' sum, the block size) pairs,
 * holds the parts' placement. */
static size_t merge_two(const struct spardl_list *a, const struct spardl_list *b, uint64_t bs,
			uint64_t *restrict oidx, float *restrict oval)
{
	return merge_in_parts(a->idx, a->val, a->count, b->idx, b->val, b->count,
			      (uint64_t)a->count + b->count <= bs, 1, (uint64_t)a->block * bs, NULL, oidx, oval);
}

size_t spardl_lists_merge(const struct spardl_list *lists, size_t nl, uint64_t block_size,
			  struct spardl_merge_heap *heap, uint64_t *oidx, float *oval)
{
	size_t n = 0, hn = 0, i;

	if (nl == 2 && lists[0].block == lists[1].block)
		return merge_two(&lists[0], &lists[1], block_size, oidx, oval);
	if (disjoint_in_order(lists, nl)) {
		for (i = 0; i < nl; i++) {
			uint32_t j;

			for (j = 0; j < lists[i].count; j++, n++) {
				oidx[n] = gkey(&lists[i], j, block_size);
				oval[n] = lists[i].val[j];
			}
		}
		return n;
	}
	for (i = 0; i < nl; i++) {
		if (!lists[i].count)
			continue;
		heap[hn].key = gkey(&lists[i], 0, block_size);
		heap[hn].list = (uint32_t)i;
		heap[hn].pos = 0;
		hn++;
	}
	for (i = hn / 2; i-- > 0;)
		sift_down(heap, hn, i);
	while (hn) {
		struct spardl_merge_heap *top = &heap[0];
		const struct spardl_list *l = &lists[top->list];
		float v = l->val[top->pos];

		if (n && oidx[n - 1] == top->key) {
			oval[n - 1] = spardl_add(oval[n - 1], v);
		} else {
			oidx[n] = top->key;
			oval[n] = v;
			n++;
		}
		if (++top->pos < l->count) {
			top->key = gkey(l, top->pos, block_size);
		} else {
			heap[0] = heap[--hn];
		}
		sift_down(heap, hn, 0);
	}
	return n;
}
