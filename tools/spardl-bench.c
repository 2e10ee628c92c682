/* SPDX-License-Identifier: MIT */
/*
 * spardl-bench: a sweep of allreduce timings over counts x densities x
 * algorithms through the public API, like nccl-tests; or, with --simulate,
 * the same sweep on the library's simulator for any number of ranks.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <spardl/spardl.h>

#include "bench-util.h"

#define MAX_LIST 64

/* One algorithm of the sweep, with its SparDL options. */
struct variant {
	char label[64];
	int algo, teams, sag, srs;
	int teams_set, sag_set, srs_set;
};

struct opts {
	size_t counts[MAX_LIST];
	int ncounts;
	double dens[MAX_LIST];
	int ndens;
	char algos[512];
	int teams, sag, srs; /* defaults of the SparDL variants */
	int iters, warmup, check;
	int normal; /* --data normal (default): N(0,1) floats; else integers */
	int floor;  /* --floor: time the streaming pass too */
	uint64_t seed;
	int json;
	const char *csv;
	int progress; /* -1 auto */
	/* --simulate */
	int simulate;
	int ranks[MAX_LIST];
	int nranks;
	struct spardl_sim_model model;
};

static int rank, size;


/* N(0,1) floats: realistic data for timings. */
static void gen_normal(float *g, size_t n, uint64_t seed)
{
	uint64_t s = seed * 0x9e3779b97f4a7c15ULL + 1;

	bench_gen_normal(g, n, &s);
}

/* Roughly normal integers (sigma 1000): realistic magnitudes, and every sum
 * stays exact in float so results can be checked bit for bit. */
static void gen_int(float *g, size_t n, uint64_t seed)
{
	uint64_t s = seed * 0x9e3779b97f4a7c15ULL + 1;
	size_t i;

	for (i = 0; i < n; i++) {
		uint64_t r = bench_rng_next(&s);
		/* Sum of 4 uniforms: cheap bell shape. */
		int v = (int)(r & 0xffff) + (int)((r >> 16) & 0xffff) + (int)((r >> 32) & 0xffff) +
			(int)((r >> 48) & 0xffff) - 2 * 65536;

		g[i] = (float)(v / 64);
	}
}


static const char *const algo_names[] = { "spardl", "dense", "topka", "gtopk" };

static int is_pow2(int x)
{
	return x > 0 && !(x & (x - 1));
}

/* "spardl[:teams=T][:sag=bruck|recursive][:srs=batched|sequential]", "topka",
 * "gtopk", "dense"; spardl-seq and spardl-rsag are short for the options. */
static int parse_variant(const char *tok, const struct opts *o, struct variant *v)
{
	char buf[128], *save = NULL, *part;
	int i;

	memset(v, 0, sizeof(*v));
	v->algo = -1;
	v->teams = o->teams;
	v->sag = o->sag;
	v->srs = o->srs;
	if (!strcmp(tok, "spardl-seq"))
		tok = "spardl:srs=sequential";
	else if (!strcmp(tok, "spardl-rsag"))
		tok = "spardl:sag=recursive";
	snprintf(buf, sizeof(buf), "%s", tok);
	part = strtok_r(buf, ":", &save);
	for (i = 0; part && i < 4; i++)
		if (!strcmp(part, algo_names[i]))
			v->algo = i;
	if (v->algo < 0)
		return -1;
	while ((part = strtok_r(NULL, ":", &save))) {
		char *eq = strchr(part, '='), *end;

		if (v->algo != 0 || !eq)
			return -1;
		*eq++ = 0;
		if (!strcmp(part, "teams") || !strcmp(part, "t")) {
			if (!strcmp(eq, "auto")) {
				v->teams = 0;
			} else {
				v->teams = (int)strtol(eq, &end, 10);
				if (*end || v->teams < 1)
					return -1;
			}
			v->teams_set = 1;
		} else if (!strcmp(part, "sag") && (!strcmp(eq, "bruck") || !strcmp(eq, "recursive"))) {
			v->sag = !strcmp(eq, "recursive");
			v->sag_set = 1;
		} else if (!strcmp(part, "srs") && (!strcmp(eq, "batched") || !strcmp(eq, "sequential"))) {
			v->srs = !strcmp(eq, "sequential");
			v->srs_set = 1;
		} else {
			return -1;
		}
	}
	if (v->algo != 0) {
		snprintf(v->label, sizeof(v->label), "%s", algo_names[v->algo]);
		return 0;
	}
	i = snprintf(v->label, sizeof(v->label), "spardl");
	if (v->teams != 1)
		i += v->teams ? snprintf(v->label + i, sizeof(v->label) - (size_t)i, ":teams=%d", v->teams) :
				snprintf(v->label + i, sizeof(v->label) - (size_t)i, ":teams=auto");
	if (v->sag)
		i += snprintf(v->label + i, sizeof(v->label) - (size_t)i, ":sag=recursive");
	if (v->srs)
		snprintf(v->label + i, sizeof(v->label) - (size_t)i, ":srs=sequential");
	return 0;
}

/* The algorithms for p ranks: --algos expanded ("all": every algorithm and
 * SparDL variant that p ranks allow), dense first (the baseline). */
