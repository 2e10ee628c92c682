/* SPDX-License-Identifier: MIT */
/*
 * Strangers at a verbs endpoint's listener (suite verbs, in the SoftRoCE VM).
 * While the last rank's first plan is being connected, a thread of that
 * rank's process connects to its listener with rdma_cm as an outsider
 * would: without private data, with a wrong magic, with the right magic
 * but another plan's sequence number, and with the right magic and sequence
 * but a guessed token. Every attempt must be rejected with its reason, and
 * the job's own connections and calls must be unaffected: integer sums
 * checked exactly.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rdma/rdma_cma.h>

#include <spardl/spardl.h>

#include "mp_common.h"
#include "verbs.h"

#define N 20000
#define ATTEMPTS 4

/* The private data a rank sends (docs/VERBS.md): magic, rank, the plan's
 * sequence number, the accepting rank's token, then its key. */
struct conn_data {
	uint32_t magic;
	int32_t rank;
	uint64_t ep_seq;
	uint64_t token;
	uint32_t rkey;
	uint32_t flags;
	uint64_t addr;
	uint64_t len;
};

static const char *const attempt_name[ATTEMPTS] = { "no private data", "a wrong magic", "another plan's sequence",
						     "a guessed token" };
static const char *const want_reason[ATTEMPTS] = { "not a spardl connection", "not a spardl connection",
						    "another plan", "a wrong endpoint token" };

static struct sockaddr_storage target;
static uint32_t magic;
static uint64_t seq;
static pthread_t intruder;
static int started;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int sent;                  /* attempts whose request went out (or failed before) */
static char result[ATTEMPTS][200]; /* what each attempt got */

static int wait_event(struct rdma_event_channel *ch, enum rdma_cm_event_type want, char *why, size_t len,
		      int ms)
{
	struct pollfd pfd = { .fd = ch->fd, .events = POLLIN };
	struct rdma_cm_event *ev;
	int got;

	if (poll(&pfd, 1, ms) != 1) {
		snprintf(why, len, "no rdma_cm event within %d ms", ms);
		return -1;
	}
	if (rdma_get_cm_event(ch, &ev)) {
		snprintf(why, len, "rdma_get_cm_event: %s", strerror(errno));
		return -1;
	}
	got = ev->event;
	if (got == RDMA_CM_EVENT_REJECTED) {
		int l = ev->param.conn.private_data_len < 150 ? ev->param.conn.private_data_len : 150;

		snprintf(why, len, "rejected: %.*s", l, ev->param.conn.private_data ? (const char *)ev->param.conn.private_data : "");
	} else {
		snprintf(why, len, "%s (status %d)", rdma_event_str(ev->event), ev->status);
	}
	rdma_ack_cm_event(ev);
	return got == (int)want ? 0 : -1;
}

static void mark_sent(void)
{
	pthread_mutex_lock(&lock);
	sent++;
	pthread_cond_broadcast(&cond);
	pthread_mutex_unlock(&lock);
}

static void *intrude(void *arg)
{
	struct rdma_event_channel *ch[ATTEMPTS] = { 0 };
	struct rdma_cm_id *id[ATTEMPTS] = { 0 };
	int a;

	for (a = 0; a < ATTEMPTS; a++) {
		struct conn_data cd;
		struct rdma_conn_param cp;
		char why[200] = "";

		ch[a] = rdma_create_event_channel();
		if (!ch[a] || rdma_create_id(ch[a], &id[a], NULL, RDMA_PS_TCP)) {
			snprintf(result[a], sizeof(result[a]), "cannot create an rdma_cm id: %s", strerror(errno));
			mark_sent();
			continue;
		}
		if (rdma_resolve_addr(id[a], NULL, (struct sockaddr *)&target, 5000) ||
		    wait_event(ch[a], RDMA_CM_EVENT_ADDR_RESOLVED, why, sizeof(why), 10000) ||
		    rdma_resolve_route(id[a], 5000) ||
		    wait_event(ch[a], RDMA_CM_EVENT_ROUTE_RESOLVED, why, sizeof(why), 10000)) {
			snprintf(result[a], sizeof(result[a]), "could not reach the listener: %s %s", why, strerror(errno));
			mark_sent();
			continue;
		}
		memset(&cd, 0, sizeof(cd));
		cd.magic = a == 1 ? 0xdeadbeefu : magic;
		cd.rank = 0;
		cd.ep_seq = a == 2 ? seq + 1000 : seq;
		cd.token = 0x0123456789abcdefull;
		memset(&cp, 0, sizeof(cp));
		cp.private_data = a == 0 ? NULL : &cd;
		cp.private_data_len = a == 0 ? 0 : sizeof(cd);
		cp.responder_resources = 1;
		cp.initiator_depth = 1;
		cp.retry_count = 7;
		cp.qp_num = 0x1234 + (uint32_t)a; /* no QP: the request never gets that far */
		if (rdma_connect(id[a], &cp)) {
			snprintf(result[a], sizeof(result[a]), "rdma_connect: %s", strerror(errno));
			mark_sent();
			continue;
		}
		mark_sent();
	}
	/* The answers, once the rank processes its listener's events. */
	for (a = 0; a < ATTEMPTS; a++) {
		if (!result[a][0] && id[a])
			wait_event(ch[a], RDMA_CM_EVENT_REJECTED, result[a], sizeof(result[a]), 60000);
		if (id[a])
			rdma_destroy_id(id[a]);
		if (ch[a])
			rdma_destroy_event_channel(ch[a]);
	}
	return arg;
}

