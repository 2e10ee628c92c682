/* SPDX-License-Identifier: MIT */
/*
 * CUDA plans (suites "cuda" and "cudasim").
 *
 * Where this process has no usable CUDA device, a CUDA plan fails on every
 * rank with -ENODEV and a message naming the reason, and the communicator
 * stays usable; the test then skips (77) with that reason.
 *
 * Where it has one (or with --sim, the simulated runtime of cuda_sim.c:
 * device memory the host cannot touch, streams as threads), every algorithm
 * runs on a CUDA plan and on a host plan with the same inputs, integer and
 * float, and the results, sparse results and residuals must match bit for
 * bit; calls are made synchronously, on a created stream and on the default
 * stream. Then: an async call returns before it runs (its stream is held by
 * a gate), a host plan's call waits for them, calls on two streams run in
 * the order made, bad pointers are refused by name, runtime failures while
 * enqueueing (simulated runtime only) lose nothing, and a peer that dies in
 * an async call leaves the survivors' device buffers unchanged and their
 * residual holding every gradient.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <spardl/spardl.h>

#include "core.h"
#include "cuda.h"
#include "cuda_sim.h"
#include "mp_common.h"

#define N 3001

static const struct spardl_cuda_rt *rt;
static int size;

struct config {
	const char *name;
	int algo, teams, sag, srs, residual, average;
	double density;
};

static const struct config configs[] = {
	{ "spardl", SPARDL_ALGO_SPARDL, 1, SPARDL_SAG_BRUCK, SPARDL_SRS_BATCHED, 1, 1, 0.05 },
	{ "spardl-2teams-bsag-seq", SPARDL_ALGO_SPARDL, 2, SPARDL_SAG_BRUCK, SPARDL_SRS_SEQUENTIAL, 1, 0, 0.05 },
	{ "spardl-2teams-rsag", SPARDL_ALGO_SPARDL, 2, SPARDL_SAG_RECURSIVE, SPARDL_SRS_BATCHED, 1, 1, 0.05 },
	{ "spardl-no-residual", SPARDL_ALGO_SPARDL, 1, SPARDL_SAG_BRUCK, SPARDL_SRS_BATCHED, 0, 0, 0.05 },
	{ "topka", SPARDL_ALGO_TOPKA, 1, 0, 0, 1, 1, 0.05 },
	{ "gtopk", SPARDL_ALGO_GTOPK, 1, 0, 0, 1, 0, 0.05 },
	{ "dense", SPARDL_ALGO_DENSE, 1, 0, 0, 1, 0, 1.0 },
};
#define NCONFIGS ((int)(sizeof(configs) / sizeof(configs[0])))

static int valid(const struct config *c)
{
	return size % c->teams == 0 && (c->algo != SPARDL_ALGO_GTOPK || is_pow2(size)) &&
	       (c->sag != SPARDL_SAG_RECURSIVE || is_pow2(c->teams));
}

static void params(const struct config *c, int mem, struct spardl_plan_params *pp)
{
	spardl_plan_params_init(pp);
	pp->count = N;
	pp->density = c->density;
	pp->algo = c->algo;
	pp->teams = c->teams;
	pp->sag = c->sag;
	pp->srs = c->srs;
	pp->residual = c->residual;
	pp->average = c->average;
	pp->mem_type = mem;
}

/* Integer values in [-50, 50] (a third zeros: every sum exact), or floats
 * in (-1, 1) with a third zeros; every rank's differ. */
static void gen(float *g, int call, int salt, int floats)
{
	for (size_t i = 0; i < N; i++) {
		uint64_t r = mix((uint64_t)call * 7919u + (uint64_t)mp_rank * 104729u + i * 31u +
				 (uint64_t)salt * 15485863u + 1);

		if (r % 3 == 0)
			g[i] = 0.0f;
		else if (floats)
			g[i] = (float)((double)(int64_t)(r >> 11) / 4503599627370496.0 - 1.0);
		else
			g[i] = (float)((int)((r >> 8) % 101) - 50);
	}
}

