/* SPDX-License-Identifier: MIT */
/* Tests of the top-k selection (SPEC section 3) against a naive sort-based reference. */
#include <check.h>

#include "unit.h"
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fp.h"
#include "topk.h"

/* Per-element checks: Check records every passing ck_assert (a write per
 * call), so loops over a million entries only call it on a failure. */
#define REQUIRE(cond, ...)                              \
	do {                                            \
		if (!(cond))                            \
			ck_abort_msg(__VA_ARGS__);      \
	} while (0)

/* ---- a naive reference, independent of the library ---- */

/* 3: NaN, 2: +-Inf, 1: finite. */
static int mag_class(float v)
{
	if (isnan(v))
		return 3;
	if (isinf(v))
		return 2;
	return 1;
}

/* > 0 when |a| ranks above |b|, 0 when they tie (all NaNs are equal). */
static int mag_cmp(float a, float b)
{
	int ca = mag_class(a), cb = mag_class(b);
	float fa, fb;

	if (ca != cb)
		return ca > cb ? 1 : -1;
	if (ca != 1)
		return 0;
	fa = fabsf(a);
	fb = fabsf(b);
	return fa > fb ? 1 : fa < fb ? -1 : 0;
}

struct ent {
	uint32_t idx;
	float val;
};

/* Rank order: larger magnitude first, ties by the smaller index. */
static int ent_rank(const void *pa, const void *pb)
{
	const struct ent *a = pa, *b = pb;
	int c = mag_cmp(a->val, b->val);

	if (c)
		return -c;
	return a->idx < b->idx ? -1 : a->idx > b->idx;
}

static int ent_index(const void *pa, const void *pb)
{
	const struct ent *a = pa, *b = pb;

	return a->idx < b->idx ? -1 : a->idx > b->idx;
}

static int is_zero(float v)
{
	return !isnan(v) && v == 0.0f; /* +0 and -0 */
}

/* topk(x, m) by sorting: the selected entries in ascending index order
 * (sel must hold min(m, len) entries); returns the count. */
static size_t naive_topk(const float *x, size_t len, size_t m, struct ent *sel)
{
	struct ent *all = malloc((len ? len : 1) * sizeof(*all));
	size_t nz = 0, i, n;

	ck_assert_ptr_nonnull(all);
	for (i = 0; i < len; i++) {
		if (is_zero(x[i]))
			continue;
		all[nz].idx = (uint32_t)i;
		all[nz].val = x[i];
		nz++;
	}
	qsort(all, nz, sizeof(*all), ent_rank);
	n = nz < m ? nz : m;
	memcpy(sel, all, n * sizeof(*sel));
	qsort(sel, n, sizeof(*sel), ent_index);
	free(all);
	return n;
}

/* The ordering key of the header's threshold contract, written out here:
 * |v| as bits, every NaN one key above +Inf. */
static uint32_t ref_key(float v)
{
	uint32_t u;

	if (isnan(v))
		return 0x7f800001u;
	memcpy(&u, &v, sizeof(u));
	return u & 0x7fffffffu;
}

/* ---- data generators ---- */

/* Uniform in [0, 1). */
static double rng_unif(void)
{
	return (double)(rng_next() >> 11) * (1.0 / 9007199254740992.0);
}

static float rng_normal(void)
{
	double u1 = rng_unif(), u2 = rng_unif();

	if (u1 < 1e-300)
		u1 = 1e-300;
	return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

typedef void (*gen_fn)(float *x, size_t len);

/* Random floats in [-1, 1] over many magnitudes, with some exact zeros. */
static void gen_uniform(float *x, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		double u = rng_unif() * 2.0 - 1.0;

		x[i] = rng_next() % 17 == 0 ? 0.0f : (float)(u * pow(10.0, -(double)(rng_next() % 6)));
	}
}

/* Integer values in {-2..2}: massive ties. */
static void gen_int5(float *x, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		x[i] = (float)((int)(rng_next() % 5) - 2);
}

/* Values in {0, 1, 2}. */
static void gen_012(float *x, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		x[i] = (float)(rng_next() % 3);
}

/* Values in {-1, 1}: every entry ties. */
static void gen_pm1(float *x, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		x[i] = (rng_next() & 1) ? 1.0f : -1.0f;
}

static void gen_ones(float *x, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		x[i] = 1.0f;
}

static void gen_zeros(float *x, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		x[i] = (i & 1) ? -0.0f : 0.0f;
}

/* Five non-zeros (one of them negative, two tied) in a sea of zeros. */
static void gen_five(float *x, size_t len)
{
	static const float v[5] = { 3.0f, -7.5f, 0.25f, 3.0f, 1e-30f };
	size_t i;

	gen_zeros(x, len);
	for (i = 0; i < 5 && i < len; i++)
		x[(i * 7919 + 13) % len] = v[i];
}

static void gen_one_value(float *x, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		x[i] = -3.5f;
}

/* NaNs (several payloads, both signs), +-Inf, finite values, zeros. */
static void gen_special(float *x, size_t len)
{
	static const uint32_t nans[] = { 0x7fc00000u, 0xffc00000u, 0x7fc00123u, 0xffd00001u };
	size_t i;

	for (i = 0; i < len; i++) {
		switch (rng_next() % 10) {
		case 0:
			x[i] = from_bits(nans[rng_next() % 4]);
			break;
		case 1:
			x[i] = INFINITY;
			break;
		case 2:
			x[i] = -INFINITY;
			break;
		case 3:
			x[i] = (rng_next() & 1) ? -0.0f : 0.0f;
			break;
		case 4:
			x[i] = (rng_next() & 1) ? FLT_MAX : -FLT_MAX;
			break;
		default:
			x[i] = (float)(rng_unif() * 200.0 - 100.0);
		}
	}
}

