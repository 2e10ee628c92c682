/* SPDX-License-Identifier: MIT */
/* Tests of spardl_comm_create()'s environment handling and of single-process plans: every error path returns a clear message quickly. */
#define _GNU_SOURCE
#include <check.h>

#include "unit.h"
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <spardl/spardl.h>

#include "config.h"
#include "cuda.h"

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Every variable spardl_comm_create() may read, so a test starts from a
 * known environment whatever launcher started the test run. */
static const char *const all_vars[] = {
	"SPARDL_RANK", "SPARDL_SIZE", "SPARDL_LOCAL_RANK", "SPARDL_LOCAL_SIZE", "SPARDL_BOOTSTRAP",
	"SPARDL_JOB_KEY", "SPARDL_TRANSPORT", "SPARDL_TIMEOUT",
	"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE",
	"OMPI_MCA_ess_base_jobid", "OMPI_MCA_orte_ess_jobid", "PMIX_NAMESPACE",
	"PMI_RANK", "PMI_SIZE",
	"SLURM_PROCID", "SLURM_NTASKS", "SLURM_JOB_ID", "SLURM_STEP_ID",
	"RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID",
};

static void clear_env(void)
{
	for (size_t i = 0; i < sizeof(all_vars) / sizeof(all_vars[0]); i++)
		unsetenv(all_vars[i]);
}

static void set(const char *name, const char *value)
{
	ck_assert_int_eq(setenv(name, value, 1), 0);
}

static void unix_addr(char *buf, size_t sz, const char *tag)
{
	static int counter;

	snprintf(buf, sz, "unix:spardl-test-comm-%d-%s-%d", (int)getpid(), tag, counter++);
}

/* spardl_comm_create(params) must fail with err (1: any negative code),
 * quickly, and its message must contain every non-NULL string in want. */
#define expect_fail(params, err, ...) expect_fail_(__LINE__, params, err, (const char *[]){ __VA_ARGS__, NULL })

static void expect_fail_(int line, const struct spardl_comm_params *params, int err, const char **want)
{
	struct spardl_comm *comm = (void *)1;
	int64_t t0 = now_ms();
	int ret = spardl_comm_create(params, &comm);
	int64_t dt = now_ms() - t0;

	ck_assert_msg(err == 1 ? ret < 0 : ret == err,
		      "line %d: spardl_comm_create returned %d (%s), expected %d (%s); message: %s", line, ret, spardl_strerror(ret), err, spardl_strerror(err), spardl_last_error());
	ck_assert_msg(comm == (void *)1, "line %d: comm_out written on failure", line);
	ck_assert_msg(dt < 1000, "line %d: the error took %lld ms", line, (long long)dt);
	for (; *want; want++)
		ck_assert_msg(strstr(spardl_last_error(), *want), "line %d: message lacks \"%s\": %s", line, *want,
			      spardl_last_error());
}

/* Same, for any negative code. */
#define expect_fail_any(params, ...) expect_fail_(__LINE__, params, 1, (const char *[]){ __VA_ARGS__, NULL })

static struct spardl_comm *expect_ok(const struct spardl_comm_params *params, int rank, int size)
{
	struct spardl_comm *comm = NULL;
	int ret = spardl_comm_create(params, &comm);

	ck_assert_msg(ret == 0, "spardl_comm_create: %d (%s): %s", ret, spardl_strerror(ret), spardl_last_error());
	ck_assert_ptr_nonnull(comm);
	ck_assert_int_eq(spardl_comm_rank(comm), rank);
	ck_assert_int_eq(spardl_comm_size(comm), size);
	ck_assert_ptr_nonnull(spardl_comm_transport(comm));
	return comm;
}

static void params_rank_size(struct spardl_comm_params *p, int rank, int size)
{
	spardl_comm_params_init(p);
	p->field_mask = SPARDL_COMM_PARAM_RANK_SIZE;
	p->rank = rank;
	p->size = size;
}

/* ---------------------------------------------------------------- */
/* Rank and size from the environment                                */

START_TEST(test_no_rank_size)
{
	clear_env();
	expect_fail(NULL, -SPARDL_ERR_ENV, "SPARDL_RANK", "SPARDL_SIZE");
	/* Empty values count as unset. */
	set("SPARDL_RANK", "");
	set("SPARDL_SIZE", "");
	expect_fail(NULL, -SPARDL_ERR_ENV, "no rank and size");
}
END_TEST

START_TEST(test_half_pair)
{
	static const struct {
		const char *rank, *size;
	} pairs[] = {
		{ "SPARDL_RANK", "SPARDL_SIZE" },       { "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE" },
		{ "PMI_RANK", "PMI_SIZE" },             { "SLURM_PROCID", "SLURM_NTASKS" },
		{ "RANK", "WORLD_SIZE" },
	};

	for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
		clear_env();
		set(pairs[i].rank, "0");
		expect_fail(NULL, -SPARDL_ERR_ENV, pairs[i].rank, pairs[i].size, "is not");
		clear_env();
		set(pairs[i].size, "1");
		expect_fail(NULL, -SPARDL_ERR_ENV, pairs[i].rank, pairs[i].size, "is not");
	}
}
END_TEST

