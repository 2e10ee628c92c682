// SPDX-License-Identifier: MIT
/*
 * spardl-verbs trace FILE...: read the ranks' SPARDL_TRACE files (trace.h),
 * check them (format, checksums, then every write against the plan's
 * compiled schedule), print a summary per phase and round, and with
 * --chrome OUT.json export Chrome/Perfetto trace JSON with a flow arrow
 * from each write to its notification on the receiver.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schedule.h"
#include "trace.h"
#include "verbs-trace.h"

#define MAX_REPORTS 20

struct rank_trace {
	const char *path;
	struct spardl_trace_hdr h;
	struct spardl_trace_rec *rec;
	size_t nrec;
	/* Its NOTIFY records, sorted by (plan, call, writer, immediate). */
	const struct spardl_trace_rec **notify;
	size_t nnotify;
	/* All records, sorted by (plan, call, time), to find a call's records. */
	const struct spardl_trace_rec **bycall;
};

static int cmp_notify_key(const struct spardl_trace_rec *a, const struct spardl_trace_rec *b)
{
	if (a->plan != b->plan)
		return a->plan < b->plan ? -1 : 1;
	if (a->call != b->call)
		return a->call < b->call ? -1 : 1;
	if (a->peer != b->peer)
		return a->peer < b->peer ? -1 : 1;
	if (a->imm != b->imm)
		return a->imm < b->imm ? -1 : 1;
	return 0;
}

static int cmp_notify(const void *a, const void *b)
{
	return cmp_notify_key(*(const struct spardl_trace_rec *const *)a, *(const struct spardl_trace_rec *const *)b);
}

static int cmp_bycall(const void *pa, const void *pb)
{
	const struct spardl_trace_rec *a = *(const struct spardl_trace_rec *const *)pa,
				      *b = *(const struct spardl_trace_rec *const *)pb;

	if (a->plan != b->plan)
		return a->plan < b->plan ? -1 : 1;
	if (a->call != b->call)
		return a->call < b->call ? -1 : 1;
	/* Time order, as recorded (the records are sorted by time already). */
	return a < b ? -1 : a > b;
}

/* The records of one call of one plan: bycall[*lo .. *hi). */
static void call_range(const struct rank_trace *rt, uint32_t plan, uint64_t call, size_t *lo_out, size_t *hi_out)
{
	size_t lo = 0, hi = rt->nrec;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		const struct spardl_trace_rec *x = rt->bycall[mid];

		if (x->plan < plan || (x->plan == plan && x->call < call))
			lo = mid + 1;
		else
			hi = mid;
	}
	*lo_out = lo;
	while (lo < rt->nrec && rt->bycall[lo]->plan == plan && rt->bycall[lo]->call == call)
		lo++;
	*hi_out = lo;
}

static int index_notify(struct rank_trace *rt)
{
	size_t i, n = 0;

	for (i = 0; i < rt->nrec; i++)
		n += rt->rec[i].kind == SPARDL_TR_NOTIFY;
	rt->notify = malloc((n ? n : 1) * sizeof(*rt->notify));
	rt->bycall = malloc((rt->nrec ? rt->nrec : 1) * sizeof(*rt->bycall));
	if (!rt->notify || !rt->bycall) {
		free(rt->notify);
		free(rt->bycall);
		return -1;
	}
	for (i = 0; i < rt->nrec; i++)
		rt->bycall[i] = &rt->rec[i];
	qsort(rt->bycall, rt->nrec, sizeof(*rt->bycall), cmp_bycall);
	for (i = 0; i < rt->nrec; i++)
		if (rt->rec[i].kind == SPARDL_TR_NOTIFY)
			rt->notify[rt->nnotify++] = &rt->rec[i];
	qsort(rt->notify, rt->nnotify, sizeof(*rt->notify), cmp_notify);
	return 0;
}

/* The notifications on rt of the write x posted by rank `from`: the first
 * one, and how many there are. */