/* Denormals of many magnitudes and both signs, the smallest normals, zeros. */
static void gen_denormal(float *x, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		uint32_t mant = (uint32_t)(rng_next() % 0x7fffffu) + 1u;
		uint32_t sign = (rng_next() & 1) ? 0x80000000u : 0u;

		switch (rng_next() % 8) {
		case 0:
			x[i] = 0.0f;
			break;
		case 1:
			x[i] = from_bits(sign | 0x00800000u); /* smallest normal */
			break;
		case 2:
			x[i] = from_bits(sign | 1u); /* smallest denormal */
			break;
		default:
			x[i] = from_bits(sign | (mant >> (rng_next() % 20)) | 1u);
		}
	}
}

/* Mostly -0.0 with a few small values. */
static void gen_negzero(float *x, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		x[i] = rng_next() % 13 == 0 ? (float)(rng_unif() - 0.5) : -0.0f;
}

static void gen_normal(float *x, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		x[i] = rng_normal();
}

/* Normal data with NaNs and infinities sprinkled in. */
static void gen_normal_special(float *x, size_t len)
{
	size_t i;

	gen_normal(x, len);
	for (i = 0; i < 300; i++) {
		size_t at = (size_t)(rng_next() % len);

		x[at] = i % 3 == 0 ? NAN : i % 3 == 1 ? INFINITY : -INFINITY;
	}
}

/* Positions a sampler plausibly looks at: 8192 evenly spaced entries, and
 * the first 32 entries of 256 evenly spaced runs. */
static void mark_sampled(float *x, size_t len, float v)
{
	size_t i, j;

	for (i = 0; i < 8192; i++)
		x[(size_t)((double)i * (double)len / 8192.0)] = v;
	for (i = 0; i < 256; i++)
		for (j = 0; j < 32; j++)
			x[i * (len / 256) + j] = v;
}

/* The sampled positions hold large values, everything else is small: a
 * sample-based bound lands too high and gathers fewer than m candidates
 * (m must exceed the ~16k marked entries). */
static void gen_samples_high(float *x, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		x[i] = rng_normal() * 0.01f;
	mark_sampled(x, len, 100.0f);
	for (i = 0; i < 64; i++)
		x[(size_t)(rng_next() % len)] = 101.0f + (float)i;
}

/* The sampled positions hold zeros: a sample sees nothing. */
static void gen_samples_zero(float *x, size_t len)
{
	gen_normal(x, len);
	mark_sampled(x, len, 0.0f);
}

/* 0.1% non-zeros at random positions: a sample sees too few to bound
 * anything. */
static void gen_sparse_random(float *x, size_t len)
{
	size_t i;

	gen_zeros(x, len);
	for (i = 0; i < len / 1000; i++)
		x[(size_t)(rng_next() % len)] = rng_normal();
}

/* Normal data whose largest entries sit in the last few positions (the
 * scalar tail of a vectorised scan). */
static void gen_huge_tail(float *x, size_t len)
{
	size_t i;

	gen_normal(x, len);
	for (i = 1; i <= 15 && i <= len; i++)
		x[len - i] = 1000.0f + (float)i;
}

/* A few huge values, the rest in a narrow band: almost every entry ties
 * in the coarse sample histogram. */
static void gen_narrow(float *x, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		x[i] = 1.0f + (float)(rng_next() % 1024) * (1.0f / 8388608.0f);
	for (i = 0; i < 50; i++)
		x[(size_t)(rng_next() % len)] = 1000.0f;
}

/* ---- the case table ---- */

struct tcase_def {
	const char *name;
	gen_fn gen;
	size_t len, m;
};

#define K17 ((size_t)1 << 17)
#define K18 ((size_t)1 << 18)
#define M20 ((size_t)1 << 20)

static const struct tcase_def cases[] = {
	{ "uniform", gen_uniform, 1000, 10 },
	{ "uniform", gen_uniform, 1000, 100 },
	{ "uniform m=1", gen_uniform, 1000, 1 },
	{ "uniform m=len-1", gen_uniform, 1000, 999 },
	{ "uniform m=len", gen_uniform, 1000, 1000 },
	{ "uniform m>len", gen_uniform, 1000, 5000 },
	{ "uniform m=0", gen_uniform, 100, 0 },
	{ "uniform odd len", gen_uniform, 37, 5 },
	{ "uniform 4099", gen_uniform, 4099, 409 },
	{ "int {-2..2}", gen_int5, 1000, 10 },
	{ "int {-2..2}", gen_int5, 1000, 300 },
	{ "int {-2..2}", gen_int5, 4096, 1000 },
	{ "int {-2..2} m=1", gen_int5, 1000, 1 },
	{ "int {-2..2}", gen_int5, 100000, 2000 },
	{ "{0,1,2}", gen_012, 5000, 2000 },
	{ "all equal", gen_one_value, 1000, 10 },
	{ "all equal m=1", gen_one_value, 1000, 1 },
	{ "all zeros", gen_zeros, 1000, 10 },
	{ "all zeros m>len", gen_zeros, 10, 100 },
	{ "five non-zeros m>nnz", gen_five, 1000, 10 },
	{ "five non-zeros m=nnz", gen_five, 1000, 5 },
	{ "five non-zeros m<nnz", gen_five, 1000, 4 },
	{ "five non-zeros m=1", gen_five, 1000, 1 },
	{ "len 0", gen_uniform, 0, 5 },
	{ "len 1", gen_one_value, 1, 1 },
	{ "len 1 m=5", gen_one_value, 1, 5 },
	{ "len 1 zero", gen_zeros, 1, 1 },
	{ "NaN/Inf", gen_special, 200, 5 },
	{ "NaN/Inf", gen_special, 200, 30 },
	{ "NaN/Inf", gen_special, 200, 150 },
	{ "NaN/Inf m=1", gen_special, 200, 1 },
	{ "denormals", gen_denormal, 500, 20 },
	{ "denormals", gen_denormal, 500, 400 },
	{ "-0.0", gen_negzero, 300, 10 },
	{ "-0.0 m>nnz", gen_negzero, 300, 200 },
	/* Large blocks: the sampled fast path. */
	{ "normal 300000 1%", gen_normal, 300000, 3000 },
	{ "normal 300000 10%", gen_normal, 300000, 30000 },
	{ "normal 2^20 1%", gen_normal, M20, 10486 },
	{ "normal 2^20 10%", gen_normal, M20, 104858 },
	{ "normal 2^20 m=1", gen_normal, M20, 1 },
	{ "normal+NaN/Inf 300000", gen_normal_special, 300000, 3000 },
	{ "normal+NaN/Inf 300000 m<nonfinite", gen_normal_special, 300000, 100 },
	{ "narrow band 2^18", gen_narrow, K18, 2000 },
	{ "normal 2^17 m=len/8-1", gen_normal, K17, K17 / 8 - 1 },
	{ "normal 2^17 m=len/8", gen_normal, K17, K17 / 8 },
	{ "normal 2^17-1", gen_normal, K17 - 1, 1000 },
	/* Large blocks with heavy ties: the candidates overflow, exact fallback. */
	{ "ones 2^18 m=1000", gen_ones, K18, 1000 },
	{ "{0,1,2} 2^18 m=1000", gen_012, K18, 1000 },
	{ "{0,1,2} 2^18 m=20000", gen_012, K18, 20000 },
	{ "int {-2..2} 2^20 1%", gen_int5, M20, 10486 },
	{ "{-1,1} 2^20 1%", gen_pm1, M20, 10486 },
	/* Sample-based bound too high, or no sample above zero. */
	{ "samples high 2^20", gen_samples_high, M20, 20000 },
	{ "samples zero 2^18", gen_samples_zero, K18, 2621 },
	{ "sparse 0.1% 2^18 m=0.05%", gen_sparse_random, K18, 131 },
	{ "sparse 0.1% 2^18 m=1%", gen_sparse_random, K18, 2621 },
	{ "zeros 2^18", gen_zeros, K18, 2621 },
	/* Lengths that leave a scalar tail after the vector loops. */
	{ "huge tail 300007", gen_huge_tail, 300007, 10 },
	{ "huge tail 2^17+13", gen_huge_tail, K17 + 13, 3000 },
};

