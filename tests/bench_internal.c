// SPDX-License-Identifier: MIT
/*
 * Internal micro-benchmarks (not installed): one thread's selection against
 * memcpy (topk), the scattered reads and stores of a call with the library's
 * prefetch against others (scatter), a two-list merge in one scalar merge,
 * in parts and with AVX-512 (merge), a selection's threshold from the
 * sampled key range against the full radix levels (threshold), the
 * accumulate pass at each vector level (pass), and the transport's write
 * bandwidth between two ranks (write-bw). They call the library's internals; spardl-bench measures the
 * public API only.
 *
 *   build/tests/spardl-bench-internal topk -n 33554432 -d 0.01 --iters 10
 *   build/tests/spardl-bench-internal scatter -n 8388608 -d 0.01 --iters 10
 *   build/tests/spardl-bench-internal merge -n 4194304 -d 0.01 --iters 20
 *   build/tests/spardl-bench-internal threshold -n 8388608 -d 0.01 --iters 20
 *   build/tests/spardl-bench-internal pass -n 16777216 -d 0.01 --iters 20
 *   build/tools/spardl-run -n 2 build/tests/spardl-bench-internal write-bw --iters 100
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <spardl/spardl.h>

#include "bench-util.h"

#include "core.h"
#include "lists.h"
#include "topk.h"

struct opts {
	size_t count;
	double density;
	int iters, warmup;
	uint64_t seed;
	size_t msg_size;
	int json;
};

static int rank, size;



static int mode_topk(const struct opts *o)
{
	size_t n = o->count, m = (size_t)ceil(o->density * (double)n), i;
	float *g = malloc(n * sizeof(float)), *r = malloc(n * sizeof(float)), *acc = malloc(n * sizeof(float));
	float *dst = malloc(n * sizeof(float)), *val = malloc((m ? m : 1) * sizeof(float));
	uint32_t *idx = malloc((m ? m : 1) * sizeof(uint32_t));
	double *tc = calloc((size_t)o->iters, sizeof(double)), *ts = calloc((size_t)o->iters, sizeof(double));
	struct spardl_topk_ws ws;
	uint64_t s = o->seed * 2654435761u + 7;
	size_t got = 0, ccap = spardl_topk_cand_cap(m), nc;
	uint32_t *cand = malloc(ccap * sizeof(uint32_t)), lo;
	float *cval = malloc(ccap * sizeof(float));
	int it, fallbacks = 0;

	if (!g || !r || !acc || !dst || !val || !idx || !tc || !ts || !cand || !cval || spardl_topk_ws_init(&ws, m, 0)) {
		fprintf(stderr, "spardl-bench: out of memory\n");
		return 1;
	}
	/* Gaussian gradients and a smaller residual; every buffer touched here. */
	bench_gen_normal(g, n, &s);
	for (i = 0; i < n; i++)
		r[i] = 0.1f * g[(i * 7919) % n];
	memset(acc, 0, n * sizeof(float));
	memset(dst, 0, n * sizeof(float));
	memset(cand, 0, ccap * sizeof(uint32_t));
	memset(cval, 0, ccap * sizeof(float));
	for (it = -o->warmup; it < o->iters; it++) {
		double t0 = bench_now(), t1;
		float *a = acc;
		const float *gg = g, *rr = r;

		memcpy(dst, g, n * sizeof(float));
		memcpy(a, rr, n * sizeof(float)); /* acc holds the residual, as in a plan */
		t1 = bench_now();
		/* What a plan's call does: acc += g while gathering candidates,
		 * then the exact selection from them (a scan when they fail). */
		lo = spardl_topk_bound(gg, a, NULL, n, m);
		nc = lo ? spardl_topk_acc_gather(a, gg, n, 1, lo, cand, cval, ccap) : SIZE_MAX;
		if (!lo)
			for (i = 0; i < n; i++)
				a[i] += gg[i];
		got = nc == SIZE_MAX ? SIZE_MAX :
				       spardl_topk_from_cands(m, lo, cand, cval, nc, NULL, NULL, NULL, 0, idx, val, &ws);
		if (got != SIZE_MAX)
			spardl_zero_at(acc, idx, got);
		if (got == SIZE_MAX) {
			got = spardl_topk_block(acc, n, m, idx, val, &ws);
			fallbacks++;
		}
		if (it >= 0) {
			tc[it] = t1 - t0;
			ts[it] = bench_now() - t1;
		}
	}
	{
		double mc = bench_median(tc, o->iters), ms = bench_median(ts, o->iters);
		double gbc = (double)n * 4 / mc / 1e9, gbs = (double)n * 4 / ms / 1e9;

		if (o->json)
			printf("{\"count\": %zu, \"k\": %zu, \"selected\": %zu, \"memcpy_gbps\": %.2f, \"topk_gbps\": %.2f, \"topk_ms\": %.3f, \"memcpy_ms\": %.3f, \"glibc_tunables\": \"%s\"}\n",
			       n, m, got, gbc, gbs, ms * 1e3, mc * 1e3, bench_tunables());
		else {
			printf("# spardl-bench topk: n=%zu, k=%zu (density %g), one thread, %d iterations, GLIBC_TUNABLES=%s\n",
			       n, m, o->density, o->iters, bench_tunables());
			printf("%-28s %10s %10s\n", "operation", "median_ms", "GB/s");
			printf("%-28s %10.3f %10.2f\n", "memcpy (same bytes)", mc * 1e3, gbc);
			printf("%-28s %10.3f %10.2f\n", "acc = g + residual; topk", ms * 1e3, gbs);
			printf("# top-k scans at %.0f%% of memcpy bandwidth; selected %zu; %d of %d selections fell back to a scan\n",
			       100 * gbs / gbc, got, fallbacks, o->iters + o->warmup);
		}
	}
	spardl_topk_ws_fini(&ws);
	free(cand);
	free(cval);
	free(g);
	free(r);
	free(acc);
	free(dst);
	free(val);
	free(idx);
	free(tc);
	free(ts);
	return 0;
}

