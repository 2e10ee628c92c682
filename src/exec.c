/* SPDX-License-Identifier: MIT */
/* The executor: runs a compiled schedule for one call, step by step, and undoes a failed one. */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <string.h>
#include <time.h>

#include "copy.h"
#include "core.h"
#include "fp.h"
#include "log.h"

int (*spardl_exec_step_hook)(const struct spardl_plan *plan, uint64_t call, uint32_t step);
int (*spardl_exec_piece_hook)(const struct spardl_plan *plan, uint64_t call, uint32_t step, uint32_t piece);
size_t spardl_pend_min_n = SPARDL_PEND_MIN_N;
int spardl_dense_direct = 1;

struct call {
	struct spardl_plan *plan;
	const struct spardl_sched *s;
	unsigned parity;
	const float *grad;
	const float *src; /* dense: grad + residual, acc or (with no residual) grad itself */
	struct spardl_tp_mr src_mr; /* src == grad, written from directly (SPARDL_TP_CAP_HOST_SOURCE) */
	float *out;        /* dense output (NULL in sparse mode) */
	int64_t *indices;  /* sparse output */
	float *values;
	size_t nnz;
	uint32_t step;
	uint64_t pairs; /* index-value pairs the current op produced or consumed (tracing) */
	int direct;     /* the current step's write was stored directly (SPARDL_TP_WRITE_DIRECT) */
	int fwd_out;    /* the current step's write sends the output chunk the last add wrote */
	/* The dense ring's own output chunk, written by its last add: the
	 * receive slot early_slot holds what out[early_off ..) held before,
	 * for a rollback (UINT32_MAX: not written early). */
	uint32_t early_slot;
	uint64_t early_off, early_len;
	/* Accumulate ops run so far: a rollback before the call's first one
	 * accumulates then. */
	uint32_t acc_ops;
	/* Blocks whose accumulate pass waits for their list (blk_unformed). */
	uint32_t late_left;
	/* The call is in place with a dense-layout output and acc keeps all
	 * of grad (a sparse algorithm with a residual): the accumulate pass
	 * zeroes grad as it reads it, so the output writes only the result's
	 * entries (op_output), and a failed call leaves grad zero, its values
	 * in the residual (rollback, absorb). */
	int clear;
	/* Seconds in the accumulate pass and in the dense-layout output;
	 * late_s: the part of the current op that was accumulate passes. */
	double acc_s, out_s, late_s;
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static float *acc_of(struct spardl_plan *p)
{
	return p->acc->addr;
}

/* Dense algorithm only. */
static float *res_of(struct spardl_plan *p)
{
	return p->res->addr;
}

static uint8_t *recv_slot(struct call *c, uint32_t slot)
{
	return (uint8_t *)c->plan->recv->addr + (size_t)c->parity * c->s->recv_bytes + c->s->rslots[slot].off;
}

static int protocol_error(struct call *c, const char *what, uint32_t slot)
{
	const struct spardl_rslot *rs = &c->s->rslots[slot];

	return spardl_error(-SPARDL_ERR_PROTOCOL, "rank %d: malformed message from rank %d (%s round %u, slot %u, step %u): %s",
			    c->s->p.rank, rs->peer, spardl_phase_name(rs->phase), rs->round, slot, c->step,
			    what);
}

/* Record one notification after checking it against the schedule. */
static int accept_event(struct call *c, const struct spardl_tp_event *ev)
{
	const struct spardl_sched *s = c->s;
	uint32_t piece, slot, par = ev->imm >> 31;
	uint64_t *a;
	int ret;

	if (ev->peer < 0 || ev->peer >= s->p.size || ev->peer == s->p.rank)
		return spardl_error(-SPARDL_ERR_PROTOCOL, "rank %d: a notification names rank %d, not a peer",
				    s->p.rank, ev->peer);
	if (ev->type == SPARDL_TP_EV_PEER_GONE || ev->type == SPARDL_TP_EV_PEER_ABORT) {
		c->plan->gone[ev->peer] = ev->type == SPARDL_TP_EV_PEER_ABORT ? 2 : 1;
		SPARDL_DEBUG("rank %d %s", ev->peer,
			     ev->type == SPARDL_TP_EV_PEER_ABORT ? "aborted its call" : "exited or disconnected");
		return 0;
	}
	ret = spardl_sched_check_notify(s, ev->peer, ev->imm, ev->len, &piece, &slot);
	if (ret)
		return spardl_error_wrap(ret, "rank %d (step %u of call %llu)", s->p.rank, c->step,
					 (unsigned long long)c->plan->calls);
	a = &c->plan->arrived[par][piece];
	if (*a != SPARDL_NOT_ARRIVED)
		return spardl_error(-SPARDL_ERR_PROTOCOL,
				    "rank %d: rank %d wrote piece %u of slot %u (%s round %u) twice in one call",
				    s->p.rank, ev->peer, piece - s->rslots[slot].piece0, slot,
				    spardl_phase_name(s->rslots[slot].phase), s->rslots[slot].round);
	*a = ev->len;
	if (c->plan->trace) {
		struct spardl_trace_rec *r = spardl_trace_ev(c->plan->trace, SPARDL_TR_NOTIFY, ev->peer, slot);

		/* A notification of the next call can come during this one. */
		r->call = c->plan->calls + (par != c->parity);
		r->imm = ev->imm;
		r->a = ev->len;
		r->phase = (uint8_t)((ev->imm >> 28) & 7);
		r->round = (uint16_t)s->rslots[slot].round;
	}
	return 0;
}

/* Whether pieces [first, end) of a slot have arrived. */
static int pieces_arrived(struct call *c, uint32_t slot, uint32_t first, uint32_t end)
{
	const struct spardl_rslot *rs = &c->s->rslots[slot];
	const uint64_t *a = c->plan->arrived[c->parity];
	uint32_t i;

	for (i = first; i < end; i++)
		if (a[rs->piece0 + i] == SPARDL_NOT_ARRIVED)
			return 0;
	return 1;
}

/* All pieces are in: they must form one message (full pieces, then at most
 * one short one, then empty ones), of exactly the slot's size where the
 * schedule says so. */
static int slot_complete(struct call *c, uint32_t slot)
{
	const struct spardl_rslot *rs = &c->s->rslots[slot];
	const uint64_t *a = c->plan->arrived[c->parity];
	uint64_t total = 0;
	int ended = 0;
	uint32_t i;

	for (i = 0; i < rs->npieces; i++) {
		uint64_t len = a[rs->piece0 + i];

		if (ended && len)
			return protocol_error(c, "a piece after the end of the message", slot);
		ended = len < spardl_piece_max(rs->max, c->s->p.max_write, i);
		total += len;
	}
	if (rs->exact && total != rs->max)
		return protocol_error(c, "a dense chunk of the wrong length", slot);
	c->plan->slot_len[slot] = total;
	return 0;
}

/* One flight-recorder event of this call's current step. */
static struct spardl_flight_ev *flight(struct call *c, unsigned kind, unsigned phase, unsigned round, int peer)
{
	struct spardl_flight_ev *e = spardl_flight_next(c->plan->flight);

