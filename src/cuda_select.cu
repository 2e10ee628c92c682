/* SPDX-License-Identifier: MIT */
/*
 * Exact top-k on the GPU (SPEC section 3): a radix select on the CPU path's
 * 32-bit key (spardl_key, src/topk.h).
 *
 *   pass 1  acc_hist: acc = g + acc (NaNs as spardl_add) and a histogram of every block's keys by
 *           their top 11 bits (2048 buckets), in one read of g and acc;
 *   find    the bucket holding the m-th largest key and how many to take
 *           from it; the host reads these (one wait on the stream) to size
 *           what follows;
 *   pass 2  the list: CUB's stable select of the positions whose bucket is
 *           at or above it (about m plus one bucket's entries on real data);
 *   then, on the list only: two more 10-bit levels find the exact key T and
 *   how many of its ties to take; the ties (in index order) give the last
 *   one taken; a last stable select keeps key > T, and key == T up to that
 *   position; out go the indices, the values, and zeros into acc.
 *
 * n-sized traffic: g read once, acc read twice and written once. Every
 * later step is proportional to the list.
 */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>
#include <cub/block/block_scan.cuh>
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

/* One entry of pass 1: the sum stored (when g), its key counted. */
__device__ __forceinline__ void pass1_one(float &v, float gv, bool add, uint32_t dnan, uint32_t *h)
{
	uint32_t k;

	if (add)
		v = dadd(gv, v, dnan);
	k = dkey(v);
	if (k)
		atomicAdd(&h[k >> 20], 1u);
}

/* Pass 1. Grid (x, blocks); block y covers [y*C, min((y+1)*C, n)). With
 * vec, acc and g are 16-byte aligned and C a multiple of 4: four entries
 * per load. */