START_TEST(test_malformed_size)
{
	static const char *bad[] = { "abc", "0", "-1", "1.5", "2x", "99999999999999999999", "2000000" };
	char want[64];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		clear_env();
		set("SPARDL_RANK", "0");
		set("SPARDL_SIZE", bad[i]);
		snprintf(want, sizeof(want), "SPARDL_SIZE=%s", bad[i]);
		expect_fail(NULL, -SPARDL_ERR_ENV, want);
	}
	/* The same through another launcher's names. */
	clear_env();
	set("WORLD_SIZE", "abc");
	set("RANK", "0");
	expect_fail(NULL, -SPARDL_ERR_ENV, "WORLD_SIZE=abc");
}
END_TEST

START_TEST(test_malformed_rank)
{
	static const char *bad[] = { "2", "3", "-1", "abc", "1e0" };
	char want[64];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		clear_env();
		set("SPARDL_RANK", bad[i]);
		set("SPARDL_SIZE", "2");
		snprintf(want, sizeof(want), "SPARDL_RANK=%s", bad[i]);
		/* Names the variable and the valid range. */
		expect_fail(NULL, -SPARDL_ERR_ENV, want, "[0, 1]");
	}
}
END_TEST

START_TEST(test_malformed_timeout)
{
	static const char *bad[] = { "abc", "0", "-3", "1.5", "10s", "1000001" };
	char want[64];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		clear_env();
		set("SPARDL_RANK", "0");
		set("SPARDL_SIZE", "1");
		set("SPARDL_TIMEOUT", bad[i]);
		snprintf(want, sizeof(want), "SPARDL_TIMEOUT=%s", bad[i]);
		expect_fail(NULL, -SPARDL_ERR_ENV, want);
	}
}
END_TEST

/* ---------------------------------------------------------------- */
/* Transport and bootstrap                                           */

START_TEST(test_transport_bogus)
{
	clear_env();
	set("SPARDL_RANK", "0");
	set("SPARDL_SIZE", "1");
	set("SPARDL_TRANSPORT", "bogus");
	expect_fail(NULL, -SPARDL_ERR_ENV, "SPARDL_TRANSPORT=bogus", "shm");
}
END_TEST

START_TEST(test_transport_verbs_absent)
{
#if SPARDL_HAVE_VERBS_TRANSPORT
	/* This build has verbs: whether it runs depends on the hardware. */
	return;
#else
	clear_env();
	set("SPARDL_RANK", "0");
	set("SPARDL_SIZE", "1");
	set("SPARDL_TRANSPORT", "verbs");
	expect_fail(NULL, -ENODEV, "SPARDL_TRANSPORT=verbs");
#endif
}
END_TEST

START_TEST(test_transport_shm_and_auto)
{
	struct spardl_comm *comm;

	clear_env();
	set("SPARDL_RANK", "0");
	set("SPARDL_SIZE", "1");
	set("SPARDL_TRANSPORT", "shm");
	comm = expect_ok(NULL, 0, 1);
	ck_assert_str_eq(spardl_comm_transport(comm), "shm");
	spardl_comm_destroy(comm);
	set("SPARDL_TRANSPORT", "auto");
	comm = expect_ok(NULL, 0, 1);
	spardl_comm_destroy(comm);
}
END_TEST

START_TEST(test_bootstrap_malformed)
{
	static const char *bad[] = { "localhost", "host:", "[::1", "unix:", "h:0", "h:65536" };

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		for (int rank = 0; rank < 2; rank++) {
			char r[8];

			clear_env();
			snprintf(r, sizeof(r), "%d", rank);
			set("SPARDL_RANK", r);
			set("SPARDL_SIZE", "2");
			set("SPARDL_TIMEOUT", "2");
			set("SPARDL_BOOTSTRAP", bad[i]);
			expect_fail(NULL, -EINVAL, bad[i], "SPARDL_BOOTSTRAP");
		}
	}
}
END_TEST

START_TEST(test_bootstrap_unset)
{
	/* Several ranks, no address and no job key to derive one from. */
	clear_env();
	set("SPARDL_RANK", "0");
	set("SPARDL_SIZE", "2");
	expect_fail(NULL, -SPARDL_ERR_ENV, "SPARDL_BOOTSTRAP", "SPARDL_JOB_KEY");
	/* The launcher says the ranks span hosts: a local socket cannot work. */
	set("SPARDL_JOB_KEY", "k");
	set("SPARDL_LOCAL_SIZE", "1");
	expect_fail(NULL, -SPARDL_ERR_ENV, "SPARDL_BOOTSTRAP", "several hosts");
	/* torchrun's MASTER_PORT is parsed and checked. */
	clear_env();
	set("RANK", "0");
	set("WORLD_SIZE", "2");
	set("MASTER_ADDR", "127.0.0.1");
	set("MASTER_PORT", "http");
	expect_fail(NULL, -SPARDL_ERR_ENV, "MASTER_PORT=http");
}
END_TEST