/* ---------------------------------------------------------------- */
/* scatter: a call's scattered accesses, prefetched three ways        */
/* ---------------------------------------------------------------- */

/* The received list's sums (keep[j] = x[idx[j]] + val[j]) and the residual
 * update's stores (x[idx[j]] = val[j]) at d n sorted random positions of an
 * n-float block that a streaming pass has just pushed out of the caches, as
 * in a call: without prefetch, with the L1 prefetch the library used before
 * (prefetcht0, 32 entries ahead), and with spardl_prefetch (PREFETCH_AHEAD
 * entries ahead, into L2). */
enum { PF_NONE, PF_L1, PF_LIB, PF_WAYS };

static double scatter_pass(int way, int store, float *x, const uint32_t *idx, const float *val, float *keep,
			   size_t m)
{
	double t0 = bench_now();
	size_t j;

	for (j = 0; j < m; j++) {
		if (way == PF_L1 && j + 32 < m)
			__builtin_prefetch(&x[idx[j + 32]], 0, 3);
		else if (way == PF_LIB && j + PREFETCH_AHEAD < m)
			spardl_prefetch(&x[idx[j + PREFETCH_AHEAD]]);
		if (store)
			x[idx[j]] = val[j];
		else
			keep[j] = x[idx[j]] + val[j];
	}
	return bench_now() - t0;
}

