/* SPDX-License-Identifier: MIT */
/*
 * Exact top-k on the GPU (SPEC section 3): a radix select on the CPU path's
 * 32-bit key (spardl_key, src/topk.h).
 *
 *   sample  per block, 16384 strided entries of g + acc: a lower bound lo
 *           on the m-th largest key, with a wide margin (large blocks with
 *           m <= len/16 only; elsewhere lo = 0, nothing gathered);
 *   pass 1  acc = g + acc (NaNs as spardl_add), a histogram of every
 *           block's keys by their top 11 bits (2048 buckets), and the
 *           candidates (key >= lo), in index order, into slots of each of
 *           the pass's segments (contiguous ranges of a block, one warp
 *           each);
 *   find    the bucket holding the m-th largest key and how many to take
 *           from it; the host reads these (one wait on the stream);
 *   list    fast path, when the candidates fit and lo is at or below that
 *           bucket: the segments' candidates concatenated in segment order
 *           (a scan of their counts), so in index order, with their keys.
 *           Otherwise the full path: CUB's stable select over acc of the
 *           positions whose bucket is at or above it;
 *   then, on the list only: two more 10-bit levels find the exact key T and
 *   how many of its ties to take; the ties (in index order) give the last
 *   one taken; a last stable select keeps key > T, and key == T up to that
 *   one; out go the indices, the values, and zeros into acc.
 *
 * n-sized traffic on the fast path: g and acc read once, acc written once.
 */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <initializer_list>

#include <cuda_runtime.h>
#include <cub/block/block_scan.cuh>
#include <cub/device/device_scan.cuh>
#include <cub/device/device_select.cuh>
#include <thrust/iterator/counting_iterator.h>

extern "C" {
#include "log.h"
}
#include "cuda_select.h"

