/* SPDX-License-Identifier: MIT */
/* Soak test: thousands of calls on one SparDL plan with changing data, the
 * residual invariant checked exactly on every call, and RSS and open file
 * descriptors checked flat after a warm-up. With -f the data are floats of
 * changing scale, and every call's result and residual are compared bit for
 * bit with the independent reference (reference.c), which runs every rank's
 * step in each process. */
#define _GNU_SOURCE
#include <dirent.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <spardl/spardl.h>

#include "mp_common.h"
#include "reference.h"

static int rank, size;
static int failures;

#define FAIL(...)                                                   \
	do {                                                        \
		fprintf(stderr, "FAIL rank %d: ", rank);            \
		fprintf(stderr, __VA_ARGS__);                       \
		fputc('\n', stderr);                                \
		failures++;                                         \
	} while (0)

/* Integer-valued data in [-range, range], roughly zero_mod-1 in zero_mod
 * non-zero: with |values| well below 2^24 every sum is exact in float, in any
 * order, so the invariant must hold bit for bit. */
static void gen(float *g, size_t n, uint64_t seed, int call, int w, int range, unsigned zero_mod)
{
	size_t i;

	for (i = 0; i < n; i++) {
		uint64_t r = mix(seed * 1000003u + (uint64_t)call * 7919u + (uint64_t)w * 104729u + i * 31u + 1);

		g[i] = (r % zero_mod == 0) ? 0.0f
					   : (float)((int)((r >> 8) % (2 * (unsigned)range + 1)) - range);
	}
}

/* Floats of one scale per call (10^-3 .. 10^3), some heavy-tailed, about
 * one in zero_mod zero: sums round, so only the reference can check them. */
static void gen_float(float *g, size_t n, uint64_t seed, int call, int w, unsigned zero_mod)
{
	static const double scales[] = { 1.0, 1e-3, 37.5, 1e3, 0.25 };
	double scale = scales[call % 5];
	size_t i;

	for (i = 0; i < n; i++) {
		uint64_t r = mix(seed * 1000003u + (uint64_t)call * 7919u + (uint64_t)w * 104729u + i * 31u + 7);
		double u = ((double)(r >> 11) + 0.5) / 9007199254740992.0 * 2.0 - 1.0;

		if (r % zero_mod == 0)
			g[i] = 0.0f;
		else if ((r >> 4) % 61 == 0)
			g[i] = (float)(scale * u / (1e-3 + u * u)); /* heavy tail */
		else
			g[i] = (float)(scale * u);
	}
}

/* Resident set size in bytes (second field of /proc/self/statm), or -1. */
static long rss_bytes(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	long pages_total, pages_res;
	int ok;

	if (!f)
		return -1;
	ok = fscanf(f, "%ld %ld", &pages_total, &pages_res) == 2;
	fclose(f);
	return ok ? pages_res * sysconf(_SC_PAGESIZE) : -1;
}

/* Open file descriptors (entries of /proc/self/fd, less . and .. and the
 * directory's own descriptor), or -1. */
