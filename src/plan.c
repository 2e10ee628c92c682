/* SPDX-License-Identifier: MIT */
/* Plans: parameter checks across ranks, schedule compilation, memory and endpoints set up once. */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "cuda.h"
#include "cuda_plan.h"
#include "env.h"
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
	if (p->mem_type != SPARDL_MEM_HOST && p->mem_type != SPARDL_MEM_CUDA) {
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
};

static int differs(int w, const char *name, long long mine, long long theirs)
{
	return spardl_error(-SPARDL_ERR_MISMATCH,
			    "plan parameter '%s' differs across ranks: rank 0 has %lld, rank %d has %lld", name, mine,
			    w, theirs);
}

/* Every rank publishes its parameters and whether they were valid; all
 * fail together, naming the invalid rank's reason or the differing field. */
/* Fills the schedule parameters of a plan from its resolved parameters. */
static void sched_params(const struct spardl_plan_params *p, int size, int rank, uint64_t max_write,
			 struct spardl_sched_params *sp)
{
	sp->size = size;
	sp->rank = rank;
	sp->n = p->count;
	sp->k = spardl_plan_k(p->count, p->density);
	sp->algo = p->algo;
	sp->teams = p->algo == SPARDL_ALGO_SPARDL ? p->teams : 1;
	sp->sag = p->sag;
	sp->srs = p->srs;
	sp->residual = p->residual;
	sp->average = p->average;
	sp->max_write = max_write;
}

/* A dense ring's chunks travel in pieces of DENSE_PIECE_MIN bytes or more,
 * at most DENSE_PIECES per chunk, so that each add of the ring runs a piece
 * at a time as the pieces arrive and forwards its sum piece by piece
 * (exec.c, run_pipelined): while one rank adds a piece, the next piece is
 * on its way and the previous one is with the next rank, and each piece is
 * added while it is still in cache. A lower transport or
 * SPARDL_MAX_WRITE limit stays. */
#define DENSE_PIECE_MIN ((uint64_t)1 << 20)
#define DENSE_PIECES 64u

static uint64_t plan_max_write(const struct spardl_plan_params *p, int size, uint64_t max_write)
{
	uint64_t chunk, piece;

	if (p->algo != SPARDL_ALGO_DENSE || size < 2)
		return max_write;
	chunk = (p->count + (uint64_t)size - 1) / (uint64_t)size * sizeof(float);
	piece = (chunk / DENSE_PIECES + 7) / 8 * 8;
	if (piece < DENSE_PIECE_MIN)
		piece = DENSE_PIECE_MIN;
	return max_write && max_write < piece ? max_write : piece;
}

/* teams = 0 asks for the choice of the simulator's default model
 * (simulate.c): the same on every rank, as it depends on the parameters
 * and the size only. */
static int auto_teams(struct spardl_plan_params *p, int size)
{
	if (p->algo != SPARDL_ALGO_SPARDL || p->teams != 0 || p->count == 0 || !(p->density > 0) || p->density > 1)
		return 0;
	return spardl_sim_auto_teams(p, size, &p->teams);
}

int spardl_plan_sched_params(const struct spardl_plan_params *params, int size, int rank, uint64_t max_write,
			     struct spardl_sched_params *sp_out)
{
	struct spardl_plan_params p;
	char msg[400] = "";
	int ret;

	if (!params || !sp_out || size < 1 || rank < 0 || rank >= size)
		return spardl_error(-EINVAL, "spardl_plan_sched_params: rank %d of %d is not a rank", rank, size);
	resolve(params, &p);
	ret = auto_teams(&p, size);
	if (ret)
		return ret;
	ret = validate(&p, size, msg, sizeof(msg));
	if (ret)
		return spardl_error(ret, "%s", msg);
	sched_params(&p, size, rank, max_write, sp_out);
	return 0;
}

/* A CUDA plan: -ENODEV with the reason where this process has no usable
 * device. */
static int cuda_plan_status(char *msg, size_t len)
{
	char why[160];
	int ret = spardl_cuda_probe(why, sizeof(why));

	if (ret)
		snprintf(msg, len, "SPARDL_MEM_CUDA: %s", why);
	return ret;
}

