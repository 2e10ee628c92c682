/* SPDX-License-Identifier: MIT */
/*
 * spardl-cuda-select-bench: the GPU selection (acc = g + acc fused with the
 * first pass, then exact top-k per block) against a device-to-device copy of
 * the same n floats, in one run on one GPU. The first call's result is
 * compared bit for bit with the CPU path (spardl_topk_block). acc is
 * restored from the same starting residual before every call, outside the
 * timing. Times are medians of CUDA event intervals; the wall time of the
 * call (the calling thread waits once inside it) is printed too.
 *
 *   spardl-cuda-select-bench -n 67108864 -d 0.01 [-b BLOCKS] [-i ITERS]
 *                            [--input FILE]
 *
 * --input reads acc then g, 2n float32 values (the torch comparison,
 * benchmarks/cuda/select_vs_torch.py, hands its data over this way);
 * without it both are N(0,1) from a fixed seed. The last line is
 * machine-readable: "result n=... select_ms=... copy_ms=... identical=1".
 * Exit 77 without a usable CUDA device.
 */
#define _GNU_SOURCE
#include <cuda_runtime_api.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <spardl/spardl.h>

#include "bench-util.h"
#include "cuda_select.h"
#include "fp.h"
#include "topk.h"

#define CU(call)                                                                                     \
	do {                                                                                         \
		cudaError_t e_ = (call);                                                            \
		if (e_ != cudaSuccess) {                                                            \
			fprintf(stderr, "spardl-cuda-select-bench: %s: %s\n", #call,                \
				cudaGetErrorString(e_));                                             \
			exit(1);                                                                    \
		}                                                                                   \
	} while (0)

