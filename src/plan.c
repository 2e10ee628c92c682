/* Plans: parameter checks across ranks, schedule compilation, memory and endpoints set up once. */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "log.h"

SPARDL_API void spardl_plan_params_init(struct spardl_plan_params *params)
{
	if (!params)
		return;
	memset(params, 0, sizeof(*params));
	params->field_mask = SPARDL_PLAN_PARAM_COUNT | SPARDL_PLAN_PARAM_DENSITY | SPARDL_PLAN_PARAM_ALGO |
			     SPARDL_PLAN_PARAM_TEAMS | SPARDL_PLAN_PARAM_SAG | SPARDL_PLAN_PARAM_SRS |
			     SPARDL_PLAN_PARAM_RESIDUAL | SPARDL_PLAN_PARAM_AVERAGE | SPARDL_PLAN_PARAM_DTYPE |
			     SPARDL_PLAN_PARAM_MEM_TYPE;
	params->count = 0;
	params->density = 0.01;
	params->algo = SPARDL_ALGO_SPARDL;
	params->teams = 1;
	params->sag = SPARDL_SAG_BRUCK;
	params->srs = SPARDL_SRS_BATCHED;
	params->residual = 1;
	params->average = 1;
	params->dtype = SPARDL_DTYPE_FLOAT32;
	params->mem_type = SPARDL_MEM_HOST;
}

static void resolve(const struct spardl_plan_params *in, struct spardl_plan_params *out)
{
	uint64_t m = in->field_mask;

	spardl_plan_params_init(out);
	if (m & SPARDL_PLAN_PARAM_COUNT)
		out->count = in->count;
	if (m & SPARDL_PLAN_PARAM_DENSITY)
		out->density = in->density;
	if (m & SPARDL_PLAN_PARAM_ALGO)
		out->algo = in->algo;
	if (m & SPARDL_PLAN_PARAM_TEAMS)
		out->teams = in->teams;
	if (m & SPARDL_PLAN_PARAM_SAG)
		out->sag = in->sag;
	if (m & SPARDL_PLAN_PARAM_SRS)
		out->srs = in->srs;
	if (m & SPARDL_PLAN_PARAM_RESIDUAL)
		out->residual = !!in->residual;
	if (m & SPARDL_PLAN_PARAM_AVERAGE)
		out->average = !!in->average;
	if (m & SPARDL_PLAN_PARAM_DTYPE)
		out->dtype = in->dtype;
	if (m & SPARDL_PLAN_PARAM_MEM_TYPE)
		out->mem_type = in->mem_type;
}

static int is_pow2(long x)
{
	return x > 0 && !(x & (x - 1));
}

uint64_t spardl_plan_k(size_t n, double density);
uint64_t spardl_plan_k(size_t n, double density)
{
	double k = ceil(density * (double)n);

	if (k < 1)
		return 1;
	return k > (double)n ? n : (uint64_t)k;
}

