/* SPDX-License-Identifier: MIT */
/* spardl-verbs: RDMA devices as spardl sees them, and write bandwidth/latency through spardl's transport. */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <spardl/spardl.h>

#include "cuda.h"
#include "config.h"
#include "core.h"
#include "env.h"
#include "log.h"
#include "verbs-schedule.h"
#include "verbs-trace.h"
#if SPARDL_HAVE_VERBS_TRANSPORT
#include "verbs.h"
#endif

struct opts {
	const char *cmd;
	const char *server_host; /* client: where the server listens */
	int server;
	int port;
	size_t size;     /* one size, or 0 with all_sizes */
	int all_sizes;
	int iters;
	int window;
	int json;
	int family;
};

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* Per-iteration timestamps, cheap like perftest's: the TSC where there is
 * one (scaled by a calibration against the clock), the clock elsewhere. */
#if defined(__x86_64__)
#include <x86intrin.h>
static double tsc_per_us;

static void tick_calibrate(void)
{
	double c0 = now_us(), c1;
	uint64_t t0 = __rdtsc(), t1;

	do
		c1 = now_us();
	while (c1 - c0 < 20000);
	t1 = __rdtsc();
	tsc_per_us = (double)(t1 - t0) / (c1 - c0);
}

static double tick_us(void)
{
	return (double)__rdtsc() / tsc_per_us;
}
#else
static void tick_calibrate(void)
{
}

static double tick_us(void)
{
	return now_us();
}
#endif

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: spardl-verbs devices [-4|-6]\n"
		"       spardl-verbs bw  [--server | HOST] [-p PORT] [-s BYTES | -a] [-n ITERS] [-t WINDOW] [--json]\n"
		"       spardl-verbs lat [--server | HOST] [-p PORT] [-s BYTES | -a] [-n ITERS] [--json]\n"
		"       spardl-verbs env [--markdown]\n"
		"       spardl-verbs schedule -P SIZE --count N [--rank R | --all] [--algo A] [--density D]\n"
		"                             [--teams T] [--sag S] [--srs S] [--max-write BYTES] [--check]\n"
		"       spardl-verbs trace [--chrome OUT.json] [--no-summary] [--fit] FILE...\n"
		"devices: every RDMA device, port, state, link layer, MTU and GID table, and the\n"
		"  device, port and GID spardl would pick (SPARDL_VERBS_DEVICE, SPARDL_VERBS_GID_INDEX) and why;\n"
		"  then the CUDA devices this process sees (name, memory, PCI address), or why there are none.\n"
		"bw, lat: like ib_write_bw / ib_write_lat, through spardl's own transport (SPARDL_TRANSPORT,\n"
		"  default verbs here): start `--server` on one host, then `HOST` on another; or run both\n"
		"  under a launcher (spardl-run -n 2 spardl-verbs bw), rank 0 serving. The client writes.\n"
		"  -s size (default 65536 for bw, 8 for lat), -a sizes 2 B .. 8 MiB (bw: 64 KiB .. 4 MiB),\n"
		"  -n iterations (bw 1000, lat 1000), -t writes in flight (bw, 128), -p bootstrap port (18515).\n"
		"env: every environment variable spardl reads; --markdown: as docs/ENVIRONMENT.md's tables.\n"
		"schedule: a plan's compiled schedule for one rank, without running it; --check proves that\n"
		"  every rank's schedule agrees (spardl-verbs schedule --help).\n"
		"trace: merge the ranks' SPARDL_TRACE files, check every write against the compiled schedule,\n"
		"  summarise each phase and round, export Chrome/Perfetto JSON (spardl-verbs trace --help).\n");
}

