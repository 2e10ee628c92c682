/* SPDX-License-Identifier: MIT */
/* A peer dies before each step of a call (or, with --local, its call fails there as a local transport error would): the others fail or finish correctly, every failed rank's residual holds grad + old residual bit for bit, and a new plan resumes with nothing lost. */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <spardl/spardl.h>

#include <time.h>

#include "core.h"
#include "mp_common.h"
#include "reference.h"

struct config {
	const char *name;
	int algo, teams, sag, srs, residual;
	size_t n;
	double density;
};

static const struct config configs[] = {
	{ "spardl", SPARDL_ALGO_SPARDL, 1, SPARDL_SAG_BRUCK, SPARDL_SRS_BATCHED, 1, 2000, 0.05 },
	{ "spardl-2teams-bsag", SPARDL_ALGO_SPARDL, 2, SPARDL_SAG_BRUCK, SPARDL_SRS_SEQUENTIAL, 1, 2000, 0.05 },
	{ "spardl-2teams-rsag", SPARDL_ALGO_SPARDL, 2, SPARDL_SAG_RECURSIVE, SPARDL_SRS_BATCHED, 1, 2000, 0.05 },
	{ "topka", SPARDL_ALGO_TOPKA, 1, 0, 0, 1, 2000, 0.05 },
	{ "gtopk", SPARDL_ALGO_GTOPK, 1, 0, 0, 1, 2000, 0.05 },
	{ "dense", SPARDL_ALGO_DENSE, 1, 0, 0, 1, 2001, 1.0 },
	{ "spardl-no-residual", SPARDL_ALGO_SPARDL, 1, SPARDL_SAG_BRUCK, SPARDL_SRS_BATCHED, 0, 2000, 0.05 },
	/* Blocks long enough to be sampled: selections from the candidates,
	 * and at P = 2 the owner's list kept aside (plan_deferrable). */
	{ "spardl-sampled", SPARDL_ALGO_SPARDL, 1, SPARDL_SAG_BRUCK, SPARDL_SRS_BATCHED, 1, 300000, 0.01 },
	/* TopkA's own selection from the candidates: its zeros wait in
	 * pend_bits, set only once the call can no longer fail. */
	{ "topka-sampled", SPARDL_ALGO_TOPKA, 1, 0, 0, 1, 300000, 0.01 },
};
#define NCONFIGS ((int)(sizeof(configs) / sizeof(configs[0])))

#define VICTIM 1
#define FAIL_CALL 1

static int rank, size;

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
static int hook_step = -1;
/* --piece: before that piece of the step (a dense add run a piece at a time). */
static int hook_piece = -1;
static const struct spardl_plan *hook_plan;
/* --local: the victim stays; its call fails before hook_step instead. */
static int local;


/* Integer values in [-50, 50], a third zeros: every sum is exact. */
static void gen(float *g, size_t n, int call, int w, int salt)
{
	for (size_t i = 0; i < n; i++) {
		uint64_t r = mix((uint64_t)call * 7919u + (uint64_t)w * 104729u + i * 31u + (uint64_t)salt * 15485863u + 1);

		g[i] = (r % 3 == 0) ? 0.0f : (float)((int)((r >> 8) % 101) - 50);
	}
}

static int valid(const struct config *c, int p)
{
	return p % c->teams == 0 && (c->algo != SPARDL_ALGO_GTOPK || is_pow2(p)) &&
	       (c->sag != SPARDL_SAG_RECURSIVE || is_pow2(c->teams));
}

static void params(const struct config *c, int teams, struct spardl_plan_params *pp)
{
	spardl_plan_params_init(pp);
	pp->count = c->n;
	pp->density = c->density;
	pp->algo = c->algo;
	pp->teams = teams;
	pp->sag = c->sag;
	pp->srs = c->srs;
	pp->residual = c->residual;
	pp->average = 0;
}

/* The victim leaves in the middle of call FAIL_CALL, before step hook_step
 * (with --local, its call fails there). */
static int die_at_step(const struct spardl_plan *plan, uint64_t call, uint32_t step)
{
	if (plan == hook_plan && call == FAIL_CALL && (int)step == hook_step) {
		if (local)
			return -EIO;
		fflush(NULL);
		_exit(0);
	}
	return 0;
}

