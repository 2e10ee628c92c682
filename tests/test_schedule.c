/* SPDX-License-Identifier: MIT */
/* Tests of the compiled schedules (SPEC sections 4 and 6): linking, SRS rounds, peers, sizes. */
#include <check.h>

#include "unit.h"
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schedule.h"
#include "wire.h"

#define MAXP 16

/* What the current checks are about, for failure messages. */
static char ctx[200];

/* Check records every passing ck_assert; the loops here run many thousands
 * of checks, so they only call into Check on a failure. */
#define REQUIRE(cond, fmt, ...)                                                        \
	do {                                                                           \
		if (!(cond))                                                           \
			ck_abort_msg("%s: " fmt " [%s]", ctx, ##__VA_ARGS__, #cond);   \
	} while (0)

static int ceil_log2(int x)
{
	int r = 0;

	while ((1 << r) < x)
		r++;
	return r;
}

static int is_pow2(int x)
{
	return x > 0 && (x & (x - 1)) == 0;
}

static int md(int a, int m)
{
	int r = a % m;

	return r < 0 ? r + m : r;
}

static uint64_t kb_of(uint64_t n, uint64_t k, int team_size)
{
	uint64_t kb = (k + (uint64_t)team_size - 1) / (uint64_t)team_size;
	uint64_t bs = (n + (uint64_t)team_size - 1) / (uint64_t)team_size;

	if (kb < 1)
		kb = 1;
	return kb < bs ? kb : bs;
}

/* Blocks sent in SRS round i for team size P1 (SPEC section 4). */
static int srs_nb(int P1, int i)
{
	int R = ceil_log2(P1), gap = 1 << (R - 1 - i);

	return i == 0 ? P1 - (1 << (R - 1)) : gap;
}

static struct spardl_sched_params mkparams(int P, int rank, uint64_t n, uint64_t k, int algo, int d,
					   int sag, int srs)
{
	struct spardl_sched_params p;

	memset(&p, 0, sizeof(p));
	p.size = P;
	p.rank = rank;
	p.n = n;
	p.k = k;
	p.algo = algo;
	p.teams = d;
	p.sag = sag;
	p.srs = srs;
	p.residual = 1;
	p.average = 1;
	return p;
}

static void compile_all(const struct spardl_sched_params *base, struct spardl_sched **s)
{
	int w, ret;

	for (w = 0; w < base->size; w++) {
		struct spardl_sched_params p = *base;

		p.rank = w;
		s[w] = NULL;
		ret = spardl_sched_compile(&p, &s[w]);
		REQUIRE(ret == 0 && s[w], "compile of rank %d returned %d", w, ret);
	}
}

static void free_all(struct spardl_sched **s, int P)
{
	int w;

	for (w = 0; w < P; w++)
		spardl_sched_free(s[w]);
}

/* Link every rank against all schedules; then every write must match
 * exactly one receive slot of its target (by peer, phase, round, seq, size)
 * and every receive slot of every rank exactly one write. */
static void link_and_match(struct spardl_sched **s, int P)
{
	static int hits[MAXP][4096];
	uint64_t nw = 0, nr = 0;
	int w;
	uint32_t i, j;

	memset(hits, 0, sizeof(hits));
	for (w = 0; w < P; w++) {
		int ret = spardl_sched_link(s[w], s);

		REQUIRE(ret == 0, "link of rank %d returned %d", w, ret);
		REQUIRE(s[w]->nrslots <= 4096, "rank %d has %u receive slots", w, s[w]->nrslots);
	}
	for (w = 0; w < P; w++) {
		for (i = 0; i < s[w]->nwrites; i++) {
			const struct spardl_write *wr = &s[w]->writes[i];
			const struct spardl_sched *t;
			int found = 0;

			REQUIRE(wr->peer >= 0 && wr->peer < P && wr->peer != w, "rank %d write %u to rank %d",
				w, i, wr->peer);
			REQUIRE(wr->sslot < s[w]->nsslots, "rank %d write %u: send slot %u", w, i, wr->sslot);
			t = s[wr->peer];
			/* Our own search: exactly one receive slot has this key. */
			for (j = 0; j < t->nrslots; j++) {
				const struct spardl_rslot *rs = &t->rslots[j];

				if (rs->peer == w && rs->phase == wr->phase && rs->round == wr->round &&
				    rs->seq == wr->seq)
					found++;
			}
			REQUIRE(found == 1, "rank %d write %u (phase %u round %u seq %u) to rank %d: %d slots match",
				w, i, wr->phase, wr->round, wr->seq, wr->peer, found);
			/* What link filled in. */
			REQUIRE(wr->rslot < t->nrslots, "rank %d write %u: linked slot %u", w, i, wr->rslot);
			{
				const struct spardl_rslot *rs = &t->rslots[wr->rslot];

				REQUIRE(rs->peer == w && rs->phase == wr->phase && rs->round == wr->round &&
						rs->seq == wr->seq,
					"rank %d write %u linked to the wrong slot %u of rank %d", w, i, wr->rslot,
					wr->peer);
				REQUIRE(wr->roff == rs->off, "rank %d write %u: roff %llu, slot offset %llu", w, i,
					(unsigned long long)wr->roff, (unsigned long long)rs->off);
				REQUIRE(rs->max == s[w]->sslots[wr->sslot].max,
					"rank %d write %u: %llu bytes into a slot of %llu", w, i,
					(unsigned long long)s[w]->sslots[wr->sslot].max,
					(unsigned long long)rs->max);
			}
			hits[wr->peer][wr->rslot]++;
			nw++;
		}
	}
	for (w = 0; w < P; w++) {
		nr += s[w]->nrslots;
		for (j = 0; j < s[w]->nrslots; j++)
			REQUIRE(hits[w][j] == 1, "receive slot %u of rank %d (from rank %d) written %d times", j, w,
				s[w]->rslots[j].peer, hits[w][j]);
	}
	REQUIRE(nw == nr, "%llu writes, %llu receive slots", (unsigned long long)nw,
		(unsigned long long)nr);
}

struct range {
	uint64_t off, max;
};

static int range_cmp(const void *pa, const void *pb)
{
	const struct range *a = pa, *b = pb;

	return a->off < b->off ? -1 : a->off > b->off;
}

/* Slots fit their region and do not overlap. */
static void check_ranges(struct range *r, size_t n, uint64_t region, const char *what)
{
	size_t i;

	qsort(r, n, sizeof(*r), range_cmp);
	for (i = 0; i < n; i++) {
		REQUIRE(r[i].off + r[i].max <= region, "%s slot [%llu, +%llu) past the region of %llu", what,
			(unsigned long long)r[i].off, (unsigned long long)r[i].max,
			(unsigned long long)region);
		if (i)
			REQUIRE(r[i - 1].off + r[i - 1].max <= r[i].off, "%s slots overlap at %llu", what,
				(unsigned long long)r[i].off);
	}
}

/* Layout of one schedule's memory: receive slots in recv_bytes, send slots
 * (SEND region) in send_bytes, ACC slots inside acc, RECV slots inside
 * the receive slot they forward. */
static void check_layout(const struct spardl_sched *s)
{
	struct range *r = malloc((s->nrslots + s->nsslots + 1) * sizeof(*r));
	size_t n = 0;
	uint32_t i;

	ck_assert_ptr_nonnull(r);
	for (i = 0; i < s->nrslots; i++) {
		r[n].off = s->rslots[i].off;
		r[n].max = s->rslots[i].max;
		n++;
	}
	check_ranges(r, n, s->recv_bytes, "receive");
	n = 0;
	for (i = 0; i < s->nsslots; i++) {
		const struct spardl_sslot *ss = &s->sslots[i];

		switch (ss->region) {
		case SPARDL_REG_SEND:
			r[n].off = ss->off;
			r[n].max = ss->max;
			n++;
			break;
		case SPARDL_REG_ACC:
			REQUIRE(ss->off + ss->max <= s->p.n * 4, "acc slot %u past acc", i);
			break;
		case SPARDL_REG_RECV:
			REQUIRE(ss->rslot < s->nrslots && ss->max <= s->rslots[ss->rslot].max,
				"forwarding slot %u", i);
			break;
		default:
			REQUIRE(0, "send slot %u in region %u", i, ss->region);
		}
	}
	check_ranges(r, n, s->send_bytes, "send");
	free(r);
}

/* Peers: exactly the distinct ranks written to or read from, ascending. */
static void check_peers_consistent(const struct spardl_sched *s, int P)
{
	int mark[MAXP] = { 0 }, w, n = 0;
	uint32_t i;

	for (i = 0; i < s->nwrites; i++)
		mark[s->writes[i].peer] = 1;
	for (i = 0; i < s->nrslots; i++)
		mark[s->rslots[i].peer] = 1;
	for (w = 0; w < P; w++) {
		if (!mark[w])
			continue;
		REQUIRE(n < s->npeers && s->peers[n] == w, "peer list lacks rank %d (or out of order)", w);
		n++;
	}
	REQUIRE(n == s->npeers, "peer list has %d entries, %d distinct peers used", s->npeers, n);
}

/* The peers named by a set expected from the SPEC. */
static void check_peer_set(const struct spardl_sched *s, const int *want, int P)
{
	int w, n = 0, i;

	for (w = 0; w < P; w++) {
		if (!want[w])
			continue;
		REQUIRE(n < s->npeers && s->peers[n] == w, "expected peer %d missing", w);
		n++;
	}
	for (i = 0; i < s->npeers; i++)
		REQUIRE(want[s->peers[i]], "unexpected peer %d", s->peers[i]);
	REQUIRE(n == s->npeers, "%d peers, expected %d", s->npeers, n);
}

/* Everything a SparDL schedule of rank w must satisfy. */
static void check_spardl_rank(const struct spardl_sched *s, int P, int d, int sag, int srs, uint64_t n,
			      uint64_t k)
{
	int P1 = P / d, w = s->p.rank, r = w % P1, t = w / P1, R = ceil_log2(P1), i, j;
	uint64_t kb = kb_of(n, k, P1), bs = (n + (uint64_t)P1 - 1) / (uint64_t)P1;
	uint64_t blk = spardl_wire_bytes(kb);
	int sent[MAXP] = { 0 }, recvd[MAXP] = { 0 }, want[MAXP] = { 0 };
	int round_sel_blocks[8] = { 0 }, round_sel_ops[8] = { 0 }, round_writes[8] = { 0 };
	int round_scatter_blocks[8] = { 0 };
	int srs_writes = 0, owner = 0, sag_writes = 0, ag_writes = 0, nreduce_sag = 0, nresult = 0;
	uint32_t st, x;

	REQUIRE(s->team_size == P1 && s->team == t && s->trank == r, "team %d/%d in-team %d", s->team,
		s->team_size, s->trank);
	REQUIRE(s->nblocks == (uint32_t)P1 && s->block_size == bs, "%u blocks of %llu", s->nblocks,
		(unsigned long long)s->block_size);
	REQUIRE(s->kb == kb, "kb %llu, expected %llu", (unsigned long long)s->kb, (unsigned long long)kb);
	REQUIRE(R <= 8, "R %d", R);

	for (st = 0; st < s->nsteps; st++) {
		const struct spardl_step *sp = &s->steps[st];
		const struct spardl_op *op = &sp->op;

		REQUIRE(sp->write0 + sp->nwrite <= s->nwrites && sp->wait0 + sp->nwait <= s->nwaits,
			"step %u: writes/waits out of range", st);
		for (x = 0; x < sp->nwait; x++)
			REQUIRE(s->waits[sp->wait0 + x] < s->nrslots, "step %u waits for slot %u", st,
				s->waits[sp->wait0 + x]);

		if (op->code == SPARDL_OP_SELECT && op->phase == SPARDL_PH_SRS && !op->dst_is_reg) {
			const struct spardl_sslot *ss;

			REQUIRE(op->round < (uint32_t)R, "step %u: SRS select in round %u", st, op->round);
			REQUIRE(op->m == kb, "step %u: SRS select m=%u, kb %llu", st, op->m,
				(unsigned long long)kb);
			REQUIRE(op->slot < s->nsslots, "step %u: SRS select into slot %u", st, op->slot);
			ss = &s->sslots[op->slot];
			REQUIRE(ss->region == SPARDL_REG_SEND && ss->max == op->nb * blk,
				"step %u: send slot of %llu bytes for %u blocks", st,
				(unsigned long long)ss->max, op->nb);
			for (x = 0; x < op->nb; x++) {
				int b = (int)((op->b0 + x) % (uint32_t)P1);

				sent[b]++;
				/* SPEC: round i sends blocks (r + gap_i + j) mod P'. */
				REQUIRE(md(b - r, P1) >= (1 << (R - 1 - op->round)) &&
						md(b - r, P1) < (1 << (R - 1 - op->round)) + srs_nb(P1, op->round),
					"step %u: round %u sends block %d", st, op->round, b);
			}
			round_sel_blocks[op->round] += (int)op->nb;
			round_sel_ops[op->round]++;
			/* The write that carries it, from the same step and slot. */
			REQUIRE(sp->nwrite == 1, "step %u: SRS select with %u writes", st, sp->nwrite);
			{
				const struct spardl_write *wr = &s->writes[sp->write0];
				int gap = 1 << (R - 1 - op->round);

				REQUIRE(wr->sslot == op->slot && wr->phase == SPARDL_PH_SRS &&
						wr->round == op->round,
					"step %u: the write does not carry the selection", st);
				REQUIRE(wr->peer / P1 == t, "step %u: SRS write to rank %d of team %d", st,
					wr->peer, wr->peer / P1);
				REQUIRE(wr->peer == t * P1 + md(r + gap, P1), "step %u: SRS write to rank %d",
					st, wr->peer);
				/* Batched: one message of all nb_i blocks; sequential: message j
				 * holds block (r + gap + j), in the order of j. */
				if (srs == SPARDL_SRS_BATCHED)
					REQUIRE(wr->seq == 0 && op->b0 == (uint32_t)md(r + gap, P1) &&
							op->nb == (uint32_t)srs_nb(P1, op->round),
						"step %u: batched message seq %u, blocks %u+%u", st, wr->seq, op->b0,
						op->nb);
				else
					REQUIRE(op->nb == 1 && op->b0 == (uint32_t)md(r + gap + wr->seq, P1) &&
							wr->seq == (uint32_t)(round_sel_ops[op->round] - 1),
						"step %u: sequential message seq %u holds block %u", st, wr->seq,
						op->b0);
			}
		}
		if (op->code == SPARDL_OP_SELECT && op->dst_is_reg) {
			owner++;
			REQUIRE(op->b0 == (uint32_t)r && op->nb == 1 && op->m == kb,
				"owner selection of block %u (%u blocks, m %u), own block %d", op->b0, op->nb,
				op->m, r);
		}
		if (op->code == SPARDL_OP_SCATTER) {
			const struct spardl_rslot *rs;
			int gap = 1 << (R - 1 - op->round);

			REQUIRE(op->phase == SPARDL_PH_SRS && op->round < (uint32_t)R, "step %u: scatter", st);
			REQUIRE(sp->nwait == 1 && s->waits[sp->wait0] == op->slot,
				"step %u: scatter does not wait for its slot", st);
			rs = &s->rslots[op->slot];
			REQUIRE(rs->max == op->nb * blk, "step %u: SRS receive slot of %llu bytes for %u blocks",
				st, (unsigned long long)rs->max, op->nb);
			REQUIRE(rs->phase == SPARDL_PH_SRS && rs->round == op->round &&
					rs->peer == t * P1 + md(r - gap, P1),
				"step %u: SRS receive from rank %d", st, rs->peer);
			if (srs == SPARDL_SRS_BATCHED)
				REQUIRE(rs->seq == 0 && op->b0 == (uint32_t)r &&
						op->nb == (uint32_t)srs_nb(P1, op->round),
					"step %u: batched receive seq %u, blocks %u+%u", st, rs->seq, op->b0, op->nb);
			else
				REQUIRE(op->nb == 1 && op->b0 == (uint32_t)md(r + rs->seq, P1),
					"step %u: sequential receive seq %u holds block %u", st, rs->seq, op->b0);
			for (x = 0; x < op->nb; x++) {
				int b = (int)((op->b0 + x) % (uint32_t)P1);

				recvd[b]++;
				REQUIRE(md(b - r, P1) < srs_nb(P1, op->round), "step %u: round %u receives block %d",
					st, op->round, b);
			}
			round_scatter_blocks[op->round] += (int)op->nb;
		}
		if (op->code == SPARDL_OP_REDUCE && op->phase == SPARDL_PH_SAG) {
			nreduce_sag++;
			REQUIRE(op->m == kb, "SAG reduce keeps %u", op->m);
			if (sag == SPARDL_SAG_RECURSIVE)
				/* SPEC: each of the 2^(s+1) holders adds 1/2^(s+1) of a drop. */
				REQUIRE(op->nrl == 2 && op->share_log2 == (uint32_t)op->round + 1,
					"R-SAG round %u reduce: %u lists, share 2^-%u", op->round, op->nrl,
					op->share_log2);
			else
				REQUIRE(op->nrl == (uint32_t)d && op->share_log2 == 0,
					"B-SAG reduce of %u lists, share 2^-%u", op->nrl, op->share_log2);
		}
		if (op->code == SPARDL_OP_RESULT) {
			nresult++;
			REQUIRE(op->nrl == (uint32_t)P1, "result merges %u lists", op->nrl);
		}
	}
	REQUIRE(owner == 1, "%d owner selections", owner);
	REQUIRE(nresult == 1, "%d result ops", nresult);
	REQUIRE(nreduce_sag == (d == 1 ? 0 : sag == SPARDL_SAG_RECURSIVE ? ceil_log2(d) : 1),
		"%d SAG reduces", nreduce_sag);

	/* SRS: every block but r sent exactly once. */
	for (j = 0; j < P1; j++) {
		REQUIRE(sent[j] == (j == r ? 0 : 1), "block %d sent %d times (own block %d)", j, sent[j], r);
	}
	for (i = 0; i < R; i++) {
		REQUIRE(round_sel_blocks[i] == srs_nb(P1, i), "round %d sends %d blocks, expected %d", i,
			round_sel_blocks[i], srs_nb(P1, i));
		REQUIRE(round_scatter_blocks[i] == srs_nb(P1, i), "round %d receives %d blocks, expected %d",
			i, round_scatter_blocks[i], srs_nb(P1, i));
		REQUIRE(round_sel_ops[i] == (srs == SPARDL_SRS_BATCHED ? 1 : srs_nb(P1, i)),
			"round %d: %d messages", i, round_sel_ops[i]);
	}
	/* Every round receives a batch starting at the own block r. */
	REQUIRE(recvd[r] == R, "own block received in %d of %d rounds", recvd[r], R);

	for (x = 0; x < s->nwrites; x++) {
		const struct spardl_write *wr = &s->writes[x];

		switch (wr->phase) {
		case SPARDL_PH_SRS:
			srs_writes++;
			REQUIRE(wr->round < 8, "SRS round %u", wr->round);
			round_writes[wr->round]++;
			break;
		case SPARDL_PH_SAG: {
			int gap = 1 << wr->round;
			uint64_t max = s->sslots[wr->sslot].max;

			sag_writes++;
			REQUIRE(d > 1, "SAG write with one team");
			if (sag == SPARDL_SAG_RECURSIVE) {
				REQUIRE(wr->peer == (t ^ gap) * P1 + r && max == blk,
					"R-SAG round %u write to rank %d, %llu bytes", wr->round, wr->peer,
					(unsigned long long)max);
			} else {
				int c = gap < d - gap ? gap : d - gap;

				REQUIRE(wr->peer == md(t - gap, d) * P1 + r && max == (uint64_t)c * blk,
					"B-SAG round %u write to rank %d, %llu bytes", wr->round, wr->peer,
					(unsigned long long)max);
			}
			break;
		}
		case SPARDL_PH_AG: {
			int gap = 1 << wr->round, c = gap < P1 - gap ? gap : P1 - gap;

			ag_writes++;
			REQUIRE(wr->peer == t * P1 + md(r - gap, P1) &&
					s->sslots[wr->sslot].max == (uint64_t)c * blk,
				"AG round %u write to rank %d", wr->round, wr->peer);
			break;
		}
		default:
			REQUIRE(0, "write in phase %u", wr->phase);
		}
	}
	REQUIRE(srs_writes == (srs == SPARDL_SRS_BATCHED ? R : P1 - 1), "%d SRS writes", srs_writes);
	for (i = 0; i < R; i++)
		REQUIRE(round_writes[i] == (srs == SPARDL_SRS_BATCHED ? 1 : srs_nb(P1, i)),
			"SRS round %d: %d writes", i, round_writes[i]);
	REQUIRE(sag_writes == (d == 1 ? 0 : ceil_log2(d)), "%d SAG writes (%s, d %d)", sag_writes,
		sag == SPARDL_SAG_RECURSIVE ? "R-SAG" : "B-SAG", d);
	REQUIRE(ag_writes == ceil_log2(P1), "%d in-team all-gather writes", ag_writes);

	/* Receive slots of SAG and AG: sender and size. */
	for (x = 0; x < s->nrslots; x++) {
		const struct spardl_rslot *rs = &s->rslots[x];
		int gap = 1 << rs->round;

		if (rs->phase == SPARDL_PH_SAG && sag == SPARDL_SAG_RECURSIVE) {
			REQUIRE(rs->peer == (t ^ gap) * P1 + r && rs->max == blk, "R-SAG receive slot %u", x);
		} else if (rs->phase == SPARDL_PH_SAG) {
			int c = gap < d - gap ? gap : d - gap;

			REQUIRE(rs->peer == md(t + gap, d) * P1 + r && rs->max == (uint64_t)c * blk,
				"B-SAG receive slot %u from rank %d, %llu bytes", x, rs->peer,
				(unsigned long long)rs->max);
		} else if (rs->phase == SPARDL_PH_AG) {
			int c = gap < P1 - gap ? gap : P1 - gap;

			REQUIRE(rs->peer == t * P1 + md(r + gap, P1) && rs->max == (uint64_t)c * blk,
				"AG receive slot %u from rank %d", x, rs->peer);
		} else {
			REQUIRE(rs->phase == SPARDL_PH_SRS, "receive slot %u in phase %u", x, rs->phase);
		}
	}

	/* Peers: in-team r +- 2^i; across teams t +- 2^s (B-SAG) or t ^ 2^s (R-SAG). */
	check_peers_consistent(s, P);
	for (i = 0; (1 << i) < P1; i++) {
		want[t * P1 + md(r + (1 << i), P1)] = 1;
		want[t * P1 + md(r - (1 << i), P1)] = 1;
	}
	for (i = 0; (1 << i) < d; i++) {
		if (sag == SPARDL_SAG_RECURSIVE) {
			want[(t ^ (1 << i)) * P1 + r] = 1;
		} else {
			want[md(t + (1 << i), d) * P1 + r] = 1;
			want[md(t - (1 << i), d) * P1 + r] = 1;
		}
	}
	check_peer_set(s, want, P);
	if (d == 1)
		REQUIRE(s->npeers <= 2 * ceil_log2(P), "%d peers for P=%d", s->npeers, P);

	check_layout(s);
}

/* Render: "step" lines, one per step, naming every peer. */
static void check_render(const struct spardl_sched *s)
{
	char *text = NULL, *p;
	int ret = spardl_sched_render(s, &text), lines = 0, i;

	REQUIRE(ret == 0 && text, "render returned %d", ret);
	for (p = text; (p = strstr(p, "  step ")); p++)
		lines++;
	REQUIRE((uint32_t)lines == s->nsteps, "%d step lines for %u steps", lines, s->nsteps);
	for (i = 0; i < s->npeers; i++) {
		char pat[32];
		int found = 0;
		size_t pl;

		pl = (size_t)snprintf(pat, sizeof(pat), "rank %d", s->peers[i]);
		for (p = text; (p = strstr(p, pat)); p++) {
			if (p[pl] < '0' || p[pl] > '9') {
				found = 1;
				break;
			}
		}
		REQUIRE(found, "render does not name peer %d:\n%s", s->peers[i], text);
	}
	free(text);
}

/* ---- tests ---- */

/* {n, k}: density 1%, k = 1, k = n, and k > n (kb capped at the block size). */
static const uint64_t sizes[][2] = { { 1000, 10 }, { 7, 1 }, { 1000, 1000 }, { 7, 7 }, { 100003, 1001 },
				     { 10, 50 } };
#define NSIZES (sizeof(sizes) / sizeof(sizes[0]))

/* _i = P - 1: every divisor d, SAG and SRS variant, and size. */
START_TEST(test_spardl)
{
	int P = _i + 1, d, sag, srs, w;
	size_t z;
	struct spardl_sched *s[MAXP];
	int configs = 0;

	for (d = 1; d <= P; d++) {
		if (P % d)
			continue;
		for (sag = SPARDL_SAG_BRUCK; sag <= SPARDL_SAG_RECURSIVE; sag++) {
			if (sag == SPARDL_SAG_RECURSIVE && !is_pow2(d))
				continue;
			for (srs = SPARDL_SRS_BATCHED; srs <= SPARDL_SRS_SEQUENTIAL; srs++) {
				for (z = 0; z < NSIZES; z++) {
					struct spardl_sched_params p =
						mkparams(P, 0, sizes[z][0], sizes[z][1], SPARDL_ALGO_SPARDL, d, sag, srs);

					snprintf(ctx, sizeof(ctx), "spardl P=%d d=%d %s %s n=%llu k=%llu", P, d,
						 sag == SPARDL_SAG_BRUCK ? "B-SAG" : "R-SAG",
						 srs == SPARDL_SRS_BATCHED ? "batched" : "sequential",
						 (unsigned long long)sizes[z][0], (unsigned long long)sizes[z][1]);
					compile_all(&p, s);
					link_and_match(s, P);
					for (w = 0; w < P; w++) {
						char base[200];

						memcpy(base, ctx, sizeof(base));
						snprintf(ctx, sizeof(ctx), "%.150s rank %d", base, w);
						check_spardl_rank(s[w], P, d, sag, srs, sizes[z][0], sizes[z][1]);
						memcpy(ctx, base, sizeof(base));
					}
					if (z == 0)
						for (w = 0; w < P; w++)
							check_render(s[w]);
					free_all(s, P);
					configs++;
				}
			}
		}
	}
	ck_assert_int_ge(configs, 2 * (int)NSIZES);
}
END_TEST

/* The worked examples of SPEC section 4, written out. */
START_TEST(test_srs_examples)
{
	static const struct {
		int P1, nb[3];
	} ex[] = { { 8, { 4, 2, 1 } }, { 6, { 2, 2, 1 } }, { 5, { 1, 2, 1 } } };
	static const int gaps[3] = { 4, 2, 1 };
	size_t e;
	int d, srs;

	for (e = 0; e < 3; e++) {
		for (d = 1; d <= 2; d++) {
			for (srs = SPARDL_SRS_BATCHED; srs <= SPARDL_SRS_SEQUENTIAL; srs++) {
				int P = ex[e].P1 * d, w;

				for (w = 0; w < P; w++) {
					struct spardl_sched_params p = mkparams(P, w, 1000, 10, SPARDL_ALGO_SPARDL, d,
										SPARDL_SAG_BRUCK, srs);
					struct spardl_sched *s = NULL;
					int blocks[3] = { 0 }, writes[3] = { 0 };
					uint32_t st, x;

					snprintf(ctx, sizeof(ctx), "example P'=%d d=%d srs=%d rank %d", ex[e].P1, d, srs,
						 w);
					REQUIRE(spardl_sched_compile(&p, &s) == 0, "compile");
					for (st = 0; st < s->nsteps; st++) {
						const struct spardl_op *op = &s->steps[st].op;

						if (op->code == SPARDL_OP_SELECT && op->phase == SPARDL_PH_SRS &&
						    !op->dst_is_reg) {
							REQUIRE(op->round < 3, "round %u", op->round);
							blocks[op->round] += (int)op->nb;
						}
					}
					for (x = 0; x < s->nwrites; x++) {
						const struct spardl_write *wr = &s->writes[x];
						int r = w % ex[e].P1, t = w / ex[e].P1;

						if (wr->phase != SPARDL_PH_SRS)
							continue;
						writes[wr->round]++;
						REQUIRE(wr->peer == t * ex[e].P1 + (r + gaps[wr->round]) % ex[e].P1,
							"round %u write to %d", wr->round, wr->peer);
					}
					for (x = 0; x < 3; x++) {
						REQUIRE(blocks[x] == ex[e].nb[x], "round %u: %d blocks, expected %d", x,
							blocks[x], ex[e].nb[x]);
						REQUIRE(writes[x] == (srs == SPARDL_SRS_BATCHED ? 1 : ex[e].nb[x]),
							"round %u: %d writes", x, writes[x]);
					}
					spardl_sched_free(s);
				}
			}
		}
	}
}
END_TEST

/* Dense, TopkA and gTopk: link with every write matched once; their peers. */
START_TEST(test_baselines)
{
	int P = _i + 1, algo, w, i;
	size_t z;
	struct spardl_sched *s[MAXP];

	for (algo = SPARDL_ALGO_DENSE; algo <= SPARDL_ALGO_GTOPK; algo++) {
		if (algo == SPARDL_ALGO_GTOPK && !is_pow2(P))
			continue;
		for (z = 0; z < NSIZES; z++) {
			struct spardl_sched_params p =
				mkparams(P, 0, sizes[z][0], sizes[z][1], algo, 1, SPARDL_SAG_BRUCK, SPARDL_SRS_BATCHED);

			snprintf(ctx, sizeof(ctx), "%s P=%d n=%llu k=%llu",
				 algo == SPARDL_ALGO_DENSE ? "dense" : algo == SPARDL_ALGO_TOPKA ? "topka" : "gtopk", P,
				 (unsigned long long)sizes[z][0], (unsigned long long)sizes[z][1]);
			compile_all(&p, s);
			link_and_match(s, P);
			for (w = 0; w < P; w++) {
				int want[MAXP] = { 0 }, nw = 0;

				check_peers_consistent(s[w], P);
				check_layout(s[w]);
				switch (algo) {
				case SPARDL_ALGO_DENSE:
					if (P > 1) {
						want[md(w + 1, P)] = 1;
						want[md(w - 1, P)] = 1;
					}
					nw = 2 * (P - 1);
					break;
				case SPARDL_ALGO_TOPKA:
					for (i = 0; (1 << i) < P; i++) {
						want[md(w + (1 << i), P)] = 1;
						want[md(w - (1 << i), P)] = 1;
					}
					nw = ceil_log2(P);
					break;
				default:
					for (i = 0; (1 << i) < P; i++)
						want[w ^ (1 << i)] = 1;
					nw = ceil_log2(P);
				}
				check_peer_set(s[w], want, P);
				REQUIRE((int)s[w]->nwrites == nw, "rank %d: %u writes, expected %d", w, s[w]->nwrites,
					nw);
				if (z == 0)
					check_render(s[w]);
			}
			free_all(s, P);
		}
	}
}
END_TEST

/* Dense ring: the chunks reduced and gathered cover the vector. */
START_TEST(test_dense_chunks)
{
	int P = _i + 1, w;
	uint64_t n = 1003;

	for (w = 0; w < P; w++) {
		struct spardl_sched_params p =
			mkparams(P, w, n, 1, SPARDL_ALGO_DENSE, 1, SPARDL_SAG_BRUCK, SPARDL_SRS_BATCHED);
		struct spardl_sched *s = NULL;
		unsigned char *out = calloc(n, 1);
		uint32_t st;
		uint64_t j;

		snprintf(ctx, sizeof(ctx), "dense P=%d rank %d", P, w);
		ck_assert_ptr_nonnull(out);
		REQUIRE(spardl_sched_compile(&p, &s) == 0, "compile");
		for (st = 0; st < s->nsteps; st++) {
			const struct spardl_op *op = &s->steps[st].op;

			if (op->code != SPARDL_OP_DENSE_OUT)
				continue;
			REQUIRE(op->off + op->len <= n, "output chunk past n");
			for (j = op->off; j < op->off + op->len; j++)
				out[j]++;
		}
		for (j = 0; j < n; j++)
			REQUIRE(out[j] == 1, "element %llu output %d times", (unsigned long long)j, out[j]);
		free(out);
		spardl_sched_free(s);
	}
}
END_TEST

START_TEST(test_invalid)
{
	static const struct {
		int size, rank, teams;
		uint64_t n, k;
		const char *what;
	} bad[] = {
		{ 0, 0, 1, 100, 1, "size 0" },
		{ -1, 0, 1, 100, 1, "size -1" },
		{ 4, 4, 1, 100, 1, "rank = size" },
		{ 4, 9, 1, 100, 1, "rank > size" },
		{ 4, -1, 1, 100, 1, "rank -1" },
		{ 4, 0, 1, 0, 1, "n 0" },
		{ 4, 0, 1, 100, 0, "k 0" },
		{ 4, 0, 3, 100, 1, "teams 3 of 4" },
		{ 6, 0, 4, 100, 1, "teams 4 of 6" },
		{ 4, 0, 0, 100, 1, "teams 0" },
		{ 4, 0, 8, 100, 1, "teams > size" },
	};
	size_t i;
	int algo;

	for (algo = SPARDL_ALGO_SPARDL; algo <= SPARDL_ALGO_GTOPK; algo++) {
		for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			struct spardl_sched_params p = mkparams(bad[i].size, bad[i].rank, bad[i].n, bad[i].k, algo,
								bad[i].teams, SPARDL_SAG_BRUCK, SPARDL_SRS_BATCHED);
			struct spardl_sched *s = NULL;
			int ret = spardl_sched_compile(&p, &s);

			snprintf(ctx, sizeof(ctx), "algo %d, %s", algo, bad[i].what);
			REQUIRE(ret < 0, "compile returned %d", ret);
			REQUIRE(s == NULL, "output set on failure");
		}
		{
			/* An unknown algorithm. */
			struct spardl_sched_params p = mkparams(4, 0, 100, 1, 17, 1, SPARDL_SAG_BRUCK,
								SPARDL_SRS_BATCHED);
			struct spardl_sched *s = NULL;

			snprintf(ctx, sizeof(ctx), "algo 17");
			REQUIRE(spardl_sched_compile(&p, &s) < 0 && !s, "accepted");
		}
	}
	/* The same parameters, valid, compile. */
	{
		struct spardl_sched_params p = mkparams(4, 3, 100, 1, SPARDL_ALGO_SPARDL, 2, SPARDL_SAG_BRUCK,
							SPARDL_SRS_BATCHED);
		struct spardl_sched *s = NULL;

		ck_assert_int_eq(spardl_sched_compile(&p, &s), 0);
		ck_assert_ptr_nonnull(s);
		spardl_sched_free(s);
	}
	/* A write to a rank whose schedule is missing fails to link. */
	{
		struct spardl_sched *s[2] = { NULL, NULL };
		struct spardl_sched_params p = mkparams(2, 0, 100, 1, SPARDL_ALGO_SPARDL, 1, SPARDL_SAG_BRUCK,
							SPARDL_SRS_BATCHED);

		snprintf(ctx, sizeof(ctx), "link with a missing peer");
		compile_all(&p, s);
		ck_assert_int_lt(spardl_sched_link(s[0], (struct spardl_sched *const[]){ s[0], NULL }), 0);
		/* ... or against a schedule compiled for other parameters. */
		{
			struct spardl_sched *o = NULL;
			struct spardl_sched_params q = p;

			q.rank = 1;
			q.n = 5000;
			q.k = 500; /* kb 250: other slot sizes */
			ck_assert_int_eq(spardl_sched_compile(&q, &o), 0);
			ck_assert_int_lt(spardl_sched_link(s[0], (struct spardl_sched *const[]){ s[0], o }), 0);
			spardl_sched_free(o);
		}
		ck_assert_int_eq(spardl_sched_link(s[0], s), 0);
		free_all(s, 2);
	}
}
END_TEST

