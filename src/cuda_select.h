/* SPDX-License-Identifier: MIT */
/* Exact top-k selection on the GPU (SPEC section 3), with the accumulate
 * fused into its first pass: the device half of a CUDA plan's selection.
 * Built when nvcc is found (src/cuda_select.cu); not exported. */
#ifndef SPARDL_CUDA_SELECT_H
#define SPARDL_CUDA_SELECT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct spardl_cuda_select;

/* Device workspace for blocks of up to max_block entries (at most INT_MAX),
 * at most max_blocks of them per call, on the current device: 8 bytes per
 * entry of max_block, 8 bytes per entry of an eighth of max_block for each
 * of the max_blocks (the candidates) and one more, plus CUB's scratch.
 * 0 or negative errno with the reason recorded (spardl_last_error). */
int spardl_cuda_select_create(struct spardl_cuda_select **out, size_t max_block, size_t max_blocks);
void spardl_cuda_select_destroy(struct spardl_cuda_select *s);
/* Device bytes the workspace holds. */
size_t spardl_cuda_select_bytes(const struct spardl_cuda_select *s);

/*
 * On stream (a cudaStream_t; NULL: the legacy default stream), all pointers
 * device memory:
 *   1. when g is not NULL, acc[i] = g[i] + acc[i] for every i < n (NaNs as
 *      spardl_add);
 *   2. for each block b = [b*C, min((b+1)*C, n)), topk(acc[block], m) by
 *      SPEC section 3 (zeros never chosen, NaN above Inf above finite, ties
 *      to the smaller index): its block-local indices in ascending order
 *      into idx[b*m ..], their values into val[b*m ..], the count (<= m)
 *      into count[b], and those entries of acc set to 0.
 * The same selection, bit for bit, as spardl_topk_block() on each block.
 * The calling thread waits once on the stream, for the bucket sizes after
 * the first pass; the rest is enqueued. Blocks of at least 65536 entries
 * with m <= len/16 gather candidates during the first pass (the fast
 * path) and read acc once; the others, and any block whose candidates do
 * not provably hold the selection, read it a second time (the full path).
 * acc and g must not overlap; a workspace serves one call at a time.
 * 0, or negative errno with the reason recorded.
 */
int spardl_cuda_select_run(struct spardl_cuda_select *s, float *acc, const float *g, size_t n, size_t C, size_t m,
			   uint32_t *idx, float *val, uint32_t *count, void *stream);

/* Blocks selected so far by the fast path (candidates gathered in the
 * first pass) and by the full path (a second read of acc). */
void spardl_cuda_select_paths(const struct spardl_cuda_select *s, unsigned long long *fast,
			      unsigned long long *full);

/* Benchmarks: with on, calls record events at their phase edges (blocks
 * past the eighth are not split). */
int spardl_cuda_select_profile(struct spardl_cuda_select *s, int on);
/* The last profiled call's split, in ms: the sampling and the first pass
 * (acc = g + acc, histograms, candidates), the bucket search with the calling thread's wait for the
 * sizes, the list (stable select of the bucket and above), the two finer
 * levels, and the ties, the selection and its output. */
int spardl_cuda_select_phases(struct spardl_cuda_select *s, double ms[5]);

#ifdef __cplusplus
}
#endif

#endif
