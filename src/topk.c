/* SPDX-License-Identifier: MIT */
/* Top-k selection: exact radix threshold, with a sampled fast path for large blocks. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "fp.h"
#include "log.h"
#include "lists.h"
#include "copy.h"
#include "topk.h"

#if defined(__x86_64__)
#include <immintrin.h>

/* For each 8-bit mask, the positions of its set bits, first to last, then
 * zeros: a permutation that packs the selected lanes to the front. */
static const uint8_t *pack_lut(void)
{
	static uint8_t lut[256][8];
	static int ready;
	unsigned m, j, k;

	if (__atomic_load_n(&ready, __ATOMIC_ACQUIRE))
		return &lut[0][0];
	for (m = 0; m < 256; m++) {
		uint8_t row[8] = { 0 };

		for (j = 0, k = 0; j < 8; j++)
			if (m >> j & 1)
				row[k++] = (uint8_t)j;
		/* Every thread writes the same bytes. */
		for (j = 0; j < 8; j++)
			__atomic_store_n(&lut[m][j], row[j], __ATOMIC_RELAXED);
	}
	__atomic_store_n(&ready, 1, __ATOMIC_RELEASE);
	return &lut[0][0];
}

/* For each 8-bit mask, 8 lanes of all ones where its bit is set. */
static const int32_t *lane_mask_lut(void)
{
	static int32_t lut[256][8] __attribute__((aligned(32)));
	static int ready;
	unsigned m, j;

	if (__atomic_load_n(&ready, __ATOMIC_ACQUIRE))
		return &lut[0][0];
	for (m = 0; m < 256; m++)
		for (j = 0; j < 8; j++)
			__atomic_store_n(&lut[m][j], (m >> j & 1) ? -1 : 0, __ATOMIC_RELAXED);
	__atomic_store_n(&ready, 1, __ATOMIC_RELEASE);
	return &lut[0][0];
}

/* The keys of v in level-1 bucket b1 (key >> 20 == b1, zeros excluded),
 * in order, into tmp, eight entries at a time while room for eight more
 * remains. */
__attribute__((target("avx2,popcnt"))) static void bucket_keys_avx2(const float *v, size_t len, uint32_t b1,
								      uint32_t *tmp, size_t tcap, size_t *pi,
								      size_t *pnt)
{
	const __m256i absmask = _mm256_set1_epi32(0x7fffffff), nan_key = _mm256_set1_epi32(0x7f800001);
	const __m256i want = _mm256_set1_epi32((int)b1), zero = _mm256_setzero_si256();
	const uint8_t *lut = pack_lut();
	size_t i = *pi, nt = *pnt;

	for (; i + 8 <= len && nt + 8 <= tcap; i += 8) {
		__m256i k = _mm256_min_epu32(_mm256_and_si256(_mm256_loadu_si256((const __m256i *)(v + i)), absmask),
					     nan_key);
		__m256i in = _mm256_andnot_si256(_mm256_cmpeq_epi32(k, zero),
						 _mm256_cmpeq_epi32(_mm256_srli_epi32(k, 20), want));
		unsigned mask = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(in));
		__m256i perm = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(lut + 8 * mask)));

		_mm256_storeu_si256((__m256i *)(tmp + nt), _mm256_permutevar8x32_epi32(k, perm));
		nt += (size_t)__builtin_popcount(mask);
	}
	*pi = i;
	*pnt = nt;
}
#endif

/* Below this length a block is selected by the exact radix passes alone. */
#define SAMPLE_MIN_LEN (1u << 17)
/* Candidate lists hold 4 m plus this many entries. */
#define CAND_SLACK 16384u

void spardl_zero_at(float *x, const uint32_t *idx, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (i + PREFETCH_AHEAD < n)
			spardl_prefetch(&x[idx[i + PREFETCH_AHEAD]]);
		x[idx[i]] = 0.0f;
	}
}

/* Walk a histogram from the top; return the bucket holding the need-th
 * largest entry and reduce *need to the rank inside that bucket. */
static unsigned find_bucket(const size_t *h, unsigned nb, size_t *need)
{
	size_t above = 0;
	unsigned b = nb;

	while (b-- > 0) {
		if (above + h[b] >= *need)
			break;
		above += h[b];
	}
	*need -= above;
	return b;
}

/* The threshold in three radix levels (11, 11 and 9 key bits). With lo != 0
 * it first counts the keys >= lo and, when fewer than m, returns 0 with t
 * unset. With scratch (tmp: tcap entries, and one more it may write past
 * them), the two finer levels run over a copy of the one bucket's keys
 * instead of over v again. */
static int threshold(const float *v, size_t len, size_t m, uint32_t lo, struct spardl_thr *t, uint32_t *tmp,
		     size_t tcap)
{
	/* Four interleaved histograms: consecutive keys mostly fall in the
	 * same bucket, and one counter would serialize on its own updates. */
	uint32_t h4[4][2048] = { { 0 } };
	size_t h1[2048], h2[2048] = { 0 }, h3[512] = { 0 };
	size_t nonzero = 0, need = m, above = 0, i, nt = 0;
	unsigned b1, b2, b3;
	uint32_t pre;

	for (i = 0; i + 4 <= len; i += 4) {
		uint32_t k0 = spardl_key(v[i]), k1 = spardl_key(v[i + 1]), k2 = spardl_key(v[i + 2]),
			 k3 = spardl_key(v[i + 3]);

		h4[0][k0 >> 20] += k0 != 0;
		h4[1][k1 >> 20] += k1 != 0;
		h4[2][k2 >> 20] += k2 != 0;
		h4[3][k3 >> 20] += k3 != 0;
		above += (size_t)(k0 >= lo) + (k1 >= lo) + (k2 >= lo) + (k3 >= lo);
	}
	for (; i < len; i++) {
		uint32_t k = spardl_key(v[i]);

		h4[0][k >> 20] += k != 0;
		above += k >= lo;
	}
	if (lo && above < m)
		return 0;
	for (i = 0; i < 2048; i++) {
		h1[i] = (size_t)h4[0][i] + h4[1][i] + h4[2][i] + h4[3][i];
		nonzero += h1[i];
	}
	if (m == 0 || nonzero <= m) {
		t->key = m == 0 ? UINT32_MAX : 0;
		t->ties = 0;
		t->count = m == 0 ? 0 : nonzero;
		return 1;
	}
	t->count = m;
	b1 = find_bucket(h1, 2048, &need);
	if (tmp && h1[b1] <= tcap) {
		i = 0;
#if defined(__x86_64__)
		if (__builtin_cpu_supports("avx2"))
			bucket_keys_avx2(v, len, b1, tmp, tcap, &i, &nt);
#endif
		/* Written unconditionally, kept by advancing nt: after the
		 * bucket's h1[b1] <= tcap keys, nt = tcap, and the workspace
		 * holds one entry past tcap for those writes. */
		for (; i < len; i++) {
			uint32_t k = spardl_key(v[i]);

			tmp[nt] = k;
			nt += (k >> 20) == b1 && k;
		}
		for (i = 0; i < nt; i++)
			h2[(tmp[i] >> 9) & 2047]++;
		b2 = find_bucket(h2, 2048, &need);
		pre = (b1 << 11) | b2;
		for (i = 0; i < nt; i++)
			if ((tmp[i] >> 9) == pre)
				h3[tmp[i] & 511]++;
	} else {
		for (i = 0; i < len; i++) {
			uint32_t k = spardl_key(v[i]);

			if (k && (k >> 20) == b1)
				h2[(k >> 9) & 2047]++;
		}
		b2 = find_bucket(h2, 2048, &need);
		pre = (b1 << 11) | b2;
		for (i = 0; i < len; i++) {
			uint32_t k = spardl_key(v[i]);

			if (k && (k >> 9) == pre)
				h3[k & 511]++;
		}
	}
	b3 = find_bucket(h3, 512, &need);
	t->key = (pre << 9) | b3;
	t->ties = need;
	return 1;
}