START_TEST(test_size_one)
{
	struct spardl_comm *comm;

	clear_env();
	set("SPARDL_RANK", "0");
	set("SPARDL_SIZE", "1");
	comm = expect_ok(NULL, 0, 1);
#if !SPARDL_HAVE_VERBS_TRANSPORT
	ck_assert_str_eq(spardl_comm_transport(comm), "shm");
#endif
	spardl_comm_destroy(comm);
	/* Twice in one process, and a malformed SPARDL_BOOTSTRAP is never read. */
	set("SPARDL_BOOTSTRAP", "localhost");
	comm = expect_ok(NULL, 0, 1);
	spardl_comm_destroy(comm);
}
END_TEST

START_TEST(test_launchers)
{
	static const struct {
		const char *rank, *size;
	} pairs[] = {
		{ "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE" },
		{ "PMI_RANK", "PMI_SIZE" },
		{ "SLURM_PROCID", "SLURM_NTASKS" },
		{ "RANK", "WORLD_SIZE" },
	};

	for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
		struct spardl_comm *comm;

		clear_env();
		set(pairs[i].rank, "0");
		set(pairs[i].size, "1");
		comm = expect_ok(NULL, 0, 1);
		spardl_comm_destroy(comm);
	}
}
END_TEST

START_TEST(test_spardl_vars_first)
{
	struct spardl_comm *comm;

	/* SPARDL_* wins over a (here malformed) launcher's variables. */
	clear_env();
	set("SPARDL_RANK", "0");
	set("SPARDL_SIZE", "1");
	set("OMPI_COMM_WORLD_RANK", "7");
	set("OMPI_COMM_WORLD_SIZE", "abc");
	set("RANK", "x");
	comm = expect_ok(NULL, 0, 1);
	spardl_comm_destroy(comm);
}
END_TEST

/* ---------------------------------------------------------------- */
/* Parameters                                                        */

START_TEST(test_params_override_env)
{
	struct spardl_comm_params p;
	struct spardl_comm *comm;

	clear_env();
	set("SPARDL_RANK", "5");
	set("SPARDL_SIZE", "abc");
	set("SPARDL_TIMEOUT", "soon");
	set("SPARDL_TRANSPORT", "bogus");
	set("SPARDL_BOOTSTRAP", "localhost");
	params_rank_size(&p, 0, 1);
	/* Rank and size alone: the malformed SPARDL_SIZE is never read, but
	 * the timeout and transport still come from the environment. */
	expect_fail(&p, -SPARDL_ERR_ENV, "SPARDL_TIMEOUT=soon");
	p.field_mask |= SPARDL_COMM_PARAM_TIMEOUT;
	p.timeout_ms = 500;
	/* The transport's own error code is test_transport_bogus's business. */
	expect_fail_any(&p, "bogus");
	p.field_mask |= SPARDL_COMM_PARAM_TRANSPORT | SPARDL_COMM_PARAM_JOB_KEY;
	p.transport = "shm";
	p.job_key = "test-comm";
	comm = expect_ok(&p, 0, 1);
	ck_assert_str_eq(spardl_comm_transport(comm), "shm");
	spardl_comm_destroy(comm);
	/* A field without its bit is ignored. */
	p.field_mask &= ~(uint64_t)SPARDL_COMM_PARAM_TRANSPORT;
	p.transport = "shm";
	expect_fail_any(&p, "bogus");
}
END_TEST

START_TEST(test_params_bootstrap_override_env)
{
	struct spardl_comm_params p;
	char addr[128];

	/* The address comes from params, not the malformed variable: rank 0
	 * listens there and times out waiting for rank 1. */
	clear_env();
	set("SPARDL_BOOTSTRAP", "localhost");
	unix_addr(addr, sizeof(addr), "param");
	params_rank_size(&p, 0, 2);
	p.field_mask |= SPARDL_COMM_PARAM_BOOTSTRAP | SPARDL_COMM_PARAM_TIMEOUT;
	p.bootstrap = addr;
	p.timeout_ms = 300;
	expect_fail(&p, -ETIMEDOUT, addr, "rank 1");
}
END_TEST