static void *dev_new(size_t len)
{
	void *p = NULL;
	int e = rt->dev_alloc(&p, len);

	if (e) {
		fprintf(stderr, "rank %d: device allocation of %zu bytes: %s\n", mp_rank, len, rt->err_name(e));
		exit(1);
	}
	return p;
}

/* A copy, then a wait for the legacy default stream: cudaMemcpy from
 * pageable memory may return before its DMA lands, and the calls under
 * test run on a non-blocking stream, which does not wait for it. */
static void to_dev(void *dst, const void *src, size_t len)
{
	int e = rt->memcpy(dst, src, len);

	if (!e)
		e = rt->stream_sync(NULL);
	if (e) {
		fprintf(stderr, "rank %d: copy to or from the device: %s\n", mp_rank, rt->err_name(e));
		exit(1);
	}
}

#define from_dev to_dev

static int first_diff(const void *a, const void *b, size_t n, size_t elem)
{
	for (size_t i = 0; i < n; i++)
		if (memcmp((const uint8_t *)a + i * elem, (const uint8_t *)b + i * elem, elem))
			return (int)i;
	return -1;
}

/* The plans' residuals, the CUDA one through its device copy. */
static void check_residuals(struct spardl_plan *h, struct spardl_plan *c, const char *what, int call)
{
	const void *hr, *cr;
	float *got = malloc(N * sizeof(float));
	int d;

	mp_check(!spardl_plan_residual(h, &hr), "%s: host residual: %s", what, spardl_last_error());
	if (!mp_check(!spardl_plan_residual(c, &cr), "%s call %d: CUDA residual: %s", what, call,
		      spardl_last_error())) {
		free(got);
		return;
	}
	from_dev(got, cr, N * sizeof(float));
	d = first_diff(got, hr, N, sizeof(float));
	mp_check(d < 0, "%s call %d: residuals differ at %d: %a (CUDA) %a (host)", what, call, d,
		 d < 0 ? 0.0 : (double)got[d], d < 0 ? 0.0 : (double)((const float *)hr)[d]);
	free(got);
}

/* How each call is made on the CUDA plan. */
enum { SYNC, ASYNC_STREAM, SPARSE_SYNC, SPARSE_ASYNC, ASYNC_DEFAULT, NMODES };
static const char *const mode_name[] = { "sync", "async on a stream", "sparse sync", "sparse async",
					 "async on the default stream" };