static int mode_scatter(const struct opts *o)
{
	static const char *names[PF_WAYS] = { "no prefetch", "L1, 32 ahead (before)", "spardl_prefetch (L2)" };
	size_t n = o->count, m = 0, i, want = (size_t)ceil(o->density * (double)n);
	size_t nflush = n > ((size_t)1 << 24) ? n : (size_t)1 << 24;
	float *x = malloc(n * sizeof(float)), *fl = malloc(nflush * sizeof(float));
	float *val = malloc((want + 1) * sizeof(float)), *keep = malloc((want + 1) * sizeof(float));
	uint32_t *idx = malloc((want + 1) * sizeof(uint32_t));
	double *t = calloc((size_t)o->iters * PF_WAYS * 2, sizeof(double)), med[PF_WAYS][2];
	uint64_t s = o->seed * 2654435761u + 7;
	int it, way, st;
	float sink = 0.0f;

	if (!x || !fl || !val || !keep || !idx || !t || n > UINT32_MAX) {
		fprintf(stderr, "spardl-bench-internal: out of memory (or -n above 2^32)\n");
		return 1;
	}
	/* Sorted positions, each kept with probability d, as a list arrives. */
	for (i = 0; i < n && m < want; i++)
		if ((double)(bench_rng_next(&s) >> 11) * 0x1p-53 < o->density)
			idx[m++] = (uint32_t)i;
	if (!m) {
		fprintf(stderr, "spardl-bench-internal: no position drawn: raise -n or -d\n");
		return 2;
	}
	/* N(0,1) values, as a call's acc and lists hold. */
	bench_gen_normal(x, n, &s);
	bench_gen_normal(val, m, &s);
	memset(fl, 0, nflush * sizeof(float));
	/* The three ways take turns in every iteration, so the machine's
	 * drift falls on all of them. */
	for (it = -o->warmup; it < o->iters; it++)
		for (st = 0; st < 2; st++)
			for (way = 0; way < PF_WAYS; way++) {
				double d;

				/* x written (dirty, as acc after its
				 * pass), then pushed out by 64 MiB more. */
				for (i = 0; i < n; i += 16)
					x[i] += 0.0f;
				for (i = 0; i < nflush; i++)
					fl[i] += 1.0f;
				d = scatter_pass(way, st, x, idx, val, keep, m);
				sink += keep[m / 2];
				if (it >= 0)
					t[((size_t)way * 2 + (size_t)st) * (size_t)o->iters + (size_t)it] = d;
			}
	for (way = 0; way < PF_WAYS; way++)
		for (st = 0; st < 2; st++)
			med[way][st] = bench_median(t + ((size_t)way * 2 + (size_t)st) * (size_t)o->iters, o->iters);
	if (o->json) {
		printf("{\"count\": %zu, \"entries\": %zu, \"prefetch_ahead\": %d, \"glibc_tunables\": \"%s\"", n, m,
		       PREFETCH_AHEAD, bench_tunables());
		for (way = 0; way < PF_WAYS; way++)
			printf(", \"%s\": {\"read_ns\": %.2f, \"store_ns\": %.2f}",
			       way == PF_NONE ? "none" : way == PF_L1 ? "l1_32" : "spardl_prefetch", med[way][0] * 1e9 / (double)m,
			       med[way][1] * 1e9 / (double)m);
		printf("}\n");
	} else {
		printf("# spardl-bench-internal scatter: %zu sorted random positions of %zu floats (%zu MiB), after a "
		       "streaming pass; one thread, %d iterations, medians; GLIBC_TUNABLES=%s\n",
		       m, n, n * sizeof(float) >> 20, o->iters, bench_tunables());
		printf("%-26s %12s %12s %10s %10s\n", "prefetch", "read ns/pos", "store ns/pos", "read x", "store x");
		for (way = 0; way < PF_WAYS; way++)
			printf("%-26s %12.2f %12.2f %9.2fx %9.2fx\n", names[way], med[way][0] * 1e9 / (double)m,
			       med[way][1] * 1e9 / (double)m, med[PF_L1][0] / med[way][0], med[PF_L1][1] / med[way][1]);
		printf("# x: speed against the L1 prefetch; spardl_prefetch runs %d entries ahead (sink %g)\n",
		       PREFETCH_AHEAD, (double)sink);
	}
	free(x);
	free(fl);
	free(val);
	free(keep);
	free(idx);
	free(t);
	return 0;
}

/* ---------------------------------------------------------------- */
/* merge: two lists of one block, in parts and in one merge            */
/* ---------------------------------------------------------------- */

/* spardl_lists_merge of two lists of d n sorted random positions each, with
 * N(0,1) values (as TopkA's result merges them at P = 2), three ways, in
 * turns in every iteration: the scalar merge in one part (the same call
 * with a block size below the counts' sum, where the parts would not fit;
 * block 0, so the global indices are the same), the scalar merge in parts
 * side by side, and sixteen entries at a time with AVX-512 (where the CPU
 * has it). The results are compared. */