/* The same before piece hook_piece of step hook_step: the victim has
 * added and forwarded the pieces before it. */
static int die_at_piece(const struct spardl_plan *plan, uint64_t call, uint32_t step, uint32_t piece)
{
	return (int)piece == hook_piece ? die_at_step(plan, call, step) : 0;
}

static int first_diff(const float *a, const float *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (memcmp(&a[i], &b[i], sizeof(float)))
			return (int)i;
	return -1;
}

/* The first entry that is not +0.0f, or -1. */
static int first_nonzero(const float *a, size_t n)
{
	const float zero = 0.0f;

	for (size_t i = 0; i < n; i++)
		if (memcmp(&a[i], &zero, sizeof(float)))
			return (int)i;
	return -1;
}

/* What a failed call left in grad (buf; g its gradient): a failed in-place
 * call of a sparse algorithm with a residual moves grad into the residual
 * and leaves it zero (API.md); otherwise grad is kept. */
static void check_grad_after_failure(const struct config *c, const float *buf, const float *g, size_t n,
				     const char *what)
{
	int d;

	if (c->residual && c->algo != SPARDL_ALGO_DENSE) {
		d = first_nonzero(buf, n);
		mp_check(d < 0, "%s left grad non-zero at %d (its values are in the residual)", what, d);
	} else {
		d = first_diff(buf, g, n);
		mp_check(d < 0, "%s changed grad at %d", what, d);
	}
}

/* The survivors form a new communicator and a new plan, restore what they
 * saved, and run a call: nothing may be missing from the sums. */
static void resume(const struct config *c, int cfg_idx, int step, const float *saved)
{
	struct spardl_comm_params cp;
	struct spardl_comm *comm = NULL;
	struct spardl_plan_params pp;
	struct spardl_plan *plan = NULL, *dense = NULL;
	char addr[128];
	size_t n = c->n, i;
	float *g = malloc(n * sizeof(float)), *buf = malloc(n * sizeof(float)), *v = malloc(n * sizeof(float));
	const void *resv;
	int ret, d;

	spardl_comm_params_init(&cp);
	cp.field_mask = SPARDL_COMM_PARAM_RANK_SIZE | SPARDL_COMM_PARAM_BOOTSTRAP;
	cp.rank = local || rank < VICTIM ? rank : rank - 1;
	cp.size = local ? size : size - 1;
	/* spardl-run's pid names the job; the key is the job's, from the environment. */
	snprintf(addr, sizeof(addr), "unix:spardl-rollback-%d-%d-%d", (int)getppid(), cfg_idx, step);
	cp.bootstrap = addr;
	ret = spardl_comm_create(&cp, &comm);
	mp_check(!ret, "resume: comm_create of the survivors: %s", spardl_last_error());
	if (ret)
		goto out;
	d = valid(c, cp.size) ? c->teams : 1;
	params(c, d, &pp);
	if (!valid(c, cp.size))
		pp.algo = SPARDL_ALGO_SPARDL;
	ret = spardl_plan_create(comm, &pp, &plan);
	mp_check(!ret, "resume: plan_create: %s", spardl_last_error());
	params(c, 1, &pp);
	pp.algo = SPARDL_ALGO_DENSE;
	pp.density = 1.0;
	if (!ret)
		ret = spardl_plan_create(comm, &pp, &dense);
	if (ret)
		goto out;
	if (c->residual) {
		ret = spardl_plan_set_residual(plan, saved);
		mp_check(!ret, "resume: set_residual: %s", spardl_last_error());
	}
	gen(g, n, 3, rank, cfg_idx);
	memcpy(buf, g, n * sizeof(float));
	ret = spardl_allreduce(plan, buf);
	mp_check(!ret, "resume: allreduce: %s", spardl_last_error());
	if (ret)
		goto out;
	/* sum over survivors of (new residual - g - restored) + delivered == 0 */
	spardl_plan_residual(plan, &resv);
	for (i = 0; i < n; i++)
		v[i] = ((const float *)resv)[i] - g[i] - (c->residual ? saved[i] : 0.0f);
	ret = spardl_allreduce(dense, v);
	mp_check(!ret, "resume: dense sum: %s", spardl_last_error());
	for (i = 0; !ret && i < n; i++) {
		if (v[i] + buf[i] != 0.0f && c->residual) {
			mp_check(0, "resume: conservation broken at %zu: %g + %g", i, v[i], buf[i]);
			break;
		}
	}
out:
	spardl_plan_destroy(plan);
	spardl_plan_destroy(dense);
	spardl_comm_destroy(comm);
	free(g);
	free(buf);
	free(v);
}