/* A 2-rank communicator: from a launcher's environment, or server/client. */
static int make_comm(const struct opts *o, struct spardl_comm **comm)
{
	struct spardl_comm_params cp;
	char addr[300];

	spardl_comm_params_init(&cp);
	if (!getenv("SPARDL_TRANSPORT"))
		setenv("SPARDL_TRANSPORT", "verbs", 0);
	/* The latency test polls without sleeping, like perftest; the
	 * bandwidth test sleeps when idle and leaves the CPU to the device. */
	if (!getenv("SPARDL_VERBS_SPIN") && !strcmp(o->cmd, "lat"))
		setenv("SPARDL_VERBS_SPIN", "100000000", 0);
	if (o->server || o->server_host) {
		cp.field_mask = SPARDL_COMM_PARAM_RANK_SIZE | SPARDL_COMM_PARAM_BOOTSTRAP;
		cp.rank = o->server ? 0 : 1;
		cp.size = 2;
		if (o->server)
			snprintf(addr, sizeof(addr), "[::]:%d", o->port);
		else
			snprintf(addr, sizeof(addr), strchr(o->server_host, ':') && o->server_host[0] != '[' ?
							     "[%s]:%d" :
							     "%s:%d",
				 o->server_host, o->port);
		cp.bootstrap = addr;
		/* Server and client name the address differently: without a
		 * secret of the user's (SPARDL_JOB_KEY, SPARDL_JOB_KEY_FILE) they
		 * meet under a fixed key, which keeps other programs out but
		 * proves nothing, like perftest's unauthenticated handshake. */
		if (!getenv("SPARDL_JOB_KEY") && !getenv("SPARDL_JOB_KEY_FILE")) {
			cp.field_mask |= SPARDL_COMM_PARAM_JOB_KEY;
			cp.job_key = "spardl-verbs";
		}
	}
	return spardl_comm_create(cp.field_mask ? &cp : NULL, comm);
}

struct link {
	struct spardl_comm *comm;
	const struct spardl_tp_ops *ops;
	struct spardl_tp_mr *src, *dst;
	struct spardl_tp_ep *ep;
	struct spardl_tp_rmr *rmr;
	int peer;
};

static int link_up(struct link *l, size_t bytes, int notify)
{
	struct spardl_comm *c = l->comm;
	struct spardl_tp_peer peer;
	int ret;

	if (c->size != 2)
		return spardl_error(-EINVAL, "spardl-verbs needs exactly 2 ranks (got %d)", c->size);
	l->ops = c->tp_ops;
	l->peer = 1 - c->rank;
	ret = l->ops->mem_alloc(c->tp, bytes, SPARDL_MEM_HOST, SPARDL_ACCESS_LOCAL, &l->src);
	if (!ret)
		ret = l->ops->mem_alloc(c->tp, bytes, SPARDL_MEM_HOST, SPARDL_ACCESS_LOCAL | SPARDL_ACCESS_REMOTE_WRITE,
					&l->dst);
	peer.rank = l->peer;
	peer.flags = SPARDL_TP_PEER_WRITES_HERE | SPARDL_TP_PEER_WRITTEN;
	peer.remote_len = bytes;
	/* ep_create is collective: every rank calls it, whatever failed before. */
	if (ret)
		return spardl_bootstrap_exchange(c->bs, ret, "allocate the test's memory", NULL, NULL, 0);
	ret = l->ops->ep_create(c->tp, &peer, 1, (uint32_t)notify, l->dst, &l->ep);
	if (!ret)
		l->rmr = l->ep->remote[l->peer];
	return ret;
}

static void link_down(struct link *l)
{
	if (l->ep)
		l->ops->ep_destroy(l->ep);
	if (l->src)
		l->ops->mem_free(l->comm->tp, l->src);
	if (l->dst)
		l->ops->mem_free(l->comm->tp, l->dst);
}