static void compare(struct spardl_comm *comm, const struct config *c, int cfg_idx, void *stream)
{
	struct spardl_plan_params pp;
	struct spardl_plan *h = NULL, *cp = NULL;
	size_t m, nnz_h = 0, nnz_c;
	float *g = malloc(N * sizeof(float)), *hb = malloc(N * sizeof(float)), *got = malloc(N * sizeof(float));
	float *dg = dev_new(N * sizeof(float)), *dval, *hval, *gval;
	int64_t *didx, *hidx, *gidx;
	int ret, call, d, mode;

	params(c, SPARDL_MEM_HOST, &pp);
	ret = spardl_plan_create(comm, &pp, &h);
	mp_check(!ret, "%s: host plan: %s", c->name, spardl_last_error());
	params(c, SPARDL_MEM_CUDA, &pp);
	if (!ret) {
		ret = spardl_plan_create(comm, &pp, &cp);
		mp_check(!ret, "%s: CUDA plan: %s", c->name, spardl_last_error());
	}
	if (ret) {
		spardl_plan_destroy(h);
		rt->dev_free(dg);
		free(g);
		free(hb);
		free(got);
		return;
	}
	m = spardl_plan_max_nnz(h);
	mp_check(m == spardl_plan_max_nnz(cp), "%s: max_nnz %zu (host) %zu (CUDA)", c->name, m, spardl_plan_max_nnz(cp));
	didx = dev_new(m * sizeof(int64_t));
	dval = dev_new(m * sizeof(float));
	hidx = malloc(m * sizeof(int64_t));
	gidx = malloc(m * sizeof(int64_t));
	hval = malloc(m * sizeof(float));
	gval = malloc(m * sizeof(float));
	{
		struct spardl_plan_info info;

		spardl_plan_info(cp, &info);
		mp_check(info.device_bytes >= N * sizeof(float), "%s: device_bytes %zu", c->name, info.device_bytes);
	}
	for (call = 0; call < 2 * NMODES; call++) {
		int floats = call % 2;

		mode = call % NMODES;
		gen(g, call, cfg_idx, floats);
		memcpy(hb, g, N * sizeof(float));
		to_dev(dg, g, N * sizeof(float));
		if (mode == SPARSE_SYNC || mode == SPARSE_ASYNC) {
			ret = spardl_allreduce_sparse(h, hb, hidx, hval, &nnz_h);
			mp_check(!ret, "%s call %d: host sparse: %s", c->name, call, spardl_last_error());
			nnz_c = SIZE_MAX;
			if (mode == SPARSE_SYNC) {
				ret = spardl_allreduce_sparse(cp, dg, didx, dval, &nnz_c);
			} else {
				ret = spardl_allreduce_sparse_async(cp, dg, didx, dval, &nnz_c, stream);
				if (!ret)
					ret = spardl_plan_sync(cp);
			}
			if (!mp_check(!ret, "%s call %d (%s): %s", c->name, call, mode_name[mode], spardl_last_error()))
				break;
			from_dev(gidx, didx, m * sizeof(int64_t));
			from_dev(gval, dval, m * sizeof(float));
			from_dev(got, dg, N * sizeof(float));
			mp_check(nnz_c == nnz_h, "%s call %d (%s): nnz %zu, host %zu", c->name, call, mode_name[mode],
				 nnz_c, nnz_h);
			if (nnz_c == nnz_h) {
				d = first_diff(gidx, hidx, nnz_h, sizeof(int64_t));
				mp_check(d < 0, "%s call %d (%s): index %d differs", c->name, call, mode_name[mode], d);
				d = first_diff(gval, hval, nnz_h, sizeof(float));
				mp_check(d < 0, "%s call %d (%s): value %d differs", c->name, call, mode_name[mode], d);
			}
			d = first_diff(got, g, N, sizeof(float));
			mp_check(d < 0, "%s call %d (%s): grad changed at %d", c->name, call, mode_name[mode], d);
		} else {
			ret = spardl_allreduce(h, hb);
			mp_check(!ret, "%s call %d: host: %s", c->name, call, spardl_last_error());
			if (mode == SYNC) {
				ret = spardl_allreduce(cp, dg);
			} else {
				ret = spardl_allreduce_async(cp, dg, mode == ASYNC_STREAM ? stream : NULL);
				if (!ret)
					ret = spardl_plan_sync(cp);
			}
			if (!mp_check(!ret, "%s call %d (%s): %s", c->name, call, mode_name[mode], spardl_last_error()))
				break;
			from_dev(got, dg, N * sizeof(float));
			d = first_diff(got, hb, N, sizeof(float));
			mp_check(d < 0, "%s call %d (%s, %s data): results differ at %d: %a (CUDA) %a (host)", c->name,
				 call, mode_name[mode], floats ? "float" : "integer", d, d < 0 ? 0.0 : (double)got[d],
				 d < 0 ? 0.0 : (double)hb[d]);
		}
		check_residuals(h, cp, c->name, call);
	}
	/* A residual set from device memory, then one more call. */
	if (c->residual && !ret) {
		gen(g, 100, cfg_idx, 1);
		to_dev(dg, g, N * sizeof(float));
		ret = spardl_plan_set_residual(h, g);
		mp_check(!ret, "%s: host set_residual: %s", c->name, spardl_last_error());
		ret = spardl_plan_set_residual(cp, dg);
		mp_check(!ret, "%s: CUDA set_residual: %s", c->name, spardl_last_error());
		ret = spardl_plan_set_residual(cp, g);
		mp_check(ret == -EINVAL && strstr(spardl_last_error(), "host memory"),
			 "%s: set_residual from host memory on a CUDA plan: %d %s", c->name, ret, spardl_last_error());
		gen(g, 101, cfg_idx, 1);
		memcpy(hb, g, N * sizeof(float));
		to_dev(dg, g, N * sizeof(float));
		mp_check(!spardl_allreduce(h, hb), "%s: host after set_residual: %s", c->name, spardl_last_error());
		mp_check(!spardl_allreduce(cp, dg), "%s: CUDA after set_residual: %s", c->name, spardl_last_error());
		from_dev(got, dg, N * sizeof(float));
		d = first_diff(got, hb, N, sizeof(float));
		mp_check(d < 0, "%s: after set_residual results differ at %d", c->name, d);
		check_residuals(h, cp, c->name, 101);
	}
	spardl_plan_destroy(h);
	spardl_plan_destroy(cp);
	rt->dev_free(dg);
	rt->dev_free(didx);
	rt->dev_free(dval);
	free(g);
	free(hb);
	free(got);
	free(hidx);
	free(gidx);
	free(hval);
	free(gval);
}