static int expand_algos(const struct opts *o, int p, struct variant *out, int max, char *err, size_t elen)
{
	char buf[512], *save = NULL, *tok;
	int n = 1, i;

	parse_variant("dense", o, &out[0]);
	snprintf(buf, sizeof(buf), "%s", o->algos);
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		struct variant v;

		if (!strcmp(tok, "all")) {
			static const char *const every[] = { "spardl", "spardl:srs=sequential", "spardl:teams=2",
							     "spardl:teams=2:sag=recursive", "spardl:teams=auto",
							     "topka", "gtopk" };

			for (i = 0; i < 7 && n < max; i++) {
				parse_variant(every[i], o, &v);
				if ((v.teams > 1 && (p % v.teams || p == v.teams)) || (v.algo == 3 && !is_pow2(p)))
					continue;
				out[n++] = v;
			}
			continue;
		}
		if (!strcmp(tok, "spardl:teams=every")) {
			/* SparDL at every team count the size allows. */
			for (i = 1; i <= p && n < max; i++) {
				char t[48];

				if (p % i)
					continue;
				snprintf(t, sizeof(t), "spardl:teams=%d", i);
				parse_variant(t, o, &v);
				out[n++] = v;
			}
			continue;
		}
		if (parse_variant(tok, o, &v)) {
			snprintf(err, elen,
				 "unknown algorithm '%s': give spardl[:teams=T|auto][:sag=bruck|recursive]"
				 "[:srs=batched|sequential], spardl:teams=every, spardl-seq, spardl-rsag, topka, gtopk, "
				 "dense or all",
				 tok);
			return -1;
		}
		if (v.algo == 1)
			continue; /* dense always runs, first */
		if (n == max) {
			snprintf(err, elen, "more than %d algorithms", max);
			return -1;
		}
		out[n++] = v;
	}
	return n;
}

static void plan_params(const struct variant *v, size_t n, double d, struct spardl_plan_params *pp)
{
	spardl_plan_params_init(pp);
	pp->count = n;
	pp->density = d;
	pp->algo = (enum spardl_algo)v->algo;
	pp->teams = v->algo == 0 ? v->teams : 1;
	pp->sag = (enum spardl_sag)v->sag;
	pp->srs = (enum spardl_srs)v->srs;
}

/* ---------------------------------------------------------------- */
/* The sweep                                                         */
/* ---------------------------------------------------------------- */

struct result {
	const struct variant *v;
	size_t n;
	double density;
	int teams;
	double med, min, max; /* ms, the slowest rank per call */
	double speedup;       /* the dense median at this count over this median */
	double floor_ms;      /* the streaming pass at this count (--floor), else 0 */
	struct spardl_plan_stats st;
	const char *check;
};

/* Checks, on an untimed call: at density 1 the exact dense sum; at any
 * density, the same result on every rank and conservation (what every rank
 * sent or kept adds up to its input). The data are integers, so every sum
 * is exact. */
static int check_call(struct spardl_comm *comm, struct spardl_plan *plan, size_t n, double density, float *grad,
		      const float *pool, const char **verdict)
{
	struct spardl_plan_params dp;
	struct spardl_plan *dense = NULL;
	const void *r0;
	float *v = malloc(n * sizeof(float)), *old = malloc(n * sizeof(float)), *chk = malloc(n * sizeof(float));
	size_t i, bad = 0;
	int ret;

	spardl_plan_params_init(&dp);
	dp.count = n;
	dp.algo = SPARDL_ALGO_DENSE;
	dp.average = 0;
	ret = !chk || !v || !old ? -ENOMEM : spardl_plan_create(comm, &dp, &dense);
	if (!ret)
		ret = spardl_plan_residual(plan, &r0);
	if (!ret) {
		memcpy(old, r0, n * sizeof(float));
		memcpy(grad, pool, n * sizeof(float));
		ret = spardl_allreduce(plan, grad);
	}
	if (!ret)
		ret = spardl_plan_residual(plan, &r0);
	if (!ret) {
		/* Conservation: sum_w (res - g - old) + P * result == 0. */
		for (i = 0; i < n; i++)
			v[i] = ((const float *)r0)[i] - pool[i] - old[i];
		ret = spardl_allreduce(dense, v);
		for (i = 0; !ret && i < n; i++)
			if (v[i] + grad[i] * (float)size != 0.0f)
				bad++;
		/* Same result everywhere: the sum of P equal vectors. */
		memcpy(chk, grad, n * sizeof(float));
		if (!ret)
			ret = spardl_allreduce(dense, chk);
		for (i = 0; !ret && i < n; i++)
			if (chk[i] != grad[i] * (float)size)
				bad++;
		if (!ret && density >= 1.0) {
			for (i = 0; i < n; i++)
				v[i] = pool[i] + old[i];
			ret = spardl_allreduce(dense, v);
			for (i = 0; !ret && i < n; i++)
				if (v[i] != grad[i] * (float)size)
					bad++;
		}
	}
	spardl_plan_destroy(dense);
	free(v);
	free(old);
	free(chk);
	*verdict = bad ? "FAILED" : density >= 1.0 ? "exact" : "ok";
	return ret;
}

/* A call lasts as long as its slowest rank: every rank's times t[iters]
 * (seconds) gathered, the maximum per iteration, then median, min and max
 * in ms. */