static int agree_params(struct spardl_comm *comm, const struct spardl_plan_params *p, int status)
{
	struct agree me = { 0 }, *all = calloc((size_t)comm->size, sizeof(*all));
	int ret, w;

	if (!all)
		status = spardl_error(-ENOMEM, "out of memory for %d ranks' parameters", comm->size);
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
	ret = spardl_bootstrap_exchange(comm->bs, status, "create the plan", &me, all, sizeof(me));
	for (w = 1; !ret && w < comm->size; w++) {
		const struct agree *a = &all[0], *b = &all[w];

		if (b->count != a->count)
			ret = differs(w, "count", (long long)a->count, (long long)b->count);
		else if (memcmp(&b->density, &a->density, sizeof(double)))
			ret = spardl_error(-SPARDL_ERR_MISMATCH,
					   "plan parameter 'density' differs across ranks: rank 0 has %.17g, rank %d has %.17g",
					   a->density, w, b->density);
		else if (b->algo != a->algo)
			ret = differs(w, "algo", a->algo, b->algo);
		else if (b->teams != a->teams)
			ret = differs(w, "teams", a->teams, b->teams);
		else if (b->sag != a->sag)
			ret = differs(w, "sag", a->sag, b->sag);
		else if (b->srs != a->srs)
			ret = differs(w, "srs", a->srs, b->srs);
		else if (b->residual != a->residual)
			ret = differs(w, "residual", a->residual, b->residual);
		else if (b->average != a->average)
			ret = differs(w, "average", a->average, b->average);
		else if (b->dtype != a->dtype)
			ret = differs(w, "dtype", a->dtype, b->dtype);
		else if (b->mem_type != a->mem_type)
			ret = differs(w, "mem_type", a->mem_type, b->mem_type);
	}
	free(all);
	return ret;
}

/* Compiles this rank's schedule and, for each rank it writes to, that
 * rank's schedule: its receive-slot offsets and the size of its receive
 * region come from there, never from the peer. */
static int compile_all(struct spardl_plan *plan, const struct spardl_sched_params *sp)
{
	struct spardl_comm *comm = plan->comm;
	struct spardl_sched **peer = calloc((size_t)comm->size, sizeof(*peer));
	uint32_t i;
	int ret;

	if (!peer)
		return spardl_error(-ENOMEM, "out of memory for %d ranks' schedules", comm->size);
	ret = spardl_sched_compile(sp, &plan->sched);
	if (ret == -E2BIG) {
		ret = spardl_error(-E2BIG,
				   "the plan needs more than 2^%u notifications per call (receive slots and their "
				   "pieces), the most an immediate can name; use fewer ranks, or a larger "
				   "SPARDL_MAX_WRITE (now %llu bytes)",
				   SPARDL_IMM_SLOT_BITS, (unsigned long long)sp->max_write);
		goto out;
	}
	if (ret) {
		ret = spardl_error_wrap(ret, "cannot compile the schedule");
		goto out;
	}
	for (i = 0; i < plan->sched->nwrites; i++) {
		int w = plan->sched->writes[i].peer;
		struct spardl_sched_params psp = *sp;

		if (peer[w])
			continue;
		psp.rank = w;
		ret = spardl_sched_compile(&psp, &peer[w]);
		if (ret) {
			ret = spardl_error_wrap(ret, "cannot compile rank %d's schedule", w);
			goto out;
		}
		plan->peer_half[w] = peer[w]->recv_bytes;
	}
	ret = spardl_sched_link(plan->sched, peer);
out:
	for (i = 0; i < (uint32_t)comm->size; i++)
		spardl_sched_free(peer[i]);
	free(peer);
	return ret;
}

/* Host memory of the plan, counted as it is allocated (spardl_plan_info),
 * from its work arena. */
static int plan_calloc(struct spardl_plan *plan, void *ptr_out, size_t count, size_t size, const char *what)
{
	void *p;

	if (size && count > SIZE_MAX / size)
		return spardl_error(-ENOMEM, "the plan's %s would take more than SIZE_MAX bytes", what);
	/* Zeroed and touched now, not in the first call. */
	p = spardl_arena_alloc(&plan->arena, count * size);
	if (!p)
		return spardl_error(-ENOMEM, "out of memory allocating the plan's %s (%zu x %zu bytes)", what,
				    count, size);
	plan->host_bytes += count * size;
	memcpy(ptr_out, &p, sizeof(p));
	return 0;
}

/* Plain error feedback where nothing reads acc after the selections (no
 * reduce adds dropped shares back: TopkA, not gTopk): the selected entries'
 * zeros can wait for the next accumulate pass (pend_bits). */
static int local_lazy(const struct spardl_sched *s)
{
	uint32_t i;

	if (s->res_mode != SPARDL_RES_LOCAL)
		return 0;
	for (i = 0; i < s->nsteps; i++)
		if (s->steps[i].op.code == SPARDL_OP_REDUCE || s->steps[i].op.code == SPARDL_OP_SCATTER)
			return 0;
	return 1;
}

/* Which blocks may keep a received list's sums without writing them to acc
 * (blk_defer). With GRC a change to acc outside the final set is undone, so
 * a list's sums matter only to the block's selection (which reads them from
 * lval) and at the final positions. Where the block's final set is this
 * rank's own selection of it (no reduce in the schedule, and a selection
 * into a list register: the owner's), the final positions are the selected
 * ones, which end zero. One list only: a second would add to the first's
 * sums in acc. */
