/* SPDX-License-Identifier: MIT */
/*
 * CUDA plans: the caller's buffers live in device memory. In this version a
 * call copies the gradient into page-locked host memory on the caller's
 * stream, runs the host schedule (exec.c) from a host function ordered on
 * that stream, and copies the result back on the same stream. The caller's
 * thread only enqueues. The calls of all CUDA plans of one communicator run
 * in the order they were made, whatever streams they were made on: each
 * waits for the communicator's event, which the one before recorded. So a
 * plan's one staging buffer serves all its calls, and no two calls use the
 * communicator at once.
 *
 * A failed call leaves the staging buffer holding the caller's own data, so
 * the copy back, already enqueued, rewrites grad (or indices and values)
 * with what it held: nothing changes, as on host plans.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "cuda.h"
#include "cuda_plan.h"
#include "log.h"

struct spardl_cuda_plan {
	const struct spardl_cuda_rt *rt;
	int device;
	float *stage;       /* page-locked, n: the gradient in, the result out */
	int64_t *stage_idx; /* page-locked, max_nnz each: the sparse result */
	float *stage_val;
	float *dev_res;     /* device, n: the residual spardl_plan_residual returns */
	pthread_mutex_t lock;
	int status;         /* the first failure of a call (0: none) */
	char msg[1024];
};

/* One call's arguments, for the host function that runs it. */
struct cuda_call {
	struct spardl_plan *plan;
	int sparse;
	size_t *nnz_out;
	int refs;   /* the host function's, and a synchronous caller's */
	int ret;
	char msg[1024];
};

static int rt_error(const struct spardl_cuda_rt *rt, int e, const char *what)
{
	return spardl_error(-EIO, "CUDA plan: %s failed: %s", what, rt->err_name(e));
}

#define RT(call, what)                                         \
	do {                                                   \
		int e_ = (call);                               \
		if (e_)                                        \
			return rt_error(rt, e_, (what));       \
	} while (0)

int spardl_cuda_plan_init(struct spardl_plan *plan)
{
	const struct spardl_cuda_rt *rt = spardl_cuda_rt;
	struct spardl_cuda_plan *cp;
	size_t n = plan->params.count, m = plan->sched->result_pairs;
	void *p;
	int e;

	if (!rt)
		return spardl_error(-ENODEV, "SPARDL_MEM_CUDA: this spardl was built without CUDA");
	cp = calloc(1, sizeof(*cp));
	if (!cp)
		return spardl_error(-ENOMEM, "out of memory for a CUDA plan");
	cp->rt = rt;
	e = pthread_mutex_init(&cp->lock, NULL);
	if (e) {
		free(cp);
		return spardl_error(-e, "CUDA plan: pthread_mutex_init failed: %s", strerror(e));
	}
	plan->cuda = cp;
	plan->host_bytes += sizeof(*cp);
	RT(rt->get_device(&cp->device), "cudaGetDevice");
	RT(rt->host_alloc(&p, n * sizeof(float)), "allocating the page-locked staging buffer (cudaHostAlloc)");
	cp->stage = p;
	/* Touched now, not in the first call. */
	memset(cp->stage, 0, n * sizeof(float));
	RT(rt->host_alloc(&p, (m ? m : 1) * sizeof(int64_t)), "allocating the page-locked sparse indices (cudaHostAlloc)");
	cp->stage_idx = p;
	RT(rt->host_alloc(&p, (m ? m : 1) * sizeof(float)), "allocating the page-locked sparse values (cudaHostAlloc)");
	cp->stage_val = p;
	plan->host_bytes += n * sizeof(float) + (m ? m : 1) * (sizeof(int64_t) + sizeof(float));
	plan->registered_bytes += n * sizeof(float) + (m ? m : 1) * (sizeof(int64_t) + sizeof(float));
	RT(rt->dev_alloc(&p, n * sizeof(float)), "allocating the device residual (cudaMalloc)");
	cp->dev_res = p;
	plan->device_bytes += n * sizeof(float);
	if (!plan->comm->cuda_done) {
		RT(rt->event_create(&plan->comm->cuda_done), "cudaEventCreate");
		plan->comm->cuda_rt = rt;
	}
	SPARDL_INFO("CUDA plan on device %d: host staging through %zu B of page-locked memory; GPUDirect is off (no dma-buf or peer-memory registration in this version)",
		    cp->device, n * sizeof(float));
	return 0;
}

int spardl_cuda_comm_drain(struct spardl_comm *comm)
{
	const struct spardl_cuda_rt *rt = comm ? comm->cuda_rt : NULL;

	if (comm && comm->cuda_done)
		RT(rt->event_sync(comm->cuda_done), "waiting for the CUDA plans' calls (cudaEventSynchronize)");
	return 0;
}

void spardl_cuda_comm_free(struct spardl_comm *comm)
{
	if (!comm || !comm->cuda_done)
		return;
	spardl_cuda_comm_drain(comm);
	comm->cuda_rt->event_destroy(comm->cuda_done);
	comm->cuda_done = NULL;
}