/*
 * The threshold of a candidate list from a sample of its own keys
 * (sample-select): RANGE_SAMPLES evenly spaced keys give a key range
 * [qlo, qhi) that holds the m-th largest key but for a 4-sigma miss; one
 * pass counts the keys at or above qhi and copies out those inside the
 * range (a few percent of them), and the exact radix levels run over that
 * copy alone. The counts decide: the range is used only when fewer than m
 * keys reach qhi and at least m reach qlo, so a bad sample costs one pass
 * and threshold() then runs as without it.
 */
#define RANGE_SAMPLES 2048u
#define RANGE_RUN 16u
#define RANGE_MIN_LEN (1u << 14)
#define KEY_ABOVE_ALL 0x7f800002u /* above every key, NaN's included */

/* The rank-th largest of keys[0..ns) (1 <= rank <= ns) with its low 10
 * bits cleared; h1 counts the keys by key >> 21. The keys of its bucket
 * are first copied out (without a branch: half of them would mispredict),
 * then counted by their next 11 bits. */
static uint32_t sample_rank_key(const uint32_t *keys, size_t ns, const uint32_t *h1, size_t rank)
{
	uint32_t in[RANGE_SAMPLES + 1];
	uint16_t f[2048] = { 0 };
	size_t above = 0, i, n = 0;
	unsigned b = 2048, sub;

	while (b-- > 1) {
		if (above + h1[b] >= rank)
			break;
		above += h1[b];
	}
	for (i = 0; i < ns; i++) {
		in[n] = keys[i];
		n += (keys[i] >> 21) == b;
	}
	for (i = 0; i < n; i++)
		f[(in[i] >> 10) & 2047]++;
	for (sub = 2047; sub > 0; sub--) {
		above += f[sub];
		if (above >= rank)
			break;
	}
	return (b << 21) | (sub << 10);
}

#if defined(__x86_64__)
/* range_pass() eight entries at a time while room for eight more remains. */
__attribute__((target("avx2,popcnt"))) static void range_pass_avx2(const float *v, size_t len, uint32_t qlo,
								     uint32_t qhi, uint32_t *tmp, size_t tcap,
								     size_t *pi, size_t *pnt, size_t *phi)
{
	const __m256i absmask = _mm256_set1_epi32(0x7fffffff), nan_key = _mm256_set1_epi32(0x7f800001);
	/* Keys and bounds are below 2^31: signed compares order them. */
	const __m256i lo1 = _mm256_set1_epi32((int)(qlo - 1)), hi1 = _mm256_set1_epi32((int)(qhi - 1));
	const uint8_t *lut = pack_lut();
	__m256i nhi = _mm256_setzero_si256();
	size_t i = *pi, nt = *pnt;
	uint32_t lanes[8];
	unsigned j;

	for (; i + 8 <= len && nt + 8 <= tcap; i += 8) {
		__m256i k = _mm256_min_epu32(_mm256_and_si256(_mm256_loadu_si256((const __m256i *)(v + i)), absmask),
					     nan_key);
		__m256i ge_hi = _mm256_cmpgt_epi32(k, hi1);
		__m256i in = _mm256_andnot_si256(ge_hi, _mm256_cmpgt_epi32(k, lo1));
		unsigned mask = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(in));
		__m256i perm = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(lut + 8 * mask)));

		/* ge_hi lanes are -1: subtracting counts them. */
		nhi = _mm256_sub_epi32(nhi, ge_hi);
		_mm256_storeu_si256((__m256i *)(tmp + nt), _mm256_permutevar8x32_epi32(k, perm));
		nt += (size_t)__builtin_popcount(mask);
	}
	_mm256_storeu_si256((__m256i *)lanes, nhi);
	for (j = 0; j < 8; j++)
		*phi += lanes[j];
	*pi = i;
	*pnt = nt;
}
#endif

/* The keys of v[0..len) in [qlo, qhi) into tmp (tcap entries, at least
 * len), in order; returns their count, and in *nhi the count of keys >= qhi. */
static size_t range_pass(const float *v, size_t len, uint32_t qlo, uint32_t qhi, uint32_t *tmp, size_t tcap,
			 size_t *nhi)
{
	size_t i = 0, nt = 0;

	*nhi = 0;
#if defined(__x86_64__)
	/* Each group's lanes are counted within 32 bits: at most 2^31 of them. */
	if (__builtin_cpu_supports("avx2") && len < ((size_t)1 << 31))
		range_pass_avx2(v, len, qlo, qhi, tmp, tcap, &i, &nt, nhi);
#endif
	for (; i < len; i++) {
		uint32_t k = spardl_key(v[i]);

		tmp[nt] = k;
		nt += k >= qlo && k < qhi;
		*nhi += k >= qhi;
	}
	return nt;
}

/* The need-th largest of keys[0..nt) (0 < need < nt), all in [qlo, qhi),
 * into t->key, and t->ties as threshold() sets it: two levels of 2048
 * buckets over key - qlo when the range spans at most 2^22 keys, else
 * threshold()'s levels (keys read as floats are their own keys). */
static void range_levels(const uint32_t *keys, size_t nt, size_t need, uint32_t qlo, uint32_t qhi,
			 struct spardl_thr *t)
{
	uint32_t h[2048] = { 0 }, span = qhi - qlo, top;
	unsigned sh = 0, ba, bb;
	size_t j;

