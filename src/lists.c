/* SPDX-License-Identifier: MIT */
/* K-way merge of sorted sparse lists; values at a shared index are summed in list order. */
#include <string.h>

#include "fp.h"
#include "lists.h"

int spardl_lists_isa = 2;

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

#if defined(__x86_64__)
#include <immintrin.h>

/*
 * The same merge sixteen pairs at a time, for CPUs with AVX-512F (faster
 * than the scalar merge in parts: docs/PERFORMANCE.md). Each
 * entry gets a key, its index times two plus its side (a 0, b 1), so keys
 * are distinct and an index in both lists gives two adjacent keys, a's
 * first. A bitonic network merges sixteen keys of the merge so far with
 * the next sixteen of the side whose next key is smaller; its lower half
 * is the next output, in key order. A pair of keys of one index (possibly
 * split between two outputs: the last entry of each output waits for the
 * next) becomes one entry, the b entry's place with the value a scalar
 * merge would give, and the a entry is compressed out. The tails, fewer
 * than sixteen on one side, are merged by the scalar steps. Needs
 * na, nb >= 16 and indices below 2^31 - 1.
 */
struct vmerge {
	int sum;
	uint64_t base;
	uint32_t *o32;
	uint64_t *o64;
	float *ov;
	size_t n;
	/* The entry that waits for the next output: key (~0u: none) and value bits. */
	uint32_t pk, pv;
};

__attribute__((target("avx512f"), always_inline)) static inline __m512i vm_add(__m512i a, __m512i b)
{
	/* spardl_add lane by lane: a's NaN first, then b's, quieted. */
	const __m512i q = _mm512_set1_epi32(0x00400000);
	__m512 fa = _mm512_castsi512_ps(a), fb = _mm512_castsi512_ps(b);
	__m512i s = _mm512_castps_si512(_mm512_add_ps(fa, fb));
	__mmask16 na = _mm512_cmp_ps_mask(fa, fa, _CMP_UNORD_Q), nb = _mm512_cmp_ps_mask(fb, fb, _CMP_UNORD_Q);

	s = _mm512_mask_or_epi32(s, nb, b, q);
	return _mm512_mask_or_epi32(s, na, a, q);
}

/* Sort the bitonic keys k (values v along) ascending. */
__attribute__((target("avx512f"), always_inline)) static inline void vm_bitonic(__m512i *k, __m512i *v)
{
	static const uint16_t hi[4] = { 0xff00, 0xf0f0, 0xcccc, 0xaaaa };
	const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
	int s;

	for (s = 0; s < 4; s++) {
		__m512i perm = _mm512_xor_si512(lane, _mm512_set1_epi32(8 >> s));
		__m512i pk = _mm512_permutexvar_epi32(perm, *k), pv = _mm512_permutexvar_epi32(perm, *v);
		/* The lower lane of each pair takes the smaller key, the upper
		 * the larger; a value goes where its key went (keys are
		 * distinct). */
		__m512i nk = _mm512_mask_blend_epi32(hi[s], _mm512_min_epu32(*k, pk), _mm512_max_epu32(*k, pk));

		*v = _mm512_mask_blend_epi32(_mm512_cmpeq_epi32_mask(nk, *k), pv, *v);
		*k = nk;
	}
}

/* Write sixteen entries in key order (keys k, value bits v): each but the
 * last, which waits; a pair of one index becomes one entry. */
__attribute__((target("avx512f"), always_inline)) static inline void vm_emit(struct vmerge *m, __m512i k, __m512i v)
{
	__m512i pk = _mm512_set1_epi32((int)m->pk), pv = _mm512_set1_epi32((int)m->pv);
	/* Lane j: the entry before k[j] (the waiting one for j = 0). */
	__m512i sk = _mm512_alignr_epi32(k, pk, 15), sv = _mm512_alignr_epi32(v, pv, 15);
	__mmask16 dup = _mm512_cmpeq_epi32_mask(_mm512_srli_epi32(sk, 1), _mm512_srli_epi32(k, 1));
	__mmask16 keep, first;
	__m512i ov, idx;
	unsigned cnt;

	if (m->sum)
		v = _mm512_mask_blend_epi32(dup, v, vm_add(sv, v));
	/* The entries written: the waiting one and k[0..14], each unless
	 * the next has its index (a's entry of a pair). */
	keep = (__mmask16)~dup;
	if (m->pk == ~0u)
		keep &= (__mmask16)~1u;
	ov = _mm512_alignr_epi32(v, pv, 15);
	idx = _mm512_srli_epi32(sk, 1);
	/* Compressed in registers and stored under a mask: a compressing
	 * store to memory is slow on some CPUs, and the output may end
	 * right after the last entry. */
	cnt = (unsigned)__builtin_popcount(keep);
	first = (__mmask16)((1u << cnt) - 1);
	_mm512_mask_storeu_epi32(m->ov + m->n, first, _mm512_maskz_compress_epi32(keep, ov));
	idx = _mm512_maskz_compress_epi32(keep, idx);
	if (m->o64) {
		__m512i b = _mm512_set1_epi64((long long)m->base);

		_mm512_mask_storeu_epi64(m->o64 + m->n, (__mmask8)first,
					 _mm512_add_epi64(_mm512_cvtepu32_epi64(_mm512_castsi512_si256(idx)), b));
		_mm512_mask_storeu_epi64(m->o64 + m->n + 8, (__mmask8)(first >> 8),
					 _mm512_add_epi64(_mm512_cvtepu32_epi64(_mm512_extracti64x4_epi64(idx, 1)), b));
	} else {
		_mm512_mask_storeu_epi32(m->o32 + m->n, first, idx);
	}
	m->n += cnt;
	m->pk = (uint32_t)_mm_extract_epi32(_mm512_extracti32x4_epi32(k, 3), 3);
	m->pv = (uint32_t)_mm_extract_epi32(_mm512_extracti32x4_epi32(v, 3), 3);
}