static const struct spardl_trace_rec *find_notify(const struct rank_trace *rt, const struct spardl_trace_rec *x,
						  int from, int *count)
{
	struct spardl_trace_rec key = *x;
	size_t lo = 0, hi = rt->nnotify, i;

	key.peer = from;
	*count = 0;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (cmp_notify_key(rt->notify[mid], &key) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (i = lo; i < rt->nnotify && !cmp_notify_key(rt->notify[i], &key); i++)
		(*count)++;
	return *count ? rt->notify[lo] : NULL;
}

/* One plan as the traces describe it. */
struct plan_info {
	int seen;
	struct spardl_sched_params sp;
	struct spardl_sched **sched; /* per rank, linked */
	uint64_t ncalls;             /* calls seen on any rank */
};

struct trace_set {
	struct rank_trace *rt; /* by rank; path NULL where absent */
	int size, nfiles;
	uint64_t t0;           /* earliest realtime ns */
	struct plan_info *plans;
	uint32_t nplans;
	int errors;
	/* --fit: sums over matched writes (bytes x, post-to-notification time y),
	 * between different hosts [1] and on one host [0]. */
	double fx[2], fy[2], fxx[2], fxy[2];
	uint64_t fn[2];
};

static const char *const algo_names[] = { "spardl", "dense", "topka", "gtopk" };

static void report(struct trace_set *ts, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void report(struct trace_set *ts, const char *fmt, ...)
{
	va_list ap;

	if (ts->errors++ < MAX_REPORTS) {
		va_start(ap, fmt);
		printf("MISMATCH: ");
		vprintf(fmt, ap);
		printf("\n");
		va_end(ap);
	} else if (ts->errors == MAX_REPORTS + 1) {
		printf("MISMATCH: (more mismatches not shown)\n");
	}
}

static int load_file(const char *path, struct rank_trace *out, char *why, size_t wlen)
{
	FILE *f = fopen(path, "rb");
	struct spardl_trace_chunk ch;
	long size, pos;
	size_t cap = 0;

	memset(out, 0, sizeof(*out));
	out->path = path;
	if (!f) {
		snprintf(why, wlen, "cannot open: %s", strerror(errno));
		return -1;
	}
	if (fseek(f, 0, SEEK_END) || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET)) {
		snprintf(why, wlen, "cannot seek: %s", strerror(errno));
		goto fail;
	}
	if (fread(&out->h, sizeof(out->h), 1, f) != 1) {
		snprintf(why, wlen, "truncated: %ld bytes, shorter than the %zu-byte header", size, sizeof(out->h));
		goto fail;
	}
	if (memcmp(out->h.magic, SPARDL_TRACE_MAGIC, 8)) {
		snprintf(why, wlen, "not a spardl trace (no %s magic)", SPARDL_TRACE_MAGIC);
		goto fail;
	}
	if (out->h.version != SPARDL_TRACE_VERSION || out->h.hdr_size != sizeof(out->h) ||
	    out->h.rec_size != sizeof(struct spardl_trace_rec)) {
		snprintf(why, wlen, "format version %u (header %u B, records %u B); this tool reads version %u", out->h.version,
			 out->h.hdr_size, out->h.rec_size, SPARDL_TRACE_VERSION);
		goto fail;
	}
	if (out->h.size < 1 || out->h.size > 65536 || out->h.rank < 0 || out->h.rank >= out->h.size) {
		snprintf(why, wlen, "corrupted header: rank %d of %d", out->h.rank, out->h.size);
		goto fail;
	}
	out->h.host[sizeof(out->h.host) - 1] = 0;
	for (pos = (long)sizeof(out->h); pos < size;) {
		size_t bytes;

		if (size - pos < (long)sizeof(ch)) {
			snprintf(why, wlen, "truncated: %ld stray bytes at offset %ld, less than a chunk header", size - pos,
				 pos);
			goto fail;
		}
		if (fread(&ch, sizeof(ch), 1, f) != 1) {
			snprintf(why, wlen, "read error at offset %ld", pos);
			goto fail;
		}
		if (ch.magic != SPARDL_TRACE_CHUNK_MAGIC) {
			snprintf(why, wlen, "corrupted: no chunk header at offset %ld", pos);
			goto fail;
		}
		pos += (long)sizeof(ch);
		bytes = (size_t)ch.nrec * sizeof(struct spardl_trace_rec);
		if (!ch.nrec || (long)bytes > size - pos) {
			snprintf(why, wlen, "truncated: the chunk at offset %ld holds %u records, the file has room for %ld",
				 pos - (long)sizeof(ch), ch.nrec, (size - pos) / (long)sizeof(struct spardl_trace_rec));
			goto fail;
		}
		if (out->nrec + ch.nrec > cap) {
			size_t ncap = (out->nrec + ch.nrec) * 2;
			void *p = realloc(out->rec, ncap * sizeof(*out->rec));

			if (!p) {
				snprintf(why, wlen, "out of memory for %zu records", ncap);
				goto fail;
			}
			out->rec = p;
			cap = ncap;
		}
		if (fread(out->rec + out->nrec, bytes, 1, f) != 1) {
			snprintf(why, wlen, "read error at offset %ld", pos);
			goto fail;
		}
		if (spardl_trace_hash(out->rec + out->nrec, bytes) != ch.hash) {
			snprintf(why, wlen, "corrupted: the checksum of the chunk at offset %ld does not match its records",
				 pos - (long)sizeof(ch));
			goto fail;
		}
		out->nrec += ch.nrec;
		pos += (long)bytes;
	}
	fclose(f);
	return 0;
fail:
	fclose(f);
	free(out->rec);
	out->rec = NULL;
	return -1;
}

static int cmp_rec(const void *a, const void *b)
{
	const struct spardl_trace_rec *x = a, *y = b;

	if (x->t_ns != y->t_ns)
		return x->t_ns < y->t_ns ? -1 : 1;
	return 0;
}

/* Records of the same plan keep their order: sort by time, stably (by
 * position within a plan's stream, which is time order already). */
static void sort_records(struct rank_trace *rt)
{
	/* qsort is not stable; records with equal times are rare and keep
	 * their meaning regardless of order within one nanosecond. */
	qsort(rt->rec, rt->nrec, sizeof(*rt->rec), cmp_rec);
}

static uint64_t abs_ns(const struct trace_set *ts, int rank, const struct spardl_trace_rec *r)
{
	return ts->rt[rank].h.epoch_real_ns + r->t_ns - ts->t0;
}

/* Field checks of every record, and the plans the traces describe. */
static int check_records(struct trace_set *ts)
{
	int r;
	size_t i;

	for (r = 0; r < ts->size; r++) {
		struct rank_trace *rt = &ts->rt[r];

		for (i = 0; rt->path && i < rt->nrec; i++) {
			const struct spardl_trace_rec *x = &rt->rec[i];

			if (x->kind < SPARDL_TR_PLAN || x->kind >= SPARDL_TR_KIND_COUNT || x->phase >= SPARDL_PH_COUNT ||
			    (x->peer >= ts->size && x->kind != SPARDL_TR_PLAN)) {
				printf("%s: corrupted: record %zu has kind %u, phase %u, peer %d\n", rt->path, i, x->kind,
				       x->phase, x->peer);
				return -1;
			}
			if (x->kind == SPARDL_TR_PLAN) {
				struct spardl_sched_params sp = { 0 };

				sp.size = x->peer;
				sp.rank = (int)x->step;
				sp.n = x->a;
				sp.k = x->b;
				sp.max_write = x->call;
				sp.teams = (int)x->qpn;
				sp.algo = (int)(x->imm & 0xff);
				sp.sag = (int)((x->imm >> 8) & 0xff);
				sp.srs = (int)((x->imm >> 16) & 0xff);
				sp.residual = (int)((x->imm >> 24) & 1);
				sp.average = (int)((x->imm >> 25) & 1);
				if (sp.size != ts->size || sp.rank != r || x->plan > 100000) {
					printf("%s: corrupted: plan record names rank %d of %d, plan %u\n", rt->path, sp.rank,
					       sp.size, x->plan);
					return -1;
				}
				if (x->plan >= ts->nplans) {
					void *p = realloc(ts->plans, (x->plan + 1) * sizeof(*ts->plans));

					if (!p)
						return -1;
					ts->plans = p;
					memset(ts->plans + ts->nplans, 0, (x->plan + 1 - ts->nplans) * sizeof(*ts->plans));
					ts->nplans = x->plan + 1;
				}
				if (ts->plans[x->plan].seen) {
					struct spardl_sched_params a = ts->plans[x->plan].sp;

					a.rank = sp.rank;
					if (memcmp(&a, &sp, sizeof(sp))) {
						report(ts, "plan %u: rank %d traced other parameters than rank %d", x->plan, r,
						       ts->plans[x->plan].sp.rank);
						continue;
					}
				}
				ts->plans[x->plan].seen = 1;
				ts->plans[x->plan].sp = sp;
			}
		}
	}
	for (r = 0; r < ts->size; r++) {
		struct rank_trace *rt = &ts->rt[r];

		for (i = 0; rt->path && i < rt->nrec; i++) {
			const struct spardl_trace_rec *x = &rt->rec[i];

			if (x->plan >= ts->nplans || !ts->plans[x->plan].seen) {
				printf("%s: corrupted or truncated: record %zu belongs to plan %u, which has no plan record\n",
				       rt->path, i, x->plan);
				return -1;
			}
			if (x->kind == SPARDL_TR_CALL_BEGIN && x->call + 1 > ts->plans[x->plan].ncalls)
				ts->plans[x->plan].ncalls = x->call + 1;
		}
	}
	return 0;
}

/* Every rank's schedule of each plan, compiled and linked as the library does. */
static int compile_plans(struct trace_set *ts)
{
	uint32_t p;
	int r;

	for (p = 0; p < ts->nplans; p++) {
		struct plan_info *pi = &ts->plans[p];

		if (!pi->seen)
			continue;
		pi->sched = calloc((size_t)ts->size, sizeof(*pi->sched));
		if (!pi->sched)
			return -1;
		for (r = 0; r < ts->size; r++) {
			struct spardl_sched_params sp = pi->sp;

			sp.rank = r;
			if (spardl_sched_compile(&sp, &pi->sched[r])) {
				printf("plan %u: the traced parameters do not compile for rank %d: %s\n", p, r,
				       spardl_last_error());
				return -1;
			}
		}
		for (r = 0; r < ts->size; r++) {
			if (spardl_sched_link(pi->sched[r], pi->sched)) {
				printf("plan %u: %s\n", p, spardl_last_error());
				return -1;
			}
		}
	}
	return 0;
}

/* A write the schedule expects: one piece of one write. */
struct expect {
	int peer;
	uint32_t imm;
	uint64_t max;
	uint32_t write, piece;
	int seen;
};

static int cmp_expect(const void *a, const void *b)
{
	const struct expect *x = a, *y = b;

	if (x->peer != y->peer)
		return x->peer < y->peer ? -1 : 1;
	if (x->imm != y->imm)
		return x->imm < y->imm ? -1 : 1;
	return 0;
}

static struct expect *find_expect(struct expect *e, size_t n, int peer, uint32_t imm)
{
	struct expect key = { .peer = peer, .imm = imm };

	return bsearch(&key, e, n, sizeof(*e), cmp_expect);
}

/* The writes (as pieces) rank's schedule posts in a call of this parity. */
static struct expect *expected_writes(const struct spardl_sched *s, struct spardl_sched *const *all, unsigned parity,
				      size_t *n_out)
{
	size_t n = 0, k = 0;
	struct expect *e;
	uint32_t i, j;

	for (i = 0; i < s->nwrites; i++)
		n += s->writes[i].npieces;
	e = calloc(n ? n : 1, sizeof(*e));
	if (!e)
		return NULL;
	for (i = 0; i < s->nwrites; i++) {
		const struct spardl_write *w = &s->writes[i];
		const struct spardl_rslot *rs = &all[w->peer]->rslots[w->rslot];

		for (j = 0; j < w->npieces; j++, k++) {
			e[k].peer = w->peer;
			e[k].imm = spardl_imm(parity, w->phase, w->round, w->rpiece0 + j);
			e[k].max = spardl_piece_max(rs->max, s->p.max_write, j);
			e[k].write = i;
			e[k].piece = j;
		}
	}
	qsort(e, n, sizeof(*e), cmp_expect);
	*n_out = n;
	return e;
}

static void name_write(char *buf, size_t len, const struct spardl_sched *s, const struct expect *e)
{
	const struct spardl_write *w = &s->writes[e->write];

	snprintf(buf, len, "write %u of rank %d (%s round %u to rank %d, piece %u, imm 0x%08x, <= %" PRIu64 " B)",
		 e->write, s->p.rank, spardl_phase_name(w->phase), w->round, w->peer, e->piece, e->imm, e->max);
}

/* The recorded writes and notifications of every call against the compiled
 * schedules, and each write against its notification on the receiver. */
static void validate(struct trace_set *ts, uint64_t *checked_writes, uint64_t *flows)
{
	uint32_t p;
	int r;

	*checked_writes = 0;
	*flows = 0;
	for (p = 0; p < ts->nplans; p++) {
		struct plan_info *pi = &ts->plans[p];
		uint64_t call;

		if (!pi->seen)
			continue;
		for (r = 0; r < ts->size; r++) {
			struct rank_trace *rt = &ts->rt[r];
			const struct spardl_sched *s = pi->sched[r];
			size_t ne[2] = { 0, 0 }, i;
			struct expect *ex[2];

			if (!rt->path)
				continue;
			ex[0] = expected_writes(s, pi->sched, 0, &ne[0]);
			ex[1] = expected_writes(s, pi->sched, 1, &ne[1]);
			if (!ex[0] || !ex[1]) {
				free(ex[0]);
				free(ex[1]);
				report(ts, "out of memory");
				return;
			}
			for (call = 0; call < pi->ncalls; call++) {
				struct expect *e = ex[call & 1];
				size_t n = ne[call & 1];
				int began = 0, ended = 0, status = 0;
				char name[200];

				size_t lo, hi;

				for (i = 0; i < n; i++)
					e[i].seen = 0;
				call_range(rt, p, call, &lo, &hi);
				for (i = lo; i < hi; i++) {
					const struct spardl_trace_rec *x = rt->bycall[i];
					struct expect *m;

					if (x->kind == SPARDL_TR_CALL_BEGIN)
						began = 1;
					if (x->kind == SPARDL_TR_CALL_END) {
						ended = 1;
						status = x->peer;
					}
					if (x->kind != SPARDL_TR_POST)
						continue;
					m = find_expect(e, n, x->peer, x->imm);
					if (!m) {
						report(ts, "plan %u call %" PRIu64 ": rank %d wrote %" PRIu64
							   " B to rank %d with imm 0x%08x (%s round %u), which its schedule has no write for",
						       p, call, r, x->a, x->peer, x->imm, spardl_phase_name((x->imm >> 28) & 7),
						       x->round);
						continue;
					}
					name_write(name, sizeof(name), s, m);
					if (m->seen++)
						report(ts, "plan %u call %" PRIu64 ": %s was posted twice", p, call, name);
					if (x->a > m->max)
						report(ts, "plan %u call %" PRIu64 ": %s carried %" PRIu64 " B, over its bound",
						       p, call, name, x->a);
					(*checked_writes)++;
				}
				if (!began) {
					report(ts, "plan %u: rank %d's trace has no call %" PRIu64
						   " (other ranks made it): truncated or lost records",
					       p, r, call);
					continue;
				}
				if (!ended) {
					report(ts, "plan %u call %" PRIu64 ": rank %d's trace ends inside the call (truncated)", p,
					       call, r);
					continue;
				}
				if (status)
					continue; /* a failed call stops early: only extras count */
				for (i = 0; i < n; i++) {
					if (!e[i].seen) {
						name_write(name, sizeof(name), s, &e[i]);
						report(ts, "plan %u call %" PRIu64 ": %s was not posted", p, call, name);
					}
				}
			}
			free(ex[0]);
			free(ex[1]);
		}
	}
	/* Flows: a write's notification on its receiver, exactly once. */
	for (r = 0; r < ts->size; r++) {
		struct rank_trace *rt = &ts->rt[r];
		size_t i;

		for (i = 0; rt->path && i < rt->nrec; i++) {
			const struct spardl_trace_rec *x = &rt->rec[i];
			struct rank_trace *dt;
			const struct spardl_trace_rec *match;
			int found;

			if (x->kind != SPARDL_TR_POST || !ts->rt[x->peer].path)
				continue;
			dt = &ts->rt[x->peer];
			match = find_notify(dt, x, r, &found);
			if (found == 1) {
				int cross = strcmp(rt->h.host, dt->h.host) != 0;
				double bx = (double)x->a,
				       dy = ((double)abs_ns(ts, x->peer, match) - (double)abs_ns(ts, r, x)) * 1e-9;

				ts->fx[cross] += bx;
				ts->fy[cross] += dy;
				ts->fxx[cross] += bx * bx;
				ts->fxy[cross] += bx * dy;
				ts->fn[cross]++;
				(*flows)++;
				continue;
			}
			report(ts, "plan %u call %" PRIu64 ": rank %d's write to rank %d (imm 0x%08x, %" PRIu64
				   " B) has %d notifications on rank %d, not 1",
			       x->plan, x->call, r, x->peer, x->imm, x->a, found, x->peer);
		}
	}
}

/* Per phase and round of one plan: what the ranks did in each call. The
 * schedule says which phase and round each step belongs to; steps that
 * neither wait nor write (accumulate, final selection, output, residual)
 * count as local compute. */
#define ROWS (SPARDL_PH_COUNT * 32 + 1)
#define LOCAL_ROW (ROWS - 1)

struct pr_stat {
	uint64_t msgs, bytes, pairs;
	double time, wait; /* seconds over calls: time of the slowest rank, wait summed over ranks */
	double *rank_time; /* per rank, summed over calls */
	double *cur;       /* per rank, this call */
	int used;
};

static int step_row(const struct spardl_sched *s, uint32_t step)
{
	const struct spardl_step *st;

	if (step >= s->nsteps)
		return LOCAL_ROW;
	st = &s->steps[step];
	if (!st->nwait && !st->nwrite)
		return LOCAL_ROW;
	return st->op.phase * 32 + (int)(st->op.round & 31);
}

static void summarize(struct trace_set *ts)
{
	uint32_t p;
	int r;

	for (p = 0; p < ts->nplans; p++) {
		struct plan_info *pi = &ts->plans[p];
		const struct spardl_sched_params *sp = &pi->sp;
		struct pr_stat *st = calloc(ROWS, sizeof(*st));
		double call_time = 0, *call_rank = calloc((size_t)ts->size, sizeof(double));
		int row, calls_done = 0, ok = st && call_rank;
		uint64_t call;

		if (!pi->seen)
			continue;
		for (row = 0; ok && row < ROWS; row++) {
			st[row].rank_time = calloc((size_t)ts->size, sizeof(double));
			st[row].cur = calloc((size_t)ts->size, sizeof(double));
			ok = st[row].rank_time && st[row].cur;
		}
		if (!ok) {
			printf("out of memory\n");
			goto next;
		}
		printf("plan %u: %s, %d ranks, n = %" PRIu64 ", k = %" PRIu64 ", teams %d, %s SAG, %s SRS%s; %" PRIu64
		       " calls traced on %d of %d ranks\n",
		       p, sp->algo >= 0 && sp->algo < 4 ? algo_names[sp->algo] : "?", sp->size, sp->n, sp->k, sp->teams,
		       sp->sag ? "recursive" : "Bruck", sp->srs ? "sequential" : "batched",
		       sp->residual ? "" : ", no residual", pi->ncalls, ts->nfiles, ts->size);
		for (call = 0; call < pi->ncalls; call++) {
			double worst = 0;

			for (row = 0; row < ROWS; row++)
				memset(st[row].cur, 0, (size_t)ts->size * sizeof(double));
			for (r = 0; r < ts->size; r++) {
				struct rank_trace *rt = &ts->rt[r];
				const struct spardl_sched *s = pi->sched[r];
				double begin = -1, step_t0 = -1, wait_t0 = -1;
				int cur_row = LOCAL_ROW;
				uint32_t cur_step = UINT32_MAX;
				size_t i, lo = 0, hi = 0;

				if (rt->path)
					call_range(rt, p, call, &lo, &hi);
				for (i = lo; i < hi; i++) {
					const struct spardl_trace_rec *x = rt->bycall[i];
					double t = (double)abs_ns(ts, r, x) * 1e-9;
					struct pr_stat *q;

					if (x->kind == SPARDL_TR_NOTIFY ||
					    x->kind == SPARDL_TR_MR || x->kind == SPARDL_TR_QP || x->kind == SPARDL_TR_PLAN)
						continue;
					if (x->kind == SPARDL_TR_CALL_BEGIN) {
						begin = t;
						continue;
					}
					if (x->kind == SPARDL_TR_CALL_END || x->step != cur_step) {
						/* The step before ends where this record is. */
						if (step_t0 >= 0) {
							st[cur_row].cur[r] += t - step_t0;
							st[cur_row].used = 1;
						}
						if (x->kind == SPARDL_TR_CALL_END) {
							if (begin >= 0) {
								call_rank[r] += t - begin;
								if (t - begin > worst)
									worst = t - begin;
							}
							break;
						}
						cur_step = x->step;
						cur_row = step_row(s, x->step);
						step_t0 = t;
					}
					q = &st[cur_row];
					if (x->kind == SPARDL_TR_POST) {
						q->msgs++;
						q->bytes += x->a;
					} else if (x->kind == SPARDL_TR_OP_END) {
						q->pairs += x->b;
					} else if (x->kind == SPARDL_TR_WAIT) {
						wait_t0 = t;
					} else if (x->kind == SPARDL_TR_ARRIVED && wait_t0 >= 0) {
						q->wait += t - wait_t0;
						wait_t0 = -1;
					}
				}
			}
			for (row = 0; row < ROWS; row++) {
				double w = 0;

				for (r = 0; r < ts->size; r++) {
					st[row].rank_time[r] += st[row].cur[r];
					if (st[row].cur[r] > w)
						w = st[row].cur[r];
				}
				st[row].time += w;
			}
			call_time += worst;
			calls_done++;
		}
		printf("  %-6s %5s %8s %12s %10s %10s %10s %10s %8s\n", "phase", "round", "msgs", "bytes", "pairs",
		       "time(us)", "MB/s/rank", "wait(us)", "slowest");
		for (row = 0; row < ROWS; row++) {
			struct pr_stat *q = &st[row];
			double c = calls_done ? calls_done : 1, t = q->time / c, bw;
			int slow = 0;

			if (!q->used)
				continue;
			for (r = 1; r < ts->size; r++)
				if (q->rank_time[r] > q->rank_time[slow])
					slow = r;
			bw = t > 0 ? (double)q->bytes / c / ts->nfiles / t / 1e6 : 0;
			if (row == LOCAL_ROW)
				printf("  %-12s", "local");
			else
				printf("  %-6s %5d", spardl_phase_name((unsigned)(row / 32)), row % 32);
			printf(" %8.1f %12.0f %10.0f %10.1f %10.1f %10.1f %8d\n", (double)q->msgs / c, (double)q->bytes / c,
			       (double)q->pairs / c, t * 1e6, bw, q->wait / c * 1e6, slow);
		}
		if (calls_done) {
			int slow = 0;

			for (r = 1; r < ts->size; r++)
				if (call_rank[r] > call_rank[slow])
					slow = r;
			printf("  call   %.1f us on the slowest rank; rank %d is slowest over all calls\n",
			       call_time / calls_done * 1e6, slow);
		}
next:
		for (row = 0; st && row < ROWS; row++) {
			free(st[row].rank_time);
			free(st[row].cur);
		}
		free(st);
		free(call_rank);
	}
	printf("(per call; msgs, bytes, pairs and wait summed over ranks; time: the slowest rank's; local: steps "
	       "that neither wait nor write)\n");
}

/* Chrome trace JSON: pid = rank; tid 0 the calls, 1 + phase the compute
 * and waits of that phase, 100 + peer the writes to a peer (or 1000 + the
 * QP's index where writes go over QPs), 200 + peer the notifications from
 * a peer. Flow arrows ("s" -> "f") join each write to its notification. */
static const char *op_label(unsigned code)
{
	return spardl_op_name(code);
}

/* A write's or notification's slice: 50 ns, or less where the next one on
 * the same track (same kind, same peer) starts sooner, so that slices of a
 * track never overlap. In microseconds. */
static double short_slice(const struct trace_set *ts, int r, size_t i)
{
	const struct rank_trace *rt = &ts->rt[r];
	const struct spardl_trace_rec *x = &rt->rec[i];
	double dur = 0.05;
	size_t j;

	for (j = i + 1; j < rt->nrec && j < i + 256; j++) {
		const struct spardl_trace_rec *y = &rt->rec[j];

		if (y->kind == x->kind && y->peer == x->peer) {
			double gap = (double)(y->t_ns - x->t_ns) / 1000.0;

			return gap < dur ? gap : dur;
		}
	}
	return dur;
}

static int tid_write(const struct spardl_trace_rec *x)
{
	return 100 + x->peer;
}

static int chrome(struct trace_set *ts, const char *out)
{
	FILE *f = fopen(out, "w");
	int r, first = 1;
	uint64_t flow = 0;

	if (!f) {
		fprintf(stderr, "spardl-verbs trace: cannot create %s: %s\n", out, strerror(errno));
		return -1;
	}
	fprintf(f, "{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n");
#define SEP() (first ? (first = 0, "") : ",\n")
	for (r = 0; r < ts->size; r++) {
		struct rank_trace *rt = &ts->rt[r];
		int ph, peer;

		if (!rt->path)
			continue;
		fprintf(f, "%s{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":%d,\"args\":{\"name\":\"rank %d (%s, pid %d)\"}}",
			SEP(), r, r, rt->h.host, rt->h.pid);
		fprintf(f, "%s{\"ph\":\"M\",\"name\":\"process_sort_index\",\"pid\":%d,\"args\":{\"sort_index\":%d}}", SEP(),
			r, r);
		fprintf(f, "%s{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":%d,\"tid\":0,\"args\":{\"name\":\"calls\"}}",
			SEP(), r);
		for (ph = 0; ph < SPARDL_PH_COUNT; ph++)
			fprintf(f, "%s{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":%d,\"tid\":%d,\"args\":{\"name\":\"%s\"}}",
				SEP(), r, 1 + ph, spardl_phase_name((unsigned)ph));
		for (peer = 0; peer < ts->size; peer++) {
			if (peer == r)
				continue;
			fprintf(f, "%s{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":%d,\"tid\":%d,\"args\":{\"name\":\"writes to rank %d\"}}",
				SEP(), r, 100 + peer, peer);
			fprintf(f, "%s{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":%d,\"tid\":%d,\"args\":{\"name\":\"notifications from rank %d\"}}",
				SEP(), r, 200 + peer, peer);
		}
	}
	for (r = 0; r < ts->size; r++) {
		struct rank_trace *rt = &ts->rt[r];
		size_t i, j;

		for (i = 0; rt->path && i < rt->nrec; i++) {
			const struct spardl_trace_rec *x = &rt->rec[i];
			double t = (double)abs_ns(ts, r, x) / 1000.0;

			switch (x->kind) {
			case SPARDL_TR_CALL_BEGIN:
			case SPARDL_TR_OP_BEGIN:
			case SPARDL_TR_WAIT:
				/* Paired with the next END of the same plan (nested properly). */
				for (j = i + 1; j < rt->nrec; j++) {
					const struct spardl_trace_rec *y = &rt->rec[j];

					if (y->plan != x->plan)
						continue;
					if ((x->kind == SPARDL_TR_CALL_BEGIN && y->kind == SPARDL_TR_CALL_END) ||
					    (x->kind == SPARDL_TR_OP_BEGIN && y->kind == SPARDL_TR_OP_END) ||
					    (x->kind == SPARDL_TR_WAIT && y->kind == SPARDL_TR_ARRIVED))
						break;
				}
				if (j == rt->nrec)
					break;
				{
					const struct spardl_trace_rec *y = &rt->rec[j];
					double d = (double)abs_ns(ts, r, y) / 1000.0 - t;

					if (x->kind == SPARDL_TR_CALL_BEGIN)
						fprintf(f, "%s{\"ph\":\"X\",\"cat\":\"call\",\"name\":\"plan %u call %" PRIu64
							   "\",\"pid\":%d,\"tid\":0,\"ts\":%.3f,\"dur\":%.3f,\"args\":{\"status\":%d}}",
							SEP(), x->plan, x->call, r, t, d, y->peer);
					else if (x->kind == SPARDL_TR_OP_BEGIN)
						fprintf(f, "%s{\"ph\":\"X\",\"cat\":\"compute\",\"name\":\"%s\",\"pid\":%d,\"tid\":%d,"
							   "\"ts\":%.3f,\"dur\":%.3f,\"args\":{\"step\":%u,\"round\":%u,\"bytes\":%" PRIu64
							   ",\"pairs\":%" PRIu64 "}}",
							SEP(), op_label(x->aux), r, 1 + x->phase, t, d, x->step, x->round, y->a, y->b);
					else
						fprintf(f, "%s{\"ph\":\"X\",\"cat\":\"wait\",\"name\":\"wait for rank %d\",\"pid\":%d,"
							   "\"tid\":%d,\"ts\":%.3f,\"dur\":%.3f,\"args\":{\"step\":%u,\"round\":%u,"
							   "\"slot\":%u,\"bytes\":%" PRIu64 "}}",
							SEP(), x->peer, r, 1 + x->phase, t, d, x->step, x->round, x->aux, y->a);
				}
				break;
			case SPARDL_TR_POST: {
				struct rank_trace *dt = &ts->rt[x->peer];
				const struct spardl_trace_rec *y = NULL;
				double dur = short_slice(ts, r, i);
				int count = 0;

				/* Writes and notifications are short slices, and
				 * the flow events sit inside them, so that they bind. */
				fprintf(f, "%s{\"ph\":\"X\",\"cat\":\"write\",\"name\":\"write %s %u\",\"pid\":%d,\"tid\":%d,"
					   "\"ts\":%.3f,\"dur\":%.3f,\"args\":{\"bytes\":%" PRIu64 ",\"peer\":%d,\"qpn\":%u,"
					   "\"wr_id\":\"0x%" PRIx64 "\",\"imm\":\"0x%08x\",\"step\":%u,\"call\":%" PRIu64 "}}",
					SEP(), spardl_phase_name(x->phase), x->round, r, tid_write(x), t, dur, x->a, x->peer, x->qpn,
					x->b, x->imm, x->step, x->call);
				if (dt->path)
					y = find_notify(dt, x, r, &count);
				if (y) {
					double ty = (double)abs_ns(ts, x->peer, y) / 1000.0,
					       ydur = short_slice(ts, x->peer, (size_t)(y - dt->rec));

					flow++;
					fprintf(f, "%s{\"ph\":\"s\",\"cat\":\"write\",\"name\":\"write\",\"id\":%" PRIu64
						   ",\"pid\":%d,\"tid\":%d,\"ts\":%.3f}",
						SEP(), flow, r, tid_write(x), t + dur / 2);
					fprintf(f, "%s{\"ph\":\"f\",\"bp\":\"e\",\"cat\":\"write\",\"name\":\"write\",\"id\":%" PRIu64
						   ",\"pid\":%d,\"tid\":%d,\"ts\":%.3f}",
						SEP(), flow, x->peer, 200 + r, ty + ydur / 2);
				}
				break;
			}
			case SPARDL_TR_DONE:
				fprintf(f, "%s{\"ph\":\"i\",\"s\":\"t\",\"cat\":\"write\",\"name\":\"completed\",\"pid\":%d,"
					   "\"tid\":%d,\"ts\":%.3f,\"args\":{\"qpn\":%u,\"wr_id\":\"0x%" PRIx64 "\"}}",
					SEP(), r, tid_write(x), t, x->qpn, x->b);
				break;
			case SPARDL_TR_NOTIFY:
				fprintf(f, "%s{\"ph\":\"X\",\"cat\":\"write\",\"name\":\"notification %s\",\"pid\":%d,\"tid\":%d,"
					   "\"ts\":%.3f,\"dur\":%.3f,\"args\":{\"bytes\":%" PRIu64 ",\"imm\":\"0x%08x\",\"call\":%" PRIu64
					   "}}",
					SEP(), spardl_phase_name(x->phase), r, 200 + x->peer, t, short_slice(ts, r, i), x->a, x->imm,
					x->call);
				break;
			case SPARDL_TR_MR:
				fprintf(f, "%s{\"ph\":\"i\",\"s\":\"p\",\"cat\":\"setup\",\"name\":\"memory %s\",\"pid\":%d,"
					   "\"tid\":0,\"ts\":%.3f,\"args\":{\"bytes\":%" PRIu64 ",\"registered\":%u,\"plan\":%u}}",
					SEP(), x->aux == 0 ? "acc" : x->aux == 1 ? "residual" : x->aux == 2 ? "send" : "receive", r,
					t, x->a, x->imm, x->plan);
				break;
			case SPARDL_TR_QP:
				fprintf(f, "%s{\"ph\":\"i\",\"s\":\"p\",\"cat\":\"setup\",\"name\":\"QP %u to rank %d: %s\","
					   "\"pid\":%d,\"tid\":0,\"ts\":%.3f}",
					SEP(), x->qpn, x->peer,
					x->aux == SPARDL_TR_QP_CONNECTED ? "connected" :
					x->aux == SPARDL_TR_QP_ERROR	 ? "error" :
									   "closed",
					r, t);
				break;
			default:
				break;
			}
		}
	}
	fprintf(f, "\n]}\n");
#undef SEP
	if (fclose(f)) {
		fprintf(stderr, "spardl-verbs trace: writing %s: %s\n", out, strerror(errno));
		return -1;
	}
	printf("chrome: %s, %" PRIu64 " flow arrows (open it in https://ui.perfetto.dev or chrome://tracing)\n", out,
	       flow);
	return 0;
}

/* --fit: time from post to notification = alpha + bytes / beta, least
 * squares over the matched writes, between hosts when there are any. */
static void fit(const struct trace_set *ts)
{
	int c = ts->fn[1] >= 2 ? 1 : 0;
	double n = (double)ts->fn[c], mx, my, var, cov, slope, alpha;

	if (ts->fn[c] < 2) {
		printf("fit: fewer than 2 matched writes, nothing to fit\n");
		return;
	}
	mx = ts->fx[c] / n;
	my = ts->fy[c] / n;
	var = ts->fxx[c] / n - mx * mx;
	cov = ts->fxy[c] / n - mx * my;
	if (!(var > 0) || !(cov > 0)) {
		printf("fit: the %s writes' times do not grow with their sizes (sizes all alike, or clocks apart): no fit\n",
		       c ? "cross-host" : "same-host");
		return;
	}
	slope = cov / var;
	alpha = my - slope * mx;
	printf("fit: time from post to notification = %.2f us + bytes / %.2f MB/s, over %.0f writes %s\n"
	       "     (spardl-bench --simulate --alpha %.3g --beta %.4g%s; writes queued behind others count as\n"
	       "     slower links, and ranks on several hosts need synchronised clocks)\n",
	       alpha * 1e6, 1.0 / slope / 1e6, n, c ? "between hosts" : "on one host (no cross-host writes)",
	       alpha > 0 ? alpha : 0, 1.0 / slope, c ? "" : "; same-host copies, not a network");
}

static void trace_usage(FILE *f)
{
	fprintf(f,
		"usage: spardl-verbs trace [--chrome OUT.json] [--no-summary] [--fit] FILE...\n"
		"Reads the trace files SPARDL_TRACE wrote (one per rank), checks them (format and checksums,\n"
		"then every recorded write against the plan's compiled schedule: each expected write seen\n"
		"exactly once, nothing extra, sizes within bounds, and each write's notification on its\n"
		"receiver), prints per plan a summary per phase and round (messages, bytes, pairs, time of the\n"
		"slowest rank, bandwidth per rank, wait time, slowest rank) and with --chrome writes Chrome/\n"
		"Perfetto trace JSON (pid = rank, tid = phase or peer, flow arrows from writes to notifications).\n"
		"--fit fits alpha and beta (post to notification = alpha + bytes / beta) to the matched writes,\n"
		"between hosts when there are any, for spardl-bench --simulate.\n"
		"Exit status: 0 when the traces agree with the schedules, 1 naming each mismatch, 2 on bad input.\n");
}

int spardl_verbs_trace(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "chrome", required_argument, NULL, 'c' },
		{ "no-summary", no_argument, NULL, 'S' },
		{ "fit", no_argument, NULL, 'F' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct trace_set ts;
	const char *out = NULL;
	int c, i, r, summary = 1, do_fit = 0, ret = 2;
	uint64_t writes = 0, flows = 0, first = UINT64_MAX;
	uint32_t p;

	setenv("SPARDL_DEBUG", "none", 0);
	memset(&ts, 0, sizeof(ts));
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (c) {
		case 'c':
			out = optarg;
			break;
		case 'S':
			summary = 0;
			break;
		case 'F':
			do_fit = 1;
			break;
		case 'h':
			trace_usage(stdout);
			return 0;
		default:
			trace_usage(stderr);
			return 2;
		}
	}
	if (optind >= argc) {
		trace_usage(stderr);
		return 2;
	}
	for (i = optind; i < argc; i++) {
		struct rank_trace rt;
		char why[300];

		if (load_file(argv[i], &rt, why, sizeof(why))) {
			printf("%s: %s\n", argv[i], why);
			goto out;
		}
		if (!ts.size) {
			ts.size = rt.h.size;
			ts.rt = calloc((size_t)ts.size, sizeof(*ts.rt));
			if (!ts.rt) {
				free(rt.rec);
				goto out;
			}
		}
		if (rt.h.size != ts.size || ts.rt[rt.h.rank].path) {
			printf("%s: rank %d of %d does not fit the other files (%d ranks%s)\n", argv[i], rt.h.rank, rt.h.size,
			       ts.size, rt.h.size == ts.size ? ", that rank given twice" : "");
			free(rt.rec);
			goto out;
		}
		sort_records(&rt);
		if (index_notify(&rt)) {
			printf("%s: out of memory\n", argv[i]);
			free(rt.rec);
			goto out;
		}
		ts.rt[rt.h.rank] = rt;
		ts.nfiles++;
		if (rt.h.epoch_real_ns < first)
			first = rt.h.epoch_real_ns;
	}
	ts.t0 = first;
	if (check_records(&ts) || compile_plans(&ts))
		goto out;
	if (summary)
		summarize(&ts);
	validate(&ts, &writes, &flows);
	if (do_fit)
		fit(&ts);
	if (out && chrome(&ts, out))
		goto out;
	if (ts.nfiles < ts.size)
		printf("note: %d of %d ranks' traces given: writes to the missing ranks are not matched\n", ts.nfiles,
		       ts.size);
	printf("check: %d plans, %" PRIu64 " writes checked against the compiled schedules, %" PRIu64
	       " matched with their notifications: %s\n",
	       (int)ts.nplans, writes, flows, ts.errors ? "MISMATCH" : "every write as scheduled");
	ret = ts.errors ? 1 : 0;
out:
	for (r = 0; ts.rt && r < ts.size; r++) {
		free(ts.rt[r].rec);
		free(ts.rt[r].notify);
		free(ts.rt[r].bycall);
	}
	free(ts.rt);
	for (p = 0; p < ts.nplans; p++) {
		for (r = 0; ts.plans[p].sched && r < ts.size; r++)
			spardl_sched_free(ts.plans[p].sched[r]);
		free(ts.plans[p].sched);
	}
	free(ts.plans);
	return ret;
}
