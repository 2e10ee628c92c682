// SPDX-License-Identifier: MIT
/*
 * spardl-mpi-compare: Open MPI's dense MPI_Allreduce and spardl's algorithms
 * on the same data, in one mpirun, with the streaming floor (c[i] += a[i]
 * over n floats plus a memset of n floats) timed in the same run. spardl's
 * communicator rendezvouses through MPI_Allgather (SPARDL_COMM_PARAM_OOB),
 * so no second port is needed. Run by benchmarks/compare-mpi.sh.
 *
 * Every method sums (no averaging), in place, on a fresh window of a 2n
 * pool of data per call; time per call = the slowest rank's, median.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>
#include <spardl/spardl.h>

#include "bench-util.h"

#define MAX_METHODS 8

struct method {
	const char *name;
	int algo; /* -1: MPI_Allreduce, -2: the floor */
	double med, min, max;
	double r_mpi, r_floor; /* medians of the per-round ratios */
	struct spardl_plan_stats st;
	struct spardl_plan *plan;
};

static int rank, size;

static int oob_allgather(void *ctx, const void *sendbuf, void *recvbuf, size_t len)
{
	(void)ctx;
	return MPI_Allgather(sendbuf, (int)len, MPI_BYTE, recvbuf, (int)len, MPI_BYTE, MPI_COMM_WORLD) != MPI_SUCCESS;
}

static void gen(float *g, size_t n, uint64_t seed, int normal)
{
	uint64_t s = seed * 0x9e3779b97f4a7c15ULL + 1;
	size_t i;

	if (normal) {
		bench_gen_normal(g, n, &s);
		return;
	}
	for (i = 0; i < n; i++)
		g[i] = (float)((int)(bench_rng_next(&s) % 4001) - 2000);
}