static int slowest(const struct opts *o, struct spardl_plan *small, float *times, double *t, double *med,
		   double *min, double *max)
{
	size_t nsmall = (size_t)size * (size_t)o->iters;
	int it, ret;

	memset(times, 0, nsmall * sizeof(float));
	for (it = 0; it < o->iters; it++)
		times[(size_t)rank * (size_t)o->iters + (size_t)it] = (float)(t[it] * 1e3);
	ret = spardl_allreduce(small, times);
	if (ret)
		return ret;
	for (it = 0; it < o->iters; it++) {
		double m = 0;
		int w;

		for (w = 0; w < size; w++)
			if (times[(size_t)w * (size_t)o->iters + (size_t)it] > m)
				m = times[(size_t)w * (size_t)o->iters + (size_t)it];
		t[it] = m;
	}
	*min = *max = t[0];
	for (it = 0; it < o->iters; it++) {
		*min = t[it] < *min ? t[it] : *min;
		*max = t[it] > *max ? t[it] : *max;
	}
	*med = bench_median(t, o->iters);
	return 0;
}

/* --floor: one streaming pass c[i] += a[i] over n floats plus a memset of
 * n floats, on every rank at once (they share the memory bus as calls do),
 * timed like a call. */
static int time_floor(const struct opts *o, size_t n, float *c, const float *a, float *m,
		      struct spardl_plan *small, float *times, double *med)
{
	double *t = calloc((size_t)o->iters, sizeof(double)), mn, mx;
	size_t i;
	int it, ret = 0;

	if (!t)
		return -ENOMEM;
	for (it = -o->warmup; it < o->iters && !ret; it++) {
		double t0;

		ret = spardl_allreduce(small, times); /* aligns the ranks */
		if (ret)
			break;
		t0 = bench_now();
		for (i = 0; i < n; i++)
			c[i] += a[i];
		memset(m, 0, n * sizeof(float));
		if (it >= 0)
			t[it] = bench_now() - t0;
	}
	if (!ret)
		ret = slowest(o, small, times, t, med, &mn, &mx);
	free(t);
	return ret;
}

static int run_point(struct spardl_comm *comm, const struct opts *o, const struct variant *var, size_t n,
		     double density, float *grad, const float *pool, size_t pool_n, const float *check_pool,
		     struct spardl_plan *small, float *times, struct result *res)
{
	struct spardl_plan_params pp;
	struct spardl_plan *plan = NULL;
	struct spardl_plan_info info;
	double *t = calloc((size_t)o->iters, sizeof(double));
	int it, ret;

	if (!t)
		return -ENOMEM;
	memset(res, 0, sizeof(*res));
	res->v = var;
	res->n = n;
	res->density = density;
	res->check = "skipped";
	plan_params(var, n, density, &pp);
	ret = spardl_plan_create(comm, &pp, &plan);
	if (ret)
		goto out;
	ret = spardl_plan_info(plan, &info);
	if (ret)
		goto out;
	res->teams = info.teams;
	if (o->check) {
		ret = check_call(comm, plan, n, density, grad, check_pool, &res->check);
		if (ret)
			goto out;
	}
	for (it = -o->warmup; it < o->iters; it++) {
		/* Each call its own data: a window of the pool moved along. */
		size_t off = pool_n > n ? ((size_t)(it + o->warmup) * 7919u * 64u) % (pool_n - n + 1) : 0;
		double t0;

		memcpy(grad, pool + off, n * sizeof(float));
		if (it == 0) {
			/* Stats of the timed calls only: what was there before. */
			ret = spardl_plan_stats(plan, &res->st);
			if (ret)
				goto out;
		}
		ret = spardl_allreduce(small, times); /* aligns the ranks */
		if (ret)
			goto out;
		t0 = bench_now();
		ret = spardl_allreduce(plan, grad);
		if (ret)
			goto out;
		if (it >= 0)
			t[it] = bench_now() - t0;
	}
	{
		struct spardl_plan_stats end;

		ret = spardl_plan_stats(plan, &end);
		if (ret)
			goto out;
		end.calls -= res->st.calls;
		end.total -= res->st.total;
		end.accumulate -= res->st.accumulate;
		end.select -= res->st.select;
		end.reduce -= res->st.reduce;
		end.wait -= res->st.wait;
		end.post -= res->st.post;
		end.output -= res->st.output;
		end.scans -= res->st.scans;
		end.bytes_sent -= res->st.bytes_sent;
		end.writes -= res->st.writes;
		res->st = end;
	}
	ret = slowest(o, small, times, t, &res->med, &res->min, &res->max);
out:
	spardl_plan_destroy(plan);
	free(t);
	return ret;
}

static double algbw(const struct result *r)
{
	return r->med > 0 ? (double)r->n * 4.0 / (r->med * 1e-3) / 1e9 : 0;
}

static double busbw(const struct result *r)
{
	return algbw(r) * 2.0 * (size - 1) / size;
}

static void print_row(const struct result *r)
{
	const struct spardl_plan_stats *st = &r->st;
	double c = st->calls ? (double)st->calls : 1;

	char fl[16] = "       -";

	if (r->floor_ms > 0)
		snprintf(fl, sizeof(fl), "%7.2fx", r->med / r->floor_ms);
	printf("%12zu %8g %-30s %5d %10.3f %10.3f %10.3f %8.3f %8.3f %8.2fx %s | %7.3f %7.3f %7.3f %7.3f %7.3f %7.3f "
	       "%10.0f %5.2f | %s\n",
	       r->n, r->density, r->v->label, r->teams, r->med, r->min, r->max, algbw(r), busbw(r), r->speedup, fl,
	       st->accumulate / c * 1e3, st->select / c * 1e3, st->reduce / c * 1e3, st->post / c * 1e3,
	       st->wait / c * 1e3, st->output / c * 1e3, (double)st->bytes_sent / c, (double)st->scans / c,
	       r->check);
	fflush(stdout);
}