static void plan_deferrable(struct spardl_plan *plan)
{
	const struct spardl_sched *s = plan->sched;
	uint32_t i, j;

	if (s->res_mode != SPARDL_RES_GRC)
		return;
	for (i = 0; i < s->nsteps; i++)
		if (s->steps[i].op.code == SPARDL_OP_REDUCE)
			return;
	/* Nothing reads the owner's block of acc after its selection either:
	 * its zeros can wait for the residual update like an SRS block's. */
	plan->own_lazy = 1;
	for (i = 0; i < s->nsteps; i++) {
		const struct spardl_op *op = &s->steps[i].op;

		if (op->code != SPARDL_OP_SCATTER)
			continue;
		for (j = 0; j < op->nb; j++) {
			uint8_t *d = &plan->blk_defer[(op->b0 + j) % s->nblocks];

			/* 0: none yet, 1: one list, 2: more. */
			*d = *d ? 2 : 1;
		}
	}
	for (i = 0; i < s->nblocks; i++)
		plan->blk_defer[i] = plan->blk_defer[i] == 1 ? 3 : 0;
	/* 3: one list; 4: and the owner's selection. */
	for (i = 0; i < s->nsteps; i++) {
		const struct spardl_op *op = &s->steps[i].op;

		if (op->code == SPARDL_OP_SELECT && op->dst_is_reg && plan->blk_defer[op->b0 % s->nblocks] == 3)
			plan->blk_defer[op->b0 % s->nblocks] = 4;
	}
	for (i = 0; i < s->nblocks; i++)
		plan->blk_defer[i] = plan->blk_defer[i] == 4;
}

/* Which deferrable blocks put their accumulate pass off until their
 * scatter (blk_late): those that no step between the accumulate op and
 * that scatter reads, the steps between holding only selections and
 * scatters of other blocks. The first such steps select and send the
 * blocks this rank does not own, so the list for its own block arrives
 * while those are done, and its block is formed as the list is added. */
static void plan_late(struct spardl_plan *plan)
{
	const struct spardl_sched *s = plan->sched;
	uint32_t i, j, b;

	for (i = 0; i < s->nsteps && s->steps[i].op.code != SPARDL_OP_ACC_INIT; i++)
		;
	/* blk_late: 0 not reached yet, 1 reached first by its scatter, 2 by another op. */
	for (i++; i < s->nsteps; i++) {
		const struct spardl_op *op = &s->steps[i].op;
		uint32_t nb = op->code == SPARDL_OP_SELECT && op->dst_is_reg ? 1 : op->nb;

		if (op->code == SPARDL_OP_NONE)
			continue;
		if (op->code != SPARDL_OP_SELECT && op->code != SPARDL_OP_SCATTER)
			break;
		for (j = 0; j < nb; j++) {
			b = (op->b0 + j) % s->nblocks;
			if (!plan->blk_late[b])
				plan->blk_late[b] = op->code == SPARDL_OP_SCATTER && plan->blk_defer[b] ? 1 : 2;
		}
	}
	for (b = 0; b < s->nblocks; b++)
		plan->blk_late[b] = plan->blk_late[b] == 1;
}

static int plan_mem(struct spardl_plan *plan, size_t len, unsigned access, unsigned region,
		    struct spardl_tp_mr **mr_out)
{
	/* CUDA plans too: their calls stage through host memory (cuda_plan.c). */
	int ret = plan->ops->mem_alloc(plan->comm->tp, len, SPARDL_MEM_HOST, access, mr_out);
	struct spardl_trace_rec *r;

	if (ret)
		return ret;
	r = spardl_trace_ev(plan->trace, SPARDL_TR_MR, -1, region);
	if (r) {
		r->a = (*mr_out)->alloc_len;
		r->b = (uint64_t)(*mr_out)->mem_type;
		r->imm = (uint32_t)(*mr_out)->registered;
	}
	plan->host_bytes += (*mr_out)->alloc_len;
	if ((*mr_out)->registered)
		plan->registered_bytes += (*mr_out)->alloc_len;
	return 0;
}

/* SPARDL_STREAM_OUTPUT: 1 (on), 0 (off) or -1 (auto: the plan times both,
 * starting with streaming stores). */
static int plan_streams(void)
{
	int mode = -1;

	return spardl_env_enum("SPARDL_STREAM_OUTPUT", &mode) ? -1 : mode;
}