	if (span > (1u << 22)) {
		threshold((const float *)keys, nt, need, 0, t, NULL, 0);
		return;
	}
	while ((span - 1) >> sh >= 2048)
		sh++;
	for (j = 0; j < nt; j++)
		h[(keys[j] - qlo) >> sh]++;
	for (ba = 2048; ba-- > 0;) {
		if (need <= h[ba])
			break;
		need -= h[ba];
	}
	memset(h, 0, sizeof(h));
	top = ba;
	for (j = 0; j < nt; j++)
		if ((keys[j] - qlo) >> sh == top)
			h[(keys[j] - qlo) & ((1u << sh) - 1)]++;
	for (bb = 1u << sh; bb-- > 0;) {
		if (need <= h[bb])
			break;
		need -= h[bb];
	}
	t->key = qlo + ((top << sh) | bb);
	t->ties = need;
}

/* threshold() of a list of len <= tcap entries (tmp holds tcap + 1), with
 * the sampled range first. Same return as threshold(). */
static int threshold_sampled(const float *v, size_t len, size_t m, uint32_t lo, struct spardl_thr *t,
			     uint32_t *tmp, size_t tcap, struct spardl_topk_ws *ws)
{
	uint32_t keys[RANGE_SAMPLES], h4[4][2048] = { { 0 } }, h1[2048], qlo, qhi, tk;
	size_t stride, i, nt, nhi, need, ties;
	double p, r, d;
	struct spardl_thr t2;

	if (len < RANGE_MIN_LEN || m == 0 || m >= len || len > tcap)
		return threshold(v, len, m, lo, t, tmp, tcap);
	/* Runs of RANGE_RUN consecutive entries: a run costs about one
	 * cache line, where single entries would cost one line each. */
	stride = len / (RANGE_SAMPLES / RANGE_RUN);
	/* The runs are far apart: ask for all their lines first. */
	for (i = 0; i < RANGE_SAMPLES / RANGE_RUN; i++) {
		spardl_prefetch(&v[i * stride]);
		spardl_prefetch(&v[i * stride + RANGE_RUN - 1]);
	}
	for (i = 0; i < RANGE_SAMPLES; i++)
		keys[i] = spardl_key(v[(i / RANGE_RUN) * stride + i % RANGE_RUN]);
	/* Four histograms, summed after: most keys fall in a few buckets,
	 * and one counter would wait on its own increments. */
	for (i = 0; i < RANGE_SAMPLES; i += 4) {
		h4[0][keys[i] >> 21]++;
		h4[1][keys[i + 1] >> 21]++;
		h4[2][keys[i + 2] >> 21]++;
		h4[3][keys[i + 3] >> 21]++;
	}
	for (i = 0; i < 2048; i++)
		h1[i] = h4[0][i] + h4[1][i] + h4[2][i] + h4[3][i];
	/* About r samples reach the m-th largest key; d: 4 sigma of that
	 * count, and some. */
	p = (double)m / (double)len;
	r = p * RANGE_SAMPLES;
	d = 4.0 * __builtin_sqrt(r * (1.0 - p)) + 8.0;
	qhi = r - d < 1.0 ? KEY_ABOVE_ALL : sample_rank_key(keys, RANGE_SAMPLES, h1, (size_t)(r - d)) + 1024;
	qlo = r + d + 1.0 > RANGE_SAMPLES ? 1 : sample_rank_key(keys, RANGE_SAMPLES, h1, (size_t)(r + d) + 1);
	/* At least m keys >= qlo >= lo: then at least m >= lo too. */
	if (qlo < lo)
		qlo = lo;
	if (qlo == 0)
		qlo = 1;
	if (qlo >= qhi) {
		ws->range_misses++;
		return threshold(v, len, m, lo, t, tmp, tcap);
	}
	nt = range_pass(v, len, qlo, qhi, tmp, tcap, &nhi);
	if (nhi >= m || nhi + nt < m) {
		ws->range_misses++;
		return threshold(v, len, m, lo, t, tmp, tcap);
	}
	ws->range_hits++;
	/* The m-th largest key is the need-th largest of the range's keys
	 * (non-zero: qlo >= 1), which, read as floats, are their own keys. */
	need = m - nhi;
	if (nt > need) {
		range_levels(tmp, nt, need, qlo, qhi, &t2);
		tk = t2.key;
		ties = t2.ties;
	} else {
		/* All of the range: its smallest key, every entry of it. */
		tk = UINT32_MAX;
		for (i = 0; i < nt; i++)
			tk = tmp[i] < tk ? tmp[i] : tk;
		for (i = 0, ties = 0; i < nt; i++)
			ties += tmp[i] == tk;
	}
	t->key = tk;
	t->ties = ties;
	t->count = m;
	return 1;
}

void spardl_topk_threshold_list(const float *v, size_t len, size_t m, struct spardl_thr *t,
				struct spardl_topk_ws *ws)
{
	threshold_sampled(v, len, m, 0, t, ws->tkeys, ws->tcap, ws);
}

void spardl_topk_threshold(const float *v, size_t len, size_t m, struct spardl_thr *t)
{
	threshold(v, len, m, 0, t, NULL, 0);
}

void spardl_topk_threshold_ws(const float *v, size_t len, size_t m, struct spardl_thr *t, struct spardl_topk_ws *ws)
{
	threshold(v, len, m, 0, t, ws->tkeys, ws->tcap);
}

int spardl_topk_ws_init_in(struct spardl_topk_ws *ws, size_t max_m, size_t max_extra, struct spardl_arena *arena)
{
	memset(ws, 0, sizeof(*ws));
	ws->arena = arena;
	ws->cap = 4 * max_m + CAND_SLACK;
	ws->ucap = spardl_topk_cand_cap(max_m) + max_extra;
	ws->tcap = ws->ucap > ws->cap ? ws->ucap : ws->cap;
	/* Zeroed and touched: first-touch page faults must not land in a
	 * call. tkeys has one more than tcap: threshold() stores past a full
	 * bucket's keys. */
	ws->cand_idx = spardl_arena_alloc(arena, ws->cap * sizeof(*ws->cand_idx));
	ws->cand_val = spardl_arena_alloc(arena, ws->cap * sizeof(*ws->cand_val));
	ws->u[0] = spardl_arena_alloc(arena, ws->ucap * sizeof(uint32_t));
	ws->u[1] = spardl_arena_alloc(arena, ws->ucap * sizeof(uint32_t));
	ws->uv[0] = spardl_arena_alloc(arena, ws->ucap * sizeof(float));
	ws->uv[1] = spardl_arena_alloc(arena, ws->ucap * sizeof(float));
	ws->tkeys = spardl_arena_alloc(arena, (ws->tcap + 1) * sizeof(*ws->tkeys));
	if (!ws->cand_idx || !ws->cand_val || !ws->u[0] || !ws->u[1] || !ws->uv[0] || !ws->uv[1] || !ws->tkeys) {
		size_t cap = ws->cap;

		spardl_topk_ws_fini(ws);
		return spardl_error_quiet(-ENOMEM, "out of memory for a selection workspace of %zu entries", cap);
	}
	return 0;
}

