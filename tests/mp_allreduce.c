/* SPDX-License-Identifier: MIT */
/* Multi-process test: every algorithm and variant, bit for bit against the serial reference, with the invariant,
 * on integer data (every sum exact) and on float data (rounding, NaN, infinities). */
#define _GNU_SOURCE
#include <float.h>
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <spardl/spardl.h>

#include "core.h"
#include "mp_common.h"

#include "reference.h"

static int rank, size;
static int failures, checks;
static long cons_checked, cons_skipped; /* conservation positions checked / skipped as non-finite */
static int print_budget;                /* FAIL messages left in the current run */
/* MP_NAN_BITS=any (opt-in, reported in the summary): two NaNs compare equal
 * whatever their sign and payload. Only to see what else a run finds while
 * a library's NaN propagation is known to be off; the default is bits. */
static int nan_any;
static long nan_forgiven;

#define FAIL(...)                                                   \
	do {                                                        \
		failures++;                                         \
		if (print_budget > 0) {                             \
			print_budget--;                             \
			fprintf(stderr, "FAIL rank %d: ", rank);    \
			fprintf(stderr, __VA_ARGS__);               \
			fputc('\n', stderr);                        \
		}                                                   \
	} while (0)

/* Kinds of data. DATA_INT: integers, every sum exact. The float kinds make
 * the result depend on the order of every addition, so only the order of
 * SPEC.md (what tests/reference.c follows) passes bit for bit. */
enum { DATA_INT, DATA_NORMAL, DATA_HEAVY };

/* The one NaN the inputs hold (positive, quiet, no payload). NaNs the
 * arithmetic makes (Inf + -Inf) are the CPU's default NaN, on x86 the
 * negative one, 0xffc00000: where both meet, the operand order of an
 * addition decides the sign of the result. */
#define CANON_NAN 0x7fc00000u

static uint32_t fbits(float x)
{
	uint32_t u;

	memcpy(&u, &x, sizeof(u));
	return u;
}

static float from_bits(uint32_t u)
{
	float x;

	memcpy(&x, &u, sizeof(x));
	return x;
}

/* Uniform in (0, 1), never 0 or 1. */
static double unit(uint64_t r)
{
	return ((double)(r >> 11) + 0.5) * 0x1p-53;
}

struct cfg {
	int algo, teams, sag, srs, average, residual, sparse;
	int range; /* DATA_INT: data in [-range, range]; 0 means 50 */
	int data;  /* DATA_INT, DATA_NORMAL, DATA_HEAVY */
	/* Float kinds: 0, or one position in about this many is "hot" (the
	 * same positions on every rank and every call, so non-finite values
	 * meet each other and the residual), and there a rank holds NaN
	 * (1/4), +Inf (1/8), -Inf (1/8) or an ordinary value. */
	int nonfinite;
	int burst; /* the first n/8 positions are hot one in 4 (NaNs over budget) */
	size_t n;
	double density;
	int calls;
};

/* Rank w's gradient of call `call`, a function of (seed, call, w, index) only,
 * so every rank can regenerate every rank's data.
 * DATA_INT: integer-valued data in [-range, range], about a third zeros:
 * every sum is exact, so results must match the reference bit for bit.
 * DATA_NORMAL: N(0,1). DATA_HEAVY: Cauchy times 2^U{-20..20}, magnitudes
 * from about 1e-22 to 1e22 (most within 1e-8..1e8), so most sums round and
 * small values vanish into large ones. Both float kinds hold 1/8 zeros,
 * half of them -0.0. */