/* Called on the last rank once its first endpoint listens: the strangers'
 * requests go out before the ranks connect (which needs this rank's
 * address, published only after this returns). */
static void on_listen(const struct sockaddr *addr, uint32_t m, uint64_t s)
{
	struct timespec until;

	spardl_verbs_listen_hook = NULL;
	memcpy(&target, addr, addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
	magic = m;
	seq = s;
	if (pthread_create(&intruder, NULL, intrude, NULL))
		return;
	started = 1;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 30;
	pthread_mutex_lock(&lock);
	while (sent < ATTEMPTS && pthread_cond_timedwait(&cond, &lock, &until) != ETIMEDOUT)
		;
	pthread_mutex_unlock(&lock);
}

int main(void)
{
	struct spardl_comm *comm = mp_comm_create();
	struct spardl_plan_params pp;
	struct spardl_plan *plan = NULL;
	float *g = malloc(N * sizeof(float));
	int size, call, i, a, ret;

	mp_rank = spardl_comm_rank(comm);
	size = spardl_comm_size(comm);
	if (strcmp(spardl_comm_transport(comm), "verbs")) {
		if (mp_rank == 0)
			printf("SKIP: the communicator runs on %s, not verbs\n", spardl_comm_transport(comm));
		spardl_comm_destroy(comm);
		return 77;
	}
	if (mp_rank == size - 1)
		spardl_verbs_listen_hook = on_listen;
	spardl_plan_params_init(&pp);
	pp.count = N;
	pp.algo = SPARDL_ALGO_DENSE;
	pp.density = 1.0;
	pp.average = 0;
	ret = spardl_plan_create(comm, &pp, &plan);
	mp_check(!ret, "plan_create with strangers at the listener: %s", spardl_last_error());
	for (call = 0; !ret && call < 3; call++) {
		for (i = 0; i < N; i++)
			g[i] = (float)((i * 7 + call * 3 + mp_rank) % 101 - 50);
		ret = spardl_allreduce(plan, g);
		if (!mp_check(!ret, "call %d: %s", call, spardl_last_error()))
			break;
		for (i = 0; i < N; i++) {
			float want = 0;

			for (int w = 0; w < size; w++)
				want += (float)((i * 7 + call * 3 + w) % 101 - 50);
			if (!mp_check(g[i] == want, "call %d: entry %d is %g, want %g", call, i, (double)g[i],
				      (double)want))
				break;
		}
	}
	spardl_plan_destroy(plan);
	if (mp_rank == size - 1) {
		mp_check(started, "the listen hook ran and started the intruder");
		if (started)
			pthread_join(intruder, NULL);
		for (a = 0; started && a < ATTEMPTS; a++) {
			mp_check(!strncmp(result[a], "rejected: ", 10) && strstr(result[a], want_reason[a]),
				 "a stranger with %s: got '%s', want rejected with '%s'", attempt_name[a], result[a],
				 want_reason[a]);
			printf("rank %d: a stranger with %s: %s\n", mp_rank, attempt_name[a], result[a]);
		}
	}
	spardl_comm_destroy(comm);
	free(g);
	printf("rank %d: %d checks, %d failures\n", mp_rank, mp_checks, mp_failures);
	return mp_failures ? 1 : 0;
}
