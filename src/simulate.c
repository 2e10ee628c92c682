// SPDX-License-Identifier: MIT
/*
 * The simulator: a plan's compiled schedules, every rank's, run on a
 * virtual clock under an alpha-beta-gamma model (docs/SIMULATION.md).
 *
 * Each rank walks its steps as the executor does: wait for the step's
 * receive slots, compute, post the step's writes. A write of b bytes to a
 * rank on another node starts when the sending node's NIC is free, holds it
 * for alpha + b / beta (so back-to-back messages each pay alpha, as in the
 * Hockney model) and arrives alpha + b / beta after it started, and no
 * earlier than the receiving node's NIC can take b more bytes in; a write
 * to a rank of the same node is free.
 * Messages are taken at their schedule bounds (SparDL's messages are that
 * size; a union may be smaller). Compute costs gamma per gradient element
 * of a streaming pass and gamma_pair per index-value pair handled. Ranks
 * advance in virtual-time order (a heap), so NICs are shared in the order
 * the writes are made.
 *
 * When all ranks' steps would not fit (dense rings at thousands of ranks)
 * only rank 0 is simulated and every peer is taken to do what rank 0 does,
 * at the same time (the schedules are symmetric): a receive slot arrives
 * as rank 0's own write of the same phase, round and sequence would.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "log.h"

/* Above this many steps over all ranks, rank 0 alone is simulated. */
#define EXACT_MAX_STEPS 4000000ull
#define SIM_PHASES (SPARDL_PH_COUNT + 1) /* the phases, then local compute */

SPARDL_API void spardl_sim_model_init(struct spardl_sim_model *m)
{
	if (!m)
		return;
	memset(m, 0, sizeof(*m));
	m->field_mask = SPARDL_SIM_ALPHA | SPARDL_SIM_BETA | SPARDL_SIM_GAMMA | SPARDL_SIM_GAMMA_PAIR |
			SPARDL_SIM_RANKS_PER_NODE;
	m->alpha = 2e-6;
	m->beta = 12.5e9;
	m->gamma = 0;
	m->gamma_pair = 0;
	m->ranks_per_node = 1;
}

static int resolve_model(const struct spardl_sim_model *in, int size, struct spardl_sim_model *out)
{
	uint64_t m = in ? in->field_mask : 0;

	spardl_sim_model_init(out);
	if (m & SPARDL_SIM_ALPHA)
		out->alpha = in->alpha;
	if (m & SPARDL_SIM_BETA)
		out->beta = in->beta;
	if (m & SPARDL_SIM_GAMMA)
		out->gamma = in->gamma;
	if (m & SPARDL_SIM_GAMMA_PAIR)
		out->gamma_pair = in->gamma_pair;
	if (m & SPARDL_SIM_RANKS_PER_NODE)
		out->ranks_per_node = in->ranks_per_node;
	if (!(out->alpha >= 0) || !isfinite(out->alpha))
		return spardl_error(-EINVAL, "spardl_simulate: alpha %g must be a latency of 0 or more seconds", out->alpha);
	if (!(out->beta > 0) || !isfinite(out->beta))
		return spardl_error(-EINVAL, "spardl_simulate: beta %g must be a bandwidth above 0 bytes per second",
				    out->beta);
	if (!(out->gamma >= 0) || !(out->gamma_pair >= 0) || !isfinite(out->gamma) || !isfinite(out->gamma_pair))
		return spardl_error(-EINVAL, "spardl_simulate: gamma %g and gamma_pair %g must be 0 or more seconds",
				    out->gamma, out->gamma_pair);
	if (out->ranks_per_node < 1 || size % out->ranks_per_node)
		return spardl_error(-EINVAL, "spardl_simulate: ranks_per_node %d must divide the size %d",
				    out->ranks_per_node, size);
	return 0;
}

/* Index-value pairs in a message of the given bound (one 8-byte header per block). */
static double pairs_of(uint64_t bytes, uint32_t blocks)
{
	double p = ((double)bytes - 8.0 * blocks) / 8.0;

	return p > 0 ? p : 0;
}