#define MERGE_WAYS 3
static int mode_merge(const struct opts *o)
{
	static const char *names[MERGE_WAYS] = { "scalar, one merge", "scalar, in parts", "AVX-512" };
	size_t n = o->count, want = (size_t)ceil(o->density * (double)n), i, cnt[2] = { 0, 0 };
	size_t got[MERGE_WAYS] = { 0, 0, 0 };
	uint32_t *idx[2] = { malloc((want + 1) * sizeof(uint32_t)), malloc((want + 1) * sizeof(uint32_t)) };
	float *val[2] = { malloc((want + 1) * sizeof(float)), malloc((want + 1) * sizeof(float)) };
	uint64_t *oidx[MERGE_WAYS];
	float *oval[MERGE_WAYS];
	double *t = calloc(MERGE_WAYS * (size_t)o->iters, sizeof(double)), med[MERGE_WAYS];
	struct spardl_merge_heap heap[2];
	struct spardl_list l[2];
	uint64_t s = o->seed * 2654435761u + 11;
	int it, way, l2, saved = spardl_lists_isa, ways = MERGE_WAYS, bad = 0;

#if defined(__x86_64__)
	if (!__builtin_cpu_supports("avx512f"))
		ways = 2;
#else
	ways = 2;
#endif
	for (way = 0; way < MERGE_WAYS; way++) {
		oidx[way] = malloc(2 * (want + 1) * sizeof(uint64_t));
		oval[way] = malloc(2 * (want + 1) * sizeof(float));
		bad |= !oidx[way] || !oval[way];
	}
	if (bad || !idx[0] || !idx[1] || !val[0] || !val[1] || !t || n > UINT32_MAX) {
		fprintf(stderr, "spardl-bench-internal: out of memory (or -n above 2^32)\n");
		return 1;
	}
	for (l2 = 0; l2 < 2; l2++) {
		for (i = 0; i < n && cnt[l2] < want; i++)
			if ((double)(bench_rng_next(&s) >> 11) * 0x1p-53 < o->density)
				idx[l2][cnt[l2]++] = (uint32_t)i;
		bench_gen_normal(val[l2], cnt[l2], &s); /* N(0,1) values */
		l[l2] = (struct spardl_list){ 0, (uint32_t)cnt[l2], idx[l2], val[l2] };
	}
	if (cnt[0] + cnt[1] < 2) {
		fprintf(stderr, "spardl-bench-internal: too few positions drawn: raise -n or -d\n");
		return 2;
	}
	for (it = -o->warmup; it < o->iters; it++)
		for (way = 0; way < ways; way++) {
			double t0;

			spardl_lists_isa = way == 2 ? 2 : 0;
			t0 = bench_now();
			got[way] = spardl_lists_merge(l, 2, way == 0 ? cnt[0] + cnt[1] - 1 : n, heap, oidx[way],
						      oval[way]);
			if (it >= 0)
				t[(size_t)way * (size_t)o->iters + (size_t)it] = bench_now() - t0;
			spardl_lists_isa = saved;
		}
	for (way = 1; way < ways; way++)
		if (got[way] != got[0] || memcmp(oidx[way], oidx[0], got[0] * sizeof(uint64_t)) ||
		    memcmp(oval[way], oval[0], got[0] * sizeof(float))) {
			fprintf(stderr, "spardl-bench-internal: the merges differ (%s)\n", names[way]);
			return 1;
		}
	for (way = 0; way < ways; way++)
		med[way] = bench_median(t + (size_t)way * (size_t)o->iters, o->iters);
	if (o->json) {
		printf("{\"count\": %zu, \"lists\": [%zu, %zu], \"merged\": %zu, \"one_us\": %.2f, \"parts_us\": %.2f",
		       n, cnt[0], cnt[1], got[0], med[0] * 1e6, med[1] * 1e6);
		if (ways > 2)
			printf(", \"avx512_us\": %.2f", med[2] * 1e6);
		printf(", \"glibc_tunables\": \"%s\"}\n", bench_tunables());
	} else {
		printf("# spardl-bench-internal merge: two lists of %zu and %zu sorted random positions of %zu, %zu "
		       "merged; one thread, %d iterations, the ways in turns, medians; GLIBC_TUNABLES=%s\n",
		       cnt[0], cnt[1], n, got[0], o->iters, bench_tunables());
		printf("%-26s %10s %12s %8s\n", "merge", "median_us", "ns/output", "x");
		for (way = 0; way < ways; way++)
			printf("%-26s %10.1f %12.2f %7.2fx\n", names[way], med[way] * 1e6,
			       med[way] * 1e9 / (double)got[0], med[0] / med[way]);
		if (ways < MERGE_WAYS)
			printf("# AVX-512: not measured, the CPU has no AVX-512F\n");
	}
	for (way = 0; way < MERGE_WAYS; way++) {
		free(oidx[way]);
		free(oval[way]);
	}
	for (l2 = 0; l2 < 2; l2++) {
		free(idx[l2]);
		free(val[l2]);
	}
	free(t);
	return 0;
}

/* ---------------------------------------------------------------- */
/* threshold: a selection's threshold from its candidate list         */
/* ---------------------------------------------------------------- */

/* One block of n N(0,1) sums, its candidates gathered as a call gathers
 * them (the sampled bound, then acc = g + residual with the gather), m =
 * d n; the threshold of (a) the candidate list and (b) its union with a
 * received list of m random positions (N(0,1) values), the owner's at
 * P = 2: from the sampled key range (the library's way) against the full
 * radix levels over the list, checked equal. */