namespace spardl_gpu {

constexpr int NB1 = 2048; /* top 11 bits of a key (the sign bit is always clear) */
constexpr int NB2 = 1024; /* bits 19..10, then bits 9..0 */
constexpr int FIND_THREADS = 1024;
constexpr int PASS_THREADS = 512;
constexpr int PIECE = 128;              /* entries of a warp's step in pass 1 */
constexpr uint32_t SAMPLE = 16384;      /* sampled entries per block */
constexpr int SAMPLE_CTAS = 16;
constexpr size_t FAST_MIN_LEN = 65536;  /* smaller blocks: the full path */

/* One block's selection, in device memory. */
struct sel_state {
	uint32_t m;      /* budget */
	uint32_t all;    /* 1: m >= the non-zero entries, take them all */
	uint32_t prefix; /* key bits found so far (level 1: key >> 20; 2: key >> 10) */
	uint32_t need;   /* entries still to take among keys with that prefix */
	uint32_t nlist;  /* entries whose key >= (level-1 bucket << 20), non-zero */
	uint32_t thr;    /* the exact key T of the m-th entry */
	uint32_t tie_cut; /* the last position with key T that is taken */
	uint32_t nties;
	uint32_t nsel;
	uint32_t lo;     /* pass 1 gathers keys >= lo; 0: no gathering */
	uint32_t ncand;  /* candidates gathered */
	uint32_t ovf;    /* 1: a part had more than its slots (the full path) */
};

__device__ __forceinline__ uint32_t dkey(float v)
{
	uint32_t u = __float_as_uint(v) & 0x7fffffffu;

	return u > 0x7f800000u ? 0x7f800001u : u;
}

/* g + a as the CPU path adds (spardl_add, src/fp.h): a NaN operand's
 * payload, quieted, g's first; a NaN made from two non-NaNs (Inf - Inf)
 * has the host's default bits, dnan. */
__device__ __forceinline__ float dadd(float g, float a, uint32_t dnan)
{
	uint32_t ug = __float_as_uint(g), ua = __float_as_uint(a);
	float s = g + a;

	if ((ug & 0x7fffffffu) > 0x7f800000u)
		return __uint_as_float(ug | 0x00400000u);
	if ((ua & 0x7fffffffu) > 0x7f800000u)
		return __uint_as_float(ua | 0x00400000u);
	return isnan(s) ? __uint_as_float(dnan) : s;
}

/* The sampled lower bound, step 1: a histogram of SAMPLE strided keys
 * of g + acc per block (grid: SAMPLE_CTAS x blocks). */
__global__ void sample_hist(const float *__restrict__ acc, const float *__restrict__ g, size_t n, size_t C,
			    uint32_t *__restrict__ shist, const sel_state *st, uint32_t dnan)
{
	__shared__ uint32_t h[NB1];
	size_t lo = (size_t)blockIdx.y * C, len = lo + C < n ? C : n - lo, stride = len / SAMPLE;

	if (!st[blockIdx.y].lo) /* this block gathers nothing */
		return;
	for (int t = threadIdx.x; t < NB1; t += blockDim.x)
		h[t] = 0;
	__syncthreads();
	for (uint32_t j = blockIdx.x * blockDim.x + threadIdx.x; j < SAMPLE; j += gridDim.x * blockDim.x) {
		size_t i = lo + (size_t)j * stride;
		uint32_t k = dkey(g ? dadd(g[i], acc[i], dnan) : acc[i]);

		if (k)
			atomicAdd(&h[k >> 20], 1u);
	}
	__syncthreads();
	for (int t = threadIdx.x; t < NB1; t += blockDim.x)
		if (h[t])
			atomicAdd(&shist[(size_t)blockIdx.y * NB1 + t], h[t]);
}

/* Step 2, one thread block per block: lo = the floor of the highest bucket
 * whose sampled count at or above it reaches 1.25 t + 4 sqrt(t) + 8, t the
 * count the m-th key would have in the sample (1: every non-zero key when
 * the sample has fewer). */
__global__ void sample_bound(const uint32_t *__restrict__ shist, sel_state *st, size_t n, size_t C)
{
	constexpr int IPT = NB1 / FIND_THREADS;
	typedef cub::BlockScan<uint32_t, FIND_THREADS> scan_t;
	__shared__ typename scan_t::TempStorage tmp;
	sel_state *s = st + blockIdx.x;
	const uint32_t *h = shist + (size_t)blockIdx.x * NB1;
	size_t lo = (size_t)blockIdx.x * C, len = lo + C < n ? C : n - lo;
	double t = (double)s->m * SAMPLE / (double)len;
	uint32_t target = (uint32_t)ceil(1.25 * t + 4.0 * sqrt(t) + 8.0), v[IPT], c[IPT], total;

	if (!s->lo)
		return;
	for (int j = 0; j < IPT; j++)
		v[j] = h[NB1 - 1 - (threadIdx.x * IPT + j)];
	scan_t(tmp).InclusiveSum(v, c, total);
	if (total < target) {
		if (threadIdx.x == 0)
			s->lo = 1;
		return;
	}
	for (int j = 0; j < IPT; j++) {
		uint32_t bucket = NB1 - 1 - (threadIdx.x * IPT + j);

		if (c[j] >= target && c[j] - v[j] < target)
			s->lo = bucket ? bucket << 20 : 1u;
	}
}

/* Pass 1. Grid (parts, blocks); block y covers [y*C, min((y+1)*C, n)),
 * cut into segments of whole pieces of 128 entries, one warp a segment,
 * lane l holding entries 4l..4l+3 of a piece (one float4 load when vec: acc
 * and g 16-byte aligned, C a multiple of 4). With lo = st[y].lo non-zero,
 * a segment's entries with key >= lo go, in index order, to its own
 * cap / segments slots of cidx/ckey (warp shuffles, no barrier or atomic in
 * the loop); its count goes to ccnt[y * segs_max + segment], the block's
 * total to st[y].ncand, and a segment that had more than its slots sets
 * st[y].ovf. */
__global__ void pass1(float *__restrict__ acc, const float *__restrict__ g, size_t n, size_t C,
		      uint32_t *__restrict__ hist, uint32_t dnan, int vec, sel_state *st, uint32_t *__restrict__ cidx,
		      uint32_t *__restrict__ ckey, size_t cap, uint32_t *__restrict__ ccnt, size_t segs_max)
{
	__shared__ uint32_t h[NB1];
	const unsigned lane = threadIdx.x % 32, wpb = blockDim.x / 32;
	size_t lo = (size_t)blockIdx.y * C, hi = lo + C < n ? lo + C : n;
	size_t seg = (size_t)blockIdx.x * wpb + threadIdx.x / 32, nseg = (size_t)gridDim.x * wpb;
	size_t np = (hi - lo + PIECE - 1) / PIECE, per = (np + nseg - 1) / nseg;
	size_t q0 = seg * per, q1 = q0 + per < np ? q0 + per : np;
	size_t slots = cap / nseg, base = (size_t)blockIdx.y * cap + seg * slots;
	uint32_t glo = st[blockIdx.y].lo, run = 0;
	bool add = g != nullptr;

	for (int t = threadIdx.x; t < NB1; t += blockDim.x)
		h[t] = 0;
	__syncthreads();
	for (size_t q = q0; q < q1; q++) {
		size_t p0 = lo + q * PIECE + (size_t)lane * 4;
		float v[4];
		uint32_t k[4], cnt = 0;

		if (vec && p0 + 4 <= hi) {
			float4 a4 = *(const float4 *)(acc + p0);

			v[0] = a4.x, v[1] = a4.y, v[2] = a4.z, v[3] = a4.w;
			if (add) {
				float4 g4 = *(const float4 *)(g + p0);

				v[0] = dadd(g4.x, v[0], dnan);
				v[1] = dadd(g4.y, v[1], dnan);
				v[2] = dadd(g4.z, v[2], dnan);
				v[3] = dadd(g4.w, v[3], dnan);
				*(float4 *)(acc + p0) = make_float4(v[0], v[1], v[2], v[3]);
			}
			for (int e = 0; e < 4; e++)
				k[e] = dkey(v[e]);
		} else {
			for (int e = 0; e < 4; e++) {
				k[e] = 0;
				if (p0 + e >= hi)
					continue;
				v[e] = acc[p0 + e];
				if (add) {
					v[e] = dadd(g[p0 + e], v[e], dnan);
					acc[p0 + e] = v[e];
				}
				k[e] = dkey(v[e]);
			}
		}
		for (int e = 0; e < 4; e++) {
			if (k[e])
				atomicAdd(&h[k[e] >> 20], 1u);
			cnt += glo && k[e] >= glo; /* k[e] is 0 past hi */
		}
		if (!glo) /* the same for the whole warp */
			continue;
		{
			/* Lanes in index order: an inclusive scan of the counts. */
			uint32_t x = cnt, off, total;

			for (unsigned d = 1; d < 32; d <<= 1) {
				uint32_t y = __shfl_up_sync(0xffffffffu, x, d);

				if (lane >= d)
					x += y;
			}
			off = x - cnt;
			total = __shfl_sync(0xffffffffu, x, 31);
			if ((size_t)run + total <= slots)
				for (int e = 0; e < 4; e++)
					if (k[e] && k[e] >= glo) {
						cidx[base + run + off] = (uint32_t)(p0 + e - lo);
						ckey[base + run + off] = k[e];
						off++;
					}
			run += total; /* the same in every lane */
		}
	}
	if (glo && lane == 0) {
		ccnt[(size_t)blockIdx.y * segs_max + seg] = run;
		if (run)
			atomicAdd(&st[blockIdx.y].ncand, run);
		if (run > slots)
			st[blockIdx.y].ovf = 1;
	}
	__syncthreads();
	for (int t = threadIdx.x; t < NB1; t += blockDim.x)
		if (h[t])
			atomicAdd(&hist[(size_t)blockIdx.y * NB1 + t], h[t]);
}

/* The fast path's list: segment j's candidates to pos[j], one warp a
 * segment. */
__global__ void concat(const uint32_t *__restrict__ cidx, const uint32_t *__restrict__ ckey, size_t slots,
		       size_t nseg, const uint32_t *__restrict__ ccnt, const uint32_t *__restrict__ pos,
		       uint32_t *__restrict__ list, uint32_t *__restrict__ keys)
{
	size_t seg = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) / 32;
	uint32_t lane = threadIdx.x % 32;