static void usage(FILE *f)
{
	fprintf(f, "usage: mpirun -np P spardl-mpi-compare [-n N] [-d D] [--iters I] [--warmup W] [--data normal|int]\n"
		   "                                   [--algos spardl,topka,gtopk,dense] [--gap-ms G]\n"
		   "--iters: timed rounds (default 15); --warmup: untimed rounds first (default 8, past the calls in\n"
		   "which a plan times its output's store types, SPARDL_STREAM_OUTPUT=auto)\n"
		   "--gap-ms: every rank sleeps G ms (untimed) before each call, as a training step's compute\n"
		   "separates its allreduce calls (default 0: calls back to back)\n"
		   "Times MPI_Allreduce (dense, MPI_SUM, in place), spardl's algorithms and the streaming floor\n"
		   "on the same data in one run; prints each one's median time (slowest rank) and its ratios.\n");
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "count", required_argument, NULL, 'n' }, { "density", required_argument, NULL, 'd' },
		{ "iters", required_argument, NULL, 'i' }, { "warmup", required_argument, NULL, 'w' },
		{ "data", required_argument, NULL, 'D' },  { "algos", required_argument, NULL, 'a' },
		{ "gap-ms", required_argument, NULL, 'g' }, { "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	static const char *const names[] = { "spardl", "dense", "topka", "gtopk" };
	struct method m[MAX_METHODS];
	struct spardl_comm_params cp;
	struct spardl_comm *comm = NULL;
	size_t n = 1u << 24, pool_n, i;
	double density = 0.01, gap_ms = 0, *t = NULL, *r_mpi = NULL, *r_floor = NULL;
	int iters = 15, warmup = 8, normal = 1, nm = 0, c, k, it, ret = 0;
	char algos[256] = "spardl,topka,gtopk,dense", *tok, *save = NULL, *end;
	float *buf = NULL, *pool = NULL, *fc = NULL, *fm = NULL;

	MPI_Init(&argc, &argv);
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &size);
	while ((c = getopt_long(argc, argv, "n:d:h", lo, NULL)) != -1) {
		switch (c) {
		case 'n':
			if (!strncmp(optarg, "2^", 2))
				n = (size_t)1 << strtoul(optarg + 2, &end, 10);
			else
				n = strtoull(optarg, &end, 0);
			if (*end || !n)
				goto bad;
			break;
		case 'd':
			density = strtod(optarg, &end);
			if (*end || !(density > 0 && density <= 1))
				goto bad;
			break;
		case 'i':
			iters = (int)strtol(optarg, &end, 10);
			if (*end || iters < 1)
				goto bad;
			break;
		case 'w':
			warmup = (int)strtol(optarg, &end, 10);
			if (*end || warmup < 0)
				goto bad;
			break;
		case 'D':
			if (strcmp(optarg, "normal") && strcmp(optarg, "int"))
				goto bad;
			normal = !strcmp(optarg, "normal");
			break;
		case 'g':
			gap_ms = strtod(optarg, &end);
			if (*end || !(gap_ms >= 0 && gap_ms <= 10000))
				goto bad;
			break;
		case 'a':
			snprintf(algos, sizeof(algos), "%s", optarg);
			break;
		case 'h':
			if (rank == 0)
				usage(stdout);
			MPI_Finalize();
			return 0;
		default:
			goto bad;
		}
	}
	m[nm++] = (struct method){ .name = "MPI_Allreduce", .algo = -1 };
	m[nm++] = (struct method){ .name = "floor", .algo = -2 };
	for (tok = strtok_r(algos, ",", &save); tok && nm < MAX_METHODS; tok = strtok_r(NULL, ",", &save)) {
		for (k = 0; k < 4 && strcmp(tok, names[k]); k++)
			;
		if (k == 4)
			goto bad;
		m[nm++] = (struct method){ .name = names[k], .algo = k };
	}
	/* Allocate and touch everything before any timing. */
	pool_n = 2 * n;
	buf = malloc(n * sizeof(float));
	pool = malloc(pool_n * sizeof(float));
	fc = malloc(n * sizeof(float));
	fm = malloc(n * sizeof(float));
	t = calloc((size_t)iters * MAX_METHODS, sizeof(double));
	r_mpi = calloc((size_t)iters, sizeof(double));
	r_floor = calloc((size_t)iters, sizeof(double));
	if (!buf || !pool || !fc || !fm || !t || !r_mpi || !r_floor) {
		fprintf(stderr, "rank %d: out of memory for n = %zu\n", rank, n);
		MPI_Abort(MPI_COMM_WORLD, 1);
	}
	memset(buf, 0, n * sizeof(float));
	memset(fc, 0, n * sizeof(float));
	memset(fm, 0, n * sizeof(float));
	gen(pool, pool_n, 1 + (uint64_t)rank * 7919, normal);
	spardl_comm_params_init(&cp);
	cp.field_mask = SPARDL_COMM_PARAM_RANK_SIZE | SPARDL_COMM_PARAM_OOB;
	cp.rank = rank;
	cp.size = size;
	cp.oob_allgather = oob_allgather;
	if (spardl_comm_create(&cp, &comm)) {
		fprintf(stderr, "rank %d: spardl_comm_create: %s\n", rank, spardl_last_error());
		MPI_Abort(MPI_COMM_WORLD, 1);
	}
	/* Every plan first, then rounds: each round times every method once,
	 * on the same window of the pool, so a slow spell of this shared
	 * machine hits all methods alike. */
	for (k = 0; k < nm; k++) {
		struct spardl_plan_params pp;

		m[k].plan = NULL;
		if (m[k].algo < 0)
			continue;
		spardl_plan_params_init(&pp);
		pp.count = n;
		pp.density = density;
		pp.algo = (enum spardl_algo)m[k].algo;
		pp.average = 0;
		if (spardl_plan_create(comm, &pp, &m[k].plan)) {
			fprintf(stderr, "rank %d: %s: %s\n", rank, m[k].name, spardl_last_error());
			MPI_Abort(MPI_COMM_WORLD, 1);
		}
	}
	for (it = -warmup; it < iters; it++) {
		size_t off = ((size_t)(it + warmup) * 7919u * 64u) % (pool_n - n + 1);

		for (k = 0; k < nm; k++) {
			struct spardl_plan *plan = m[k].plan;
			double t0, dt, mx;

			memcpy(buf, pool + off, n * sizeof(float));
			if (gap_ms > 0)
				bench_sleep(gap_ms * 1e-3);
			if (it == 0 && plan && spardl_plan_stats(plan, &m[k].st))
				MPI_Abort(MPI_COMM_WORLD, 1);
			MPI_Barrier(MPI_COMM_WORLD);
			t0 = bench_now();
			if (m[k].algo == -1) {
				ret = MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD) != MPI_SUCCESS;
			} else if (m[k].algo == -2) {
				for (i = 0; i < n; i++)
					fc[i] += buf[i];
				memset(fm, 0, n * sizeof(float));
			} else {
				ret = spardl_allreduce(plan, buf);
			}
			dt = bench_now() - t0;
			if (ret) {
				fprintf(stderr, "rank %d: %s failed: %s\n", rank, m[k].name,
					m[k].algo == -1 ? "MPI error" : spardl_last_error());
				MPI_Abort(MPI_COMM_WORLD, 1);
			}
			MPI_Allreduce(&dt, &mx, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
			if (it >= 0)
				t[(size_t)k * (size_t)iters + (size_t)it] = mx * 1e3;
		}
	}
	for (k = 0; k < nm; k++) {
		double *tk = t + (size_t)k * (size_t)iters;

		if (m[k].plan) {
			struct spardl_plan_stats e;

			if (spardl_plan_stats(m[k].plan, &e))
				MPI_Abort(MPI_COMM_WORLD, 1);
			e.calls -= m[k].st.calls;
			e.accumulate -= m[k].st.accumulate;
			e.select -= m[k].st.select;
			e.reduce -= m[k].st.reduce;
			e.post -= m[k].st.post;
			e.wait -= m[k].st.wait;
			e.output -= m[k].st.output;
			m[k].st = e;
		}
		/* Per round: this method's time over MPI's and over the floor's. */
		for (it = 0; it < iters; it++) {
			r_mpi[it] = tk[it] / t[it];
			r_floor[it] = tk[it] / t[(size_t)iters + (size_t)it];
		}
		m[k].r_mpi = bench_median(r_mpi, iters);
		m[k].r_floor = bench_median(r_floor, iters);
		m[k].min = m[k].max = tk[0];
		for (it = 0; it < iters; it++) {
			m[k].min = tk[it] < m[k].min ? tk[it] : m[k].min;
			m[k].max = tk[it] > m[k].max ? tk[it] : m[k].max;
		}
		m[k].med = bench_median(tk, iters);
	}
	for (k = 0; k < nm; k++)
		spardl_plan_destroy(m[k].plan);
	if (rank == 0) {
		printf("# spardl-mpi-compare: %d ranks, spardl transport %s, n = %zu, density %g, data %s, %d calls "
		       "(+%d warm-up) each, GLIBC_TUNABLES=%s\n",
		       size, spardl_comm_transport(comm), n, density, normal ? "N(0,1) floats" : "integers", iters,
		       warmup, bench_tunables());
		if (gap_ms > 0)
			printf("# every rank sleeps %g ms (untimed) before each call\n", gap_ms);
		printf("# methods interleaved: each round times every method once on the same data\n");
		printf("# time per call = the slowest rank's, median; /MPI and /floor = median over rounds of the\n"
		       "# round's ratio; split = rank 0's ms per call\n");
		printf("%-14s %10s %10s %10s %12s %10s | %8s %8s %8s %8s %8s %8s\n", "method", "median_ms", "min_ms",
		       "max_ms", "/MPI_Allred", "/floor", "accum", "select", "reduce", "post", "wait", "output");
		for (k = 0; k < nm; k++) {
			double cc = m[k].st.calls ? (double)m[k].st.calls : 1;

			printf("%-14s %10.3f %10.3f %10.3f %11.2fx %9.2fx", m[k].name, m[k].med, m[k].min, m[k].max,
			       m[k].r_mpi, m[k].r_floor);
			if (m[k].algo >= 0)
				printf(" | %8.3f %8.3f %8.3f %8.3f %8.3f %8.3f", m[k].st.accumulate / cc * 1e3,
				       m[k].st.select / cc * 1e3, m[k].st.reduce / cc * 1e3, m[k].st.post / cc * 1e3,
				       m[k].st.wait / cc * 1e3, m[k].st.output / cc * 1e3);
			printf("\n");
		}
	}
	spardl_comm_destroy(comm);
	free(buf);
	free(pool);
	free(fc);
	free(fm);
	free(t);
	free(r_mpi);
	free(r_floor);
	MPI_Finalize();
	return 0;
bad:
	if (rank == 0) {
		fprintf(stderr, "spardl-mpi-compare: bad option or value\n");
		usage(stderr);
	}
	MPI_Finalize();
	return 2;
}