static int open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
	struct spardl_comm *comm;
	struct spardl_plan_params pp;
	struct spardl_plan *plan = NULL, *dense = NULL;
	struct spardl_plan_stats st;
	size_t n = 50000, max_nnz = 0, i;
	double density = 0.01, t0;
	int calls = 2000, warmup = 200, sparse_every = 5;
	long rss_limit = 256 * 1024, rss_warm = -1, rss_end = -1;
	int fds_warm = -1, fds_end = -1;
	int inv_checks = 0, sparse_calls = 0, mem_checks = 0, calls_done = 0;
	uint64_t seed = 4242;
	float *g = NULL, *res_old = NULL, *global = NULL, *v = NULL, *sval = NULL;
	int64_t *sidx = NULL;
	int opt, call, ret, average, floats = 0, w;
	float **gall = NULL, **resall = NULL, **outall = NULL;
	struct ref_params rp = { 0 };

	while ((opt = getopt(argc, argv, "c:n:w:f")) != -1) {
		switch (opt) {
		case 'f':
			floats = 1;
			break;
		case 'c':
			calls = atoi(optarg);
			break;
		case 'n':
			n = (size_t)strtoull(optarg, NULL, 10);
			break;
		case 'w':
			warmup = atoi(optarg);
			break;
		default:
			fprintf(stderr, "usage: %s [-c calls] [-n count] [-w warmup-calls] [-f]\n", argv[0]);
			return 2;
		}
	}
	if (calls < 1 || n < 1 || warmup < 1 || warmup >= calls) {
		fprintf(stderr, "need calls > warmup >= 1 and n >= 1\n");
		return 2;
	}

	comm = mp_comm_create();
	rank = spardl_comm_rank(comm);
	size = spardl_comm_size(comm);
	/* Averaging (the default) when dividing by P is exact, i.e. P a power of
	 * two: then result * P is exactly the global sum. Otherwise a plan that
	 * does not average. */
	average = is_pow2(size);

	spardl_plan_params_init(&pp);
	pp.count = n;
	pp.density = density;
	pp.average = average;
	ret = spardl_plan_create(comm, &pp, &plan);
	if (ret) {
		FAIL("plan_create: %s: %s", spardl_strerror(ret), spardl_last_error());
		goto out;
	}
	/* The cross-rank sum for the invariant: the dense path, not averaging. */
	spardl_plan_params_init(&pp);
	pp.count = n;
	pp.algo = SPARDL_ALGO_DENSE;
	pp.average = 0;
	ret = spardl_plan_create(comm, &pp, &dense);
	if (ret) {
		FAIL("dense plan_create: %s: %s", spardl_strerror(ret), spardl_last_error());
		goto out;
	}
	max_nnz = spardl_plan_max_nnz(plan);
	g = malloc(n * sizeof(float));
	res_old = malloc(n * sizeof(float));
	global = malloc(n * sizeof(float));
	v = malloc(n * sizeof(float));
	sidx = malloc((max_nnz + 1) * sizeof(*sidx));
	sval = malloc((max_nnz + 1) * sizeof(*sval));
	if (!g || !res_old || !global || !v || !sidx || !sval) {
		FAIL("out of memory");
		goto out;
	}
	if (floats) {
		/* Every rank's step, simulated here by the reference. */
		rp.size = size;
		rp.n = n;
		rp.density = density;
		rp.algo = SPARDL_ALGO_SPARDL;
		rp.teams = 1;
		rp.sag = SPARDL_SAG_BRUCK;
		rp.residual = 1;
		rp.average = average;
		gall = calloc((size_t)size, sizeof(*gall));
		resall = calloc((size_t)size, sizeof(*resall));
		outall = calloc((size_t)size, sizeof(*outall));
		for (w = 0; gall && resall && outall && w < size; w++) {
			gall[w] = malloc(n * sizeof(float));
			resall[w] = calloc(n, sizeof(float));
			outall[w] = malloc(n * sizeof(float));
			if (!gall[w] || !resall[w] || !outall[w])
				break;
		}
		if (!gall || !resall || !outall || w < size) {
			FAIL("out of memory for the reference");
			goto out;
		}
	}

	t0 = now();
	for (call = 0; call < calls; call++) {
		static const int ranges[] = { 50, 1, 1000, 7, 50, 200 };
		int range = ranges[call % 6];
		unsigned zero_mod = 2 + (unsigned)(call % 5);
		int sparse = call % sparse_every == sparse_every - 1;
		const void *rptr;
		const float *res;
		size_t bad = n;

		/* Every call new data; now and then one rank contributes nothing,
		 * so the call moves residual only. */
		if (floats) {
			for (w = 0; w < size; w++) {
				if (call % 97 == 13 && w == call % size)
					memset(gall[w], 0, n * sizeof(float));
				else
					gen_float(gall[w], n, seed, call, w, zero_mod);
			}
			memcpy(g, gall[rank], n * sizeof(float));
		} else if (call % 97 == 13 && rank == call % size) {
			memset(g, 0, n * sizeof(float));
		} else {
			gen(g, n, seed, call, rank, range, zero_mod);
		}
		ret = spardl_plan_residual(plan, &rptr);
		if (ret) {
			FAIL("call %d: residual: %s", call, spardl_last_error());
			break;
		}
		memcpy(res_old, rptr, n * sizeof(float));

		if (sparse) {
			size_t nnz = (size_t)-1;

			memcpy(v, g, n * sizeof(float));
			ret = spardl_allreduce_sparse(plan, v, sidx, sval, &nnz);
			if (ret) {
				FAIL("call %d: allreduce_sparse: %s: %s", call, spardl_strerror(ret),
				     spardl_last_error());
				break;
			}
			if (memcmp(v, g, n * sizeof(float)))
				FAIL("call %d: the sparse variant changed its input", call);
			if (nnz > max_nnz) {
				FAIL("call %d: nnz %zu over max_nnz %zu", call, nnz, max_nnz);
				break;
			}
			memset(global, 0, n * sizeof(float));
			for (i = 0; i < nnz; i++) {
				if (sidx[i] < 0 || (size_t)sidx[i] >= n || (i && sidx[i] <= sidx[i - 1])) {
					FAIL("call %d: sparse index %zu (%lld) out of order or range", call, i,
					     (long long)sidx[i]);
					break;
				}
				global[sidx[i]] = sval[i];
			}
			if (i < nnz)
				break;
			sparse_calls++;
		} else {
			memcpy(global, g, n * sizeof(float));
			ret = spardl_allreduce(plan, global);
			if (ret) {
				FAIL("call %d: allreduce: %s: %s", call, spardl_strerror(ret), spardl_last_error());
				break;
			}
		}
		calls_done++;

		ret = spardl_plan_residual(plan, &rptr);
		if (ret) {
			FAIL("call %d: residual: %s", call, spardl_last_error());
			break;
		}
		res = rptr;
		if (floats) {
			/* The reference's step for every rank: this rank's result
			 * and residual, bit for bit. */
			if (ref_step(&rp, (const float *const *)gall, resall, outall)) {
				FAIL("call %d: the reference refused its parameters", call);
				break;
			}
			for (i = 0; i < n; i++)
				if (memcmp(&global[i], &outall[rank][i], sizeof(float)) ||
				    memcmp(&res[i], &resall[rank][i], sizeof(float)))
					break;
			if (i < n) {
				FAIL("call %d (%s): at %zu result %a residual %a, the reference %a and %a", call,
				     sparse ? "sparse" : "dense-output", i, (double)global[i], (double)res[i],
				     (double)outall[rank][i], (double)resall[rank][i]);
				break;
			}
			inv_checks++;
			if (call + 1 == warmup) {
				rss_warm = rss_bytes();
				fds_warm = open_fds();
			}
			continue;
		}
		/* sum_w (new_res - g - old_res) + global_sum == 0, exactly. */
		for (i = 0; i < n; i++)
			v[i] = res[i] - g[i] - res_old[i];
		ret = spardl_allreduce(dense, v);
		if (ret) {
			FAIL("call %d: dense sum: %s: %s", call, spardl_strerror(ret), spardl_last_error());
			break;
		}
		for (i = 0; i < n; i++) {
			float gs = average ? global[i] * (float)size : global[i];

			if (v[i] + gs != 0.0f) {
				bad = i;
				break;
			}
		}
		if (bad < n) {
			FAIL("call %d (%s): invariant broken at %zu: sum(new_res - g - old_res) %g + global %g != 0",
			     call, sparse ? "sparse" : "dense-output", bad, v[bad],
			     average ? global[bad] * (float)size : global[bad]);
			break;
		}
		inv_checks++;

		if (call + 1 == warmup) {
			rss_warm = rss_bytes();
			fds_warm = open_fds();
		}
	}
	rss_end = rss_bytes();
	fds_end = open_fds();
	if (rss_warm < 0 || rss_end < 0 || fds_warm < 0 || fds_end < 0) {
		if (!failures)
			FAIL("RSS / fd counts not measured (warm-up %ld B %d fds, end %ld B %d fds)", rss_warm,
			     fds_warm, rss_end, fds_end);
	} else {
		if (fds_end != fds_warm)
			FAIL("open fds changed after warm-up: %d after call %d, %d at the end", fds_warm, warmup,
			     fds_end);
		if (rss_end - rss_warm > rss_limit)
			FAIL("RSS grew %ld KiB after warm-up (%ld KiB after call %d, %ld KiB at the end; limit %ld KiB)",
			     (rss_end - rss_warm) / 1024, rss_warm / 1024, warmup, rss_end / 1024, rss_limit / 1024);
		mem_checks = 2;
	}
	ret = spardl_plan_stats(plan, &st);
	if (ret)
		FAIL("plan_stats: %s", spardl_last_error());
	else if (st.calls != (uint64_t)calls_done)
		FAIL("plan_stats counts %llu calls, made %d", (unsigned long long)st.calls, calls_done);
	/* Every check has to have run, not just not failed. */
	if (!failures && (calls_done != calls || inv_checks != calls || mem_checks != 2 || !sparse_calls))
		FAIL("only %d of %d calls, %d invariant checks, %d sparse calls, %d memory checks ran", calls_done,
		     calls, inv_checks, sparse_calls, mem_checks);
	printf("rank %d: %s P=%d n=%zu density=%g average=%d, %s data: %d calls (%d sparse-output) in %.2f s, "
	       "%d %s checks; RSS %ld KiB after call %d, %ld KiB at the end (growth %ld KiB, limit %ld KiB); "
	       "fds %d -> %d; %d failures\n",
	       rank, spardl_comm_transport(comm), size, n, density, average, floats ? "float" : "integer", calls_done,
	       sparse_calls, now() - t0, inv_checks, floats ? "reference" : "invariant", rss_warm / 1024, warmup, rss_end / 1024, (rss_end - rss_warm) / 1024, rss_limit / 1024,
	       fds_warm, fds_end, failures);
out:
	spardl_plan_destroy(plan);
	spardl_plan_destroy(dense);
	spardl_comm_destroy(comm);
	free(g);
	free(res_old);
	free(global);
	free(v);
	free(sidx);
	free(sval);
	for (w = 0; floats && w < size; w++) {
		free(gall ? gall[w] : NULL);
		free(resall ? resall[w] : NULL);
		free(outall ? outall[w] : NULL);
	}
	free(gall);
	free(resall);
	free(outall);
	return failures ? 1 : 0;
}