/* Checks one rank can make alone; writes a message into msg. */
static int validate(const struct spardl_plan_params *p, int size, char *msg, size_t len)
{
	int team_size;

	if (p->count == 0) {
		snprintf(msg, len, "count is 0; pass the number of gradient elements");
		return -EINVAL;
	}
	if (!(p->density > 0.0 && p->density <= 1.0)) {
		snprintf(msg, len, "density %g is outside (0, 1]; use e.g. 0.01 to keep 1%% of the entries",
			 p->density);
		return -EINVAL;
	}
	if (p->algo < SPARDL_ALGO_SPARDL || p->algo > SPARDL_ALGO_GTOPK) {
		snprintf(msg, len, "algo %d is not one of SPARDL_ALGO_SPARDL, _DENSE, _TOPKA, _GTOPK", (int)p->algo);
		return -EINVAL;
	}
	if (p->sag != SPARDL_SAG_BRUCK && p->sag != SPARDL_SAG_RECURSIVE) {
		snprintf(msg, len, "sag %d is not SPARDL_SAG_BRUCK or SPARDL_SAG_RECURSIVE", (int)p->sag);
		return -EINVAL;
	}
	if (p->srs != SPARDL_SRS_BATCHED && p->srs != SPARDL_SRS_SEQUENTIAL) {
		snprintf(msg, len, "srs %d is not SPARDL_SRS_BATCHED or SPARDL_SRS_SEQUENTIAL", (int)p->srs);
		return -EINVAL;
	}
	if (p->dtype != SPARDL_DTYPE_FLOAT32) {
		snprintf(msg, len, "dtype %d is not supported; only SPARDL_DTYPE_FLOAT32", (int)p->dtype);
		return -EOPNOTSUPP;
	}
	if (p->mem_type == SPARDL_MEM_CUDA) {
		snprintf(msg, len, "SPARDL_MEM_CUDA is not supported by this version yet; pass host memory");
		return -EOPNOTSUPP;
	}
	if (p->mem_type != SPARDL_MEM_HOST) {
		snprintf(msg, len, "mem_type %d is not SPARDL_MEM_HOST or SPARDL_MEM_CUDA", (int)p->mem_type);
		return -EINVAL;
	}
	if (p->algo == SPARDL_ALGO_SPARDL) {
		if (p->teams < 1 || size % p->teams) {
			snprintf(msg, len, "teams=%d does not divide the communicator size %d; pass a divisor of %d",
				 p->teams, size, size);
			return -EINVAL;
		}
		if (p->sag == SPARDL_SAG_RECURSIVE && !is_pow2(p->teams)) {
			snprintf(msg, len, "R-SAG needs a power-of-two number of teams, got %d; use SPARDL_SAG_BRUCK",
				 p->teams);
			return -EINVAL;
		}
		team_size = size / p->teams;
		if ((p->count + (size_t)team_size - 1) / (size_t)team_size > UINT32_MAX) {
			snprintf(msg, len, "count %zu makes blocks longer than 2^32 - 1 elements (32-bit block indices); use more ranks per team or split the buffer",
				 p->count);
			return -EINVAL;
		}
	} else if (p->teams < 1) {
		snprintf(msg, len, "teams=%d must be at least 1", p->teams);
		return -EINVAL;
	}
	if (p->algo == SPARDL_ALGO_GTOPK && !is_pow2(size)) {
		snprintf(msg, len, "gTopk needs a power-of-two communicator size, got %d; use SPARDL_ALGO_SPARDL or SPARDL_ALGO_TOPKA",
			 size);
		return -EINVAL;
	}
	if ((p->algo == SPARDL_ALGO_TOPKA || p->algo == SPARDL_ALGO_GTOPK) && p->count > UINT32_MAX) {
		snprintf(msg, len, "count %zu is over 2^32 - 1, the limit of TopkA and gTopk's 32-bit indices",
			 p->count);
		return -EINVAL;
	}
	return 0;
}

/* What every rank sends in the agreement exchange. */
struct agree {
	uint64_t count;
	double density;
	int32_t algo, teams, sag, srs, residual, average, dtype, mem_type;
	int32_t status;
	char msg[196];
};

#define CHECK_FIELD(name)                                                                               \
	if (all[w].name != all[0].name) {                                                               \
		ret = spardl_error(-SPARDL_ERR_MISMATCH,                                                \
				   "plan parameter '" #name "' differs across ranks: rank 0 has %d, rank %d has %d", \
				   (int)all[0].name, w, (int)all[w].name);                              \
		goto out;                                                                               \
	}