START_TEST(test_bad_params)
{
	struct spardl_comm_params p;

	clear_env();
	set("SPARDL_RANK", "0");
	set("SPARDL_SIZE", "1");
	params_rank_size(&p, -1, 1);
	expect_fail(&p, -EINVAL, "rank -1", "size 1");
	params_rank_size(&p, 0, 0);
	expect_fail(&p, -EINVAL, "size 0");
	params_rank_size(&p, 1, 1);
	expect_fail(&p, -EINVAL, "rank 1", "rank < size");
	params_rank_size(&p, 0, -4);
	expect_fail(&p, -EINVAL, "size -4");

	params_rank_size(&p, 0, 1);
	p.field_mask |= SPARDL_COMM_PARAM_TIMEOUT;
	p.timeout_ms = 0;
	expect_fail(&p, -EINVAL, "timeout_ms 0");
	p.timeout_ms = -1;
	expect_fail(&p, -EINVAL, "timeout_ms -1");

	params_rank_size(&p, 0, 1);
	p.field_mask |= SPARDL_COMM_PARAM_OOB;
	expect_fail(&p, -EINVAL, "SPARDL_COMM_PARAM_OOB", "oob_allgather");
	/* The same from environment rank/size. */
	spardl_comm_params_init(&p);
	p.field_mask = SPARDL_COMM_PARAM_OOB;
	expect_fail(&p, -EINVAL, "oob_allgather");
}
END_TEST

START_TEST(test_null_out)
{
	clear_env();
	set("SPARDL_RANK", "0");
	set("SPARDL_SIZE", "1");
	ck_assert_int_eq(spardl_comm_create(NULL, NULL), -EINVAL);
	ck_assert_ptr_nonnull(strstr(spardl_last_error(), "comm_out"));
	/* NULL handles elsewhere. */
	spardl_comm_params_init(NULL);
	spardl_comm_destroy(NULL);
	ck_assert_int_eq(spardl_comm_rank(NULL), -EINVAL);
	ck_assert_int_eq(spardl_comm_size(NULL), -EINVAL);
	ck_assert_ptr_null(spardl_comm_transport(NULL));
}
END_TEST

/* ---------------------------------------------------------------- */
/* Missing peers                                                     */

START_TEST(test_missing_rank)
{
	char addr[128];
	int64_t t0, dt;

	clear_env();
	unix_addr(addr, sizeof(addr), "missing");
	set("SPARDL_SIZE", "2");
	set("SPARDL_RANK", "0");
	set("SPARDL_BOOTSTRAP", addr);
	set("SPARDL_TIMEOUT", "1");
	t0 = now_ms();
	{
		struct spardl_comm *comm = (void *)1;
		int ret = spardl_comm_create(NULL, &comm);

		dt = now_ms() - t0;
		ck_assert_msg(ret == -ETIMEDOUT, "returned %d (%s): %s", ret, spardl_strerror(ret),
			      spardl_last_error());
		ck_assert_ptr_eq(comm, (void *)1);
	}
	ck_assert_msg(dt < 3000, "took %lld ms", (long long)dt);
	ck_assert_msg(strstr(spardl_last_error(), "rank 1"), "message: %s", spardl_last_error());
}
END_TEST

START_TEST(test_rank0_missing)
{
	char addr[128];
	int64_t t0, dt;
	struct spardl_comm *comm = (void *)1;
	int ret;

	clear_env();
	unix_addr(addr, sizeof(addr), "norank0");
	set("SPARDL_SIZE", "2");
	set("SPARDL_RANK", "1");
	set("SPARDL_BOOTSTRAP", addr);
	set("SPARDL_TIMEOUT", "1");
	t0 = now_ms();
	ret = spardl_comm_create(NULL, &comm);
	dt = now_ms() - t0;
	ck_assert_msg(ret == -ETIMEDOUT, "returned %d (%s): %s", ret, spardl_strerror(ret), spardl_last_error());
	ck_assert_msg(dt < 3000, "took %lld ms", (long long)dt);
	ck_assert_msg(strstr(spardl_last_error(), "rank 0"), "message: %s", spardl_last_error());
}
END_TEST

/* ---------------------------------------------------------------- */
/* Plans on one rank                                                 */

static struct spardl_comm *comm1(void)
{
	struct spardl_comm_params p;

	clear_env();
	params_rank_size(&p, 0, 1);
	return expect_ok(&p, 0, 1);
}

static void base_params(struct spardl_plan_params *pp)
{
	spardl_plan_params_init(pp);
	pp->count = 8;
	pp->density = 0.375; /* k = 3 */
}

#define expect_plan_fail(comm, pp, err, ...) \
	expect_plan_fail_(__LINE__, comm, pp, err, (const char *[]){ __VA_ARGS__, NULL })

static void expect_plan_fail_(int line, struct spardl_comm *comm, const struct spardl_plan_params *pp, int err,
			      const char **want)
{
	struct spardl_plan *plan = (void *)1;
	int ret = spardl_plan_create(comm, pp, &plan);

	ck_assert_msg(ret == err, "line %d: spardl_plan_create returned %d (%s), expected %d (%s); message: %s",
		      line, ret, spardl_strerror(ret), err, spardl_strerror(err), spardl_last_error());
	ck_assert_msg(plan == (void *)1, "line %d: plan_out written on failure", line);
	for (; *want; want++)
		ck_assert_msg(strstr(spardl_last_error(), *want), "line %d: message lacks \"%s\": %s", line, *want,
			      spardl_last_error());
}