static int alloc_buffers(struct spardl_plan *plan)
{
	const struct spardl_sched *s = plan->sched;
	size_t n = s->p.n, i;
	int keep_log = s->res_mode == SPARDL_RES_GRC || s->res_mode == SPARDL_RES_LOCAL;
	int ret;

	ret = plan_mem(plan, n * sizeof(float), SPARDL_ACCESS_LOCAL, SPARDL_TR_REG_ACC, &plan->acc);
	if (!ret && s->p.algo == SPARDL_ALGO_DENSE)
		ret = plan_mem(plan, n * sizeof(float), SPARDL_ACCESS_LOCAL, SPARDL_TR_REG_RES, &plan->res);
	if (!ret)
		ret = plan_mem(plan, s->send_bytes, SPARDL_ACCESS_LOCAL, SPARDL_TR_REG_SEND, &plan->send);
	if (!ret)
		ret = plan_mem(plan, 2 * s->recv_bytes, SPARDL_ACCESS_LOCAL | SPARDL_ACCESS_REMOTE_WRITE,
			       SPARDL_TR_REG_RECV, &plan->recv);
	if (!ret)
		ret = plan_calloc(plan, &plan->arrived[0], s->npieces, sizeof(uint64_t), "arrival table");
	if (!ret)
		ret = plan_calloc(plan, &plan->arrived[1], s->npieces, sizeof(uint64_t), "arrival table");
	if (!ret)
		ret = plan_calloc(plan, &plan->slot_len, s->nrslots, sizeof(uint64_t), "message lengths");
	if (!ret)
		ret = plan_calloc(plan, &plan->send_len, s->nsslots, sizeof(uint64_t), "send lengths");
	if (!ret)
		ret = plan_calloc(plan, &plan->regs, s->nregs, sizeof(*plan->regs), "list registers");
	if (!ret)
		ret = plan_calloc(plan, &plan->mlists, s->nregs, sizeof(*plan->mlists), "merge lists");
	if (!ret)
		ret = plan_calloc(plan, &plan->heap, s->nregs, sizeof(*plan->heap), "merge heap");
	plan->lbuf_bytes = spardl_wire_bytes(s->buf_pairs);
	if (!ret)
		ret = plan_calloc(plan, &plan->lbuf, s->nbufs, plan->lbuf_bytes, "list buffers");
	if (!ret)
		ret = plan_calloc(plan, &plan->u_idx, s->union_pairs, sizeof(*plan->u_idx), "merge buffer");
	if (!ret)
		ret = plan_calloc(plan, &plan->u_val, s->union_pairs, sizeof(*plan->u_val), "merge buffer");
	if (!ret)
		ret = plan_calloc(plan, &plan->undo, keep_log ? s->touched : 0, sizeof(*plan->undo), "undo log");
	if (!ret)
		ret = plan_calloc(plan, &plan->useg, keep_log ? s->undo_runs : 0, sizeof(*plan->useg), "undo runs");
	if (!ret)
		ret = plan_calloc(plan, &plan->final_bits, s->res_mode == SPARDL_RES_GRC ? s->p.n / 64 + 1 : 0,
				  sizeof(*plan->final_bits), "final-position bitmap");
	plan->pend_wpb = s->block_size / 64 + 1;
	plan->stream = plan_streams();
	/* The dense ring writes its output in its own adds, and a sparse
	 * algorithm with a residual only the result's entries (the
	 * accumulate pass zeroes grad): only a sparse plan without a
	 * residual writes a whole output. */
	plan->stream_auto = plan->stream < 0 && s->p.algo != SPARDL_ALGO_DENSE && s->res_mode == SPARDL_RES_OFF;
	if (plan->stream < 0)
		plan->stream = 1;
	if (!ret && (s->res_mode == SPARDL_RES_GRC || local_lazy(s)) && s->p.n >= spardl_pend_min_n) {
		ret = plan_calloc(plan, &plan->pend_bits, plan->pend_wpb * s->nblocks, sizeof(*plan->pend_bits),
				  "pending-zero bitmap");
		/* Plain error feedback: the own selection's zeros wait. */
		plan->own_lazy = local_lazy(s);
	}
	if (!ret)
		ret = plan_calloc(plan, &plan->gone, plan->comm->size, 1, "peer table");
	if (!ret)
		ret = plan_calloc(plan, &plan->events, SPARDL_MAX_EVENTS, sizeof(*plan->events), "event buffer");
	if (!ret)
		ret = plan_calloc(plan, &plan->flight, 1, sizeof(*plan->flight), "flight recorder");
	/* Allocated here, so that endpoint creation cannot fail on one rank
	 * before the collective steps the others take in ep_create. */
	if (!ret)
		ret = plan_calloc(plan, &plan->tp_peers, (size_t)s->npeers, sizeof(*plan->tp_peers), "peer list");
	if (ret)
		return ret;
	for (i = 0; i < s->npieces; i++)
		plan->arrived[0][i] = plan->arrived[1][i] = SPARDL_NOT_ARRIVED;
	plan->max_lists = s->srs_rounds ? s->srs_rounds : 1;
	/* Candidates per block, gathered while acc is formed, and room for the
	 * lists each block receives (at most one per SRS round) before its
	 * selection: only where a block is long enough to be sampled. */
	if (!plan->res && spardl_topk_can_sample(s->block_size, s->kb)) {
		plan->cand_cap = spardl_topk_cand_cap(s->kb);
		ret = plan_calloc(plan, &plan->cand, plan->cand_cap * s->nblocks, sizeof(*plan->cand), "candidates");
		if (!ret)
			ret = plan_calloc(plan, &plan->cand_val, plan->cand_cap * s->nblocks, sizeof(*plan->cand_val),
					  "candidates");
		if (!ret)
			ret = plan_calloc(plan, &plan->cand_n, s->nblocks, sizeof(*plan->cand_n), "candidates");
		if (!ret)
			ret = plan_calloc(plan, &plan->cand_lo, s->nblocks, sizeof(*plan->cand_lo), "candidates");
		if (!ret)
			ret = plan_calloc(plan, &plan->blk_lidx, (size_t)plan->max_lists * s->nblocks,
					  sizeof(*plan->blk_lidx), "received lists");
		if (!ret)
			ret = plan_calloc(plan, &plan->blk_lval, (size_t)plan->max_lists * s->nblocks,
					  sizeof(*plan->blk_lval), "received lists");
		if (!ret)
			ret = plan_calloc(plan, &plan->lval, (size_t)plan->max_lists * s->nblocks * s->kb,
					  sizeof(*plan->lval), "received lists");
		if (!ret)
			ret = plan_calloc(plan, &plan->blk_lcnt, (size_t)plan->max_lists * s->nblocks,
					  sizeof(*plan->blk_lcnt), "received lists");
		if (!ret)
			ret = plan_calloc(plan, &plan->blk_nl, s->nblocks, sizeof(*plan->blk_nl), "received lists");
		if (!ret)
			ret = plan_calloc(plan, &plan->blk_defer, s->nblocks, sizeof(*plan->blk_defer), "received lists");
		if (!ret)
			ret = plan_calloc(plan, &plan->blk_def, s->nblocks, sizeof(*plan->blk_def), "received lists");
		if (!ret)
			ret = plan_calloc(plan, &plan->blk_test, s->nblocks, sizeof(*plan->blk_test), "received lists");
		if (!ret)
			ret = plan_calloc(plan, &plan->blk_late, s->nblocks, sizeof(*plan->blk_late), "received lists");
		if (!ret)
			ret = plan_calloc(plan, &plan->blk_unformed, s->nblocks, sizeof(*plan->blk_unformed), "received lists");
		if (ret)
			return ret;
		plan_deferrable(plan);
		plan_late(plan);
	}
	/* The dense ring selects nothing. */
	if (s->p.algo == SPARDL_ALGO_DENSE)
		return 0;
	ret = spardl_topk_ws_init_in(&plan->ws, s->max_select, (size_t)plan->max_lists * s->kb, &plan->arena);
	if (ret)
		return spardl_error(ret, "out of memory allocating the selection workspace");
	plan->host_bytes += spardl_topk_ws_bytes(&plan->ws);
	return 0;
}