	e->t = now_s();
	e->call = c->plan->calls;
	e->step = c->step;
	e->kind = (uint8_t)kind;
	e->phase = (uint8_t)phase;
	e->round = (uint16_t)round;
	e->peer = peer;
	e->slot = 0;
	e->bytes = 0;
	e->imm = 0;
	return e;
}

static const char *gone_why(int g)
{
	return g == 2 ? "failed its own call and aborted the plan (see its log)" : "exited or disconnected";
}

/* Wait for pieces [first, end) of a slot (every wait of a call has the
 * communicator's timeout; a peer known gone fails it at once). */
static int wait_pieces(struct call *c, uint32_t slot, uint32_t first, uint32_t end)
{
	struct spardl_plan *p = c->plan;
	const struct spardl_rslot *rs = &c->s->rslots[slot];
	int timeout = p->comm->timeout_ms, ret, i, n, drained = 0;
	double t0 = now_s(), waited = 0;

	if (!pieces_arrived(c, slot, first, end)) {
		struct spardl_trace_rec *r = spardl_trace_ev(p->trace, SPARDL_TR_WAIT, rs->peer, slot);

		if (r) {
			r->phase = rs->phase;
			r->round = (uint16_t)rs->round;
		}
		flight(c, SPARDL_FL_WAIT, rs->phase, rs->round, rs->peer)->slot = slot;
	}
	while (!pieces_arrived(c, slot, first, end)) {
		/* A peer that wrote and then left: its notification may still be
		 * queued behind the news that it left, so drain first. */
		if (p->gone[rs->peer] && !drained) {
			drained = 1;
			n = p->ops->poll(p->ep, p->events, SPARDL_MAX_EVENTS, 0);
			for (i = 0; i < n; i++) {
				ret = accept_event(c, &p->events[i]);
				if (ret)
					return ret;
			}
			if (n != 0) {
				drained = n < 0 ? 1 : 0;
				continue;
			}
		}
		if (p->gone[rs->peer])
			return spardl_error(-ECONNRESET,
					    "rank %d: waiting for rank %d (%s round %u, step %u of call %llu): rank %d %s before its write arrived",
					    c->s->p.rank, rs->peer, spardl_phase_name(rs->phase), rs->round, c->step,
					    (unsigned long long)p->calls, rs->peer, gone_why(p->gone[rs->peer]));
		n = p->ops->poll(p->ep, p->events, SPARDL_MAX_EVENTS, timeout - (int)(waited * 1000));
		if (n < 0)
			return spardl_error_wrap(n, "rank %d: waiting for rank %d (%s round %u, step %u of call %llu)",
					    c->s->p.rank, rs->peer,
					    spardl_phase_name(rs->phase), rs->round, c->step,
					    (unsigned long long)p->calls);
		for (i = 0; i < n; i++) {
			ret = accept_event(c, &p->events[i]);
			if (ret)
				return ret;
		}
		waited = now_s() - t0;
		if (!pieces_arrived(c, slot, first, end) && waited * 1000 >= timeout)
			return spardl_error(-ETIMEDOUT,
					    "rank %d: timed out after %.1f s waiting for rank %d (%s round %u, step %u of call %llu); the peer may have died or stalled, or ranks call different plans; raise SPARDL_TIMEOUT if it is only slow",
					    c->s->p.rank, waited, rs->peer, spardl_phase_name(rs->phase), rs->round,
					    c->step, (unsigned long long)p->calls);
	}
	p->stats.wait += now_s() - t0;
	return 0;
}

/* The arrival of bytes of a slot, in the flight recorder and the trace. */
static void arrived_ev(struct call *c, uint32_t slot, uint64_t bytes)
{
	const struct spardl_rslot *rs = &c->s->rslots[slot];
	struct spardl_flight_ev *e = flight(c, SPARDL_FL_ARRIVED, rs->phase, rs->round, rs->peer);
	struct spardl_trace_rec *r = spardl_trace_ev(c->plan->trace, SPARDL_TR_ARRIVED, rs->peer, slot);

	e->slot = slot;
	e->bytes = bytes;
	if (r) {
		r->phase = rs->phase;
		r->round = (uint16_t)rs->round;
		r->a = bytes;
	}
}

static int wait_slot(struct call *c, uint32_t slot)
{
	int ret = wait_pieces(c, slot, 0, c->s->rslots[slot].npieces);

	if (!ret)
		ret = slot_complete(c, slot);
	if (!ret)
		arrived_ev(c, slot, c->plan->slot_len[slot]);
	return ret;
}

/* Changes are logged in runs (one per op and block) sorted by position, so
 * the residual update can test them against the sorted final set by merging. */
static void undo_run(struct spardl_plan *p)
{
	p->useg[p->nuseg++] = p->nundo;
}

/* A run of a selection whose zeros were not written: acc still holds the
 * logged values there, and the residual update writes the zeros only
 * where the final set keeps them. */
#define RUN_LAZY ((size_t)1 << 63)
/* A lazy run that is the owner's selection of a block whose final set
 * holds it whole (plan_deferrable): every entry is a final position, so
 * none is tested. */
#define RUN_FINAL ((size_t)1 << 62)

static size_t run_start(const struct spardl_plan *p, size_t r)
{
	return p->useg[r] & ~(RUN_LAZY | RUN_FINAL);
}

/* The sparse algorithms with a residual log every change to acc. */
static int logging(const struct call *c)
{
	return c->s->res_mode == SPARDL_RES_GRC || c->s->res_mode == SPARDL_RES_LOCAL;
}

static void log_undo(struct spardl_plan *p, uint64_t j, float old)
{
	p->undo[p->nundo].pos = j;
	p->undo[p->nundo].old = old;
	p->nundo++;
}

/* Where a loop logs one change per entry: the next free entries of the log
 * (the loop keeps its own count; p->nundo, which the log's stores could
 * alias, is advanced once after it). */
static struct spardl_undo *log_next(struct spardl_plan *p)
{
	return p->undo + p->nundo;
}

/* acc[block b] = grad + residual there, with no pending zeros (or grad
 * alone without a residual). */
static void acc_block_plain(struct call *c, uint32_t b)
{
	const struct spardl_sched *s = c->s;
	uint64_t off = (uint64_t)b * s->block_size, len = spardl_block_len(s->p.n, s->block_size, b);
	float *restrict a = acc_of(c->plan) + off;
	const float *restrict gb = c->grad + off;

	if (s->res_mode == SPARDL_RES_OFF)
		memcpy(a, gb, len * sizeof(float));
	else
		/* The sums only (vectorized, prefetched): no key reaches UINT32_MAX. */
		(void)spardl_topk_acc_gather_at(a, gb, len, 1, UINT32_MAX, NULL, NULL, 0, NULL, 0, c->clear);
}

/* acc = grad + residual: one streaming pass, in place where acc is the
 * residual. The sparse algorithms gather each block's selection candidates
 * in the same pass, so a selection rarely has to scan its block again. */
static void op_acc_init(struct call *c)
{
	struct spardl_plan *p = c->plan;
	const struct spardl_sched *s = c->s;
	float *restrict acc = acc_of(p);
	const float *restrict g = c->grad;
	int add = s->res_mode != SPARDL_RES_OFF;
	size_t n = s->p.n, i;
	uint32_t b;

	c->acc_ops++;
	if (p->res) {
		spardl_exec_settle(p);
		if (!add || !p->res_dirty) {
			/* acc would be grad itself: the ring reads grad. The
			 * chunks it writes from acc are copied there, unless
			 * the transport can write from grad directly. */
			c->src = g;
			if (p->comm->tp->caps & SPARDL_TP_CAP_HOST_SOURCE) {
				c->src_mr.addr = (void *)g;
				c->src_mr.len = n * sizeof(float);
				c->src_mr.alloc_len = c->src_mr.len;
				c->src_mr.mem_type = SPARDL_MEM_HOST;
				return;
			}
			for (i = 0; i < s->nsslots; i++) {
				const struct spardl_sslot *ss = &s->sslots[i];

				if (ss->region == SPARDL_REG_ACC)
					spardl_copy((uint8_t *)acc + ss->off, (const uint8_t *)g + ss->off, ss->max);
			}
		} else {
			const float *restrict r = res_of(p);

			for (i = 0; i < n; i++)
				acc[i] = spardl_add(g[i], r[i]);
			c->src = acc;
		}
		return;
	}
	for (b = 0; b < s->nblocks; b++) {
		uint64_t off = (uint64_t)b * s->block_size, len = spardl_block_len(s->p.n, s->block_size, b);
		float *restrict a = acc + off;
		const float *restrict gb = g + off;
		/* The residual's pending zeros are applied as acc is read. */
		const uint64_t *z = p->pend ? p->pend_bits + b * p->pend_wpb : NULL;
		/* Candidates exist only where blocks are long enough to sample. */
		uint32_t lo = p->cand && !(p->blk_late && p->blk_late[b]) ?
				      spardl_topk_bound(gb, add ? a : NULL, z, len, s->kb) :
				      0;

		if (p->cand) {
			p->blk_nl[b] = 0;
			p->blk_def[b] = 0;
			p->cand_lo[b] = lo;
			p->cand_n[b] = SIZE_MAX;
		}
		if (p->blk_late && p->blk_late[b]) {
			/* Formed with its list (acc_late). */
			p->blk_unformed[b] = 1;
			c->late_left++;
			continue;
		}
		if (lo) {
			p->cand_n[b] = spardl_topk_acc_gather_at(a, gb, len, add, lo, p->cand + b * p->cand_cap,
								 p->cand_val + b * p->cand_cap, p->cand_cap, z, 0,
								 c->clear);
		} else {
			if (!add)
				memcpy(a, gb, len * sizeof(float));
			else if (z)
				/* The sums only: no key reaches UINT32_MAX. */
				(void)spardl_topk_acc_gather_at(a, gb, len, 1, UINT32_MAX, NULL, NULL, 0, z, 0,
								c->clear);
			else
				acc_block_plain(c, b);
		}
	}
	if (p->pend) {
		/* A late block's zeros stay pending until its pass. */
		for (b = 0; b < s->nblocks; b++)
			if (!(p->blk_late && p->blk_late[b]))
				memset(p->pend_bits + b * p->pend_wpb, 0, p->pend_wpb * sizeof(*p->pend_bits));
		p->pend = c->late_left != 0;
	}
}

/* Entries of a late block formed at a time: a part of acc and grad that
 * stays in L2 until the list's sums in it are made. */
#define LATE_CHUNK 16384u

/* The accumulate pass of a late block (blk_late), at its scatter: acc =
 * grad + residual as op_acc_init would form it, candidates included, and,
 * part by part while the part is still in cache, keep[j] = acc + the list's
 * value at each of the list's positions (l NULL: the pass alone). */
static void acc_late(struct call *c, uint32_t b, const struct spardl_list *l, float *keep)
{
	struct spardl_plan *p = c->plan;
	const struct spardl_sched *s = c->s;
	uint64_t off = (uint64_t)b * s->block_size, len = spardl_block_len(s->p.n, s->block_size, b), at;
	float *restrict a = acc_of(p) + off;
	const float *restrict gb = c->grad + off;
	uint64_t *z = p->pend ? p->pend_bits + b * p->pend_wpb : NULL;
	uint32_t lo = spardl_topk_bound(gb, a, z, len, s->kb), *cidx = p->cand + (size_t)b * p->cand_cap, j = 0;
	float *cval = p->cand_val + (size_t)b * p->cand_cap;
	/* SIZE_MAX: no candidates (none sampled, or more than cand_cap). */
	size_t n = lo ? 0 : SIZE_MAX;
	double t0 = now_s();

	for (at = 0; at < len; at += LATE_CHUNK) {
		size_t part = len - at < LATE_CHUNK ? (size_t)(len - at) : LATE_CHUNK, got;
		const uint64_t *zp = z ? z + at / 64 : NULL;

		if (n == SIZE_MAX) {
			/* The sums only: no key reaches UINT32_MAX. */
			(void)spardl_topk_acc_gather_at(a + at, gb + at, part, 1, UINT32_MAX, NULL, NULL, 0, zp,
							(uint32_t)at, c->clear);
		} else {
			got = spardl_topk_acc_gather_at(a + at, gb + at, part, 1, lo, cidx + n, cval + n,
							p->cand_cap - n, zp, (uint32_t)at, c->clear);
			n = got == SIZE_MAX ? SIZE_MAX : n + got;
		}
		if (l)
			for (; j < l->count && l->idx[j] < at + part; j++)
				keep[j] = spardl_add(a[l->idx[j]], l->val[j]);
	}
	p->cand_lo[b] = lo;
	p->cand_n[b] = n;
	if (z)
		memset(z, 0, p->pend_wpb * sizeof(*z));
	p->blk_unformed[b] = 0;
	if (!--c->late_left)
		/* Every other block's zeros were taken by op_acc_init. */
		p->pend = 0;
	c->late_s += now_s() - t0;
}

void spardl_exec_settle(struct spardl_plan *plan)
{
	const struct spardl_sched *s = plan->sched;
	float *acc = acc_of(plan);
	size_t w, b;

	if (!plan->pend)
		return;
	for (b = 0; b < s->nblocks; b++) {
		float *x = acc + b * s->block_size;
		uint64_t *z = plan->pend_bits + b * plan->pend_wpb;

		for (w = 0; w < plan->pend_wpb; w++) {
			uint64_t bits = z[w];

			while (bits) {
				x[w * 64 + (size_t)__builtin_ctzll(bits)] = 0.0f;
				bits &= bits - 1;
			}
			z[w] = 0;
		}
	}
	plan->pend = 0;
}

/* Before a scan of block b: the sums its list kept aside go to acc, logged
 * as the scatter would have logged them. */
static void apply_deferred(struct call *c, uint32_t b)
{
	struct spardl_plan *p = c->plan;
	size_t at = (size_t)b * p->max_lists;
	const uint32_t *idx = p->blk_lidx[at];
	const float *sum = p->blk_lval[at];
	float *x = acc_of(p) + (size_t)b * c->s->block_size;
	uint32_t j, n = p->blk_lcnt[at];
	struct spardl_undo *u;

	undo_run(p);
	u = log_next(p);
	for (j = 0; j < n; j++) {
		u[j].pos = (uint64_t)b * c->s->block_size + idx[j];
		u[j].old = x[idx[j]];
		x[idx[j]] = sum[j];
	}
	p->nundo += n;
	p->blk_def[b] = 0;
}

/* Select one block of acc into dst as a wire block; returns its bytes.
 * lazy: nothing reads this block of acc again before the residual update
 * (a block sent in SRS), so with GRC its selected entries are not zeroed
 * now; the update writes the zeros the final set keeps. */
static size_t select_block(struct call *c, uint32_t b, uint32_t m, uint8_t *dst, int lazy, int owner)
{
	struct spardl_plan *p = c->plan;
	const struct spardl_sched *s = c->s;
	uint64_t bs = s->block_size, len = spardl_block_len(s->p.n, bs, b);
	uint32_t *idx = spardl_wire_idx(dst);
	/* Values land after room for m indices, then move down behind the
	 * indices actually selected. */
	float *tmp = (float *)(idx + m), *x = acc_of(p) + (size_t)b * bs;

	size_t cnt = SIZE_MAX, i;
	/* 1: the selected entries are still to be zeroed in acc (the scan
	 * zeroes as it selects). */
	int zero = 0;

	/* With GRC the residual update writes a lazy run's zeros (or leaves
	 * them pending); plain error feedback leaves them all pending. */
	lazy = lazy && (s->res_mode == SPARDL_RES_GRC || (s->res_mode == SPARDL_RES_LOCAL && p->pend_bits));
	if (p->cand_n && p->cand_n[b] != SIZE_MAX) {
		cnt = spardl_topk_from_cands(m, p->cand_lo[b], p->cand + (size_t)b * p->cand_cap,
					     p->cand_val + (size_t)b * p->cand_cap, p->cand_n[b],
					     p->blk_lidx + (size_t)b * p->max_lists, p->blk_lval + (size_t)b * p->max_lists,
					     p->blk_lcnt + (size_t)b * p->max_lists, p->blk_nl[b], idx, tmp, &p->ws);
		zero = !lazy;
	}
	if (cnt == SIZE_MAX) {
		if (p->blk_def && p->blk_def[b])
			apply_deferred(c, b);
		cnt = spardl_topk_block(x, len, m, idx, tmp, &p->ws);
		p->stats.scans++;
		lazy = 0;
		zero = 0;
	}
	if (logging(c)) {
		undo_run(p);
		if (lazy)
			p->useg[p->nuseg - 1] |= RUN_LAZY;
		/* The owner's selection of a deferred block: its final set is
		 * the union of the owners' lists, this one whole. */
		if (lazy && owner && p->blk_defer && p->blk_defer[b] && s->res_mode == SPARDL_RES_GRC)
			p->useg[p->nuseg - 1] |= RUN_FINAL;
		struct spardl_undo *u = log_next(p);

		if (zero) {
			/* What acc held, which is not the selected value where
			 * a list's sums were kept aside (blk_def). */
			for (i = 0; i < cnt; i++) {
				if (i + PREFETCH_AHEAD < cnt)
					spardl_prefetch(&x[idx[i + PREFETCH_AHEAD]]);
				u[i].pos = (uint64_t)b * bs + idx[i];
				u[i].old = x[idx[i]];
				x[idx[i]] = 0.0f;
			}
		} else {
			/* A lazy run changed nothing: rollback skips it. */
			for (i = 0; i < cnt; i++) {
				u[i].pos = (uint64_t)b * bs + idx[i];
				u[i].old = tmp[i];
			}
		}
		p->nundo += cnt;
	} else if (zero) {
		spardl_zero_at(x, idx, cnt);
	}
	memmove(spardl_wire_val(dst, (uint32_t)cnt), tmp, cnt * sizeof(float));
	spardl_wire_put_hdr(dst, b, (uint32_t)cnt);
	c->pairs += cnt;
	return spardl_wire_bytes(cnt);
}

static void view(struct spardl_list *l, uint8_t *blk)
{
	(void)spardl_wire_view(blk, SIZE_MAX, UINT32_MAX, l);
}

static uint8_t *list_buf(struct spardl_plan *p, uint32_t buf)
{
	return p->lbuf + (size_t)buf * p->lbuf_bytes;
}

static void op_select(struct call *c, const struct spardl_op *op)
{
	struct spardl_plan *p = c->plan;
	const struct spardl_sched *s = c->s;
	uint8_t *dst, *pos;
	uint32_t i;

	if (op->dst_is_reg) {
		dst = list_buf(p, op->buf);
		select_block(c, op->b0 % s->nblocks, op->m, dst, p->own_lazy, 1);
		view(&p->regs[op->dst], dst);
		return;
	}
	dst = pos = (uint8_t *)p->send->addr + s->sslots[op->slot].off;
	for (i = 0; i < op->nb; i++)
		pos += select_block(c, (op->b0 + i) % s->nblocks, op->m, pos, 1, 0);
	p->send_len[op->slot] = (uint64_t)(pos - dst);
}

/* Decode list j of a received message, checking it against the schedule:
 * expected block id, count within budget, indices inside the block and
 * strictly increasing (the merges rely on it). */
static int decode(struct call *c, uint32_t slot, uint8_t **pos, uint8_t *end, uint32_t want_block,
		  struct spardl_list *l)
{
	const struct spardl_sched *s = c->s;
	const char *bad = spardl_wire_check(*pos, (size_t)(end - *pos), s->kb, want_block,
					    spardl_block_len(s->p.n, s->block_size, want_block), l);