static void gen(float *g, const struct cfg *c, uint64_t seed, int call, int w)
{
	int range = c->range ? c->range : 50;
	size_t i;

	for (i = 0; i < c->n; i++) {
		uint64_t r = mix(seed * 1000003u + (uint64_t)call * 7919u + (uint64_t)w * 104729u + i * 31u + 1);
		uint64_t r2, r3;
		float x;

		if (c->data == DATA_INT) {
			g[i] = (r % 3 == 0) ? 0.0f : (float)((int)((r >> 8) % (2 * (unsigned)range + 1)) - range);
			continue;
		}
		r2 = mix(r ^ 0x9e3779b97f4a7c15ULL);
		r3 = mix(r2 + 0x632be59bd9b4e019ULL);
		if (r % 8 == 0)
			x = (r >> 3) & 1 ? -0.0f : 0.0f;
		else if (c->data == DATA_NORMAL)
			x = (float)(sqrt(-2.0 * log(unit(r2))) * cos(2.0 * M_PI * unit(r3)));
		else
			x = (float)(tan(M_PI * (unit(r2) - 0.5)) * ldexp(1.0, (int)(r3 % 41) - 20));
		if (c->nonfinite && mix(seed * 0xd1b54a32d192ed03ULL + i * 0x8cb92ba72f3d8dd7ULL + 5) %
					    (uint64_t)(c->burst && i < c->n / 8 ? 4 : c->nonfinite) == 0) {
			switch ((r3 >> 40) % 8) {
			case 0:
			case 1:
				x = from_bits(CANON_NAN);
				break;
			case 2:
				x = INFINITY;
				break;
			case 3:
				x = -INFINITY;
				break;
			default:
				break;
			}
		}
		g[i] = x;
	}
}

static const char *algo_name(int a)
{
	static const char *names[] = { "spardl", "dense", "topka", "gtopk" };

	return names[a];
}

static const char *data_name(int d)
{
	static const char *names[] = { "int", "normal", "heavy" };

	return names[d];
}

/* Calls after which the residual is not read (nor before the next call):
 * the second of every three, where a run has three calls or more. Reading
 * it writes what the library may leave for the next call's accumulate pass
 * (the residual's pending zeros); not reading it lets that pass take them. */
static int unread(const struct cfg *c, int call)
{
	return c->calls >= 3 && call >= 0 && call % 3 == 1 && call + 1 < c->calls;
}

static int first_diff(const float *a, const float *b, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (memcmp(&a[i], &b[i], sizeof(float))) {
			if (nan_any && isnan(a[i]) && isnan(b[i])) {
				nan_forgiven++;
				continue;
			}
			return (int)i;
		}
	return -1;
}

/* Sum of v over all ranks through the dense path (exact on integer data and
 * on the hash slots). */
static int sum_all(struct spardl_plan *dense, float *v)
{
	return spardl_allreduce(dense, v);
}

/* 64-bit hash of the bits of v. */
static uint64_t hash_bits(const float *v, size_t n)
{
	uint64_t h = 0x243f6a8885a308d3ULL ^ n;
	size_t i;

	for (i = 0; i < n; i++)
		h = mix(h ^ ((uint64_t)(nan_any && isnan(v[i]) ? CANON_NAN : fbits(v[i])) << 17) ^ i);
	return h;
}

/* Every rank's output must be the same bits: each rank writes the hash of
 * its output, as four 16-bit chunks (exact floats), into its own slot of a
 * size*4 vector of zeros (hv); a non-averaging dense plan sums it (x + 0 and
 * 0 + 0 are exact), and every rank compares every slot with its own hash.
 * The vector rides at the end of the conservation sum, so it costs no
 * collective of its own. */
static void put_hash(float *hv, uint64_t h)
{
	int q;

	memset(hv, 0, (size_t)size * 4 * sizeof(float));
	for (q = 0; q < 4; q++)
		hv[rank * 4 + q] = (float)((h >> (16 * q)) & 0xffff);
}

static void check_hashes(const float *hv, uint64_t h, const char *tag, int call)
{
	int w, q;

	checks++;
	for (w = 0; w < size; w++) {
		uint64_t hw = 0;

		for (q = 0; q < 4; q++)
			hw |= (uint64_t)hv[w * 4 + q] << (16 * q);
		if (hw != h) {
			FAIL("%s call %d: output of rank %d differs from this rank's (hash %016llx vs %016llx)", tag,
			     call, w, (unsigned long long)hw, (unsigned long long)h);
			break;
		}
	}
}

/* What every rank fed in at position j, for a failure message. */
static void dump_inputs(float *const *g, float *const *old, size_t j)
{
	int w;

	if (print_budget <= 0)
		return;
	for (w = 0; w < size; w++)
		fprintf(stderr, "    rank %d at %zu: g %08x (%g) old residual %08x (%g)\n", w, j, fbits(g[w][j]),
			g[w][j], fbits(old[w][j]), old[w][j]);
}

static int ceil_log2(int x)
{
	int l = 0;

	while ((1 << l) < x)
		l++;
	return l;
}