/* The plan's host memory: the regions the transport maps, then the work
 * buffers in one arena (arena.h). Its address space is a bound on what
 * they take at usual densities (anything past it comes from calloc);
 * what is left unused is unmapped. */
#define ARENA_RESERVE_MIN ((size_t)32 << 20)

static int alloc_local(struct spardl_plan *plan)
{
	size_t n = plan->sched->p.n;
	int ret;

	spardl_arena_open(&plan->arena, n > SIZE_MAX / 8 ? SIZE_MAX / 4 : ARENA_RESERVE_MIN + n * sizeof(float));
	ret = alloc_buffers(plan);
	spardl_arena_trim(&plan->arena);
	return ret;
}

/* The endpoint: the schedule's peers, who writes where, and how large the
 * receive region of each rank written to must be (from its schedule). */
static int connect_peers(struct spardl_plan *plan)
{
	const struct spardl_sched *s = plan->sched;
	struct spardl_tp_peer *peers = plan->tp_peers;
	int i, ret;
	uint32_t j;

	for (i = 0; i < s->npeers; i++) {
		peers[i].rank = s->peers[i];
		for (j = 0; j < s->nwrites; j++)
			if (s->writes[j].peer == s->peers[i])
				peers[i].flags |= SPARDL_TP_PEER_WRITTEN;
		for (j = 0; j < s->nrslots; j++)
			if (s->rslots[j].peer == s->peers[i])
				peers[i].flags |= SPARDL_TP_PEER_WRITES_HERE;
		if (peers[i].flags & SPARDL_TP_PEER_WRITTEN)
			peers[i].remote_len = 2 * plan->peer_half[s->peers[i]];
	}
	/* Collective, with the same result on every rank. */
	plan->comm->tp->trace = plan->trace;
	ret = plan->ops->ep_create(plan->comm->tp, peers, s->npeers, 2 * s->npieces, plan->recv, &plan->ep);
	plan->comm->tp->trace = NULL;
	if (!ret)
		plan->ep->trace = plan->trace;
	return ret;
}