/* Messages longer than the largest write travel as pieces: every slot's
 * pieces tile it, linked writes name the same pieces, and a notification is
 * accepted only for a piece of its sender's slot with a length that fits. */
/* More receive pieces than an immediate can name: refused at compile
 * time with the fix, before any memory for them is taken. Dense P = 2,
 * n = 2^29, 64-byte pieces: each rank receives 2 x 2^30 bytes, 2^25
 * pieces; 2^23 is the limit. */
START_TEST(test_pieces_limit)
{
	struct spardl_sched_params p = mkparams(2, 0, (uint64_t)1 << 29, 1, SPARDL_ALGO_DENSE, 1, 0, 0);
	struct spardl_sched *s = NULL;
	int ret;

	p.max_write = 64;
	ret = spardl_sched_compile(&p, &s);
	REQUIRE(ret == -E2BIG && !s, "compile returned %d", ret);
	REQUIRE(strstr(spardl_last_error(), "receive pieces") && strstr(spardl_last_error(), "SPARDL_MAX_WRITE"),
		"message: %s", spardl_last_error());
	/* With 2^30-byte pieces the same buffer compiles. */
	p.max_write = (uint64_t)1 << 30;
	ret = spardl_sched_compile(&p, &s);
	REQUIRE(ret == 0 && s && s->npieces == 2, "compile with large pieces returned %d", ret);
	spardl_sched_free(s);
}
END_TEST