START_TEST(test_plan_bad_params)
{
	struct spardl_comm *comm = comm1();
	struct spardl_plan_params pp;

	base_params(&pp);
	pp.count = 0;
	expect_plan_fail(comm, &pp, -EINVAL, "count is 0");
	/* count has no default: without its bit it is 0 too. */
	base_params(&pp);
	pp.field_mask &= ~(uint64_t)SPARDL_PLAN_PARAM_COUNT;
	expect_plan_fail(comm, &pp, -EINVAL, "count");

	static const double bad_density[] = { 0.0, -0.1, 1.5, -0.0, INFINITY };
	for (size_t i = 0; i < sizeof(bad_density) / sizeof(bad_density[0]); i++) {
		base_params(&pp);
		pp.density = bad_density[i];
		expect_plan_fail(comm, &pp, -EINVAL, "density");
	}
	base_params(&pp);
	pp.density = NAN;
	expect_plan_fail(comm, &pp, -EINVAL, "density nan");

	base_params(&pp);
	pp.algo = (enum spardl_algo)7;
	expect_plan_fail(comm, &pp, -EINVAL, "algo 7");
	pp.algo = (enum spardl_algo)-1;
	expect_plan_fail(comm, &pp, -EINVAL, "algo -1");
	base_params(&pp);
	pp.sag = (enum spardl_sag)2;
	expect_plan_fail(comm, &pp, -EINVAL, "sag 2");
	base_params(&pp);
	pp.srs = (enum spardl_srs)9;
	expect_plan_fail(comm, &pp, -EINVAL, "srs 9");
	base_params(&pp);
	pp.dtype = (enum spardl_dtype)1;
	expect_plan_fail(comm, &pp, -EOPNOTSUPP, "dtype 1");
	/* 32-bit indices: refused with the limit named, before any memory
	 * is taken for the 16 GiB a plan of that size would hold. */
	base_params(&pp);
	pp.count = (size_t)1 << 32;
	pp.algo = SPARDL_ALGO_TOPKA;
	expect_plan_fail(comm, &pp, -EINVAL, "over 2^32 - 1", "TopkA");
	pp.algo = SPARDL_ALGO_GTOPK;
	expect_plan_fail(comm, &pp, -EINVAL, "over 2^32 - 1", "gTopk");
	pp.algo = SPARDL_ALGO_SPARDL;
	expect_plan_fail(comm, &pp, -EINVAL, "blocks longer than 2^32 - 1", "more ranks");
	base_params(&pp);
	pp.mem_type = SPARDL_MEM_CUDA;
	{
		/* No usable device here: -ENODEV with the reason; with one,
		 * a plan holding device memory. */
		char why[200];

		if (spardl_cuda_probe(why, sizeof(why))) {
			expect_plan_fail(comm, &pp, -ENODEV, "SPARDL_MEM_CUDA", "no usable CUDA device", why);
		} else {
			struct spardl_plan *plan = NULL;
			struct spardl_plan_info info;

			ck_assert_msg(!spardl_plan_create(comm, &pp, &plan), "CUDA plan on %s: %s", why,
				      spardl_last_error());
			ck_assert_int_eq(spardl_plan_info(plan, &info), 0);
			ck_assert_uint_ge(info.device_bytes, pp.count * sizeof(float));
			spardl_plan_destroy(plan);
		}
	}
	pp.mem_type = (enum spardl_mem_type)5;
	expect_plan_fail(comm, &pp, -EINVAL, "mem_type 5");
	base_params(&pp);
	pp.teams = 2;
	expect_plan_fail(comm, &pp, -EINVAL, "teams=2");
	pp.teams = -1;
	expect_plan_fail(comm, &pp, -EINVAL, "teams=-1");
	/* teams = 0: the simulator's choice, a divisor of the size. */
	pp.teams = 0;
	{
		struct spardl_plan *plan = NULL;
		struct spardl_plan_info info;

		ck_assert_int_eq(spardl_plan_create(comm, &pp, &plan), 0);
		ck_assert_int_eq(spardl_plan_info(plan, &info), 0);
		ck_assert_int_eq(info.teams, 1);
		spardl_plan_destroy(plan);
	}
	pp.algo = SPARDL_ALGO_TOPKA;
	pp.teams = -1;
	expect_plan_fail(comm, &pp, -EINVAL, "teams=-1");

	/* NULL arguments, each named. */
	base_params(&pp);
	{
		struct spardl_plan *plan = (void *)1;

		ck_assert_int_eq(spardl_plan_create(NULL, &pp, &plan), -EINVAL);
		ck_assert_ptr_nonnull(strstr(spardl_last_error(), "comm is NULL"));
		ck_assert_int_eq(spardl_plan_create(comm, NULL, &plan), -EINVAL);
		ck_assert_ptr_nonnull(strstr(spardl_last_error(), "params is NULL"));
		ck_assert_int_eq(spardl_plan_create(comm, &pp, NULL), -EINVAL);
		ck_assert_ptr_nonnull(strstr(spardl_last_error(), "plan_out is NULL"));
		ck_assert_ptr_eq(plan, (void *)1);
	}
	/* After all that, the communicator still makes plans. */
	{
		struct spardl_plan *plan = NULL;

		ck_assert_int_eq(spardl_plan_create(comm, &pp, &plan), 0);
		spardl_plan_destroy(plan);
	}
	spardl_plan_params_init(NULL);
	spardl_plan_destroy(NULL);
	spardl_comm_destroy(comm);
}
END_TEST

