/* SPDX-License-Identifier: MIT */
/*
 * spardl-cuda-bench: CUDA plans against host plans on the same data, in one
 * run (public API and the CUDA runtime only). Per algorithm and call: a
 * host plan's call from host memory, a CUDA plan's synchronous call and its
 * async call on a stream (then a stream synchronize), all on N(0,1) floats;
 * the first call's results are compared bit for bit. Also times the staging
 * floor (device-to-host plus host-to-device copy of the gradient) and a
 * device-to-device copy of the same bytes. Times are the slowest rank's,
 * medians over the calls. Exit 77 where there is no usable CUDA device.
 *
 *   spardl-run -n 2 spardl-cuda-bench -n 67108864 -d 0.01 -a spardl,topka,dense
 */
#define _GNU_SOURCE
#include <cuda_runtime_api.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <spardl/spardl.h>

#include "bench-util.h"

static int rank, size;

#define CU(call)                                                                                        \
	do {                                                                                            \
		cudaError_t e_ = (call);                                                               \
		if (e_ != cudaSuccess) {                                                               \
			fprintf(stderr, "rank %d: %s: %s\n", rank, #call, cudaGetErrorString(e_));     \
			exit(1);                                                                       \
		}                                                                                      \
	} while (0)

#define SP(call)                                                                                        \
	do {                                                                                            \
		int r_ = (call);                                                                       \
		if (r_) {                                                                              \
			fprintf(stderr, "rank %d: %s: %s\n", rank, #call, spardl_last_error());        \
			exit(1);                                                                       \
		}                                                                                      \
	} while (0)

/* The slowest rank's value: every rank's through a dense sum of a vector. */
static double slowest(struct spardl_plan *vec, float *v, double x)
{
	double m = 0;
	int i;

	memset(v, 0, (size_t)size * sizeof(float));
	v[rank] = (float)x;
	SP(spardl_allreduce(vec, v));
	for (i = 0; i < size; i++)
		if (v[i] > m)
			m = v[i];
	return m;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: spardl-cuda-bench [-n COUNT] [-d DENSITY] [-a ALGOS] [-i ITERS] [-w WARMUP]\n"
		   "  -n COUNT    floats per gradient (default 16777216)\n"
		   "  -d DENSITY  (default 0.01)\n"
		   "  -a ALGOS    comma-separated: spardl, topka, gtopk, dense (default spardl,dense)\n"
		   "  -i ITERS    timed calls (default 10), -w WARMUP untimed calls first (default 2)\n"
		   "Run under a launcher: spardl-run -n 2 spardl-cuda-bench ...\n");
}

int main(int argc, char **argv)
{
	size_t n = (size_t)1 << 24, i;
	double density = 0.01;
	char algos[128] = "spardl,dense", *tok, *save;
	int iters = 10, warmup = 2, c, ndev = 0, dev = 0;
	struct spardl_comm *comm;
	struct spardl_plan_params pp;
	struct spardl_plan *vec = NULL;
	float *pool, *hg, *hres, *hpin, *v, *dpool, *dg, *dcopy;
	double *th, *ts, *ta, *tf, *tc;
	uint64_t seed;
	cudaStream_t stream;
	char *end;

	while ((c = getopt(argc, argv, "n:d:a:i:w:h")) != -1) {
		switch (c) {
		case 'n':
			n = strtoull(optarg, &end, 0);
			if (*end || !n)
				goto bad;
			break;
		case 'd':
			density = strtod(optarg, &end);
			if (*end || density <= 0 || density > 1)
				goto bad;
			break;
		case 'a':
			snprintf(algos, sizeof(algos), "%s", optarg);
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
		case 'h':
			usage(stdout);
			return 0;
		default:
		bad:
			usage(stderr);
			return 2;
		}
	}
	{
		cudaError_t e = cudaGetDeviceCount(&ndev);

		if (e != cudaSuccess || ndev < 1) {
			printf("SKIP: no usable CUDA device: cudaGetDeviceCount: %s (%s)\n",
			       e != cudaSuccess ? cudaGetErrorName(e) : "no devices",
			       e != cudaSuccess ? cudaGetErrorString(e) : "the driver reports none");
			return 77;
		}
	}
	SP(spardl_comm_create(NULL, &comm));
	rank = spardl_comm_rank(comm);
	size = spardl_comm_size(comm);
	dev = rank % ndev;
	CU(cudaSetDevice(dev));
	CU(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
	spardl_plan_params_init(&pp);
	pp.count = (size_t)size;
	pp.algo = SPARDL_ALGO_DENSE;
	pp.density = 1.0;
	pp.average = 0;
	SP(spardl_plan_create(comm, &pp, &vec));
	v = calloc((size_t)size, sizeof(float));
	/* Allocated and touched here, never per call. */
	pool = malloc(2 * n * sizeof(float));
	hg = malloc(n * sizeof(float));
	hres = malloc(n * sizeof(float));
	th = calloc((size_t)iters, sizeof(double));
	ts = calloc((size_t)iters, sizeof(double));
	ta = calloc((size_t)iters, sizeof(double));
	tf = calloc((size_t)iters, sizeof(double));
	tc = calloc((size_t)iters, sizeof(double));
	if (!v || !pool || !hg || !hres || !th || !ts || !ta || !tf || !tc) {
		fprintf(stderr, "rank %d: out of memory\n", rank);
		return 1;
	}
	seed = 0x9e3779b97f4a7c15ull ^ (uint64_t)(rank + 1) * 0xbf58476d1ce4e5b9ull;
	bench_gen_normal(pool, 2 * n, &seed);
	memset(hg, 0, n * sizeof(float));
	memset(hres, 0, n * sizeof(float));
	CU(cudaHostAlloc((void **)&hpin, n * sizeof(float), cudaHostAllocDefault));
	memset(hpin, 0, n * sizeof(float));
	CU(cudaMalloc((void **)&dpool, 2 * n * sizeof(float)));
	CU(cudaMalloc((void **)&dg, n * sizeof(float)));
	CU(cudaMalloc((void **)&dcopy, n * sizeof(float)));
	CU(cudaMemcpy(dpool, pool, 2 * n * sizeof(float), cudaMemcpyHostToDevice));
	if (rank == 0) {
		struct cudaDeviceProp prop;

		CU(cudaGetDeviceProperties(&prop, dev));
		printf("# spardl-cuda-bench: %d ranks on %s (%d devices), n=%zu, density=%g, %d calls (+%d warm-up), "
		       "N(0,1) floats, GLIBC_TUNABLES=%s, transport %s\n",
		       size, prop.name, ndev, n, density, iters, warmup, bench_tunables(), spardl_comm_transport(comm));
		printf("%-8s %10s %10s %10s %10s %10s %9s %9s %s\n", "algo", "host_ms", "cuda_ms", "async_ms",
		       "stage_ms", "d2d_ms", "cuda/host", "cuda/stage", "check");
	}
	for (tok = strtok_r(algos, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		struct spardl_plan *hp = NULL, *cp = NULL;
		const char *check = "bit-identical";
		int it, differs = 0;

		spardl_plan_params_init(&pp);
		pp.count = n;
		pp.density = density;
		if (!strcmp(tok, "spardl"))
			pp.algo = SPARDL_ALGO_SPARDL;
		else if (!strcmp(tok, "topka"))
			pp.algo = SPARDL_ALGO_TOPKA;
		else if (!strcmp(tok, "gtopk"))
			pp.algo = SPARDL_ALGO_GTOPK;
		else if (!strcmp(tok, "dense"))
			pp.algo = SPARDL_ALGO_DENSE, pp.density = 1.0;
		else {
			fprintf(stderr, "spardl-cuda-bench: unknown algo '%s'\n", tok);
			return 2;
		}
		SP(spardl_plan_create(comm, &pp, &hp));
		pp.mem_type = SPARDL_MEM_CUDA;
		SP(spardl_plan_create(comm, &pp, &cp));
		for (it = -warmup; it < iters; it++) {
			size_t off = ((size_t)(it + warmup) * 7919u * 64u) % (n + 1);
			double t0, x;

			/* Host plan, host memory. */
			memcpy(hg, pool + off, n * sizeof(float));
			slowest(vec, v, 0);
			t0 = bench_now();
			SP(spardl_allreduce(hp, hg));
			x = slowest(vec, v, bench_now() - t0);
			if (it >= 0)
				th[it] = x;
			/* CUDA plan, synchronous. */
			CU(cudaMemcpy(dg, dpool + off, n * sizeof(float), cudaMemcpyDeviceToDevice));
			CU(cudaDeviceSynchronize());
			slowest(vec, v, 0);
			t0 = bench_now();
			SP(spardl_allreduce(cp, dg));
			x = slowest(vec, v, bench_now() - t0);
			if (it >= 0)
				ts[it] = x;
			if (it == -warmup) {
				CU(cudaMemcpy(hres, dg, n * sizeof(float), cudaMemcpyDeviceToHost));
				for (i = 0; i < n && !differs; i++)
					if (memcmp(&hres[i], &hg[i], sizeof(float))) {
						differs = 1;
						fprintf(stderr, "rank %d: %s: CUDA and host results differ at %zu\n", rank,
							tok, i);
					}
				/* On every rank, if on any. */
				if (slowest(vec, v, differs) > 0)
					check = "DIFFERS";
			}
			/* CUDA plan, async on a stream. */
			CU(cudaMemcpy(dg, dpool + off, n * sizeof(float), cudaMemcpyDeviceToDevice));
			CU(cudaDeviceSynchronize());
			slowest(vec, v, 0);
			t0 = bench_now();
			SP(spardl_allreduce_async(cp, dg, stream));
			CU(cudaStreamSynchronize(stream));
			SP(spardl_plan_sync(cp));
			x = slowest(vec, v, bench_now() - t0);
			if (it >= 0)
				ta[it] = x;
			/* The staging floor and a device copy of the same bytes. */
			t0 = bench_now();
			CU(cudaMemcpyAsync(hpin, dg, n * sizeof(float), cudaMemcpyDeviceToHost, stream));
			CU(cudaMemcpyAsync(dg, hpin, n * sizeof(float), cudaMemcpyHostToDevice, stream));
			CU(cudaStreamSynchronize(stream));
			x = bench_now() - t0;
			if (it >= 0)
				tf[it] = x;
			t0 = bench_now();
			CU(cudaMemcpyAsync(dcopy, dg, n * sizeof(float), cudaMemcpyDeviceToDevice, stream));
			CU(cudaStreamSynchronize(stream));
			x = bench_now() - t0;
			if (it >= 0)
				tc[it] = x;
		}
		{
			double mh = bench_median(th, iters) * 1e3, ms = bench_median(ts, iters) * 1e3;
			double ma = bench_median(ta, iters) * 1e3, mf = bench_median(tf, iters) * 1e3;
			double mc = bench_median(tc, iters) * 1e3;

			struct spardl_plan_stats st;
			double per;

			if (rank == 0)
				printf("%-8s %10.3f %10.3f %10.3f %10.3f %10.3f %8.2fx %8.2fx %s\n", tok, mh, ms, ma, mf, mc,
				       ms / mh, ms / mf, check);
			/* Where a CUDA plan's call goes on rank 0, over all its calls:
			 * the host schedule's phases, and the rest (copies, stream). */
			SP(spardl_plan_stats(cp, &st));
			per = st.calls ? (double)st.calls : 1;
			if (rank == 0)
				printf("%-8s split of a CUDA call on rank 0, ms: accumulate %.3f select %.3f reduce %.3f "
				       "post %.3f wait %.3f output %.3f (host schedule %.3f of %.3f per sync call)\n",
				       tok, st.accumulate / per * 1e3, st.select / per * 1e3, st.reduce / per * 1e3,
				       st.post / per * 1e3, st.wait / per * 1e3, st.output / per * 1e3, st.total / per * 1e3,
				       ms);
		}
		spardl_plan_destroy(hp);
		spardl_plan_destroy(cp);
		if (strcmp(check, "bit-identical"))
			return 1;
	}
	spardl_plan_destroy(vec);
	spardl_comm_destroy(comm);
	cudaFreeHost(hpin);
	cudaFree(dpool);
	cudaFree(dg);
	cudaFree(dcopy);
	cudaStreamDestroy(stream);
	return 0;
}
