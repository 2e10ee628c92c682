/* SPDX-License-Identifier: MIT */
/* Serial reference of SPEC.md (SparDL, dense, TopkA, gTopk): plain, slow, obviously correct. */
#include "reference.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <spardl/spardl.h>

/* One (absolute index, value) pair of a sparse list. */
struct pair {
	size_t idx;
	float val;
};

/* A sparse list, always kept sorted by index so that sums are simple merges. */
struct list {
	size_t len;
	struct pair *p;
};

/* Rank of a value's magnitude class: NaN above ±Inf above every finite value. */
static int mag_class(float x)
{
	if (isnan(x))
		return 2;
	if (isinf(x))
		return 1;
	return 0;
}

/* Order of the top-k rule: larger magnitude first, ties by smaller index.
 * All NaNs are equal, and so are all infinities, whatever their sign. */
static int cmp_rank(const void *pa, const void *pb)
{
	const struct pair *a = pa, *b = pb;
	int ca = mag_class(a->val), cb = mag_class(b->val);

	if (ca != cb)
		return ca > cb ? -1 : 1;
	if (ca == 0) {
		float ma = fabsf(a->val), mb = fabsf(b->val);

		if (ma != mb)
			return ma > mb ? -1 : 1;
	}
	if (a->idx != b->idx)
		return a->idx < b->idx ? -1 : 1;
	return 0;
}

static int cmp_index(const void *pa, const void *pb)
{
	const struct pair *a = pa, *b = pb;

	if (a->idx != b->idx)
		return a->idx < b->idx ? -1 : 1;
	return 0;
}

/* a + b, where a NaN operand decides the result the way IEEE 754 hardware
 * does it (x86 SSE/AVX, Arm): the first NaN operand, quieted. C leaves that
 * choice open and compilers do swap the operands of + (gcc -O3 compiled
 * "g + res" below as res + g), so the operand order SPEC.md gives
 * (acc = g + residual, acc += received, lists summed in order) is spelled
 * out here; the inputs' NaNs and the CPU's default NaN (Inf + -Inf) then
 * come out bit for bit. Without NaN operands this is plain a + b. */
static float add(float a, float b)
{
	uint32_t u;

	if (isnan(a) || isnan(b)) {
		memcpy(&u, isnan(a) ? &a : &b, sizeof(u));
		u |= 0x00400000u; /* quiet */
		memcpy(&a, &u, sizeof(a));
		return a;
	}
	return a + b;
}

static void *xcalloc(size_t count, size_t size)
{
	/* calloc(0, ...) may return NULL; ask for one element so NULL means failure. */
	void *ptr = calloc(count ? count : 1, size ? size : 1);

	if (!ptr)
		abort(); /* a test helper: running out of memory is not a result */
	return ptr;
}

/* topk of the candidate pairs: drops zeros, keeps the m best by the rule of
 * SPEC §3, returns them sorted by index. cand is consumed (reordered). */
static struct list select_top(struct pair *cand, size_t ncand, size_t m)
{
	struct list out;
	size_t nz = 0;

	/* Zeros (either sign) are never selected. */
	for (size_t i = 0; i < ncand; i++)
		if (cand[i].val != 0.0f)
			cand[nz++] = cand[i];
	qsort(cand, nz, sizeof(*cand), cmp_rank);
	out.len = nz < m ? nz : m;
	out.p = xcalloc(out.len, sizeof(*out.p));
	memcpy(out.p, cand, out.len * sizeof(*out.p));
	qsort(out.p, out.len, sizeof(*out.p), cmp_index);
	return out;
}

/* topk of the dense range x[lo, hi) by absolute index. */
static struct list topk_dense(const float *x, size_t lo, size_t hi, size_t m)
{
	struct pair *cand = xcalloc(hi - lo, sizeof(*cand));
	struct list out;

	for (size_t j = lo; j < hi; j++) {
		cand[j - lo].idx = j;
		cand[j - lo].val = x[j];
	}
	out = select_top(cand, hi - lo, m);
	free(cand);
	return out;
}

/* topk of a sparse list (the list is not changed). */
static struct list topk_list(const struct list *l, size_t m)
{
	struct pair *cand = xcalloc(l->len, sizeof(*cand));
	struct list out;

	memcpy(cand, l->p, l->len * sizeof(*cand));
	out = select_top(cand, l->len, m);
	free(cand);
	return out;
}

/* a + b as sparse vectors: the union of indices, a.val + b.val where both
 * hold one. Summing several lists left to right therefore adds the values of
 * a shared index in list order, starting from the first list's value. */
static struct list sum_lists(const struct list *a, const struct list *b)
{
	struct list out;
	size_t i = 0, j = 0;