/* Dense on float data: the ring adds in another order than the reference
 * (rank order, SPEC §5 says only "ring"), so the bits may differ. Either
 * order of a P-term sum errs by at most (P-1)·u·Σ|a_w| (u = FLT_EPSILON/2,
 * a_w = g_w + residual_w, here g_w), so the two differ by at most
 * 2(P-1)·u·Σ|a_w|, plus one rounding of each quotient when averaging:
 * tol = P·FLT_EPSILON·Σ|a_w| (divided by P when averaging). For P <= 2 both
 * orders are the same additions (a + b == b + a), so the values must be
 * equal. Zeros compare equal whatever their sign (the reference adds the
 * zero residual first: -0 + 0 = +0). Non-finite results do not depend on the
 * order: NaN where the reference has NaN, the same infinity where it has
 * one; only the sign of a NaN depends on the order, and it is not compared
 * here (bit-identity across ranks still is). */
static int dense_mismatch(const float *lib, const float *ref, const double *mag, size_t n, int average,
			  double *tol_out)
{
	size_t i;

	for (i = 0; i < n; i++) {
		float a = lib[i], b = ref[i];
		double tol;

		if (isnan(a) || isnan(b)) {
			if (!(isnan(a) && isnan(b)))
				break;
			continue;
		}
		if (isinf(a) || isinf(b)) {
			if (a != b)
				break;
			continue;
		}
		if (size <= 2) {
			if (a != b)
				break;
			continue;
		}
		tol = (double)size * FLT_EPSILON * mag[i] / (average ? (double)size : 1.0) + FLT_MIN;
		if (!(fabs((double)a - (double)b) <= tol)) {
			*tol_out = tol;
			break;
		}
	}
	return i < n ? (int)i : -1;
}