#define NCASES ((int)(sizeof(cases) / sizeof(cases[0])))

static size_t max_m(void)
{
	size_t mm = 1;
	int i;

	for (i = 0; i < NCASES; i++)
		if (cases[i].m > mm && cases[i].m <= cases[i].len)
			mm = cases[i].m;
	return mm;
}

/* ---- checks ---- */

/* Run spardl_topk_block on case c with workspace ws; compare everything
 * with the naive reference. */
static void check_block(int ci, struct spardl_topk_ws *ws)
{
	const struct tcase_def *c = &cases[ci];
	size_t len = c->len, m = c->m, cap = m < len ? m : len, n, exp_n, i, j;
	float *x = malloc((len ? len : 1) * sizeof(*x));
	float *orig = malloc((len ? len : 1) * sizeof(*orig));
	/* Outputs get a guard tail that must stay untouched. */
	uint32_t *idx = malloc((cap + 16) * sizeof(*idx));
	float *val = malloc((cap + 16) * sizeof(*val));
	struct ent *sel = malloc((cap + 1) * sizeof(*sel));
	unsigned char *selected = calloc(len ? len : 1, 1);

	ck_assert(x && orig && idx && val && sel && selected);
	rng_seed(1000 + (uint64_t)ci);
	c->gen(x, len);
	memcpy(orig, x, len * sizeof(*x));
	for (i = 0; i < cap + 16; i++) {
		idx[i] = 0xdeadbeefu;
		val[i] = from_bits(0x7fc0beefu);
	}

	exp_n = naive_topk(orig, len, m, sel);
	n = spardl_topk_block(x, len, m, idx, val, ws);

	REQUIRE(n == exp_n, "case %d (%s, len %zu, m %zu): count %zu, expected %zu", ci, c->name,
		      len, m, n, exp_n);
	for (i = 0; i < n; i++) {
		REQUIRE(idx[i] == sel[i].idx,
			      "case %d (%s, len %zu, m %zu): idx[%zu] = %u, expected %u", ci, c->name, len,
			      m, i, idx[i], sel[i].idx);
		REQUIRE(bits(val[i]) == bits(sel[i].val),
			      "case %d (%s): val[%zu] = %08x, expected %08x", ci, c->name, i,
			      bits(val[i]), bits(sel[i].val));
		if (i)
			REQUIRE(idx[i - 1] < idx[i], "case %d (%s): indices not ascending at %zu",
				      ci, c->name, i);
		selected[idx[i]] = 1;
	}
	for (i = n; i < cap + 16; i++) {
		REQUIRE(idx[i] == 0xdeadbeefu && bits(val[i]) == 0x7fc0beefu,
			      "case %d (%s): output written past the count (%zu)", ci, c->name, i);
	}
	for (j = 0; j < len; j++) {
		if (selected[j])
			REQUIRE(is_zero(x[j]), "case %d (%s): selected x[%zu] not zeroed (%08x)",
				      ci, c->name, j, bits(x[j]));
		else
			REQUIRE(bits(x[j]) == bits(orig[j]),
				      "case %d (%s): unselected x[%zu] changed %08x -> %08x", ci, c->name,
				      j, bits(orig[j]), bits(x[j]));
	}

	/* A second selection from what is left continues the ranking: the
	 * two together are the top min(2m, len) of the original. */
	if (m > 0 && 2 * m <= len && len <= 400000) {
		size_t n2, exp2;
		uint32_t *idx2 = malloc(m * sizeof(*idx2));
		float *val2 = malloc(m * sizeof(*val2));
		struct ent *sel2 = malloc(2 * m * sizeof(*sel2));
		unsigned char *want = calloc(len, 1);

		ck_assert(idx2 && val2 && sel2 && want);
		n2 = spardl_topk_block(x, len, m, idx2, val2, ws);
		exp2 = naive_topk(orig, len, 2 * m, sel2);
		REQUIRE(n + n2 == exp2, "case %d (%s): m then m selected %zu + %zu, top-2m has %zu",
			      ci, c->name, n, n2, exp2);
		for (i = 0; i < exp2; i++)
			want[sel2[i].idx] = 1;
		for (i = 0; i < n2; i++) {
			REQUIRE(want[idx2[i]] && !selected[idx2[i]],
				      "case %d (%s): second selection picked %u", ci, c->name, idx2[i]);
			REQUIRE(bits(val2[i]) == bits(orig[idx2[i]]), "case %d: second value", ci);
		}
		free(idx2);
		free(val2);
		free(sel2);
		free(want);
	}
	free(x);
	free(orig);
	free(idx);
	free(val);
	free(sel);
	free(selected);
}