/* One entry in key order, as vm_emit writes them. */
static inline void vm_emit1(struct vmerge *m, uint32_t k, uint32_t v)
{
	if (m->pk != ~0u && (m->pk >> 1) == (k >> 1)) {
		if (m->sum) {
			float fa, fb;

			memcpy(&fa, &m->pv, sizeof(fa));
			memcpy(&fb, &v, sizeof(fb));
			fa = spardl_add(fa, fb);
			memcpy(&v, &fa, sizeof(v));
		}
	} else if (m->pk != ~0u) {
		if (m->o64)
			m->o64[m->n] = m->base + (m->pk >> 1);
		else
			m->o32[m->n] = m->pk >> 1;
		memcpy(&m->ov[m->n], &m->pv, sizeof(m->pv));
		m->n++;
	}
	m->pk = k;
	m->pv = v;
}

__attribute__((target("avx512f"))) static size_t merge_avx512(const uint32_t *a, const float *av, size_t na,
								const uint32_t *b, const float *bv, size_t nb, int sum,
								uint64_t base, uint32_t *o32, uint64_t *o64, float *ov)
{
	const __m512i rev = _mm512_set_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
	const __m512i one = _mm512_set1_epi32(1);
	struct vmerge m = { .sum = sum, .base = base, .o32 = o32, .o64 = o64, .ov = ov, .pk = ~0u };
	__m512i hk = _mm512_slli_epi32(_mm512_loadu_si512(a), 1), hv = _mm512_loadu_si512(av);
	size_t ia = 16, ib = 0, i;
	uint32_t tk[16], tv[16];

	for (;;) {
		__m512i nk, nv, lk, lv;
		__mmask16 from_h;
		/* The next sixteen from the side whose next key is smaller (a's
		 * at an index in both): every entry of the merge so far is
		 * then below the other side's next, so the sixteen smallest
		 * held are below every entry not yet read. */
		int take_a = ia < na && ib < nb ? a[ia] <= b[ib] : ia < na;

		if (take_a ? ia + 16 > na : ib + 16 > nb)
			break;
		if (take_a) {
			nk = _mm512_slli_epi32(_mm512_loadu_si512(a + ia), 1);
			nv = _mm512_loadu_si512(av + ia);
			ia += 16;
		} else {
			nk = _mm512_or_si512(_mm512_slli_epi32(_mm512_loadu_si512(b + ib), 1), one);
			nv = _mm512_loadu_si512(bv + ib);
			ib += 16;
		}
		/* hk ascending and nk reversed make one bitonic sequence: the
		 * lanewise minimum is the lower half, the maximum the upper. */
		nk = _mm512_permutexvar_epi32(rev, nk);
		nv = _mm512_permutexvar_epi32(rev, nv);
		lk = _mm512_min_epu32(hk, nk);
		from_h = _mm512_cmpeq_epi32_mask(lk, hk);
		lv = _mm512_mask_blend_epi32(from_h, nv, hv);
		hk = _mm512_max_epu32(hk, nk);
		hv = _mm512_mask_blend_epi32(from_h, hv, nv);
		vm_bitonic(&lk, &lv);
		vm_bitonic(&hk, &hv);
		vm_emit(&m, lk, lv);
	}
	/* The sixteen held, and the tails, merged by key. */
	_mm512_storeu_si512(tk, hk);
	_mm512_storeu_si512(tv, hv);
	for (i = 0;;) {
		uint32_t ka = ia < na ? a[ia] << 1 : ~0u, kb = ib < nb ? b[ib] << 1 | 1 : ~0u;
		uint32_t kt = i < 16 ? tk[i] : ~0u, kv;

		if (ka == ~0u && kb == ~0u && kt == ~0u)
			break;
		if (kt < ka && kt < kb) {
			vm_emit1(&m, kt, tv[i++]);
		} else if (ka < kb) {
			memcpy(&kv, &av[ia++], sizeof(kv));
			vm_emit1(&m, ka, kv);
		} else {
			memcpy(&kv, &bv[ib++], sizeof(kv));
			vm_emit1(&m, kb, kv);
		}
	}
	vm_emit1(&m, ~0u, 0);
	return m.n;
}
#endif

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

#if defined(__x86_64__)
	if (spardl_lists_isa >= 2 && na >= 16 && nb >= 16 && a[na - 1] < 0x7fffffffu && b[nb - 1] < 0x7fffffffu &&
	    __builtin_cpu_supports("avx512f"))
		return merge_avx512(a, av, na, b, bv, nb, sum, base, o32, o64, ov);
#endif
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