static void run(struct spardl_comm *comm, const struct cfg *c, uint64_t seed)
{
	struct spardl_plan_params pp;
	struct spardl_plan *plan = NULL, *dense = NULL;
	struct ref_params rp = { .size = size, .n = c->n, .density = c->density, .algo = c->algo,
				 .teams = c->teams, .sag = c->sag, .residual = c->residual,
				 .average = c->average };
	struct ref_params rp0 = rp;
	float **g = calloc((size_t)size, sizeof(float *)), **res = calloc((size_t)size, sizeof(float *));
	float **out = calloc((size_t)size, sizeof(float *)), **old = calloc((size_t)size, sizeof(float *));
	float **res0 = calloc((size_t)size, sizeof(float *)), **out0 = calloc((size_t)size, sizeof(float *));
	/* The caller's buffer sits at another offset each call: every
	 * alignment of the output within a cache line is exercised. */
	float *mine_base = malloc((c->n + 16) * sizeof(float)), *mine = mine_base;
	float *old_res = malloc(c->n * sizeof(float));
	float *v = malloc((c->n + (size_t)size * 4) * sizeof(float)); /* conservation, then hashes */
	double *mag = malloc(c->n * sizeof(double));
	int64_t *sidx = NULL;
	float *sval = NULL;
	char tag[240];
	int w, call, ret, d;
	size_t i;
	uint64_t h;
	struct timespec t0, t1;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	print_budget = 8;
	rp0.average = 0;
	snprintf(tag, sizeof(tag), "%s P=%d d=%d sag=%s srs=%s n=%zu density=%g avg=%d res=%d %s data=%s nonfinite=1/%d seed=%llu",
		 algo_name(c->algo), size, c->teams, c->sag ? "recursive" : "bruck", c->srs ? "sequential" : "batched",
		 c->n, c->density, c->average, c->residual, c->sparse ? "sparse-output" : "dense-output",
		 data_name(c->data), c->nonfinite, (unsigned long long)seed);
	for (w = 0; w < size; w++) {
		g[w] = malloc(c->n * sizeof(float));
		res[w] = calloc(c->n, sizeof(float));
		out[w] = malloc(c->n * sizeof(float));
		old[w] = malloc(c->n * sizeof(float));
		res0[w] = malloc(c->n * sizeof(float));
		out0[w] = malloc(c->n * sizeof(float));
	}
	spardl_plan_params_init(&pp);
	pp.count = c->n;
	pp.density = c->density;
	pp.algo = c->algo;
	pp.teams = c->teams;
	pp.sag = c->sag;
	pp.srs = c->srs;
	pp.average = c->average;
	pp.residual = c->residual;
	/* Half the runs leave the residual's zeros pending whatever n is
	 * (spardl_pend_min_n), half write them as plans of their size do. */
	spardl_pend_min_n = seed & 1 ? 0 : SPARDL_PEND_MIN_N;
	/* Half the dense rings store their sums into the peer's slot where
	 * the transport allows it (shm), half copy them there as over verbs. */
	spardl_dense_direct = !(seed & 2);
	ret = spardl_plan_create(comm, &pp, &plan);
	if (ret) {
		FAIL("%s: plan_create: %s: %s", tag, spardl_strerror(ret), spardl_last_error());
		goto out;
	}
	spardl_plan_params_init(&pp);
	pp.count = c->n + (size_t)size * 4;
	pp.algo = SPARDL_ALGO_DENSE;
	pp.average = 0;
	ret = spardl_plan_create(comm, &pp, &dense);
	if (ret) {
		FAIL("%s: dense plan_create: %s", tag, spardl_last_error());
		goto out;
	}
	if (c->sparse) {
		sidx = malloc(spardl_plan_max_nnz(plan) * sizeof(*sidx) + 8);
		sval = malloc(spardl_plan_max_nnz(plan) * sizeof(*sval) + 4);
	}
	/* After a failed check the loop goes on, so that every rank makes the
	 * same collective calls; print_budget keeps the messages few. */
	for (call = 0; call < c->calls; call++) {
		const void *lresv;
		const float *lres;
		const float *glob;

		for (w = 0; w < size; w++)
			gen(g[w], c, seed, call, w);
		mine = mine_base + (call * 5 + c->n) % 16;
		memcpy(mine, g[rank], c->n * sizeof(float));
		if (unread(c, call - 1)) {
			/* Not read since the last call: this call starts
			 * from whatever the library left pending, and is
			 * judged against the reference's residual. */
			memcpy(old_res, res[rank], c->n * sizeof(float));
		} else {
			ret = spardl_plan_residual(plan, &lresv);
			lres = lresv;
			if (ret) {
				FAIL("%s: residual: %s", tag, spardl_last_error());
				break;
			}
			memcpy(old_res, lres, c->n * sizeof(float));
		}
		for (w = 0; w < size; w++)
			memcpy(old[w], res[w], c->n * sizeof(float));
		if (ref_step(&rp, (const float *const *)g, res, out)) {
			FAIL("%s: the reference rejects these parameters", tag);
			break;
		}
		/* The global sum before division by P, for the invariant: from a
		 * second reference run without averaging, not from out * P. */
		glob = out[rank];
		if (c->average && c->residual) {
			for (w = 0; w < size; w++)
				memcpy(res0[w], old[w], c->n * sizeof(float));
			if (ref_step(&rp0, (const float *const *)g, res0, out0)) {
				FAIL("%s: the reference rejects these parameters", tag);
				break;
			}
			for (w = 0; w < size; w++)
				if (memcmp(res0[w], res[w], c->n * sizeof(float)))
					FAIL("%s call %d: the reference's residual depends on averaging", tag, call);
			glob = out0[rank];
		}
		/* mag = sum over ranks of |g_w| + |old residual_w|, in double. */
		for (i = 0; i < c->n; i++) {
			double m = 0.0;

			for (w = 0; w < size; w++)
				m += fabs((double)g[w][i]) + fabs((double)old[w][i]);
			mag[i] = m;
		}
		if (c->sparse) {
			size_t nnz = 0;

			ret = spardl_allreduce_sparse(plan, mine, sidx, sval, &nnz);
			if (!ret) {
				if (memcmp(mine, g[rank], c->n * sizeof(float)))
					FAIL("%s call %d: the sparse variant changed its input", tag, call);
				memset(mine, 0, c->n * sizeof(float));
				for (i = 0; i < nnz; i++) {
					if (sidx[i] < 0 || (size_t)sidx[i] >= c->n || (i && sidx[i] <= sidx[i - 1])) {
						FAIL("%s call %d: sparse index %zu out of order or range", tag, call, i);
						break;
					}
					mine[sidx[i]] = sval[i];
				}
				if (nnz > spardl_plan_max_nnz(plan))
					FAIL("%s call %d: nnz %zu over max_nnz", tag, call, nnz);
			}
		} else {
			ret = spardl_allreduce(plan, mine);
		}
		if (ret) {
			FAIL("%s call %d: allreduce: %s: %s", tag, call, spardl_strerror(ret), spardl_last_error());
			break;
		}
		/* The result: bit for bit, except dense on float data (see
		 * dense_mismatch()). */
		checks++;
		if (c->algo == SPARDL_ALGO_DENSE && c->data != DATA_INT) {
			double tol = 0.0;

			d = dense_mismatch(mine, out[rank], mag, c->n, c->average, &tol);
			if (d >= 0)
				FAIL("%s call %d: result differs from the reference at %d: %a (%08x) vs %a (%08x), "
				     "tolerance %g",
				     tag, call, d, mine[d], fbits(mine[d]), out[rank][d], fbits(out[rank][d]), tol);
		} else {
			d = first_diff(mine, out[rank], c->n);
			if (d >= 0) {
				FAIL("%s call %d: result differs from the reference at %d: %a (%08x) vs %a (%08x)%s", tag,
				     call, d, mine[d], fbits(mine[d]), out[rank][d], fbits(out[rank][d]),
				     isnan(mine[d]) && isnan(out[rank][d]) ? " (NaNs of other sign or payload)" : "");
				dump_inputs(g, old, (size_t)d);
			}
		}
		if (unread(c, call))
			continue;
		spardl_plan_residual(plan, &lresv);
		lres = lresv;
		checks++;
		d = first_diff(lres, res[rank], c->n);
		if (d >= 0) {
			FAIL("%s call %d: residual differs from the reference at %d: %a (%08x) vs %a (%08x)%s", tag, call,
			     d, lres[d], fbits(lres[d]), res[rank][d], fbits(res[rank][d]),
			     isnan(lres[d]) && isnan(res[rank][d]) ? " (NaNs of other sign or payload)" : "");
			dump_inputs(g, old, (size_t)d);
		}
		/* Conservation, through the library's own dense path:
		 * sum_w (new_res - g - old_res) + global_sum == 0, exactly on
		 * integer data. On float data every step rounds: each of the at
		 * most N = P·(ceil(log2 P) + 4) roundings (P to form acc, P-1
		 * scatter-adds and union additions, P·log2 d R-SAG shares, 2P
		 * here forming v and P-1 in the ring) errs by at most
		 * u·M, M = sum_w (|g_w| + |old_w| + |new_w|) + |global_sum|,
		 * which bounds every partial sum, so |sum| <= N·u·M; the check
		 * uses tol = N·FLT_EPSILON·M (2N·u) at each position. A position
		 * where any of these is NaN or infinite has no meaning here:
		 * it is skipped and counted. */
		for (i = 0; i < c->n; i++)
			v[i] = c->residual ? lres[i] - g[rank][i] - old_res[i] : 0.0f;
		h = hash_bits(mine, c->n);
		put_hash(v + c->n, h);
		ret = sum_all(dense, v);
		if (ret) {
			FAIL("%s: dense sum: %s", tag, spardl_last_error());
			break;
		}
		check_hashes(v + c->n, h, tag, call);
		if (c->residual) {
			int ran = 0;

			for (i = 0; i < c->n; i++) {
				double m, e, tol;

				if (c->data == DATA_INT) {
					ran = 1;
					cons_checked++;
					if (v[i] + glob[i] != 0.0f) {
						FAIL("%s call %d: conservation broken at %zu: %g + %g", tag, call, i, v[i],
						     glob[i]);
						break;
					}
					continue;
				}
				m = mag[i] + fabs((double)glob[i]);
				for (w = 0; w < size; w++)
					m += fabs((double)res[w][i]);
				if (!isfinite(m)) {
					cons_skipped++;
					continue;
				}
				ran = 1;
				cons_checked++;
				e = fabs((double)v[i] + (double)glob[i]);
				tol = (double)size * (ceil_log2(size) + 4) * FLT_EPSILON * m + FLT_MIN;
				if (!(e <= tol)) {
					FAIL("%s call %d: conservation broken at %zu: %a + %a = %g, tolerance %g", tag, call,
					     i, v[i], glob[i], e, tol);
					break;
				}
			}
			if (ran)
				checks++;
		}
	}
out:
	/* MP_TIMES=1: rank 0 prints each run's time, to keep the suite's cost in view. */
	if (getenv("MP_TIMES") && rank == 0) {
		clock_gettime(CLOCK_MONOTONIC, &t1);
		fprintf(stderr, "%7.3f s %s\n", (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec),
			tag);
	}
	spardl_plan_destroy(plan);
	spardl_plan_destroy(dense);
	for (w = 0; w < size; w++) {
		free(g[w]);
		free(res[w]);
		free(out[w]);
		free(old[w]);
		free(res0[w]);
		free(out0[w]);
	}
	free(g);
	free(res);
	free(out);
	free(old);
	free(res0);
	free(out0);
	free(mine_base);
	free(old_res);
	free(v);
	free(mag);
	free(sidx);
	free(sval);
}