int spardl_topk_ws_init(struct spardl_topk_ws *ws, size_t max_m, size_t max_extra)
{
	return spardl_topk_ws_init_in(ws, max_m, max_extra, NULL);
}

void spardl_topk_ws_fini(struct spardl_topk_ws *ws)
{
	spardl_arena_free(ws->arena, ws->cand_idx);
	spardl_arena_free(ws->arena, ws->cand_val);
	spardl_arena_free(ws->arena, ws->u[0]);
	spardl_arena_free(ws->arena, ws->u[1]);
	spardl_arena_free(ws->arena, ws->uv[0]);
	spardl_arena_free(ws->arena, ws->uv[1]);
	spardl_arena_free(ws->arena, ws->tkeys);
	memset(ws, 0, sizeof(*ws));
}

#if defined(__x86_64__)
/* collect() eight entries at a time while room for eight more remains;
 * a group holding a tie of the threshold key goes entry by entry. */
__attribute__((target("avx2,popcnt"))) static void collect_avx2(const float *v, const uint32_t *ids, size_t len,
								  const struct spardl_thr *t, uint32_t *oidx,
								  float *oval, size_t *pi, size_t *pn, size_t *pties)
{
	const __m256i absmask = _mm256_set1_epi32(0x7fffffff), nan_key = _mm256_set1_epi32(0x7f800001);
	const __m256i key = _mm256_set1_epi32((int)t->key), lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
	const uint8_t *lut = pack_lut();
	size_t i = *pi, n = *pn, ties = *pties, j;

	for (; i + 8 <= len && n + 8 <= t->count; i += 8) {
		__m256i x = _mm256_loadu_si256((const __m256i *)(v + i));
		__m256i k = _mm256_min_epu32(_mm256_and_si256(x, absmask), nan_key);
		__m256i id = ids ? _mm256_loadu_si256((const __m256i *)(ids + i)) :
				   _mm256_add_epi32(_mm256_set1_epi32((int)i), lanes);
		unsigned gt = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(k, key)));
		unsigned eq = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(k, key)));
		__m256i perm;

		if (__builtin_expect(eq && ties && t->key, 0)) {
			for (j = i; j < i + 8; j++) {
				uint32_t kj = spardl_key(v[j]);
				size_t e = (kj == t->key) & (ties != 0);

				oidx[n] = ids ? ids[j] : (uint32_t)j;
				oval[n] = v[j];
				n += (kj > t->key) | e;
				ties -= e;
			}
			continue;
		}
		perm = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(lut + 8 * gt)));
		_mm256_storeu_si256((__m256i *)(oidx + n), _mm256_permutevar8x32_epi32(id, perm));
		_mm256_storeu_si256((__m256i *)(oval + n), _mm256_permutevar8x32_epi32(x, perm));
		n += (size_t)__builtin_popcount(gt);
	}
	*pi = i;
	*pn = n;
	*pties = ties;
}
#endif

/* Emit the entries of v selected by t, in index order; ids maps positions
 * to output indices (NULL: the position itself). */
static size_t collect(const float *v, const uint32_t *ids, size_t len, const struct spardl_thr *t,
		      uint32_t *oidx, float *oval)
{
	size_t ties = t->ties, n = 0, i = 0;

#if defined(__x86_64__)
	/* Keys are at most 0x7f800001: a key above that selects nothing. */
	if (t->key <= 0x7f800001u && __builtin_cpu_supports("avx2"))
		collect_avx2(v, ids, len, t, oidx, oval, &i, &n, &ties);
#endif
	/* Written unconditionally, kept by advancing n (selection is data
	 * dependent and would mispredict); n < count keeps the writes within
	 * the count entries the caller provides. */
	for (; i < len && n < t->count; i++) {
		uint32_t k = spardl_key(v[i]);
		size_t eq = (k == t->key) & (k != 0) & (ties != 0);

		oidx[n] = ids ? ids[i] : (uint32_t)i;
		oval[n] = v[i];
		n += (k > t->key) | eq;
		ties -= eq;
	}
	return n;
}

/* Lower bound on the m-th largest key, estimated with a margin from
 * SAMPLE_RUNS evenly spaced runs of consecutive entries (runs, not single
 * entries, so the estimate costs few cache misses), so that almost always at
 * least m keys reach it. The result is exact either way: a bad estimate only
 * sends the selection to the exact passes. Two histogram levels over the
 * samples (11 and then 11 more key bits) keep the bound close to the
 * estimate, so few more than m candidates are gathered. */
#define SAMPLE_RUNS 256u
#define SAMPLE_RUN 128u
#define SAMPLED (SAMPLE_RUNS * SAMPLE_RUN)

/* The keys of one run, SAMPLE_RUN entries from at, into k: those of
 * a + b (b with the pending zeros of zb applied), or of a alone. */
static void run_keys(const float *a, const float *b, const uint64_t *zb, size_t at, uint32_t *k)
{
	size_t j;

	for (j = 0; j < SAMPLE_RUN; j++)
		k[j] = spardl_key(b ? a[at + j] + (zb && spardl_bit(zb, at + j) ? 0.0f : b[at + j]) : a[at + j]);
}

#if defined(__x86_64__)
/* The same, eight lanes at a time. */
__attribute__((target("avx2"))) static void run_keys_avx2(const float *a, const float *b, const uint64_t *zb,
							    size_t at, uint32_t *k)
{
	const __m256i absmask = _mm256_set1_epi32(0x7fffffff), nan_key = _mm256_set1_epi32(0x7f800001);
	const int32_t *lut = lane_mask_lut();
	size_t j;

	for (j = 0; j < SAMPLE_RUN; j += 8) {
		__m256 v = _mm256_loadu_ps(a + at + j);

		if (b) {
			__m256 w = _mm256_loadu_ps(b + at + j);

			if (zb) {
				/* The 8 bits from at + j, which may span two words. */
				uint64_t pos = at + j, sh = pos & 63, bits = zb[pos >> 6] >> sh;

				if (sh > 56)
					bits |= zb[(pos >> 6) + 1] << (64 - sh);
				w = _mm256_andnot_ps(_mm256_load_ps((const float *)(lut + 8 * (bits & 0xff))), w);
			}
			v = _mm256_add_ps(v, w);
		}
		_mm256_storeu_si256((__m256i *)(k + j),
				    _mm256_min_epu32(_mm256_and_si256(_mm256_castps_si256(v), absmask), nan_key));
	}
}
#endif

