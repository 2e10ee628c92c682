/* SPDX-License-Identifier: MIT */
/* Multi-process test of collective error paths: every rank gets the error, nothing hangs, and the communicator survives. */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <spardl/spardl.h>

#include "cuda.h"
#include "mp_common.h"

/* Seconds; set before the communicator exists, so every wait is bounded. */
#define TIMEOUT_S 3
/* What any single case may take: one timeout each way plus slack. */
#define LIMIT_MS (2 * TIMEOUT_S * 1000 + 2000)

static int rank, size;
static int failures, passes;

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void result(const char *tag, int ok, const char *fmt, ...)
{
	char why[1400] = "";
	va_list ap;

	if (fmt) {
		va_start(ap, fmt);
		vsnprintf(why, sizeof(why), fmt, ap);
		va_end(ap);
	}
	if (ok) {
		passes++;
		printf("rank %d: PASS %s%s%s\n", rank, tag, *why ? ": " : "", why);
	} else {
		failures++;
		printf("rank %d: FAIL %s: %s\n", rank, tag, why);
	}
	fflush(stdout);
}

/* Integer values in [-50, 50]: every sum over ranks is exact in float. */
static void gen(float *g, size_t n, int call, int w)
{
	for (size_t i = 0; i < n; i++) {
		uint64_t r = mix((uint64_t)call * 7919u + (uint64_t)w * 104729u + i * 31u + 1);

		g[i] = (r % 3 == 0) ? 0.0f : (float)((int)((r >> 8) % 101) - 50);
	}
}

static void base(struct spardl_plan_params *pp)
{
	spardl_plan_params_init(pp);
	pp->count = 1000;
	pp->density = 0.01;
}

/*
 * Collective: spardl_plan_create() with pp must fail on this rank with one
 * of the codes in want (0-terminated), within LIMIT_MS, leave plan_out
 * alone and name every string in needles (NULL-terminated).
 */
static void expect_error(struct spardl_comm *comm, const char *tag, const struct spardl_plan_params *pp,
			 const int *want, const char *const *needles)
{
	struct spardl_plan *plan = (void *)1;
	int64_t t0 = now_ms(), dt;
	int ret = spardl_plan_create(comm, pp, &plan), ok = 0;
	char msg[1100];

	dt = now_ms() - t0;
	snprintf(msg, sizeof(msg), "%s", spardl_last_error());
	for (const int *w = want; *w; w++)
		ok |= ret == *w;
	if (!ok) {
		result(tag, 0, "returned %d (%s), expected %d (%s); message: %s", ret, spardl_strerror(ret), want[0],
		       spardl_strerror(want[0]), msg);
		if (!ret && plan != (void *)1)
			spardl_plan_destroy(plan);
		return;
	}
	if (plan != (void *)1) {
		result(tag, 0, "plan_out was written on failure");
		return;
	}
	if (dt > LIMIT_MS) {
		result(tag, 0, "the error took %lld ms (limit %d)", (long long)dt, LIMIT_MS);
		return;
	}
	for (const char *const *n = needles; *n; n++) {
		if (!strstr(msg, *n)) {
			result(tag, 0, "message lacks \"%s\": %s", *n, msg);
			return;
		}
	}
	result(tag, 1, "%s in %lld ms: %s", spardl_strerror(ret), (long long)dt, msg);
}

#define CODES(...) ((const int[]){ __VA_ARGS__, 0 })
#define WORDS(...) ((const char *const[]){ __VA_ARGS__, NULL })