static int agree_params(struct spardl_comm *comm, const struct spardl_plan_params *p, int status,
			const char *msg)
{
	struct agree me = { 0 }, *all = calloc((size_t)comm->size, sizeof(*all));
	int ret, w;

	if (!all)
		return -ENOMEM;
	me.count = p->count;
	me.density = p->density;
	me.algo = p->algo;
	me.teams = p->teams;
	me.sag = p->sag;
	me.srs = p->srs;
	me.residual = p->residual;
	me.average = p->average;
	me.dtype = p->dtype;
	me.mem_type = p->mem_type;
	me.status = status;
	snprintf(me.msg, sizeof(me.msg), "%s", msg);
	ret = spardl_bootstrap_allgather(comm->bs, &me, all, sizeof(me));
	if (ret)
		goto out;
	/* Report this rank's own invalid value first, else the first rank's. */
	if (status) {
		ret = spardl_error(status, "spardl_plan_create: rank %d: %s", comm->rank, msg);
		goto out;
	}
	for (w = 0; w < comm->size; w++) {
		if (all[w].status) {
			ret = spardl_error(all[w].status, "spardl_plan_create: rank %d: %s", w, all[w].msg);
			goto out;
		}
	}
	for (w = 1; w < comm->size; w++) {
		if (all[w].count != all[0].count) {
			ret = spardl_error(-SPARDL_ERR_MISMATCH,
					   "plan parameter 'count' differs across ranks: rank 0 has %llu, rank %d has %llu",
					   (unsigned long long)all[0].count, w, (unsigned long long)all[w].count);
			goto out;
		}
		if (memcmp(&all[w].density, &all[0].density, sizeof(double))) {
			ret = spardl_error(-SPARDL_ERR_MISMATCH,
					   "plan parameter 'density' differs across ranks: rank 0 has %.17g, rank %d has %.17g",
					   all[0].density, w, all[w].density);
			goto out;
		}
		CHECK_FIELD(algo);
		CHECK_FIELD(teams);
		CHECK_FIELD(sag);
		CHECK_FIELD(srs);
		CHECK_FIELD(residual);
		CHECK_FIELD(average);
		CHECK_FIELD(dtype);
		CHECK_FIELD(mem_type);
	}
out:
	free(all);
	return ret;
}

/* Every rank learns whether every rank succeeded at a local step. */
static int agree_status(struct spardl_comm *comm, int status, const char *what)
{
	int32_t me = status, *all = calloc((size_t)comm->size, sizeof(*all));
	int ret, w;

	if (!all)
		return -ENOMEM;
	ret = spardl_bootstrap_allgather(comm->bs, &me, all, sizeof(me));
	for (w = 0; !ret && w < comm->size; w++)
		if (all[w] && w != comm->rank)
			ret = spardl_error(all[w], "rank %d failed to %s (%s); see its log", w, what,
					   spardl_strerror(all[w]));
	free(all);
	return ret ? ret : status;
}

static int compile_all(struct spardl_plan *plan, const struct spardl_sched_params *sp)
{
	struct spardl_comm *comm = plan->comm;
	struct spardl_sched **peer = calloc((size_t)comm->size, sizeof(*peer));
	uint32_t i;
	int ret;

	if (!peer)
		return -ENOMEM;
	ret = spardl_sched_compile(sp, &plan->sched);
	if (ret) {
		ret = spardl_error(ret, "cannot compile the schedule: %s", spardl_strerror(ret));
		goto out;
	}
	/* The remote slot offsets come from the targets' own schedules, which
	 * every rank can compile: nothing about them travels at run time. */
	for (i = 0; i < plan->sched->nwrites; i++) {
		int w = plan->sched->writes[i].peer;
		struct spardl_sched_params psp = *sp;

		if (peer[w])
			continue;
		psp.rank = w;
		ret = spardl_sched_compile(&psp, &peer[w]);
		if (ret)
			goto out;
	}
	ret = spardl_sched_link(plan->sched, peer);
out:
	for (i = 0; i < (uint32_t)comm->size; i++)
		spardl_sched_free(peer[i]);
	free(peer);
	return ret;
}

