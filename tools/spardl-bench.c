/* SPDX-License-Identifier: MIT */
/* spardl-bench: allreduce timings against dense, CPU top-k against memcpy, transport write bandwidth. */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <spardl/spardl.h>

#include "core.h"
#include "topk.h"

struct opts {
	const char *mode;
	char algos[128];
	size_t count;
	double density;
	int teams, sag, srs;
	int iters, warmup, check;
	uint64_t seed;
	size_t msg_size;
	int json;
};

static int rank, size;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t rng_next(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

/* Roughly normal integers (sigma 1000): realistic magnitudes, and every sum
 * stays exact in float so results can be checked bit for bit. */
static void gen_int(float *g, size_t n, uint64_t seed)
{
	uint64_t s = seed * 0x9e3779b97f4a7c15ULL + 1;
	size_t i;

	for (i = 0; i < n; i++) {
		uint64_t r = rng_next(&s);
		/* Sum of 4 uniforms: cheap bell shape. */
		int v = (int)(r & 0xffff) + (int)((r >> 16) & 0xffff) + (int)((r >> 32) & 0xffff) +
			(int)((r >> 48) & 0xffff) - 2 * 65536;

		g[i] = (float)(v / 64);
	}
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static const char *tunables(void)
{
	const char *t = getenv("GLIBC_TUNABLES");

	return t ? t : "(unset)";
}

static int parse_algo(const char *s)
{
	if (!strcmp(s, "spardl"))
		return SPARDL_ALGO_SPARDL;
	if (!strcmp(s, "dense"))
		return SPARDL_ALGO_DENSE;
	if (!strcmp(s, "topka"))
		return SPARDL_ALGO_TOPKA;
	if (!strcmp(s, "gtopk"))
		return SPARDL_ALGO_GTOPK;
	return -1;
}

/* ---------------------------------------------------------------- */
/* --mode allreduce                                                  */
/* ---------------------------------------------------------------- */

struct result {
	const char *algo;
	double med, min, max;
	struct spardl_plan_stats st;
	const char *check;
};

/* Sum a small vector over ranks through a dense plan (exact for the
 * integers and timings we send). */
static int dense_sum(struct spardl_plan *p, float *v)
{
	return spardl_allreduce(p, v);
}

static int run_algo(struct spardl_comm *comm, const struct opts *o, int algo, const char *name, float *grad,
		    const float *pool, struct spardl_plan *small, size_t nsmall, struct result *res)
{
	struct spardl_plan_params pp;
	struct spardl_plan *plan = NULL;
	size_t n = o->count, i;
	double *t = calloc((size_t)o->iters, sizeof(double));
	float *times = calloc(nsmall, sizeof(float));
	float *chk = NULL;
	int it, ret, bad = 0;

	if (!t || !times)
		return -ENOMEM;
	spardl_plan_params_init(&pp);
	pp.count = n;
	pp.density = o->density;
	pp.algo = algo;
	pp.teams = algo == SPARDL_ALGO_SPARDL ? o->teams : 1;
	pp.sag = o->sag;
	pp.srs = o->srs;
	ret = spardl_plan_create(comm, &pp, &plan);
	if (ret) {
		fprintf(stderr, "spardl-bench: %s: %s\n", name, spardl_last_error());
		goto out;
	}
	res->algo = name;
	res->check = "skipped";
	/* Checks, on untimed calls: at density 1 the exact dense sum; at any
	 * density, the same result on every rank and conservation. */
	if (o->check) {
		struct spardl_plan_params dp;
		struct spardl_plan *dense = NULL;
		const void *r0;
		float *v, *old;

		spardl_plan_params_init(&dp);
		dp.count = n;
		dp.algo = SPARDL_ALGO_DENSE;
		dp.average = 0;
		chk = malloc(n * sizeof(float));
		v = malloc(n * sizeof(float));
		old = malloc(n * sizeof(float));
		ret = !chk || !v || !old ? -ENOMEM : spardl_plan_create(comm, &dp, &dense);
		if (!ret) {
			spardl_plan_residual(plan, &r0);
			memcpy(old, r0, n * sizeof(float));
			memcpy(grad, pool, n * sizeof(float));
			ret = spardl_allreduce(plan, grad);
		}
		if (!ret) {
			/* Conservation: sum_w (res - g - old) + P * result == 0. */
			spardl_plan_residual(plan, &r0);
			for (i = 0; i < n; i++)
				v[i] = ((const float *)r0)[i] - pool[i] - old[i];
			ret = dense_sum(dense, v);
			for (i = 0; !ret && i < n; i++)
				if (v[i] + grad[i] * (float)size != 0.0f)
					bad++;
			/* Same result everywhere: the average of equal
			 * integer-valued vectors is the vector itself. */
			memcpy(chk, grad, n * sizeof(float));
			if (!ret)
				ret = dense_sum(dense, chk);
			for (i = 0; !ret && i < n; i++)
				if (chk[i] != grad[i] * (float)size)
					bad++;
			if (!ret && o->density >= 1.0) {
				/* The exact dense sum of the inputs. */
				memcpy(v, pool, n * sizeof(float));
				for (i = 0; i < n; i++)
					v[i] += old[i];
				ret = dense_sum(dense, v);
				for (i = 0; !ret && i < n; i++)
					if (v[i] != grad[i] * (float)size)
						bad++;
			}
		}
		spardl_plan_destroy(dense);
		free(v);
		free(old);
		if (ret) {
			fprintf(stderr, "spardl-bench: %s check: %s\n", name, spardl_last_error());
			goto out;
		}
		res->check = bad ? "FAILED" : o->density >= 1.0 ? "exact" : "ok";
	}
	for (it = -o->warmup; it < o->iters; it++) {
		double t0;

		memcpy(grad, pool, n * sizeof(float));
		ret = spardl_allreduce(small, times); /* aligns the ranks */
		if (ret)
			goto out;
		t0 = now();
		ret = spardl_allreduce(plan, grad);
		if (ret) {
			fprintf(stderr, "spardl-bench: %s: %s\n", name, spardl_last_error());
			goto out;
		}
		if (it >= 0)
			t[it] = now() - t0;
		if (it == -1)
			memset(&res->st, 0, sizeof(res->st));
	}
	spardl_plan_stats(plan, &res->st);
	/* A call lasts as long as its slowest rank: gather every rank's times. */
	memset(times, 0, nsmall * sizeof(float));
	for (it = 0; it < o->iters; it++)
		times[(size_t)rank * (size_t)o->iters + (size_t)it] = (float)(t[it] * 1e3);
	ret = spardl_allreduce(small, times);
	if (ret)
		goto out;
	for (it = 0; it < o->iters; it++) {
		double m = 0;
		int w;

		for (w = 0; w < size; w++)
			if (times[(size_t)w * (size_t)o->iters + (size_t)it] > m)
				m = times[(size_t)w * (size_t)o->iters + (size_t)it];
		t[it] = m;
	}
	res->min = res->max = t[0];
	for (it = 0; it < o->iters; it++) {
		res->min = t[it] < res->min ? t[it] : res->min;
		res->max = t[it] > res->max ? t[it] : res->max;
	}
	res->med = median(t, o->iters);
	ret = bad ? -EIO : 0;
out:
	spardl_plan_destroy(plan);
	free(t);
	free(times);
	free(chk);
	return ret;
}

static int mode_allreduce(const struct opts *o)
{
	struct spardl_comm *comm;
	struct spardl_plan *small = NULL;
	struct spardl_plan_params pp;
	struct result res[8];
	char algos[128], *tok, *save = NULL;
	float *grad = NULL, *pool = NULL;
	double dense_med = 0;
	int nres = 0, ret, i, failed = 0;
	size_t nsmall;

	ret = spardl_comm_create(NULL, &comm);
	if (ret) {
		fprintf(stderr, "spardl-bench: %s\n", spardl_last_error());
		return 1;
	}
	rank = spardl_comm_rank(comm);
	size = spardl_comm_size(comm);
	nsmall = (size_t)size * (size_t)o->iters;
	spardl_plan_params_init(&pp);
	pp.count = nsmall;
	pp.algo = SPARDL_ALGO_DENSE;
	pp.average = 0;
	ret = spardl_plan_create(comm, &pp, &small);
	if (ret)
		goto out;
	/* Allocate and touch the data once, outside every timing. */
	grad = malloc(o->count * sizeof(float));
	pool = malloc(o->count * sizeof(float));
	if (!grad || !pool) {
		ret = -ENOMEM;
		goto out;
	}
	memset(grad, 0, o->count * sizeof(float));
	gen_int(pool, o->count, o->seed + (uint64_t)rank * 7919);
	snprintf(algos, sizeof(algos), "%s", o->algos);
	if (!strstr(algos, "dense"))
		strncat(algos, ",dense", sizeof(algos) - strlen(algos) - 1);
	for (tok = strtok_r(algos, ",", &save); tok && nres < 8; tok = strtok_r(NULL, ",", &save)) {
		int a = parse_algo(tok);

		if (a < 0) {
			if (rank == 0)
				fprintf(stderr, "spardl-bench: unknown algorithm '%s' (spardl, dense, topka, gtopk)\n",
					tok);
			ret = -EINVAL;
			goto out;
		}
		ret = run_algo(comm, o, a, tok, grad, pool, small, nsmall, &res[nres]);
		if (ret == -EIO)
			failed = 1;
		else if (ret)
			goto out;
		if (a == SPARDL_ALGO_DENSE)
			dense_med = res[nres].med;
		nres++;
	}
	ret = 0;
	if (rank != 0)
		goto out;
	if (o->json) {
		printf("{\"ranks\": %d, \"transport\": \"%s\", \"count\": %zu, \"density\": %g, \"teams\": %d, \"iters\": %d, \"glibc_tunables\": \"%s\", \"results\": [",
		       size, spardl_comm_transport(comm), o->count, o->density, o->teams, o->iters, tunables());
		for (i = 0; i < nres; i++) {
			const struct spardl_plan_stats *st = &res[i].st;
			double c = st->calls ? (double)st->calls : 1;

			printf("%s{\"algo\": \"%s\", \"median_ms\": %.3f, \"min_ms\": %.3f, \"max_ms\": %.3f, \"speedup_vs_dense\": %.3f, \"check\": \"%s\", \"rank0_split_ms\": {\"accumulate\": %.3f, \"select\": %.3f, \"reduce\": %.3f, \"post\": %.3f, \"wait\": %.3f, \"output\": %.3f}}",
			       i ? ", " : "", res[i].algo, res[i].med, res[i].min, res[i].max,
			       res[i].med > 0 ? dense_med / res[i].med : 0, res[i].check,
			       st->accumulate / c * 1e3, st->select / c * 1e3, st->reduce / c * 1e3,
			       st->post / c * 1e3, st->wait / c * 1e3, st->output / c * 1e3);
		}
		printf("]}\n");
		goto out;
	}
	printf("# spardl-bench allreduce: %d ranks, transport %s, n=%zu, density %g, teams %d, %d iterations (+%d warm-up), GLIBC_TUNABLES=%s\n",
	       size, spardl_comm_transport(comm), o->count, o->density, o->teams, o->iters, o->warmup,
	       tunables());
	printf("# time per call = slowest rank; split = rank 0's time per call in each part\n");
	printf("%-8s %10s %10s %10s %9s | %8s %8s %8s %8s %8s %8s %6s | %s\n", "algo", "median_ms", "min_ms",
	       "max_ms", "vs_dense", "accum", "select", "reduce", "post", "wait", "output", "scans", "check");
	for (i = 0; i < nres; i++) {
		const struct spardl_plan_stats *st = &res[i].st;
		double c = st->calls ? (double)st->calls : 1;

		printf("%-8s %10.3f %10.3f %10.3f %8.2fx | %8.3f %8.3f %8.3f %8.3f %8.3f %8.3f %6.2f | %s\n",
		       res[i].algo, res[i].med, res[i].min, res[i].max, res[i].med > 0 ? dense_med / res[i].med : 0,
		       st->accumulate / c * 1e3, st->select / c * 1e3, st->reduce / c * 1e3, st->post / c * 1e3,
		       st->wait / c * 1e3, st->output / c * 1e3, (double)st->scans / c, res[i].check);
	}
out:
	if (ret)
		fprintf(stderr, "spardl-bench: rank %d: %s\n", rank, spardl_last_error());
	free(grad);
	free(pool);
	spardl_plan_destroy(small);
	spardl_comm_destroy(comm);
	return ret || failed ? 1 : 0;
}

/* ---------------------------------------------------------------- */
/* --mode topk: one thread, acc = g + residual then topk, vs memcpy  */
/* ---------------------------------------------------------------- */

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
	for (i = 0; i < n; i += 2) {
		double u1 = ((double)(rng_next(&s) >> 11) + 1) / 9007199254740993.0;
		double u2 = (double)(rng_next(&s) >> 11) / 9007199254740992.0;
		double rad = sqrt(-2 * log(u1));

		g[i] = (float)(rad * cos(2 * M_PI * u2));
		if (i + 1 < n)
			g[i + 1] = (float)(rad * sin(2 * M_PI * u2));
	}
	for (i = 0; i < n; i++)
		r[i] = 0.1f * g[(i * 7919) % n];
	memset(acc, 0, n * sizeof(float));
	memset(dst, 0, n * sizeof(float));
	memset(cand, 0, ccap * sizeof(uint32_t));
	memset(cval, 0, ccap * sizeof(float));
	for (it = -o->warmup; it < o->iters; it++) {
		double t0 = now(), t1;
		float *a = acc;
		const float *gg = g, *rr = r;

		memcpy(dst, g, n * sizeof(float));
		memcpy(a, rr, n * sizeof(float)); /* acc holds the residual, as in a plan */
		t1 = now();
		/* What a plan's call does: acc += g while gathering candidates,
		 * then the exact selection from them (a scan when they fail). */
		lo = spardl_topk_bound(gg, a, n, m);
		nc = lo ? spardl_topk_acc_gather(a, gg, n, 1, lo, cand, cval, ccap) : SIZE_MAX;
		if (!lo)
			for (i = 0; i < n; i++)
				a[i] += gg[i];
		got = nc == SIZE_MAX ? SIZE_MAX :
				       spardl_topk_from_cands(acc, m, lo, cand, cval, nc, NULL, NULL, 0, idx, val, &ws);
		if (got == SIZE_MAX) {
			got = spardl_topk_block(acc, n, m, idx, val, &ws);
			fallbacks++;
		}
		if (it >= 0) {
			tc[it] = t1 - t0;
			ts[it] = now() - t1;
		}
	}
	{
		double mc = median(tc, o->iters), ms = median(ts, o->iters);
		double gbc = (double)n * 4 / mc / 1e9, gbs = (double)n * 4 / ms / 1e9;

		if (o->json)
			printf("{\"count\": %zu, \"k\": %zu, \"selected\": %zu, \"memcpy_gbps\": %.2f, \"topk_gbps\": %.2f, \"topk_ms\": %.3f, \"memcpy_ms\": %.3f, \"glibc_tunables\": \"%s\"}\n",
			       n, m, got, gbc, gbs, ms * 1e3, mc * 1e3, tunables());
		else {
			printf("# spardl-bench topk: n=%zu, k=%zu (density %g), one thread, %d iterations, GLIBC_TUNABLES=%s\n",
			       n, m, o->density, o->iters, tunables());
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
/* --mode write-bw: rank 0 writes to rank 1 through the transport    */
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
			fprintf(stderr, "spardl-bench: --mode write-bw needs exactly 2 ranks (got %d)\n", size);
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
		t0 = now();
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
			tw[it] = now() - t0;
		/* memcpy of the same bytes between buffers of the same kinds
		 * (the transport's source and receive memory, here local), same
		 * process, same round. */
		if (rank != 0)
			continue; /* the other rank idles, as it does while written to */
		t0 = now();
		for (i = 0; i < WINDOW; i++)
			memcpy((uint8_t *)dst->addr + i * sz, (uint8_t *)src->addr + i * sz, sz);
		__asm__ volatile("" : : "r"(dst->addr) : "memory");
		if (it >= 0)
			tm[it] = now() - t0;
	}
	if (rank == 0) {
		double mw = median(tw, rounds), mm = median(tm, rounds);
		double bw = (double)sz * WINDOW / mw / 1e9, bm = (double)sz * WINDOW / mm / 1e9;

		if (o->json)
			printf("{\"transport\": \"%s\", \"msg_bytes\": %zu, \"window\": %d, \"write_gbps\": %.2f, \"memcpy_gbps\": %.2f, \"ratio\": %.3f, \"glibc_tunables\": \"%s\"}\n",
			       ops->name, sz, WINDOW, bw, bm, bw / bm, tunables());
		else {
			printf("# spardl-bench write-bw: transport %s, %zu-byte writes, %d in flight, %d rounds, GLIBC_TUNABLES=%s\n",
			       ops->name, sz, WINDOW, rounds, tunables());
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

static void usage(FILE *f)
{
	fprintf(f,
		"usage: spardl-bench [options]        (one rank; start it under spardl-run, mpirun, srun...)\n"
		"  --mode M          allreduce (default), topk (one process), write-bw (2 ranks)\n"
		"  --algos LIST      comma list of spardl, dense, topka, gtopk (default spardl,dense;\n"
		"                    dense always runs as the baseline)\n"
		"  -n, --count N     gradient elements (default 4194304)\n"
		"  -d, --density D   kept fraction, (0, 1] (default 0.01)\n"
		"  --teams D         SparDL teams (default 1)\n"
		"  --sag S           bruck (default) or recursive\n"
		"  --srs S           batched (default) or sequential\n"
		"  --iters I         timed calls (default 20)\n"
		"  --warmup W        untimed calls first (default 3)\n"
		"  --no-check        skip the result checks\n"
		"  --size B          message bytes for write-bw (default 1048576)\n"
		"  --seed S          data seed (default 1)\n"
		"  --json            one JSON object instead of the table\n"
		"example: spardl-run -n 4 spardl-bench --algos spardl,dense -n 16777216 -d 0.01\n");
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "mode", required_argument, NULL, 'm' }, { "algos", required_argument, NULL, 'a' },
		{ "count", required_argument, NULL, 'n' }, { "density", required_argument, NULL, 'd' },
		{ "teams", required_argument, NULL, 't' }, { "sag", required_argument, NULL, 'S' },
		{ "srs", required_argument, NULL, 'R' },   { "iters", required_argument, NULL, 'i' },
		{ "warmup", required_argument, NULL, 'w' }, { "no-check", no_argument, NULL, 'C' },
		{ "size", required_argument, NULL, 'b' },  { "seed", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },        { "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct opts o = { .mode = "allreduce", .algos = "spardl,dense", .count = 4194304, .density = 0.01,
			  .teams = 1, .iters = 20, .warmup = 3, .check = 1, .seed = 1, .msg_size = 1 << 20 };
	char *end;
	int c;

	while ((c = getopt_long(argc, argv, "n:d:h", lo, NULL)) != -1) {
		switch (c) {
		case 'm':
			o.mode = optarg;
			break;
		case 'a':
			snprintf(o.algos, sizeof(o.algos), "%s", optarg);
			break;
		case 'n':
			o.count = strtoull(optarg, &end, 0);
			if (*end || !o.count)
				goto bad;
			break;
		case 'd':
			o.density = strtod(optarg, &end);
			if (*end || !(o.density > 0 && o.density <= 1))
				goto bad;
			break;
		case 't':
			o.teams = atoi(optarg);
			break;
		case 'S':
			if (strcmp(optarg, "bruck") && strcmp(optarg, "recursive"))
				goto bad;
			o.sag = !strcmp(optarg, "recursive");
			break;
		case 'R':
			if (strcmp(optarg, "batched") && strcmp(optarg, "sequential"))
				goto bad;
			o.srs = !strcmp(optarg, "sequential");
			break;
		case 'i':
			o.iters = atoi(optarg);
			if (o.iters < 1)
				goto bad;
			break;
		case 'w':
			o.warmup = atoi(optarg);
			if (o.warmup < 0)
				goto bad;
			break;
		case 'C':
			o.check = 0;
			break;
		case 'b':
			o.msg_size = strtoull(optarg, &end, 0);
			if (*end || !o.msg_size)
				goto bad;
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
	if (optind != argc) {
		fprintf(stderr, "spardl-bench: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	if (!strcmp(o.mode, "allreduce"))
		return mode_allreduce(&o);
	if (!strcmp(o.mode, "topk"))
		return mode_topk(&o);
	if (!strcmp(o.mode, "write-bw"))
		return mode_write_bw(&o);
	fprintf(stderr, "spardl-bench: unknown mode '%s' (allreduce, topk, write-bw)\n", o.mode);
	return 2;
bad:
	fprintf(stderr, "spardl-bench: bad value '%s' for option %s\n", optarg, argv[optind - 1]);
	usage(stderr);
	return 2;
}