/* A host function that holds its stream until the test opens it. */
static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static int gate_open, gate_timed_out;

static void gate(void *arg)
{
	struct timespec until;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 30;
	pthread_mutex_lock(&gate_lock);
	while (!gate_open && !gate_timed_out)
		if (pthread_cond_timedwait(&gate_cond, &gate_lock, &until) == ETIMEDOUT)
			gate_timed_out = 1;
	pthread_mutex_unlock(&gate_lock);
}

static void *open_gate_later(void *arg)
{
	struct timespec d = { 0, 200 * 1000 * 1000 };

	nanosleep(&d, NULL);
	pthread_mutex_lock(&gate_lock);
	gate_open = 1;
	pthread_cond_broadcast(&gate_cond);
	pthread_mutex_unlock(&gate_lock);
	return arg;
}

/* Two async calls made while their first stream is held: both return at
 * once, neither has run, a host plan's call waits for them, and they run in
 * the order made although the second is on another stream. */
static void async_order(struct spardl_comm *comm, void *s1, void *s2)
{
	const struct config *c = &configs[0];
	struct spardl_plan_params pp;
	struct spardl_plan *h = NULL, *cp = NULL;
	struct spardl_plan_stats st;
	pthread_t opener;
	float *a = malloc(N * sizeof(float)), *b = malloc(N * sizeof(float)), *got = malloc(N * sizeof(float));
	float *da = dev_new(N * sizeof(float)), *db = dev_new(N * sizeof(float));
	int ret, d, e;

	params(c, SPARDL_MEM_HOST, &pp);
	ret = spardl_plan_create(comm, &pp, &h);
	params(c, SPARDL_MEM_CUDA, &pp);
	if (!ret)
		ret = spardl_plan_create(comm, &pp, &cp);
	if (!mp_check(!ret, "async: plans: %s", spardl_last_error()))
		goto out;
	gen(a, 200, 7, 1);
	gen(b, 201, 7, 1);
	to_dev(da, a, N * sizeof(float));
	to_dev(db, b, N * sizeof(float));
	e = rt->launch_host(s1, gate, NULL);
	mp_check(!e, "async: the gate: %s", e ? rt->err_name(e) : "");
	ret = spardl_allreduce_async(cp, da, s1);
	mp_check(!ret, "async: first call: %s", spardl_last_error());
	ret = spardl_allreduce_async(cp, db, s2);
	mp_check(!ret, "async: second call, other stream: %s", spardl_last_error());
	/* The caller's thread is free meanwhile. */
	spardl_plan_stats(cp, &st);
	mp_check(st.calls == 0, "async: %llu calls ran while their stream was held",
		 (unsigned long long)st.calls);
	/* A host plan's call on the same communicator waits for them: the
	 * gate opens 200 ms from now, from another thread. */
	if (!mp_check(!pthread_create(&opener, NULL, open_gate_later, NULL), "async: thread"))
		goto out;
	mp_check(!spardl_allreduce(h, a), "async: host a: %s", spardl_last_error());
	spardl_plan_stats(cp, &st);
	mp_check(st.calls == 2, "async: a host plan's call ran before the CUDA calls made earlier (%llu of 2 done)",
		 (unsigned long long)st.calls);
	mp_check(!spardl_allreduce(h, b), "async: host b: %s", spardl_last_error());
	pthread_join(opener, NULL);
	mp_check(!gate_timed_out, "async: the gate timed out");
	ret = spardl_plan_sync(cp);
	mp_check(!ret, "async: sync: %s", spardl_last_error());
	e = rt->stream_sync(s2);
	mp_check(!e, "async: stream sync: %s", e ? rt->err_name(e) : "");

	from_dev(got, da, N * sizeof(float));
	d = first_diff(got, a, N, sizeof(float));
	mp_check(d < 0, "async: first call's result differs at %d", d);
	from_dev(got, db, N * sizeof(float));
	d = first_diff(got, b, N, sizeof(float));
	mp_check(d < 0, "async: second call's result differs at %d (order across streams)", d);
	check_residuals(h, cp, "async", 2);

	/* Bad arguments are refused by name. */
	ret = spardl_allreduce(cp, a);
	mp_check(ret == -EINVAL && strstr(spardl_last_error(), "grad is host memory"),
		 "host grad on a CUDA plan: %d %s", ret, spardl_last_error());
	ret = spardl_allreduce_async(h, a, s1);
	mp_check(ret == -EINVAL && strstr(spardl_last_error(), "stream was given"),
		 "stream on a host plan: %d %s", ret, spardl_last_error());
	{
		int64_t idx[4];
		float val[4];
		size_t nnz = 7;

		ret = spardl_allreduce_sparse(cp, da, idx, val, &nnz);
		mp_check(ret == -EINVAL && strstr(spardl_last_error(), "indices is host memory") && nnz == 7,
			 "host indices on a CUDA plan: %d %s", ret, spardl_last_error());
	}
out:
	spardl_plan_destroy(h);
	spardl_plan_destroy(cp);
	rt->dev_free(da);
	rt->dev_free(db);
	free(a);
	free(b);
	free(got);
}

