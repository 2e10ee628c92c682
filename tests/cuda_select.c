/* SPDX-License-Identifier: MIT */
/*
 * The GPU selection (src/cuda_select.cu) against the CPU path, bit for bit:
 * acc = g + acc as spardl_add, then spardl_topk_block() on every block; the
 * counts, indices, values and the acc left behind must be identical. Data:
 * N(0,1) floats, tie-heavy small integers, one value everywhere, zeros,
 * non-finite and subnormal mixes, and sparse blocks (m above the non-zeros),
 * over block counts 1 to 7 with a short last block and budgets from 1 to
 * above the block. Large blocks with small budgets take the fast path
 * (candidates gathered in the first pass), the others and tie-heavy data
 * the full path; a last check requires both to have run. Exit 77 without a
 * usable CUDA device.
 */
#include <cuda_runtime_api.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <spardl/spardl.h>

#include "cuda_select.h"
#include "fp.h"
#include "log.h"
#include "topk.h"

static int failures, checks;

#define CU(call)                                                                                     \
	do {                                                                                         \
		cudaError_t e_ = (call);                                                            \
		if (e_ != cudaSuccess) {                                                            \
			fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call,               \
				cudaGetErrorString(e_));                                             \
			exit(1);                                                                    \
		}                                                                                   \
	} while (0)

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng >> 16);
}