	if (seg >= nseg)
		return;
	for (uint32_t j = lane; j < ccnt[seg]; j += 32) {
		list[pos[seg] + j] = cidx[seg * slots + j];
		keys[pos[seg] + j] = ckey[seg * slots + j];
	}
}

/* The bucket of a histogram holding the need-th largest key: one thread
 * block per selection (level 1: one per block of the gradient). */
template <int NB>
__global__ void find_bucket(const uint32_t *__restrict__ hist, sel_state *st, int level)
{
	constexpr int IPT = NB / FIND_THREADS;
	typedef cub::BlockScan<uint32_t, FIND_THREADS> scan_t;
	__shared__ typename scan_t::TempStorage tmp;
	sel_state *s = st + blockIdx.x;
	const uint32_t *h = hist + (size_t)blockIdx.x * NB;
	uint32_t need = level == 1 ? s->m : s->need;
	uint32_t v[IPT], c[IPT], total;

	/* Largest keys first: c is the count of keys in this bucket or above. */
	for (int j = 0; j < IPT; j++)
		v[j] = h[NB - 1 - (threadIdx.x * IPT + j)];
	scan_t(tmp).InclusiveSum(v, c, total);
	if (level == 1 && total <= need) {
		if (threadIdx.x == 0) {
			s->all = 1;
			s->nlist = total;
			s->need = 0;
			s->prefix = 0;
			s->thr = 0;
		}
		return;
	}
	for (int j = 0; j < IPT; j++) {
		uint32_t bucket = NB - 1 - (threadIdx.x * IPT + j), above = c[j] - v[j];

		if (c[j] < need || above >= need)
			continue;
		if (level == 1) {
			s->all = 0;
			s->prefix = bucket;
			s->nlist = c[j];
		} else if (level == 2) {
			s->prefix = (s->prefix << 10) | bucket;
		} else {
			s->thr = (s->prefix << 10) | bucket;
		}
		s->need = need - above;
	}
}

/* Where the list's keys come from: acc at the listed positions (the full
 * path), or stored with the list (the fast path). */