/* A valid plan must reduce exactly: at density 1 the result is the sum. */
static void expect_exact_sum(struct spardl_comm *comm, const char *tag, const struct spardl_plan_params *in)
{
	struct spardl_plan_params pp = *in;
	struct spardl_plan *plan = NULL, *dense = NULL;
	size_t n = pp.count, i;
	float *g = malloc(n * sizeof(float)), *want = calloc(n, sizeof(float)), *tmp = malloc(n * sizeof(float));
	const void *resv;
	int ret, call, w;

	pp.density = 1.0;
	pp.average = 0;
	ret = spardl_plan_create(comm, &pp, &plan);
	if (ret) {
		result(tag, 0, "plan_create: %s: %s", spardl_strerror(ret), spardl_last_error());
		goto out;
	}
	pp.algo = SPARDL_ALGO_DENSE;
	ret = spardl_plan_create(comm, &pp, &dense);
	pp.algo = in->algo;
	if (ret) {
		result(tag, 0, "dense plan_create: %s: %s", spardl_strerror(ret), spardl_last_error());
		goto out;
	}
	for (call = 0; call < 2; call++) {
		memset(want, 0, n * sizeof(float));
		for (w = 0; w < size; w++) {
			gen(tmp, n, call, w);
			for (i = 0; i < n; i++)
				want[i] += tmp[i];
		}
		gen(g, n, call, rank);
		ret = spardl_allreduce(plan, g);
		if (ret) {
			result(tag, 0, "call %d: allreduce: %s: %s", call, spardl_strerror(ret), spardl_last_error());
			goto out;
		}
		for (i = 0; i < n; i++) {
			if (g[i] != want[i]) {
				result(tag, 0, "call %d: element %zu is %g, the sum is %g", call, i, g[i], want[i]);
				goto out;
			}
		}
		/* Residuals may be non-zero on single ranks (an entry whose sum
		 * is 0 is not delivered), but they must cancel over the ranks. */
		ret = spardl_plan_residual(plan, &resv);
		if (ret) {
			result(tag, 0, "call %d: residual: %s", call, spardl_last_error());
			goto out;
		}
		memcpy(tmp, resv, n * sizeof(float));
		ret = spardl_allreduce(dense, tmp);
		if (ret) {
			result(tag, 0, "call %d: dense sum of the residuals: %s", call, spardl_last_error());
			goto out;
		}
		for (i = 0; i < n; i++) {
			if (tmp[i] != 0.0f) {
				result(tag, 0, "call %d: the residuals sum to %g at %zu, not 0", call, tmp[i], i);
				goto out;
			}
		}
	}
	result(tag, 1, NULL);
out:
	spardl_plan_destroy(plan);
	spardl_plan_destroy(dense);
	free(g);
	free(want);
	free(tmp);
}

/* Smallest team count above 1 that does not divide size. */
static int non_divisor(int p)
{
	int t = 2;

	while (p % t == 0)
		t++;
	return t;
}

static void mismatch_cases(struct spardl_comm *comm)
{
	struct spardl_plan_params pp;
	const int odd = 1; /* the rank that differs */

	base(&pp);
	pp.count = rank == odd ? 1001 : 1000;
	expect_error(comm, "count differs on rank 1", &pp, CODES(-SPARDL_ERR_MISMATCH), WORDS("'count'", "rank 1"));

	base(&pp);
	pp.density = rank == odd ? 0.02 : 0.01;
	expect_error(comm, "density differs on rank 1", &pp, CODES(-SPARDL_ERR_MISMATCH), WORDS("'density'", "rank 1"));

	/* Differing in the last bit only. */
	base(&pp);
	pp.density = rank == size - 1 ? nextafter(0.01, 1.0) : 0.01;
	expect_error(comm, "density differs in one ulp on the last rank", &pp, CODES(-SPARDL_ERR_MISMATCH),
		     WORDS("'density'"));

	base(&pp);
	pp.algo = rank == odd ? SPARDL_ALGO_TOPKA : SPARDL_ALGO_SPARDL;
	expect_error(comm, "algo differs on rank 1", &pp, CODES(-SPARDL_ERR_MISMATCH), WORDS("'algo'", "rank 1"));

	base(&pp);
	pp.teams = rank == odd ? 2 : 1;
	expect_error(comm, "teams differs on rank 1", &pp, CODES(-SPARDL_ERR_MISMATCH), WORDS("'teams'"));

	base(&pp);
	pp.teams = 2;
	pp.sag = rank == odd ? SPARDL_SAG_RECURSIVE : SPARDL_SAG_BRUCK;
	expect_error(comm, "sag differs on rank 1", &pp, CODES(-SPARDL_ERR_MISMATCH), WORDS("'sag'"));

	base(&pp);
	pp.srs = rank == 0 ? SPARDL_SRS_SEQUENTIAL : SPARDL_SRS_BATCHED;
	expect_error(comm, "srs differs on rank 0", &pp, CODES(-SPARDL_ERR_MISMATCH), WORDS("'srs'"));

	base(&pp);
	pp.average = rank != odd;
	expect_error(comm, "average differs on rank 1", &pp, CODES(-SPARDL_ERR_MISMATCH), WORDS("'average'"));

	base(&pp);
	pp.residual = rank != odd;
	expect_error(comm, "residual differs on rank 1", &pp, CODES(-SPARDL_ERR_MISMATCH), WORDS("'residual'"));
}