static int run_rank(int cfg_idx, int step)
{
	const struct config *c = &configs[cfg_idx];
	struct ref_params rp = { .n = c->n, .density = c->density, .algo = c->algo, .teams = c->teams,
				 .sag = c->sag, .residual = c->residual, .average = 0 };
	struct spardl_plan_params pp;
	struct spardl_comm *comm;
	struct spardl_plan *plan = NULL;
	size_t n = c->n, i;
	float **g, **res, **out, *buf, *old, *want;
	const void *resv;
	int ret, w, call, d;
	int64_t t0;

	comm = mp_comm_create();
	rank = mp_rank = spardl_comm_rank(comm);
	size = spardl_comm_size(comm);
	rp.size = size;
	g = calloc((size_t)size, sizeof(*g));
	res = calloc((size_t)size, sizeof(*res));
	out = calloc((size_t)size, sizeof(*out));
	for (w = 0; w < size; w++) {
		g[w] = malloc(n * sizeof(float));
		res[w] = calloc(n, sizeof(float));
		out[w] = malloc(n * sizeof(float));
	}
	buf = malloc(n * sizeof(float));
	old = malloc(n * sizeof(float));
	want = malloc(n * sizeof(float));
	params(c, c->teams, &pp);
	/* The residual's zeros left pending whatever n is: a rollback writes them. */
	spardl_pend_min_n = 0;
	ret = spardl_plan_create(comm, &pp, &plan);
	if (ret) {
		fprintf(stderr, "rank %d: plan_create: %s\n", rank, spardl_last_error());
		return 1;
	}
	hook_plan = plan;
	hook_step = rank == VICTIM ? step : -1;
	if (hook_piece >= 0)
		spardl_exec_piece_hook = die_at_piece;
	else
		spardl_exec_step_hook = die_at_step;
	for (call = 0; call <= FAIL_CALL; call++) {
		for (w = 0; w < size; w++)
			gen(g[w], n, call, w, cfg_idx);
		spardl_plan_residual(plan, &resv);
		memcpy(old, resv, n * sizeof(float));
		memcpy(buf, g[rank], n * sizeof(float));
		ref_step(&rp, (const float *const *)g, res, out);
		t0 = now_ms();
		ret = spardl_allreduce(plan, buf);
		spardl_plan_residual(plan, &resv);
		if (call == FAIL_CALL)
			printf("rank %d: call %d returned %d after %lld ms\n", rank, call, ret, (long long)(now_ms() - t0));
		if (!ret) {
			/* The victim finished all its writes before it died: a
			 * complete, correct call. */
			d = first_diff(buf, out[rank], n);
			mp_check(d < 0, "call %d succeeded with a wrong result at %d", call, d);
			d = first_diff(resv, res[rank], n);
			mp_check(d < 0, "call %d succeeded with a wrong residual at %d", call, d);
			continue;
		}
		mp_check(call == FAIL_CALL, "call %d failed: %s", call, spardl_last_error());
		if (local && rank == VICTIM)
			mp_check(ret == -EIO, "call %d returned %s: %s", call, spardl_strerror(ret), spardl_last_error());
		else
			mp_check(ret == -ECONNRESET || ret == -ETIMEDOUT, "call %d returned %s: %s", call,
				 spardl_strerror(ret), spardl_last_error());
		printf("rank %d: call %d failed as rank %d %s before its step %d: %s\n", rank, call, VICTIM,
		       local ? "failed" : "died", step, spardl_last_error());
		/* Nothing lost: residual = grad + old residual, and grad is
		 * untouched or, where the residual keeps all of it, zero. */
		check_grad_after_failure(c, buf, g[rank], n, "the failed call");
		for (i = 0; i < n; i++)
			want[i] = c->residual ? g[rank][i] + old[i] : 0.0f;
		d = first_diff(resv, want, n);
		mp_check(d < 0, "after the failure the residual at %d is %g, grad + old residual is %g", d,
		      d < 0 ? 0.0 : (double)((const float *)resv)[d], d < 0 ? 0.0 : (double)want[d]);
		/* A later call on the failed plan keeps its gradient too. */
		gen(g[rank], n, call + 1, rank, cfg_idx);
		memcpy(buf, g[rank], n * sizeof(float));
		memcpy(old, resv, n * sizeof(float));
		ret = spardl_allreduce(plan, buf);
		mp_check(ret == -SPARDL_ERR_PLAN_FAILED, "the next call returned %s", spardl_strerror(ret));
		spardl_plan_residual(plan, &resv);
		for (i = 0; i < n; i++)
			want[i] = c->residual ? g[rank][i] + old[i] : 0.0f;
		d = first_diff(resv, want, n);
		mp_check(d < 0, "the call on the failed plan did not add its grad to the residual (at %d)", d);
		check_grad_after_failure(c, buf, g[rank], n, "the call on the failed plan");
		break;
	}
	memcpy(old, resv, n * sizeof(float));
	spardl_exec_step_hook = NULL;
	spardl_exec_piece_hook = NULL;
	t0 = now_ms();
	spardl_plan_destroy(plan);
	spardl_comm_destroy(comm);
	printf("rank %d: old plan and communicator destroyed in %lld ms\n", rank, (long long)(now_ms() - t0));
	fflush(stdout);
	resume(c, cfg_idx, step, old);
	for (w = 0; w < size; w++) {
		free(g[w]);
		free(res[w]);
		free(out[w]);
	}
	free(g);
	free(res);
	free(out);
	free(buf);
	free(old);
	free(want);
	printf("rank %d: %s, victim step %d: %d checks, %d failures\n", rank, c->name, step, mp_checks, mp_failures);
	return mp_failures ? 1 : 0;
}