/* g and its top 3 by magnitude: -5 (1), 4 (5), 3 (2); no ties. */
static const float G[8] = { 1.0f, -5.0f, 3.0f, 0.5f, -2.0f, 4.0f, 0.0f, -0.25f };
static const float TOP3[8] = { 0.0f, -5.0f, 3.0f, 0.0f, 0.0f, 4.0f, 0.0f, 0.0f };
static const float REST[8] = { 1.0f, 0.0f, 0.0f, 0.5f, -2.0f, 0.0f, 0.0f, -0.25f };
/* Second call with a zero gradient: top 3 of REST is -2 (4), 1 (0), 0.5 (3). */
static const float TOP3_2[8] = { 1.0f, 0.0f, 0.0f, 0.5f, -2.0f, 0.0f, 0.0f, 0.0f };
static const float REST_2[8] = { 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, -0.25f };

static void assert_floats(const float *got, const float *want, size_t n, const char *what)
{
	for (size_t i = 0; i < n; i++)
		ck_assert_msg(got[i] == want[i], "%s[%zu] = %g, expected %g", what, i, got[i], want[i]);
}

static void check_topk_plan(struct spardl_comm *comm, enum spardl_algo algo, int average)
{
	struct spardl_plan_params pp;
	struct spardl_plan *plan = NULL;
	struct spardl_plan_info info;
	const void *res;
	float g[8];
	int ret;

	base_params(&pp);
	pp.algo = algo;
	pp.average = average;
	ret = spardl_plan_create(comm, &pp, &plan);
	ck_assert_msg(ret == 0, "algo %d: %s", algo, spardl_last_error());
	ck_assert_int_eq(spardl_plan_info(plan, &info), 0);
	ck_assert_uint_eq(info.count, 8);
	ck_assert_uint_eq(info.k, 3);
	ck_assert_int_eq(spardl_plan_residual(plan, &res), 0);
	assert_floats(res, (const float[8]){ 0 }, 8, "initial residual");

	memcpy(g, G, sizeof(g));
	ck_assert_int_eq(spardl_allreduce(plan, g), 0);
	ck_assert_int_eq(spardl_plan_residual(plan, &res), 0);
	if (algo == SPARDL_ALGO_DENSE) {
		/* The dense algorithm reduces everything. */
		assert_floats(g, G, 8, "dense result");
		assert_floats(res, (const float[8]){ 0 }, 8, "dense residual");
		spardl_plan_destroy(plan);
		return;
	}
	assert_floats(g, TOP3, 8, "result");
	assert_floats(res, REST, 8, "residual");
	/* The residual is carried into the next call. */
	memset(g, 0, sizeof(g));
	ck_assert_int_eq(spardl_allreduce(plan, g), 0);
	ck_assert_int_eq(spardl_plan_residual(plan, &res), 0);
	assert_floats(g, TOP3_2, 8, "second result");
	assert_floats(res, REST_2, 8, "second residual");
	spardl_plan_destroy(plan);
}

START_TEST(test_plan_topk_one_rank)
{
	struct spardl_comm *comm = comm1();
	int algo, avg;

	for (algo = SPARDL_ALGO_SPARDL; algo <= SPARDL_ALGO_GTOPK; algo++)
		for (avg = 0; avg < 2; avg++)
			check_topk_plan(comm, (enum spardl_algo)algo, avg);
	spardl_comm_destroy(comm);
}
END_TEST

START_TEST(test_plan_no_residual)
{
	struct spardl_comm *comm = comm1();
	struct spardl_plan_params pp;
	struct spardl_plan *plan = NULL;
	const void *res;
	float g[8];

	base_params(&pp);
	pp.residual = 0;
	ck_assert_int_eq(spardl_plan_create(comm, &pp, &plan), 0);
	memcpy(g, G, sizeof(g));
	ck_assert_int_eq(spardl_allreduce(plan, g), 0);
	assert_floats(g, TOP3, 8, "result");
	/* Nothing is kept: a zero gradient gives zero. */
	memset(g, 0, sizeof(g));
	ck_assert_int_eq(spardl_allreduce(plan, g), 0);
	assert_floats(g, (const float[8]){ 0 }, 8, "second result");
	ck_assert_int_eq(spardl_plan_residual(plan, &res), 0);
	ck_assert_int_eq(spardl_plan_set_residual(plan, REST), -EINVAL);
	ck_assert_ptr_nonnull(strstr(spardl_last_error(), "residual = 0"));
	spardl_plan_destroy(plan);
	spardl_comm_destroy(comm);
}
END_TEST

