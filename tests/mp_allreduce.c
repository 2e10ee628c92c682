/* Multi-process test: every algorithm and variant, bit for bit against the serial reference, with the invariant. */
#define _GNU_SOURCE
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <spardl/spardl.h>

#include "mp_common.h"

#include "reference.h"

static int rank, size;
static int failures, checks;

#define FAIL(...)                                                   \
	do {                                                        \
		fprintf(stderr, "FAIL rank %d: ", rank);            \
		fprintf(stderr, __VA_ARGS__);                       \
		fputc('\n', stderr);                                \
		failures++;                                         \
	} while (0)

/* Integer-valued data in [-50, 50], about a third zeros: every sum is exact,
 * so results must match the reference bit for bit. */
static void gen(float *g, size_t n, uint64_t seed, int call, int w, int range)
{
	size_t i;

	for (i = 0; i < n; i++) {
		uint64_t r = mix(seed * 1000003u + (uint64_t)call * 7919u + (uint64_t)w * 104729u + i * 31u + 1);

		g[i] = (r % 3 == 0) ? 0.0f : (float)((int)((r >> 8) % (2 * (unsigned)range + 1)) - range);
	}
}

struct cfg {
	int algo, teams, sag, srs, average, residual, sparse;
	int range; /* data in [-range, range]; 0 means 50 */
	size_t n;
	double density;
	int calls;
};

static const char *algo_name(int a)
{
	static const char *names[] = { "spardl", "dense", "topka", "gtopk" };

	return names[a];
}

static int first_diff(const float *a, const float *b, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (memcmp(&a[i], &b[i], sizeof(float)))
			return (int)i;
	return -1;
}

/* Sum of v over all ranks through the dense path (exact on integer data). */
static int sum_all(struct spardl_plan *dense, float *v)
{
	return spardl_allreduce(dense, v);
}

static void run(struct spardl_comm *comm, const struct cfg *c, uint64_t seed)
{
	struct spardl_plan_params pp;
	struct spardl_plan *plan = NULL, *dense = NULL;
	struct ref_params rp = { .size = size, .n = c->n, .density = c->density, .algo = c->algo,
				 .teams = c->teams, .sag = c->sag, .residual = c->residual,
				 .average = c->average };
	float **g = calloc((size_t)size, sizeof(float *)), **res = calloc((size_t)size, sizeof(float *));
	float **out = calloc((size_t)size, sizeof(float *));
	float *mine = malloc(c->n * sizeof(float)), *old_res = malloc(c->n * sizeof(float));
	float *v = malloc(c->n * sizeof(float)), *dense_out = calloc(c->n, sizeof(float));
	int64_t *sidx = NULL;
	float *sval = NULL;
	char tag[200];
	int w, call, ret, d;
	size_t i;

	snprintf(tag, sizeof(tag), "%s P=%d d=%d sag=%s srs=%s n=%zu density=%g avg=%d res=%d %s", algo_name(c->algo),
		 size, c->teams, c->sag ? "recursive" : "bruck", c->srs ? "sequential" : "batched", c->n,
		 c->density, c->average, c->residual, c->sparse ? "sparse-output" : "dense-output");
	for (w = 0; w < size; w++) {
		g[w] = malloc(c->n * sizeof(float));
		res[w] = calloc(c->n, sizeof(float));
		out[w] = malloc(c->n * sizeof(float));
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
	ret = spardl_plan_create(comm, &pp, &plan);
	if (ret) {
		FAIL("%s: plan_create: %s: %s", tag, spardl_strerror(ret), spardl_last_error());
		goto out;
	}
	spardl_plan_params_init(&pp);
	pp.count = c->n;
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
	for (call = 0; call < c->calls; call++) {
		const void *lresv;
		const float *lres;

		for (w = 0; w < size; w++)
			gen(g[w], c->n, seed, call, w, c->range ? c->range : 50);
		memcpy(mine, g[rank], c->n * sizeof(float));
		ret = spardl_plan_residual(plan, &lresv);
		lres = lresv;
		if (ret) {
			FAIL("%s: residual: %s", tag, spardl_last_error());
			break;
		}
		memcpy(old_res, lres, c->n * sizeof(float));
		if (ref_step(&rp, (const float *const *)g, res, out)) {
			FAIL("%s: the reference rejects these parameters", tag);
			break;
		}
		if (c->sparse) {
			size_t nnz = 0;

			ret = spardl_allreduce_sparse(plan, mine, sidx, sval, &nnz);
			if (!ret) {
				if (first_diff(mine, g[rank], c->n) >= 0)
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
		checks++;
		d = first_diff(mine, out[rank], c->n);
		if (d >= 0) {
			FAIL("%s call %d: result differs from the reference at %d: %g vs %g", tag, call, d,
			     mine[d], out[rank][d]);
			break;
		}
		spardl_plan_residual(plan, &lresv);
		lres = lresv;
		d = first_diff(lres, res[rank], c->n);
		if (d >= 0) {
			FAIL("%s call %d: residual differs from the reference at %d: %g vs %g", tag, call, d,
			     lres[d], res[rank][d]);
			break;
		}
		/* Conservation, through the library's own dense path:
		 * sum_w (new_res - g - old_res) + global_sum == 0. */
		if (c->residual) {
			for (i = 0; i < c->n; i++)
				v[i] = lres[i] - g[rank][i] - old_res[i];
			ret = sum_all(dense, v);
			if (ret) {
				FAIL("%s: dense sum: %s", tag, spardl_last_error());
				break;
			}
			for (i = 0; i < c->n; i++) {
				float global = c->average ? out[rank][i] * (float)size : out[rank][i];

				if (!c->average && v[i] + global != 0.0f) {
					FAIL("%s call %d: conservation broken at %zu: %g + %g", tag, call, i, v[i],
					     global);
					break;
				}
			}
			checks++;
		}
	}
out:
	spardl_plan_destroy(plan);
	spardl_plan_destroy(dense);
	for (w = 0; w < size; w++) {
		free(g[w]);
		free(res[w]);
		free(out[w]);
	}
	free(g);
	free(res);
	free(out);
	free(mine);
	free(old_res);
	free(v);
	free(dense_out);
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
	int quick = argc > 1 && !strcmp(argv[1], "--quick");
	uint64_t seed = 12345;
	int ret, a, d, sag, srs, ci;

	ret = spardl_comm_create(NULL, &comm);
	if (ret) {
		fprintf(stderr, "comm_create: %s: %s\n", spardl_strerror(ret), spardl_last_error());
		return 1;
	}
	rank = spardl_comm_rank(comm);
	size = spardl_comm_size(comm);
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
		}
		/* Averaging, no residual and the sparse output, once per algorithm. */
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
		}
	}
	spardl_comm_destroy(comm);
	printf("rank %d: %d checks, %d failures\n", rank, checks, failures);
	return failures ? 1 : 0;
}