static int mode_threshold(const struct opts *o)
{
	size_t n = o->count, m = (size_t)ceil(o->density * (double)n), i, nc, nr = 0, nu, cap, way, w;
	float *g = malloc(n * sizeof(float)), *r = malloc(n * sizeof(float));
	uint32_t *cidx = NULL, *ridx = malloc((m + 1) * sizeof(uint32_t)), *uidx = NULL;
	float *cval = NULL, *rval = malloc((m + 1) * sizeof(float)), *uval = NULL;
	double *t = calloc(4 * (size_t)o->iters, sizeof(double));
	uint64_t s = o->seed * 2654435761u + 13;
	struct spardl_topk_ws ws;
	uint32_t lo;
	int it;

	if (!g || !r || !ridx || !rval || !t || n > UINT32_MAX || m >= n / 8) {
		fprintf(stderr, "spardl-bench-internal: out of memory, -n above 2^32 or -d of 1/8 or more\n");
		return 1;
	}
	if (spardl_topk_ws_init(&ws, m, m + 1))
		return 1;
	cap = spardl_topk_cand_cap(m);
	cidx = malloc(cap * sizeof(uint32_t));
	cval = malloc(cap * sizeof(float));
	uidx = malloc((cap + m + 1) * sizeof(uint32_t));
	uval = malloc((cap + m + 1) * sizeof(float));
	if (!cidx || !cval || !uidx || !uval)
		return 1;
	bench_gen_normal(g, n, &s);
	bench_gen_normal(r, n, &s);
	lo = spardl_topk_bound(g, r, NULL, n, m);
	nc = lo ? spardl_topk_acc_gather(r, g, n, 1, lo, cidx, cval, cap) : SIZE_MAX;
	if (nc == SIZE_MAX || nc < m) {
		fprintf(stderr, "spardl-bench-internal: no candidate list (block too small for a sampled bound?)\n");
		return 2;
	}
	for (i = 0; i < n && nr < m; i++)
		if ((double)(bench_rng_next(&s) >> 11) * 0x1p-53 < o->density)
			ridx[nr++] = (uint32_t)i;
	bench_gen_normal(rval, nr, &s);
	nu = spardl_union(cidx, cval, nc, ridx, rval, nr, uidx, uval);
	for (it = -o->warmup; it < o->iters; it++)
		for (w = 0; w < 2; w++) {
			const float *v = w ? uval : cval;
			size_t len = w ? nu : nc;
			struct spardl_thr th[2];

			for (way = 0; way < 2; way++) {
				double t0 = bench_now();

				if (way)
					spardl_topk_threshold_ws(v, len, m, &th[way], &ws);
				else
					spardl_topk_threshold_list(v, len, m, &th[way], &ws);
				if (it >= 0)
					t[(2 * w + way) * (size_t)o->iters + (size_t)it] = bench_now() - t0;
			}
			if (th[0].key != th[1].key || th[0].ties != th[1].ties || th[0].count != th[1].count) {
				fprintf(stderr, "spardl-bench-internal: the two thresholds differ\n");
				return 1;
			}
		}
	printf("# spardl-bench-internal threshold: a block of %zu N(0,1) sums, m = %zu; (a) its %zu candidates, "
	       "(b) their union with %zu received positions, %zu entries; one thread, %d iterations, medians; "
	       "sampled range taken %zu times, missed %zu; GLIBC_TUNABLES=%s\n",
	       n, m, nc, nr, nu, o->iters, ws.range_hits, ws.range_misses, bench_tunables());
	printf("%-22s %16s %16s %8s\n", "list", "full_levels_us", "sampled_us", "x");
	for (w = 0; w < 2; w++) {
		double full = bench_median(t + (2 * w + 1) * (size_t)o->iters, o->iters);
		double samp = bench_median(t + 2 * w * (size_t)o->iters, o->iters);

		printf("%-22s %16.1f %16.1f %7.2fx\n", w ? "(b) union" : "(a) candidates", full * 1e6, samp * 1e6,
		       full / samp);
	}
	spardl_topk_ws_fini(&ws);
	free(g);
	free(r);
	free(cidx);
	free(cval);
	free(ridx);
	free(rval);
	free(uidx);
	free(uval);
	free(t);
	return 0;
}

/* ---------------------------------------------------------------- */
/* write-bw: rank 0 writes to rank 1 through the transport    */
/* ---------------------------------------------------------------- */

#define WINDOW 16