static void csv_header(FILE *f)
{
	fprintf(f, "ranks,transport,count,density,algo,teams,median_ms,min_ms,max_ms,algbw_gbs,busbw_gbs,"
		   "speedup_vs_dense,accumulate_ms,select_ms,reduce_ms,post_ms,wait_ms,output_ms,bytes_sent,scans,"
		   "check,glibc_tunables,data,floor_ms,over_floor\n");
}

static const char *data_name = "normal";

static void csv_row(FILE *f, const char *tp, const struct result *r)
{
	const struct spardl_plan_stats *st = &r->st;
	double c = st->calls ? (double)st->calls : 1;

	fprintf(f, "%d,%s,%zu,%g,%s,%d,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f,%.0f,%.3f,%s,%s,%s,%.4f,%.4f\n",
		size, tp, r->n, r->density, r->v->label, r->teams, r->med, r->min, r->max, algbw(r), busbw(r),
		r->speedup, st->accumulate / c * 1e3, st->select / c * 1e3, st->reduce / c * 1e3, st->post / c * 1e3,
		st->wait / c * 1e3, st->output / c * 1e3, (double)st->bytes_sent / c, (double)st->scans / c,
		r->check, bench_tunables(), data_name, r->floor_ms, r->floor_ms > 0 ? r->med / r->floor_ms : 0);
}

static void json_row(const char *tp, const struct result *r, int first)
{
	const struct spardl_plan_stats *st = &r->st;
	double c = st->calls ? (double)st->calls : 1;

	printf("%s\n  {\"ranks\": %d, \"transport\": \"%s\", \"count\": %zu, \"density\": %g, \"algo\": \"%s\", "
	       "\"teams\": %d, \"median_ms\": %.4f, \"min_ms\": %.4f, \"max_ms\": %.4f, \"algbw_gbs\": %.4f, "
	       "\"busbw_gbs\": %.4f, \"speedup_vs_dense\": %.4f, \"floor_ms\": %.4f, \"over_floor\": %.4f, "
	       "\"check\": \"%s\", \"bytes_sent\": %.0f, "
	       "\"rank0_split_ms\": {\"accumulate\": %.4f, \"select\": %.4f, \"reduce\": %.4f, \"post\": %.4f, "
	       "\"wait\": %.4f, \"output\": %.4f}}",
	       first ? "" : ",", size, tp, r->n, r->density, r->v->label, r->teams, r->med, r->min, r->max, algbw(r),
	       busbw(r), r->speedup, r->floor_ms, r->floor_ms > 0 ? r->med / r->floor_ms : 0, r->check,
	       (double)st->bytes_sent / c, st->accumulate / c * 1e3,
	       st->select / c * 1e3, st->reduce / c * 1e3, st->post / c * 1e3, st->wait / c * 1e3,
	       st->output / c * 1e3);
}