static uint32_t sample_bound(const float *a, const float *b, const uint64_t *zb, size_t len, size_t m)
{
	/* Four histograms, summed after: runs of equal keys then do not
	 * wait on each other's increments. */
	uint16_t h[4][2048] = { { 0 } }, f[2048] = { 0 };
	uint32_t keys[SAMPLE_RUN];
	double want = (double)m / (double)len * SAMPLED;
	size_t i, j, above = 0, stride = len / SAMPLE_RUNS;
	unsigned k = 2048, top;
	void (*keys_of)(const float *, const float *, const uint64_t *, size_t, uint32_t *) = run_keys;

#if defined(__x86_64__)
	if (__builtin_cpu_supports("avx2"))
		keys_of = run_keys_avx2;
#endif
	/* The runs are far apart: ask for all their lines first (into L2,
	 * whose miss queue is deeper than L1's), then count. */
	for (i = 0; i < SAMPLE_RUNS; i++)
		for (j = 0; j < SAMPLE_RUN; j += 16) {
			spardl_prefetch(&a[i * stride + j]);
			if (b)
				spardl_prefetch(&b[i * stride + j]);
		}
	for (i = 0; i < SAMPLE_RUNS; i++) {
		keys_of(a, b, zb, i * stride, keys);
		for (j = 0; j < SAMPLE_RUN; j += 4) {
			h[0][keys[j] >> 21]++;
			h[1][keys[j + 1] >> 21]++;
			h[2][keys[j + 2] >> 21]++;
			h[3][keys[j + 3] >> 21]++;
		}
	}
	want += 4.0 * __builtin_sqrt(want) + 16.0;
	while (k-- > 1) {
		unsigned hk = (unsigned)h[0][k] + h[1][k] + h[2][k] + h[3][k];

		if ((double)(above + hk) >= want)
			break;
		above += hk;
	}
	if (k == 0)
		return 0;
	/* The want-th sample lies in bucket k: refine inside it (the runs
	 * are in cache now). */
	top = k;
	for (i = 0; i < SAMPLE_RUNS; i++) {
		keys_of(a, b, zb, i * stride, keys);
		for (j = 0; j < SAMPLE_RUN; j++)
			if ((keys[j] >> 21) == top)
				f[(keys[j] >> 10) & 2047]++;
	}
	for (k = 2047; k > 0; k--) {
		above += f[k];
		if ((double)above >= want)
			break;
	}
	/* 0 (the want-th sample is +-0 or denormal-small): no bound. */
	return (top << 21) | ((uint32_t)k << 10);
}

size_t spardl_topk_ws_bytes(const struct spardl_topk_ws *ws)
{
	return ws->cap * (sizeof(*ws->cand_idx) + sizeof(*ws->cand_val)) +
	       2 * ws->ucap * (sizeof(uint32_t) + sizeof(float)) + (ws->tcap + 1) * sizeof(*ws->tkeys);
}

int spardl_topk_can_sample(size_t len, size_t m)
{
	return len >= SAMPLE_MIN_LEN && m > 0 && m < len / 8;
}

uint32_t spardl_topk_bound(const float *a, const float *b, const uint64_t *zb, size_t len, size_t m)
{
	if (!spardl_topk_can_sample(len, m))
		return 0;
	return sample_bound(a, b, zb, len, m);
}

size_t spardl_topk_cand_cap(size_t m)
{
	return 4 * m + CAND_SLACK;
}

#if defined(__x86_64__)

/* The same scan eight lanes at a time, for CPUs with AVX2. */
__attribute__((target("avx2"))) static size_t gather_avx2(const float *x, size_t len, uint32_t lo,
							    struct spardl_topk_ws *ws, size_t *done)
{
	const __m256i absmask = _mm256_set1_epi32(0x7fffffff);
	const __m256i thr = _mm256_set1_epi32((int)(lo - 1));
	uint32_t *ci = ws->cand_idx;
	float *cv = ws->cand_val;
	size_t n = 0, i = 0, cap = ws->cap;

	for (; i + 16 <= len; i += 16) {
		__m256i a = _mm256_loadu_si256((const __m256i *)(x + i));
		__m256i b = _mm256_loadu_si256((const __m256i *)(x + i + 8));
		__m256i ga = _mm256_cmpgt_epi32(_mm256_and_si256(a, absmask), thr);
		__m256i gb = _mm256_cmpgt_epi32(_mm256_and_si256(b, absmask), thr);
		unsigned mask;

		if (__builtin_expect(_mm256_testz_si256(_mm256_or_si256(ga, gb), _mm256_or_si256(ga, gb)), 1))
			continue;
		mask = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(ga)) |
		       ((unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(gb)) << 8);
		if (n + 16 > cap)
			return SIZE_MAX;
		while (mask) {
			unsigned j = (unsigned)__builtin_ctz(mask);

			ci[n] = (uint32_t)(i + j);
			cv[n] = x[i + j];
			n++;
			mask &= mask - 1;
		}
	}
	*done = i;
	return n;
}
#endif

/* Gather entries with key >= lo (lo >= 1) into the workspace; returns the
 * count, or SIZE_MAX when it would exceed the workspace. */
static size_t gather(const float *x, size_t len, uint32_t lo, struct spardl_topk_ws *ws)
{
	uint32_t *ci = ws->cand_idx;
	float *cv = ws->cand_val;
	size_t n = 0, i = 0, cap = ws->cap;

#if defined(__x86_64__)
	if (__builtin_cpu_supports("avx2")) {
		n = gather_avx2(x, len, lo, ws, &i);
		if (n == SIZE_MAX)
			return n;
	}
#endif
#if defined(__SSE2__)
	const __m128i absmask = _mm_set1_epi32(0x7fffffff);
	const __m128i thr = _mm_set1_epi32((int)(lo - 1));

	for (; i + 8 <= len; i += 8) {
		__m128i a = _mm_loadu_si128((const __m128i *)(x + i));
		__m128i b = _mm_loadu_si128((const __m128i *)(x + i + 4));
		__m128i ga = _mm_cmpgt_epi32(_mm_and_si128(a, absmask), thr);
		__m128i gb = _mm_cmpgt_epi32(_mm_and_si128(b, absmask), thr);
		int mask = _mm_movemask_ps(_mm_castsi128_ps(ga)) |
			   (_mm_movemask_ps(_mm_castsi128_ps(gb)) << 4);

		if (__builtin_expect(mask == 0, 1))
			continue;
		if (n + 8 > cap)
			return SIZE_MAX;
		while (mask) {
			unsigned j = (unsigned)__builtin_ctz((unsigned)mask);

			ci[n] = (uint32_t)(i + j);
			cv[n] = x[i + j];
			n++;
			mask &= mask - 1;
		}
	}
#endif
	for (; i < len; i++) {
		if (spardl_key(x[i]) >= lo) {
			if (n == cap)
				return SIZE_MAX;
			ci[n] = (uint32_t)i;
			cv[n] = x[i];
			n++;
		}
	}
	return n;
}

