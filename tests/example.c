/* SPDX-License-Identifier: MIT */
/* A program built only through pkg-config: one rank, one SparDL call, checked by hand. */
#include <stdio.h>
#include <string.h>

#include <spardl/spardl.h>

int main(void)
{
	float g[8] = { 1, -7, 3, 0, 5, -2, 7, 4 };
	const float want[8] = { 0, -7, 0, 0, 5, 0, 7, 0 };
	const void *res;
	struct spardl_comm *comm;
	struct spardl_plan *plan;
	struct spardl_plan_params pp;
	int ret, i, bad = 0;

	ret = spardl_comm_create(NULL, &comm);
	if (ret) {
		fprintf(stderr, "comm: %s\n", spardl_last_error());
		return 1;
	}
	spardl_plan_params_init(&pp);
	pp.count = 8;
	pp.density = 3.0 / 8; /* k = 3 */
	ret = spardl_plan_create(comm, &pp, &plan);
	if (!ret)
		ret = spardl_allreduce(plan, g);
	if (!ret)
		ret = spardl_plan_residual(plan, &res);
	if (ret) {
		fprintf(stderr, "spardl: %s\n", spardl_last_error());
		return 1;
	}
	for (i = 0; i < 8; i++) {
		float r = want[i] ? 0 : (float[]){ 1, -7, 3, 0, 5, -2, 7, 4 }[i];

		bad |= memcmp(&g[i], &want[i], sizeof(float)) != 0 && !(g[i] == 0 && want[i] == 0);
		bad |= ((const float *)res)[i] != r;
	}
	printf("spardl %s: %s\n", SPARDL_VERSION_STRING, bad ? "wrong result" : "ok");
	spardl_plan_destroy(plan);
	spardl_comm_destroy(comm);
	return bad;
}