static int mode_write_bw(const struct opts *o)
{
	struct spardl_comm *comm;
	const struct spardl_tp_ops *ops;
	struct spardl_tp_mr *src = NULL, *dst = NULL;
	struct spardl_tp_ep *ep = NULL;
	struct spardl_tp_rmr *rmr = NULL;
	struct spardl_tp_event ev[64];
	struct spardl_tp_peer tpeer;
	size_t sz = o->msg_size, i;
	int peer, ret, it, total, got, rounds = o->iters;
	double *tw = calloc((size_t)rounds, sizeof(double)), *tm = calloc((size_t)rounds, sizeof(double));

	ret = spardl_comm_create(NULL, &comm);
	if (ret) {
		fprintf(stderr, "spardl-bench: %s\n", spardl_last_error());
		return 1;
	}
	rank = comm->rank;
	size = comm->size;
	if (size != 2) {
		if (rank == 0)
			fprintf(stderr, "spardl-bench: write-bw needs exactly 2 ranks (got %d)\n", size);
		spardl_comm_destroy(comm);
		return 2;
	}
	ops = comm->tp_ops;
	peer = 1 - rank;
	/* Both sides hold WINDOW slots of sz bytes as source and target. */
	ret = ops->mem_alloc(comm->tp, sz * WINDOW, SPARDL_MEM_HOST, SPARDL_ACCESS_LOCAL, &src);
	if (!ret)
		ret = ops->mem_alloc(comm->tp, sz * WINDOW, SPARDL_MEM_HOST,
				     SPARDL_ACCESS_LOCAL | SPARDL_ACCESS_REMOTE_WRITE, &dst);
	tpeer.rank = peer;
	tpeer.flags = SPARDL_TP_PEER_WRITES_HERE | SPARDL_TP_PEER_WRITTEN;
	tpeer.remote_len = sz * WINDOW;
	/* ep_create is collective: every rank calls it, whatever failed before. */
	if (ret)
		ret = spardl_bootstrap_exchange(comm->bs, ret, "allocate the benchmark's memory", NULL, NULL, 0);
	else
		ret = ops->ep_create(comm->tp, &tpeer, 1, 4 * WINDOW, dst, &ep);
	if (ret)
		goto out;
	rmr = ep->remote[peer];
	memset(src->addr, rank + 1, sz * WINDOW);
	for (it = -o->warmup; it < rounds; it++) {
		double t0;

		ret = spardl_bootstrap_barrier(comm->bs);
		if (ret)
			goto out;
		t0 = bench_now();
		if (rank == 0) {
			/* WINDOW writes, then wait for the one-slot ack. */
			for (i = 0; i < WINDOW; i++) {
				ret = ops->write(ep, peer, src, i * sz, rmr, i * sz, sz, (uint32_t)i,
						 i + 1 == WINDOW ? SPARDL_TP_WRITE_LAST : 0);
				if (ret)
					goto out;
			}
			ret = ops->quiesce(ep, comm->timeout_ms);
			for (got = 0; !ret && got < 1;) {
				total = ops->poll(ep, ev, 64, comm->timeout_ms);
				if (total <= 0) {
					ret = total ? total : -ETIMEDOUT;
					break;
				}
				got += total;
			}
		} else {
			for (got = 0; got < WINDOW;) {
				total = ops->poll(ep, ev, 64, comm->timeout_ms);
				if (total <= 0) {
					ret = total ? total : -ETIMEDOUT;
					goto out;
				}
				got += total;
			}
			ret = ops->write(ep, peer, src, 0, rmr, 0, 8, 0, SPARDL_TP_WRITE_LAST);
			if (!ret)
				ret = ops->quiesce(ep, comm->timeout_ms);
		}
		if (ret)
			goto out;
		if (it >= 0)
			tw[it] = bench_now() - t0;
		/* memcpy of the same bytes between buffers of the same kinds
		 * (the transport's source and receive memory, here local), same
		 * process, same round. */
		if (rank != 0)
			continue; /* the other rank idles, as it does while written to */
		t0 = bench_now();
		for (i = 0; i < WINDOW; i++)
			memcpy((uint8_t *)dst->addr + i * sz, (uint8_t *)src->addr + i * sz, sz);
		__asm__ volatile("" : : "r"(dst->addr) : "memory");
		if (it >= 0)
			tm[it] = bench_now() - t0;
	}
	if (rank == 0) {
		double mw = bench_median(tw, rounds), mm = bench_median(tm, rounds);
		double bw = (double)sz * WINDOW / mw / 1e9, bm = (double)sz * WINDOW / mm / 1e9;

		if (o->json)
			printf("{\"transport\": \"%s\", \"msg_bytes\": %zu, \"window\": %d, \"write_gbps\": %.2f, \"memcpy_gbps\": %.2f, \"ratio\": %.3f, \"glibc_tunables\": \"%s\"}\n",
			       ops->name, sz, WINDOW, bw, bm, bw / bm, bench_tunables());
		else {
			printf("# spardl-bench write-bw: transport %s, %zu-byte writes, %d in flight, %d rounds, GLIBC_TUNABLES=%s\n",
			       ops->name, sz, WINDOW, rounds, bench_tunables());
			printf("%-24s %10s\n", "operation", "GB/s");
			printf("%-24s %10.2f\n", "transport write", bw);
			printf("%-24s %10.2f\n", "memcpy (same bytes)", bm);
			printf("# write bandwidth is %.0f%% of memcpy\n", 100 * bw / bm);
		}
	}
out:
	if (ret)
		fprintf(stderr, "spardl-bench: rank %d: %s\n", rank, spardl_last_error());
	if (ep)
		ops->ep_destroy(ep);
	if (src)
		ops->mem_free(comm->tp, src);
	if (dst)
		ops->mem_free(comm->tp, dst);
	free(tw);
	free(tm);
	spardl_comm_destroy(comm);
	return ret ? 1 : 0;
}