struct key_at_pos {
	const float *a;
	const uint32_t *list;
	__device__ uint32_t operator()(uint32_t j) const { return dkey(a[list[j]]); }
};

struct key_stored {
	const uint32_t *keys;
	__device__ uint32_t operator()(uint32_t j) const { return keys[j]; }
};

/* Levels 2 and 3 over the n list entries: keys with the prefix, by their
 * next 10 bits. */
template <class KeyAt>
__global__ void hist_level(KeyAt key_at, uint32_t n, const sel_state *s, uint32_t *__restrict__ hist, int level)
{
	__shared__ uint32_t h[NB2];
	uint32_t prefix = s->prefix;

	for (int t = threadIdx.x; t < NB2; t += blockDim.x)
		h[t] = 0;
	__syncthreads();
	for (uint32_t j = blockIdx.x * blockDim.x + threadIdx.x; j < n; j += gridDim.x * blockDim.x) {
		uint32_t k = key_at(j);

		if (level == 2 ? (k >> 20) == prefix : (k >> 10) == prefix)
			atomicAdd(&h[level == 2 ? (k >> 10) & (NB2 - 1) : k & (NB2 - 1)], 1u);
	}
	__syncthreads();
	for (int t = threadIdx.x; t < NB2; t += blockDim.x)
		if (h[t])
			atomicAdd(&hist[t], h[t]);
}

__global__ void take_tie_cut(const uint32_t *ties, sel_state *s)
{
	s->tie_cut = ties[s->need - 1];
}

/* Out: block-local indices, values, zeros into acc, the count. Entry j
 * is position map[sel[j]] (sel NULL: j; map NULL: the position itself). */
__global__ void emit(float *__restrict__ a, const uint32_t *__restrict__ sel, const uint32_t *__restrict__ map,
		     const uint32_t *nsel_dev, uint32_t nsel_host, uint32_t m, uint32_t *__restrict__ idx,
		     float *__restrict__ val, uint32_t *count)
{
	uint32_t n = nsel_dev ? *nsel_dev : nsel_host;

	n = n < m ? n : m; /* never past the caller's m slots */
	for (uint32_t j = blockIdx.x * blockDim.x + threadIdx.x; j < n; j += gridDim.x * blockDim.x) {
		uint32_t p = sel ? sel[j] : j, i = map ? map[p] : p;

		idx[j] = i;
		val[j] = a[i];
		a[i] = 0.0f;
	}
	if (blockIdx.x == 0 && threadIdx.x == 0)
		*count = n;
}

/* Pass 2: non-zero keys in the bucket or above. */
struct in_list {
	const float *a;
	uint32_t lo; /* >= 1 */
	__device__ bool operator()(uint32_t i) const { return dkey(a[i]) >= lo; }
};

struct is_tie {
	const float *a;
	const sel_state *s;
	__device__ bool operator()(uint32_t i) const { return dkey(a[i]) == s->thr; }
};

struct is_taken {
	const float *a;
	const sel_state *s;
	__device__ bool operator()(uint32_t i) const
	{
		uint32_t k = dkey(a[i]);

		return k > s->thr || (k == s->thr && i <= s->tie_cut);
	}
};

/* The fast path's ties and selection, over list positions j. */
struct is_tie_stored {
	const uint32_t *keys;
	const sel_state *s;
	__device__ bool operator()(uint32_t j) const { return keys[j] == s->thr; }
};

struct is_taken_stored {
	const uint32_t *keys;
	const sel_state *s;
	__device__ bool operator()(uint32_t j) const
	{
		uint32_t k = keys[j];

		return k > s->thr || (k == s->thr && j <= s->tie_cut);
	}
};

} // namespace spardl_gpu

using namespace spardl_gpu;

#define PROF_BLOCKS 8

struct spardl_cuda_select {
	size_t max_block, max_blocks;
	int sms;
	/* The full path: max_block each: the list; the ties, then the
	 * selection (the fast path's too). */
	uint32_t *list, *buf;
	uint32_t *hist1;      /* max_blocks * NB1 */
	uint32_t *shist;      /* max_blocks * NB1: the samples */
	uint32_t *hist2;      /* NB2 */
	sel_state *st;        /* max_blocks */
	sel_state *st_host;   /* page-locked copy */
	/* The fast path: cap candidates per block (index, key), split among
	 * the first pass's segments (one per warp); the segments' counts
	 * (segs_max per block), their scan, and the list with its keys (cap
	 * each). */
	size_t cap, segs_max;
	uint32_t *cidx, *ckey, *ccnt, *cpos, *flist, *fkey;
	void *cub_tmp;
	size_t cub_bytes;
	size_t bytes;
	uint32_t dnan; /* this host's NaN from Inf - Inf */
	unsigned long long fast_blocks, full_blocks;
	/* spardl_cuda_select_profile(): events at the phase edges of the
	 * last call: start, pass 1 (with the sampling), the bucket sizes
	 * read, then per block (at most PROF_BLOCKS) the list, the levels,
	 * the selection out. */
	int profile;
	size_t prof_blocks;
	cudaEvent_t ev[3 + 3 * PROF_BLOCKS];
};