int main(int argc, char **argv)
{
	struct spardl_comm *comm;
	static const struct {
		size_t n;
		double density;
	} cases[] = {
		{ 1000, 0.01 },   /* n divisible by small P */
		{ 997, 0.05 },    /* n prime: last blocks shorter */
		{ 61, 0.001 },    /* k = 1: most blocks send empty lists */
		{ 5, 0.5 },       /* n < P for P > 5: empty blocks */
		{ 256, 1.0 },     /* density 1: the exact dense sum */
	};
	/* The same schedules on float data, where the order of additions
	 * shows in the bits. */
	static const struct {
		size_t n;
		double density;
		int data, nonfinite, average, calls;
	} fcases[] = {
		{ 997, 0.05, DATA_HEAVY, 128, 0, 4 }, /* NaN and infinities meet each other and the residual */
		{ 1000, 0.01, DATA_NORMAL, 0, 1, 3 }, /* rounding only; averaged */
		{ 997, 0.05, DATA_HEAVY, 0, 0, 3 },   /* magnitudes over 40 decades, no NaN to hide them */
		{ 61, 0.05, DATA_NORMAL, 2, 0, 6 },   /* k = 4: non-finite values over budget stay in the
						       * residual, where NaNs of both signs meet new ones */
		{ 256, 1.0, DATA_HEAVY, 16, 0, 3 },   /* density 1: the whole sum, in SPEC's order */
	};
	int quick = argc > 1 && !strcmp(argv[1], "--quick");
	const char *nb = getenv("MP_NAN_BITS");
	uint64_t seed = 12345;
	int a, d, sag, srs, ci;

	comm = mp_comm_create();
	rank = spardl_comm_rank(comm);
	size = spardl_comm_size(comm);
	nan_any = nb && !strcmp(nb, "any");
	for (a = SPARDL_ALGO_SPARDL; a <= SPARDL_ALGO_GTOPK; a++) {
		if (a == SPARDL_ALGO_GTOPK && !is_pow2(size))
			continue;
		for (d = 1; d <= size; d++) {
			if (size % d || (a != SPARDL_ALGO_SPARDL && d > 1))
				continue;
			for (sag = 0; sag < 2; sag++) {
				if (sag && (a != SPARDL_ALGO_SPARDL || d == 1 || !is_pow2(d)))
					continue;
				for (srs = 0; srs < 2; srs++) {
					if (srs && a != SPARDL_ALGO_SPARDL)
						continue;
					for (ci = 0; ci < (int)(sizeof(cases) / sizeof(cases[0])); ci++) {
						struct cfg c = { .algo = a, .teams = d, .sag = sag, .srs = srs,
								 .average = 0, .residual = 1, .n = cases[ci].n,
								 .density = cases[ci].density, .calls = 3 };

						if (quick && ci > 1)
							continue;
						run(comm, &c, seed + (uint64_t)ci);
					}
					for (ci = 0; ci < (int)(sizeof(fcases) / sizeof(fcases[0])); ci++) {
						struct cfg c = { .algo = a, .teams = d, .sag = sag, .srs = srs,
								 .average = fcases[ci].average, .residual = 1,
								 .n = fcases[ci].n, .density = fcases[ci].density,
								 .calls = fcases[ci].calls, .data = fcases[ci].data,
								 .nonfinite = fcases[ci].nonfinite };

						if (quick && ci > 0)
							continue;
						if (quick)
							c.calls = 3;
						run(comm, &c, seed + 1000 + (uint64_t)ci);
					}
				}
			}
		}
		/* Blocks long enough for the sampled selection paths (candidates
		 * gathered during accumulation), with wide and tie-heavy data. */
		if (size <= 4 && !quick) {
			struct cfg c = { .algo = a, .teams = 1, .average = 0, .residual = 1, .n = 600000,
					 .density = 0.01, .calls = 3, .range = 100000 };

			if (a != SPARDL_ALGO_GTOPK || is_pow2(size)) {
				run(comm, &c, seed + 77);
				c.range = 50;
				run(comm, &c, seed + 78);
				if (size == 4 && a == SPARDL_ALGO_SPARDL) {
					c.teams = 2;
					c.sag = 1;
					run(comm, &c, seed + 79);
				}
			}
			/* Heavy-tailed floats through the sampled thresholds, which
			 * work on the float bits, and the accumulation pass that
			 * gathers candidates: blocks (the whole vector for TopkA and
			 * gTopk) of at least 2^17 elements. A few non-finite values,
			 * but more than the budget in the first n/8 positions, so
			 * that NaNs stay in the residual and meet new ones. */
			if (a != SPARDL_ALGO_DENSE && (a != SPARDL_ALGO_GTOPK || is_pow2(size))) {
				c.teams = 1;
				c.sag = 0;
				c.range = 0;
				c.data = DATA_HEAVY;
				c.nonfinite = 8192;
				c.burst = 1;
				c.calls = 3;
				c.n = a == SPARDL_ALGO_SPARDL ? ((size_t)1 << 17) * (size_t)size + 997 : 140000;
				run(comm, &c, seed + 80);
			}
		}
		/* Averaging, no residual and the sparse output, once per algorithm,
		 * on integers and on floats. */
		{
			struct cfg c = { .algo = a, .teams = 1, .average = 1, .residual = 1, .n = 999,
					 .density = 0.03, .calls = 2 };

			run(comm, &c, seed + 99);
			c.residual = 0;
			run(comm, &c, seed + 98);
			c.residual = 1;
			c.average = 0;
			c.sparse = 1;
			run(comm, &c, seed + 97);
			c.data = DATA_NORMAL;
			c.calls = 3;
			c.average = 1;
			c.sparse = 0;
			run(comm, &c, seed + 96);
			if (!quick) {
				c.data = DATA_HEAVY;
				c.nonfinite = 64;
				c.residual = 0;
				run(comm, &c, seed + 95);
				c.residual = 1;
				c.average = 0;
				c.sparse = 1;
				run(comm, &c, seed + 94);
			}
			/* The dense ring's averaged output in chunks of at least
			 * 4096 (written with streaming stores), on integers,
			 * floats and non-finite values. */
			if (a == SPARDL_ALGO_DENSE) {
				struct cfg dc = { .algo = a, .teams = 1, .average = 1, .residual = 1,
						 .n = (size_t)4096 * (size_t)size + 1237, .density = 1.0, .calls = 2 };

				run(comm, &dc, seed + 93);
				dc.data = DATA_NORMAL;
				run(comm, &dc, seed + 92);
				if (!quick) {
					dc.data = DATA_HEAVY;
					dc.nonfinite = 64;
					run(comm, &dc, seed + 91);
				}
				/* Chunks of at least 4 MiB: the adds stream their sums
				 * into the peer's slot and grad (op_dense_add), summed
				 * and averaged, each with and without direct stores. */
				if (size == 2 && !quick) {
					dc.n = ((size_t)1 << 21) + 1237;
					dc.data = DATA_INT;
					dc.nonfinite = 0;
					dc.average = 0;
					run(comm, &dc, seed + 90);
					run(comm, &dc, seed + 88);
					dc.average = 1;
					run(comm, &dc, seed + 89);
					run(comm, &dc, seed + 87);
				}
			}
		}
	}
	spardl_comm_destroy(comm);
	printf("rank %d: %d checks, %d failures (conservation: %ld positions checked, %ld skipped as non-finite)\n",
	       rank, checks, failures, cons_checked, cons_skipped);
	if (nan_any)
		printf("rank %d: MP_NAN_BITS=any: %ld NaNs of other sign or payload not counted as failures\n", rank,
		       nan_forgiven);
	return failures ? 1 : 0;
}