/* The plan's schedule parameters, first in its trace (trace.h). */
static void trace_plan(struct spardl_trace_buf *b, const struct spardl_sched_params *sp)
{
	struct spardl_trace_rec *r = spardl_trace_ev(b, SPARDL_TR_PLAN, sp->size, 0);

	if (!r)
		return;
	r->step = (uint32_t)sp->rank;
	r->a = sp->n;
	r->b = sp->k;
	r->call = sp->max_write;
	r->qpn = (uint32_t)sp->teams;
	r->imm = (uint32_t)sp->algo | (uint32_t)sp->sag << 8 | (uint32_t)sp->srs << 16 | (uint32_t)!!sp->residual << 24 |
		 (uint32_t)!!sp->average << 25;
}

SPARDL_API void spardl_plan_destroy(struct spardl_plan *plan)
{
	if (!plan)
		return;
	/* First: calls may still be queued on a stream. */
	spardl_cuda_comm_drain(plan->comm);
	spardl_cuda_plan_free(plan);
	if (plan->ep)
		plan->ops->ep_destroy(plan->ep);
	spardl_trace_buf_free(plan->trace);
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
	spardl_arena_free(&plan->arena, plan->arrived[0]);
	spardl_arena_free(&plan->arena, plan->arrived[1]);
	spardl_arena_free(&plan->arena, plan->slot_len);
	spardl_arena_free(&plan->arena, plan->send_len);
	spardl_arena_free(&plan->arena, plan->regs);
	spardl_arena_free(&plan->arena, plan->mlists);
	spardl_arena_free(&plan->arena, plan->heap);
	spardl_arena_free(&plan->arena, plan->lbuf);
	spardl_arena_free(&plan->arena, plan->u_idx);
	spardl_arena_free(&plan->arena, plan->u_val);
	spardl_arena_free(&plan->arena, plan->undo);
	spardl_arena_free(&plan->arena, plan->useg);
	spardl_arena_free(&plan->arena, plan->final_bits);
	spardl_arena_free(&plan->arena, plan->pend_bits);
	spardl_arena_free(&plan->arena, plan->cand);
	spardl_arena_free(&plan->arena, plan->cand_val);
	spardl_arena_free(&plan->arena, plan->cand_n);
	spardl_arena_free(&plan->arena, plan->cand_lo);
	spardl_arena_free(&plan->arena, plan->blk_lidx);
	spardl_arena_free(&plan->arena, plan->blk_lval);
	spardl_arena_free(&plan->arena, plan->lval);
	spardl_arena_free(&plan->arena, plan->blk_lcnt);
	spardl_arena_free(&plan->arena, plan->blk_nl);
	spardl_arena_free(&plan->arena, plan->blk_defer);
	spardl_arena_free(&plan->arena, plan->blk_test);
	spardl_arena_free(&plan->arena, plan->blk_def);
	spardl_arena_free(&plan->arena, plan->blk_late);
	spardl_arena_free(&plan->arena, plan->blk_unformed);
	free(plan->peer_half);
	spardl_arena_free(&plan->arena, plan->gone);
	spardl_arena_free(&plan->arena, plan->flight);
	spardl_arena_free(&plan->arena, plan->tp_peers);
	spardl_arena_free(&plan->arena, plan->events);
	spardl_arena_close(&plan->arena);
	spardl_sched_free(plan->sched);
	free(plan);
}

SPARDL_API int spardl_plan_create(struct spardl_comm *comm, const struct spardl_plan_params *params,
				  struct spardl_plan **plan_out)
{
	struct spardl_plan_params p;
	struct spardl_sched_params sp;
	struct spardl_plan *plan = NULL;
	char msg[400] = "";
	int status, ret;