static int cuda_fail(cudaError_t e, const char *what)
{
	return spardl_error(-EIO, "GPU selection: %s failed: %s (%s)", what, cudaGetErrorName(e),
			    cudaGetErrorString(e));
}

#define CK(call, what)                              \
	do {                                        \
		cudaError_t e_ = (call);            \
		if (e_ != cudaSuccess)              \
			return cuda_fail(e_, what); \
	} while (0)

extern "C" void spardl_cuda_select_destroy(struct spardl_cuda_select *s)
{
	if (!s)
		return;
	/* Frees of a failed setup's NULLs are no-ops; errors here have no
	 * one to go to. */
	for (void *p : {(void *)s->list, (void *)s->buf, (void *)s->hist1, (void *)s->shist, (void *)s->hist2,
			(void *)s->st, (void *)s->cidx, (void *)s->ckey, (void *)s->ccnt, (void *)s->cpos,
			 (void *)s->flist, (void *)s->fkey, s->cub_tmp})
		cudaFree(p);
	cudaFreeHost(s->st_host);
	for (size_t i = 0; i < sizeof(s->ev) / sizeof(s->ev[0]); i++)
		if (s->ev[i])
			cudaEventDestroy(s->ev[i]);
	free(s);
}

extern "C" size_t spardl_cuda_select_bytes(const struct spardl_cuda_select *s)
{
	return s ? s->bytes : 0;
}

extern "C" void spardl_cuda_select_paths(const struct spardl_cuda_select *s, unsigned long long *fast,
					 unsigned long long *full)
{
	*fast = s->fast_blocks;
	*full = s->full_blocks;
}

static int dev_alloc(struct spardl_cuda_select *s, void **p, size_t len, const char *what)
{
	cudaError_t e = cudaMalloc(p, len ? len : 1);

	if (e != cudaSuccess)
		return spardl_error(e == cudaErrorMemoryAllocation ? -ENOMEM : -EIO,
				    "GPU selection: cudaMalloc of %zu bytes (%s) failed: %s (%s)", len, what,
				    cudaGetErrorName(e), cudaGetErrorString(e));
	s->bytes += len;
	return 0;
}

static size_t max3(size_t a, size_t b, size_t c)
{
	size_t x = a > b ? a : b;

	return x > c ? x : c;
}

