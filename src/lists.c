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

/* First of b[0..nb) at or above v. */
static size_t lower_bound(const uint32_t *b, size_t nb, uint32_t v)
{
	size_t lo = 0, hi = nb;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (b[mid] < v)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

void spardl_merge_split(const uint32_t *a, size_t na, const uint32_t *b, size_t nb,
			size_t as[SPARDL_MERGE_PARTS + 1], size_t bs[SPARDL_MERGE_PARTS + 1])
{
	size_t q;

	as[0] = bs[0] = 0;
	for (q = 1; q < SPARDL_MERGE_PARTS; q++) {
		as[q] = q * na / SPARDL_MERGE_PARTS;
		bs[q] = as[q] < na ? lower_bound(b, nb, a[as[q]]) : nb;
	}
	as[SPARDL_MERGE_PARTS] = na;
	bs[SPARDL_MERGE_PARTS] = nb;
}

size_t spardl_merge_parts_pack(void *idx, size_t isz, float *val, const size_t as[SPARDL_MERGE_PARTS + 1],
			       const size_t bs[SPARDL_MERGE_PARTS + 1], const size_t len[SPARDL_MERGE_PARTS])
{
	size_t q, n = 0;

	for (q = 0; q < SPARDL_MERGE_PARTS; q++) {
		size_t at = as[q] + bs[q];

		if (at != n) {
			memmove((char *)idx + n * isz, (char *)idx + at * isz, len[q] * isz);
			memmove(val + n, val + at, len[q] * sizeof(*val));
		}
		n += len[q];
	}
	return n;
}

/* One merge of merge_two's: a[i..na) and b[j..nb) into out from n. */
struct mpart {
	const uint32_t *ai, *bi;
	const float *av, *bv;
	uint32_t na, nb, i, j;
	size_t n;
};

/* merge_two's step on part m, with both its sides non-empty. */
static inline __attribute__((always_inline)) void merge_step(struct mpart *m, uint64_t base, uint64_t *restrict oidx,
							     float *restrict oval)
{
	uint32_t x = m->ai[m->i], y = m->bi[m->j];
	float va = m->av[m->i], vb = m->bv[m->j], sum = spardl_add(va, vb);
	unsigned lt = x < y, gt = y < x;
	/* The value as bits under masks: a conditional float compiles to a
	 * branch. */
	uint32_t ma = 0u - lt, mb = 0u - gt, ua, ub, us;

	memcpy(&ua, &va, sizeof(ua));
	memcpy(&ub, &vb, sizeof(ub));
	memcpy(&us, &sum, sizeof(us));
	us = (ua & ma) | (ub & mb) | (us & ~(ma | mb));
	oidx[m->n] = base + (lt ? x : y);
	memcpy(&oval[m->n++], &us, sizeof(us));
	m->i += !gt;
	m->j += !lt;
}

/* Part m to its end: steps while both sides last, then the rest. */
static void merge_finish(struct mpart *m, uint64_t base, uint64_t *restrict oidx, float *restrict oval)
{
	/* Branch-free: which list comes next is data dependent. */
	while (m->i < m->na && m->j < m->nb)
		merge_step(m, base, oidx, oval);
	for (; m->i < m->na; m->i++, m->n++) {
		oidx[m->n] = base + m->ai[m->i];
		oval[m->n] = m->av[m->i];
	}
	for (; m->j < m->nb; m->j++, m->n++) {
		oidx[m->n] = base + m->bi[m->j];
		oval[m->n] = m->bv[m->j];
	}
}

/* Two lists of one block: indices compared within the block, in parts
 * merged side by side (spardl_merge_split) when both are long. */
static size_t merge_two(const struct spardl_list *a, const struct spardl_list *b, uint64_t bs,
			uint64_t *restrict oidx, float *restrict oval)
{
	const uint64_t base = (uint64_t)a->block * bs;
	struct mpart m[SPARDL_MERGE_PARTS];
	size_t as[SPARDL_MERGE_PARTS + 1], bsz[SPARDL_MERGE_PARTS + 1], len[SPARDL_MERGE_PARTS], q;

	/* Parts start where they would without shared indices: the output
	 * holds min(the counts' sum, the block size) entries. */
	if (a->count < SPARDL_MERGE_PART_MIN || b->count < SPARDL_MERGE_PART_MIN ||
	    (uint64_t)a->count + b->count > bs) {
		m[0] = (struct mpart){ .ai = a->idx, .av = a->val, .na = a->count, .bi = b->idx, .bv = b->val,
				       .nb = b->count };
		merge_finish(&m[0], base, oidx, oval);
		return m[0].n;
	}
	spardl_merge_split(a->idx, a->count, b->idx, b->count, as, bsz);
	for (q = 0; q < SPARDL_MERGE_PARTS; q++)
		m[q] = (struct mpart){ .ai = a->idx + as[q], .av = a->val + as[q], .na = (uint32_t)(as[q + 1] - as[q]),
				       .bi = b->idx + bsz[q], .bv = b->val + bsz[q], .nb = (uint32_t)(bsz[q + 1] - bsz[q]),
				       .n = as[q] + bsz[q] };
	for (;;) {
		/* Steps every part can take with both its sides non-empty:
		 * a step takes at most one entry from each side. */
		uint32_t steps = UINT32_MAX, k;

		for (q = 0; q < SPARDL_MERGE_PARTS; q++) {
			k = m[q].na - m[q].i < m[q].nb - m[q].j ? m[q].na - m[q].i : m[q].nb - m[q].j;
			steps = k < steps ? k : steps;
		}
		if (steps < 64)
			break;
		for (k = 0; k < steps; k++) {
			merge_step(&m[0], base, oidx, oval);
			merge_step(&m[1], base, oidx, oval);
			merge_step(&m[2], base, oidx, oval);
			merge_step(&m[3], base, oidx, oval);
		}
	}
	for (q = 0; q < SPARDL_MERGE_PARTS; q++) {
		merge_finish(&m[q], base, oidx, oval);
		len[q] = m[q].n - (as[q] + bsz[q]);
	}
	return spardl_merge_parts_pack(oidx, sizeof(*oidx), oval, as, bsz, len);
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