void spardl_cuda_plan_free(struct spardl_plan *plan)
{
	struct spardl_cuda_plan *cp = plan->cuda;
	const struct spardl_cuda_rt *rt;

	if (!cp)
		return;
	rt = cp->rt;
	spardl_cuda_comm_drain(plan->comm);
	if (cp->dev_res)
		rt->dev_free(cp->dev_res);
	if (cp->stage)
		rt->host_free(cp->stage);
	if (cp->stage_idx)
		rt->host_free(cp->stage_idx);
	if (cp->stage_val)
		rt->host_free(cp->stage_val);
	pthread_mutex_destroy(&cp->lock);
	free(cp);
	plan->cuda = NULL;
}

static void call_unref(struct cuda_call *cc);

/* The host function: one call of the host schedule on the staging buffers. */
static void run_call(void *arg)
{
	struct cuda_call *cc = arg;
	struct spardl_plan *plan = cc->plan;
	struct spardl_cuda_plan *cp = plan->cuda;
	size_t nnz = 0;
	int ret;

	if (cc->sparse)
		ret = spardl_exec(plan, cp->stage, NULL, cp->stage_idx, cp->stage_val, &nnz);
	else
		ret = spardl_exec(plan, cp->stage, cp->stage, NULL, NULL, NULL);
	pthread_mutex_lock(&cp->lock);
	if (!ret && cc->sparse)
		*cc->nnz_out = nnz;
	if (ret && !cp->status) {
		cp->status = ret;
		snprintf(cp->msg, sizeof(cp->msg), "%s", spardl_last_error());
	}
	pthread_mutex_unlock(&cp->lock);
	cc->ret = ret;
	if (ret)
		snprintf(cc->msg, sizeof(cc->msg), "%s", spardl_last_error());
	call_unref(cc);
}

static int check_ptr(struct spardl_cuda_plan *cp, const void *p, const char *fn, const char *what)
{
	const struct spardl_cuda_rt *rt = cp->rt;
	int dev = -1;

	RT(rt->pointer_device(p, &dev), "cudaPointerGetAttributes");
	if (dev < 0)
		return spardl_error(-EINVAL,
				    "%s: %s is host memory, but the plan is SPARDL_MEM_CUDA: pass device memory, or create the plan with SPARDL_MEM_HOST",
				    fn, what);
	if (dev != cp->device)
		return spardl_error(-EINVAL,
				    "%s: %s is on CUDA device %d, but the plan was created on device %d: pass memory of device %d, or make a plan there",
				    fn, what, dev, cp->device, cp->device);
	return 0;
}

/* The plan's first failure, in spardl_last_error() too; 0 if none. */
static int known_failure(struct spardl_cuda_plan *cp)
{
	int st;

	pthread_mutex_lock(&cp->lock);
	st = cp->status;
	if (st)
		spardl_error_quiet(st, "%s", cp->msg);
	pthread_mutex_unlock(&cp->lock);
	return st;
}

static void call_unref(struct cuda_call *cc)
{
	if (__atomic_sub_fetch(&cc->refs, 1, __ATOMIC_ACQ_REL) == 0)
		free(cc);
}

/* Marks the plan failed with ret's message. */
static int fail_plan(struct spardl_cuda_plan *cp, int ret)
{
	pthread_mutex_lock(&cp->lock);
	if (!cp->status) {
		cp->status = ret;
		snprintf(cp->msg, sizeof(cp->msg), "%s", spardl_last_error());
	}
	pthread_mutex_unlock(&cp->lock);
	return ret;
}