/* Wait for n notifications from the peer. */
static int wait_n(struct link *l, int n)
{
	struct spardl_tp_event ev[64];
	int got = 0, k, i;

	while (got < n) {
		k = l->ops->poll(l->ep, ev, 64, l->comm->timeout_ms);
		if (k < 0)
			return k;
		if (k == 0)
			return spardl_error(-ETIMEDOUT, "no write from the peer within %d ms", l->comm->timeout_ms);
		for (i = 0; i < k; i++) {
			if (ev[i].type == SPARDL_TP_EV_PEER_GONE)
				return spardl_error(-ECONNRESET, "the peer exited or disconnected");
			got++;
		}
	}
	return 0;
}

static void sizes_for(const struct opts *o, int lat, size_t *list, int *n)
{
	size_t s;

	*n = 0;
	if (!o->all_sizes) {
		list[(*n)++] = o->size ? o->size : (lat ? 8 : 65536);
		return;
	}
	for (s = lat ? 2 : 65536; s <= (size_t)(lat ? 8 << 20 : 4 << 20); s *= 2)
		list[(*n)++] = s;
}

static int run_bw(const struct opts *o)
{
	struct link l = { 0 };
	size_t sizes[32], maxs = 0;
	int ns, si, ret;

	sizes_for(o, 0, sizes, &ns);
	for (si = 0; si < ns; si++)
		maxs = sizes[si] > maxs ? sizes[si] : maxs;
	ret = make_comm(o, &l.comm);
	if (ret)
		goto out;
	/* A receive posted for every write of a size: none waits on RNR. */
	ret = link_up(&l, maxs * (size_t)o->window, o->iters + 8);
	if (ret)
		goto out;
	if (l.comm->rank == 0 && !o->json) {
		printf("# spardl-verbs bw: transport %s, %d writes in flight, %d iterations\n",
		       l.comm->tp_ops->name, o->window, o->iters);
		printf(" %-10s %-12s %-18s %-12s %-10s\n", "#bytes", "#iterations", "BW average[MiB/s]", "BW[Gb/s]",
		       "MsgRate[Mpps]");
	}
	if (l.comm->rank == 0 && o->json)
		printf("{\"test\": \"bw\", \"transport\": \"%s\", \"window\": %d, \"results\": [", l.comm->tp_ops->name,
		       o->window);
	for (si = 0; si < ns; si++) {
		size_t sz = sizes[si];
		double t0, t1;
		int i;
		double res[2];

		ret = spardl_bootstrap_barrier(l.comm->bs);
		if (ret)
			goto out;
		t0 = now_us();
		if (l.comm->rank == 1) {
			/* Like ib_write_bw: keep up to the send queue's depth in
			 * flight (the transport waits for room), then wait for
			 * the last completion. */
			for (i = 0; i < o->iters && !ret; i++)
				ret = l.ops->write(l.ep, l.peer, l.src, (size_t)(i % o->window) * sz, l.rmr,
						   (size_t)(i % o->window) * sz, sz, (uint32_t)i,
						   i + 1 == o->iters ? SPARDL_TP_WRITE_LAST : 0);
			if (!ret)
				ret = l.ops->quiesce(l.ep, l.comm->timeout_ms);
			if (ret)
				goto out;
		} else {
			ret = wait_n(&l, o->iters);
			if (ret)
				goto out;
		}
		t1 = now_us();
		/* The client's numbers; the server reports them. */
		res[0] = (double)o->iters * (double)sz / (t1 - t0); /* bytes per us = MB/s */
		res[1] = 0;
		{
			double all[4];

			ret = spardl_bootstrap_allgather(l.comm->bs, res, all, sizeof(res));
			if (ret)
				goto out;
			if (l.comm->rank == 0) {
				double avg = all[2] * 1e6 / 1048576;

				if (o->json)
					printf("%s{\"bytes\": %zu, \"iterations\": %d, \"bw_avg_mibps\": %.2f, \"bw_gbps\": %.4f, \"msg_rate_mpps\": %.6f}",
					       si ? ", " : "", sz, o->iters, avg, all[2] * 8e-3, all[2] / (double)sz);
				else
					printf(" %-10zu %-12d %-18.2f %-12.4f %-10.6f\n", sz, o->iters, avg, all[2] * 8e-3,
					       all[2] / (double)sz);
			}
		}
	}
	if (l.comm->rank == 0 && o->json)
		printf("]}\n");
out:
	if (ret)
		fprintf(stderr, "spardl-verbs: %s\n", spardl_last_error());
	link_down(&l);
	spardl_comm_destroy(l.comm);
	return ret ? 1 : 0;
}