/* A burst of async calls, dense and sparse, alternating between two streams
 * and the default one, each on its own device buffers, with no wait in
 * between: the staging buffers serve them one after another, and every
 * result equals the host plan's for the same calls in the same order. */
#define BURST 12

static void async_burst(struct spardl_comm *comm, void *s1, void *s2)
{
	const struct config *c = &configs[0];
	struct spardl_plan_params pp;
	struct spardl_plan *h = NULL, *cp = NULL;
	float *g = malloc(N * sizeof(float)), *got = malloc(N * sizeof(float));
	float *hres[BURST] = { 0 }, *dg[BURST] = { 0 }, *dval[BURST] = { 0 };
	int64_t *didx[BURST] = { 0 }, *hidx = NULL, *gidx = NULL;
	float *hval = NULL, *gval = NULL;
	size_t m = 0, nnz[BURST], hnnz[BURST];
	int ret, d, i;

	params(c, SPARDL_MEM_HOST, &pp);
	ret = spardl_plan_create(comm, &pp, &h);
	params(c, SPARDL_MEM_CUDA, &pp);
	if (!ret)
		ret = spardl_plan_create(comm, &pp, &cp);
	if (!mp_check(!ret, "burst: plans: %s", spardl_last_error()))
		goto out;
	m = spardl_plan_max_nnz(h);
	hidx = malloc(BURST * m * sizeof(int64_t));
	hval = malloc(BURST * m * sizeof(float));
	gidx = malloc(m * sizeof(int64_t));
	gval = malloc(m * sizeof(float));
	for (i = 0; i < BURST; i++) {
		void *st = i % 3 == 0 ? s1 : i % 3 == 1 ? s2 : NULL;

		hres[i] = malloc(N * sizeof(float));
		dg[i] = dev_new(N * sizeof(float));
		didx[i] = dev_new(m * sizeof(int64_t));
		dval[i] = dev_new(m * sizeof(float));
		gen(hres[i], 500 + i, 13, i % 2);
		to_dev(dg[i], hres[i], N * sizeof(float));
		nnz[i] = SIZE_MAX;
		if (i % 4 == 3)
			ret = spardl_allreduce_sparse_async(cp, dg[i], didx[i], dval[i], &nnz[i], st);
		else
			ret = spardl_allreduce_async(cp, dg[i], st);
		mp_check(!ret, "burst: call %d: %s", i, spardl_last_error());
	}
	/* The host plan, the same calls in order, meanwhile. */
	for (i = 0; i < BURST; i++) {
		if (i % 4 == 3)
			ret = spardl_allreduce_sparse(h, hres[i], hidx + (size_t)i * m, hval + (size_t)i * m, &hnnz[i]);
		else
			ret = spardl_allreduce(h, hres[i]);
		mp_check(!ret, "burst: host call %d: %s", i, spardl_last_error());
	}
	mp_check(!spardl_plan_sync(cp), "burst: sync: %s", spardl_last_error());
	for (i = 0; i < BURST; i++) {
		from_dev(got, dg[i], N * sizeof(float));
		if (i % 4 == 3) {
			/* The sparse calls leave grad as it was. */
			gen(g, 500 + i, 13, i % 2);
			d = first_diff(got, g, N, sizeof(float));
			mp_check(d < 0, "burst: sparse call %d changed grad at %d", i, d);
			mp_check(nnz[i] == hnnz[i], "burst: call %d: nnz %zu, host %zu", i, nnz[i], hnnz[i]);
			if (nnz[i] == hnnz[i]) {
				from_dev(gidx, didx[i], m * sizeof(int64_t));
				from_dev(gval, dval[i], m * sizeof(float));
				mp_check(first_diff(gidx, hidx + (size_t)i * m, nnz[i], sizeof(int64_t)) < 0 &&
						 first_diff(gval, hval + (size_t)i * m, nnz[i], sizeof(float)) < 0,
					 "burst: sparse call %d differs from the host plan's", i);
			}
		} else {
			d = first_diff(got, hres[i], N, sizeof(float));
			mp_check(d < 0, "burst: call %d (stream %d) differs at %d", i, i % 3, d);
		}
	}
	check_residuals(h, cp, "burst", BURST);
out:
	spardl_plan_destroy(h);
	spardl_plan_destroy(cp);
	for (i = 0; i < BURST; i++) {
		free(hres[i]);
		if (dg[i])
			rt->dev_free(dg[i]);
		if (didx[i])
			rt->dev_free(didx[i]);
		if (dval[i])
			rt->dev_free(dval[i]);
	}
	free(g);
	free(got);
	free(hidx);
	free(hval);
	free(gidx);
	free(gval);
}