int spardl_cuda_call(struct spardl_plan *plan, const void *grad, int64_t *indices, void *values, size_t *nnz_out,
		     void *stream, int sync)
{
	struct spardl_cuda_plan *cp = plan->cuda;
	const struct spardl_cuda_rt *rt = cp->rt;
	const char *fn = indices ? (sync ? "spardl_allreduce_sparse" : "spardl_allreduce_sparse_async")
				 : (sync ? "spardl_allreduce" : "spardl_allreduce_async");
	size_t n = plan->params.count, m = plan->sched->result_pairs;
	struct cuda_call *cc;
	int ret, e, failed;

	ret = check_ptr(cp, grad, fn, "grad");
	if (!ret && indices)
		ret = check_ptr(cp, indices, fn, "indices");
	if (!ret && indices)
		ret = check_ptr(cp, values, fn, "values");
	if (ret)
		return ret;
	/* The host function holds one reference, a synchronous caller another. */
	cc = calloc(1, sizeof(*cc));
	if (!cc)
		return spardl_error(-ENOMEM, "%s: out of memory", fn);
	cc->refs = sync ? 2 : 1;
	cc->plan = plan;
	cc->sparse = indices != NULL;
	cc->nnz_out = nnz_out;
	failed = known_failure(cp);
	/* After the previous call on the communicator, whatever its stream. */
	e = rt->stream_wait_event(stream, plan->comm->cuda_done);
	if (!e)
		e = rt->memcpy_async(cp->stage, grad, n * sizeof(float), stream);
	/* The sparse result starts as the caller's own: a failed call copies
	 * it back unchanged. */
	if (!e && indices)
		e = rt->memcpy_async(cp->stage_idx, indices, m * sizeof(int64_t), stream);
	if (!e && indices)
		e = rt->memcpy_async(cp->stage_val, values, m * sizeof(float), stream);
	if (!e)
		e = rt->launch_host(stream, run_call, cc);
	if (e) {
		/* Nothing ran (the copies only filled the staging buffers):
		 * the caller's buffers and the plan are as they were. */
		free(cc);
		return rt_error(rt, e, "enqueueing the call on the stream");
	}
	if (indices) {
		e = rt->memcpy_async(indices, cp->stage_idx, m * sizeof(int64_t), stream);
		if (!e)
			e = rt->memcpy_async(values, cp->stage_val, m * sizeof(float), stream);
	} else {
		e = rt->memcpy_async((void *)grad, cp->stage, n * sizeof(float), stream);
	}
	if (e) {
		/* The call will run; deliver its result synchronously instead,
		 * so that nothing it took into account is lost. */
		int e2 = rt->stream_sync(stream);

		if (!e2 && indices)
			e2 = rt->memcpy(indices, cp->stage_idx, m * sizeof(int64_t));
		if (!e2 && indices)
			e2 = rt->memcpy(values, cp->stage_val, m * sizeof(float));
		if (!e2 && !indices)
			e2 = rt->memcpy((void *)grad, cp->stage, n * sizeof(float));
		if (e2) {
			ret = spardl_error(-EIO,
					   "CUDA plan: %s: the result's copy to the device could not be enqueued (%s) nor made synchronously (%s): this call's result is lost and the plan is failed",
					   fn, rt->err_name(e), rt->err_name(e2));
			if (sync)
				call_unref(cc);
			return fail_plan(cp, ret);
		}
		SPARDL_WARN("%s: enqueueing the result's copy failed (%s): it was made synchronously", fn,
			    rt->err_name(e));
	} else {
		e = rt->event_record(plan->comm->cuda_done, stream);
		/* Without the event later calls cannot wait for this one on
		 * the device: wait for it here. */
		if (e && rt->stream_sync(stream)) {
			ret = spardl_error(-EIO,
					   "CUDA plan: %s: cudaEventRecord failed (%s) and the stream cannot be synchronized: the plan is failed",
					   fn, rt->err_name(e));
			if (sync)
				call_unref(cc);
			return fail_plan(cp, ret);
		}
	}
	if (!sync) {
		if (failed)
			return spardl_error_quiet(-SPARDL_ERR_PLAN_FAILED,
						  "%s: an earlier call on this plan failed (%s); this call's gradient is added to the residual when it runs on the stream: save the residual, destroy the plan and create it again",
						  fn, spardl_strerror(failed));
		return 0;
	}
	e = rt->stream_sync(stream);
	if (e) {
		call_unref(cc);
		return rt_error(rt, e, "waiting for the call on the stream (cudaStreamSynchronize)");
	}
	ret = cc->ret ? spardl_error_quiet(cc->ret, "%s", cc->msg) : 0;
	call_unref(cc);
	return ret;
}

int spardl_cuda_sync(struct spardl_plan *plan)
{
	struct spardl_cuda_plan *cp = plan->cuda;
	int ret = spardl_cuda_comm_drain(plan->comm);

	return ret ? ret : known_failure(cp);
}

int spardl_cuda_residual(struct spardl_plan *plan, const float *host_res, const void **residual_out)
{
	struct spardl_cuda_plan *cp = plan->cuda;
	const struct spardl_cuda_rt *rt = cp->rt;
	int ret = spardl_cuda_comm_drain(plan->comm);

	if (ret)
		return ret;
	RT(rt->memcpy(cp->dev_res, host_res, plan->params.count * sizeof(float)),
	   "copying the residual to the device (cudaMemcpy)");
	/* From pageable memory the copy may return before it lands. */
	RT(rt->stream_sync(NULL), "completing the residual's copy (cudaStreamSynchronize)");
	*residual_out = cp->dev_res;
	return 0;
}

int spardl_cuda_set_residual(struct spardl_plan *plan, float *host_res, const void *residual)
{
	struct spardl_cuda_plan *cp = plan->cuda;
	const struct spardl_cuda_rt *rt = cp->rt;
	int ret = check_ptr(cp, residual, "spardl_plan_set_residual", "residual");

	if (!ret)
		ret = spardl_cuda_comm_drain(plan->comm);
	if (ret)
		return ret;
	/* Through the staging buffer: a failed copy leaves the residual as it was. */
	RT(rt->memcpy(cp->stage, residual, plan->params.count * sizeof(float)),
	   "copying the residual from the device (cudaMemcpy)");
	memcpy(host_res, cp->stage, plan->params.count * sizeof(float));
	return 0;
}
