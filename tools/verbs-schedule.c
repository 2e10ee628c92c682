// SPDX-License-Identifier: MIT
/*
 * spardl-verbs schedule: print the compiled schedule of one rank (or all)
 * without running anything, and with --check prove that the ranks'
 * schedules agree: every write lands in a receive slot of its peer that
 * expects exactly that write (phase, round, sequence, byte bound), and
 * every receive slot gets exactly one write.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "log.h"
#include "schedule.h"
#include "verbs-schedule.h"

static void schedule_usage(FILE *f)
{
	fprintf(f,
		"usage: spardl-verbs schedule -P SIZE --count N [--rank R | --all] [--algo spardl|dense|topka|gtopk]\n"
		"                             [--density D] [--teams T] [--sag bruck|recursive]\n"
		"                             [--srs batched|sequential] [--no-residual] [--max-write BYTES] [--check]\n"
		"Prints the schedule a plan with these parameters compiles for rank R (default 0) of SIZE\n"
		"ranks: steps, rounds, peers, blocks, slot offsets and byte bounds; nothing runs.\n"
		"--check compiles every rank's schedule and checks that they agree: each write has its\n"
		"receive slot on the peer (same phase, round, sequence and byte bound) and each receive\n"
		"slot gets exactly one write. Exit status 0 when they agree, 1 naming the first mismatch.\n");
}

static int parse_choice(const char *arg, const char *const *names, int n, int *out)
{
	int i;

	for (i = 0; i < n; i++) {
		if (!strcmp(arg, names[i])) {
			*out = i;
			return 0;
		}
	}
	return -1;
}

/* Every rank's schedule, linked against the others. */
static int compile_every_rank(const struct spardl_plan_params *pp, int size, uint64_t max_write,
			      struct spardl_sched **all)
{
	int r, ret;

	for (r = 0; r < size; r++) {
		struct spardl_sched_params sp;

		ret = spardl_plan_sched_params(pp, size, r, max_write, &sp);
		if (!ret)
			ret = spardl_sched_compile(&sp, &all[r]);
		if (ret) {
			fprintf(stderr, "spardl-verbs schedule: rank %d: %s\n", r, spardl_last_error());
			return ret;
		}
	}
	for (r = 0; r < size; r++) {
		ret = spardl_sched_link(all[r], all);
		if (ret) {
			fprintf(stderr, "spardl-verbs schedule: %s\n", spardl_last_error());
			return ret;
		}
	}
	return 0;
}

/* Each receive slot of each rank is the target of exactly one write. */
static int check_agreement(struct spardl_sched **all, int size)
{
	unsigned long long writes = 0, slots = 0, bytes = 0, maxw = 0;
	unsigned **hits = calloc((size_t)size, sizeof(*hits));
	int r, bad = 0;
	uint32_t i;

	if (!hits)
		return -ENOMEM;
	for (r = 0; r < size && !bad; r++) {
		hits[r] = calloc(all[r]->nrslots + 1, sizeof(**hits));
		if (!hits[r])
			bad = -ENOMEM;
	}
	for (r = 0; r < size && !bad; r++) {
		for (i = 0; i < all[r]->nwrites; i++) {
			const struct spardl_write *w = &all[r]->writes[i];
			const struct spardl_sched *ps = all[w->peer];
			const struct spardl_rslot *rs = &ps->rslots[w->rslot];
			uint64_t max = all[r]->sslots[w->sslot].max;

			if (rs->peer != r || rs->phase != w->phase || rs->round != w->round || rs->seq != w->seq ||
			    rs->max != max || rs->off + rs->max > ps->recv_bytes) {
				printf("mismatch: rank %d's write %u (%s round %u, <= %llu B) -> rank %d slot %u "
				       "(from rank %d, %s round %u, <= %llu B at %llu of %llu)\n",
				       r, i, spardl_phase_name(w->phase), w->round, (unsigned long long)max, w->peer,
				       w->rslot, rs->peer, spardl_phase_name(rs->phase), rs->round,
				       (unsigned long long)rs->max, (unsigned long long)rs->off,
				       (unsigned long long)ps->recv_bytes);
				bad = 1;
			}
			hits[w->peer][w->rslot]++;
			writes++;
			bytes += max;
			if (max > maxw)
				maxw = max;
		}
	}
	for (r = 0; r < size && bad >= 0; r++) {
		for (i = 0; i < all[r]->nrslots; i++, slots++) {
			if (hits[r][i] != 1) {
				const struct spardl_rslot *rs = &all[r]->rslots[i];

				printf("mismatch: rank %d's receive slot %u (from rank %d, %s round %u, <= %llu B) "
				       "gets %u writes, not 1\n",
				       r, i, rs->peer, spardl_phase_name(rs->phase), rs->round,
				       (unsigned long long)rs->max, hits[r][i]);
				bad = 1;
			}
		}
	}
	for (r = 0; r < size; r++)
		free(hits[r]);
	free(hits);
	if (bad < 0)
		return bad;
	printf("check: %d ranks, %llu writes into %llu receive slots: %s; at most %llu B per message, "
	       "%llu B per call over all ranks\n",
	       size, writes, slots, bad ? "MISMATCH" : "every write has its receive slot and every slot one write",
	       maxw, bytes);
	return bad;
}