/* Simulated runtime only: each of a synchronous call's five enqueueing
 * runtime calls fails once in turn, on every rank. Before the host function
 * is enqueued nothing runs: -EIO naming the step, grad unchanged, no call
 * made. After it, the result is delivered anyway. Either way the plan then
 * matches a host plan that made the calls that ran. */
static void enqueue_failures(struct spardl_comm *comm)
{
	const struct config *c = &configs[0];
	struct spardl_plan_params pp;
	struct spardl_plan *h = NULL, *cp = NULL;
	struct spardl_plan_stats st;
	float *g = malloc(N * sizeof(float)), *hb = malloc(N * sizeof(float)), *got = malloc(N * sizeof(float));
	float *dg = dev_new(N * sizeof(float));
	uint64_t calls = 0;
	int ret, d, at;

	params(c, SPARDL_MEM_HOST, &pp);
	ret = spardl_plan_create(comm, &pp, &h);
	params(c, SPARDL_MEM_CUDA, &pp);
	if (!ret)
		ret = spardl_plan_create(comm, &pp, &cp);
	if (!mp_check(!ret, "enqueue failures: plans: %s", spardl_last_error()))
		goto out;
	for (at = 1; at <= 6; at++) {
		gen(g, 400 + at, 11, 1);
		memcpy(hb, g, N * sizeof(float));
		to_dev(dg, g, N * sizeof(float));
		spardl_cuda_sim_fail_in = at < 6 ? at : 0;
		ret = spardl_allreduce(cp, dg);
		spardl_cuda_sim_fail_in = 0;
		from_dev(got, dg, N * sizeof(float));
		spardl_plan_stats(cp, &st);
		if (at <= 3) {
			mp_check(ret == -EIO && strstr(spardl_last_error(), "enqueueing the call") &&
					 strstr(spardl_last_error(), "simInvalidValue"),
				 "enqueue failure %d: %d %s", at, ret, spardl_last_error());
			d = first_diff(got, g, N, sizeof(float));
			mp_check(d < 0, "enqueue failure %d: grad changed at %d", at, d);
			mp_check(st.calls == calls, "enqueue failure %d: a call ran (%llu, want %llu)", at,
				 (unsigned long long)st.calls, (unsigned long long)calls);
		} else {
			mp_check(!ret, "enqueue failure %d after the host function: %s", at, spardl_last_error());
			mp_check(!spardl_allreduce(h, hb), "enqueue failure %d: host: %s", at, spardl_last_error());
			d = first_diff(got, hb, N, sizeof(float));
			mp_check(d < 0, "enqueue failure %d: result differs at %d", at, d);
			calls++;
		}
		check_residuals(h, cp, "enqueue failures", at);
	}
out:
	spardl_plan_destroy(h);
	spardl_plan_destroy(cp);
	rt->dev_free(dg);
	free(g);
	free(hb);
	free(got);
}