static double op_cost(const struct spardl_sched *s, const struct spardl_op *op, const struct spardl_sim_model *m)
{
	double pairs = 0;
	uint32_t i;

	switch (op->code) {
	case SPARDL_OP_ACC_INIT:
		return (double)s->p.n * m->gamma;
	case SPARDL_OP_SELECT:
		return (double)op->m * (op->nb ? op->nb : 1) * m->gamma_pair;
	case SPARDL_OP_SCATTER:
	case SPARDL_OP_RECV_LISTS:
		return pairs_of(s->rslots[op->slot].max, op->nb ? op->nb : op->nrl) * m->gamma_pair;
	case SPARDL_OP_SEND_LISTS:
		return pairs_of(s->sslots[op->slot].max, op->nrl) * m->gamma_pair;
	case SPARDL_OP_REDUCE:
	case SPARDL_OP_RESULT:
		/* A heap merge of nrl lists of at most buf_pairs each. */
		for (i = 0; i < op->nrl; i++)
			pairs += (double)s->kb;
		if (op->code == SPARDL_OP_RESULT)
			pairs = (double)s->result_pairs;
		return pairs * log2((double)op->nrl + 1) * m->gamma_pair;
	case SPARDL_OP_RESIDUAL:
		return s->res_mode == SPARDL_RES_GRC ? (double)s->touched * m->gamma_pair : 0;
	case SPARDL_OP_OUTPUT:
		/* With a residual the accumulate pass wrote the output's zeros
		 * (exec.c): only the result's entries are left. */
		return (s->res_mode == SPARDL_RES_OFF ? (double)s->p.n * m->gamma : 0) +
		       (double)s->result_pairs * m->gamma_pair;
	case SPARDL_OP_DENSE_ADD:
	case SPARDL_OP_DENSE_OUT:
		return (double)op->len * m->gamma;
	default:
		return 0;
	}
}

static uint64_t write_bytes(const struct spardl_sched *s, const struct spardl_write *w)
{
	return s->sslots[w->sslot].max;
}

struct sim_rank {
	uint32_t step;
	double t;
	double phase[SIM_PHASES];
	double bytes, msgs;
	double *arrive; /* per receive slot: arrival time, or -1 */
};

struct sim {
	const struct spardl_sim_model *m;
	int size, rpn;
	struct spardl_sched **s;
	struct sim_rank *r;
	double *tx, *rx; /* per node: when its NIC is next free, each direction */
	/* A min-heap of (time, rank): ranks that can run. */
	double *ht;
	int *hr;
	int hn;
	int *blocked; /* per rank: 1 while it waits for a slot nobody has written yet */
};

static void heap_push(struct sim *S, double t, int rank)
{
	int i = S->hn++;

	while (i > 0) {
		int up = (i - 1) / 2;

		if (S->ht[up] < t || (S->ht[up] == t && S->hr[up] < rank))
			break;
		S->ht[i] = S->ht[up];
		S->hr[i] = S->hr[up];
		i = up;
	}
	S->ht[i] = t;
	S->hr[i] = rank;
}

static int heap_pop(struct sim *S)
{
	int top = S->hr[0], i = 0;
	double t = S->ht[--S->hn];
	int rank = S->hr[S->hn];

	for (;;) {
		int c = 2 * i + 1;

		if (c >= S->hn)
			break;
		if (c + 1 < S->hn && (S->ht[c + 1] < S->ht[c] || (S->ht[c + 1] == S->ht[c] && S->hr[c + 1] < S->hr[c])))
			c++;
		if (t < S->ht[c] || (t == S->ht[c] && rank < S->hr[c]))
			break;
		S->ht[i] = S->ht[c];
		S->hr[i] = S->hr[c];
		i = c;
	}
	S->ht[i] = t;
	S->hr[i] = rank;
	return top;
}