START_TEST(test_block_ws_max)
{
	struct spardl_topk_ws ws;

	ck_assert_int_eq(spardl_topk_ws_init(&ws, max_m(), 0), 0);
	check_block(_i, &ws);
	spardl_topk_ws_fini(&ws);
	ck_assert_ptr_null(ws.cand_idx);
	ck_assert_ptr_null(ws.cand_val);
}
END_TEST

/* The smallest workspace the contract allows: sized for this m. */
START_TEST(test_block_ws_exact)
{
	struct spardl_topk_ws ws;
	size_t m = cases[_i].m;

	ck_assert_int_eq(spardl_topk_ws_init(&ws, m ? m : 1, 0), 0);
	check_block(_i, &ws);
	spardl_topk_ws_fini(&ws);
}
END_TEST

/* spardl_topk_threshold: applying the returned threshold as the header
 * defines it selects exactly the naive top-k set. */
/* The fused path of a plan: acc += g while gathering candidates, then
 * positions changed by received lists, then the selection from candidates
 * (or, when they cannot prove it, a scan). Both must equal the naive rule. */
static void check_cands(int _i, int mode)
{
	const struct tcase_def *c = &cases[_i];
	size_t len = c->len, m = c->m, cap = m < len ? m : len, i, l, n, exp_n, nc = SIZE_MAX;
	size_t ccap = spardl_topk_cand_cap(m ? m : 1), extra = 2 * (m + 1);
	float *g = malloc((len ? len : 1) * sizeof(float)), *a = malloc((len ? len : 1) * sizeof(float));
	float *want = malloc((len ? len : 1) * sizeof(float)), *before = malloc((len ? len : 1) * sizeof(float));
	uint32_t *cand = malloc(ccap * sizeof(uint32_t)), *lists[2], lcount[2] = { 0, 0 };
	float *lvals[2];
	float *cval = malloc(ccap * sizeof(float));
	uint32_t *idx = malloc((cap + 1) * sizeof(uint32_t));
	float *val = malloc((cap + 1) * sizeof(float));
	struct ent *sel = malloc((cap + 1) * sizeof(*sel));
	struct spardl_topk_ws ws;
	uint32_t lo;

	ck_assert(g && a && want && before && cand && idx && val && sel);
	ck_assert_int_eq(spardl_topk_ws_init(&ws, m ? m : 1, extra), 0);
	rng_seed(5000 + (uint64_t)_i);
	c->gen(g, len);
	for (i = 0; i < len; i++) {
		/* An integer-valued residual on half the cases: sums stay exact. */
		a[i] = (_i & 1) ? (float)((int)(rng_next() % 5) - 2) : 0.0f;
		want[i] = a[i] + g[i];
	}
	lo = spardl_topk_bound(g, a, NULL, len, m);
	if (lo) {
		nc = spardl_topk_acc_gather(a, g, len, 1, lo, cand, cval, ccap);
		if (nc != SIZE_MAX) {
			size_t k = 0;

			for (i = 0; i < len; i++)
				if (spardl_key(want[i]) >= lo) {
					REQUIRE(k < nc && cand[k] == i && bits(cval[k]) == bits(want[i]),
						"case %d (%s): candidate %zu is not %zu", _i, c->name, k, i);
					k++;
				}
			REQUIRE(k == nc, "case %d (%s): %zu candidates, expected %zu", _i, c->name, nc, k);
		}
	} else {
		for (i = 0; i < len; i++)
			a[i] += g[i];
	}
	for (i = 0; i < len; i++)
		REQUIRE(bits(a[i]) == bits(want[i]), "case %d (%s): acc[%zu] is not g + residual", _i,
			c->name, i);
	if (c->gen == gen_normal && lo && len >= K17 && m < len / 8)
		REQUIRE(nc != SIZE_MAX, "case %d (%s): normal data overflowed the candidates", _i, c->name);
	/* The sampled bound is tight on normal data (about 1.3 m candidates
	 * at 2^20 and 1%): every extra candidate is selection work. */
	if (c->gen == gen_normal && lo && len >= M20 && m >= 10000)
		REQUIRE(nc <= m + m / 2, "case %d (%s): %zu candidates for m = %zu: the bound is loose", _i, c->name,
			nc, m);
	/* Two received lists change some positions, candidates or not. */
	for (l = 0; l < 2; l++) {
		lists[l] = malloc((m + 1) * sizeof(uint32_t));
		lvals[l] = malloc((m + 1) * sizeof(float));
		ck_assert(lists[l] && lvals[l]);
		size_t want_n = mode == 0 ? 0 : mode == 2 ? m + 1 : m / 8 + 1;
		int amp = mode == 2 ? 1000 : 2;

		for (i = 0; len && i < len && lcount[l] < want_n; i += 1 + rng_next() % (len / want_n + 1)) {
			lists[l][lcount[l]++] = (uint32_t)i;
			a[i] += (float)((int)(rng_next() % (2 * (unsigned)amp + 1)) - amp);
		}
		/* The values as the list left them: a later list may change
		 * the same positions again. */
		for (i = 0; i < lcount[l]; i++)
			lvals[l][i] = a[lists[l][i]];
	}
	memcpy(before, a, len * sizeof(float));
	exp_n = naive_topk(before, len, m, sel);
	n = SIZE_MAX;
	if (nc != SIZE_MAX)
		n = spardl_topk_from_cands(m, lo, cand, cval, nc, (const uint32_t *const *)lists,
					   (const float *const *)lvals, lcount, 2, idx, val, &ws);
	if (n != SIZE_MAX)
		spardl_zero_at(a, idx, n);
	if (n == SIZE_MAX) {
		for (i = 0; i < len; i++)
			REQUIRE(bits(a[i]) == bits(before[i]), "case %d (%s): a refused selection changed x",
				_i, c->name);
		n = spardl_topk_block(a, len, m, idx, val, &ws);
	}
	REQUIRE(n == exp_n, "case %d (%s): count %zu, expected %zu", _i, c->name, n, exp_n);
	for (i = 0; i < n; i++) {
		REQUIRE(idx[i] == sel[i].idx && bits(val[i]) == bits(sel[i].val),
			"case %d (%s): pair %zu is (%u, %08x), expected (%u, %08x)", _i, c->name, i, idx[i],
			bits(val[i]), sel[i].idx, bits(sel[i].val));
		REQUIRE(is_zero(a[idx[i]]), "case %d (%s): selected entry not zeroed", _i, c->name);
		a[idx[i]] = before[idx[i]];
	}
	for (i = 0; i < len; i++)
		REQUIRE(bits(a[i]) == bits(before[i]), "case %d (%s): unselected x[%zu] changed", _i, c->name,
			i);
	spardl_topk_ws_fini(&ws);
	free(lists[0]);
	free(lists[1]);
	free(lvals[0]);
	free(lvals[1]);
	free(g);
	free(a);
	free(want);
	free(before);
	free(cand);
	free(cval);
	free(idx);
	free(val);
	free(sel);
}