static void usage(void)
{
	fprintf(stderr, "usage: spardl-cuda-select-bench [-n COUNT] [-d DENSITY] [-b BLOCKS] [-i ITERS] "
			"[-w WARMUP] [--input FILE]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {{"input", required_argument, NULL, 'f'}, {NULL, 0, NULL, 0}};
	size_t n = (size_t)1 << 26, B = 1, C, m, nb;
	double density = 0.01, *t_sel, *t_wall, *t_copy;
	int iters = 20, warm = 3, c, ndev = 0, identical = 1;
	const char *input = NULL;
	float *acc0, *g, *ref, *val, *rval, *d_acc0, *d_acc, *d_g, *d_val, *d_copy;
	uint32_t *idx, *ridx, *count, *d_idx, *d_count;
	uint64_t seed = 12345;
	struct spardl_cuda_select *s;
	struct spardl_topk_ws ws;
	cudaEvent_t e0, e1;
	float ms;

	while ((c = getopt_long(argc, argv, "n:d:b:i:w:", opts, NULL)) != -1) {
		switch (c) {
		case 'n': n = strtoull(optarg, NULL, 0); break;
		case 'd': density = strtod(optarg, NULL); break;
		case 'b': B = strtoull(optarg, NULL, 0); break;
		case 'i': iters = atoi(optarg); break;
		case 'w': warm = atoi(optarg); break;
		case 'f': input = optarg; break;
		default: usage();
		}
	}
	if (!n || !B || B > n || !(density > 0 && density <= 1) || iters < 1 || warm < 0)
		usage();
	if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev < 1) {
		printf("spardl-cuda-select-bench: no usable CUDA device\n");
		return 77;
	}
	C = (n + B - 1) / B;
	nb = (n + C - 1) / C;
	m = (size_t)(density * (double)C + 0.999999);
	m = m ? m : 1;
	acc0 = malloc(n * sizeof(float));
	g = malloc(n * sizeof(float));
	ref = malloc(n * sizeof(float));
	val = malloc(nb * m * sizeof(float));
	idx = malloc(nb * m * sizeof(uint32_t));
	rval = malloc(m * sizeof(float));
	ridx = malloc(m * sizeof(uint32_t));
	count = malloc(nb * sizeof(uint32_t));
	t_sel = malloc((size_t)iters * sizeof(double));
	t_wall = malloc((size_t)iters * sizeof(double));
	t_copy = malloc((size_t)iters * sizeof(double));
	if (!acc0 || !g || !ref || !val || !idx || !rval || !ridx || !count || !t_sel || !t_wall || !t_copy ||
	    spardl_topk_ws_init(&ws, m, 0)) {
		fprintf(stderr, "spardl-cuda-select-bench: out of memory\n");
		return 1;
	}
	if (input) {
		FILE *f = fopen(input, "rb");

		if (!f || fread(acc0, sizeof(float), n, f) != n || fread(g, sizeof(float), n, f) != n) {
			fprintf(stderr, "spardl-cuda-select-bench: cannot read 2 x %zu floats from %s\n", n, input);
			return 1;
		}
		fclose(f);
	} else {
		bench_gen_normal(acc0, n, &seed);
		bench_gen_normal(g, n, &seed);
	}
	CU(cudaMalloc((void **)&d_acc0, n * sizeof(float)));
	CU(cudaMalloc((void **)&d_acc, n * sizeof(float)));
	CU(cudaMalloc((void **)&d_copy, n * sizeof(float)));
	CU(cudaMalloc((void **)&d_g, n * sizeof(float)));
	CU(cudaMalloc((void **)&d_val, nb * m * sizeof(float)));
	CU(cudaMalloc((void **)&d_idx, nb * m * sizeof(uint32_t)));
	CU(cudaMalloc((void **)&d_count, nb * sizeof(uint32_t)));
	CU(cudaMemcpy(d_acc0, acc0, n * sizeof(float), cudaMemcpyHostToDevice));
	CU(cudaMemcpy(d_g, g, n * sizeof(float), cudaMemcpyHostToDevice));
	CU(cudaEventCreate(&e0));
	CU(cudaEventCreate(&e1));
	if (spardl_cuda_select_create(&s, C, nb)) {
		fprintf(stderr, "spardl-cuda-select-bench: %s\n", spardl_last_error());
		return 1;
	}

	for (int it = -warm; it < iters; it++) {
		double w0, w1;

		CU(cudaMemcpy(d_acc, d_acc0, n * sizeof(float), cudaMemcpyDeviceToDevice));
		CU(cudaDeviceSynchronize());
		w0 = bench_now();
		CU(cudaEventRecord(e0, NULL));
		if (spardl_cuda_select_run(s, d_acc, d_g, n, C, m, d_idx, d_val, d_count, NULL)) {
			fprintf(stderr, "spardl-cuda-select-bench: %s\n", spardl_last_error());
			return 1;
		}
		CU(cudaEventRecord(e1, NULL));
		CU(cudaEventSynchronize(e1));
		w1 = bench_now();
		CU(cudaEventElapsedTime(&ms, e0, e1));
		if (it >= 0) {
			t_sel[it] = ms;
			t_wall[it] = (w1 - w0) * 1e3;
		}
		/* The same bytes copied device to device, alternating with the calls. */
		CU(cudaEventRecord(e0, NULL));
		CU(cudaMemcpyAsync(d_copy, d_g, n * sizeof(float), cudaMemcpyDeviceToDevice, NULL));
		CU(cudaEventRecord(e1, NULL));
		CU(cudaEventSynchronize(e1));
		CU(cudaEventElapsedTime(&ms, e0, e1));
		if (it >= 0)
			t_copy[it] = ms;
		if (it != -warm)
			continue;
		/* The first call against the CPU path, bit for bit. */
		CU(cudaMemcpy(count, d_count, nb * sizeof(uint32_t), cudaMemcpyDeviceToHost));
		CU(cudaMemcpy(idx, d_idx, nb * m * sizeof(uint32_t), cudaMemcpyDeviceToHost));
		CU(cudaMemcpy(val, d_val, nb * m * sizeof(float), cudaMemcpyDeviceToHost));
		for (size_t i = 0; i < n; i++)
			ref[i] = spardl_add(g[i], acc0[i]);
		for (size_t b = 0; b < nb; b++) {
			size_t len = b * C + C < n ? C : n - b * C;
			size_t rc = spardl_topk_block(ref + b * C, len, m, ridx, rval, &ws);

			if (rc != count[b] || memcmp(ridx, idx + b * m, rc * sizeof(uint32_t)) ||
			    memcmp(rval, val + b * m, rc * sizeof(float)))
				identical = 0;
		}
		/* The acc left behind. */
		{
			float *left = malloc(n * sizeof(float));

			if (!left) {
				fprintf(stderr, "spardl-cuda-select-bench: out of memory\n");
				return 1;
			}
			CU(cudaMemcpy(left, d_acc, n * sizeof(float), cudaMemcpyDeviceToHost));
			if (memcmp(left, ref, n * sizeof(float)))
				identical = 0;
			free(left);
		}
	}
	/* The split, from further calls with events at the phase edges. */
	double split[5][32], msp[5];
	int np = iters < 32 ? iters : 32;

	if (spardl_cuda_select_profile(s, 1)) {
		fprintf(stderr, "spardl-cuda-select-bench: %s\n", spardl_last_error());
		return 1;
	}
	for (int it = 0; it < np; it++) {
		CU(cudaMemcpy(d_acc, d_acc0, n * sizeof(float), cudaMemcpyDeviceToDevice));
		CU(cudaDeviceSynchronize());
		if (spardl_cuda_select_run(s, d_acc, d_g, n, C, m, d_idx, d_val, d_count, NULL) ||
		    spardl_cuda_select_phases(s, msp)) {
			fprintf(stderr, "spardl-cuda-select-bench: %s\n", spardl_last_error());
			return 1;
		}
		for (int j = 0; j < 5; j++)
			split[j][it] = msp[j];
	}
	for (int j = 0; j < 5; j++)
		msp[j] = bench_median(split[j], np);
	{
		double sel = bench_median(t_sel, iters), wall = bench_median(t_wall, iters);
		double copy = bench_median(t_copy, iters);
		double gbs = 2.0 * (double)n * sizeof(float) / (copy * 1e-3) / 1e9;

		printf("GPU selection: n = %zu, %zu block(s) of %zu, m = %zu per block (density %g), N(0,1) %s\n", n,
		       nb, C, m, density, input ? "from the input file" : "from a fixed seed");
		printf("  acc = g + acc, then exact top-k   %9.3f ms (median of %d; wall %.3f ms)\n", sel, iters, wall);
		printf("  D2D copy of the same %zu bytes  %9.3f ms (%.0f GB/s read + write)\n", n * sizeof(float),
		       copy, gbs);
		printf("  split (medians of %d calls with events, ms): sampling and first pass %.3f, bucket search "
		       "and wait %.3f, list %.3f, finer levels %.3f, ties, selection and output %.3f\n",
		       np, msp[0], msp[1], msp[2], msp[3], msp[4]);
		printf("  copy / selection                  %9.3f (the fraction of copy bandwidth)\n", copy / sel);
		printf("  workspace                         %9.1f MiB of device memory\n",
		       (double)spardl_cuda_select_bytes(s) / 1048576.0);
		{
			unsigned long long fast, full;

			spardl_cuda_select_paths(s, &fast, &full);
			printf("  blocks selected by the fast path  %llu, by the full path %llu (all calls)\n", fast,
			       full);
		}
		printf("  first call bit-identical to the CPU path: %s\n", identical ? "yes" : "NO");
		printf("result n=%zu blocks=%zu m=%zu select_ms=%.4f wall_ms=%.4f copy_ms=%.4f identical=%d\n", n, nb, m,
		       sel, wall, copy, identical);
	}
	spardl_cuda_select_destroy(s);
	return identical ? 0 : 1;
}
