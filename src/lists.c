/* SPDX-License-Identifier: MIT */
/* K-way merge of sorted sparse lists; values at a shared index are summed in list order. */
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

/* Two lists of one block: indices compared within the block. */
static size_t merge_two(const struct spardl_list *a, const struct spardl_list *b, uint64_t bs,
			uint64_t *restrict oidx, float *restrict oval)
{
	const uint32_t *restrict ai = a->idx, *restrict bi = b->idx;
	const float *restrict av = a->val, *restrict bv = b->val;
	const uint32_t na = a->count, nb = b->count;
	const uint64_t base = (uint64_t)a->block * bs;
	uint32_t i = 0, j = 0;
	size_t n = 0;

	/* Branch-free: which list comes next is data dependent. */
	while (i < na && j < nb) {
		uint32_t x = ai[i], y = bi[j];
		float va = av[i], vb = bv[j], sum = spardl_add(va, vb);
		unsigned lt = x < y, gt = y < x;
		/* The value as bits under masks: a conditional float
		 * compiles to a branch. */
		uint32_t ma = 0u - lt, mb = 0u - gt, ua, ub, us;

		memcpy(&ua, &va, sizeof(ua));
		memcpy(&ub, &vb, sizeof(ub));
		memcpy(&us, &sum, sizeof(us));
		us = (ua & ma) | (ub & mb) | (us & ~(ma | mb));
		oidx[n] = base + (lt ? x : y);
		memcpy(&oval[n++], &us, sizeof(us));
		i += !gt;
		j += !lt;
	}
	for (; i < na; i++, n++) {
		oidx[n] = base + ai[i];
		oval[n] = av[i];
	}
	for (; j < nb; j++, n++) {
		oidx[n] = base + bi[j];
		oval[n] = bv[j];
	}
	return n;
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