START_TEST(test_plan_sparse_one_rank)
{
	struct spardl_comm *comm = comm1();
	struct spardl_plan_params pp;
	struct spardl_plan *plan = NULL;
	int64_t idx[8];
	float val[8], g[8];
	size_t nnz = 99;

	base_params(&pp);
	ck_assert_int_eq(spardl_plan_create(comm, &pp, &plan), 0);
	ck_assert_uint_ge(spardl_plan_max_nnz(plan), 3);
	ck_assert_uint_le(spardl_plan_max_nnz(plan), 8);
	memcpy(g, G, sizeof(g));
	ck_assert_int_eq(spardl_allreduce_sparse(plan, g, idx, val, &nnz), 0);
	assert_floats(g, G, 8, "input (must be unchanged)");
	ck_assert_uint_eq(nnz, 3);
	ck_assert_int_eq(idx[0], 1);
	ck_assert_int_eq(idx[1], 2);
	ck_assert_int_eq(idx[2], 5);
	assert_floats(val, (const float[3]){ -5.0f, 3.0f, 4.0f }, 3, "values");
	ck_assert_int_eq(spardl_allreduce_sparse(plan, g, idx, val, NULL), -EINVAL);
	ck_assert_ptr_nonnull(strstr(spardl_last_error(), "nnz_out"));
	ck_assert_int_eq(spardl_allreduce_sparse(plan, g, NULL, val, &nnz), -EINVAL);
	ck_assert_ptr_nonnull(strstr(spardl_last_error(), "indices"));
	ck_assert_uint_eq(spardl_plan_max_nnz(NULL), 0);
	spardl_plan_destroy(plan);
	spardl_comm_destroy(comm);
}
END_TEST

START_TEST(test_allreduce_null)
{
	struct spardl_comm *comm = comm1();
	struct spardl_plan_params pp;
	struct spardl_plan *plan = NULL;
	float g[8];

	base_params(&pp);
	ck_assert_int_eq(spardl_plan_create(comm, &pp, &plan), 0);
	ck_assert_int_eq(spardl_allreduce(plan, NULL), -EINVAL);
	ck_assert_ptr_nonnull(strstr(spardl_last_error(), "grad is NULL"));
	ck_assert_int_eq(spardl_allreduce(NULL, g), -EINVAL);
	ck_assert_ptr_nonnull(strstr(spardl_last_error(), "plan is NULL"));
	/* A NULL argument is not a failed call: the plan still works. */
	memcpy(g, G, sizeof(g));
	ck_assert_int_eq(spardl_allreduce(plan, g), 0);
	assert_floats(g, TOP3, 8, "result");
	spardl_plan_destroy(plan);
	spardl_comm_destroy(comm);
}
END_TEST

START_TEST(test_strerror)
{
	static const int codes[] = { -SPARDL_ERR_MISMATCH, -SPARDL_ERR_PROTOCOL, -SPARDL_ERR_PLAN_FAILED,
				     -SPARDL_ERR_ENV, -EINVAL, -ETIMEDOUT, -ECONNRESET, -EOPNOTSUPP, -ENODEV };
	const size_t n = sizeof(codes) / sizeof(codes[0]);

	for (size_t i = 0; i < n; i++) {
		const char *s = spardl_strerror(codes[i]);

		ck_assert_ptr_nonnull(s);
		ck_assert_msg(*s, "empty string for %d", codes[i]);
		ck_assert_msg(strcmp(s, spardl_strerror(0)), "%d reads as success", codes[i]);
		for (size_t j = 0; j < i; j++)
			ck_assert_msg(strcmp(s, spardl_strerror(codes[j])), "%d and %d share \"%s\"", codes[i],
				      codes[j], s);
	}
	/* Positive codes read the same; unknown codes still give a string. */
	ck_assert_str_eq(spardl_strerror(SPARDL_ERR_ENV), spardl_strerror(-SPARDL_ERR_ENV));
	ck_assert_ptr_nonnull(spardl_strerror(-(SPARDL_ERR_BASE + 99)));
	ck_assert_ptr_nonnull(spardl_strerror(-100000));
	ck_assert_ptr_nonnull(spardl_env_help());
	ck_assert_ptr_nonnull(strstr(spardl_env_help(), "SPARDL_TIMEOUT"));
}
END_TEST