START_TEST(test_cands)
{
	int mode;

	/* No changes, a few small ones, many large ones. */
	for (mode = 0; mode < 3; mode++)
		check_cands(_i, mode);
}
END_TEST

/* Candidate gathering against a too small capacity: acc is still formed
 * in full, nothing is written past the capacity (the arrays below hold
 * exactly cap entries, so ASan sees a stray lane), and the result is
 * either the exact list or SIZE_MAX, which it must be when the list does
 * not fit. */
START_TEST(test_gather_cap)
{
	const size_t len = 1000 + (size_t)_i * 37;
	float *g = malloc(len * sizeof(float)), *a = malloc(len * sizeof(float));
	float *want = malloc(len * sizeof(float));
	size_t cap, i, n, exact = 0;
	uint32_t lo = bits(1.5f);

	ck_assert(g && a && want);
	rng_seed(9000 + (uint64_t)_i);
	for (i = 0; i < len; i++) {
		g[i] = (float)((int)(rng_next() % 9) - 4);
		want[i] = 0.5f * (float)((int)(rng_next() % 5) - 2) + g[i];
		exact += spardl_key(want[i]) >= lo;
	}
	for (cap = 0; cap <= exact + 9; cap += cap < 24 ? 1 : cap < exact - 9 ? 97 : 1) {
		uint32_t *cand = malloc((cap ? cap : 1) * sizeof(uint32_t));
		float *cval = malloc((cap ? cap : 1) * sizeof(float));

		ck_assert(cand && cval);
		rng_seed(9000 + (uint64_t)_i);
		for (i = 0; i < len; i++) {
			(void)rng_next();
			a[i] = 0.5f * (float)((int)(rng_next() % 5) - 2);
		}
		n = spardl_topk_acc_gather(a, g, len, 1, lo, cand, cval, cap);
		for (i = 0; i < len; i++)
			REQUIRE(bits(a[i]) == bits(want[i]), "len %zu cap %zu: acc[%zu] is not g + residual", len, cap, i);
		if (exact > cap)
			REQUIRE(n == SIZE_MAX, "len %zu cap %zu: %zu candidates reported, %zu exist", len, cap, n, exact);
		if (n != SIZE_MAX) {
			size_t k = 0;

			REQUIRE(n == exact, "len %zu cap %zu: %zu candidates, expected %zu", len, cap, n, exact);
			for (i = 0; i < len; i++)
				if (spardl_key(want[i]) >= lo) {
					REQUIRE(cand[k] == i && bits(cval[k]) == bits(want[i]),
						"len %zu cap %zu: candidate %zu is not %zu", len, cap, k, i);
					k++;
				}
		}
		free(cand);
		free(cval);
	}
	/* With room for every lane, the list always comes back. */
	{
		uint32_t *cand = malloc((exact + 8) * sizeof(uint32_t));
		float *cval = malloc((exact + 8) * sizeof(float));

		ck_assert(cand && cval);
		for (i = 0; i < len; i++)
			a[i] = want[i] - g[i];
		n = spardl_topk_acc_gather(a, g, len, 1, lo, cand, cval, exact + 8);
		REQUIRE(n == exact, "len %zu: %zu candidates with room for all, expected %zu", len, n, exact);
		free(cand);
		free(cval);
	}
	free(g);
	free(a);
	free(want);
}
END_TEST

/* Pending zeros: acc is taken as zero where the bitmap's bit is set, NaNs
 * there included, on both the vector and the scalar paths (lengths not a
 * multiple of 8), and the candidates are the new values'. */