static int sweep(const struct opts *o)
{
	struct spardl_comm *comm;
	struct spardl_plan *small = NULL;
	struct spardl_plan_params pp;
	struct variant vars[MAX_LIST];
	float *grad = NULL, *pool = NULL, *times = NULL, *ipool = NULL, *fl_c = NULL, *fl_m = NULL;
	size_t maxn = 0, nsmall, pool_n;
	int nv, ret, i, j, k, failed = 0, points, done = 0, first = 1, progress;
	char err[300];
	FILE *csv = NULL;
	const char *tp;
	double t_start;

	data_name = o->normal ? "normal" : "int";
	/* Bad names are found before any rank waits for another. */
	if (expand_algos(o, 1, vars, MAX_LIST, err, sizeof(err)) < 0) {
		fprintf(stderr, "spardl-bench: %s\n", err);
		return 2;
	}
	ret = spardl_comm_create(NULL, &comm);
	if (ret) {
		fprintf(stderr, "spardl-bench: %s\n", spardl_last_error());
		return 1;
	}
	rank = spardl_comm_rank(comm);
	size = spardl_comm_size(comm);
	tp = spardl_comm_transport(comm);
	nv = expand_algos(o, size, vars, MAX_LIST, err, sizeof(err));
	if (nv < 0) {
		if (rank == 0)
			fprintf(stderr, "spardl-bench: %s\n", err);
		spardl_comm_destroy(comm);
		return 2;
	}
	for (i = 0; i < o->ncounts; i++)
		maxn = o->counts[i] > maxn ? o->counts[i] : maxn;
	nsmall = (size_t)size * (size_t)o->iters;
	spardl_plan_params_init(&pp);
	pp.count = nsmall;
	pp.algo = SPARDL_ALGO_DENSE;
	pp.average = 0;
	ret = spardl_plan_create(comm, &pp, &small);
	if (ret)
		goto out;
	/* Allocate and touch the data once, outside every timing. Normal data:
	 * twice the largest count, so that each call takes another window;
	 * the checks run on integers, whose sums are exact. */
	pool_n = o->normal ? 2 * maxn : maxn;
	grad = malloc(maxn * sizeof(float));
	pool = malloc(pool_n * sizeof(float));
	times = malloc(nsmall * sizeof(float));
	if (o->normal && o->check)
		ipool = malloc(maxn * sizeof(float));
	if (o->floor) {
		fl_c = malloc(maxn * sizeof(float));
		fl_m = malloc(maxn * sizeof(float));
	}
	if (!grad || !pool || !times || (o->normal && o->check && !ipool) || (o->floor && (!fl_c || !fl_m))) {
		ret = -ENOMEM;
		goto out;
	}
	memset(grad, 0, maxn * sizeof(float));
	if (o->floor) {
		memset(fl_c, 0, maxn * sizeof(float));
		memset(fl_m, 0, maxn * sizeof(float));
	}
	if (o->normal)
		gen_normal(pool, pool_n, o->seed + (uint64_t)rank * 7919);
	else
		gen_int(pool, pool_n, o->seed + (uint64_t)rank * 7919);
	if (ipool)
		gen_int(ipool, maxn, o->seed + (uint64_t)rank * 7919);
	if (rank == 0 && o->csv) {
		csv = fopen(o->csv, "w");
		if (!csv) {
			fprintf(stderr, "spardl-bench: cannot create %s: %m\n", o->csv);
			ret = -errno;
			goto out;
		}
		csv_header(csv);
	}
	/* Dense once per count, then every other algorithm at every density. */
	points = o->ncounts * (1 + (nv - 1) * o->ndens);
	progress = o->progress < 0 ? points > 1 && isatty(2) : o->progress;
	if (rank == 0 && o->json)
		printf("{\"glibc_tunables\": \"%s\", \"iters\": %d, \"warmup\": %d, \"data\": \"%s\", \"points\": [",
		       bench_tunables(), o->iters, o->warmup, data_name);
	else if (rank == 0) {
		printf("# spardl-bench: %d ranks, transport %s, %d iterations (+%d warm-up) per point, data: %s, "
		       "GLIBC_TUNABLES=%s\n",
		       size, tp, o->iters, o->warmup,
		       o->normal ? "N(0,1) floats, another window of the pool each call (checks on integers)" :
				   "integers (sigma 1000)",
		       bench_tunables());
		printf("# time = the slowest rank's, ms; algbw = 4n bytes / time, busbw = algbw * 2(P-1)/P, GB/s; "
		       "split = rank 0's ms per call; sent = rank 0's bytes per call\n");
		printf("%12s %8s %-30s %5s %10s %10s %10s %8s %8s %9s %8s | %7s %7s %7s %7s %7s %7s %10s %5s | %s\n",
		       "count", "density", "algo", "teams", "median", "min", "max", "algbw", "busbw", "vs_dense", "/floor",
		       "accum", "select", "reduce", "post", "wait", "output", "sent", "scans", "check");
	}
	t_start = bench_now();
	for (i = 0; i < o->ncounts; i++) {
		size_t n = o->counts[i];
		double dense_med = 0, floor_med = 0;

		if (o->floor) {
			ret = time_floor(o, n, fl_c, pool, fl_m, small, times, &floor_med);
			if (ret)
				goto out;
			if (rank == 0 && !o->json)
				printf("# floor, n=%zu: %.3f ms (c[i] += a[i] over n floats, then a memset of n floats, "
				       "every rank at once; the slowest rank's median)\n",
				       n, floor_med);
		}
		for (j = 0; j < o->ndens; j++) {
			for (k = 0; k < nv; k++) {
				struct result r;

				if (k == 0 && j > 0)
					continue; /* dense does not depend on the density */
				ret = run_point(comm, o, &vars[k], n, o->dens[j], grad, pool, pool_n, ipool ? ipool : pool,
						small, times, &r);
				if (ret) {
					if (rank == 0)
						fprintf(stderr, "spardl-bench: %s, n=%zu, density %g: %s\n", vars[k].label, n,
							o->dens[j], spardl_last_error());
					goto out;
				}
				if (k == 0)
					dense_med = r.med;
				r.speedup = r.med > 0 ? dense_med / r.med : 0;
				r.floor_ms = floor_med;
				if (strcmp(r.check, "ok") && strcmp(r.check, "exact") && strcmp(r.check, "skipped"))
					failed = 1;
				done++;
				if (rank != 0)
					continue;
				if (o->json)
					json_row(tp, &r, first);
				else
					print_row(&r);
				first = 0;
				if (csv)
					csv_row(csv, tp, &r);
				if (progress) {
					double el = bench_now() - t_start;

					fprintf(stderr, "\r[%d/%d] %s n=%zu d=%g: %.3f ms; %.0f s elapsed, about %.0f s left   %s",
						done, points, vars[k].label, n, o->dens[j], r.med, el,
						el / done * (points - done), done == points ? "\n" : "");
				}
			}
		}
	}
	if (rank == 0 && o->json)
		printf("\n]}\n");
	ret = 0;
out:
	if (ret)
		fprintf(stderr, "spardl-bench: rank %d: %s\n", rank, spardl_last_error());
	if (csv && fclose(csv)) {
		fprintf(stderr, "spardl-bench: writing %s: %m\n", o->csv);
		ret = -EIO;
	}
	free(grad);
	free(pool);
	free(times);
	free(ipool);
	free(fl_c);
	free(fl_m);
	spardl_plan_destroy(small);
	spardl_comm_destroy(comm);
	if (failed && rank == 0)
		fprintf(stderr, "spardl-bench: a result check FAILED (see the check column)\n");
	return ret ? 1 : failed ? 1 : 0;
}

/* ---------------------------------------------------------------- */
/* --simulate                                                         */
/* ---------------------------------------------------------------- */

/* Ok-Topk's published cost: at most (2P + 2 log2 P) alpha + 6k(P-1)/P words
 * of 4 bytes over beta; the lower bound moves 2k(P-1)/P words. */
