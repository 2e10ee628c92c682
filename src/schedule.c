/* SPDX-License-Identifier: MIT */
/* Compiles the per-rank schedules of SparDL and the baselines (SPEC sections 4-6). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "schedule.h"
#include "wire.h"

#define NO_SLOT UINT32_MAX

static int ilog2_ceil(int x)
{
	int r = 0;

	while ((1 << r) < x)
		r++;
	return r;
}

static int mod(int a, int m)
{
	int r = a % m;

	return r < 0 ? r + m : r;
}

static uint64_t align8(uint64_t x)
{
	return (x + 7) & ~(uint64_t)7;
}

struct builder {
	struct spardl_sched *s;
	int oom;
	int cur; /* step under construction */
};

static void *grow(struct builder *b, void *arr, uint32_t *cap, uint32_t need, size_t elsz)
{
	uint32_t ncap;
	void *p;

	if (need <= *cap)
		return arr;
	ncap = *cap ? *cap * 2 : 16;
	while (ncap < need)
		ncap *= 2;
	p = realloc(arr, (size_t)ncap * elsz);
	if (!p) {
		b->oom = 1;
		return NULL;
	}
	*cap = ncap;
	return p;
}

#define PUSH(b, field, nfield, capfield, value)                                               \
	do {                                                                                  \
		void *np_ = grow((b), (b)->s->field, &(b)->s->capfield, (b)->s->nfield + 1,       \
				 sizeof(*(b)->s->field));                                     \
		if (np_) {                                                                    \
			(b)->s->field = np_;                                                  \
			(b)->s->field[(b)->s->nfield++] = (value);                            \
		}                                                                             \
	} while (0)

static struct spardl_step *step(struct builder *b)
{
	return b->oom || b->cur < 0 ? NULL : &b->s->steps[b->cur];
}

/* Start a step; waits and writes added next belong to it. */
static void begin(struct builder *b, struct spardl_op op)
{
	struct spardl_step st = { 0 };

	st.op = op;
	st.wait0 = b->s->nwaits;
	st.write0 = b->s->nwrites;
	PUSH(b, steps, nsteps, cap_steps, st);
	b->cur = b->oom ? -1 : (int)b->s->nsteps - 1;
}

static uint32_t sslot(struct builder *b, uint8_t region, uint32_t rs, uint64_t off, uint64_t max)
{
	struct spardl_sslot ss = { .region = region, .rslot = rs, .off = off, .max = max };

	if (region == SPARDL_REG_SEND) {
		ss.off = b->s->send_bytes;
		b->s->send_bytes += align8(max);
	}
	PUSH(b, sslots, nsslots, cap_sslots, ss);
	return b->s->nsslots - 1;
}

/* A receive slot the current step waits for. */
static uint32_t wait_slot(struct builder *b, int peer, int phase, int round, int seq, uint64_t max)
{
	struct spardl_rslot rs = { .peer = peer, .phase = (uint8_t)phase, .round = (uint32_t)round,
				   .seq = (uint32_t)seq, .off = b->s->recv_bytes, .max = max };
	uint32_t id = b->s->nrslots;

	b->s->recv_bytes += align8(max);
	PUSH(b, rslots, nrslots, cap_rslots, rs);
	PUSH(b, waits, nwaits, cap_waits, id);
	if (step(b))
		step(b)->nwait++;
	return id;
}

static void write_to(struct builder *b, int peer, int phase, int round, int seq, uint32_t ss)
{
	struct spardl_write w = { .peer = peer, .phase = (uint8_t)phase, .round = (uint32_t)round,
				  .seq = (uint32_t)seq, .sslot = ss, .rslot = NO_SLOT };

	PUSH(b, writes, nwrites, cap_writes, w);
	if (step(b))
		step(b)->nwrite++;
}

static uint32_t reglist(struct builder *b, const uint32_t *regs, uint32_t n)
{
	uint32_t first = b->s->nreglist, i;

	for (i = 0; i < n; i++)
		PUSH(b, reglist, nreglist, cap_reglist, regs[i]);
	return first;
}

static struct spardl_op mkop(int code, int phase, int round)
{
	struct spardl_op op = { 0 };