/* Steps of the victim's schedule, from the library's own compiler. */
/* With --piece: pieces[i], whether step i is a dense add run a piece at a
 * time (its one wait, its add's slot, in pieces of SPARDL_MAX_WRITE bytes,
 * and its one write forwarding it) with more than hook_piece pieces. */
static int victim_steps(const struct config *c, int p, char names[][24], int *pieces, int cap)
{
	struct spardl_sched_params sp = { .size = p, .rank = VICTIM, .n = c->n, .algo = c->algo, .teams = c->teams,
					  .sag = c->sag, .srs = c->srs, .residual = c->residual };
	const char *mw = getenv("SPARDL_MAX_WRITE");
	struct spardl_sched *s;
	int i, n;

	sp.max_write = mw ? strtoull(mw, NULL, 0) / 8 * 8 : 0;
	sp.k = (uint64_t)(c->density * (double)c->n + 0.999999);
	if (sp.k < 1)
		sp.k = 1;
	if (spardl_sched_compile(&sp, &s))
		return -1;
	n = (int)s->nsteps;
	/* A call fails only up to its quiesce step: what follows computes. */
	if (local && s->quiesce_step < s->nsteps)
		n = (int)s->quiesce_step + 1;
	for (i = 0; i < n && i < cap; i++) {
		const struct spardl_step *st = &s->steps[i];

		snprintf(names[i], 24, "%s %s %u", spardl_op_name(st->op.code), spardl_phase_name(st->op.phase),
			 st->op.round);
		pieces[i] = st->op.code == SPARDL_OP_DENSE_ADD && st->nwait == 1 && st->nwrite == 1 &&
			    s->waits[st->wait0] == st->op.slot && (int)s->rslots[st->op.slot].npieces > hook_piece;
	}
	spardl_sched_free(s);
	return n;
}

/* Runs every (config, victim step) under spardl-run; TAP on stdout. */
static int only = -1;

