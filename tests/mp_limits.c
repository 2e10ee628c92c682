/* SPDX-License-Identifier: MIT */
/* Plan limits: the memory a plan reports stays within its bound for several shapes, and plan_info's sizes grow without breaking old callers. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <spardl/spardl.h>

#include "mp_common.h"

static int rank, size;


/* SparDL's bound: acc (n floats) plus buffers of O(k * teams), well within
 * 2n floats + 256 bytes per budget entry per team + 1 MiB of fixed cost. */
static size_t bound(size_t n, size_t k, int teams)
{
	return 2 * n * sizeof(float) + 256 * k * (size_t)teams + (1u << 20);
}

static void shape(struct spardl_comm *comm, size_t n, double density, int teams, int algo, int report)
{
	struct spardl_plan_params pp;
	struct spardl_plan_info info;
	struct spardl_plan *plan = NULL;
	int ret;

	spardl_plan_params_init(&pp);
	pp.count = n;
	pp.density = density;
	pp.teams = teams;
	pp.algo = algo;
	ret = spardl_plan_create(comm, &pp, &plan);
	mp_check(!ret, "plan n=%zu density=%g teams=%d: %s", n, density, teams, spardl_last_error());
	if (ret)
		return;
	memset(&info, 0xa5, sizeof(info));
	ret = spardl_plan_info(plan, &info);
	mp_check(!ret && info.count == n, "plan_info: %s", spardl_last_error());
	if (algo == SPARDL_ALGO_SPARDL)
		mp_check(info.host_bytes <= bound(n, info.k, teams),
		      "n=%zu k=%zu teams=%d P=%d: the plan holds %zu bytes, over the bound %zu", n, info.k, teams, size,
		      info.host_bytes, bound(n, info.k, teams));
	else
		mp_check(info.host_bytes <= 2 * n * sizeof(float) + 16 * n + (1u << 20),
		      "dense n=%zu P=%d: %zu bytes", n, size, info.host_bytes);
	mp_check(info.registered_bytes <= info.host_bytes && info.device_bytes == 0 && info.max_write >= 8 &&
		      info.peers <= (size_t)size,
	      "plan_info fields: registered %zu, device %zu, max_write %llu, peers %zu", info.registered_bytes,
	      info.device_bytes, (unsigned long long)info.max_write, info.peers);
	if (report && rank == 0)
		printf("%s P=%d n=%zu density=%g teams=%d: k=%zu, host %zu B (%.3f x n floats), registered %zu B, bound %zu B\n",
		       algo == SPARDL_ALGO_SPARDL ? "spardl" : "dense", size, n, density, teams, info.k,
		       info.host_bytes, (double)info.host_bytes / ((double)n * sizeof(float)), info.registered_bytes,
		       bound(n, info.k, teams));
	spardl_plan_destroy(plan);
}

/* A caller built against the 0.1 struct gets its fields, nothing past them. */
static void old_callers(struct spardl_comm *comm)
{
	struct spardl_plan_params pp;
	struct spardl_plan *plan = NULL;
	unsigned char buf[sizeof(struct spardl_plan_info) + 16];
	struct spardl_plan_info full;
	int ret;

	spardl_plan_params_init(&pp);
	pp.count = 1000;
	ret = spardl_plan_create(comm, &pp, &plan);
	mp_check(!ret, "plan: %s", spardl_last_error());
	if (ret)
		return;
	memset(buf, 0xa5, sizeof(buf));
	ret = (spardl_plan_info)(plan, (struct spardl_plan_info *)(void *)buf);
	mp_check(!ret && buf[SPARDL_PLAN_INFO_SIZE_V1] == 0xa5, "the 0.1 entry point wrote past the 0.1 struct");
	mp_check(((struct spardl_plan_info *)(void *)buf)->count == 1000, "the 0.1 entry point lost count");
	memset(buf, 0xa5, sizeof(buf));
	ret = spardl_plan_info_sized(plan, (struct spardl_plan_info *)(void *)buf, sizeof(buf));
	mp_check(!ret && buf[sizeof(buf) - 1] == 0, "a larger struct is not zero-filled past the known fields");
	ret = spardl_plan_info(plan, &full);
	mp_check(!ret && full.host_bytes > 0, "plan_info: %s", spardl_last_error());
	memset(buf, 0xa5, sizeof(buf));
	ret = (spardl_plan_stats)(plan, (struct spardl_plan_stats *)(void *)buf);
	mp_check(!ret && buf[SPARDL_PLAN_STATS_SIZE_V1] == 0xa5, "the 0.1 stats entry point wrote past the 0.1 struct");
	ret = spardl_plan_info_sized(plan, &full, 4);
	mp_check(ret == -EINVAL, "a 4-byte info struct is refused");
	spardl_plan_destroy(plan);
}

int main(int argc, char **argv)
{
	struct spardl_comm *comm;
	int report = argc > 1 && !strcmp(argv[1], "--report");

	comm = mp_comm_create();
	rank = mp_rank = spardl_comm_rank(comm);
	size = spardl_comm_size(comm);
	if (report && argc > 2) {
		/* mp_limits --report N: one SparDL plan of N elements at 1%. */
		shape(comm, strtoull(argv[2], NULL, 0), 0.01, 1, SPARDL_ALGO_SPARDL, 1);
	} else {
		shape(comm, 3000, 0.01, 1, SPARDL_ALGO_SPARDL, report);
		shape(comm, 1 << 20, 0.01, 1, SPARDL_ALGO_SPARDL, report);
		shape(comm, 1 << 20, 0.1, 1, SPARDL_ALGO_SPARDL, report);
		shape(comm, (1 << 22) + 7, 0.001, 1, SPARDL_ALGO_SPARDL, report);
		if (size % 2 == 0) {
			shape(comm, 1 << 20, 0.01, 2, SPARDL_ALGO_SPARDL, report);
			shape(comm, 1 << 20, 0.1, 2, SPARDL_ALGO_SPARDL, report);
		}
		if (size % 4 == 0)
			shape(comm, 1 << 21, 0.01, 4, SPARDL_ALGO_SPARDL, report);
		shape(comm, 1 << 20, 1.0, 1, SPARDL_ALGO_DENSE, report);
		old_callers(comm);
	}
	spardl_comm_destroy(comm);
	printf("rank %d: %d checks, %d failures\n", rank, mp_checks, mp_failures);
	return mp_failures ? 1 : 0;
}