__global__ void acc_hist(float *__restrict__ acc, const float *__restrict__ g, size_t n, size_t C,
			 uint32_t *__restrict__ hist, uint32_t dnan, int vec)
{
	__shared__ uint32_t h[NB1];
	size_t lo = (size_t)blockIdx.y * C, hi = lo + C < n ? lo + C : n, from = lo;
	size_t tid = (size_t)blockIdx.x * blockDim.x + threadIdx.x, stride = (size_t)gridDim.x * blockDim.x;
	bool add = g != nullptr;

	for (int t = threadIdx.x; t < NB1; t += blockDim.x)
		h[t] = 0;
	__syncthreads();
	if (vec) {
		float4 *a4 = (float4 *)acc;
		const float4 *g4 = (const float4 *)g;
		size_t q_end = (lo + ((hi - lo) & ~(size_t)3)) / 4;

		for (size_t q = lo / 4 + tid; q < q_end; q += stride) {
			float4 v = a4[q], w = add ? g4[q] : make_float4(0.f, 0.f, 0.f, 0.f);

			pass1_one(v.x, w.x, add, dnan, h);
			pass1_one(v.y, w.y, add, dnan, h);
			pass1_one(v.z, w.z, add, dnan, h);
			pass1_one(v.w, w.w, add, dnan, h);
			if (add)
				a4[q] = v;
		}
		from = q_end * 4;
	}
	for (size_t i = from + tid; i < hi; i += stride) {
		float v = acc[i];

		pass1_one(v, add ? g[i] : 0.f, add, dnan, h);
		if (add)
			acc[i] = v;
	}
	__syncthreads();
	for (int t = threadIdx.x; t < NB1; t += blockDim.x)
		if (h[t])
			atomicAdd(&hist[(size_t)blockIdx.y * NB1 + t], h[t]);
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

/* Levels 2 and 3 over the list: keys with the prefix, by their next 10 bits. */
__global__ void hist_list(const float *__restrict__ a, const uint32_t *__restrict__ list, const sel_state *s,
			  uint32_t *__restrict__ hist, int level)
{
	__shared__ uint32_t h[NB2];
	uint32_t n = s->nlist, prefix = s->prefix;

	for (int t = threadIdx.x; t < NB2; t += blockDim.x)
		h[t] = 0;
	__syncthreads();
	for (uint32_t j = blockIdx.x * blockDim.x + threadIdx.x; j < n; j += gridDim.x * blockDim.x) {
		uint32_t k = dkey(a[list[j]]);

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

/* Out: block-local indices, values, zeros into acc, the count. */
__global__ void emit(float *__restrict__ a, const uint32_t *__restrict__ sel, const uint32_t *nsel_dev,
		     uint32_t nsel_host, uint32_t m, uint32_t *__restrict__ idx, float *__restrict__ val,
		     uint32_t *count)
{
	uint32_t n = nsel_dev ? *nsel_dev : nsel_host;

	n = n < m ? n : m; /* never past the caller's m slots */

	for (uint32_t j = blockIdx.x * blockDim.x + threadIdx.x; j < n; j += gridDim.x * blockDim.x) {
		uint32_t i = sel[j];

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

} // namespace spardl_gpu

using namespace spardl_gpu;

#define PROF_BLOCKS 8

struct spardl_cuda_select {
	size_t max_block, max_blocks;
	int sms;
	uint32_t *list, *buf; /* max_block each: the list; the ties, then the selection */
	uint32_t *hist1;      /* max_blocks * NB1 */
	uint32_t *hist2;      /* NB2 */
	sel_state *st;        /* max_blocks */
	sel_state *st_host;   /* page-locked copy */
	void *cub_tmp;
	size_t cub_bytes;
	size_t bytes;
	uint32_t dnan; /* this host's NaN from Inf - Inf */
	/* spardl_cuda_select_profile(): events at the phase edges of the
	 * last call: start, pass 1, the bucket sizes read, then per block
	 * (at most PROF_BLOCKS) the list, the levels, the selection out. */
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
	cudaFree(s->list);
	cudaFree(s->buf);
	cudaFree(s->hist1);
	cudaFree(s->hist2);
	cudaFree(s->st);
	cudaFreeHost(s->st_host);
	cudaFree(s->cub_tmp);
	for (size_t i = 0; i < sizeof(s->ev) / sizeof(s->ev[0]); i++)
		if (s->ev[i])
			cudaEventDestroy(s->ev[i]);
	free(s);
}

extern "C" size_t spardl_cuda_select_bytes(const struct spardl_cuda_select *s)
{
	return s ? s->bytes : 0;
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

static int select_create(struct spardl_cuda_select *s)
{
	size_t b1 = 0, b2 = 0, b3 = 0, mb = s->max_block;
	thrust::counting_iterator<uint32_t> it(0);
	volatile float inf = __builtin_inff();
	float nan = inf - inf;
	int dev, r;

	memcpy(&s->dnan, &nan, sizeof(s->dnan));
	CK(cudaGetDevice(&dev), "cudaGetDevice");
	CK(cudaDeviceGetAttribute(&s->sms, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute");
	if ((r = dev_alloc(s, (void **)&s->list, mb * sizeof(uint32_t), "list")) ||
	    (r = dev_alloc(s, (void **)&s->buf, mb * sizeof(uint32_t), "selection")) ||
	    (r = dev_alloc(s, (void **)&s->hist1, s->max_blocks * NB1 * sizeof(uint32_t), "histograms")) ||
	    (r = dev_alloc(s, (void **)&s->hist2, NB2 * sizeof(uint32_t), "histogram")) ||
	    (r = dev_alloc(s, (void **)&s->st, s->max_blocks * sizeof(sel_state), "state")))
		return r;
	CK(cudaMallocHost((void **)&s->st_host, s->max_blocks * sizeof(sel_state)), "cudaMallocHost");
	CK(cub::DeviceSelect::If(nullptr, b1, it, s->list, &s->st->nlist, (int)mb, in_list{nullptr, 1}),
	   "cub::DeviceSelect::If (size)");
	CK(cub::DeviceSelect::If(nullptr, b2, s->list, s->buf, &s->st->nties, (int)mb, is_tie{nullptr, s->st}),
	   "cub::DeviceSelect::If (size)");
	CK(cub::DeviceSelect::If(nullptr, b3, s->list, s->buf, &s->st->nsel, (int)mb, is_taken{nullptr, s->st}),
	   "cub::DeviceSelect::If (size)");
	s->cub_bytes = b1 > b2 ? b1 : b2;
	s->cub_bytes = s->cub_bytes > b3 ? s->cub_bytes : b3;
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

extern "C" int spardl_cuda_select_run(struct spardl_cuda_select *s, float *acc, const float *g, size_t n, size_t C,
				      size_t m, uint32_t *idx, float *val, uint32_t *count, void *stream)
{
	cudaStream_t st = (cudaStream_t)stream;
	size_t nblocks = C ? (n + C - 1) / C : 0;
	thrust::counting_iterator<uint32_t> it(0);
	unsigned gx;
	int vec;

	if (!n)
		return 0;
	if (!C || C > s->max_block || nblocks > s->max_blocks || m > UINT32_MAX)
		return spardl_error(-EINVAL,
				    "GPU selection: %zu entries in blocks of %zu with budget %zu exceed the workspace "
				    "(blocks of up to %zu, %zu blocks)",
				    n, C, m, s->max_block, s->max_blocks);
	for (size_t b = 0; b < nblocks; b++)
		s->st_host[b] = sel_state{(uint32_t)m, 0, 0, 0, 0, 0, 0, 0, 0};
	s->prof_blocks = s->profile ? (nblocks < PROF_BLOCKS ? nblocks : PROF_BLOCKS) : 0;
	if (s->profile)
		CK(cudaEventRecord(s->ev[0], st), "cudaEventRecord");
	CK(cudaMemcpyAsync(s->st, s->st_host, nblocks * sizeof(sel_state), cudaMemcpyHostToDevice, st),
	   "cudaMemcpyAsync (state)");
	CK(cudaMemsetAsync(s->hist1, 0, nblocks * NB1 * sizeof(uint32_t), st), "cudaMemsetAsync");
	vec = C % 4 == 0 && ((uintptr_t)acc | (uintptr_t)g) % 16 == 0;
	gx = (unsigned)((size_t)s->sms * 4 / nblocks);
	if (gx < 1)
		gx = 1;
	if ((size_t)gx * PASS_THREADS > C)
		gx = (unsigned)((C + PASS_THREADS - 1) / PASS_THREADS);
	acc_hist<<<dim3(gx, (unsigned)nblocks), PASS_THREADS, 0, st>>>(acc, g, n, C, s->hist1, s->dnan, vec);
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
		size_t len = b * C + C < n ? C : n - b * C;
		size_t bytes = s->cub_bytes;
		unsigned lg = (unsigned)((h->nlist + PASS_THREADS - 1) / PASS_THREADS);

		lg = lg < 1 ? 1 : lg > (unsigned)s->sms * 2 ? (unsigned)s->sms * 2 : lg;
		cudaEvent_t *ev = b < s->prof_blocks ? &s->ev[3 + 3 * b] : nullptr;

		if (!h->nlist) {
			CK(cudaMemsetAsync(count + b, 0, sizeof(uint32_t), st), "cudaMemsetAsync");
			for (int j = 0; ev && j < 3; j++)
				CK(cudaEventRecord(ev[j], st), "cudaEventRecord");
			continue;
		}
		CK(cub::DeviceSelect::If(s->cub_tmp, bytes, it, s->list, &d->nlist, (int)len,
					 in_list{a, h->all ? 1u : (h->prefix << 20 ? h->prefix << 20 : 1u)}, st),
		   "cub::DeviceSelect::If (list)");
		if (ev)
			CK(cudaEventRecord(ev[0], st), "cudaEventRecord");
		if (h->all) {
			emit<<<lg, PASS_THREADS, 0, st>>>(a, s->list, nullptr, h->nlist, (uint32_t)m, idx + b * m, val + b * m,
							   count + b);
			CK(cudaGetLastError(), "launch of the output");
			for (int j = 1; ev && j < 3; j++)
				CK(cudaEventRecord(ev[j], st), "cudaEventRecord");
			continue;
		}
		for (int level = 2; level <= 3; level++) {
			CK(cudaMemsetAsync(s->hist2, 0, NB2 * sizeof(uint32_t), st), "cudaMemsetAsync");
			hist_list<<<lg, PASS_THREADS, 0, st>>>(a, s->list, d, s->hist2, level);
			CK(cudaGetLastError(), "launch of a histogram");
			find_bucket<NB2><<<1, FIND_THREADS, 0, st>>>(s->hist2, d, level);
			CK(cudaGetLastError(), "launch of the bucket search");
		}
		if (ev)
			CK(cudaEventRecord(ev[1], st), "cudaEventRecord");
		bytes = s->cub_bytes;
		CK(cub::DeviceSelect::If(s->cub_tmp, bytes, s->list, s->buf, &d->nties, (int)h->nlist, is_tie{a, d}, st),
		   "cub::DeviceSelect::If (ties)");
		take_tie_cut<<<1, 1, 0, st>>>(s->buf, d);
		CK(cudaGetLastError(), "launch of the tie cut");
		bytes = s->cub_bytes;
		CK(cub::DeviceSelect::If(s->cub_tmp, bytes, s->list, s->buf, &d->nsel, (int)h->nlist, is_taken{a, d},
					 st),
		   "cub::DeviceSelect::If (selection)");
		emit<<<lg, PASS_THREADS, 0, st>>>(a, s->buf, &d->nsel, 0, (uint32_t)m, idx + b * m, val + b * m, count + b);
		CK(cudaGetLastError(), "launch of the output");
		if (ev)
			CK(cudaEventRecord(ev[2], st), "cudaEventRecord");
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