static void invalid_cases(struct spardl_comm *comm)
{
	struct spardl_plan_params pp;
	char tag[120];

	/* The same invalid value everywhere. */
	base(&pp);
	pp.teams = non_divisor(size);
	snprintf(tag, sizeof(tag), "teams %d does not divide %d", pp.teams, size);
	expect_error(comm, tag, &pp, CODES(-EINVAL), WORDS("teams", "divide"));

	base(&pp);
	pp.teams = size + 1;
	snprintf(tag, sizeof(tag), "teams %d above the size", pp.teams);
	expect_error(comm, tag, &pp, CODES(-EINVAL), WORDS("teams"));

	if (size % 3 == 0) {
		base(&pp);
		pp.teams = 3;
		pp.sag = SPARDL_SAG_RECURSIVE;
		expect_error(comm, "R-SAG with 3 teams", &pp, CODES(-EINVAL), WORDS("R-SAG", "power-of-two"));
	} else {
		printf("rank %d: SKIP R-SAG with a non-power-of-two team count: every divisor of %d is a power of two\n",
		       rank, size);
	}

	base(&pp);
	pp.algo = SPARDL_ALGO_GTOPK;
	if (is_pow2(size)) {
		expect_exact_sum(comm, "gTopk works on a power-of-two size", &pp);
	} else {
		snprintf(tag, sizeof(tag), "gTopk with %d ranks", size);
		expect_error(comm, tag, &pp, CODES(-EINVAL), WORDS("gTopk", "power-of-two"));
	}

	/* An invalid value on one rank only: every rank hears of it. */
	base(&pp);
	pp.density = rank == 1 ? 0.0 : 0.01;
	expect_error(comm, "density 0 on rank 1 only", &pp, CODES(-EINVAL), WORDS("density", "rank 1"));

	base(&pp);
	pp.density = rank == size - 1 ? NAN : 0.01;
	snprintf(tag, sizeof(tag), "density NaN on rank %d only", size - 1);
	expect_error(comm, tag, &pp, CODES(-EINVAL), WORDS("density"));

	base(&pp);
	pp.count = rank == 0 ? 0 : 1000;
	expect_error(comm, "count 0 on rank 0 only", &pp, CODES(-EINVAL), WORDS("count is 0", "rank 0"));

	base(&pp);
	pp.teams = rank == 1 ? non_divisor(size) : 1;
	expect_error(comm, "non-dividing teams on rank 1 only", &pp, CODES(-EINVAL), WORDS("teams", "rank 1"));

	base(&pp);
	pp.mem_type = rank == 2 ? SPARDL_MEM_CUDA : SPARDL_MEM_HOST;
	/* -ENODEV without a usable device; with one, the ranks disagree. */
	{
		char why[200];

		if (spardl_cuda_probe(why, sizeof(why)))
			expect_error(comm, "SPARDL_MEM_CUDA on rank 2 only", &pp, CODES(-ENODEV),
				     WORDS("SPARDL_MEM_CUDA", "no usable CUDA device"));
		else
			expect_error(comm, "SPARDL_MEM_CUDA on rank 2 only", &pp, CODES(-SPARDL_ERR_MISMATCH),
				     WORDS("mem_type"));
	}

	base(&pp);
	pp.algo = rank == 3 ? (enum spardl_algo)9 : SPARDL_ALGO_SPARDL;
	expect_error(comm, "unknown algo on rank 3 only", &pp, CODES(-EINVAL), WORDS("algo 9"));
}