size_t spardl_topk_block(float *x, size_t len, size_t m, uint32_t *idx, float *val,
			 struct spardl_topk_ws *ws)
{
	struct spardl_thr t;
	size_t n;

	if (m == 0 || len == 0)
		return 0;
	if (len >= SAMPLE_MIN_LEN && m < len / 8) {
		uint32_t lo = sample_bound(x, NULL, NULL, len, m);

		n = lo ? gather(x, len, lo, ws) : SIZE_MAX;
		/* Fewer than m gathered means the estimate was too high: the
		 * exact passes below decide instead. */
		if (n != SIZE_MAX && n >= m) {
			threshold(ws->cand_val, n, m, 0, &t, ws->tkeys, ws->tcap);
			n = collect(ws->cand_val, ws->cand_idx, n, &t, idx, val);
			goto zero;
		}
	}
	threshold(x, len, m, 0, &t, ws->tkeys, ws->tcap);
	n = collect(x, NULL, len, &t, idx, val);
zero:
	spardl_zero_at(x, idx, n);
	return n;
}

#if defined(__x86_64__)
/* The lanes of s set in mask m packed to the front of 8 stores at ci/cv
 * (their positions from pos); returns how many. */
__attribute__((target("avx2,popcnt"), always_inline)) static inline size_t
pack8(uint32_t *ci, float *cv, __m256i pos, __m256 s, unsigned m, const uint8_t *lut)
{
	__m256i perm = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(lut + 8 * m)));

	_mm256_storeu_si256((__m256i *)ci, _mm256_permutevar8x32_epi32(pos, perm));
	_mm256_storeu_ps(cv, _mm256_permutevar8x32_ps(s, perm));
	return (size_t)__builtin_popcount(m);
}

/* The loop of acc_gather_avx2(), compiled twice: with zbits known NULL and
 * with a bitmap, so neither tests it per group. */