START_TEST(test_pieces)
{
	static const int algos[] = { SPARDL_ALGO_SPARDL, SPARDL_ALGO_DENSE, SPARDL_ALGO_TOPKA };
	const int P = 4;
	struct spardl_sched *s[4];
	struct spardl_sched_params p = mkparams(P, 0, 5000, 500, algos[_i], 1, 0, 0);
	uint32_t i, piece, slot, want = 0;
	int w;

	p.max_write = 64;
	compile_all(&p, s);
	link_and_match(s, P);
	for (w = 0; w < P; w++) {
		const struct spardl_sched *t = s[w];

		want = 0;
		for (i = 0; i < t->nrslots; i++) {
			const struct spardl_rslot *rs = &t->rslots[i];
			uint64_t sum = 0;
			uint32_t j;

			REQUIRE(rs->piece0 == want, "rank %d slot %u starts at piece %u, not %u", w, i, rs->piece0, want);
			REQUIRE(rs->npieces == spardl_sched_pieces(rs->max, 64) && rs->npieces >= 1,
				"rank %d slot %u of %llu bytes has %u pieces", w, i, (unsigned long long)rs->max,
				rs->npieces);
			for (j = 0; j < rs->npieces; j++) {
				uint64_t pm = spardl_piece_max(rs->max, 64, j);

				REQUIRE(pm <= 64 && (j + 1 == rs->npieces || pm == 64), "piece %u of %llu bytes", j,
					(unsigned long long)pm);
				sum += pm;
				REQUIRE(t->piece_slot[rs->piece0 + j] == i, "piece %u maps to slot %u", rs->piece0 + j,
					t->piece_slot[rs->piece0 + j]);
			}
			REQUIRE(sum == rs->max || (rs->max == 0 && sum == 0), "pieces of slot %u cover %llu of %llu bytes",
				i, (unsigned long long)sum, (unsigned long long)rs->max);
			want += rs->npieces;
			/* The last piece, full and one byte over; another peer; another phase. */
			piece = rs->piece0 + rs->npieces - 1;
			REQUIRE(spardl_sched_check_notify(t, rs->peer, spardl_imm(0, rs->phase, rs->round, piece),
							  spardl_piece_max(rs->max, 64, rs->npieces - 1), &piece,
							  &slot) == 0 && slot == i,
				"rank %d: a full last piece of slot %u refused", w, i);
			REQUIRE(spardl_sched_check_notify(t, rs->peer, spardl_imm(1, rs->phase, rs->round, piece),
							  spardl_piece_max(rs->max, 64, rs->npieces - 1) + 1, &piece,
							  &slot) == -SPARDL_ERR_PROTOCOL,
				"rank %d: an overlong piece of slot %u accepted", w, i);
			REQUIRE(spardl_sched_check_notify(t, (rs->peer + 1) % P, spardl_imm(0, rs->phase, rs->round, piece), 8,
							  &piece, &slot) == -SPARDL_ERR_PROTOCOL,
				"rank %d: slot %u accepted from another peer", w, i);
			REQUIRE(spardl_sched_check_notify(t, rs->peer, spardl_imm(0, rs->phase + 1, rs->round, piece), 8,
							  &piece, &slot) == -SPARDL_ERR_PROTOCOL,
				"rank %d: slot %u accepted in another phase", w, i);
		}
		REQUIRE(t->npieces == want, "rank %d: %u pieces, slots hold %u", w, t->npieces, want);
		REQUIRE(spardl_sched_check_notify(t, 1, spardl_imm(0, 0, 0, t->npieces), 0, &piece, &slot) ==
				-SPARDL_ERR_PROTOCOL,
			"rank %d: a piece past the last accepted", w);
		/* Writes name the receiver's pieces. */
		for (i = 0; i < t->nwrites; i++) {
			const struct spardl_write *wr = &t->writes[i];
			const struct spardl_rslot *rs = &s[wr->peer]->rslots[wr->rslot];

			REQUIRE(wr->rpiece0 == rs->piece0 && wr->npieces == rs->npieces,
				"rank %d write %u names pieces %u+%u, the slot has %u+%u", w, i, wr->rpiece0,
				wr->npieces, rs->piece0, rs->npieces);
		}
	}
	free_all(s, P);
}
END_TEST

static Suite *schedule_suite(void)
{
	Suite *s = suite_create("schedule");
	TCase *tc = tcase_create("schedule");

	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_spardl, 0, MAXP);
	tcase_add_test(tc, test_srs_examples);
	tcase_add_loop_test(tc, test_baselines, 0, MAXP);
	tcase_add_loop_test(tc, test_dense_chunks, 0, MAXP);
	tcase_add_test(tc, test_invalid);
	tcase_add_test(tc, test_pieces_limit);
	tcase_add_loop_test(tc, test_pieces, 0, 3);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return run_unit_suite(schedule_suite());
}