	out.p = xcalloc(a->len + b->len, sizeof(*out.p));
	out.len = 0;
	while (i < a->len || j < b->len) {
		if (j == b->len || (i < a->len && a->p[i].idx < b->p[j].idx)) {
			out.p[out.len++] = a->p[i++];
		} else if (i == a->len || b->p[j].idx < a->p[i].idx) {
			out.p[out.len++] = b->p[j++];
		} else {
			out.p[out.len].idx = a->p[i].idx;
			out.p[out.len].val = add(a->p[i].val, b->p[j].val);
			out.len++;
			i++;
			j++;
		}
	}
	return out;
}

static struct list copy_list(const struct list *l)
{
	struct list out;

	out.len = l->len;
	out.p = xcalloc(l->len, sizeof(*out.p));
	memcpy(out.p, l->p, l->len * sizeof(*out.p));
	return out;
}

static void free_list(struct list *l)
{
	free(l->p);
	l->p = NULL;
	l->len = 0;
}

/* Zero the selected positions of a dense vector (after they were "sent"). */
static void zero_selected(float *x, const struct list *l)
{
	for (size_t i = 0; i < l->len; i++)
		x[l->p[i].idx] = 0.0f;
}

/* Merge step shared by R-SAG and gTopk: merged = topk(a + b, m); every entry of
 * a + b that merged leaves out is split evenly over the `share_ranks` ranks
 * that now hold merged (a power of two, so the share is exact) and added to
 * each one's acc. Entries that sum to exactly zero carry nothing and are skipped. */
static struct list merge_and_share(const struct list *a, const struct list *b, size_t m,
				   float *const *acc, const int *share_ranks, int nshare)
{
	struct list u = sum_lists(a, b);
	struct list merged = topk_list(&u, m);
	/* nshare is 2^(s+1); 1/nshare is exact in float. */
	float scale = 1.0f / (float)nshare;
	size_t k = 0;

	for (size_t i = 0; i < u.len; i++) {
		while (k < merged.len && merged.p[k].idx < u.p[i].idx)
			k++;
		if (k < merged.len && merged.p[k].idx == u.p[i].idx)
			continue; /* kept */
		if (u.p[i].val == 0.0f)
			continue;
		for (int q = 0; q < nshare; q++)
			acc[share_ranks[q]][u.p[i].idx] =
				add(acc[share_ranks[q]][u.p[i].idx], u.p[i].val * scale);
	}
	free_list(&u);
	return merged;
}

static int is_pow2(int x)
{
	return x > 0 && (x & (x - 1)) == 0;
}

static int log2_ceil(int x)
{
	int r = 0;

	while ((1 << r) < x)
		r++;
	return r;
}

static size_t ceil_div(size_t a, size_t b)
{
	return (a + b - 1) / b;
}

/* Writes the dense result (same on every rank) from a sparse sum. */
static void write_result(const struct ref_params *p, const float *sum, float *const *out)
{
	for (int w = 0; w < p->size; w++)
		for (size_t j = 0; j < p->n; j++)
			out[w][j] = p->average ? sum[j] / (float)p->size : sum[j];
}

/* SPEC §4: SRS in each team, owner selection, SAG across teams, in-team
 * all-gather (implicit: every rank reads the same final lists), result, GRC. */