	if (!comm || !params || !plan_out)
		return spardl_error(-EINVAL, "spardl_plan_create: %s is NULL",
				    !comm ? "comm" : !params ? "params" : "plan_out");
	ret = spardl_cuda_comm_drain(comm);
	if (ret)
		return ret;
	resolve(params, &p);
	status = auto_teams(&p, comm->size);
	if (!status)
		status = validate(&p, comm->size, msg, sizeof(msg));
	else
		snprintf(msg, sizeof(msg), "choosing the teams: %s", spardl_last_error());
	if (!status && p.mem_type == SPARDL_MEM_CUDA)
		status = cuda_plan_status(msg, sizeof(msg));
	if (status)
		status = spardl_error(status, "spardl_plan_create: rank %d: %s", comm->rank, msg);
	/* Agree before failing: a rank that returned early would leave the
	 * others waiting in the exchange. */
	ret = agree_params(comm, &p, status);
	if (ret)
		return ret;
	plan = calloc(1, sizeof(*plan));
	if (plan) {
		plan->comm = comm;
		plan->params = p;
		plan->ops = comm->tp_ops;
		plan->peer_half = calloc((size_t)comm->size, sizeof(*plan->peer_half));
		plan->host_bytes = sizeof(*plan) + (size_t)comm->size * sizeof(*plan->peer_half);
	}
	if (!plan || !plan->peer_half) {
		ret = spardl_error(-ENOMEM, "out of memory for a plan");
	} else {
		sched_params(&p, comm->size, comm->rank, plan_max_write(&p, comm->size, comm->max_write), &sp);
		ret = spardl_trace_buf_new(comm->trace, &plan->trace);
		if (!ret)
			trace_plan(plan->trace, &sp);
		if (!ret)
			ret = compile_all(plan, &sp);
		if (!ret)
			ret = alloc_local(plan);
		if (!ret && p.mem_type == SPARDL_MEM_CUDA)
			ret = spardl_cuda_plan_init(plan);
	}
	ret = spardl_bootstrap_exchange(comm->bs, ret, "compile its schedule and allocate the plan's memory", NULL,
					NULL, 0);
	if (!ret)
		ret = connect_peers(plan);
	if (ret) {
		spardl_plan_destroy(plan);
		return ret;
	}
	SPARDL_DEBUG("plan: n=%zu k=%llu algo=%d teams=%d, %d peers, send %llu B, receive 2 x %llu B, %zu B host memory, %zu B registered",
		     p.count, (unsigned long long)sp.k, p.algo, sp.teams, plan->sched->npeers,
		     (unsigned long long)plan->sched->send_bytes, (unsigned long long)plan->sched->recv_bytes,
		     plan->host_bytes, plan->registered_bytes);
	*plan_out = plan;
	return 0;
}

/* A host plan's call, after any CUDA plan's calls on the communicator. */
static int host_call(struct spardl_plan *plan, const float *grad, float *out, int64_t *indices, float *values,
		     size_t *nnz_out)
{
	int ret = spardl_cuda_comm_drain(plan->comm);

	return ret ? ret : spardl_exec(plan, grad, out, indices, values, nnz_out);
}

SPARDL_API int spardl_allreduce(struct spardl_plan *plan, void *grad)
{
	if (!plan || !grad)
		return spardl_error(-EINVAL, "spardl_allreduce: %s is NULL", !plan ? "plan" : "grad");
	if (plan->cuda)
		return spardl_cuda_call(plan, grad, NULL, NULL, NULL, NULL, 1);
	return host_call(plan, grad, grad, NULL, NULL, NULL);
}

SPARDL_API int spardl_allreduce_sparse(struct spardl_plan *plan, const void *grad, int64_t *indices,
				       void *values, size_t *nnz_out)
{
	if (!plan || !grad || !indices || !values || !nnz_out)
		return spardl_error(-EINVAL, "spardl_allreduce_sparse: %s is NULL",
				    !plan ? "plan" : !grad ? "grad" : !indices ? "indices" : !values ? "values" : "nnz_out");
	if (plan->cuda)
		return spardl_cuda_call(plan, grad, indices, values, nnz_out, NULL, 1);
	return host_call(plan, grad, NULL, indices, values, nnz_out);
}

static int host_stream(const char *fn, void *stream)
{
	return spardl_error(-EINVAL,
			    "%s: a stream was given for a SPARDL_MEM_HOST plan: pass NULL (the call then runs at once), or create the plan with SPARDL_MEM_CUDA",
			    fn);
}

SPARDL_API int spardl_allreduce_async(struct spardl_plan *plan, void *grad, void *stream)
{
	if (!plan || !grad)
		return spardl_error(-EINVAL, "spardl_allreduce_async: %s is NULL", !plan ? "plan" : "grad");
	if (plan->cuda)
		return spardl_cuda_call(plan, grad, NULL, NULL, NULL, stream, 0);
	if (stream)
		return host_stream("spardl_allreduce_async", stream);
	return host_call(plan, grad, grad, NULL, NULL, NULL);
}

SPARDL_API int spardl_allreduce_sparse_async(struct spardl_plan *plan, const void *grad, int64_t *indices,
					     void *values, size_t *nnz_out, void *stream)
{
	if (!plan || !grad || !indices || !values || !nnz_out)
		return spardl_error(-EINVAL, "spardl_allreduce_sparse_async: %s is NULL",
				    !plan ? "plan" : !grad ? "grad" : !indices ? "indices" : !values ? "values" : "nnz_out");
	if (plan->cuda)
		return spardl_cuda_call(plan, grad, indices, values, nnz_out, stream, 0);
	if (stream)
		return host_stream("spardl_allreduce_sparse_async", stream);
	return host_call(plan, grad, NULL, indices, values, nnz_out);
}