static int run_lat(const struct opts *o)
{
	struct link l = { 0 };
	size_t sizes[32], maxs = 0;
	double *t = calloc((size_t)o->iters, sizeof(double));
	int ns, si, ret, i;

	if (!t)
		return 1;
	sizes_for(o, 1, sizes, &ns);
	for (si = 0; si < ns; si++)
		maxs = sizes[si] > maxs ? sizes[si] : maxs;
	ret = make_comm(o, &l.comm);
	if (ret)
		goto out;
	ret = link_up(&l, maxs, 8);
	if (ret)
		goto out;
	if (l.comm->rank == 0 && !o->json) {
		printf("# spardl-verbs lat: transport %s, %d iterations, one-way latency = round trip / 2\n",
		       l.comm->tp_ops->name, o->iters);
		printf(" %-10s %-12s %-10s %-10s %-12s %-12s %-10s\n", "#bytes", "#iterations", "t_min[us]", "t_max[us]",
		       "t_typical[us]", "t_avg[us]", "t_99%[us]");
	}
	if (l.comm->rank == 0 && o->json)
		printf("{\"test\": \"lat\", \"transport\": \"%s\", \"results\": [", l.comm->tp_ops->name);
	for (si = 0; si < ns; si++) {
		size_t sz = sizes[si];
		double sum = 0;

		ret = spardl_bootstrap_barrier(l.comm->bs);
		if (ret)
			goto out;
		/* Ping-pong: the client writes, the server answers each write
		 * with one of its own. */
		tick_calibrate();
		for (i = 0; i < o->iters; i++) {
			double t0 = tick_us();

			/* Like ib_write_lat, completions are not waited for on the
			 * critical path: the transport signals one write in a
			 * while, and a quiesce every 64 keeps the queue short. */
			int flush = i % 64 == 63 || i + 1 == o->iters;

			if (l.comm->rank == 1) {
				ret = l.ops->write(l.ep, l.peer, l.src, 0, l.rmr, 0, sz, (uint32_t)i,
						   flush ? SPARDL_TP_WRITE_LAST : 0);
				if (!ret)
					ret = wait_n(&l, 1);
			} else {
				ret = wait_n(&l, 1);
				if (!ret)
					ret = l.ops->write(l.ep, l.peer, l.src, 0, l.rmr, 0, sz, (uint32_t)i,
							   flush ? SPARDL_TP_WRITE_LAST : 0);
			}
			if (!ret && flush)
				ret = l.ops->quiesce(l.ep, l.comm->timeout_ms);
			if (ret)
				goto out;
			t[i] = (tick_us() - t0) / 2;
		}
		if (l.comm->rank == 1) {
			for (i = 0; i < o->iters; i++)
				sum += t[i];
			qsort(t, (size_t)o->iters, sizeof(double), cmp_double);
		}
		{
			double mine[5] = { t[0], t[o->iters - 1], t[o->iters / 2], sum / o->iters,
					   t[(int)(0.99 * (o->iters - 1))] },
			       all[10];

			ret = spardl_bootstrap_allgather(l.comm->bs, mine, all, sizeof(mine));
			if (ret)
				goto out;
			if (l.comm->rank == 0) {
				if (o->json)
					printf("%s{\"bytes\": %zu, \"iterations\": %d, \"t_min_us\": %.2f, \"t_max_us\": %.2f, \"t_typical_us\": %.2f, \"t_avg_us\": %.2f, \"t_99_us\": %.2f}",
					       si ? ", " : "", sz, o->iters, all[5], all[6], all[7], all[8], all[9]);
				else
					printf(" %-10zu %-12d %-10.2f %-10.2f %-12.2f %-12.2f %-10.2f\n", sz, o->iters,
					       all[5], all[6], all[7], all[8], all[9]);
			}
		}
	}
	if (l.comm->rank == 0 && o->json)
		printf("]}\n");
out:
	if (ret)
		fprintf(stderr, "spardl-verbs: %s\n", spardl_last_error());
	link_down(&l);
	spardl_comm_destroy(l.comm);
	free(t);
	return ret ? 1 : 0;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "server", no_argument, NULL, 'S' }, { "port", required_argument, NULL, 'p' },
		{ "size", required_argument, NULL, 's' }, { "all", no_argument, NULL, 'a' },
		{ "iters", required_argument, NULL, 'n' }, { "tx-depth", required_argument, NULL, 't' },
		{ "json", no_argument, NULL, 'j' }, { "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct opts o = { .port = 18515, .iters = 1000, .window = 128, .family = AF_UNSPEC };
	char *end;
	int c;

	if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	o.cmd = argv[1];
	if (!strcmp(o.cmd, "schedule"))
		return spardl_verbs_schedule(argc - 1, argv + 1);
	if (!strcmp(o.cmd, "trace"))
		return spardl_verbs_trace(argc - 1, argv + 1);
	if (!strcmp(o.cmd, "env") && argc == 3 && !strcmp(argv[2], "--markdown"))
		return spardl_env_markdown(stdout) ? 1 : 0;
	optind = 2;
	while ((c = getopt_long(argc, argv, "Sp:s:an:t:jh46", lo, NULL)) != -1) {
		switch (c) {
		case 'S':
			o.server = 1;
			break;
		case 'p':
			o.port = (int)strtol(optarg, &end, 10);
			if (*end || o.port < 1 || o.port > 65535)
				goto bad;
			break;
		case 's':
			o.size = strtoull(optarg, &end, 0);
			if (*end || !o.size || o.size > (1u << 30))
				goto bad;
			break;
		case 'a':
			o.all_sizes = 1;
			break;
		case 'n':
			o.iters = (int)strtol(optarg, &end, 10);
			if (*end || o.iters < 1)
				goto bad;
			break;
		case 't':
			o.window = (int)strtol(optarg, &end, 10);
			if (*end || o.window < 1 || o.window > 1024)
				goto bad;
			break;
		case 'j':
			o.json = 1;
			break;
		case '4':
			o.family = AF_INET;
			break;
		case '6':
			o.family = AF_INET6;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc)
		o.server_host = argv[optind++];
	if (optind < argc || (o.server && o.server_host)) {
		fprintf(stderr, "spardl-verbs: give either --server or one HOST\n");
		return 2;
	}
	if (!strcmp(o.cmd, "devices")) {
		int ret;

#if SPARDL_HAVE_VERBS_TRANSPORT
		ret = spardl_verbs_describe(stdout, o.family) ? 1 : 0;
#else
		fprintf(stderr, "spardl-verbs: this build has no verbs transport (rebuild with -Dverbs=enabled)\n");
		ret = 1;
#endif
		/* GPUs too: the memory a CUDA plan would register. */
		spardl_cuda_describe(stdout);
		return ret;
	}
	if (!strcmp(o.cmd, "env")) {
		fputs(spardl_env_help(), stdout);
		return 0;
	}
	if (!strcmp(o.cmd, "bw"))
		return run_bw(&o);
	if (!strcmp(o.cmd, "lat"))
		return run_lat(&o);
	fprintf(stderr, "spardl-verbs: unknown command '%s'\n", o.cmd);
	usage(stderr);
	return 2;
bad:
	fprintf(stderr, "spardl-verbs: bad value '%s' for %s\n", optarg, argv[optind - 1]);
	return 2;
}