/* Rank 2 runs out of file descriptors while the plan is being created (shm:
 * its receive region's memfd; verbs: its endpoint's event channel). Every
 * rank must fail with rank 2's real cause, at once, and the communicator
 * must stay in step for the plans that follow. */
static void creation_failure_case(struct spardl_comm *comm)
{
	const char *tag = "rank 2 out of file descriptors while the plan is created";
	struct spardl_plan_params pp;
	struct rlimit old, low;
	int lowest = -1;

	if (rank == 2) {
		lowest = dup(0);
		if (lowest >= 0)
			close(lowest);
		getrlimit(RLIMIT_NOFILE, &old);
		low = old;
		low.rlim_cur = (rlim_t)lowest;
		if (lowest < 0 || setrlimit(RLIMIT_NOFILE, &low)) {
			result(tag, 0, "cannot lower RLIMIT_NOFILE");
			lowest = -1;
		}
	}
	base(&pp);
	expect_error(comm, tag, &pp, CODES(-EMFILE),
		     rank == 2 ? WORDS("Too many open files") : WORDS("rank 2 could not", "Too many open files"));
	if (rank == 2 && lowest >= 0)
		setrlimit(RLIMIT_NOFILE, &old);
}

static void survivor_cases(struct spardl_comm *comm)
{
	struct spardl_plan_params pp;
	char tag[120];
	int d;

	base(&pp);
	expect_exact_sum(comm, "after the failures: spardl, 1 team, exact sum", &pp);
	for (d = 2; d <= size; d++) {
		if (size % d)
			continue;
		base(&pp);
		pp.teams = d;
		snprintf(tag, sizeof(tag), "after the failures: spardl, %d teams, exact sum", d);
		expect_exact_sum(comm, tag, &pp);
		break;
	}
	base(&pp);
	pp.algo = SPARDL_ALGO_DENSE;
	expect_exact_sum(comm, "after the failures: dense, exact sum", &pp);
	base(&pp);
	pp.algo = SPARDL_ALGO_TOPKA;
	expect_exact_sum(comm, "after the failures: topka, exact sum", &pp);
}

/* Rank size-1 calls late: everyone's call times out, the communicator lives on. */
static void stalled_peer_case(struct spardl_comm *comm)
{
	const char *tag = "peer stalls past the timeout";
	struct spardl_plan_params pp;
	struct spardl_plan *plan = NULL;
	float *g;
	int64_t t0, dt;
	int ret, late = size - 1;
	char msg[1100];

	base(&pp);
	pp.density = 0.1;
	ret = spardl_plan_create(comm, &pp, &plan);
	if (ret) {
		result(tag, 0, "plan_create: %s: %s", spardl_strerror(ret), spardl_last_error());
		return;
	}
	g = malloc(pp.count * sizeof(float));
	gen(g, pp.count, 0, rank);
	if (rank == late)
		usleep((TIMEOUT_S * 1000 + 1000) * 1000);
	t0 = now_ms();
	ret = spardl_allreduce(plan, g);
	dt = now_ms() - t0;
	snprintf(msg, sizeof(msg), "%s", spardl_last_error());
	/* A rank that timed out first may leave the plan (on verbs its QPs
	 * disconnect); the ranks still waiting for it then see that instead. */
	if (ret == -ECONNRESET && strstr(msg, "waiting for rank") && dt <= LIMIT_MS)
		result(tag, 1, "%s in %lld ms (a rank that timed out left first): %s", spardl_strerror(ret),
		       (long long)dt, msg);
	else if (ret != -ETIMEDOUT)
		result(tag, 0, "returned %d (%s), expected -ETIMEDOUT; message: %s", ret, spardl_strerror(ret), msg);
	else if (dt > LIMIT_MS || dt < TIMEOUT_S * 1000 - 100)
		result(tag, 0, "the timeout took %lld ms (SPARDL_TIMEOUT=%d): %s", (long long)dt, TIMEOUT_S, msg);
	else if (!strstr(msg, "timed out") || !strstr(msg, "waiting for rank"))
		result(tag, 0, "message does not say which rank it waited for: %s", msg);
	else
		result(tag, 1, "%s in %lld ms: %s", spardl_strerror(ret), (long long)dt, msg);
	free(g);
	spardl_plan_destroy(plan);
	/* The late rank is still waiting; give it time to finish before the
	 * next collective, which must not time out in the bootstrap. */
	if (rank != late)
		usleep(2000 * 1000);
}