#define ALLOC(ptr, count)                                                        \
	do {                                                                     \
		size_t n_ = (size_t)(count);                                     \
		(ptr) = calloc(n_ ? n_ : 1, sizeof(*(ptr)));                     \
		if (!(ptr))                                                      \
			return spardl_error(-ENOMEM, "out of memory allocating the plan's " #ptr); \
	} while (0)

static int alloc_local(struct spardl_plan *plan)
{
	const struct spardl_sched *s = plan->sched;
	struct spardl_tp *tp = plan->comm->tp;
	size_t n = s->p.n, i;
	int ret;

	ret = plan->ops->mem_alloc(tp, n * sizeof(float), plan->params.mem_type, SPARDL_ACCESS_LOCAL, &plan->acc);
	if (ret)
		return ret;
	if (s->p.algo == SPARDL_ALGO_DENSE) {
		ret = plan->ops->mem_alloc(tp, n * sizeof(float), plan->params.mem_type, SPARDL_ACCESS_LOCAL,
					   &plan->res);
		if (ret)
			return ret;
	}
	ret = plan->ops->mem_alloc(tp, s->send_bytes, plan->params.mem_type, SPARDL_ACCESS_LOCAL, &plan->send);
	if (ret)
		return ret;
	ret = plan->ops->mem_alloc(tp, 2 * s->recv_bytes, plan->params.mem_type,
				   SPARDL_ACCESS_LOCAL | SPARDL_ACCESS_REMOTE_WRITE, &plan->recv);
	if (ret)
		return ret;
	ALLOC(plan->arrived[0], s->nrslots);
	ALLOC(plan->arrived[1], s->nrslots);
	for (i = 0; i < s->nrslots; i++)
		plan->arrived[0][i] = plan->arrived[1][i] = SPARDL_NOT_ARRIVED;
	ALLOC(plan->send_len, s->nsslots);
	ALLOC(plan->regs, s->nregs);
	ALLOC(plan->mlists, s->nregs);
	ALLOC(plan->heap, s->nregs);
	plan->lbuf_bytes = spardl_wire_bytes(s->buf_pairs);
	ALLOC(plan->lbuf, plan->lbuf_bytes * s->nbufs);
	ALLOC(plan->u_idx, s->union_pairs);
	ALLOC(plan->u_val, s->union_pairs);
	ALLOC(plan->undo, s->res_mode == SPARDL_RES_GRC ? s->touched : 0);
	ALLOC(plan->useg, s->res_mode == SPARDL_RES_GRC ? s->undo_runs : 0);
	ALLOC(plan->rmr, plan->comm->size);
	ALLOC(plan->peer_half, plan->comm->size);
	ALLOC(plan->gone, plan->comm->size);
	ALLOC(plan->events, 64);
	if (!plan->res) {
		/* Candidate lists per block, and room for the lists each block
		 * receives (at most one per SRS round) before its selection. */
		plan->cand_cap = spardl_topk_cand_cap(s->kb);
		plan->max_lists = s->srs_rounds ? s->srs_rounds : 1;
		ALLOC(plan->cand, plan->cand_cap * s->nblocks);
		ALLOC(plan->cand_val, plan->cand_cap * s->nblocks);
		ALLOC(plan->cand_n, s->nblocks);
		ALLOC(plan->cand_lo, s->nblocks);
		ALLOC(plan->blk_lidx, (size_t)plan->max_lists * s->nblocks);
		ALLOC(plan->blk_lcnt, (size_t)plan->max_lists * s->nblocks);
		ALLOC(plan->blk_nl, s->nblocks);
		memset(plan->cand, 0, plan->cand_cap * s->nblocks * sizeof(*plan->cand));
		memset(plan->cand_val, 0, plan->cand_cap * s->nblocks * sizeof(*plan->cand_val));
	}
	ret = spardl_topk_ws_init(&plan->ws, s->max_select, (size_t)plan->max_lists * s->kb);
	if (ret)
		return spardl_error(ret, "out of memory allocating the selection workspace");
	/* calloc'd scratch is touched here, not in the first call. */
	memset(plan->u_idx, 0, s->union_pairs * sizeof(*plan->u_idx));
	memset(plan->u_val, 0, s->union_pairs * sizeof(*plan->u_val));
	memset(plan->lbuf, 0, plan->lbuf_bytes * s->nbufs);
	if (s->res_mode == SPARDL_RES_GRC)
		memset(plan->undo, 0, s->touched * sizeof(*plan->undo));
	return 0;
}

struct rkey_msg {
	uint8_t rkey[SPARDL_TP_RKEY_SIZE];
	uint64_t half;
};

static int connect_peers(struct spardl_plan *plan)
{
	struct spardl_comm *comm = plan->comm;
	const struct spardl_sched *s = plan->sched;
	struct rkey_msg me, *all;
	uint32_t i;
	int ret;

	ret = plan->ops->ep_create(comm->tp, s->peers, s->npeers, 2 * s->nrslots, &plan->ep);
	if (ret)
		return ret;
	memset(&me, 0, sizeof(me));
	ret = plan->ops->mr_export(comm->tp, plan->recv, me.rkey);
	me.half = s->recv_bytes;
	all = calloc((size_t)comm->size, sizeof(*all));
	if (!all)
		return -ENOMEM;
	/* Exchange even after a failed export, so no rank is left waiting. */
	ret = agree_status(comm, ret, "export its receive memory");
	if (!ret)
		ret = spardl_bootstrap_allgather(comm->bs, &me, all, sizeof(me));
	for (i = 0; !ret && i < s->nwrites; i++) {
		int w = s->writes[i].peer;

		if (plan->rmr[w])
			continue;
		plan->peer_half[w] = all[w].half;
		ret = plan->ops->rmr_import(plan->ep, w, all[w].rkey, &plan->rmr[w]);
	}
	free(all);
	return ret;
}

SPARDL_API void spardl_plan_destroy(struct spardl_plan *plan)
{
	int w;

	if (!plan)
		return;
	if (plan->rmr)
		for (w = 0; w < plan->comm->size; w++)
			if (plan->rmr[w])
				plan->ops->rmr_release(plan->ep, plan->rmr[w]);
	if (plan->ep)
		plan->ops->ep_destroy(plan->ep);
	if (plan->ops) {
		if (plan->acc)
			plan->ops->mem_free(plan->comm->tp, plan->acc);
		if (plan->res)
			plan->ops->mem_free(plan->comm->tp, plan->res);
		if (plan->send)
			plan->ops->mem_free(plan->comm->tp, plan->send);
		if (plan->recv)
			plan->ops->mem_free(plan->comm->tp, plan->recv);
	}
	spardl_topk_ws_fini(&plan->ws);
	free(plan->arrived[0]);
	free(plan->arrived[1]);
	free(plan->send_len);
	free(plan->regs);
	free(plan->mlists);
	free(plan->heap);
	free(plan->lbuf);
	free(plan->u_idx);
	free(plan->u_val);
	free(plan->undo);
	free(plan->useg);
	free(plan->cand);
	free(plan->cand_val);
	free(plan->cand_n);
	free(plan->cand_lo);
	free(plan->blk_lidx);
	free(plan->blk_lcnt);
	free(plan->blk_nl);
	free(plan->rmr);
	free(plan->peer_half);
	free(plan->gone);
	free(plan->events);
	spardl_sched_free(plan->sched);
	free(plan);
}

SPARDL_API int spardl_plan_create(struct spardl_comm *comm, const struct spardl_plan_params *params,
				  struct spardl_plan **plan_out)
{
	struct spardl_plan_params p;
	struct spardl_sched_params sp;
	struct spardl_plan *plan;
	char msg[196] = "";
	int status, ret;

	if (!comm || !params || !plan_out)
		return spardl_error(-EINVAL, "spardl_plan_create: %s is NULL",
				    !comm ? "comm" : !params ? "params" : "plan_out");
	resolve(params, &p);
	status = validate(&p, comm->size, msg, sizeof(msg));
	/* Agree before failing: a rank that returned early would leave the
	 * others waiting in the exchange. */
	ret = agree_params(comm, &p, status, msg);
	if (ret)
		return ret;
	plan = calloc(1, sizeof(*plan));
	if (!plan)
		return agree_status(comm, spardl_error(-ENOMEM, "out of memory"), "allocate the plan");
	plan->comm = comm;
	plan->params = p;
	plan->ops = comm->tp_ops;
	sp.size = comm->size;
	sp.rank = comm->rank;
	sp.n = p.count;
	sp.k = spardl_plan_k(p.count, p.density);
	sp.algo = p.algo;
	sp.teams = p.algo == SPARDL_ALGO_SPARDL ? p.teams : 1;
	sp.sag = p.sag;
	sp.srs = p.srs;
	sp.residual = p.residual;
	sp.average = p.average;
	ret = compile_all(plan, &sp);
	if (!ret)
		ret = alloc_local(plan);
	ret = agree_status(comm, ret, "compile the schedule and allocate the plan's memory");
	if (!ret)
		ret = connect_peers(plan);
	ret = agree_status(comm, ret, "connect the plan's peers");
	if (ret) {
		spardl_plan_destroy(plan);
		return ret;
	}
	SPARDL_DEBUG("plan: n=%zu k=%llu algo=%d teams=%d, %d peers, send %llu B, receive 2 x %llu B", p.count,
		     (unsigned long long)sp.k, p.algo, sp.teams, plan->sched->npeers,
		     (unsigned long long)plan->sched->send_bytes, (unsigned long long)plan->sched->recv_bytes);
	*plan_out = plan;
	return 0;
}

SPARDL_API int spardl_allreduce(struct spardl_plan *plan, void *grad)
{
	if (!plan || !grad)
		return spardl_error(-EINVAL, "spardl_allreduce: %s is NULL", !plan ? "plan" : "grad");
	return spardl_exec(plan, grad, grad, NULL, NULL, NULL);
}

SPARDL_API int spardl_allreduce_sparse(struct spardl_plan *plan, const void *grad, int64_t *indices,
				       void *values, size_t *nnz_out)
{
	if (!plan || !grad || !indices || !values || !nnz_out)
		return spardl_error(-EINVAL, "spardl_allreduce_sparse: %s is NULL",
				    !plan ? "plan" : !grad ? "grad" : !indices ? "indices" : !values ? "values" : "nnz_out");
	return spardl_exec(plan, grad, NULL, indices, values, nnz_out);
}

SPARDL_API size_t spardl_plan_max_nnz(const struct spardl_plan *plan)
{
	return plan ? plan->sched->result_pairs : 0;
}

SPARDL_API int spardl_plan_residual(struct spardl_plan *plan, const void **residual_out)
{
	if (!plan || !residual_out)
		return spardl_error(-EINVAL, "spardl_plan_residual: %s is NULL", !plan ? "plan" : "residual_out");
	*residual_out = (plan->res ? plan->res : plan->acc)->addr;
	return 0;
}

SPARDL_API int spardl_plan_set_residual(struct spardl_plan *plan, const void *residual)
{
	if (!plan || !residual)
		return spardl_error(-EINVAL, "spardl_plan_set_residual: %s is NULL", !plan ? "plan" : "residual");
	if (!plan->params.residual)
		return spardl_error(-EINVAL, "spardl_plan_set_residual: this plan was created with residual = 0");
	memcpy((plan->res ? plan->res : plan->acc)->addr, residual, plan->params.count * sizeof(float));
	plan->res_dirty = 1;
	return 0;
}

SPARDL_API int spardl_plan_info(const struct spardl_plan *plan, struct spardl_plan_info *info_out)
{
	if (!plan || !info_out)
		return spardl_error(-EINVAL, "spardl_plan_info: %s is NULL", !plan ? "plan" : "info_out");
	info_out->count = plan->params.count;
	info_out->k = plan->sched->p.k;
	info_out->block_size = plan->sched->block_size;
	info_out->block_budget = plan->sched->kb;
	info_out->team_size = plan->sched->team_size;
	info_out->teams = plan->sched->p.teams;
	return 0;
}

SPARDL_API int spardl_plan_stats(const struct spardl_plan *plan, struct spardl_plan_stats *stats_out)
{
	if (!plan || !stats_out)
		return spardl_error(-EINVAL, "spardl_plan_stats: %s is NULL", !plan ? "plan" : "stats_out");
	*stats_out = plan->stats;
	return 0;
}

SPARDL_API int spardl_plan_schedule_text(const struct spardl_plan *plan, char **text_out)
{
	if (!plan || !text_out)
		return spardl_error(-EINVAL, "spardl_plan_schedule_text: %s is NULL", !plan ? "plan" : "text_out");
	return spardl_sched_render(plan->sched, text_out);
}