static void step_spardl(const struct ref_params *p, size_t k, float *const *acc0,
			float *const *acc, float *sum, float *const *newres)
{
	int P = p->size, d = p->teams, Pt = P / d;
	size_t n = p->n;
	size_t C = ceil_div(n, (size_t)Pt);
	size_t kb = ceil_div(k, (size_t)Pt);
	int R = log2_ceil(Pt);
	struct list *sent = xcalloc((size_t)P * (size_t)Pt, sizeof(*sent));
	struct list *final = xcalloc((size_t)Pt, sizeof(*final));
	char *in_final = xcalloc(n, 1);

	if (kb < 1)
		kb = 1;

	/* Block b = [b*C, min((b+1)*C, n)), possibly empty when n < P'. */
#define BLK_LO(b) ((size_t)(b) * C < n ? (size_t)(b) * C : n)
#define BLK_HI(b) ((size_t)((b) + 1) * C < n ? (size_t)((b) + 1) * C : n)

	/* SRS: cyclic-shift halving, all teams at once. In each round every rank
	 * first packs what it sends (from its acc before this round's receives),
	 * then every rank scatter-adds what it received. */
	for (int i = 0; i < R; i++) {
		int gap = 1 << (R - 1 - i);
		int nb = i == 0 ? Pt - (1 << (R - 1)) : gap;

		for (int w = 0; w < P; w++) {
			int r = w % Pt;

			for (int j = 0; j < nb; j++) {
				int b = (r + gap + j) % Pt;

				sent[(size_t)w * Pt + j] = topk_dense(acc[w], BLK_LO(b), BLK_HI(b), kb);
				zero_selected(acc[w], &sent[(size_t)w * Pt + j]);
			}
		}
		for (int w = 0; w < P; w++) {
			int t = w / Pt, r = w % Pt;
			int src = t * Pt + (r - gap + Pt) % Pt;

			/* src's j-th block is (src_r + gap + j) = (r + j): ours to receive. */
			for (int j = 0; j < nb; j++) {
				const struct list *l = &sent[(size_t)src * Pt + j];

				for (size_t q = 0; q < l->len; q++)
					acc[w][l->p[q].idx] = add(acc[w][l->p[q].idx], l->p[q].val);
			}
		}
		for (int w = 0; w < P; w++)
			for (int j = 0; j < nb; j++)
				free_list(&sent[(size_t)w * Pt + j]);
	}

	/* Owner selection, then SAG among the d ranks sharing in-team rank r. */
	for (int r = 0; r < Pt; r++) {
		struct list *own = xcalloc((size_t)d, sizeof(*own));

		for (int t = 0; t < d; t++) {
			int w = t * Pt + r;

			own[t] = topk_dense(acc[w], BLK_LO(r), BLK_HI(r), kb);
			zero_selected(acc[w], &own[t]);
		}
		if (d == 1) {
			final[r] = copy_list(&own[0]);
		} else if (p->sag == SPARDL_SAG_BRUCK) {
			/* Union in team order 0..d-1, then one re-selection. What it
			 * drops is outside the final set, so GRC keeps it locally. */
			struct list u = copy_list(&own[0]);

			for (int t = 1; t < d; t++) {
				struct list next = sum_lists(&u, &own[t]);

				free_list(&u);
				u = next;
			}
			final[r] = topk_list(&u, kb);
			free_list(&u);
		} else {
			/* R-SAG: cur[t] is the list team t holds; at round s the groups
			 * of 2^s teams merge pairwise into groups of 2^(s+1). */
			int *ranks = xcalloc((size_t)d, sizeof(*ranks));

			for (int s = 0; (1 << s) < d; s++) {
				int half = 1 << s, grp = half << 1;

				for (int t0 = 0; t0 < d; t0 += grp) {
					struct list merged;

					for (int q = 0; q < grp; q++)
						ranks[q] = (t0 + q) * Pt + r;
					merged = merge_and_share(&own[t0], &own[t0 + half], kb,
								 acc, ranks, grp);
					for (int q = 0; q < grp; q++) {
						free_list(&own[t0 + q]);
						own[t0 + q] = copy_list(&merged);
					}
					free_list(&merged);
				}
			}
			final[r] = copy_list(&own[0]);
			free(ranks);
		}
		for (int t = 0; t < d; t++)
			free_list(&own[t]);
		free(own);
	}
#undef BLK_LO
#undef BLK_HI

	/* Result: the final lists of all blocks, the same on every rank. */
	for (int r = 0; r < Pt; r++)
		for (size_t q = 0; q < final[r].len; q++) {
			sum[final[r].p[q].idx] = final[r].p[q].val;
			in_final[final[r].p[q].idx] = 1;
		}

	/* GRC: inside the final set a rank keeps what it dropped on the way
	 * (its acc); elsewhere it keeps its whole input g + old residual. */
	for (int w = 0; w < P; w++)
		for (size_t j = 0; j < n; j++)
			newres[w][j] = in_final[j] ? acc[w][j] : acc0[w][j];

	for (int r = 0; r < Pt; r++)
		free_list(&final[r]);
	free(final);
	free(sent);
	free(in_final);
}

/* Dense baseline: the exact sum in rank order; nothing is left behind. */
static void step_dense(const struct ref_params *p, float *const *acc0, float *sum,
		       float *const *newres)
{
	for (size_t j = 0; j < p->n; j++) {
		sum[j] = acc0[0][j];
		for (int w = 1; w < p->size; w++)
			sum[j] = add(sum[j], acc0[w][j]);
	}
	for (int w = 0; w < p->size; w++)
		memset(newres[w], 0, p->n * sizeof(float));
}

/* TopkA: every rank's local top-k, summed in rank order; local error feedback. */
static void step_topka(const struct ref_params *p, size_t k, float *const *acc,
		       float *sum, float *const *newres)
{
	struct list total = { 0, NULL };

	for (int w = 0; w < p->size; w++) {
		struct list l = topk_dense(acc[w], 0, p->n, k);
		struct list next = sum_lists(&total, &l);

		zero_selected(acc[w], &l);
		free_list(&l);
		free_list(&total);
		total = next;
	}
	for (size_t q = 0; q < total.len; q++)
		sum[total.p[q].idx] = total.p[q].val;
	free_list(&total);
	for (int w = 0; w < p->size; w++)
		memcpy(newres[w], acc[w], p->n * sizeof(float));
}

