/* SPDX-License-Identifier: MIT */
/*
 * CUDA plans (suite "cuda"). Where this process has no usable CUDA device
 * a CUDA plan fails on every rank with -ENODEV and a message naming the
 * reason, and the communicator stays usable; the test then skips (77) with
 * that reason. Where a device exists, CUDA plans are not implemented in this
 * version yet: the plan fails with -EOPNOTSUPP naming the device, and the test
 * skips saying so. It is never counted as passed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <spardl/spardl.h>

#include "mp_common.h"

#define N 1000

int main(void)
{
	struct spardl_comm *comm = mp_comm_create();
	struct spardl_plan_params pp;
	struct spardl_plan *plan = (void *)1;
	char why[1024];
	float g[N];
	int ret, i, size, skip = 0;

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
		skip = 1;
	} else if (ret == -EOPNOTSUPP) {
		mp_check(strstr(why, "SPARDL_MEM_CUDA") && strstr(why, "CUDA device"),
			 "-EOPNOTSUPP without naming the device: %s", why);
		skip = 2;
	} else {
		mp_check(0, "a CUDA plan returned %d (%s): %s", ret, spardl_strerror(ret), why);
	}
	mp_check(plan == (void *)1, "plan_out written on failure");

	/* The failed creation left the communicator usable: a host plan
	 * sums exactly (integers, every entry kept). */
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
			if (!mp_check(g[i] == (float)(size * (i % 7) + size * (size - 1) / 2), "entry %d: %g", i,
				      (double)g[i]))
				break;
		spardl_plan_destroy(plan);
	}
	spardl_comm_destroy(comm);
	if (mp_failures) {
		printf("rank %d: %d checks, %d failures\n", mp_rank, mp_checks, mp_failures);
		return 1;
	}
	if (mp_rank == 0)
		printf("SKIP: %s%s\n", why,
		       skip == 2 ? " (the cuda suite has nothing to run until CUDA plans exist)" : "");
	return 77;
}