/* The time a write of bytes posted at t by rank `from` arrives at `to`. */
static double transfer(struct sim *S, int from, int to, double t, uint64_t bytes)
{
	int a = from / S->rpn, b = to / S->rpn;
	double d = (double)bytes / S->m->beta, start, in;

	if (a == b)
		return t;
	/* alpha is per message, on the sending NIC too (Hockney): back-to-back
	 * messages each pay it. */
	start = t > S->tx[a] ? t : S->tx[a];
	S->tx[a] = start + S->m->alpha + d;
	in = start + S->m->alpha;
	if (in < S->rx[b])
		in = S->rx[b];
	S->rx[b] = in + d;
	return in + d;
}

/* Run rank i's steps until it waits for a write nobody has posted, or one
 * step when other ranks may share its NIC's time. Returns 1 when done. */
static int run_rank(struct sim *S, int i)
{
	struct sim_rank *R = &S->r[i];
	const struct spardl_sched *s = S->s[i];

	while (R->step < s->nsteps) {
		const struct spardl_step *st = &s->steps[R->step];
		double t0 = R->t, t = R->t;
		unsigned ph = (!st->nwait && !st->nwrite) ? SPARDL_PH_COUNT : st->op.phase;
		uint32_t j;

		for (j = 0; j < st->nwait; j++) {
			double a = R->arrive[s->waits[st->wait0 + j]];

			if (a < 0) {
				S->blocked[i] = 1;
				return 0;
			}
			if (a > t)
				t = a;
		}
		t += op_cost(s, &st->op, S->m);
		for (j = 0; j < st->nwrite; j++) {
			const struct spardl_write *w = &s->writes[st->write0 + j];
			uint64_t b = write_bytes(s, w);
			double a = transfer(S, i, w->peer, t, b);
			struct sim_rank *P = &S->r[w->peer];

			P->arrive[w->rslot] = a;
			R->bytes += (double)b;
			R->msgs += 1;
			if (S->blocked[w->peer]) {
				S->blocked[w->peer] = 0;
				heap_push(S, a > P->t ? a : P->t, w->peer);
			}
		}
		R->phase[ph] += t - t0;
		R->t = t;
		R->step++;
		if (st->nwrite && S->hn) {
			/* Let ranks behind in time use the NICs first. */
			heap_push(S, R->t, i);
			return 0;
		}
	}
	return 1;
}

static int sim_exact(const struct spardl_plan_params *pp, int size, const struct spardl_sim_model *m,
		     struct spardl_sim_result *res)
{
	struct sim S;
	int i, ret = 0, nodes = size / m->ranks_per_node, slow = 0;
	unsigned ph;

	memset(&S, 0, sizeof(S));
	S.m = m;
	S.size = size;
	S.rpn = m->ranks_per_node;
	S.s = calloc((size_t)size, sizeof(*S.s));
	S.r = calloc((size_t)size, sizeof(*S.r));
	S.tx = calloc((size_t)nodes, sizeof(double));
	S.rx = calloc((size_t)nodes, sizeof(double));
	S.ht = calloc((size_t)size * 2 + 2, sizeof(double));
	S.hr = calloc((size_t)size * 2 + 2, sizeof(int));
	S.blocked = calloc((size_t)size, sizeof(int));
	if (!S.s || !S.r || !S.tx || !S.rx || !S.ht || !S.hr || !S.blocked) {
		ret = spardl_error(-ENOMEM, "spardl_simulate: out of memory for %d ranks", size);
		goto out;
	}
	for (i = 0; i < size && !ret; i++) {
		struct spardl_sched_params sp;

		ret = spardl_plan_sched_params(pp, size, i, 0, &sp);
		if (!ret)
			ret = spardl_sched_compile(&sp, &S.s[i]);
	}
	for (i = 0; i < size && !ret; i++)
		ret = spardl_sched_link(S.s[i], S.s);
	for (i = 0; i < size && !ret; i++) {
		uint32_t j;

		S.r[i].arrive = malloc((S.s[i]->nrslots ? S.s[i]->nrslots : 1) * sizeof(double));
		if (!S.r[i].arrive) {
			ret = spardl_error(-ENOMEM, "spardl_simulate: out of memory");
			break;
		}
		for (j = 0; j < S.s[i]->nrslots; j++)
			S.r[i].arrive[j] = -1;
		heap_push(&S, 0, i);
	}
	while (!ret && S.hn) {
		i = heap_pop(&S);
		run_rank(&S, i);
	}
	for (i = 0; i < size && !ret; i++) {
		if (S.r[i].step < S.s[i]->nsteps) {
			ret = spardl_error(-EDEADLK, "spardl_simulate: internal: rank %d stopped at step %u of %u", i,
					   S.r[i].step, S.s[i]->nsteps);
			break;
		}
		if (S.r[i].t > S.r[slow].t)
			slow = i;
		if (S.r[i].bytes > res->bytes_per_rank)
			res->bytes_per_rank = S.r[i].bytes;
		if (S.r[i].msgs > res->messages_per_rank)
			res->messages_per_rank = S.r[i].msgs;
	}
	if (!ret) {
		res->time = S.r[slow].t;
		for (ph = 0; ph < SIM_PHASES; ph++)
			res->phase_time[ph] = S.r[slow].phase[ph];
		res->exact = 1;
	}
out:
	for (i = 0; S.s && i < size; i++)
		spardl_sched_free(S.s[i]);
	for (i = 0; S.r && i < size; i++)
		free(S.r[i].arrive);
	free(S.s);
	free(S.r);
	free(S.tx);
	free(S.rx);
	free(S.ht);
	free(S.hr);
	free(S.blocked);
	return ret;
}