static int driver(const char *launcher, const char *self, int p, int quick)
{
	char names[256][24], np[16], stepbuf[16], cfgbuf[16], piecebuf[16], where[40];
	int cfg, st, n, tests = 0, bad = 0, pieces[256];

	snprintf(np, sizeof(np), "%d", p);
	for (cfg = 0; cfg < NCONFIGS; cfg++) {
		const struct config *c = &configs[cfg];

		if (!valid(c, p) || (quick && cfg != 0 && c->algo != SPARDL_ALGO_DENSE) || (only >= 0 && cfg != only))
			continue;
		n = victim_steps(c, p, names, pieces, 256);
		if (n < 0 || n > 256) {
			printf("not ok %d - %s: cannot compile the victim's schedule\n", ++tests, c->name);
			bad++;
			continue;
		}
		for (st = 0; st < n; st++) {
			pid_t pid;
			int status;

			if (hook_piece >= 0 && !pieces[st])
				continue;
			snprintf(stepbuf, sizeof(stepbuf), "%d", st);
			snprintf(cfgbuf, sizeof(cfgbuf), "%d", cfg);
			snprintf(piecebuf, sizeof(piecebuf), "%d", hook_piece);
			fflush(NULL);
			pid = fork();
			if (pid == 0) {
				/* The ranks' lines go to stderr: stdout is TAP. */
				if (dup2(2, 1) < 0)
					_exit(127);
				execl(launcher, launcher, "-n", np, "--timeout", "120", self, "--config", cfgbuf,
				      "--step", stepbuf, "--piece", piecebuf, local ? "--local" : (char *)NULL,
				      (char *)NULL);
				perror("exec spardl-run");
				_exit(127);
			}
			if (pid < 0 || waitpid(pid, &status, 0) != pid)
				status = -1;
			tests++;
			if (hook_piece >= 0)
				snprintf(where, sizeof(where), "piece %d of ", hook_piece);
			else
				where[0] = '\0';
			if (status == 0) {
				printf("ok %d - %s P=%d: rank %d %s before %sstep %d (%s)\n", tests, c->name, p, VICTIM,
				       local ? "fails" : "dies", where, st, names[st]);
			} else {
				printf("not ok %d - %s P=%d: rank %d %s before %sstep %d (%s): exit status 0x%x\n",
				       tests, c->name, p, VICTIM, local ? "fails" : "dies", where, st, names[st],
				       status);
				bad++;
			}
			fflush(stdout);
		}
	}
	if (!tests) {
		/* --piece with no step run a piece at a time: nothing was tested. */
		printf("not ok 1 - no step of the victim's schedule runs piece %d (set SPARDL_MAX_WRITE low enough)\n",
		       hook_piece);
		tests = bad = 1;
	}
	printf("1..%d\n", tests);
	return bad ? 1 : 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "driver", required_argument, NULL, 'd' }, { "config", required_argument, NULL, 'c' },
		{ "step", required_argument, NULL, 's' },   { "ranks", required_argument, NULL, 'n' },
		{ "quick", no_argument, NULL, 'q' },        { "only", required_argument, NULL, 'o' },
		{ "local", no_argument, NULL, 'l' },        { "piece", required_argument, NULL, 'p' },
		{ NULL, 0, NULL, 0 },
	};
	const char *launcher = NULL;
	int opt, cfg = -1, step = -1, p = 4, quick = 0;

	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (opt) {
		case 'd':
			launcher = optarg;
			break;
		case 'c':
			cfg = atoi(optarg);
			break;
		case 's':
			step = atoi(optarg);
			break;
		case 'n':
			p = atoi(optarg);
			break;
		case 'q':
			quick = 1;
			break;
		case 'l':
			local = 1;
			break;
		case 'o':
			only = atoi(optarg);
			break;
		case 'p':
			hook_piece = atoi(optarg);
			break;
		default:
			fprintf(stderr, "usage: %s --driver SPARDL_RUN [--ranks P] [--quick] [--only C] [--local] [--piece J] | --config C --step S [--piece J] [--local]\n",
				argv[0]);
			return 2;
		}
	}
	if (launcher) {
		char self[4096];
		ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);

		if (len <= 0) {
			perror("readlink /proc/self/exe");
			return 1;
		}
		self[len] = '\0';
		return driver(launcher, self, p, quick);
	}
	if (cfg < 0 || cfg >= NCONFIGS || step < 0) {
		fprintf(stderr, "%s: --config and --step are required under a launcher\n", argv[0]);
		return 2;
	}
	/* Each failed wait is decided quickly: the victim is gone at once. */
	setenv("SPARDL_TIMEOUT", "20", 0);
	setenv("SPARDL_DEBUG", "none", 0);
	return run_rank(cfg, step);
}