START_TEST(test_set_residual)
{
	struct spardl_comm *comm = comm1();
	struct spardl_plan_params pp;
	struct spardl_plan *plan = NULL;
	const void *res;
	float g[8] = { 0 };

	base_params(&pp);
	ck_assert_int_eq(spardl_plan_create(comm, &pp, &plan), 0);
	ck_assert_int_eq(spardl_plan_set_residual(plan, REST), 0);
	ck_assert_int_eq(spardl_plan_residual(plan, &res), 0);
	assert_floats(res, REST, 8, "residual after set");
	/* The restored residual is used: same as the second call above. */
	ck_assert_int_eq(spardl_allreduce(plan, g), 0);
	assert_floats(g, TOP3_2, 8, "result from the restored residual");
	ck_assert_int_eq(spardl_plan_residual(plan, &res), 0);
	assert_floats(res, REST_2, 8, "residual");
	/* And round-trips again after a call. */
	ck_assert_int_eq(spardl_plan_set_residual(plan, G), 0);
	ck_assert_int_eq(spardl_plan_residual(plan, &res), 0);
	assert_floats(res, G, 8, "residual after the second set");

	ck_assert_int_eq(spardl_plan_set_residual(plan, NULL), -EINVAL);
	ck_assert_int_eq(spardl_plan_set_residual(NULL, G), -EINVAL);
	ck_assert_int_eq(spardl_plan_residual(plan, NULL), -EINVAL);
	ck_assert_int_eq(spardl_plan_residual(NULL, &res), -EINVAL);
	spardl_plan_destroy(plan);
	spardl_comm_destroy(comm);
}
END_TEST

START_TEST(test_schedule_text_and_stats)
{
	struct spardl_comm *comm = comm1();
	struct spardl_plan_params pp;
	struct spardl_plan *plan = NULL;
	struct spardl_plan_stats st;
	struct spardl_plan_info info;
	char *text = NULL;
	float g[8];

	base_params(&pp);
	ck_assert_int_eq(spardl_plan_create(comm, &pp, &plan), 0);
	ck_assert_int_eq(spardl_plan_schedule_text(plan, &text), 0);
	ck_assert_ptr_nonnull(text);
	ck_assert_uint_gt(strlen(text), 0);
	free(text);
	ck_assert_int_eq(spardl_plan_schedule_text(plan, NULL), -EINVAL);
	ck_assert_int_eq(spardl_plan_schedule_text(NULL, &text), -EINVAL);

	memcpy(g, G, sizeof(g));
	ck_assert_int_eq(spardl_allreduce(plan, g), 0);
	ck_assert_int_eq(spardl_plan_stats(plan, &st), 0);
	ck_assert_uint_eq(st.calls, 1);
	ck_assert(st.total >= 0);
	ck_assert_int_eq(spardl_plan_stats(NULL, &st), -EINVAL);
	ck_assert_int_eq(spardl_plan_stats(plan, NULL), -EINVAL);
	ck_assert_int_eq(spardl_plan_info(NULL, &info), -EINVAL);
	ck_assert_int_eq(spardl_plan_info(plan, NULL), -EINVAL);
	spardl_plan_destroy(plan);
	spardl_comm_destroy(comm);
}
END_TEST

static Suite *comm_suite(void)
{
	Suite *s = suite_create("comm");
	TCase *env = tcase_create("env");
	TCase *plan = tcase_create("plan");

	tcase_set_timeout(env, 20);
	tcase_add_test(env, test_no_rank_size);
	tcase_add_test(env, test_half_pair);
	tcase_add_test(env, test_malformed_size);
	tcase_add_test(env, test_malformed_rank);
	tcase_add_test(env, test_malformed_timeout);
	tcase_add_test(env, test_transport_bogus);
	tcase_add_test(env, test_transport_verbs_absent);
	tcase_add_test(env, test_transport_shm_and_auto);
	tcase_add_test(env, test_bootstrap_malformed);
	tcase_add_test(env, test_bootstrap_unset);
	tcase_add_test(env, test_size_one);
	tcase_add_test(env, test_launchers);
	tcase_add_test(env, test_spardl_vars_first);
	tcase_add_test(env, test_params_override_env);
	tcase_add_test(env, test_params_bootstrap_override_env);
	tcase_add_test(env, test_bad_params);
	tcase_add_test(env, test_null_out);
	tcase_add_test(env, test_missing_rank);
	tcase_add_test(env, test_rank0_missing);
	suite_add_tcase(s, env);

	tcase_set_timeout(plan, 20);
	tcase_add_test(plan, test_plan_bad_params);
	tcase_add_test(plan, test_plan_topk_one_rank);
	tcase_add_test(plan, test_plan_no_residual);
	tcase_add_test(plan, test_plan_sparse_one_rank);
	tcase_add_test(plan, test_allreduce_null);
	tcase_add_test(plan, test_strerror);
	tcase_add_test(plan, test_set_residual);
	tcase_add_test(plan, test_schedule_text_and_stats);
	suite_add_tcase(s, plan);
	return s;
}

int main(void)
{
	return run_unit_suite(comm_suite());
}