__attribute__((target("avx2,popcnt"), always_inline)) static inline size_t
acc_gather_body(float *restrict acc, const float *restrict g, size_t len, int add, uint32_t lo, uint32_t *cidx,
		float *cval, size_t cap, const uint64_t *zbits, uint32_t base, int clear, size_t *done)
{
	/* clear: g is the caller's in-place buffer, zeroed as it is read. */
	float *gz = (float *)g;
	const int32_t *zlut = zbits ? lane_mask_lut() : NULL;
	const __m256i absmask = _mm256_set1_epi32(0x7fffffff);
	const __m256i thr = _mm256_set1_epi32((int)(lo - 1));
	const __m256 keep = add ? _mm256_castsi256_ps(_mm256_set1_epi32(-1)) : _mm256_setzero_ps();
	const __m256 quiet = _mm256_castsi256_ps(_mm256_set1_epi32(0x00400000));
	const __m256i eight = _mm256_set1_epi32(8);
	/* The group's positions, advanced by 8 a group (indices are 32-bit). */
	__m256i pos = _mm256_add_epi32(_mm256_set1_epi32((int)base), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
	const uint8_t *lut = pack_lut();
	/* n at or past full (full16): no room for 8 (16) more stores, which
	 * the overflow mark n = SIZE_MAX is too. */
	const size_t full = cap >= 8 ? cap - 7 : 0, full16 = cap >= 16 ? cap - 15 : 0;
	const __m256i sixteen = _mm256_set1_epi32(16);
	size_t n = 0, i = 0;

	/* Sixteen lanes a turn: the sums stored, and the candidates packed
	 * only where the turn has one (about one turn in five on normal data,
	 * so the branch mispredicts less often than a turn of packing costs). */
	for (; i + 16 <= len; i += 16, pos = _mm256_add_epi32(pos, sixteen)) {
		__m256 g0, g1, a0, a1, s0, s1, un;
		unsigned m0, m1;

		spardl_prefetch_stream(g + i + STREAM_AHEAD);
		spardl_prefetch_stream(acc + i + STREAM_AHEAD);
		g0 = _mm256_loadu_ps(g + i);
		g1 = _mm256_loadu_ps(g + i + 8);
		if (clear) {
			_mm256_storeu_ps(gz + i, _mm256_setzero_ps());
			_mm256_storeu_ps(gz + i + 8, _mm256_setzero_ps());
		}
		a0 = _mm256_and_ps(_mm256_loadu_ps(acc + i), keep);
		a1 = _mm256_and_ps(_mm256_loadu_ps(acc + i + 8), keep);
		if (zbits) {
			/* Lanes whose residual is a pending zero: bits i to
			 * i + 15, bytes i / 8 and i / 8 + 1 (little-endian). */
			const uint8_t *zb = (const uint8_t *)zbits + (i >> 3);

			a0 = _mm256_andnot_ps(_mm256_load_ps((const float *)(zlut + 8 * zb[0])), a0);
			a1 = _mm256_andnot_ps(_mm256_load_ps((const float *)(zlut + 8 * zb[1])), a1);
		}
		/* g + acc, the order of SPEC's acc = g + residual, NaNs
		 * included (spardl_add): g's NaN wins, then acc's, quieted.
		 * A NaN operand makes its sum NaN: only then pick the NaN. */
		s0 = _mm256_add_ps(g0, a0);
		s1 = _mm256_add_ps(g1, a1);
		if (!add) {
			/* acc = g as it is: -0 stays -0, a NaN keeps its bits. */
			s0 = g0;
			s1 = g1;
		}
		un = _mm256_cmp_ps(s0, s1, _CMP_UNORD_Q);
		if (add && __builtin_expect(!_mm256_testz_ps(un, un), 0)) {
			s0 = _mm256_blendv_ps(s0, _mm256_or_ps(a0, quiet), _mm256_cmp_ps(a0, a0, _CMP_UNORD_Q));
			s0 = _mm256_blendv_ps(s0, _mm256_or_ps(g0, quiet), _mm256_cmp_ps(g0, g0, _CMP_UNORD_Q));
			s1 = _mm256_blendv_ps(s1, _mm256_or_ps(a1, quiet), _mm256_cmp_ps(a1, a1, _CMP_UNORD_Q));
			s1 = _mm256_blendv_ps(s1, _mm256_or_ps(g1, quiet), _mm256_cmp_ps(g1, g1, _CMP_UNORD_Q));
		}
		_mm256_storeu_ps(acc + i, s0);
		_mm256_storeu_ps(acc + i + 8, s1);
		m0 = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(
			_mm256_cmpgt_epi32(_mm256_and_si256(_mm256_castps_si256(s0), absmask), thr)));
		m1 = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(
			_mm256_cmpgt_epi32(_mm256_and_si256(_mm256_castps_si256(s1), absmask), thr)));
		if (__builtin_expect(!(m0 | m1), 1))
			continue;
		if (__builtin_expect(n >= full16, 0)) {
			/* Near the end of the room: half by half, each needing
			 * room for its 8 stores only when it has a candidate. */
			if (m0) {
				if (n >= full) {
					n = SIZE_MAX;
					continue;
				}
				n += pack8(cidx + n, cval + n, pos, s0, m0, lut);
			}
			if (m1) {
				if (n >= full) {
					n = SIZE_MAX;
					continue;
				}
				n += pack8(cidx + n, cval + n, _mm256_add_epi32(pos, eight), s1, m1, lut);
			}
			continue;
		}
		n += pack8(cidx + n, cval + n, pos, s0, m0, lut);
		n += pack8(cidx + n, cval + n, _mm256_add_epi32(pos, eight), s1, m1, lut);
	}
	/* The last group of eight, if any. */
	for (; i + 8 <= len; i += 8, pos = _mm256_add_epi32(pos, eight)) {
		/* g + acc, the order of SPEC's acc = g + residual, NaNs
		 * included (spardl_add): g's NaN wins, then acc's, quieted. */
		__m256 gv = _mm256_loadu_ps(g + i), av = _mm256_and_ps(_mm256_loadu_ps(acc + i), keep);
		__m256 s, sn;
		__m256i gt, perm;
		unsigned mask;

		if (clear)
			_mm256_storeu_ps(gz + i, _mm256_setzero_ps());

		if (zbits) {
			/* Lanes whose residual is a pending zero: bits i to
			 * i + 7, byte i / 8 on a little-endian machine. */
			unsigned zb = ((const uint8_t *)zbits)[i >> 3];

			av = _mm256_andnot_ps(_mm256_load_ps((const float *)(zlut + 8 * zb)), av);
		}
		s = add ? _mm256_add_ps(gv, av) : gv;
		sn = _mm256_cmp_ps(s, s, _CMP_UNORD_Q);

		/* A NaN operand makes the sum NaN: only then pick the NaN. */
		if (add && __builtin_expect(!_mm256_testz_ps(sn, sn), 0)) {
			s = _mm256_blendv_ps(s, _mm256_or_ps(av, quiet), _mm256_cmp_ps(av, av, _CMP_UNORD_Q));
			s = _mm256_blendv_ps(s, _mm256_or_ps(gv, quiet), _mm256_cmp_ps(gv, gv, _CMP_UNORD_Q));
		}
		gt = _mm256_cmpgt_epi32(_mm256_and_si256(_mm256_castps_si256(s), absmask), thr);
		mask = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(gt));
		_mm256_storeu_ps(acc + i, s);
		if (__builtin_expect(n >= full, 0)) {
			if (mask)
				n = SIZE_MAX;
			continue;
		}
		/* Branch-free: the candidates of these 8 lanes packed to the
		 * front of 8 stores, kept by advancing n (a branch on whether
		 * a group has one would mispredict at every candidate). */
		perm = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(lut + 8 * mask)));
		_mm256_storeu_si256((__m256i *)(cidx + n), _mm256_permutevar8x32_epi32(pos, perm));
		_mm256_storeu_ps(cval + n, _mm256_permutevar8x32_ps(s, perm));
		n += (size_t)__builtin_popcount(mask);
	}
	*done = i;
	return n;
}

__attribute__((target("avx2,popcnt"))) static size_t acc_gather_avx2(float *restrict acc, const float *restrict g,
								       size_t len, int add, uint32_t lo, uint32_t *cidx,
								       float *cval, size_t cap, const uint64_t *zbits,
								       uint32_t base, int clear, size_t *done)
{
	if (clear)
		return zbits ? acc_gather_body(acc, g, len, add, lo, cidx, cval, cap, zbits, base, 1, done) :
			       acc_gather_body(acc, g, len, add, lo, cidx, cval, cap, NULL, base, 1, done);
	if (zbits)
		return acc_gather_body(acc, g, len, add, lo, cidx, cval, cap, zbits, base, 0, done);
	return acc_gather_body(acc, g, len, add, lo, cidx, cval, cap, NULL, base, 0, done);
}

/*
 * The same pass sixteen lanes a turn in one 512-bit register. acc is read
 * with the pending zeros' lanes masked off (a zero-masking load: the
 * bitmap's 16 bits are the mask), which costs nothing per turn, where the
 * AVX2 loop spends a lookup and two ANDs on it. The candidates are packed
 * with a compress in registers and stored whole where 16 slots remain,
 * else exactly (a masked store), so the room check is exact.
 */