/* The accumulate pass of an in-place call (acc = g + residual, candidates
 * gathered, g zeroed) at each vector level the CPU has, without and with
 * pending zeros (1% of the bits), against the floor (c += a, then a memset,
 * over the same n floats). Every level must give the same bits. */
static int mode_pass(const struct opts *o)
{
	enum { VARIANTS = 7 };
	static const char *const name[VARIANTS] = { "floor (c += a; memset)", "scalar",	  "AVX2",
						    "AVX-512",		      "scalar, zeros", "AVX2, zeros",
						    "AVX-512, zeros" };
	size_t n = o->count, m = (size_t)ceil(o->density * (double)n), cap = spardl_topk_cand_cap(m), i, v;
	float *pool = malloc(2 * n * sizeof(float)), *g = malloc(n * sizeof(float)), *acc = malloc(n * sizeof(float));
	float *fc = malloc(n * sizeof(float)), *fm = malloc(n * sizeof(float)), *cval = malloc(cap * sizeof(float));
	float *ref_acc = malloc(n * sizeof(float)), *ref_val = malloc(cap * sizeof(float));
	uint32_t *cidx = malloc(cap * sizeof(uint32_t)), *ref_idx = malloc(cap * sizeof(uint32_t));
	uint64_t *z = calloc(n / 64 + 1, sizeof(uint64_t)), s = o->seed * 2654435761u + 17;
	double *t = calloc(VARIANTS * (size_t)o->iters, sizeof(double));
	int have[VARIANTS], it, saved = spardl_topk_isa, bad = 0;

	if (!pool || !g || !acc || !fc || !fm || !cval || !ref_acc || !ref_val || !cidx || !ref_idx || !z || !t ||
	    n > UINT32_MAX) {
		fprintf(stderr, "spardl-bench-internal: out of memory or -n above 2^32\n");
		return 1;
	}
	bench_gen_normal(pool, 2 * n, &s);
	for (i = 0; i < m; i++) {
		uint64_t j = bench_rng_next(&s) % n;

		z[j / 64] |= (uint64_t)1 << (j % 64);
	}
	memset(g, 0, n * sizeof(float));
	memset(acc, 0, n * sizeof(float));
	memset(fc, 0, n * sizeof(float));
	memset(fm, 0, n * sizeof(float));
	memset(ref_acc, 0, n * sizeof(float));
	for (v = 0; v < VARIANTS; v++)
		have[v] = 1;
#if defined(__x86_64__)
	have[2] = have[5] = __builtin_cpu_supports("avx2");
	have[3] = have[6] = __builtin_cpu_supports("avx512f");
#else
	have[2] = have[3] = have[5] = have[6] = 0;
#endif
	for (it = -o->warmup; it < o->iters; it++) {
		size_t off = (size_t)(bench_rng_next(&s) % (n + 1)), ref_n = 0;

		for (v = 0; v < VARIANTS; v++) {
			const uint64_t *zb = v >= 4 ? z : NULL;
			size_t got = 0;
			uint32_t lo = 0;
			double t0;

			if (!have[v])
				continue;
			/* Fresh data each time, outside the timing: g from the
			 * pool, the residual from another window of it. */
			memcpy(g, pool + off, n * sizeof(float));
			memcpy(acc, pool + (off + n / 2) % (n + 1), n * sizeof(float));
			t0 = bench_now();
			if (v == 0) {
				for (i = 0; i < n; i++)
					fc[i] += g[i];
				memset(fm, 0, n * sizeof(float));
			} else {
				spardl_topk_isa = v == 1 || v == 4 ? 0 : v == 2 || v == 5 ? 1 : 2;
				lo = spardl_topk_bound(g, acc, zb, n, m);
				got = spardl_topk_acc_gather_at(acc, g, n, 1, lo ? lo : UINT32_MAX, cidx, cval,
								lo ? cap : 0, zb, 0, 1);
			}
			if (it >= 0)
				t[v * (size_t)o->iters + (size_t)it] = bench_now() - t0;
			spardl_topk_isa = saved;
			if (v == 1 || v == 4) {
				memcpy(ref_acc, acc, n * sizeof(float));
				ref_n = got;
				if (got != SIZE_MAX && lo) {
					memcpy(ref_idx, cidx, got * sizeof(uint32_t));
					memcpy(ref_val, cval, got * sizeof(float));
				}
			} else if (v != 0) {
				/* The same bits as the scalar pass of the same data. */
				bad |= got != ref_n || memcmp(acc, ref_acc, n * sizeof(float)) != 0;
				if (got != SIZE_MAX && lo)
					bad |= memcmp(cidx, ref_idx, got * sizeof(uint32_t)) != 0 ||
					       memcmp(cval, ref_val, got * sizeof(float)) != 0;
				for (i = 0; i < n && !bad; i += 4099)
					bad |= g[i] != 0.0f;
			}
		}
	}
	if (bad) {
		fprintf(stderr, "spardl-bench-internal pass: a vector level gave other bits than the scalar pass\n");
		return 1;
	}
	printf("# spardl-bench-internal pass: one thread, n = %zu N(0,1) floats (g and the residual), m = %zu, "
	       "g zeroed as read; zeros: %zu pending-zero bits (1%%); %d iterations after %d, medians; all "
	       "levels gave the scalar pass's bits; GLIBC_TUNABLES=%s\n",
	       n, m, m, o->iters, o->warmup, bench_tunables());
	printf("%-24s %10s %8s\n", "pass", "ms", "/floor");
	for (v = 0; v < VARIANTS; v++) {
		double ms = bench_median(t + v * (size_t)o->iters, o->iters) * 1e3, floor_ms;

		if (!have[v]) {
			printf("%-24s %10s %8s\n", name[v], "-", "-");
			continue;
		}
		floor_ms = bench_median(t, o->iters) * 1e3;
		printf("%-24s %10.3f %7.2fx\n", name[v], ms, ms / floor_ms);
	}
	free(pool);
	free(g);
	free(acc);
	free(fc);
	free(fm);
	free(cval);
	free(ref_acc);
	free(ref_val);
	free(cidx);
	free(ref_idx);
	free(z);
	free(t);
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: spardl-bench-internal topk|scatter|merge|threshold|pass|write-bw [-n N] [-d D] [--iters I] [--warmup W] [--size B]\n"
		   "                              [--seed S] [--json]\n"
		   "  topk      one thread: acc = g + residual, then the exact top-k, against memcpy of the same bytes\n"
		   "  scatter   one thread: reads and stores at d n sorted random positions of n floats, prefetched\n"
		   "            as the library does against an L1 prefetch and none\n"
		   "  merge     one thread: two lists of d n sorted random positions merged in one scalar merge, in parts\n"
		   "            and with AVX-512\n"
		   "  threshold one thread: the threshold of a block's candidates (and of their union with a received\n"
		   "            list) from the sampled key range against the full radix levels\n"
		   "  pass      one thread: the accumulate pass of an in-place call at each vector level (scalar,\n"
		   "            AVX2, AVX-512), without and with pending zeros, against c += a and a memset\n"
		   "  write-bw  2 ranks (under spardl-run): the transport's one-sided write bandwidth, against memcpy\n");
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "count", required_argument, NULL, 'n' }, { "density", required_argument, NULL, 'd' },
		{ "iters", required_argument, NULL, 'i' }, { "warmup", required_argument, NULL, 'w' },
		{ "size", required_argument, NULL, 'b' },  { "seed", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },        { "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct opts o = { .count = 4194304, .density = 0.01, .iters = 20, .warmup = 3, .seed = 1,
			  .msg_size = 1 << 20 };
	const char *mode;
	int c;

	if (argc < 2 || argv[1][0] == '-') {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	mode = argv[1];
	optind = 2;
	while ((c = getopt_long(argc, argv, "n:d:h", lo, NULL)) != -1) {
		switch (c) {
		case 'n':
			o.count = strtoull(optarg, NULL, 0);
			break;
		case 'd':
			o.density = strtod(optarg, NULL);
			break;
		case 'i':
			o.iters = atoi(optarg);
			break;
		case 'w':
			o.warmup = atoi(optarg);
			break;
		case 'b':
			o.msg_size = strtoull(optarg, NULL, 0);
			break;
		case 's':
			o.seed = strtoull(optarg, NULL, 0);
			break;
		case 'j':
			o.json = 1;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (!o.count || !(o.density > 0 && o.density <= 1) || o.iters < 1 || o.warmup < 0 || !o.msg_size) {
		fprintf(stderr, "spardl-bench-internal: bad option value\n");
		return 2;
	}
	if (!strcmp(mode, "topk"))
		return mode_topk(&o);
	if (!strcmp(mode, "merge"))
		return mode_merge(&o);
	if (!strcmp(mode, "scatter"))
		return mode_scatter(&o);
	if (!strcmp(mode, "threshold"))
		return mode_threshold(&o);
	if (!strcmp(mode, "pass"))
		return mode_pass(&o);
	if (!strcmp(mode, "write-bw"))
		return mode_write_bw(&o);
	usage(stderr);
	return 2;
}