static double oktopk_cost(int p, double k, const struct spardl_sim_model *m)
{
	return (2.0 * p + 2.0 * log2((double)p)) * m->alpha + 6.0 * k * (p - 1) / p * 4.0 / m->beta;
}

static double lower_bound_bytes(int p, double k)
{
	return 2.0 * k * (p - 1) / p * 4.0;
}

static int simulate(const struct opts *o)
{
	static const char *const ph[] = { "srs", "sag", "ag", "merge", "rs", "rag", "local" };
	struct variant vars[MAX_LIST];
	FILE *csv = NULL;
	char err[300];
	int a, i, j, k, q, first = 1, ret = 0;

	if (o->csv) {
		csv = fopen(o->csv, "w");
		if (!csv) {
			fprintf(stderr, "spardl-bench: cannot create %s: %m\n", o->csv);
			return 1;
		}
		fprintf(csv, "ranks,count,density,k,algo,teams,time_ms,srs_ms,sag_ms,ag_ms,merge_ms,rs_ms,rag_ms,"
			     "local_ms,bytes_per_rank,messages_per_rank,speedup_vs_dense,oktopk_ms,speedup_vs_oktopk,"
			     "volume_over_lower_bound,exact,alpha_s,beta_Bps,gamma_s,gamma_pair_s,ranks_per_node\n");
	}
	if (o->json)
		printf("{\"model\": {\"alpha_s\": %g, \"beta_Bps\": %g, \"gamma_s\": %g, \"gamma_pair_s\": %g, "
		       "\"ranks_per_node\": %d}, \"points\": [",
		       o->model.alpha, o->model.beta, o->model.gamma, o->model.gamma_pair, o->model.ranks_per_node);
	else
		printf("# spardl-bench --simulate: alpha %g s, beta %g B/s (%.1f Gb/s), gamma %g s/element, "
		       "gamma_pair %g s/pair, %d ranks per node\n"
		       "# messages at their schedule bounds; times in ms on the rank that finishes last; word = 4 B\n",
		       o->model.alpha, o->model.beta, o->model.beta * 8 / 1e9, o->model.gamma, o->model.gamma_pair,
		       o->model.ranks_per_node);
	for (q = 0; q < o->nranks; q++) {
		int p = o->ranks[q], nv = expand_algos(o, p, vars, MAX_LIST, err, sizeof(err));

		if (nv < 0) {
			fprintf(stderr, "spardl-bench: %s\n", err);
			ret = 2;
			goto out;
		}
		for (i = 0; i < o->ncounts; i++) {
			for (j = 0; j < o->ndens; j++) {
				size_t n = o->counts[i];
				double d = o->dens[j], kk = ceil(d * (double)n), dense = 0, okt = oktopk_cost(p, kk, &o->model);

				if (kk < 1)
					kk = 1;
				if (!o->json)
					printf("\n# P=%d n=%zu density %g k=%.0f: Ok-Topk's published cost %.4f ms; lower "
					       "bound %.0f B per rank\n%-30s %5s %10s %8s %8s %8s %8s %8s %8s %8s %12s %8s %9s %9s %6s\n",
					       p, n, d, kk, okt * 1e3, lower_bound_bytes(p, kk), "algo", "teams", "time_ms",
					       ph[0], ph[1], ph[2], ph[3], ph[4], ph[5], ph[6], "bytes/rank", "msgs",
					       "vs_dense", "vs_oktopk", "vol/lb");
				for (k = 0; k < nv; k++) {
					struct spardl_plan_params pp;
					struct spardl_sim_result r;

					plan_params(&vars[k], n, d, &pp);
					ret = spardl_simulate(&pp, p, &o->model, &r);
					if (ret) {
						fprintf(stderr, "spardl-bench: simulating %s at P=%d, n=%zu, density %g: %s\n",
							vars[k].label, p, n, d, spardl_last_error());
						ret = 1;
						goto out;
					}
					if (k == 0)
						dense = r.time;
					if (o->json) {
						printf("%s\n  {\"ranks\": %d, \"count\": %zu, \"density\": %g, \"algo\": \"%s\", "
						       "\"teams\": %d, \"time_ms\": %.6f, \"phase_ms\": {",
						       first ? "" : ",", p, n, d, vars[k].label, r.teams, r.time * 1e3);
						for (a = 0; a < 7; a++)
							printf("%s\"%s\": %.6f", a ? ", " : "", ph[a], r.phase_time[a] * 1e3);
						printf("}, \"bytes_per_rank\": %.0f, \"messages_per_rank\": %.0f, "
						       "\"speedup_vs_dense\": %.4f, \"oktopk_ms\": %.6f, \"volume_over_lower_bound\": %.4f, "
						       "\"exact\": %d}",
						       r.bytes_per_rank, r.messages_per_rank, r.time > 0 ? dense / r.time : 0,
						       okt * 1e3, r.bytes_per_rank / lower_bound_bytes(p, kk), r.exact);
						first = 0;
					} else {
						printf("%-30s %5d %10.4f", vars[k].label, r.teams, r.time * 1e3);
						for (a = 0; a < 7; a++)
							printf(" %8.4f", r.phase_time[a] * 1e3);
						printf(" %12.0f %8.0f %8.2fx %8.2fx %6.2f%s\n", r.bytes_per_rank,
						       r.messages_per_rank, r.time > 0 ? dense / r.time : 0,
						       r.time > 0 ? okt / r.time : 0, r.bytes_per_rank / lower_bound_bytes(p, kk),
						       r.exact ? "" : " (symmetric)");
					}
					if (csv) {
						fprintf(csv, "%d,%zu,%g,%.0f,%s,%d,%.6f", p, n, d, kk, vars[k].label, r.teams,
							r.time * 1e3);
						for (a = 0; a < 7; a++)
							fprintf(csv, ",%.6f", r.phase_time[a] * 1e3);
						fprintf(csv, ",%.0f,%.0f,%.4f,%.6f,%.4f,%.4f,%d,%g,%g,%g,%g,%d\n", r.bytes_per_rank,
							r.messages_per_rank, r.time > 0 ? dense / r.time : 0, okt * 1e3,
							r.time > 0 ? okt / r.time : 0, r.bytes_per_rank / lower_bound_bytes(p, kk),
							r.exact, o->model.alpha, o->model.beta, o->model.gamma,
							o->model.gamma_pair, o->model.ranks_per_node);
					}
				}
			}
		}
	}
	if (o->json)
		printf("\n]}\n");
out:
	if (csv && fclose(csv)) {
		fprintf(stderr, "spardl-bench: writing %s: %m\n", o->csv);
		ret = 1;
	}
	return ret;
}