/* The last rank leaves in the middle of call 1, an async call: the
 * survivors' grad is unchanged on the device, the residual holds the old
 * residual plus that gradient, and the next call absorbs its own. */
static const struct spardl_plan *victim_plan;

static int die_in_call_1(const struct spardl_plan *plan, uint64_t call, uint32_t step)
{
	if (plan == victim_plan && call == 1 && step == 1 && mp_rank == size - 1) {
		fflush(NULL);
		_exit(0);
	}
	return 0;
}

static void rollback(struct spardl_comm *comm, void *stream)
{
	const struct config *c = &configs[0];
	struct spardl_plan_params pp;
	struct spardl_plan *cp = NULL;
	float *g = malloc(N * sizeof(float)), *old = malloc(N * sizeof(float)), *got = malloc(N * sizeof(float));
	float *dg = dev_new(N * sizeof(float));
	const void *r;
	int ret, d, call;

	params(c, SPARDL_MEM_CUDA, &pp);
	ret = spardl_plan_create(comm, &pp, &cp);
	if (!mp_check(!ret, "rollback: plan: %s", spardl_last_error()))
		goto out;
	victim_plan = cp;
	spardl_exec_step_hook = die_in_call_1;
	gen(g, 300, 9, 1);
	to_dev(dg, g, N * sizeof(float));
	mp_check(!spardl_allreduce(cp, dg), "rollback: call 0: %s", spardl_last_error());
	for (call = 1; call <= 2; call++) {
		ret = spardl_plan_residual(cp, &r);
		if (!mp_check(!ret, "rollback: residual: %s", spardl_last_error()))
			break;
		from_dev(old, r, N * sizeof(float));
		gen(g, 300 + call, 9, 1);
		to_dev(dg, g, N * sizeof(float));
		ret = spardl_allreduce_async(cp, dg, stream);
		if (call == 1)
			mp_check(!ret, "rollback: call 1 must enqueue: %s", spardl_last_error());
		else
			mp_check(ret == -SPARDL_ERR_PLAN_FAILED, "rollback: call 2 on the failed plan returned %d (%s)",
				 ret, spardl_last_error());
		ret = spardl_plan_sync(cp);
		mp_check(ret && ret != -SPARDL_ERR_PLAN_FAILED && strstr(spardl_last_error(), "rank"),
			 "rollback: call %d: sync returned %d (%s), want the first failure", call, ret,
			 spardl_last_error());
		from_dev(got, dg, N * sizeof(float));
		d = first_diff(got, g, N, sizeof(float));
		mp_check(d < 0, "rollback: call %d changed grad at %d", call, d);
		ret = spardl_plan_residual(cp, &r);
		if (!mp_check(!ret, "rollback: residual after: %s", spardl_last_error()))
			break;
		from_dev(got, r, N * sizeof(float));
		for (size_t i = 0; i < N; i++)
			old[i] = old[i] + g[i];
		d = first_diff(got, old, N, sizeof(float));
		mp_check(d < 0, "rollback: call %d: residual at %d is %a, want old + grad %a", call, d,
			 d < 0 ? 0.0 : (double)got[d], d < 0 ? 0.0 : (double)old[d]);
	}
out:
	spardl_exec_step_hook = NULL;
	spardl_plan_destroy(cp);
	rt->dev_free(dg);
	free(g);
	free(old);
	free(got);
}