SPARDL_API int spardl_plan_sync(struct spardl_plan *plan)
{
	if (!plan)
		return spardl_error(-EINVAL, "spardl_plan_sync: plan is NULL");
	if (plan->cuda)
		return spardl_cuda_sync(plan);
	if (plan->failed)
		return spardl_error_quiet(plan->failed, "an earlier call on this plan failed: %s",
					  spardl_strerror(plan->failed));
	return 0;
}

SPARDL_API size_t spardl_plan_max_nnz(const struct spardl_plan *plan)
{
	return plan ? plan->sched->result_pairs : 0;
}

SPARDL_API int spardl_plan_residual(struct spardl_plan *plan, const void **residual_out)
{
	if (!plan || !residual_out)
		return spardl_error(-EINVAL, "spardl_plan_residual: %s is NULL", !plan ? "plan" : "residual_out");
	spardl_exec_settle(plan);
	if (plan->cuda)
		return spardl_cuda_residual(plan, (plan->res ? plan->res : plan->acc)->addr, residual_out);
	if (plan->comm->cuda_done) {
		int ret = spardl_cuda_comm_drain(plan->comm);

		if (ret)
			return ret;
	}
	*residual_out = (plan->res ? plan->res : plan->acc)->addr;
	return 0;
}

SPARDL_API int spardl_plan_set_residual(struct spardl_plan *plan, const void *residual)
{
	if (!plan || !residual)
		return spardl_error(-EINVAL, "spardl_plan_set_residual: %s is NULL", !plan ? "plan" : "residual");
	if (!plan->params.residual)
		return spardl_error(-EINVAL, "spardl_plan_set_residual: this plan was created with residual = 0");
	spardl_exec_settle(plan);
	if (plan->cuda) {
		int ret = spardl_cuda_set_residual(plan, (plan->res ? plan->res : plan->acc)->addr, residual);

		if (ret)
			return ret;
	} else {
		memcpy((plan->res ? plan->res : plan->acc)->addr, residual, plan->params.count * sizeof(float));
	}
	plan->res_dirty = 1;
	return 0;
}

/* Writes the first size bytes of a struct the library filled in full: a
 * binary built against an older, shorter struct gets its fields only. */
static int copy_out(void *dst, size_t size, const void *src, size_t full, const char *fn)
{
	if (size < sizeof(uint64_t))
		return spardl_error(-EINVAL, "%s: size %zu is smaller than the first field", fn, size);
	memcpy(dst, src, size < full ? size : full);
	if (size > full)
		memset((uint8_t *)dst + full, 0, size - full);
	return 0;
}

SPARDL_API int spardl_plan_info_sized(const struct spardl_plan *plan, struct spardl_plan_info *info_out,
				      size_t info_size)
{
	struct spardl_plan_info i;

	if (!plan || !info_out)
		return spardl_error(-EINVAL, "spardl_plan_info: %s is NULL", !plan ? "plan" : "info_out");
	memset(&i, 0, sizeof(i));
	i.count = plan->params.count;
	i.k = plan->sched->p.k;
	i.block_size = plan->sched->block_size;
	i.block_budget = plan->sched->kb;
	i.team_size = plan->sched->team_size;
	i.teams = plan->sched->p.teams;
	i.host_bytes = plan->host_bytes;
	i.registered_bytes = plan->registered_bytes;
	i.device_bytes = plan->device_bytes;
	i.max_write = plan->sched->p.max_write;
	i.peers = (size_t)plan->sched->npeers;
	return copy_out(info_out, info_size, &i, sizeof(i), "spardl_plan_info");
}

/* The 0.1 entry point, for binaries built before the size argument. */
SPARDL_API int(spardl_plan_info)(const struct spardl_plan *plan, struct spardl_plan_info *info_out)
{
	return spardl_plan_info_sized(plan, info_out, SPARDL_PLAN_INFO_SIZE_V1);
}

SPARDL_API int spardl_plan_stats_sized(const struct spardl_plan *plan, struct spardl_plan_stats *stats_out,
				       size_t stats_size)
{
	if (!plan || !stats_out)
		return spardl_error(-EINVAL, "spardl_plan_stats: %s is NULL", !plan ? "plan" : "stats_out");
	return copy_out(stats_out, stats_size, &plan->stats, sizeof(plan->stats), "spardl_plan_stats");
}

SPARDL_API int(spardl_plan_stats)(const struct spardl_plan *plan, struct spardl_plan_stats *stats_out)
{
	return spardl_plan_stats_sized(plan, stats_out, SPARDL_PLAN_STATS_SIZE_V1);
}

SPARDL_API int spardl_plan_schedule_text(const struct spardl_plan *plan, char **text_out)
{
	if (!plan || !text_out)
		return spardl_error(-EINVAL, "spardl_plan_schedule_text: %s is NULL", !plan ? "plan" : "text_out");
	return spardl_sched_render(plan->sched, text_out);
}