int spardl_verbs_schedule(int argc, char **argv)
{
	static const char *algos[] = { "spardl", "dense", "topka", "gtopk" };
	static const char *sags[] = { "bruck", "recursive" };
	static const char *srss[] = { "batched", "sequential" };
	static const struct option lo[] = {
		{ "size", required_argument, NULL, 'P' }, { "rank", required_argument, NULL, 'r' },
		{ "all", no_argument, NULL, 'a' }, { "algo", required_argument, NULL, 'A' },
		{ "count", required_argument, NULL, 'n' }, { "density", required_argument, NULL, 'd' },
		{ "teams", required_argument, NULL, 't' }, { "sag", required_argument, NULL, 'g' },
		{ "srs", required_argument, NULL, 's' }, { "no-residual", no_argument, NULL, 'R' },
		{ "max-write", required_argument, NULL, 'w' }, { "check", no_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' }, { NULL, 0, NULL, 0 },
	};
	struct spardl_plan_params pp;
	struct spardl_sched **all = NULL;
	unsigned long long max_write = 0;
	int size = 0, rank = 0, every = 0, check = 0, c, v, r, ret = 1;
	char *end;

	/* Errors are printed here once; the library's own log line would repeat them. */
	setenv("SPARDL_DEBUG", "none", 0);
	spardl_plan_params_init(&pp);
	pp.count = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, "P:r:an:d:ch", lo, NULL)) != -1) {
		switch (c) {
		case 'P':
			size = (int)strtol(optarg, &end, 10);
			if (*end || size < 1 || size > 65536)
				goto bad;
			break;
		case 'r':
			rank = (int)strtol(optarg, &end, 10);
			if (*end || rank < 0)
				goto bad;
			break;
		case 'a':
			every = 1;
			break;
		case 'A':
			if (parse_choice(optarg, algos, 4, &v))
				goto bad;
			pp.algo = (enum spardl_algo)v;
			break;
		case 'n':
			pp.count = strtoull(optarg, &end, 0);
			if (*end || !pp.count)
				goto bad;
			break;
		case 'd':
			pp.density = strtod(optarg, &end);
			if (*end)
				goto bad;
			break;
		case 't':
			pp.teams = (int)strtol(optarg, &end, 10);
			if (*end)
				goto bad;
			break;
		case 'g':
			if (parse_choice(optarg, sags, 2, &v))
				goto bad;
			pp.sag = (enum spardl_sag)v;
			break;
		case 's':
			if (parse_choice(optarg, srss, 2, &v))
				goto bad;
			pp.srs = (enum spardl_srs)v;
			break;
		case 'R':
			pp.residual = 0;
			break;
		case 'w':
			max_write = strtoull(optarg, &end, 0);
			if (*end || (max_write && (max_write < 64 || max_write % 8)))
				goto bad;
			break;
		case 'c':
			check = 1;
			break;
		case 'h':
			schedule_usage(stdout);
			return 0;
		default:
			schedule_usage(stderr);
			return 2;
		}
	}
	if (optind < argc || !size || !pp.count) {
		fprintf(stderr, "spardl-verbs schedule: %s\n",
			optind < argc ? "unexpected argument" : "give -P SIZE and --count N");
		schedule_usage(stderr);
		return 2;
	}
	if (rank >= size) {
		fprintf(stderr, "spardl-verbs schedule: --rank %d is not a rank of %d\n", rank, size);
		return 2;
	}
	all = calloc((size_t)size, sizeof(*all));
	if (!all) {
		fprintf(stderr, "spardl-verbs schedule: out of memory for %d schedules\n", size);
		return 1;
	}
	if (compile_every_rank(&pp, size, max_write, all))
		goto out;
	for (r = every ? 0 : rank; r < (every ? size : rank + 1); r++) {
		char *text = NULL;

		if (spardl_sched_render(all[r], &text)) {
			fprintf(stderr, "spardl-verbs schedule: cannot render rank %d's schedule\n", r);
			goto out;
		}
		fputs(text, stdout);
		free(text);
	}
	ret = check ? (check_agreement(all, size) ? 1 : 0) : 0;
out:
	for (r = 0; r < size; r++)
		spardl_sched_free(all[r]);
	free(all);
	return ret;
bad:
	fprintf(stderr, "spardl-verbs schedule: bad value '%s' for %s\n", optarg, argv[optind - 1]);
	return 2;
}