/* Rank 0 alone; each peer does what rank 0 does at the same time. */
static int sim_symmetric(const struct spardl_plan_params *pp, int size, const struct spardl_sim_model *m,
			 struct spardl_sim_result *res)
{
	struct spardl_sched_params sp;
	struct spardl_sched *s = NULL;
	double *posted = NULL, t = 0, tx = 0;
	uint32_t i, j;
	int ret;

	ret = spardl_plan_sched_params(pp, size, 0, 0, &sp);
	if (!ret)
		ret = spardl_sched_compile(&sp, &s);
	if (ret)
		return ret;
	posted = malloc((s->nwrites ? s->nwrites : 1) * sizeof(double));
	if (!posted) {
		spardl_sched_free(s);
		return spardl_error(-ENOMEM, "spardl_simulate: out of memory");
	}
	for (i = 0; i < s->nwrites; i++)
		posted[i] = -1;
	for (i = 0; i < s->nsteps; i++) {
		const struct spardl_step *st = &s->steps[i];
		unsigned ph = (!st->nwait && !st->nwrite) ? SPARDL_PH_COUNT : st->op.phase;
		double t0 = t;

		for (j = 0; j < st->nwait; j++) {
			const struct spardl_rslot *rs = &s->rslots[s->waits[st->wait0 + j]];
			double a = -1;
			uint32_t w;

			/* The peer posts this write when rank 0 posts its own
			 * write of the same phase, round and sequence. */
			for (w = 0; w < s->nwrites; w++) {
				const struct spardl_write *x = &s->writes[w];

				if (x->phase == rs->phase && x->round == rs->round && x->seq == rs->seq && posted[w] >= 0) {
					a = posted[w];
					break;
				}
			}
			if (a < 0)
				a = t;
			if (rs->peer / m->ranks_per_node != 0)
				a += m->alpha + (double)rs->max * m->ranks_per_node / m->beta;
			if (a > t)
				t = a;
		}
		t += op_cost(s, &st->op, m);
		for (j = 0; j < st->nwrite; j++) {
			const struct spardl_write *w = &s->writes[st->write0 + j];
			uint64_t b = write_bytes(s, w);

			/* Ranks of one node send at the same time: they share the NIC. */
			if (w->peer / m->ranks_per_node != 0) {
				double start = t > tx ? t : tx;

				tx = start + m->alpha + (double)b * m->ranks_per_node / m->beta;
				posted[st->write0 + j] = start;
			} else {
				posted[st->write0 + j] = t - m->alpha - (double)b * m->ranks_per_node / m->beta;
			}
			res->bytes_per_rank += (double)b;
			res->messages_per_rank += 1;
		}
		res->phase_time[ph] += t - t0;
	}
	res->time = t;
	res->exact = 0;
	free(posted);
	spardl_sched_free(s);
	return 0;
}