START_TEST(test_gather_zero_bits)
{
	const size_t len = 203 + (size_t)_i * 61, words = len / 64 + 1;
	uint64_t *z = calloc(words, sizeof(uint64_t));
	float *g = malloc(len * sizeof(float)), *a = malloc(len * sizeof(float));
	float *want = malloc(len * sizeof(float)), *cval = malloc(len * sizeof(float));
	uint32_t *cand = malloc(len * sizeof(uint32_t)), lo = bits(1.5f);
	size_t i, n, k = 0;

	ck_assert(z && g && a && want && cval && cand);
	rng_seed(9500 + (uint64_t)_i);
	for (i = 0; i < len; i++) {
		int zero = rng_next() % 3 == 0;

		g[i] = (float)((int)(rng_next() % 9) - 4);
		a[i] = rng_next() % 17 == 0 ? NAN : 0.5f * (float)((int)(rng_next() % 5) - 2);
		if (zero)
			z[i / 64] |= (uint64_t)1 << (i % 64);
		want[i] = zero ? g[i] + 0.0f : spardl_add(g[i], a[i]);
	}
	/* Bits past len must not matter. */
	if (len % 64)
		z[words - 1] |= ~(uint64_t)0 << (len % 64);
	n = spardl_topk_acc_gather_z(a, g, len, 1, lo, cand, cval, len, z);
	for (i = 0; i < len; i++) {
		REQUIRE(bits(a[i]) == bits(want[i]), "len %zu: acc[%zu] is %08x, want %08x", len, i,
			bits(a[i]), bits(want[i]));
		if (spardl_key(want[i]) >= lo) {
			REQUIRE(k < n && cand[k] == i && bits(cval[k]) == bits(want[i]),
				"len %zu: candidate %zu is not %zu", len, k, i);
			k++;
		}
	}
	REQUIRE(n == k, "len %zu: %zu candidates, expected %zu", len, n, k);
	/* The sums only (no key reaches UINT32_MAX), with no candidate room. */
	rng_seed(9500 + (uint64_t)_i);
	for (i = 0; i < len; i++) {
		(void)rng_next();
		(void)rng_next();
		a[i] = rng_next() % 17 == 0 ? NAN : 0.5f * (float)((int)(rng_next() % 5) - 2);
	}
	(void)spardl_topk_acc_gather_z(a, g, len, 1, UINT32_MAX, NULL, NULL, 0, z);
	for (i = 0; i < len; i++)
		REQUIRE(bits(a[i]) == bits(want[i]), "len %zu, sums only: acc[%zu] is %08x, want %08x", len, i,
			bits(a[i]), bits(want[i]));
	free(z);
	free(g);
	free(a);
	free(want);
	free(cval);
	free(cand);
}
END_TEST

/* One accumulate pass at a vector level (spardl_topk_isa), its outputs
 * kept for comparing. */
struct gather_out {
	float *acc, *g, *cval;
	uint32_t *cand;
	size_t n;
};

static void gather_at_isa(int isa, const float *acc0, const float *g0, size_t len, int add, uint32_t lo,
			  size_t cap, const uint64_t *z, uint32_t base, int clear, struct gather_out *o)
{
	int saved = spardl_topk_isa;

	memcpy(o->acc, acc0, len * sizeof(float));
	memcpy(o->g, g0, len * sizeof(float));
	spardl_topk_isa = isa;
	o->n = spardl_topk_acc_gather_at(o->acc, o->g, len, add, lo, o->cand, o->cval, cap, z, base, clear);
	spardl_topk_isa = saved;
}

/* The AVX-512 and AVX2 passes against the scalar one, bit for bit, where
 * the CPU has them: sums with NaNs and signed zeros, pending zeros,
 * cleared g, add off, positions from a base, lengths off the vector
 * width and capacities around the candidate count. The AVX2 pass may
 * report an overflow up to 8 slots early (it stores 8 lanes at a time);
 * the AVX-512 one must match the scalar count exactly. */
START_TEST(test_gather_isa)
{
	const size_t len = 1 + (size_t)_i * 173 % 1500, words = len / 64 + 1;
	float *acc0 = malloc(len * sizeof(float)), *g0 = malloc(len * sizeof(float));
	uint64_t *z = calloc(words, sizeof(uint64_t));
	struct gather_out out[3];
	uint32_t lo = bits(2.5f), base = (uint32_t)(_i % 3) * 64;
	size_t i, exact, cap;
	int isa, k;

	ck_assert(acc0 && g0 && z);
	for (isa = 0; isa < 3; isa++) {
		out[isa].acc = malloc(len * sizeof(float));
		out[isa].g = malloc(len * sizeof(float));
		ck_assert(out[isa].acc && out[isa].g);
	}
	rng_seed(9700 + (uint64_t)_i);
	for (i = 0; i < len; i++) {
		uint64_t r = rng_next();

		g0[i] = r % 23 == 0 ? NAN : r % 19 == 0 ? -0.0f : (float)((int)(r % 11) - 5);
		acc0[i] = r % 29 == 0 ? NAN : r % 31 == 0 ? INFINITY : 0.5f * (float)((int)(rng_next() % 7) - 3);
		if (rng_next() % 5 == 0)
			z[i / 64] |= (uint64_t)1 << (i % 64);
	}
	for (k = 0; k < 8; k++) {
		int add = !(k & 1), clear = (k >> 1) & 1;
		const uint64_t *zb = (k >> 2) & 1 ? z : NULL;

		/* The scalar count with room for every lane, then capacities
		 * around it. */
		out[0].cand = malloc(len * sizeof(uint32_t));
		out[0].cval = malloc(len * sizeof(float));
		ck_assert(out[0].cand && out[0].cval);
		gather_at_isa(0, acc0, g0, len, add, lo, len, zb, base, clear, &out[0]);
		exact = out[0].n;
		free(out[0].cand);
		free(out[0].cval);
		for (cap = exact > 20 ? exact - 20 : 0; cap <= exact + 20; cap++) {
			for (isa = 0; isa < 3; isa++) {
				/* Exactly cap entries: ASan sees a stray store. */
				out[isa].cand = malloc((cap ? cap : 1) * sizeof(uint32_t));
				out[isa].cval = malloc((cap ? cap : 1) * sizeof(float));
				ck_assert(out[isa].cand && out[isa].cval);
				gather_at_isa(isa, acc0, g0, len, add, lo, cap, zb, base, clear, &out[isa]);
			}
			REQUIRE(out[0].n == (exact <= cap ? exact : SIZE_MAX), "len %zu k %d cap %zu: scalar count %zu",
				len, k, cap, out[0].n);
			for (isa = 1; isa < 3; isa++) {
				const struct gather_out *o = &out[isa];

				for (i = 0; i < len; i++) {
					REQUIRE(bits(o->acc[i]) == bits(out[0].acc[i]),
						"isa %d len %zu k %d: acc[%zu] %08x, scalar %08x", isa, len, k, i,
						bits(o->acc[i]), bits(out[0].acc[i]));
					REQUIRE(bits(o->g[i]) == bits(out[0].g[i]), "isa %d len %zu k %d: g[%zu] differs",
						isa, len, k, i);
				}
				if (o->n == SIZE_MAX && out[0].n != SIZE_MAX) {
					REQUIRE(isa == 1 && exact + 8 > cap,
						"isa %d len %zu k %d cap %zu: overflow reported, %zu candidates fit", isa,
						len, k, cap, exact);
					continue;
				}
				REQUIRE(o->n == out[0].n, "isa %d len %zu k %d cap %zu: count %zu, scalar %zu", isa, len,
					k, cap, o->n, out[0].n);
				for (i = 0; o->n != SIZE_MAX && i < o->n; i++)
					REQUIRE(o->cand[i] == out[0].cand[i] && bits(o->cval[i]) == bits(out[0].cval[i]),
						"isa %d len %zu k %d cap %zu: candidate %zu differs", isa, len, k, cap, i);
			}
			for (isa = 0; isa < 3; isa++) {
				free(out[isa].cand);
				free(out[isa].cval);
			}
		}
	}
	for (isa = 0; isa < 3; isa++) {
		free(out[isa].acc);
		free(out[isa].g);
	}
	free(acc0);
	free(g0);
	free(z);
}
END_TEST