	if (bad)
		return protocol_error(c, bad, slot);
	*pos += spardl_wire_bytes(l->count);
	return 0;
}

static int op_scatter(struct call *c, const struct spardl_op *op)
{
	struct spardl_plan *p = c->plan;
	const struct spardl_sched *s = c->s;
	uint8_t *pos = recv_slot(c, op->slot), *end = pos + p->slot_len[op->slot];
	float *acc = acc_of(p), *keep;
	struct spardl_undo *u;
	uint32_t i, j;
	int ret;

	for (i = 0; i < op->nb; i++) {
		uint32_t b = (op->b0 + i) % s->nblocks;
		struct spardl_list l;
		float *x = acc + (size_t)b * s->block_size;

		ret = decode(c, op->slot, &pos, end, b, &l);
		if (ret)
			return ret;
		/* A list the block's selection will union with its candidates
		 * keeps the sums it made, in list order, so the selection
		 * need not read them back from acc. */
		keep = NULL;
		if (p->blk_nl && p->blk_nl[b] < p->max_lists) {
			size_t at = (size_t)b * p->max_lists + p->blk_nl[b]++;

			keep = p->lval + at * s->kb;
			p->blk_lidx[at] = l.idx;
			p->blk_lval[at] = keep;
			p->blk_lcnt[at] = l.count;
		} else if (p->cand_n) {
			p->cand_n[b] = SIZE_MAX; /* more lists than planned: scan instead */
		}
		c->pairs += l.count;
		if (keep && p->blk_defer[b]) {
			/* Only the sums: acc keeps the rank's input here
			 * (plan_deferrable), nothing to log or undo. */
			if (p->blk_unformed[b])
				acc_late(c, b, &l, keep);
			else
				for (j = 0; j < l.count; j++) {
					if (j + PREFETCH_AHEAD < l.count)
						spardl_prefetch(&x[l.idx[j + PREFETCH_AHEAD]]);
					keep[j] = spardl_add(x[l.idx[j]], l.val[j]);
				}
			p->blk_def[b] = 1;
			continue;
		}
		if (p->blk_unformed && p->blk_unformed[b])
			acc_late(c, b, NULL, NULL);
		u = NULL;
		if (logging(c)) {
			undo_run(p);
			u = log_next(p);
		}
		for (j = 0; j < l.count; j++) {
			float *at = &x[l.idx[j]];

			if (j + PREFETCH_AHEAD < l.count)
				spardl_prefetch(&x[l.idx[j + PREFETCH_AHEAD]]);
			if (u) {
				u[j].pos = (uint64_t)b * s->block_size + l.idx[j];
				u[j].old = *at;
			}
			*at = spardl_add(*at, l.val[j]);
			if (keep)
				keep[j] = *at;
		}
		if (u)
			p->nundo += l.count;
	}
	if (pos != end)
		return protocol_error(c, "trailing bytes", op->slot);
	return 0;
}

static void op_send_lists(struct call *c, const struct spardl_op *op)
{
	struct spardl_plan *p = c->plan;
	const struct spardl_sched *s = c->s;
	uint8_t *dst = (uint8_t *)p->send->addr + s->sslots[op->slot].off, *pos = dst;
	uint32_t i;

	for (i = 0; i < op->nrl; i++) {
		pos += spardl_wire_put(pos, &p->regs[s->reglist[op->rl0 + i]]);
		c->pairs += p->regs[s->reglist[op->rl0 + i]].count;
	}
	p->send_len[op->slot] = (uint64_t)(pos - dst);
}

static int op_recv_lists(struct call *c, const struct spardl_op *op)
{
	struct spardl_plan *p = c->plan;
	const struct spardl_sched *s = c->s;
	uint8_t *pos = recv_slot(c, op->slot), *end = pos + p->slot_len[op->slot];
	uint32_t j;
	int ret;

	for (j = 0; j < op->nrl; j++) {
		uint32_t want = (uint32_t)(((uint64_t)op->b0 + (uint64_t)j * op->b_step) % s->nblocks);

		ret = decode(c, op->slot, &pos, end, want, &p->regs[op->r0 + j]);
		if (ret)
			return ret;
		c->pairs += p->regs[op->r0 + j].count;
	}
	if (pos != end)
		return protocol_error(c, "trailing bytes", op->slot);
	return 0;
}

static size_t merge_regs(struct call *c, const struct spardl_op *op)
{
	struct spardl_plan *p = c->plan;
	const struct spardl_sched *s = c->s;
	uint32_t i;

	for (i = 0; i < op->nrl; i++)
		p->mlists[i] = p->regs[s->reglist[op->rl0 + i]];
	return spardl_lists_merge(p->mlists, op->nrl, s->block_size, p->heap, p->u_idx, p->u_val);
}

/* Union of lists, keep topk(m); with shares, every dropped value returns to
 * acc times 2^-share_log2 (exact: a power of two). */
static void op_reduce(struct call *c, const struct spardl_op *op)
{
	struct spardl_plan *p = c->plan;
	const struct spardl_sched *s = c->s;
	uint8_t *dst = list_buf(p, op->buf);
	uint32_t block = p->regs[s->reglist[op->rl0]].block, *idx = spardl_wire_idx(dst);
	uint64_t base = (uint64_t)block * s->block_size;
	size_t n = merge_regs(c, op), ties, cnt = 0, i;
	float share = op->share_log2 ? ldexpf(1.0f, -(int)op->share_log2) : 0.0f;
	float *acc = acc_of(p), *val, *dval = p->ws.uv[0];
	struct spardl_thr t;
	uint32_t sink, *didx = p->ws.u[0];
	/* Dropped entries go aside when the workspace holds them (a share
	 * round merges two lists of at most m). */
	int aside = op->share_log2 && n <= p->ws.ucap;
	size_t nd = 0;

	/* The merged list's threshold as a selection from candidates finds
	 * it: from a sampled key range of its own keys where that holds it. */
	spardl_topk_threshold_list(p->u_val, n, op->m, &t, &p->ws);
	ties = t.ties;
	if (op->share_log2 && logging(c))
		undo_run(p);
	for (i = 0; i < n; i++) {
		uint32_t k = spardl_key(p->u_val[i]);
		size_t eq = (k == t.key) & (k != 0) & (ties != 0), keep = (k > t.key) | eq;
		uint64_t j = p->u_idx[i];
		float v = p->u_val[i];

		ties -= eq;
		/* Compact the kept values in place (cnt <= i), branch-free;
		 * past the last kept one the index goes to a sink. The
		 * dropped ones, with shares, are compacted aside. */
		*(cnt < t.count ? &idx[cnt] : &sink) = (uint32_t)(j - base);
		p->u_val[cnt] = v;
		cnt += keep;
		if (aside) {
			didx[nd] = (uint32_t)(j - base);
			dval[nd] = v;
			nd += !keep;
		} else if (op->share_log2 && !keep) {
			if (logging(c))
				log_undo(p, j, acc[j]);
			acc[j] = spardl_add(acc[j], v * share);
		}
	}
	/* The shares of the dropped values, their lines prefetched. */
	for (i = 0; i < nd; i++) {
		uint64_t j = base + didx[i];

		if (i + PREFETCH_AHEAD < nd)
			spardl_prefetch(&acc[base + didx[i + PREFETCH_AHEAD]]);
		if (logging(c))
			log_undo(p, j, acc[j]);
		acc[j] = spardl_add(acc[j], dval[i] * share);
	}
	val = spardl_wire_val(dst, (uint32_t)cnt);
	memcpy(val, p->u_val, cnt * sizeof(float));
	c->pairs += n;
	spardl_wire_put_hdr(dst, block, (uint32_t)cnt);
	view(&p->regs[op->dst], dst);
}

/* A lazy run's zeros (one block's selection) left pending for the next
 * accumulate pass, which reads acc there anyway: all of them, or with
 * final (GRC) only those inside the final set. */
static void pend_run(struct spardl_plan *p, size_t start, size_t end, const uint64_t *final)
{
	uint64_t base = 0, any = 0, *z = p->pend_bits, bs = p->sched->block_size;
	size_t i;

	if (start < end) {
		base = p->undo[start].pos / bs;
		z += base * p->pend_wpb;
		base *= bs;
	}
	for (i = start; i < end; i++) {
		uint64_t j = p->undo[i].pos, in = final ? (final[j >> 6] >> (j & 63)) & 1 : 1;

		z[(j - base) >> 6] |= in << ((j - base) & 63);
		any |= in;
	}
	p->pend |= any != 0;
}

/* Sets (set = 1) or clears the final positions' bits for the GRC update:
 * in every block where some logged run is tested against them, that is,
 * every run but an owner's final one (RUN_FINAL). A run lies in the
 * blocks of its first to its last position. */
static void mark_final(struct spardl_plan *p, int set)
{
	const struct spardl_sched *s = p->sched;
	uint64_t *bits = p->final_bits, bs = s->block_size;
	const uint64_t *u = p->u_idx;
	size_t i = 0, r, e;
	uint32_t b;

	if (!p->blk_test) {
		for (i = 0; i < p->u_n; i++)
			bits[u[i] >> 6] = set ? bits[u[i] >> 6] | (uint64_t)1 << (u[i] & 63) : 0;
		return;
	}
	if (set) {
		memset(p->blk_test, 0, s->nblocks);
		for (r = 0; r < p->nuseg; r++) {
			size_t start = run_start(p, r), end = r + 1 < p->nuseg ? run_start(p, r + 1) : p->nundo;

			if (start < end && !(p->useg[r] & RUN_FINAL))
				for (b = (uint32_t)(p->undo[start].pos / bs); b <= p->undo[end - 1].pos / bs; b++)
					p->blk_test[b] = 1;
		}
	}
	/* The final positions ascend: each block's are a range, found by
	 * bisection, so a skipped block costs nothing. */
	for (b = 0; b < s->nblocks && i < p->u_n; b++, i = e) {
		e = i + spardl_lower_bound(u + i, p->u_n - i, (uint64_t)(b + 1) * bs);
		if (!p->blk_test[b])
			continue;
		if (set)
			for (; i < e; i++)
				bits[u[i] >> 6] |= (uint64_t)1 << (u[i] & 63);
		else
			for (; i < e; i++)
				bits[u[i] >> 6] = 0;
	}
}

static void op_residual(struct call *c)
{
	struct spardl_plan *p = c->plan;
	const struct spardl_sched *s = c->s;
	float *acc = acc_of(p);
	uint64_t *bits = p->final_bits;
	size_t i, r;

	switch (s->res_mode) {
	case SPARDL_RES_GRC:
		/* acc becomes the new residual: its value at the final positions,
		 * the rank's own input (grad + old residual) everywhere else.
		 * Untouched positions already hold the input; undoing the
		 * changes outside the final set, newest run first, restores it
		 * at the touched ones. The final positions are marked in a
		 * bitmap first, so each logged change tests its own bit (no
		 * merge against the sorted final set); an owner's final run
		 * (RUN_FINAL) tests nothing, and a block with no other run
		 * gets no bits. */
		mark_final(p, 1);
		for (r = p->nuseg; r-- > 0;) {
			size_t start = run_start(p, r), w = start;
			size_t end = r + 1 < p->nuseg ? run_start(p, r + 1) : p->nundo;
			uint64_t lazy = (p->useg[r] & RUN_LAZY) != 0;
			const uint64_t *fin = p->useg[r] & RUN_FINAL ? NULL : bits;

			if (lazy && p->pend_bits) {
				/* A lazy run's zero lands only inside the final
				 * set, and is left pending. */
				pend_run(p, start, end, fin);
				continue;
			}
			/* A written change outside the final set gets its old
			 * value back; a lazy run's zero lands only inside it.
			 * The stores to make are compacted to the front of the
			 * run (w <= i: the log is no longer needed, nothing can
			 * fail now), then made with their lines prefetched. */
			for (i = start; i < end; i++) {
				uint64_t j = p->undo[i].pos, in = fin ? (fin[j >> 6] >> (j & 63)) & 1 : 1;
				float old = p->undo[i].old;

				p->undo[w].pos = j;
				p->undo[w].old = lazy ? 0.0f : old;
				w += in == lazy;
			}
			for (i = start; i < w; i++) {
				if (i + PREFETCH_AHEAD < w)
					spardl_prefetch(&acc[p->undo[i + PREFETCH_AHEAD].pos]);
				acc[p->undo[i].pos] = p->undo[i].old;
			}
		}
		mark_final(p, 0);
		break;
	case SPARDL_RES_LOCAL:
		/* Plain error feedback: what stayed in acc is the residual,
		 * but for the zeros of lazy selections (TopkA's own, with
		 * pend_bits), left pending now that the call cannot fail. */
		if (p->pend_bits)
			for (r = 0; r < p->nuseg; r++)
				if (p->useg[r] & RUN_LAZY)
					pend_run(p, run_start(p, r), r + 1 < p->nuseg ? run_start(p, r + 1) : p->nundo,
						 NULL);
		break;
	case SPARDL_RES_ZERO:
		/* In sparse mode the residual buffer stages the dense result
		 * and is cleared when the result is extracted. */
		if (p->res_dirty && c->out)
			memset(res_of(p), 0, s->p.n * sizeof(float));
		if (c->out)
			p->res_dirty = 0;
		break;
	case SPARDL_RES_OFF:
		break;
	}
}

/* One output entry: the value (divided when averaging) or zero. */
static inline float out_val(const float *val, size_t k, int avg, float div)
{
	return avg ? val[k] / div : val[k];
}

#if defined(__x86_64__)
#include <immintrin.h>

/* Whole 64-byte lines [at, stop) of the output, a chunk at a time: the
 * chunk's values go into a small buffer that stays in L1 and is otherwise
 * zero, the buffer is written out with streaming stores, and its values are
 * cleared again. The output is written once and never read, so it costs
 * what a memset does, with no branch per line (a line's values, or none, are
 * data dependent and would mispredict). Returns the next value's index. */
#define FILL_CHUNK 1024u

__attribute__((target("avx2"))) static size_t fill_lines_avx2(float *restrict out, size_t at, size_t stop,
								const uint64_t *idx, const float *val, size_t k,
								size_t cnt, int avg, float div, int stream)
{
	float stage[FILL_CHUNK] __attribute__((aligned(32)));

	memset(stage, 0, sizeof(stage));
	while (at < stop) {
		size_t len = stop - at < FILL_CHUNK ? stop - at : FILL_CHUNK, end = at + len, k0 = k, i;

		for (; k < cnt && idx[k] < end; k++)
			stage[idx[k] - at] = out_val(val, k, avg, div);
		/* Four lines per turn, then the last ones. */
		if (stream) {
			for (i = 0; i + 64 <= len; i += 64) {
				float *o = out + at + i;
				const float *st = stage + i;

				_mm256_stream_ps(o, _mm256_load_ps(st));
				_mm256_stream_ps(o + 8, _mm256_load_ps(st + 8));
				_mm256_stream_ps(o + 16, _mm256_load_ps(st + 16));
				_mm256_stream_ps(o + 24, _mm256_load_ps(st + 24));
				_mm256_stream_ps(o + 32, _mm256_load_ps(st + 32));
				_mm256_stream_ps(o + 40, _mm256_load_ps(st + 40));
				_mm256_stream_ps(o + 48, _mm256_load_ps(st + 48));
				_mm256_stream_ps(o + 56, _mm256_load_ps(st + 56));
			}
			for (; i < len; i += 16) {
				_mm256_stream_ps(out + at + i, _mm256_load_ps(stage + i));
				_mm256_stream_ps(out + at + i + 8, _mm256_load_ps(stage + i + 8));
			}
		} else {
			for (i = 0; i < len; i += 16) {
				_mm256_store_ps(out + at + i, _mm256_load_ps(stage + i));
				_mm256_store_ps(out + at + i + 8, _mm256_load_ps(stage + i + 8));
			}
		}
		for (; k0 < k; k0++)
			stage[idx[k0] - at] = 0.0f;
		at = end;
	}
	if (stream)
		_mm_sfence();
	return k;
}
#endif

/* out = zero except out[idx[i]] = val[i] (divided when averaging), idx
 * strictly increasing. */
static void fill_out(float *restrict out, size_t n, const uint64_t *idx, const float *val, size_t cnt, int avg,
		     float div, int stream)
{
	size_t at = 0, k = 0;

#if defined(__x86_64__)
	if (__builtin_cpu_supports("avx2")) {
		size_t head = (size_t)((64 - ((uintptr_t)out & 63)) & 63), stop;

		if (((uintptr_t)out & 3) == 0 && head / sizeof(float) < n) {
			for (; at < head / sizeof(float); at++)
				out[at] = k < cnt && idx[k] == at ? out_val(val, k++, avg, div) : 0.0f;
			stop = at + (n - at) / 16 * 16;
			k = fill_lines_avx2(out, at, stop, idx, val, k, cnt, avg, div, stream);
			at = stop;
		}
	}
#endif
	if (at == 0) {
		/* A large memset streams too; then the values, prefetched. */
		memset(out, 0, n * sizeof(float));
		for (; k < cnt; k++) {
			if (k + PREFETCH_AHEAD < cnt)
				spardl_prefetch(&out[idx[k + PREFETCH_AHEAD]]);
			out[idx[k]] = out_val(val, k, avg, div);
		}
		return;
	}
	for (; at < n; at++)
		out[at] = k < cnt && idx[k] == at ? out_val(val, k++, avg, div) : 0.0f;
}

#if defined(__x86_64__)
/* The in-place output's entries into a grad the accumulate pass zeroed,
 * each with a 4-byte streaming store (movnti): the pass has long evicted
 * those lines, and a plain store would first read its line back (one line
 * per entry at 1% density) to write it out again later; a streaming store
 * only writes. Entries of one line, adjacent in index order, combine in
 * the write-combining buffer. Worth it only where grad's lines are out of
 * the caches after the pass: from spardl_pend_min_n floats on, the same
 * bound as the pending zeros' (at 2^22 and 1% on a 32 MiB L3 it measured
 * no faster, docs/PERFORMANCE.md). */
static void scatter_stream(float *out, const uint64_t *idx, const float *val, size_t cnt, int avg, float div)
{
	size_t i;

	for (i = 0; i < cnt; i++) {
		float v = out_val(val, i, avg, div);
		int bits;

		memcpy(&bits, &v, sizeof(bits));
		_mm_stream_si32((int *)&out[idx[i]], bits);
	}
	_mm_sfence();
}
#endif

static void op_output(struct call *c)
{
	struct spardl_plan *p = c->plan;
	float div = (float)c->s->p.size;
	int avg = c->s->p.average;
	size_t i;

	if (c->clear) {
		/* out is grad, zeroed by the accumulate pass: the entries only. */
#if defined(__x86_64__)
		if (c->s->p.n >= spardl_pend_min_n) {
			scatter_stream(c->out, p->u_idx, p->u_val, p->u_n, avg, div);
			return;
		}
#endif
		for (i = 0; i < p->u_n; i++) {
			if (i + PREFETCH_AHEAD < p->u_n)
				spardl_prefetch(&c->out[p->u_idx[i + PREFETCH_AHEAD]]);
			c->out[p->u_idx[i]] = out_val(p->u_val, i, avg, div);
		}
		return;
	}
	if (c->out) {
		fill_out(c->out, c->s->p.n, p->u_idx, p->u_val, p->u_n, avg, div, p->stream);
		return;
	}
	for (i = 0; i < p->u_n; i++) {
		c->indices[i] = (int64_t)p->u_idx[i];
		c->values[i] = avg ? p->u_val[i] / div : p->u_val[i];
	}
	c->nnz = p->u_n;
}

/* Whether the step's one write forwards exactly the add's receive slot. */
static int forwards_slot(struct call *c, const struct spardl_step *st, const struct spardl_op *op)
{
	const struct spardl_write *w;
	const struct spardl_sslot *ss;

	if (st->nwrite != 1)
		return 0;
	w = &c->s->writes[st->write0];
	ss = &c->s->sslots[w->sslot];
	return ss->region == SPARDL_REG_RECV && ss->rslot == op->slot &&
	       c->plan->slot_len[op->slot] == op->len * sizeof(float);
}

/* Where the add's sum goes when its step's write forwards it and the
 * transport maps the peer's receive region: the address in that region
 * (NULL: into the receive slot, and the write copies it from there). */
static float *direct_target(struct call *c, const struct spardl_step *st, const struct spardl_op *op)
{
	struct spardl_plan *p = c->plan;
	const struct spardl_write *w;

	if (!spardl_dense_direct || !(p->comm->tp->caps & SPARDL_TP_CAP_DIRECT) || !p->ops->direct ||
	    !forwards_slot(c, st, op))
		return NULL;
	w = &c->s->writes[st->write0];
	return p->ops->direct(p->ep, w->peer, p->ep->remote[w->peer],
			      (uint64_t)c->parity * p->peer_half[w->peer] + w->roff, p->slot_len[op->slot]);
}

#if defined(__x86_64__)
/* A store of 8 floats: streaming where the line is written once and read
 * by nobody soon (aligned), otherwise plain (unaligned allowed). */
#define STORE8(stream, aligned, p, v)                                   \
	do {                                                            \
		if ((stream) && (aligned))                              \
			_mm256_stream_ps((p), (v));                     \
		else                                                    \
			_mm256_storeu_ps((p), (v));                     \
	} while (0)

/*
 * The last add with direct stores and the output written at once:
 * fwd[i] = g[i] + in[i] (the peer's slot), g[i] = that sum times mul (or
 * divided by div; as is when scale is 0), and in[i] = g[i]'s old value,
 * kept for a rollback. fwd is aligned for its stores; g streams too when it
 * is aligned the same way. Returns the elements done.
 */
__attribute__((target("avx2"), always_inline)) static inline size_t
add_out_body(float *g, float *restrict in, float *restrict fwd, size_t len, int scale, float mul, float div,
	     int stream)
{
	size_t i = 0, head = (size_t)((32 - ((uintptr_t)fwd & 31)) & 31) / sizeof(float);
	const __m256 vm = _mm256_set1_ps(mul), vd = _mm256_set1_ps(div);
	int g_aligned = ((uintptr_t)(g + head) & 31) == 0;

	for (; i < head && i < len; i++) {
		float a = g[i], sum = a + in[i];

		fwd[i] = sum;
		in[i] = a;
		g[i] = !scale ? sum : mul != 0.0f ? sum * mul : sum / div;
	}
	for (; i + 8 <= len; i += 8) {
		__m256 a, sum;

		if (!(i & 15)) {
			spardl_prefetch_stream(g + i + STREAM_AHEAD);
			spardl_prefetch_stream(in + i + STREAM_AHEAD);
		}
		a = _mm256_loadu_ps(g + i);
		sum = _mm256_add_ps(a, _mm256_loadu_ps(in + i));

		STORE8(stream, 1, fwd + i, sum);
		_mm256_storeu_ps(in + i, a);
		if (scale)
			sum = mul != 0.0f ? _mm256_mul_ps(sum, vm) : _mm256_div_ps(sum, vd);
		STORE8(stream, g_aligned, g + i, sum);
	}
	if (stream)
		_mm_sfence();
	return i;
}

__attribute__((target("avx2"))) static size_t add_out_avx2(float *g, float *restrict in, float *restrict fwd,
							     size_t len, int scale, float mul, float div, int stream)
{
	if (((uintptr_t)fwd & 3) || ((uintptr_t)g & 3))
		return 0;
	if (stream)
		return add_out_body(g, in, fwd, len, scale, mul, div, 1);
	return add_out_body(g, in, fwd, len, scale, mul, div, 0);
}

/* fwd[i] = acc[i] + in[i], and in[i] too when keep. Returns the elements
 * done. */
__attribute__((target("avx2"), always_inline)) static inline size_t
add_fwd_body(const float *restrict acc, float *restrict in, float *restrict fwd, size_t len, int keep, int stream)
{
	size_t i = 0, head = (size_t)((32 - ((uintptr_t)fwd & 31)) & 31) / sizeof(float);

	for (; i < head && i < len; i++) {
		float sum = acc[i] + in[i];

		fwd[i] = sum;
		if (keep)
			in[i] = sum;
	}
	for (; i + 8 <= len; i += 8) {
		__m256 sum;

		if (!(i & 15)) {
			spardl_prefetch_stream(acc + i + STREAM_AHEAD);
			spardl_prefetch_stream(in + i + STREAM_AHEAD);
		}
		sum = _mm256_add_ps(_mm256_loadu_ps(acc + i), _mm256_loadu_ps(in + i));

		STORE8(stream, 1, fwd + i, sum);
		if (keep)
			_mm256_storeu_ps(in + i, sum);
	}
	if (stream)
		_mm_sfence();
	return i;
}

__attribute__((target("avx2"))) static size_t add_fwd_avx2(const float *restrict acc, float *restrict in,
							     float *restrict fwd, size_t len, int keep, int stream)
{
	if ((uintptr_t)fwd & 3)
		return 0;
	if (stream)
		return keep ? add_fwd_body(acc, in, fwd, len, 1, 1) : add_fwd_body(acc, in, fwd, len, 0, 1);
	return keep ? add_fwd_body(acc, in, fwd, len, 1, 0) : add_fwd_body(acc, in, fwd, len, 0, 0);
}
#undef STORE8
#endif

/*
 * Reduce into the receive slot, so acc stays grad + residual all call. On a
 * transport with SPARDL_TP_CAP_DIRECT the sum the step's write forwards is
 * stored straight into the peer's slot (the write then only notifies); a
 * partial sum is not kept here at all. The complete sum (op->reduced) is
 * this rank's output chunk: when the call is in place on grad alone
 * (no residual), it is written to grad now, not copied there after the
 * last wait, and the slot keeps grad's old values for a rollback
 * (early_len counts the elements written so far). This adds elements
 * [e0, e0 + len) of the chunk: all of it, or one piece (run_pipelined).
 */
static void dense_add_part(struct call *c, const struct spardl_step *st, const struct spardl_op *op, uint64_t e0,
			   uint64_t len)
{
	const float *acc = c->src + op->off + e0;
	float *in = (float *)recv_slot(c, op->slot) + e0, *fwd = direct_target(c, st, op);
	int size = c->s->p.size, scale = c->s->p.average;
	float div = (float)size, mul = (size & (size - 1)) == 0 ? 1.0f / div : 0.0f;
	uint64_t i = 0;
	int stream = op->len * sizeof(float) >= SPARDL_STREAM_MIN;

	if (fwd)
		fwd += e0;
	c->direct = fwd != NULL;
	if (!fwd && op->reduced && !scale && c->out && (const float *)c->out == c->src && c->src_mr.addr &&
	    spardl_dense_direct && forwards_slot(c, st, op)) {
		/* In place, not averaged, and the peer's slot not mapped here:
		 * the sum goes to grad, which the write then sends from, and
		 * the slot keeps grad's old values for a rollback. */
		float *restrict g = c->out + op->off + e0, *restrict ri = in;

		for (i = 0; i < len; i++) {
			float a = g[i];

			g[i] = a + ri[i];
			ri[i] = a;
		}
		c->fwd_out = 1;
		c->early_slot = op->slot;
		c->early_off = op->off;
		c->early_len = e0 + len;
		return;
	}
	if (!fwd) {
		float *restrict ri = in;
		const float *restrict ra = acc;

		for (i = 0; i < len; i++)
			ri[i] = ra[i] + ri[i];
		return;
	}
	if (op->reduced && c->out && (const float *)c->out == c->src) {
		/* Written in place: g is acc is the output. */
		float *g = c->out + op->off + e0;

#if defined(__x86_64__)
		if (len >= 64 && __builtin_cpu_supports("avx2"))
			i = add_out_avx2(g, in, fwd, len, scale, mul, div, stream);
#endif
		for (; i < len; i++) {
			float a = g[i], sum = a + in[i];

			fwd[i] = sum;
			in[i] = a;
			g[i] = !scale ? sum : mul != 0.0f ? sum * mul : sum / div;
		}
		c->early_slot = op->slot;
		c->early_off = op->off;
		c->early_len = e0 + len;
		return;
	}
	/* The complete sum stays here too, for the output after the last wait. */
#if defined(__x86_64__)
	if (len >= 64 && __builtin_cpu_supports("avx2"))
		i = add_fwd_avx2(acc, in, fwd, len, op->reduced, stream);
#endif
	for (; i < len; i++) {
		float sum = acc[i] + in[i];

		fwd[i] = sum;
		if (op->reduced)
			in[i] = sum;
	}
}

static void op_dense_add(struct call *c, const struct spardl_step *st, const struct spardl_op *op)
{
	dense_add_part(c, st, op, 0, op->len);
}

#if defined(__x86_64__)
/* out[i] = in[i] * mul (mul != 0) or in[i] / div, the aligned middle with
 * streaming stores: the output is written once and not read in the call,
 * so its lines are not fetched first. Returns the elements done. */
__attribute__((target("avx2"))) static size_t scale_stream_avx2(float *restrict out, const float *restrict in,
								  size_t len, float mul, float div)
{
	size_t i = 0, head = (size_t)((32 - ((uintptr_t)out & 31)) & 31) / sizeof(float);
	const __m256 vm = _mm256_set1_ps(mul), vd = _mm256_set1_ps(div);

	if (((uintptr_t)out & 3) || head >= len)
		return 0;
	for (; i < head; i++)
		out[i] = mul != 0.0f ? in[i] * mul : in[i] / div;
	if (mul != 0.0f)
		for (; i + 8 <= len; i += 8)
			_mm256_stream_ps(out + i, _mm256_mul_ps(_mm256_loadu_ps(in + i), vm));
	else
		for (; i + 8 <= len; i += 8)
			_mm256_stream_ps(out + i, _mm256_div_ps(_mm256_loadu_ps(in + i), vd));
	_mm_sfence();
	return i;
}
#endif

static void op_dense_out(struct call *c, const struct spardl_op *op)
{
	struct spardl_plan *p = c->plan;
	float *restrict out = (c->out ? c->out : res_of(p)) + op->off;
	const float *restrict in = op->slot == UINT32_MAX ? c->src + op->off :
							    (const float *)recv_slot(c, op->slot);
	int size = c->s->p.size;
	float div = (float)size;
	/* Dividing by a power of two is multiplying by its exact inverse:
	 * both round the same real value, so the bits are the same. */
	float mul = (size & (size - 1)) == 0 ? 1.0f / div : 0.0f;
	uint64_t i = 0;

	/* Already written by the last add (op_dense_add). */
	if (op->slot != UINT32_MAX && op->slot == c->early_slot)
		return;
	if (!c->s->p.average) {
		spardl_copy(out, in, op->len * sizeof(float));
		return;
	}
#if defined(__x86_64__)
	if (op->len >= 4096 && __builtin_cpu_supports("avx2"))
		i = scale_stream_avx2(out, in, op->len, mul, div);
#endif
	if (mul != 0.0f)
		for (; i < op->len; i++)
			out[i] = in[i] * mul;
	else
		for (; i < op->len; i++)
			out[i] = in[i] / div;
}

/* The op's end: bytes it packed into a send slot or read from a receive
 * slot, and the pairs it handled. */
static void trace_op_end(struct call *c, const struct spardl_op *op)
{
	struct spardl_trace_rec *r = spardl_trace_ev(c->plan->trace, SPARDL_TR_OP_END, -1, op->code);

	switch (op->code) {
	case SPARDL_OP_SELECT:
		r->a = op->dst_is_reg ? 0 : c->plan->send_len[op->slot];
		break;
	case SPARDL_OP_SEND_LISTS:
		r->a = c->plan->send_len[op->slot];
		break;
	case SPARDL_OP_SCATTER:
	case SPARDL_OP_RECV_LISTS:
	case SPARDL_OP_DENSE_ADD:
		r->a = c->plan->slot_len[op->slot];
		break;
	default:
		break;
	}
	r->b = c->pairs;
}

static double median3(const double *v)
{
	double a = v[0], b = v[1], c = v[2];

	return a > b ? (b > c ? b : a > c ? c : a) : (a > c ? a : b > c ? c : b);
}

/*
 * SPARDL_STREAM_OUTPUT=auto, after a successful call: time the store types
 * of the dense-layout output. A call's stores cost in its output and in
 * the next call's accumulate pass (a streamed line is no longer cached
 * for it), so each call with an output is timed as its output plus the
 * next call's accumulate pass. The plan's first call is not timed (its
 * pages and lines are new); then the calls alternate plain and streaming
 * stores, SPARDL_STREAM_PROBES timed each, and the faster by median stays.
 */
static void stream_probe(struct spardl_plan *p, const struct call *c)
{
	/* This call's index among the plan's calls with an output. */
	uint32_t j = p->stream_probes;

	if (!c->out)
		return;
	p->stream_probes = j + 1;
	/* The previous one used the other store type. */
	if (j >= 2)
		p->stream_s[!p->stream][(j - 2) / 2] = p->stream_pend + c->acc_s;
	if (j == 2 * SPARDL_STREAM_PROBES + 1) {
		double plain = median3(p->stream_s[0]), streaming = median3(p->stream_s[1]);

		p->stream = streaming <= plain;
		p->stream_auto = 0;
		spardl_log(SPARDL_LOG_DEBUG,
			   "plan: the output's stores are %s (SPARDL_STREAM_OUTPUT=auto: output and next accumulate pass %.3f ms streaming, %.3f ms plain, medians of %d calls)",
			   p->stream ? "streaming" : "plain", streaming * 1e3, plain * 1e3, SPARDL_STREAM_PROBES);
		return;
	}
	p->stream_pend = c->out_s;
	/* After the untimed first call, plain, then alternating. */
	p->stream = j == 0 ? 0 : !p->stream;
}

static int run_op(struct call *c, const struct spardl_step *step, const struct spardl_op *op)
{
	struct spardl_plan_stats *st = &c->plan->stats;
	double t0, *bucket = &st->reduce;
	int ret = 0;

	if (op->code == SPARDL_OP_NONE)
		return 0;
	spardl_trace_ev(c->plan->trace, SPARDL_TR_OP_BEGIN, -1, op->code);
	c->pairs = 0;
	t0 = now_s();
	switch (op->code) {
	case SPARDL_OP_ACC_INIT:
		op_acc_init(c);
		bucket = &st->accumulate;
		break;
	case SPARDL_OP_SELECT:
		op_select(c, op);
		bucket = &st->select;
		break;
	case SPARDL_OP_SCATTER:
		ret = op_scatter(c, op);
		break;
	case SPARDL_OP_SEND_LISTS:
		op_send_lists(c, op);
		bucket = &st->select;
		break;
	case SPARDL_OP_RECV_LISTS:
		ret = op_recv_lists(c, op);
		break;
	case SPARDL_OP_REDUCE:
		op_reduce(c, op);
		break;
	case SPARDL_OP_RESULT:
		c->plan->u_n = merge_regs(c, op);
		c->pairs = c->plan->u_n;
		break;
	case SPARDL_OP_RESIDUAL:
		op_residual(c);
		bucket = &st->output;
		break;
	case SPARDL_OP_OUTPUT:
		op_output(c);
		bucket = &st->output;
		break;
	case SPARDL_OP_DENSE_ADD:
		op_dense_add(c, step, op);
		break;
	case SPARDL_OP_DENSE_OUT:
		op_dense_out(c, op);
		bucket = &st->output;
		break;
	default:
		return spardl_error(-EINVAL, "internal: unknown op %u", op->code);
	}
	t0 = now_s() - t0;
	if (c->late_s != 0.0) {
		/* A late block's accumulate pass, inside its scatter. */
		st->accumulate += c->late_s;
		c->acc_s += c->late_s;
		t0 -= c->late_s;
		c->late_s = 0.0;
	}
	*bucket += t0;
	if (op->code == SPARDL_OP_ACC_INIT)
		c->acc_s += t0;
	else if (op->code == SPARDL_OP_OUTPUT && c->out)
		c->out_s += t0;
	if (c->plan->trace)
		trace_op_end(c, op);
	return ret;
}

/* Post pieces [first, end) of write i of a step (end UINT32_MAX: to its
 * last); a message longer than the largest write goes as its pieces, the
 * ones past its end empty (the receiver counts them). */
static int post_write(struct call *c, const struct spardl_step *st, uint32_t i, uint32_t first, uint32_t end)
{
	struct spardl_plan *p = c->plan;
	const struct spardl_sched *s = c->s;
	uint64_t wmax = s->p.max_write;
	const struct spardl_write *w = &s->writes[st->write0 + i];
	const struct spardl_sslot *ss = &s->sslots[w->sslot];
	uint64_t off = ss->off, len, roff = (uint64_t)c->parity * p->peer_half[w->peer] + w->roff;
	struct spardl_tp_mr *mr;
	uint32_t j;
	int ret;

	if (p->trace) {
		/* The transport's records name the write's own phase and round. */
		struct spardl_trace_ctx *ctx = spardl_trace_ctx(p->trace);

		ctx->phase = w->phase;
		ctx->round = (uint16_t)w->round;
	}
	switch (ss->region) {
	case SPARDL_REG_SEND:
		mr = p->send;
		len = p->send_len[w->sslot];
		break;
	case SPARDL_REG_ACC:
		mr = c->src_mr.addr ? &c->src_mr : p->acc;
		len = ss->max;
		break;
	default:
		mr = p->recv;
		off = (uint64_t)c->parity * s->recv_bytes + s->rslots[ss->rslot].off;
		len = p->slot_len[ss->rslot];
		if (c->fwd_out && ss->rslot == c->early_slot) {
			/* The sum is in grad now (op_dense_add). */
			mr = &c->src_mr;
			off = c->early_off * sizeof(float);
		}
		break;
	}
	if (end > w->npieces)
		end = w->npieces;
	for (j = first; j < end; j++) {
		uint64_t po = wmax ? (uint64_t)j * wmax : 0, plen = 0;

		if (len > po)
			plen = wmax && len - po > wmax ? wmax : len - po;
		ret = p->ops->write(p->ep, w->peer, mr, off + po, p->ep->remote[w->peer], roff + po, plen,
				    spardl_imm(c->parity, w->phase, w->round, w->rpiece0 + j),
				    (w->last && j + 1 == w->npieces ? SPARDL_TP_WRITE_LAST : 0) |
					    (c->direct ? SPARDL_TP_WRITE_DIRECT : 0) |
					    (len >= SPARDL_STREAM_MIN ? SPARDL_TP_WRITE_STREAM : 0));
		p->stats.bytes_sent += plen;
		p->stats.writes++;
		if (!ret) {
			struct spardl_flight_ev *e = flight(c, SPARDL_FL_POST, w->phase, w->round, w->peer);

			e->bytes = plen;
			e->imm = spardl_imm(c->parity, w->phase, w->round, w->rpiece0 + j);
		}
		if (ret)
			return spardl_error_wrap(ret, "rank %d: write to rank %d failed (%s round %u, step %u)",
						 s->p.rank, w->peer, spardl_phase_name(w->phase), w->round, c->step);
	}
	return 0;
}

/* Post a step's writes, each whole. */
static int post_writes(struct call *c, const struct spardl_step *st)
{
	uint32_t i;
	int ret;

	for (i = 0; i < st->nwrite; i++) {
		ret = post_write(c, st, i, 0, UINT32_MAX);
		if (ret)
			return ret;
	}
	return 0;
}

/*
 * A dense ring's add whose message comes in several pieces, one piece at a
 * time: wait for piece j, add it, and post piece j of the write that
 * forwards the sum, so that the next rank works on a piece while this one
 * receives the next (a pipelined ring), and each piece is added while it
 * is still in cache. Only for a step whose one wait is its add's slot, a
 * dense chunk of exactly the add's length, and whose one write forwards
 * that slot in the same pieces (pipelined()). Each piece's length is
 * checked before it is used.
 */
static int pipelined(const struct call *c, const struct spardl_step *st)
{
	const struct spardl_sched *s = c->s;
	const struct spardl_rslot *rs;
	const struct spardl_write *w;
	const struct spardl_sslot *ss;

	if (st->op.code != SPARDL_OP_DENSE_ADD || st->nwait != 1 || st->nwrite != 1 ||
	    s->waits[st->wait0] != st->op.slot || !s->p.max_write)
		return 0;
	rs = &s->rslots[st->op.slot];
	w = &s->writes[st->write0];
	ss = &s->sslots[w->sslot];
	return rs->npieces > 1 && rs->exact && rs->max == st->op.len * sizeof(float) &&
	       ss->region == SPARDL_REG_RECV && ss->rslot == st->op.slot && w->npieces == rs->npieces;
}

static int run_pipelined(struct call *c, const struct spardl_step *st)
{
	struct spardl_plan *p = c->plan;
	const struct spardl_op *op = &st->op;
	const struct spardl_rslot *rs = &c->s->rslots[op->slot];
	uint64_t wmax = c->s->p.max_write, per = wmax / sizeof(float);
	uint32_t j;
	int ret;

	/* The whole chunk comes (checked piece by piece below): the write's
	 * pieces take their lengths from it. */
	p->slot_len[op->slot] = rs->max;
	for (j = 0; j < rs->npieces; j++) {
		uint64_t e0 = (uint64_t)j * per, len = op->len - e0 < per ? op->len - e0 : per;
		uint64_t got;
		struct spardl_trace_rec *r;
		double t0;

		if (spardl_exec_piece_hook) {
			ret = spardl_exec_piece_hook(p, p->calls, c->step, j);
			if (ret)
				return spardl_error(ret, "rank %d: call %llu failed before piece %u of step %u (test hook)",
						    c->s->p.rank, (unsigned long long)p->calls, j, c->step);
		}
		ret = wait_pieces(c, op->slot, j, j + 1);
		if (ret)
			return ret;
		got = p->arrived[c->parity][rs->piece0 + j];
		if (got != spardl_piece_max(rs->max, wmax, j))
			return protocol_error(c, "a dense chunk of the wrong length", op->slot);
		arrived_ev(c, op->slot, got);
		spardl_trace_ev(p->trace, SPARDL_TR_OP_BEGIN, -1, op->code);
		t0 = now_s();
		dense_add_part(c, st, op, e0, len);
		p->stats.reduce += now_s() - t0;
		r = spardl_trace_ev(p->trace, SPARDL_TR_OP_END, -1, op->code);
		if (r) {
			r->a = got;
			r->b = 0;
		}
		t0 = now_s();
		ret = post_write(c, st, 0, j, j + 1);
		p->stats.post += now_s() - t0;
		if (ret)
			return ret;
	}
	return 0;
}

/* Dense algorithm, sparse output: the result was staged in the residual
 * buffer; hand out its non-zeros and leave the buffer zero. */
static void extract_dense(struct call *c)
{
	float *res = res_of(c->plan);
	size_t n = c->s->p.n, i, k = 0;

	for (i = 0; i < n; i++) {
		if (res[i] != 0.0f || isnan(res[i])) {
			c->indices[k] = (int64_t)i;
			c->values[k++] = res[i];
		}
	}
	memset(res, 0, n * sizeof(float));
	c->plan->res_dirty = 0;
	c->nnz = k;
}

/* After a failure: acc (or, dense, the residual) becomes exactly
 * grad + old residual again (SPEC's acc), whatever step the call stopped at. */
static void rollback(struct call *c)
{
	struct spardl_plan *p = c->plan;
	const struct spardl_sched *s = c->s;
	float *acc = acc_of(p);
	size_t i, r, n = s->p.n;

	/* The dense ring's own chunk, if its last add wrote it, back as it was. */
	if (c->early_slot != UINT32_MAX)
		memcpy(c->out + c->early_off, recv_slot(c, c->early_slot), c->early_len * sizeof(float));
	/* (Pending zeros are normally taken by the accumulate pass.) */
	spardl_exec_settle(p);
	switch (s->res_mode) {
	case SPARDL_RES_GRC:
	case SPARDL_RES_LOCAL:
		/* A call that failed before its accumulate pass (a local
		 * error: no wait comes first) accumulates now, and so do the
		 * late blocks whose list did not come (their pending zeros
		 * were written above). */
		for (i = 0; i < s->nblocks; i++)
			/* (With c->clear, grad is then zero in every block.) */
			if (!c->acc_ops || (p->blk_unformed && p->blk_unformed[i])) {
				acc_block_plain(c, (uint32_t)i);
				if (p->blk_unformed)
					p->blk_unformed[i] = 0;
			}
		c->late_left = 0;
		/* Newest first: every logged change, back to acc = old + grad
		 * (a lazy run changed nothing). */
		for (r = p->nuseg; r-- > 0;) {
			size_t start = run_start(p, r), end = r + 1 < p->nuseg ? run_start(p, r + 1) : p->nundo;

			if (p->useg[r] & RUN_LAZY)
				continue;
			for (i = end; i-- > start;)
				acc[p->undo[i].pos] = p->undo[i].old;
		}
		break;
	case SPARDL_RES_ZERO: {
		/* Dense: acc = old + grad was never changed in the call. Without
		 * a residual set, the call read grad itself (unchanged too):
		 * adding the zero residual still rounds -0 to +0, as old + grad
		 * would. */
		float *res = res_of(p);

		if (p->res_dirty && !c->acc_ops)
			/* Failed before the accumulate pass. */
			for (i = 0; i < n; i++)
				res[i] = spardl_add(c->grad[i], res[i]);
		else if (p->res_dirty)
			memcpy(res, acc, n * sizeof(float));
		else
			for (i = 0; i < n; i++)
				res[i] = c->grad[i] + 0.0f;
		p->res_dirty = 1;
		break;
	}
	case SPARDL_RES_OFF:
		/* Nothing is kept: the residual stays zero. */
		memset(acc, 0, n * sizeof(float));
		break;
	}
}

/* A call on a failed plan keeps its gradient too, so that nothing is lost
 * between the failure and the plan that replaces this one; as a failed
 * call would (struct call's clear), it leaves grad zero where acc keeps it
 * all (clear). */
static void absorb(struct spardl_plan *plan, const float *grad, int clear)
{
	const struct spardl_sched *s = plan->sched;
	size_t i, n = s->p.n;
	float *acc = acc_of(plan);

	spardl_exec_settle(plan);
	switch (s->res_mode) {
	case SPARDL_RES_GRC:
	case SPARDL_RES_LOCAL:
		for (i = 0; i < n; i++)
			acc[i] = spardl_add(grad[i], acc[i]);
		if (clear)
			memset((float *)grad, 0, n * sizeof(float));
		break;
	case SPARDL_RES_ZERO: {
		float *res = res_of(plan);

		for (i = 0; i < n; i++)
			res[i] = spardl_add(grad[i], res[i]);
		plan->res_dirty = 1;
		break;
	}
	case SPARDL_RES_OFF:
		break;
	}
}

static int quiesce(struct spardl_plan *plan)
{
	struct spardl_trace_rec *r;
	int ret;

	spardl_trace_ev(plan->trace, SPARDL_TR_QUIESCE, -1, 0);
	ret = plan->ops->quiesce(plan->ep, plan->comm->timeout_ms);
	r = spardl_trace_ev(plan->trace, SPARDL_TR_QUIESCE, -1, 0);
	if (r)
		r->a = 1;
	return ret;
}

/* The call's last record; the buffer goes to the file between calls. */
static void trace_call_end(struct spardl_plan *plan, int ret)
{
	if (!plan->trace)
		return;
	spardl_trace_ev(plan->trace, SPARDL_TR_CALL_END, ret, 0);
	spardl_trace_call_done(plan->trace);
}

int spardl_exec(struct spardl_plan *plan, const float *grad, float *out, int64_t *indices, float *values,
		size_t *nnz_out)
{
	struct call c = { .plan = plan, .s = plan->sched, .parity = (unsigned)(plan->calls & 1), .grad = grad,
			  .out = out, .indices = indices, .values = values, .early_slot = UINT32_MAX };
	const struct spardl_sched *s = plan->sched;
	double t0 = now_s();
	uint32_t i, j;
	int ret = 0;

	if (plan->trace) {
		struct spardl_trace_ctx *ctx = spardl_trace_ctx(plan->trace);

		memset(ctx, 0, sizeof(*ctx));
		ctx->call = plan->calls;
		spardl_trace_ev(plan->trace, SPARDL_TR_CALL_BEGIN, -1, 0)->a = s->p.n;
	}
	/* (A CUDA plan's call runs on its host stage, which is copied back
	 * to the caller's device buffer whatever the outcome: cleared, a
	 * failed call would zero that buffer, and a CUDA plan's promise is
	 * that it stays unchanged.) */
	c.clear = out && (const float *)out == grad && !plan->res && plan->params.mem_type == SPARDL_MEM_HOST &&
		  (s->res_mode == SPARDL_RES_GRC || s->res_mode == SPARDL_RES_LOCAL);
	if (plan->failed) {
		absorb(plan, grad, c.clear);
		trace_call_end(plan, -SPARDL_ERR_PLAN_FAILED);
		return spardl_error(-SPARDL_ERR_PLAN_FAILED,
				    "rank %d: an earlier call on this plan failed (%s); its gradient was added to the residual: save the residual, destroy the plan (and the communicator, if a peer died) and create them again",
				    s->p.rank, spardl_strerror(plan->failed));
	}
	plan->nundo = 0;
	plan->nuseg = 0;
	plan->u_n = 0;
	for (i = 0; i < s->nsteps && !ret; i++) {
		const struct spardl_step *st = &s->steps[i];

		c.step = i;
		if (plan->trace) {
			struct spardl_trace_ctx *ctx = spardl_trace_ctx(plan->trace);

			ctx->step = i;
			ctx->phase = st->op.phase;
			ctx->round = (uint16_t)st->op.round;
		}
		flight(&c, SPARDL_FL_STEP, st->op.phase, st->op.round, -1)->slot = st->op.code;
		if (spardl_exec_step_hook) {
			ret = spardl_exec_step_hook(plan, plan->calls, i);
			if (ret) {
				spardl_error(ret, "rank %d: call %llu failed before step %u (test hook)", s->p.rank,
					     (unsigned long long)plan->calls, i);
				break;
			}
		}
		/* Past the last communication, complete every write: what
		 * follows only computes, so the call can no longer fail. */
		if (i == s->quiesce_step) {
			double tq = now_s();

			ret = quiesce(plan);
			plan->stats.post += now_s() - tq;
			if (ret) {
				spardl_error_wrap(ret, "rank %d: completing the writes of call %llu", s->p.rank,
						  (unsigned long long)plan->calls);
				break;
			}
		}
		if (pipelined(&c, st)) {
			ret = run_pipelined(&c, st);
			c.direct = 0;
			c.fwd_out = 0;
			continue;
		}
		for (j = 0; j < st->nwait && !ret; j++)
			ret = wait_slot(&c, s->waits[st->wait0 + j]);
		if (!ret)
			ret = run_op(&c, st, &st->op);
		if (!ret && st->nwrite) {
			double tp = now_s();

			ret = post_writes(&c, st);
			plan->stats.post += now_s() - tp;
		}
		c.direct = 0;
		c.fwd_out = 0;
	}
	if (!ret && c.late_left)
		ret = spardl_error(-EINVAL, "internal: rank %d: %u blocks of call %llu were never formed", s->p.rank,
				   c.late_left, (unsigned long long)plan->calls);
	if (!ret && s->quiesce_step >= s->nsteps) {
		double tq = now_s();

		ret = quiesce(plan);
		plan->stats.post += now_s() - tq;
		if (ret)
			spardl_error_wrap(ret, "rank %d: completing the writes of call %llu", s->p.rank,
					  (unsigned long long)plan->calls);
	}
	if (ret) {
		plan->failed = ret;
		plan->stats.failed_calls++;
		spardl_flight_dump(plan->flight, s->p.rank, s->p.size, spardl_last_error());
		rollback(&c);
		/* The peers still waiting for this rank fail now, not at their timeout. */
		plan->ops->abort(plan->ep);
		trace_call_end(plan, ret);
		return ret;
	}
	if (!out && s->p.algo == SPARDL_ALGO_DENSE)
		extract_dense(&c);
	if (s->res_mode == SPARDL_RES_OFF && !plan->res)
		memset(acc_of(plan), 0, s->p.n * sizeof(float));
	for (i = 0; i < s->npieces; i++)
		plan->arrived[c.parity][i] = SPARDL_NOT_ARRIVED;
	if (plan->stream_auto)
		stream_probe(plan, &c);
	plan->calls++;
	plan->stats.calls++;
	plan->stats.total += now_s() - t0;
	trace_call_end(plan, 0);
	if (nnz_out)
		*nnz_out = c.nnz;
	return 0;
}