int main(int argc, char **argv)
{
	struct spardl_comm *comm;
	struct spardl_plan_params pp;
	struct spardl_plan *plan = (void *)1;
	char why[1024];
	float g[N];
	void *s1 = NULL, *s2 = NULL;
	int ret, i, e;

	if (argc > 1 && !strcmp(argv[1], "--sim"))
		spardl_cuda_rt = &spardl_cuda_sim;
	comm = mp_comm_create();
	mp_rank = spardl_comm_rank(comm);
	size = spardl_comm_size(comm);
	spardl_plan_params_init(&pp);
	pp.count = N;
	pp.mem_type = SPARDL_MEM_CUDA;
	ret = spardl_plan_create(comm, &pp, &plan);
	snprintf(why, sizeof(why), "%s", spardl_last_error());
	if (ret == -ENODEV) {
		mp_check(strstr(why, "SPARDL_MEM_CUDA") && strstr(why, "no usable CUDA device: "),
			 "-ENODEV without the reason: %s", why);
		mp_check(plan == (void *)1, "plan_out written on failure");

		/* The failed creation left the communicator usable: a host
		 * plan sums exactly (integers, every entry kept). */
		pp.mem_type = SPARDL_MEM_HOST;
		pp.algo = SPARDL_ALGO_DENSE;
		pp.density = 1.0;
		pp.average = 0;
		plan = NULL;
		ret = spardl_plan_create(comm, &pp, &plan);
		if (mp_check(!ret, "host plan after the CUDA one: %s", spardl_last_error())) {
			for (i = 0; i < N; i++)
				g[i] = (float)(i % 7 + mp_rank);
			ret = spardl_allreduce(plan, g);
			mp_check(!ret, "allreduce: %s", spardl_last_error());
			for (i = 0; !ret && i < N; i++)
				if (!mp_check(g[i] == (float)(size * (i % 7) + size * (size - 1) / 2), "entry %d: %g",
					      i, (double)g[i]))
					break;
			spardl_plan_destroy(plan);
		}
		spardl_comm_destroy(comm);
		if (mp_failures) {
			printf("rank %d: %d checks, %d failures\n", mp_rank, mp_checks, mp_failures);
			return 1;
		}
		if (mp_rank == 0)
			printf("SKIP: %s\n", why);
		return 77;
	}
	if (!mp_check(!ret, "a CUDA plan returned %d (%s): %s", ret, spardl_strerror(ret), why)) {
		spardl_comm_destroy(comm);
		return 1;
	}
	spardl_plan_destroy(plan);
	rt = spardl_cuda_rt;
	e = rt->stream_create(&s1);
	if (!e)
		e = rt->stream_create(&s2);
	if (e) {
		fprintf(stderr, "rank %d: stream: %s\n", mp_rank, rt->err_name(e));
		return 1;
	}
	if (mp_rank == 0)
		printf("runtime %s, %d ranks\n", rt->name, size);
	for (i = 0; i < NCONFIGS; i++)
		if (valid(&configs[i]))
			compare(comm, &configs[i], i, s1);
	async_order(comm, s1, s2);
	async_burst(comm, s1, s2);
	if (rt == &spardl_cuda_sim)
		enqueue_failures(comm);
	if (size > 1)
		rollback(comm, s2);
	rt->stream_destroy(s1);
	rt->stream_destroy(s2);
	spardl_comm_destroy(comm);
	printf("rank %d: %d checks, %d failures\n", mp_rank, mp_checks, mp_failures);
	return mp_failures ? 1 : 0;
}