/* gTopk: recursive doubling of k-pair lists with re-selection; dropped values
 * are shared over the ranks of the merged group, as in R-SAG. */
static void step_gtopk(const struct ref_params *p, size_t k, float *const *acc,
		       float *sum, float *const *newres)
{
	int P = p->size;
	struct list *cur = xcalloc((size_t)P, sizeof(*cur));
	int *ranks = xcalloc((size_t)P, sizeof(*ranks));

	for (int w = 0; w < P; w++) {
		cur[w] = topk_dense(acc[w], 0, p->n, k);
		zero_selected(acc[w], &cur[w]);
	}
	for (int s = 0; (1 << s) < P; s++) {
		int half = 1 << s, grp = half << 1;

		for (int w0 = 0; w0 < P; w0 += grp) {
			struct list merged;

			for (int q = 0; q < grp; q++)
				ranks[q] = w0 + q;
			merged = merge_and_share(&cur[w0], &cur[w0 + half], k, acc, ranks, grp);
			for (int q = 0; q < grp; q++) {
				free_list(&cur[w0 + q]);
				cur[w0 + q] = copy_list(&merged);
			}
			free_list(&merged);
		}
	}
	for (size_t q = 0; q < cur[0].len; q++)
		sum[cur[0].p[q].idx] = cur[0].p[q].val;
	for (int w = 0; w < P; w++) {
		memcpy(newres[w], acc[w], p->n * sizeof(float));
		free_list(&cur[w]);
	}
	free(cur);
	free(ranks);
}

static int params_valid(const struct ref_params *p)
{
	if (!p || p->size < 1 || p->n == 0)
		return 0;
	if (!(p->density > 0.0 && p->density <= 1.0))
		return 0;
	switch (p->algo) {
	case SPARDL_ALGO_SPARDL:
		if (p->teams < 1 || p->size % p->teams != 0)
			return 0;
		if (p->sag != SPARDL_SAG_BRUCK && p->sag != SPARDL_SAG_RECURSIVE)
			return 0;
		if (p->sag == SPARDL_SAG_RECURSIVE && !is_pow2(p->teams))
			return 0;
		return 1;
	case SPARDL_ALGO_DENSE:
	case SPARDL_ALGO_TOPKA:
		return 1;
	case SPARDL_ALGO_GTOPK:
		return is_pow2(p->size);
	default:
		return 0;
	}
}

int ref_step(const struct ref_params *p, const float *const *g, float *const *res,
	     float *const *out)
{
	int P;
	size_t n, k;
	float **acc0, **acc, **newres, *sum;

	if (!params_valid(p) || !g || !res || !out)
		return -1;
	P = p->size;
	n = p->n;
	k = (size_t)ceil(p->density * (double)n);
	if (k < 1)
		k = 1;

	/* Work on private copies so that out may alias g and nothing is written
	 * before the whole step is computed. acc0 = g + old residual, the input
	 * GRC falls back to; acc is the working accumulator. */
	acc0 = xcalloc((size_t)P, sizeof(*acc0));
	acc = xcalloc((size_t)P, sizeof(*acc));
	newres = xcalloc((size_t)P, sizeof(*newres));
	sum = xcalloc(n, sizeof(*sum));
	for (int w = 0; w < P; w++) {
		acc0[w] = xcalloc(n, sizeof(float));
		acc[w] = xcalloc(n, sizeof(float));
		newres[w] = xcalloc(n, sizeof(float));
		for (size_t j = 0; j < n; j++)
			acc0[w][j] = p->residual ? add(g[w][j], res[w][j]) : g[w][j];
		memcpy(acc[w], acc0[w], n * sizeof(float));
	}

	switch (p->algo) {
	case SPARDL_ALGO_SPARDL:
		step_spardl(p, k, acc0, acc, sum, newres);
		break;
	case SPARDL_ALGO_DENSE:
		step_dense(p, acc0, sum, newres);
		break;
	case SPARDL_ALGO_TOPKA:
		step_topka(p, k, acc, sum, newres);
		break;
	case SPARDL_ALGO_GTOPK:
		step_gtopk(p, k, acc, sum, newres);
		break;
	}

	for (int w = 0; w < P; w++) {
		/* Without residual nothing is carried over: it stays zero. */
		if (p->residual)
			memcpy(res[w], newres[w], n * sizeof(float));
		else
			memset(res[w], 0, n * sizeof(float));
	}
	write_result(p, sum, out);

	for (int w = 0; w < P; w++) {
		free(acc0[w]);
		free(acc[w]);
		free(newres[w]);
	}
	free(acc0);
	free(acc);
	free(newres);
	free(sum);
	return 0;
}
