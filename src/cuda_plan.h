/* SPDX-License-Identifier: MIT */
/* CUDA plans: device buffers staged through page-locked host memory, calls
 * ordered on the caller's CUDA stream (cuda_plan.c). */
#ifndef SPARDL_CUDA_PLAN_H
#define SPARDL_CUDA_PLAN_H

#include <stddef.h>
#include <stdint.h>

struct spardl_comm;
struct spardl_plan;

/* Waits for every call enqueued on the communicator's CUDA plans (none:
 * returns at once). Host plans' calls, plan creation and destruction wait
 * here first, so that nothing uses the communicator beside them. */
int spardl_cuda_comm_drain(struct spardl_comm *comm);
/* Drains, then frees the communicator's event. */
void spardl_cuda_comm_free(struct spardl_comm *comm);

/* Staging buffers, the device residual and the plan's event: plan->cuda. */
int spardl_cuda_plan_init(struct spardl_plan *plan);
/* Waits for the plan's calls, then frees what init took. */
void spardl_cuda_plan_free(struct spardl_plan *plan);

/* One call on a CUDA plan: dense (indices NULL) or sparse, enqueued on
 * stream; sync waits for it and returns its result. An async call returns
 * once enqueued: its failure shows in spardl_cuda_sync and later calls. */
int spardl_cuda_call(struct spardl_plan *plan, const void *grad, int64_t *indices, void *values, size_t *nnz_out,
		     void *stream, int sync);
/* Waits for every call enqueued; the first failure of any, or 0. */
int spardl_cuda_sync(struct spardl_plan *plan);
/* The residual, copied to the plan's device buffer once its calls are done. */
int spardl_cuda_residual(struct spardl_plan *plan, const float *host_res, const void **residual_out);
int spardl_cuda_set_residual(struct spardl_plan *plan, float *host_res, const void *residual);

#endif