static int select_create(struct spardl_cuda_select *s)
{
	size_t b[7] = {0}, mb = s->max_block, nb = s->max_blocks, u = sizeof(uint32_t);
	thrust::counting_iterator<uint32_t> it(0);
	volatile float inf = __builtin_inff();
	float nan = inf - inf;
	int dev, r;

	memcpy(&s->dnan, &nan, sizeof(s->dnan));
	/* Candidates: an eighth of a block (the fast path takes m <= len/16). */
	s->cap = mb / 8 + 65536 < mb ? mb / 8 + 65536 : mb;
	CK(cudaGetDevice(&dev), "cudaGetDevice");
	CK(cudaDeviceGetAttribute(&s->sms, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute");
	s->segs_max = (size_t)s->sms * 4 * (PASS_THREADS / 32);
	if ((r = dev_alloc(s, (void **)&s->list, mb * u, "list")) ||
	    (r = dev_alloc(s, (void **)&s->buf, mb * u, "selection")) ||
	    (r = dev_alloc(s, (void **)&s->hist1, nb * NB1 * u, "histograms")) ||
	    (r = dev_alloc(s, (void **)&s->shist, nb * NB1 * u, "sample histograms")) ||
	    (r = dev_alloc(s, (void **)&s->hist2, NB2 * u, "histogram")) ||
	    (r = dev_alloc(s, (void **)&s->st, nb * sizeof(sel_state), "state")) ||
	    (r = dev_alloc(s, (void **)&s->cidx, nb * s->cap * u, "candidates")) ||
	    (r = dev_alloc(s, (void **)&s->ckey, nb * s->cap * u, "candidate keys")) ||
	    (r = dev_alloc(s, (void **)&s->ccnt, nb * s->segs_max * u, "segment counts")) ||
	    (r = dev_alloc(s, (void **)&s->cpos, s->segs_max * u, "segment positions")) ||
	    (r = dev_alloc(s, (void **)&s->flist, s->cap * u, "fast list")) ||
	    (r = dev_alloc(s, (void **)&s->fkey, s->cap * u, "fast list keys")))
		return r;
	CK(cudaMallocHost((void **)&s->st_host, nb * sizeof(sel_state)), "cudaMallocHost");
	CK(cub::DeviceSelect::If(nullptr, b[0], it, s->list, &s->st->nlist, (int)mb, in_list{nullptr, 1}),
	   "cub::DeviceSelect::If (size)");
	CK(cub::DeviceSelect::If(nullptr, b[1], s->list, s->buf, &s->st->nties, (int)mb, is_tie{nullptr, s->st}),
	   "cub::DeviceSelect::If (size)");
	CK(cub::DeviceSelect::If(nullptr, b[2], s->list, s->buf, &s->st->nsel, (int)mb, is_taken{nullptr, s->st}),
	   "cub::DeviceSelect::If (size)");
	CK(cub::DeviceSelect::If(nullptr, b[3], it, s->buf, &s->st->nties, (int)s->cap,
				 is_tie_stored{nullptr, s->st}),
	   "cub::DeviceSelect::If (size)");
	CK(cub::DeviceSelect::If(nullptr, b[4], it, s->buf, &s->st->nsel, (int)s->cap,
				 is_taken_stored{nullptr, s->st}),
	   "cub::DeviceSelect::If (size)");
	CK(cub::DeviceScan::ExclusiveSum(nullptr, b[5], s->ccnt, s->cpos, (int)s->segs_max),
	   "cub::DeviceScan::ExclusiveSum (size)");
	s->cub_bytes = max3(max3(b[0], b[1], b[2]), max3(b[3], b[4], b[5]), 0);
	return dev_alloc(s, &s->cub_tmp, s->cub_bytes, "CUB scratch");
}

extern "C" int spardl_cuda_select_create(struct spardl_cuda_select **out, size_t max_block, size_t max_blocks)
{
	struct spardl_cuda_select *s;
	int r;

	*out = NULL;
	if (max_block < 1 || max_block > INT_MAX || max_blocks < 1 || max_blocks > 65535)
		return spardl_error(-EINVAL,
				    "GPU selection: blocks of %zu entries, %zu blocks: a block holds 1 to %d entries, "
				    "and there are 1 to 65535 blocks",
				    max_block, max_blocks, INT_MAX);
	s = (struct spardl_cuda_select *)calloc(1, sizeof(*s));
	if (!s)
		return spardl_error(-ENOMEM, "GPU selection: out of host memory");
	s->max_block = max_block;
	s->max_blocks = max_blocks;
	if ((r = select_create(s))) {
		spardl_cuda_select_destroy(s);
		return r;
	}
	*out = s;
	return 0;
}

static unsigned grid_for(const struct spardl_cuda_select *s, size_t items)
{
	size_t g = (items + PASS_THREADS - 1) / PASS_THREADS, most = (size_t)s->sms * 2;

	return (unsigned)(g < 1 ? 1 : g > most ? most : g);
}

/* After the list of block b: the finer levels, the ties, the selection, the
 * output. keys: the list's keys; pos_in: the selection's items are list
 * positions (the fast path) rather than acc positions. */
template <class KeyAt, class Tie, class Taken, class In>
static int finish_block(struct spardl_cuda_select *s, cudaStream_t st, float *a, KeyAt key_at, In in,
			const uint32_t *map, uint32_t nlist, sel_state *d, Tie tie, Taken taken, size_t m,
			uint32_t *idx, float *val, uint32_t *count, cudaEvent_t *ev)
{
	unsigned lg = grid_for(s, nlist);
	size_t bytes;

	for (int level = 2; level <= 3; level++) {
		CK(cudaMemsetAsync(s->hist2, 0, NB2 * sizeof(uint32_t), st), "cudaMemsetAsync");
		hist_level<<<lg, PASS_THREADS, 0, st>>>(key_at, nlist, d, s->hist2, level);
		CK(cudaGetLastError(), "launch of a histogram");
		find_bucket<NB2><<<1, FIND_THREADS, 0, st>>>(s->hist2, d, level);
		CK(cudaGetLastError(), "launch of the bucket search");
	}
	if (ev)
		CK(cudaEventRecord(ev[1], st), "cudaEventRecord");
	bytes = s->cub_bytes;
	CK(cub::DeviceSelect::If(s->cub_tmp, bytes, in, s->buf, &d->nties, (int)nlist, tie, st),
	   "cub::DeviceSelect::If (ties)");
	take_tie_cut<<<1, 1, 0, st>>>(s->buf, d);
	CK(cudaGetLastError(), "launch of the tie cut");
	bytes = s->cub_bytes;
	CK(cub::DeviceSelect::If(s->cub_tmp, bytes, in, s->buf, &d->nsel, (int)nlist, taken, st),
	   "cub::DeviceSelect::If (selection)");
	emit<<<grid_for(s, m), PASS_THREADS, 0, st>>>(a, s->buf, map, &d->nsel, 0, (uint32_t)m, idx, val, count);
	CK(cudaGetLastError(), "launch of the output");
	if (ev)
		CK(cudaEventRecord(ev[2], st), "cudaEventRecord");
	return 0;
}

extern "C" int spardl_cuda_select_run(struct spardl_cuda_select *s, float *acc, const float *g, size_t n, size_t C,
				      size_t m, uint32_t *idx, float *val, uint32_t *count, void *stream)
{
	cudaStream_t st = (cudaStream_t)stream;
	size_t nblocks = C ? (n + C - 1) / C : 0;
	thrust::counting_iterator<uint32_t> it(0);
	unsigned gx;
	size_t nseg;
	int vec, r;

	if (!n)
		return 0;
	if (!C || C > s->max_block || nblocks > s->max_blocks || m > UINT32_MAX)
		return spardl_error(-EINVAL,
				    "GPU selection: %zu entries in blocks of %zu with budget %zu exceed the workspace "
				    "(blocks of up to %zu, %zu blocks)",
				    n, C, m, s->max_block, s->max_blocks);
	for (size_t b = 0; b < nblocks; b++) {
		size_t len = b * C + C < n ? C : n - b * C;

		s->st_host[b] = sel_state{(uint32_t)m, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
		/* lo = 1 asks for a sampled bound: large blocks, small m. */
		s->st_host[b].lo = m && len >= FAST_MIN_LEN && m <= len / 16 ? 1 : 0;
	}
	s->prof_blocks = s->profile ? (nblocks < PROF_BLOCKS ? nblocks : PROF_BLOCKS) : 0;
	if (s->profile)
		CK(cudaEventRecord(s->ev[0], st), "cudaEventRecord");
	CK(cudaMemcpyAsync(s->st, s->st_host, nblocks * sizeof(sel_state), cudaMemcpyHostToDevice, st),
	   "cudaMemcpyAsync (state)");
	CK(cudaMemsetAsync(s->hist1, 0, nblocks * NB1 * sizeof(uint32_t), st), "cudaMemsetAsync");
	CK(cudaMemsetAsync(s->shist, 0, nblocks * NB1 * sizeof(uint32_t), st), "cudaMemsetAsync");
	sample_hist<<<dim3(SAMPLE_CTAS, (unsigned)nblocks), PASS_THREADS, 0, st>>>(acc, g, n, C, s->shist, s->st,
										 s->dnan);
	CK(cudaGetLastError(), "launch of the sampling");
	sample_bound<<<(unsigned)nblocks, FIND_THREADS, 0, st>>>(s->shist, s->st, n, C);
	CK(cudaGetLastError(), "launch of the sampled bound");
	vec = C % 4 == 0 && ((uintptr_t)acc | (uintptr_t)g) % 16 == 0;
	gx = (unsigned)((size_t)s->sms * 4 / nblocks);
	if (gx < 1)
		gx = 1;
	if ((size_t)gx * PASS_THREADS * 4 > C)
		gx = (unsigned)((C + PASS_THREADS * 4 - 1) / (PASS_THREADS * 4));
	nseg = (size_t)gx * (PASS_THREADS / 32);
	pass1<<<dim3(gx, (unsigned)nblocks), PASS_THREADS, 0, st>>>(acc, g, n, C, s->hist1, s->dnan, vec, s->st, s->cidx,
								     s->ckey, s->cap, s->ccnt, s->segs_max);
	CK(cudaGetLastError(), "launch of the first pass");
	if (s->profile)
		CK(cudaEventRecord(s->ev[1], st), "cudaEventRecord");
	if (!m) {
		CK(cudaMemsetAsync(count, 0, nblocks * sizeof(uint32_t), st), "cudaMemsetAsync");
		return 0;
	}
	find_bucket<NB1><<<(unsigned)nblocks, FIND_THREADS, 0, st>>>(s->hist1, s->st, 1);
	CK(cudaGetLastError(), "launch of the bucket search");
	CK(cudaMemcpyAsync(s->st_host, s->st, nblocks * sizeof(sel_state), cudaMemcpyDeviceToHost, st),
	   "cudaMemcpyAsync (state)");
	CK(cudaStreamSynchronize(st), "cudaStreamSynchronize");
	if (s->profile)
		CK(cudaEventRecord(s->ev[2], st), "cudaEventRecord");

	for (size_t b = 0; b < nblocks; b++) {
		const sel_state *h = &s->st_host[b];
		sel_state *d = s->st + b;
		float *a = acc + b * C;
		size_t bytes = s->cub_bytes, len = b * C + C < n ? C : n - b * C;
		uint32_t floor = h->prefix << 20 ? h->prefix << 20 : 1u;
		cudaEvent_t *ev = b < s->prof_blocks ? &s->ev[3 + 3 * b] : nullptr;
		/* Every entry the selection may take was gathered. */
		bool fast = h->lo && !h->ovf && (h->all ? h->lo <= 1 : h->lo <= floor);

		if (!h->nlist) {
			CK(cudaMemsetAsync(count + b, 0, sizeof(uint32_t), st), "cudaMemsetAsync");
			for (int j = 0; ev && j < 3; j++)
				CK(cudaEventRecord(ev[j], st), "cudaEventRecord");
			continue;
		}
		if (fast) {
			s->fast_blocks++;
			CK(cub::DeviceScan::ExclusiveSum(s->cub_tmp, bytes, s->ccnt + b * s->segs_max, s->cpos,
							 (int)nseg, st),
			   "cub::DeviceScan::ExclusiveSum (segments)");
			concat<<<gx, PASS_THREADS, 0, st>>>(s->cidx + b * s->cap, s->ckey + b * s->cap, s->cap / nseg,
							     nseg, s->ccnt + b * s->segs_max, s->cpos, s->flist,
							     s->fkey);
			CK(cudaGetLastError(), "launch of the concatenation");
			if (ev)
				CK(cudaEventRecord(ev[0], st), "cudaEventRecord");
			if (h->all) {
				emit<<<grid_for(s, h->ncand), PASS_THREADS, 0, st>>>(a, nullptr, s->flist, nullptr,
										    h->ncand, (uint32_t)m,
										    idx + b * m, val + b * m, count + b);
				CK(cudaGetLastError(), "launch of the output");
				for (int j = 1; ev && j < 3; j++)
					CK(cudaEventRecord(ev[j], st), "cudaEventRecord");
				continue;
			}
			r = finish_block(s, st, a, key_stored{s->fkey}, it, s->flist, h->ncand, d,
					 is_tie_stored{s->fkey, d}, is_taken_stored{s->fkey, d}, m, idx + b * m,
					 val + b * m, count + b, ev);
			if (r)
				return r;
			continue;
		}
		s->full_blocks++;
		CK(cub::DeviceSelect::If(s->cub_tmp, bytes, it, s->list, &d->nlist, (int)len,
					 in_list{a, h->all ? 1u : floor}, st),
		   "cub::DeviceSelect::If (list)");
		if (ev)
			CK(cudaEventRecord(ev[0], st), "cudaEventRecord");
		if (h->all) {
			emit<<<grid_for(s, h->nlist), PASS_THREADS, 0, st>>>(a, s->list, nullptr, nullptr, h->nlist,
									    (uint32_t)m, idx + b * m, val + b * m,
									    count + b);
			CK(cudaGetLastError(), "launch of the output");
			for (int j = 1; ev && j < 3; j++)
				CK(cudaEventRecord(ev[j], st), "cudaEventRecord");
			continue;
		}
		r = finish_block(s, st, a, key_at_pos{a, s->list}, s->list, nullptr, h->nlist, d, is_tie{a, d},
				 is_taken{a, d}, m, idx + b * m, val + b * m, count + b, ev);
		if (r)
			return r;
	}
	return 0;
}

extern "C" int spardl_cuda_select_profile(struct spardl_cuda_select *s, int on)
{
	for (size_t i = 0; on && i < sizeof(s->ev) / sizeof(s->ev[0]); i++)
		if (!s->ev[i])
			CK(cudaEventCreate(&s->ev[i]), "cudaEventCreate");
	s->profile = on;
	return 0;
}

extern "C" int spardl_cuda_select_phases(struct spardl_cuda_select *s, double ms[5])
{
	float t;

	for (int i = 0; i < 5; i++)
		ms[i] = 0;
	if (!s->profile || !s->prof_blocks)
		return spardl_error(-EINVAL, "GPU selection: no profiled call (spardl_cuda_select_profile first)");
	CK(cudaEventSynchronize(s->ev[3 + 3 * (s->prof_blocks - 1) + 2]), "cudaEventSynchronize");
	CK(cudaEventElapsedTime(&t, s->ev[0], s->ev[1]), "cudaEventElapsedTime");
	ms[0] = t;
	CK(cudaEventElapsedTime(&t, s->ev[1], s->ev[2]), "cudaEventElapsedTime");
	ms[1] = t;
	for (size_t b = 0; b < s->prof_blocks; b++) {
		cudaEvent_t *ev = &s->ev[3 + 3 * b], prev = b ? s->ev[3 + 3 * b - 1] : s->ev[2];

		for (int j = 0; j < 3; j++) {
			CK(cudaEventElapsedTime(&t, j ? ev[j - 1] : prev, ev[j]), "cudaEventElapsedTime");
			ms[2 + j] += t;
		}
	}
	return 0;
}