static float normal(void)
{
	double u = (rnd() + 1.0) / 4294967297.0, v = rnd() / 4294967296.0;

	return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

static float from_bits(uint32_t u)
{
	float f;

	memcpy(&f, &u, sizeof(f));
	return f;
}

static uint32_t bits(float f)
{
	uint32_t u;

	memcpy(&u, &f, sizeof(u));
	return u;
}

enum kind { K_NORMAL, K_INT, K_CONST, K_ZERO, K_SPECIAL, K_SPARSE, K_KINDS };
static const char *kind_name[] = {"normal", "int", "const", "zero", "special", "sparse"};

static float value(enum kind k)
{
	static const uint32_t special[] = {
		0x7fc00000u, 0xffc00000u, 0x7fa00001u, /* NaNs, one signalling */
		0x7f800000u, 0xff800000u,               /* +-Inf */
		0x80000000u, 0x00000000u,               /* -0, +0 */
		0x00000001u, 0x80000003u, 0x007fffffu,  /* subnormals */
		0x3f800000u, 0xbf800000u, 0x7f7fffffu,  /* 1, -1, FLT_MAX */
	};

	switch (k) {
	case K_NORMAL:
		return normal();
	case K_INT:
		return (float)((int)(rnd() % 17) - 8);
	case K_CONST:
		return 1.5f;
	case K_ZERO:
		return rnd() & 1 ? 0.0f : -0.0f;
	case K_SPECIAL:
		return rnd() % 3 ? from_bits(special[rnd() % (sizeof(special) / sizeof(special[0]))])
				 : (float)((int)(rnd() % 5) - 2);
	default:
		return rnd() % 97 == 0 ? normal() : 0.0f;
	}
}

/* One case; returns 1 when the GPU and the CPU agree. */
static int one(struct spardl_cuda_select *s, size_t n, size_t B, size_t m, enum kind kind, int with_g)
{
	size_t C = (n + B - 1) / B, nb = (n + C - 1) / C;
	float *acc = malloc(n * sizeof(float)), *g = malloc(n * sizeof(float)), *ref = malloc(n * sizeof(float));
	float *out = malloc(n * sizeof(float)), *val = malloc(nb * m * sizeof(float) + 1);
	float *rval = malloc(m * sizeof(float) + 1);
	uint32_t *idx = malloc(nb * m * sizeof(uint32_t) + 1), *ridx = malloc(m * sizeof(uint32_t) + 1);
	uint32_t *count = malloc(nb * sizeof(uint32_t));
	float *d_acc, *d_g = NULL, *d_val;
	uint32_t *d_idx, *d_count;
	struct spardl_topk_ws ws;
	int ok = 1, r;

	if (!acc || !g || !ref || !out || !val || !rval || !idx || !ridx || !count ||
	    spardl_topk_ws_init(&ws, m, 0)) {
		fprintf(stderr, "out of memory\n");
		exit(1);
	}
	for (size_t i = 0; i < n; i++) {
		acc[i] = value(kind);
		g[i] = value(kind);
		ref[i] = with_g ? spardl_add(g[i], acc[i]) : acc[i];
	}
	CU(cudaMalloc((void **)&d_acc, n * sizeof(float)));
	CU(cudaMalloc((void **)&d_val, nb * m * sizeof(float) + 4));
	CU(cudaMalloc((void **)&d_idx, nb * m * sizeof(uint32_t) + 4));
	CU(cudaMalloc((void **)&d_count, nb * sizeof(uint32_t)));
	CU(cudaMemcpy(d_acc, acc, n * sizeof(float), cudaMemcpyHostToDevice));
	if (with_g) {
		CU(cudaMalloc((void **)&d_g, n * sizeof(float)));
		CU(cudaMemcpy(d_g, g, n * sizeof(float), cudaMemcpyHostToDevice));
	}
	r = spardl_cuda_select_run(s, d_acc, d_g, n, C, m, d_idx, d_val, d_count, NULL);
	if (r) {
		printf("  run failed: %d\n", r);
		ok = 0;
		goto out;
	}
	CU(cudaDeviceSynchronize());
	CU(cudaMemcpy(out, d_acc, n * sizeof(float), cudaMemcpyDeviceToHost));
	CU(cudaMemcpy(count, d_count, nb * sizeof(uint32_t), cudaMemcpyDeviceToHost));
	CU(cudaMemcpy(idx, d_idx, nb * m * sizeof(uint32_t), cudaMemcpyDeviceToHost));
	CU(cudaMemcpy(val, d_val, nb * m * sizeof(float), cudaMemcpyDeviceToHost));
	for (size_t b = 0; b < nb && ok; b++) {
		size_t len = b * C + C < n ? C : n - b * C;
		size_t rc = spardl_topk_block(ref + b * C, len, m, ridx, rval, &ws);

		if (count[b] != rc) {
			printf("  block %zu: count %u, the CPU path %zu\n", b, count[b], rc);
			ok = 0;
			break;
		}
		for (size_t j = 0; j < rc; j++)
			if (idx[b * m + j] != ridx[j] || bits(val[b * m + j]) != bits(rval[j])) {
				printf("  block %zu entry %zu: (%u, 0x%08x), the CPU path (%u, 0x%08x)\n", b, j,
				       idx[b * m + j], bits(val[b * m + j]), ridx[j], bits(rval[j]));
				ok = 0;
				break;
			}
	}
	for (size_t i = 0; i < n && ok; i++)
		if (bits(out[i]) != bits(ref[i])) {
			printf("  acc[%zu] left 0x%08x, the CPU path 0x%08x\n", i, bits(out[i]), bits(ref[i]));
			ok = 0;
		}
out:
	cudaFree(d_acc);
	cudaFree(d_g);
	cudaFree(d_val);
	cudaFree(d_idx);
	cudaFree(d_count);
	spardl_topk_ws_fini(&ws);
	free(acc), free(g), free(ref), free(out), free(val), free(rval), free(idx), free(ridx), free(count);
	return ok;
}

static void check(struct spardl_cuda_select *s, size_t n, size_t B, size_t m, enum kind kind, int with_g)
{
	unsigned long long fast0, full0, fast, full;
	int ok;

	spardl_cuda_select_paths(s, &fast0, &full0);
	ok = one(s, n, B, m, kind, with_g);
	spardl_cuda_select_paths(s, &fast, &full);
	checks++;
	failures += !ok;
	printf("%s %d - n %zu, %zu blocks, m %zu, %s data, %s (blocks: %llu fast, %llu full)\n", ok ? "ok" : "not ok",
	       checks, n, B, m, kind_name[kind], with_g ? "acc = g + acc" : "acc as is", fast - fast0, full - full0);
}

int main(void)
{
	static const size_t sizes[] = {1, 5, 1000, 4099, 100003, (1u << 20) + 17};
	static const size_t blocks[] = {1, 2, 3, 4, 7};
	struct spardl_cuda_select *s;
	int ndev = 0;

	if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev < 1) {
		printf("1..0 # SKIP no usable CUDA device (cudaGetDeviceCount: %d devices)\n", ndev);
		return 77;
	}
	if (spardl_cuda_select_create(&s, (1u << 24), 8)) {
		fprintf(stderr, "spardl_cuda_select_create failed\n");
		return 1;
	}
	for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++)
		for (size_t bi = 0; bi < sizeof(blocks) / sizeof(blocks[0]); bi++) {
			size_t n = sizes[si], B = blocks[bi], C = (n + B - 1) / B;
			size_t ms[] = {1, 3, (C + 99) / 100, C / 2 + 1, C, C + 5};

			if (B > n)
				continue;
			for (int k = 0; k < K_KINDS; k++)
				for (size_t mi = 0; mi < sizeof(ms) / sizeof(ms[0]); mi++) {
					/* The big size: the 1% budget and the extremes only. */
					if (n > 200000 && mi != 0 && mi != 2 && mi != 4)
						continue;
					check(s, n, B, ms[mi], (enum kind)k, (int)((si + mi + k) & 1));
				}
		}
	/* Large: one block of 2^24 normal floats at 1%, and four blocks. */
	check(s, 1u << 24, 1, (1u << 24) / 100, K_NORMAL, 1);
	check(s, 1u << 24, 4, (1u << 22) / 100, K_NORMAL, 1);
	check(s, 1u << 24, 2, (1u << 23) / 100, K_INT, 1);
	/* Both paths ran (the fast one gathers candidates in the first pass). */
	{
		unsigned long long fast, full;

		spardl_cuda_select_paths(s, &fast, &full);
		checks++;
		failures += !(fast >= 50 && full >= 50);
		printf("%s %d - both paths ran: %llu blocks fast, %llu full\n", fast >= 50 && full >= 50 ? "ok" : "not ok",
		       checks, fast, full);
	}
	/* Bad arguments are refused by name. */
	checks++;
	if (spardl_cuda_select_run(s, NULL, NULL, 1u << 25, 1u << 25, 1, NULL, NULL, NULL, NULL) != -EINVAL) {
		printf("not ok %d - a block above the workspace is refused\n", checks);
		failures++;
	} else {
		printf("ok %d - a block above the workspace is refused: %s\n", checks, spardl_last_error());
	}
	spardl_cuda_select_destroy(s);
	printf("1..%d\n", checks);
	printf("%d of %d checks failed\n", failures, checks);
	return failures ? 1 : 0;
}