	op.code = (uint8_t)code;
	op.phase = (uint8_t)phase;
	op.round = (uint32_t)round;
	op.slot = NO_SLOT;
	return op;
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static void max_u64(uint64_t *a, uint64_t b)
{
	if (b > *a)
		*a = b;
}

/* Global rank of in-team rank q of team t. */
static int grank(const struct spardl_sched *s, int t, int q)
{
	return t * s->team_size + q;
}

/*
 * Bruck all-gather of lists among `np` members (member index me, global rank
 * of member x given by `peer_of`). held[0] must be set; held[j] becomes the
 * list of member (me + j) mod np. cap: pairs per list.
 */
static void bruck_lists(struct builder *b, int phase, int np, int me, uint32_t *held,
			int (*peer_of)(const struct spardl_sched *, int), uint32_t expect_b0,
			uint32_t expect_step, uint64_t cap)
{
	struct spardl_sched *s = b->s;
	int st, gap;

	for (st = 0, gap = 1; gap < np; st++, gap <<= 1) {
		int c = gap < np - gap ? gap : np - gap;
		uint64_t bytes = (uint64_t)c * spardl_wire_bytes(cap);
		struct spardl_op op = mkop(SPARDL_OP_SEND_LISTS, phase, st);
		uint32_t ss = sslot(b, SPARDL_REG_SEND, 0, 0, bytes);
		int j;

		op.slot = ss;
		op.rl0 = reglist(b, held, (uint32_t)c);
		op.nrl = (uint32_t)c;
		begin(b, op);
		write_to(b, peer_of(s, mod(me - gap, np)), phase, st, 0, ss);

		op = mkop(SPARDL_OP_RECV_LISTS, phase, st);
		op.r0 = s->nregs;
		op.nrl = (uint32_t)c;
		op.b0 = expect_step ? (uint32_t)mod((int)expect_b0 + gap, (int)s->nblocks) : expect_b0;
		op.b_step = expect_step;
		for (j = 0; j < c; j++)
			held[gap + j] = s->nregs++;
		begin(b, op);
		if (step(b))
			step(b)->op.slot = wait_slot(b, peer_of(s, mod(me + gap, np)), phase, st, 0, bytes);
	}
}

static int peer_in_team(const struct spardl_sched *s, int q)
{
	return grank(s, s->team, q);
}

static int peer_across_teams(const struct spardl_sched *s, int t)
{
	return grank(s, t, s->trank);
}

static int peer_global(const struct spardl_sched *s, int w)
{
	(void)s;
	return w;
}

static void op_select(struct builder *b, int phase, int round, uint32_t b0, uint32_t nb, uint64_t m)
{
	struct spardl_op op = mkop(SPARDL_OP_SELECT, phase, round);

	op.b0 = b0;
	op.nb = nb;
	op.m = (uint32_t)m;
	begin(b, op);
	max_u64(&b->s->max_select, m);
	b->s->touched += nb * m;
	b->s->undo_runs += nb;
}

/* SELECT into a list register backed by list buffer buf. */
static uint32_t select_to_reg(struct builder *b, uint32_t block, uint64_t m, uint32_t buf)
{
	uint32_t reg = b->s->nregs++;

	op_select(b, SPARDL_PH_SRS, 0, block, 1, m);
	if (step(b)) {
		step(b)->op.dst_is_reg = 1;
		step(b)->op.dst = reg;
		step(b)->op.buf = buf;
	}
	return reg;
}

static uint32_t reduce(struct builder *b, int phase, int round, const uint32_t *regs, uint32_t n,
		       uint64_t m, uint32_t buf, uint32_t share_log2, uint64_t in_cap)
{
	struct spardl_op op = mkop(SPARDL_OP_REDUCE, phase, round);
	uint32_t reg = b->s->nregs++;

	op.rl0 = reglist(b, regs, n);
	op.nrl = n;
	op.m = (uint32_t)m;
	op.dst_is_reg = 1;
	op.dst = reg;
	op.buf = buf;
	op.share_log2 = share_log2;
	begin(b, op);
	max_u64(&b->s->union_pairs, min_u64(n * in_cap, b->s->block_size));
	if (share_log2) {
		b->s->touched += n * in_cap;
		b->s->undo_runs++;
	}
	return reg;
}

static void finish(struct builder *b, const uint32_t *regs, uint32_t n, uint64_t in_cap)
{
	struct spardl_op op = mkop(SPARDL_OP_RESULT, 0, 0);

	op.rl0 = reglist(b, regs, n);
	op.nrl = n;
	begin(b, op);
	b->s->result_pairs = min_u64(n * in_cap, b->s->p.n);
	max_u64(&b->s->union_pairs, b->s->result_pairs);
	begin(b, mkop(SPARDL_OP_RESIDUAL, 0, 0));
	begin(b, mkop(SPARDL_OP_OUTPUT, 0, 0));
}

/*
 * One round of a pairwise exchange with re-selection (R-SAG, gTopk): send
 * list cur to partner, receive its list (block id `block`), keep topk(m) of
 * the sum; dropped values go back to acc in shares 2^-(round+1). Returns the
 * register of the kept list.
 */
static uint32_t pairwise_round(struct builder *b, int phase, int round, int partner, uint32_t cur,
			       uint32_t block, uint64_t m)
{
	struct spardl_sched *s = b->s;
	uint64_t blk = spardl_wire_bytes(m);
	uint32_t ss = sslot(b, SPARDL_REG_SEND, 0, 0, blk), pair[2];
	struct spardl_op op = mkop(SPARDL_OP_SEND_LISTS, phase, round);

	op.slot = ss;
	op.rl0 = reglist(b, &cur, 1);
	op.nrl = 1;
	begin(b, op);
	write_to(b, partner, phase, round, 0, ss);
	op = mkop(SPARDL_OP_RECV_LISTS, phase, round);
	op.r0 = s->nregs++;
	op.nrl = 1;
	op.b0 = block;
	begin(b, op);
	if (step(b))
		step(b)->op.slot = wait_slot(b, partner, phase, round, 0, blk);
	/* The lower rank's list first on both sides, so both add in the same
	 * order (it matters for NaN payloads). */
	pair[0] = partner < s->p.rank ? op.r0 : cur;
	pair[1] = partner < s->p.rank ? cur : op.r0;
	/* List buffers 1 and 2 alternate; buffer 0 holds the first selection. */
	return reduce(b, phase, round, pair, 2, m, 1 + (uint32_t)(round & 1), (uint32_t)round + 1, m);
}

static void compile_spardl(struct builder *b)
{
	struct spardl_sched *s = b->s;
	int P1 = s->team_size, d = s->p.teams, r = s->trank, t = s->team;
	int R = ilog2_ceil(P1), i, j;
	uint64_t kb = s->kb, blk = spardl_wire_bytes(kb);
	uint32_t *held, fin;

	held = calloc((size_t)(P1 > d ? P1 : d), sizeof(*held));
	if (!held) {
		b->oom = 1;
		return;
	}
	s->buf_pairs = kb;
	s->srs_rounds = (uint32_t)R;
	/* Spar-Reduce-Scatter: cyclic-shift halving. */
	for (i = 0; i < R; i++) {
		int gap = 1 << (R - 1 - i);
		int nb = i == 0 ? P1 - (1 << (R - 1)) : gap;
		int to = grank(s, t, mod(r + gap, P1)), from = grank(s, t, mod(r - gap, P1));
		int nmsg = s->p.srs == SPARDL_SRS_SEQUENTIAL ? nb : 1;
		int per = nb / nmsg;

		for (j = 0; j < nmsg; j++) {
			uint32_t ss = sslot(b, SPARDL_REG_SEND, 0, 0, (uint64_t)per * blk);

			op_select(b, SPARDL_PH_SRS, i, (uint32_t)mod(r + gap + j * per, P1),
				  (uint32_t)per, kb);
			if (step(b))
				step(b)->op.slot = ss;
			write_to(b, to, SPARDL_PH_SRS, i, j, ss);
		}
		for (j = 0; j < nmsg; j++) {
			struct spardl_op op = mkop(SPARDL_OP_SCATTER, SPARDL_PH_SRS, i);

			op.b0 = (uint32_t)mod(r + j * per, P1);
			op.nb = (uint32_t)per;
			begin(b, op);
			if (step(b))
				step(b)->op.slot = wait_slot(b, from, SPARDL_PH_SRS, i, j, (uint64_t)per * blk);
			s->touched += (uint64_t)per * kb;
			s->undo_runs += (uint64_t)per;
		}
	}
	/* Owner selection, then the all-gather across teams. */
	held[0] = select_to_reg(b, (uint32_t)r, kb, 0);
	fin = held[0];
	if (d > 1 && s->p.sag == SPARDL_SAG_BRUCK) {
		uint32_t order[64], *ord = d <= 64 ? order : calloc((size_t)d, sizeof(*ord));

		if (!ord) {
			b->oom = 1;
			goto out;
		}
		bruck_lists(b, SPARDL_PH_SAG, d, t, held, peer_across_teams, (uint32_t)r, 0, kb);
		for (j = 0; j < d; j++)
			ord[j] = held[mod(j - t, d)];
		fin = reduce(b, SPARDL_PH_SAG, 0, ord, (uint32_t)d, kb, 1, 0, kb);
		if (ord != order)
			free(ord);
	} else if (d > 1) {
		int rounds = ilog2_ceil(d), sidx;
		uint32_t cur = held[0];

		for (sidx = 0; sidx < rounds; sidx++)
			cur = pairwise_round(b, SPARDL_PH_SAG, sidx, grank(s, t ^ (1 << sidx), r), cur, (uint32_t)r, kb);
		fin = cur;
	}
	/* All-gather of the final lists inside the team. */
	held[0] = fin;
	bruck_lists(b, SPARDL_PH_AG, P1, r, held, peer_in_team, (uint32_t)r, 1, kb);
	{
		uint32_t *ord = calloc((size_t)P1, sizeof(*ord));

		if (!ord) {
			b->oom = 1;
			goto out;
		}
		for (j = 0; j < P1; j++)
			ord[j] = held[mod(j - r, P1)];
		finish(b, ord, (uint32_t)P1, kb);
		free(ord);
	}
out:
	free(held);
}

static void compile_topka(struct builder *b)
{
	struct spardl_sched *s = b->s;
	int P = s->p.size, w = s->p.rank, j;
	uint32_t *held = calloc((size_t)P, sizeof(*held)), *ord = calloc((size_t)P, sizeof(*ord));

	if (!held || !ord) {
		b->oom = 1;
		goto out;
	}
	s->buf_pairs = s->kb;
	held[0] = select_to_reg(b, 0, s->kb, 0);
	bruck_lists(b, SPARDL_PH_AG, P, w, held, peer_global, 0, 0, s->kb);
	for (j = 0; j < P; j++)
		ord[j] = held[mod(j - w, P)];
	finish(b, ord, (uint32_t)P, s->kb);
out:
	free(held);
	free(ord);
}

static void compile_gtopk(struct builder *b)
{
	struct spardl_sched *s = b->s;
	int P = s->p.size, w = s->p.rank, rounds = ilog2_ceil(P), i;
	uint32_t cur;

	s->buf_pairs = s->kb;
	cur = select_to_reg(b, 0, s->kb, 0);
	for (i = 0; i < rounds; i++)
		cur = pairwise_round(b, SPARDL_PH_MERGE, i, w ^ (1 << i), cur, 0, s->kb);
	finish(b, &cur, 1, s->kb);
}

/* A dense chunk slot: its message is always the whole chunk. */
static uint32_t wait_chunk(struct builder *b, int peer, int phase, int round, uint64_t bytes)
{
	uint32_t id = wait_slot(b, peer, phase, round, 0, bytes);

	if (!b->oom)
		b->s->rslots[id].exact = 1;
	return id;
}

/*
 * Ring reduce-scatter, then ring all-gather. acc (grad + residual) is only
 * read: partial sums live in the receive slots (slot = acc + slot) and are
 * forwarded from there, so a failed call can restore the residual from
 * acc. The output is written after the last wait, so a failed call never
 * touches it either (the executor may write the own chunk earlier, in the
 * last add, when it can restore it: exec.c, op_dense_add). Each add's step
 * also posts the write that forwards its sum, so that on a transport with
 * SPARDL_TP_CAP_DIRECT the add stores the sum straight into the peer's slot.
 */
static void compile_dense(struct builder *b)
{
	struct spardl_sched *s = b->s;
	int P = s->p.size, r = s->p.rank, st;
	int to = mod(r + 1, P), from = mod(r - 1, P);
	uint64_t cs = s->block_size, n = s->p.n;
	uint32_t prev = NO_SLOT, reduced, *ag = calloc((size_t)P, sizeof(*ag));
	struct spardl_op op;

	if (!ag) {
		b->oom = 1;
		return;
	}
	s->result_pairs = n;
	for (st = 0; st < P - 1; st++) {
		uint32_t c = (uint32_t)mod(r - st, P), rc = (uint32_t)mod(r - st - 1, P);
		uint64_t len = spardl_block_len(n, cs, c), rlen = spardl_block_len(n, cs, rc);

		if (st == 0) {
			begin(b, mkop(SPARDL_OP_NONE, SPARDL_PH_RS, st));
			write_to(b, to, SPARDL_PH_RS, st, 0, sslot(b, SPARDL_REG_ACC, 0, min_u64(c * cs, n) * 4, len * 4));
		}
		op = mkop(SPARDL_OP_DENSE_ADD, SPARDL_PH_RS, st);
		op.off = min_u64(rc * cs, n);
		op.len = rlen;
		op.reduced = st == P - 2;
		begin(b, op);
		prev = wait_chunk(b, from, SPARDL_PH_RS, st, rlen * 4);
		if (step(b))
			step(b)->op.slot = prev;
		/* The sum goes on: the next reduce-scatter step, or (complete)
		 * the first all-gather step. */
		write_to(b, to, st + 1 < P - 1 ? SPARDL_PH_RS : SPARDL_PH_RAG, st + 1 < P - 1 ? st + 1 : 0, 0,
			 sslot(b, SPARDL_REG_RECV, prev, 0, rlen * 4));
	}
	/* prev now holds chunk r + 1, reduced over all ranks. */
	reduced = prev;
	for (st = 0; st < P - 1; st++) {
		uint32_t c = (uint32_t)mod(r + 1 - st, P), rc = (uint32_t)mod(r - st, P);
		uint64_t len = spardl_block_len(n, cs, c), rlen = spardl_block_len(n, cs, rc);

		/* (Step 0's write, of the reduced chunk, went with the last add.) */
		if (st > 0) {
			begin(b, mkop(SPARDL_OP_NONE, SPARDL_PH_RAG, st));
			write_to(b, to, SPARDL_PH_RAG, st, 0, sslot(b, SPARDL_REG_RECV, prev, 0, len * 4));
		}
		begin(b, mkop(SPARDL_OP_NONE, SPARDL_PH_RAG, st));
		prev = wait_chunk(b, from, SPARDL_PH_RAG, st, rlen * 4);
		ag[st] = prev;
	}
	{
		uint32_t own = (uint32_t)mod(r + 1, P);

		op = mkop(SPARDL_OP_DENSE_OUT, SPARDL_PH_RAG, 0);
		op.off = min_u64(own * cs, n);
		op.len = spardl_block_len(n, cs, own);
		op.slot = reduced;
		begin(b, op);
	}
	for (st = 0; st < P - 1; st++) {
		uint32_t rc = (uint32_t)mod(r - st, P);

		op = mkop(SPARDL_OP_DENSE_OUT, SPARDL_PH_RAG, st);
		op.off = min_u64(rc * cs, n);
		op.len = spardl_block_len(n, cs, rc);
		op.slot = ag[st];
		begin(b, op);
	}
	begin(b, mkop(SPARDL_OP_RESIDUAL, 0, 0));
	free(ag);
}

static int collect_peers(struct spardl_sched *s)
{
	int *mark = calloc((size_t)s->p.size, sizeof(*mark)), i, n = 0;

	if (!mark)
		return spardl_error_quiet(-ENOMEM, "out of memory for the schedule's peer table");
	for (i = (int)s->nwrites; i-- > 0;) {
		s->writes[i].last = !mark[s->writes[i].peer];
		mark[s->writes[i].peer] = 1;
	}
	memset(mark, 0, (size_t)s->p.size * sizeof(*mark));
	for (i = 0; i < (int)s->nwrites; i++)
		mark[s->writes[i].peer] = 1;
	for (i = 0; i < (int)s->nrslots; i++)
		mark[s->rslots[i].peer] = 1;
	for (i = 0; i < s->p.size; i++)
		n += mark[i];
	s->peers = malloc((size_t)(n ? n : 1) * sizeof(*s->peers));
	if (!s->peers) {
		free(mark);
		return spardl_error_quiet(-ENOMEM, "out of memory for the schedule's peer list");
	}
	for (i = 0, n = 0; i < s->p.size; i++)
		if (mark[i])
			s->peers[n++] = i;
	s->npeers = n;
	free(mark);
	return 0;
}

/* Number the pieces of every receive slot (SPARDL_IMM_MAX_SLOTS at most:
 * piece ids travel in the immediate). */
static int number_pieces(struct spardl_sched *s)
{
	uint64_t total = 0;
	uint32_t i, j;

	for (i = 0; i < s->nrslots; i++)
		total += spardl_sched_pieces(s->rslots[i].max, s->p.max_write);
	if (total >= SPARDL_IMM_MAX_SLOTS)
		return spardl_error_quiet(-E2BIG,
					  "the schedule needs %llu receive pieces; immediates name at most 2^%u: raise SPARDL_MAX_WRITE (pieces are at most that long), use more ranks, or split the buffer",
					  (unsigned long long)total, SPARDL_IMM_SLOT_BITS);
	s->piece_slot = malloc((size_t)(total ? total : 1) * sizeof(*s->piece_slot));
	if (!s->piece_slot)
		return spardl_error_quiet(-ENOMEM, "out of memory for %llu receive pieces", (unsigned long long)total);
	s->npieces = 0;
	for (i = 0; i < s->nrslots; i++) {
		struct spardl_rslot *rs = &s->rslots[i];

		rs->piece0 = s->npieces;
		rs->npieces = (uint32_t)spardl_sched_pieces(rs->max, s->p.max_write);
		for (j = 0; j < rs->npieces; j++)
			s->piece_slot[s->npieces++] = i;
	}
	return 0;
}

static void find_quiesce_step(struct spardl_sched *s)
{
	uint32_t i;

	s->quiesce_step = 0;
	for (i = 0; i < s->nsteps; i++)
		if (s->steps[i].nwait || s->steps[i].nwrite)
			s->quiesce_step = i + 1;
}

int spardl_sched_check_notify(const struct spardl_sched *s, int peer, uint32_t imm, uint64_t len, uint32_t *piece_out,
			      uint32_t *slot_out)
{
	uint32_t piece = imm & (SPARDL_IMM_MAX_SLOTS - 1), slot;
	unsigned phase = (imm >> 28) & 7, round = (imm >> 23) & 31;
	const struct spardl_rslot *rs;
	uint64_t pmax;

	if (piece >= s->npieces)
		return spardl_error_quiet(-SPARDL_ERR_PROTOCOL,
					  "unexpected write from rank %d (immediate 0x%08x: %s round %u piece %u) that this plan's schedule does not name; do all ranks run the same plans in the same order?",
					  peer, imm, spardl_phase_name(phase), round, piece);
	slot = s->piece_slot[piece];
	rs = &s->rslots[slot];
	if (rs->peer != peer || rs->phase != phase || (rs->round & 31) != round)
		return spardl_error_quiet(-SPARDL_ERR_PROTOCOL,
					  "unexpected write from rank %d (immediate 0x%08x: %s round %u piece %u); the schedule expects rank %d's %s round %u there; do all ranks run the same plans in the same order?",
					  peer, imm, spardl_phase_name(phase), round, piece, rs->peer,
					  spardl_phase_name(rs->phase), rs->round);
	pmax = spardl_piece_max(rs->max, s->p.max_write, piece - rs->piece0);
	if (len > pmax)
		return spardl_error_quiet(-SPARDL_ERR_PROTOCOL,
					  "rank %d wrote %llu bytes into piece %u of slot %u (%s round %u), which holds %llu",
					  peer, (unsigned long long)len, piece - rs->piece0, slot,
					  spardl_phase_name(rs->phase), rs->round, (unsigned long long)pmax);
	*piece_out = piece;
	*slot_out = slot;
	return 0;
}

int spardl_sched_compile(const struct spardl_sched_params *p, struct spardl_sched **out)
{
	struct builder b = { 0 };
	struct spardl_sched *s;
	int ret;

	if (p->size < 1 || p->rank < 0 || p->rank >= p->size || p->n == 0 || p->k == 0 ||
	    p->teams < 1 || p->size % p->teams)
		return spardl_error_quiet(-EINVAL, "schedule parameters out of range (size %d, rank %d, n %llu, k %llu, teams %d)",
					  p->size, p->rank, (unsigned long long)p->n, (unsigned long long)p->k, p->teams);
	/* Pairwise exchanges (R-SAG, gTopk) only exist for powers of two. */
	if ((p->algo == SPARDL_ALGO_SPARDL && p->sag == SPARDL_SAG_RECURSIVE && (p->teams & (p->teams - 1))) ||
	    (p->algo == SPARDL_ALGO_GTOPK && (p->size & (p->size - 1))))
		return spardl_error_quiet(-EINVAL, "pairwise exchanges need a power-of-two team count or size");
	s = calloc(1, sizeof(*s));
	if (!s)
		return spardl_error_quiet(-ENOMEM, "out of memory for a schedule");
	b.s = s;
	b.cur = -1;
	s->p = *p;
	s->team_size = p->algo == SPARDL_ALGO_SPARDL ? p->size / p->teams : p->size;
	s->team = p->rank / s->team_size;
	s->trank = p->rank % s->team_size;
	s->nbufs = 3;
	switch (p->algo) {
	case SPARDL_ALGO_SPARDL:
		s->nblocks = (uint32_t)s->team_size;
		s->block_size = (p->n + s->nblocks - 1) / s->nblocks;
		s->kb = (p->k + (uint64_t)s->team_size - 1) / (uint64_t)s->team_size;
		s->res_mode = SPARDL_RES_GRC;
		break;
	case SPARDL_ALGO_TOPKA:
	case SPARDL_ALGO_GTOPK:
		s->nblocks = 1;
		s->block_size = p->n;
		s->kb = p->k;
		s->res_mode = SPARDL_RES_LOCAL;
		break;
	case SPARDL_ALGO_DENSE:
		s->nblocks = (uint32_t)p->size;
		s->block_size = (p->n + (uint64_t)p->size - 1) / (uint64_t)p->size;
		s->kb = s->block_size;
		s->res_mode = SPARDL_RES_ZERO;
		break;
	default:
		free(s);
		return spardl_error_quiet(-EINVAL, "unknown algorithm %d", p->algo);
	}
	if (s->kb > s->block_size)
		s->kb = s->block_size;
	if (!p->residual)
		s->res_mode = SPARDL_RES_OFF;
	begin(&b, mkop(SPARDL_OP_ACC_INIT, 0, 0));
	switch (p->algo) {
	case SPARDL_ALGO_SPARDL:
		compile_spardl(&b);
		break;
	case SPARDL_ALGO_TOPKA:
		compile_topka(&b);
		break;
	case SPARDL_ALGO_GTOPK:
		compile_gtopk(&b);
		break;
	default:
		compile_dense(&b);
		break;
	}
	ret = b.oom ? spardl_error_quiet(-ENOMEM, "out of memory compiling the schedule") : collect_peers(s);
	if (!ret)
		ret = number_pieces(s);
	if (!ret)
		find_quiesce_step(s);
	if (ret) {
		spardl_sched_free(s);
		return ret;
	}
	*out = s;
	return 0;
}

void spardl_sched_free(struct spardl_sched *s)
{
	if (!s)
		return;
	free(s->steps);
	free(s->writes);
	free(s->waits);
	free(s->sslots);
	free(s->rslots);
	free(s->reglist);
	free(s->piece_slot);
	free(s->peers);
	free(s);
}

int spardl_sched_link(struct spardl_sched *s, struct spardl_sched *const *peer_scheds)
{
	uint32_t i, j;

	for (i = 0; i < s->nwrites; i++) {
		struct spardl_write *w = &s->writes[i];
		const struct spardl_sched *ps = peer_scheds[w->peer];
		uint64_t max = s->sslots[w->sslot].max;

		if (!ps)
			return spardl_error(-EINVAL, "internal: no schedule of rank %d to link against", w->peer);
		for (j = 0; j < ps->nrslots; j++) {
			const struct spardl_rslot *rs = &ps->rslots[j];

			if (rs->peer == s->p.rank && rs->phase == w->phase && rs->round == w->round &&
			    rs->seq == w->seq)
				break;
		}
		if (j == ps->nrslots || ps->rslots[j].max != max)
			return spardl_error(-EPROTO,
					    "internal: rank %d's write to rank %d (%s round %u) has no matching receive slot",
					    s->p.rank, w->peer, spardl_phase_name(w->phase), w->round);
		w->rslot = j;
		w->rpiece0 = ps->rslots[j].piece0;
		w->npieces = ps->rslots[j].npieces;
		w->roff = ps->rslots[j].off;
	}
	return 0;
}

const char *spardl_phase_name(unsigned phase)
{
	static const char *names[] = { "srs", "sag", "ag", "merge", "rs", "rag" };

	return phase < SPARDL_PH_COUNT ? names[phase] : "?";
}

const char *spardl_op_name(unsigned code)
{
	static const char *names[] = { "none", "acc_init", "select", "scatter_add", "send_lists",
				       "recv_lists", "reduce", "result", "residual", "output",
				       "dense_add", "dense_out" };

	return code < SPARDL_OP_COUNT ? names[code] : "?";
}

static const char *algo_name(int a)
{
	switch (a) {
	case SPARDL_ALGO_SPARDL:
		return "spardl";
	case SPARDL_ALGO_DENSE:
		return "dense";
	case SPARDL_ALGO_TOPKA:
		return "topka";
	case SPARDL_ALGO_GTOPK:
		return "gtopk";
	}
	return "?";
}

static void render_regs(FILE *f, const struct spardl_sched *s, const struct spardl_op *op)
{
	uint32_t i;

	fputs("[", f);
	for (i = 0; i < op->nrl; i++)
		fprintf(f, "%sL%u", i ? " " : "", s->reglist[op->rl0 + i]);
	fputs("]", f);
}

static void render_op(FILE *f, const struct spardl_sched *s, const struct spardl_op *op)
{
	uint32_t i;

	fputs(spardl_op_name(op->code), f);
	switch (op->code) {
	case SPARDL_OP_SELECT:
		fputs(" blocks", f);
		for (i = 0; i < op->nb; i++)
			fprintf(f, " %u", (op->b0 + i) % s->nblocks);
		fprintf(f, " m=%u -> ", op->m);
		if (op->dst_is_reg)
			fprintf(f, "L%u", op->dst);
		else
			fprintf(f, "send slot %u", op->slot);
		break;
	case SPARDL_OP_SCATTER:
		fprintf(f, " recv slot %u blocks", op->slot);
		for (i = 0; i < op->nb; i++)
			fprintf(f, " %u", (op->b0 + i) % s->nblocks);
		break;
	case SPARDL_OP_SEND_LISTS:
		fputs(" ", f);
		render_regs(f, s, op);
		fprintf(f, " -> send slot %u", op->slot);
		break;
	case SPARDL_OP_RECV_LISTS:
		fprintf(f, " recv slot %u -> L%u..L%u", op->slot, op->r0, op->r0 + op->nrl - 1);
		break;
	case SPARDL_OP_REDUCE:
		fputs(" ", f);
		render_regs(f, s, op);
		fprintf(f, " keep m=%u -> L%u", op->m, op->dst);
		if (op->share_log2)
			fprintf(f, ", drops x 2^-%u to acc", op->share_log2);
		break;
	case SPARDL_OP_RESULT:
		fputs(" ", f);
		render_regs(f, s, op);
		break;
	case SPARDL_OP_DENSE_ADD:
	case SPARDL_OP_DENSE_OUT:
		fprintf(f, " elements [%llu, %llu)", (unsigned long long)op->off,
			(unsigned long long)(op->off + op->len));
		if (op->slot != NO_SLOT)
			fprintf(f, " from recv slot %u", op->slot);
		else
			fputs(" from acc", f);
		break;
	default:
		break;
	}
}

int spardl_sched_render(const struct spardl_sched *s, char **text_out)
{
	static const char *region[] = { "send", "acc", "recv" };
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	uint32_t i, j;

	if (!f)
		return -errno;
	fprintf(f, "rank %d of %d: algo %s, n=%llu, k=%llu", s->p.rank, s->p.size, algo_name(s->p.algo),
		(unsigned long long)s->p.n, (unsigned long long)s->p.k);
	if (s->p.algo == SPARDL_ALGO_SPARDL)
		fprintf(f, ", teams=%d (team %d, in-team rank %d of %d), sag=%s, srs=%s", s->p.teams,
			s->team, s->trank, s->team_size, s->p.sag == SPARDL_SAG_BRUCK ? "bruck" : "recursive",
			s->p.srs == SPARDL_SRS_BATCHED ? "batched" : "sequential");
	fprintf(f, "\n  blocks %u of %llu elements, budget %llu per block; send region %llu B, receive region 2 x %llu B\n",
		s->nblocks, (unsigned long long)s->block_size, (unsigned long long)s->kb,
		(unsigned long long)s->send_bytes, (unsigned long long)s->recv_bytes);
	fputs("  peers:", f);
	for (i = 0; i < (uint32_t)s->npeers; i++)
		fprintf(f, " %d", s->peers[i]);
	fputs("\n", f);
	for (i = 0; i < s->nsteps; i++) {
		const struct spardl_step *st = &s->steps[i];

		fprintf(f, "  step %3u %-5s %2u:", i, spardl_phase_name(st->op.phase), st->op.round);
		for (j = 0; j < st->nwait; j++) {
			const struct spardl_rslot *rs = &s->rslots[s->waits[st->wait0 + j]];

			fprintf(f, " wait rank %d slot %u (<= %llu B);", rs->peer, s->waits[st->wait0 + j],
				(unsigned long long)rs->max);
		}
		if (st->op.code != SPARDL_OP_NONE) {
			fputs(" ", f);
			render_op(f, s, &st->op);
			fputs(";", f);
		}
		for (j = 0; j < st->nwrite; j++) {
			const struct spardl_write *w = &s->writes[st->write0 + j];
			const struct spardl_sslot *ss = &s->sslots[w->sslot];

			fprintf(f, " write %s+%llu (<= %llu B) -> rank %d", region[ss->region],
				(unsigned long long)ss->off, (unsigned long long)ss->max, w->peer);
			if (w->rslot != NO_SLOT)
				fprintf(f, " slot %u @%llu", w->rslot, (unsigned long long)w->roff);
			fputs(";", f);
		}
		fputs("\n", f);
	}
	if (fclose(f))
		return -errno;
	*text_out = buf;
	return 0;
}