/* ---------------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: spardl-bench [options]        (one rank; start it under spardl-run, mpirun, srun...)\n"
		"       spardl-bench --simulate --ranks LIST [options]   (no ranks needed)\n"
		"A sweep over counts x densities x algorithms; dense runs first at each count as the baseline.\n"
		"  -n, --count LIST  gradient elements, comma list; 2^N allowed (default 4194304)\n"
		"  -d, --density LIST kept fractions in (0, 1] (default 0.01)\n"
		"  --algos LIST      spardl[:teams=T|auto][:sag=bruck|recursive][:srs=batched|sequential],\n"
		"                    spardl:teams=every (each divisor of the size), spardl-seq, spardl-rsag,\n"
		"                    topka, gtopk, dense, or all (every one the size allows) (default spardl)\n"
		"  --teams T, --sag S, --srs S   defaults of the spardl entries (1, bruck, batched)\n"
		"  --iters I         timed calls per point (default 20)\n"
		"  --warmup W        untimed calls first (default 8: past the calls in which a plan times its\n"
		"                    output's store types, SPARDL_STREAM_OUTPUT=auto)\n"
		"  --check           check every result (default): conservation, every rank the same result,\n"
		"                    at density 1 the exact sum; --no-check skips\n"
		"  --csv FILE        every point as a CSV row too\n"
		"  --json            one JSON object instead of the table\n"
		"  --progress, --no-progress   a progress line on stderr (default: when it is a terminal)\n"
		"  --data D          normal (default): N(0,1) floats, another window of a 2n pool each call;\n"
		"                    int: integers (sigma 1000). --check always checks on integers (exact sums)\n"
		"  --floor           also time the streaming floor at each count: c[i] += a[i] over n floats\n"
		"                    and a memset of n floats, every rank at once; prints each time over it\n"
		"  --seed S          data seed (default 1)\n"
		"simulation (spardl_simulate(): the compiled schedules on a virtual clock):\n"
		"  --simulate        simulate instead of running; --ranks LIST gives the sizes (up to 4096 and more)\n"
		"  --alpha S         seconds per message between nodes (default 2e-6)\n"
		"  --link-gbps G     NIC bandwidth per node in Gbit/s (default 100), or --beta B in bytes/s\n"
		"  --gamma S         seconds per gradient element of a streaming pass (default 0)\n"
		"  --gamma-pair S    seconds per index-value pair handled (default 0)\n"
		"  --ranks-per-node R   ranks sharing one NIC (default 1)\n"
		"examples: spardl-run -n 4 spardl-bench --algos all -n 2^20,2^22 -d 0.001,0.01 --csv out.csv\n"
		"          spardl-bench --simulate --ranks 256 -n 25000000 -d 0.01 --algos all --link-gbps 100\n");
}

static int parse_counts(const char *arg, size_t *out, int *n)
{
	char buf[512], *save = NULL, *tok, *end;

	snprintf(buf, sizeof(buf), "%s", arg);
	*n = 0;
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		unsigned long long v;

		if (*n == MAX_LIST)
			return -1;
		if (!strncmp(tok, "2^", 2)) {
			v = strtoull(tok + 2, &end, 10);
			if (*end || v > 40)
				return -1;
			v = 1ull << v;
		} else {
			v = strtoull(tok, &end, 0);
			if (*end)
				return -1;
		}
		if (!v)
			return -1;
		out[(*n)++] = (size_t)v;
	}
	return *n ? 0 : -1;
}

static int parse_doubles(const char *arg, double *out, int *n)
{
	char buf[512], *save = NULL, *tok, *end;

	snprintf(buf, sizeof(buf), "%s", arg);
	*n = 0;
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		double v = strtod(tok, &end);

		if (*end || !(v > 0 && v <= 1) || *n == MAX_LIST)
			return -1;
		out[(*n)++] = v;
	}
	return *n ? 0 : -1;
}

static int parse_ints(const char *arg, int *out, int *n)
{
	char buf[512], *save = NULL, *tok, *end;

	snprintf(buf, sizeof(buf), "%s", arg);
	*n = 0;
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		long v = strtol(tok, &end, 10);

		if (*end || v < 1 || v > (1 << 20) || *n == MAX_LIST)
			return -1;
		out[(*n)++] = (int)v;
	}
	return *n ? 0 : -1;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "algos", required_argument, NULL, 'a' },  { "count", required_argument, NULL, 'n' },
		{ "density", required_argument, NULL, 'd' }, { "teams", required_argument, NULL, 't' },
		{ "sag", required_argument, NULL, 'S' },    { "srs", required_argument, NULL, 'R' },
		{ "iters", required_argument, NULL, 'i' },  { "warmup", required_argument, NULL, 'w' },
		{ "check", no_argument, NULL, 'K' },        { "no-check", no_argument, NULL, 'C' },
		{ "seed", required_argument, NULL, 's' },   { "json", no_argument, NULL, 'j' },
		{ "csv", required_argument, NULL, 'c' },    { "progress", no_argument, NULL, 'p' },
		{ "no-progress", no_argument, NULL, 'P' },  { "simulate", no_argument, NULL, 'M' },
		{ "ranks", required_argument, NULL, 'r' },  { "alpha", required_argument, NULL, 'A' },
		{ "beta", required_argument, NULL, 'B' },   { "link-gbps", required_argument, NULL, 'L' },
		{ "gamma", required_argument, NULL, 'G' },  { "gamma-pair", required_argument, NULL, 'g' },
		{ "ranks-per-node", required_argument, NULL, 'N' }, { "help", no_argument, NULL, 'h' },
		{ "data", required_argument, NULL, 'D' },   { "floor", no_argument, NULL, 'F' },
		{ NULL, 0, NULL, 0 },
	};
	struct opts o;
	char *end;
	int c;

	memset(&o, 0, sizeof(o));
	o.counts[0] = 4194304;
	o.ncounts = 1;
	o.dens[0] = 0.01;
	o.ndens = 1;
	snprintf(o.algos, sizeof(o.algos), "spardl");
	o.teams = 1;
	o.iters = 20;
	o.warmup = 8;
	o.check = 1;
	o.seed = 1;
	o.progress = -1;
	o.normal = 1;
	spardl_sim_model_init(&o.model);
	while ((c = getopt_long(argc, argv, "n:d:h", lo, NULL)) != -1) {
		switch (c) {
		case 'a':
			snprintf(o.algos, sizeof(o.algos), "%s", optarg);
			break;
		case 'n':
			if (parse_counts(optarg, o.counts, &o.ncounts))
				goto bad;
			break;
		case 'd':
			if (parse_doubles(optarg, o.dens, &o.ndens))
				goto bad;
			break;
		case 't':
			if (!strcmp(optarg, "auto")) {
				o.teams = 0;
				break;
			}
			o.teams = (int)strtol(optarg, &end, 10);
			if (*end || o.teams < 1)
				goto bad;
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
			o.iters = (int)strtol(optarg, &end, 10);
			if (*end || o.iters < 1)
				goto bad;
			break;
		case 'w':
			o.warmup = (int)strtol(optarg, &end, 10);
			if (*end || o.warmup < 0)
				goto bad;
			break;
		case 'K':
			o.check = 1;
			break;
		case 'C':
			o.check = 0;
			break;
		case 's':
			o.seed = strtoull(optarg, &end, 0);
			if (*end)
				goto bad;
			break;
		case 'j':
			o.json = 1;
			break;
		case 'c':
			o.csv = optarg;
			break;
		case 'p':
			o.progress = 1;
			break;
		case 'P':
			o.progress = 0;
			break;
		case 'M':
			o.simulate = 1;
			break;
		case 'D':
			if (strcmp(optarg, "normal") && strcmp(optarg, "int"))
				goto bad;
			o.normal = !strcmp(optarg, "normal");
			break;
		case 'F':
			o.floor = 1;
			break;
		case 'r':
			if (parse_ints(optarg, o.ranks, &o.nranks))
				goto bad;
			break;
		case 'A':
			o.model.alpha = strtod(optarg, &end);
			if (*end || !(o.model.alpha >= 0))
				goto bad;
			break;
		case 'B':
			o.model.beta = strtod(optarg, &end);
			if (*end || !(o.model.beta > 0))
				goto bad;
			break;
		case 'L':
			o.model.beta = strtod(optarg, &end) * 1e9 / 8;
			if (*end || !(o.model.beta > 0))
				goto bad;
			break;
		case 'G':
			o.model.gamma = strtod(optarg, &end);
			if (*end || !(o.model.gamma >= 0))
				goto bad;
			break;
		case 'g':
			o.model.gamma_pair = strtod(optarg, &end);
			if (*end || !(o.model.gamma_pair >= 0))
				goto bad;
			break;
		case 'N':
			o.model.ranks_per_node = (int)strtol(optarg, &end, 10);
			if (*end || o.model.ranks_per_node < 1)
				goto bad;
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
	if (o.simulate) {
		if (!o.nranks) {
			fprintf(stderr, "spardl-bench: --simulate needs --ranks LIST (e.g. --ranks 8,64,256)\n");
			return 2;
		}
		/* Errors are printed here once, with the point that caused them. */
		setenv("SPARDL_DEBUG", "none", 0);
		return simulate(&o);
	}
	if (o.nranks) {
		fprintf(stderr, "spardl-bench: --ranks is for --simulate; a run takes its size from its launcher\n");
		return 2;
	}
	return sweep(&o);
bad:
	fprintf(stderr, "spardl-bench: bad value '%s' for option %s\n", optarg, argv[optind - 1]);
	usage(stderr);
	return 2;
}