START_TEST(test_threshold)
{
	const struct tcase_def *c = &cases[_i];
	size_t len = c->len, m = c->m, cap = m < len ? m : len, exp_n, i, n = 0, ties, nz = 0;
	float *x = malloc((len ? len : 1) * sizeof(*x));
	struct ent *sel = malloc((cap + 1) * sizeof(*sel));
	struct spardl_thr t;

	ck_assert(x && sel);
	rng_seed(1000 + (uint64_t)_i);
	c->gen(x, len);
	exp_n = naive_topk(x, len, m, sel);
	for (i = 0; i < len; i++)
		nz += !is_zero(x[i]);

	t.key = 0x12345678u;
	t.ties = 987654321u;
	spardl_topk_threshold(x, len, m, &t);
	if (m > 0 && nz <= m) {
		/* Documented: {0, 0} selects every non-zero entry. */
		REQUIRE(t.key == 0 && t.ties == 0, "case %d (%s): nnz %zu <= m %zu gave {%08x, %zu}",
			      _i, c->name, nz, m, t.key, t.ties);
	}
	if (m > 0 && nz > m) {
		/* The exact threshold: the key of the m-th entry, and how many
		 * entries of that key the selection takes. */
		uint32_t kmin = ref_key(sel[0].val);
		size_t cnt = 0;

		for (i = 0; i < exp_n; i++)
			if (ref_key(sel[i].val) < kmin)
				kmin = ref_key(sel[i].val);
		for (i = 0; i < exp_n; i++)
			cnt += ref_key(sel[i].val) == kmin;
		REQUIRE(t.key == kmin && t.ties == cnt,
			      "case %d (%s, len %zu, m %zu): threshold {%08x, %zu}, expected {%08x, %zu}",
			      _i, c->name, len, m, t.key, t.ties, kmin, cnt);
	}
	ties = t.ties;
	for (i = 0; i < len; i++) {
		uint32_t k = ref_key(x[i]);

		if (k > t.key) {
			/* taken */
		} else if (k && k == t.key && ties > 0) {
			ties--;
		} else {
			continue;
		}
		REQUIRE(n < exp_n && sel[n].idx == i,
			      "case %d (%s, len %zu, m %zu): threshold {%08x, %zu} selects %zu", _i, c->name,
			      len, m, t.key, t.ties, i);
		n++;
	}
	REQUIRE(n == exp_n, "case %d (%s): threshold selects %zu, expected %zu", _i, c->name, n,
		      exp_n);
	free(x);
	free(sel);
}
END_TEST

/* The sampled threshold of a list against the full radix levels, on the
 * cases' data and on combs that fool a strided sample both ways (every
 * sample on a large entry, or none): each must agree exactly, and both the
 * sampled range and the fallback must have been taken. */
static void comb(float *x, size_t len, size_t phase)
{
	size_t i;

	for (i = 0; i < len; i++)
		x[i] = (i % 8 == phase) ? 1000.0f + (float)(rng_next() % 1000) : (float)(rng_next() % 100) / 7.0f;
}