__attribute__((target("avx512f,popcnt"), always_inline)) static inline size_t
acc_gather_body512(float *restrict acc, const float *restrict g, size_t len, int add, uint32_t lo, uint32_t *cidx,
		   float *cval, size_t cap, const uint64_t *zbits, uint32_t base, int clear, size_t *done)
{
	float *gz = (float *)g;
	const __m512i absmask = _mm512_set1_epi32(0x7fffffff);
	const __m512i thr = _mm512_set1_epi32((int)(lo - 1));
	const __m512 quiet = _mm512_castsi512_ps(_mm512_set1_epi32(0x00400000));
	const __m512i sixteen = _mm512_set1_epi32(16);
	__m512i pos = _mm512_add_epi32(_mm512_set1_epi32((int)base),
				       _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
	size_t n = 0, i = 0;

	for (; i + 16 <= len; i += 16, pos = _mm512_add_epi32(pos, sixteen)) {
		__mmask16 keep = add ? (__mmask16)0xffff : 0, m;
		__m512 gv, av, s;
		unsigned pc;

		spardl_prefetch_stream(g + i + STREAM_AHEAD);
		spardl_prefetch_stream(acc + i + STREAM_AHEAD);
		if (zbits) {
			/* Bits i to i + 15: bytes i / 8 and i / 8 + 1. */
			uint16_t zw;

			memcpy(&zw, (const uint8_t *)zbits + (i >> 3), sizeof(zw));
			keep &= (__mmask16)~zw;
		}
		gv = _mm512_loadu_ps(g + i);
		if (clear)
			_mm512_storeu_ps(gz + i, _mm512_setzero_ps());
		av = add ? _mm512_maskz_mov_ps(keep, _mm512_loadu_ps(acc + i)) : _mm512_setzero_ps();
		/* g + acc in SPEC's order, NaNs as spardl_add: g's NaN wins,
		 * then acc's, quieted; only when the sum is NaN somewhere. */
		/* acc = g as it is without a residual: -0 stays -0. */
		s = add ? _mm512_add_ps(gv, av) : gv;
		if (add && __builtin_expect(_mm512_cmp_ps_mask(s, s, _CMP_UNORD_Q) != 0, 0)) {
			s = _mm512_mask_mov_ps(s, _mm512_cmp_ps_mask(av, av, _CMP_UNORD_Q),
					       _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(av),
										   _mm512_castps_si512(quiet))));
			s = _mm512_mask_mov_ps(s, _mm512_cmp_ps_mask(gv, gv, _CMP_UNORD_Q),
					       _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(gv),
										   _mm512_castps_si512(quiet))));
		}
		_mm512_storeu_ps(acc + i, s);
		m = _mm512_cmpgt_epi32_mask(_mm512_and_si512(_mm512_castps_si512(s), absmask), thr);
		if (__builtin_expect(m == 0, 1))
			continue;
		if (__builtin_expect(n == SIZE_MAX, 0))
			continue;
		pc = (unsigned)__builtin_popcount((unsigned)m);
		if (__builtin_expect(cap - n >= 16, 1)) {
			_mm512_storeu_si512(cidx + n, _mm512_maskz_compress_epi32(m, pos));
			_mm512_storeu_ps(cval + n, _mm512_maskz_compress_ps(m, s));
		} else if (pc <= cap - n) {
			__mmask16 first = (__mmask16)((1u << pc) - 1u);

			_mm512_mask_storeu_epi32(cidx + n, first, _mm512_maskz_compress_epi32(m, pos));
			_mm512_mask_storeu_ps(cval + n, first, _mm512_maskz_compress_ps(m, s));
		} else {
			n = SIZE_MAX;
			continue;
		}
		n += pc;
	}
	*done = i;
	return n;
}

__attribute__((target("avx512f,popcnt"))) static size_t acc_gather_avx512(float *restrict acc, const float *restrict g,
									    size_t len, int add, uint32_t lo,
									    uint32_t *cidx, float *cval, size_t cap,
									    const uint64_t *zbits, uint32_t base,
									    int clear, size_t *done)
{
	/* Compiled four times, so that neither test is made per turn. */
	if (clear)
		return zbits ? acc_gather_body512(acc, g, len, add, lo, cidx, cval, cap, zbits, base, 1, done) :
			       acc_gather_body512(acc, g, len, add, lo, cidx, cval, cap, NULL, base, 1, done);
	if (zbits)
		return acc_gather_body512(acc, g, len, add, lo, cidx, cval, cap, zbits, base, 0, done);
	return acc_gather_body512(acc, g, len, add, lo, cidx, cval, cap, NULL, base, 0, done);
}
#endif

int spardl_topk_isa = 2;

size_t spardl_topk_acc_gather(float *restrict acc, const float *restrict g, size_t len, int add, uint32_t lo,
			      uint32_t *cidx, float *cval, size_t cap)
{
	return spardl_topk_acc_gather_z(acc, g, len, add, lo, cidx, cval, cap, NULL);
}

size_t spardl_topk_acc_gather_z(float *restrict acc, const float *restrict g, size_t len, int add, uint32_t lo,
				uint32_t *cidx, float *cval, size_t cap, const uint64_t *zbits)
{
	return spardl_topk_acc_gather_at(acc, g, len, add, lo, cidx, cval, cap, zbits, 0, 0);
}

size_t spardl_topk_acc_gather_at(float *restrict acc, const float *restrict g, size_t len, int add, uint32_t lo,
				 uint32_t *cidx, float *cval, size_t cap, const uint64_t *zbits, uint32_t base,
				 int clear)
{
	size_t n = 0, i = 0;

#if defined(__x86_64__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	if (spardl_topk_isa >= 2 && __builtin_cpu_supports("avx512f"))
		n = acc_gather_avx512(acc, g, len, add, lo, cidx, cval, cap, zbits, base, clear, &i);
	else if (spardl_topk_isa >= 1 && __builtin_cpu_supports("avx2"))
		n = acc_gather_avx2(acc, g, len, add, lo, cidx, cval, cap, zbits, base, clear, &i);
#endif
	for (; i < len; i++) {
		float a = zbits && spardl_bit(zbits, i) ? 0.0f : acc[i];
		float v = add ? spardl_add(g[i], a) : g[i];

		acc[i] = v;
		if (clear)
			((float *)g)[i] = 0.0f;
		if (n != SIZE_MAX && spardl_key(v) >= lo) {
			if (n == cap) {
				n = SIZE_MAX;
			} else {
				cidx[n] = base + (uint32_t)i;
				cval[n++] = v;
			}
		}
	}
	return n;
}

size_t spardl_topk_from_cands(size_t m, uint32_t lo, const uint32_t *cidx, const float *cval, size_t nc,
			      const uint32_t *const *lists, const float *const *lvals, const uint32_t *lcount, size_t nl,
			      uint32_t *idx, float *val, struct spardl_topk_ws *ws)
{
	const uint32_t *u = cidx;
	const float *uv = cval;
	size_t n = nc, total = nc, cnt, l;
	struct spardl_thr t;
	int cur = 0;

	if (m == 0)
		return 0;
	for (l = 0; l < nl; l++)
		total += lcount[l];
	if (total > ws->ucap)
		return SIZE_MAX;
	for (l = 0; l < nl; l++) {
		n = spardl_union(u, uv, n, lists[l], lvals[l], lcount[l], ws->u[cur], ws->uv[cur]);
		u = ws->u[cur];
		uv = ws->uv[cur];
		cur ^= 1;
	}
	/* Every position outside the union still has a key below lo, so with
	 * m keys at or above lo inside it, the union holds the answer. */
	if (!threshold_sampled(uv, n, m, lo, &t, ws->tkeys, ws->tcap, ws))
		return SIZE_MAX;
	cnt = collect(uv, u, n, &t, idx, val);
	return cnt;
}