static void summary(void)
{
	printf("rank %d: %d passed, %d failed\n", rank, passes, failures);
	fflush(stdout);
}

/* Last: rank size-1 leaves instead of calling; the others must fail in time. */
static void dead_peer_case(struct spardl_comm *comm)
{
	const char *tag = "peer exits mid-call";
	struct spardl_plan_params pp;
	struct spardl_plan *plan = NULL;
	float *g;
	int64_t t0, dt;
	int ret, dead = size - 1;
	char msg[1100], name[32], *tag2 = "further call on the failed plan";

	base(&pp);
	pp.density = 0.1;
	ret = spardl_plan_create(comm, &pp, &plan);
	if (ret) {
		result(tag, 0, "plan_create: %s: %s", spardl_strerror(ret), spardl_last_error());
		return;
	}
	if (rank == dead) {
		printf("rank %d: exits now, without calling spardl_allreduce\n", rank);
		summary();
		/* spardl-run counts a 0 status as success; a rank that already
		 * failed a check says so. */
		_exit(failures ? 1 : 0);
	}
	g = malloc(pp.count * sizeof(float));
	gen(g, pp.count, 0, rank);
	t0 = now_ms();
	ret = spardl_allreduce(plan, g);
	dt = now_ms() - t0;
	snprintf(msg, sizeof(msg), "%s", spardl_last_error());
	snprintf(name, sizeof(name), "rank %d", dead);
	if (ret != -ETIMEDOUT && ret != -ECONNRESET)
		result(tag, 0, "returned %d (%s), expected -ETIMEDOUT or -ECONNRESET; message: %s", ret,
		       spardl_strerror(ret), msg);
	else if (dt > LIMIT_MS)
		result(tag, 0, "the error took %lld ms (limit %d): %s", (long long)dt, LIMIT_MS, msg);
	else if (!strstr(msg, name) && !strstr(msg, "waiting for rank"))
		result(tag, 0, "message names neither rank %d nor the peer waited for: %s", dead, msg);
	else
		result(tag, 1, "%s in %lld ms: %s", spardl_strerror(ret), (long long)dt, msg);

	t0 = now_ms();
	ret = spardl_allreduce(plan, g);
	dt = now_ms() - t0;
	if (ret != -SPARDL_ERR_PLAN_FAILED)
		result(tag2, 0, "returned %d (%s), expected -SPARDL_ERR_PLAN_FAILED; message: %s", ret,
		       spardl_strerror(ret), spardl_last_error());
	else if (dt > 1000)
		result(tag2, 0, "took %lld ms", (long long)dt);
	else
		result(tag2, 1, "%s", spardl_last_error());
	free(g);
	spardl_plan_destroy(plan);
}

int main(void)
{
	struct spardl_comm *comm;
	char v[16];

	snprintf(v, sizeof(v), "%d", TIMEOUT_S);
	setenv("SPARDL_TIMEOUT", v, 1);
	/* Each expected failure is logged at WARN otherwise. */
	setenv("SPARDL_DEBUG", "none", 0);
	comm = mp_comm_create();
	rank = spardl_comm_rank(comm);
	size = spardl_comm_size(comm);
	if (size < 4) {
		/* The cases name ranks up to 3. */
		fprintf(stderr, "mp_errors needs at least 4 ranks, got %d\n", size);
		spardl_comm_destroy(comm);
		return 1;
	}
	mismatch_cases(comm);
	invalid_cases(comm);
	stalled_peer_case(comm);
	creation_failure_case(comm);
	survivor_cases(comm);
	dead_peer_case(comm);
	spardl_comm_destroy(comm);
	summary();
	return failures ? 1 : 0;
}