START_TEST(test_threshold_list)
{
	static const size_t lens[] = { 16384, 32768, 100003, 1u << 20 };
	static const double dens[] = { 0.0001, 0.01, 0.1, 0.5, 0.79, 0.99 };
	size_t li, di, g, hits = 0, misses = 0;

	for (li = 0; li < sizeof(lens) / sizeof(lens[0]); li++) {
		size_t len = lens[li];
		float *x = malloc(len * sizeof(*x));
		struct spardl_topk_ws ws;

		ck_assert(x);
		ck_assert_int_eq(spardl_topk_ws_init(&ws, 1, len), 0);
		for (g = 0; g < 6; g++) {
			rng_seed(7000 + 10 * li + g);
			switch (g) {
			case 0: gen_normal(x, len); break;
			case 1: gen_int5(x, len); break;
			case 2: gen_normal_special(x, len); break;
			case 3: comb(x, len, 0); break;
			case 4: comb(x, len, 1); break;
			default: gen_012(x, len); break;
			}
			for (di = 0; di < sizeof(dens) / sizeof(dens[0]); di++) {
				size_t m = (size_t)(dens[di] * (double)len) + 1;
				struct spardl_thr want, got;
				size_t h0 = ws.range_hits, m0 = ws.range_misses;

				spardl_topk_threshold(x, len, m, &want);
				spardl_topk_threshold_list(x, len, m, &got, &ws);
				REQUIRE(got.key == want.key && got.ties == want.ties && got.count == want.count,
					"len %zu, data %zu, m %zu: {%08x, %zu, %zu}, expected {%08x, %zu, %zu}", len,
					g, m, got.key, got.ties, got.count, want.key, want.ties, want.count);
				REQUIRE(ws.range_hits + ws.range_misses == h0 + m0 + 1,
					"len %zu, data %zu, m %zu: neither path counted", len, g, m);
				if (g == 0 && di >= 1)
					REQUIRE(ws.range_hits == h0 + 1,
						"len %zu, normal data, m %zu: the sampled range missed", len, m);
			}
		}
		hits += ws.range_hits;
		misses += ws.range_misses;
		spardl_topk_ws_fini(&ws);
		free(x);
	}
	REQUIRE(hits > 0 && misses > 0, "sampled range taken %zu times, fallback %zu times: want both", hits,
		misses);
}
END_TEST

/* The reference itself, on hand-made inputs, so that it cannot agree with
 * the library by sharing a mistake. */
START_TEST(test_reference_rule)
{
	float x[10];
	struct ent sel[10];
	size_t n;

	x[0] = 1.0f;
	x[1] = -INFINITY;
	x[2] = from_bits(0xffc00000u); /* -NaN */
	x[3] = -0.0f;
	x[4] = 3.0f;
	x[5] = -3.0f;
	x[6] = NAN;
	x[7] = INFINITY;
	x[8] = 0.0f;
	x[9] = from_bits(1u);
	n = naive_topk(x, 10, 10, sel);
	ck_assert_uint_eq(n, 8);
	n = naive_topk(x, 10, 3, sel);
	ck_assert_uint_eq(n, 3);
	ck_assert_uint_eq(sel[0].idx, 1); /* -Inf: the first infinity */
	ck_assert_uint_eq(sel[1].idx, 2); /* both NaNs */
	ck_assert_uint_eq(sel[2].idx, 6);
	n = naive_topk(x, 10, 5, sel);
	ck_assert_uint_eq(n, 5);
	ck_assert_uint_eq(sel[0].idx, 1);
	ck_assert_uint_eq(sel[1].idx, 2);
	ck_assert_uint_eq(sel[2].idx, 4); /* 3.0 before -3.0 (smaller index) */
	ck_assert_uint_eq(sel[3].idx, 6);
	ck_assert_uint_eq(sel[4].idx, 7);
	n = naive_topk(x, 10, 6, sel);
	ck_assert_uint_eq(n, 6);
	ck_assert_uint_eq(sel[3].idx, 5);
	ck_assert_uint_eq(sel[4].idx, 6);
	ck_assert_uint_eq(sel[5].idx, 7);
	n = naive_topk(x, 10, 8, sel);
	ck_assert_uint_eq(sel[7].idx, 9); /* the denormal last; zeros never */
}
END_TEST

/* Hand-checked selections through the library. */
START_TEST(test_block_examples)
{
	struct spardl_topk_ws ws;
	float x[8] = { 0.5f, -2.0f, 2.0f, 0.0f, NAN, -0.0f, 2.0f, -INFINITY };
	uint32_t idx[8];
	float val[8];
	size_t n;

	ck_assert_int_eq(spardl_topk_ws_init(&ws, 8, 0), 0);
	n = spardl_topk_block(x, 8, 3, idx, val, &ws);
	ck_assert_uint_eq(n, 3);
	ck_assert_uint_eq(idx[0], 1);
	ck_assert_uint_eq(idx[1], 4);
	ck_assert_uint_eq(idx[2], 7);
	ck_assert_float_eq(val[0], -2.0f);
	ck_assert(isnan(val[1]));
	ck_assert(isinf(val[2]) && val[2] < 0);
	ck_assert(x[1] == 0.0f && x[4] == 0.0f && x[7] == 0.0f);
	ck_assert_float_eq(x[2], 2.0f);
	/* Next: the two 2.0, then 0.5; zeros never. */
	n = spardl_topk_block(x, 8, 8, idx, val, &ws);
	ck_assert_uint_eq(n, 3);
	ck_assert_uint_eq(idx[0], 0);
	ck_assert_uint_eq(idx[1], 2);
	ck_assert_uint_eq(idx[2], 6);
	n = spardl_topk_block(x, 8, 8, idx, val, &ws);
	ck_assert_uint_eq(n, 0);
	spardl_topk_ws_fini(&ws);
}
END_TEST

static Suite *topk_suite(void)
{
	Suite *s = suite_create("topk");
	TCase *tc = tcase_create("topk");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_reference_rule);
	tcase_add_test(tc, test_block_examples);
	tcase_add_loop_test(tc, test_block_ws_max, 0, NCASES);
	tcase_add_loop_test(tc, test_block_ws_exact, 0, NCASES);
	tcase_add_loop_test(tc, test_threshold, 0, NCASES);
	tcase_add_test(tc, test_threshold_list);
	tcase_add_loop_test(tc, test_cands, 0, NCASES);
	tcase_add_loop_test(tc, test_gather_cap, 0, 8);
	tcase_add_loop_test(tc, test_gather_zero_bits, 0, 12);
	tcase_add_loop_test(tc, test_gather_isa, 0, 16);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return run_unit_suite(topk_suite());
}