/* Every rank when that fits, else rank 0 with symmetric peers. The
 * choice of teams keeps plan creation quick: beyond AUTO_EXACT_MAX_RANKS
 * ranks it simulates rank 0 only. */
#define AUTO_EXACT_MAX_RANKS 1024

static int sim_run(const struct spardl_plan_params *pp, int size, const struct spardl_sim_model *m,
		   uint64_t max_steps, struct spardl_sim_result *res)
{
	struct spardl_sched_params sp;
	struct spardl_sched *s0 = NULL;
	uint64_t steps;
	int ret;

	ret = spardl_plan_sched_params(pp, size, 0, 0, &sp);
	if (!ret)
		ret = spardl_sched_compile(&sp, &s0);
	if (ret)
		return ret;
	res->teams = sp.teams;
	steps = (uint64_t)s0->nsteps * (uint64_t)size;
	spardl_sched_free(s0);
	return steps <= max_steps ? sim_exact(pp, size, m, res) : sim_symmetric(pp, size, m, res);
}

/* The teams the automatic choice picks: the divisor of size with the least
 * simulated time (the fewest teams on a tie). */
static int choose_teams(const struct spardl_plan_params *pp, int size, const struct spardl_sim_model *m,
			int *teams_out)
{
	double best = INFINITY;
	int d, ret = 0;

	*teams_out = 1;
	for (d = 1; d <= size; d++) {
		struct spardl_plan_params q = *pp;
		struct spardl_sim_result r;

		if (size % d || (q.sag == SPARDL_SAG_RECURSIVE && (d & (d - 1))))
			continue;
		q.teams = d;
		memset(&r, 0, sizeof(r));
		ret = sim_run(&q, size, m, size <= AUTO_EXACT_MAX_RANKS ? EXACT_MAX_STEPS : 0, &r);
		if (ret)
			return ret;
		if (r.time < best * (1 - 1e-9)) {
			best = r.time;
			*teams_out = d;
		}
	}
	return 0;
}

int spardl_sim_auto_teams(const struct spardl_plan_params *params, int size, int *teams_out)
{
	struct spardl_sim_model m;
	struct spardl_plan_params p = *params;

	spardl_sim_model_init(&m);
	p.field_mask |= SPARDL_PLAN_PARAM_TEAMS;
	p.teams = 1;
	return choose_teams(&p, size, &m, teams_out);
}

SPARDL_API int spardl_simulate_sized(const struct spardl_plan_params *params, int size,
				     const struct spardl_sim_model *model, struct spardl_sim_result *result_out,
				     size_t result_size)
{
	struct spardl_sim_model m;
	struct spardl_sim_result res;
	struct spardl_plan_params p;
	int ret;

	if (!params || !result_out)
		return spardl_error(-EINVAL, "spardl_simulate: %s is NULL", !params ? "params" : "result_out");
	if (result_size < SPARDL_SIM_RESULT_SIZE_V1)
		return spardl_error(-EINVAL, "spardl_simulate: result size %zu is smaller than the first version's %zu",
				    result_size, (size_t)SPARDL_SIM_RESULT_SIZE_V1);
	if (size < 1 || size > SPARDL_MAX_RANKS)
		return spardl_error(-EINVAL, "spardl_simulate: size %d: give 1 to %d ranks", size, SPARDL_MAX_RANKS);
	ret = resolve_model(model, size, &m);
	if (ret)
		return ret;
	memset(&res, 0, sizeof(res));
	p = *params;
	if ((p.field_mask & SPARDL_PLAN_PARAM_TEAMS) && p.teams == 0 &&
	    (!(p.field_mask & SPARDL_PLAN_PARAM_ALGO) || p.algo == SPARDL_ALGO_SPARDL)) {
		ret = choose_teams(&p, size, &m, &p.teams);
		if (ret)
			return ret;
	}
	/* The parameters' errors are named as plan creation names them. */
	ret = sim_run(&p, size, &m, EXACT_MAX_STEPS, &res);
	if (ret)
		return ret;
	memcpy(result_out, &res, result_size < sizeof(res) ? result_size : sizeof(res));
	return 0;
}
