/* SPDX-License-Identifier: MIT */
/* RDMA verbs transport: RC QPs connected with rdma_cm, RDMA WRITE WITH IMM into memory registered once. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#include "bootstrap_msg.h"
#include "env.h"
#include "log.h"
#include "transport.h"
#include "verbs.h"

#define CONN_MAGIC 0x7370646cu /* "spdl" */
/* Largest single write: a work request's length is 32 bits, and some
 * devices count it signed. */
#define VERBS_MAX_WRITE (UINT64_C(1) << 31)
#define CQ_BATCH 32
/* Receives are re-posted in batches of this many, off the critical path. */
#define REPOST_BATCH 16
#define SLICE_MS 100
#define HUGE_THRESHOLD (4u << 20)
/* Work request ids: receives carry their QP index; writes set SEND_BIT,
 * the QP index from bit 40 and the write's sequence number below. */
#define SEND_BIT (1ULL << 63)
#define SEQ_MASK ((1ULL << 40) - 1)
#define WR_QP(id) ((size_t)(((id) & ~SEND_BIT) >> 40))

struct verbs_tp {
	struct spardl_tp base;
	struct spardl_verbs_choice ch;
	struct ibv_pd *pd;
	struct ibv_device_attr da;
	long qp_timeout, retry_cnt, spin_us;
	uint64_t ep_count; /* endpoints made: the same sequence on every rank */
};

struct verbs_mr {
	struct spardl_tp_mr base;
	struct ibv_mr *mr;
	size_t map_len;
};

struct verbs_rmr {
	struct spardl_tp_rmr base;
	uint64_t addr;
	uint32_t rkey;
};

/* What each side of a connection tells the other in the rdma_cm private
 * data (at most 56 bytes in a request): who it is, which endpoint, the
 * token the accepting side published through the authenticated bootstrap,
 * and its receive region's key, only when the other side writes there. */
#define CONN_HAS_KEY 1u

struct conn_data {
	uint32_t magic;
	int32_t rank;
	uint64_t ep_seq; /* which plan's endpoints, so a late stray is refused */
	uint64_t token;  /* the accepting rank's token for this endpoint */
	uint32_t rkey;
	uint32_t flags;
	uint64_t addr;
	uint64_t len;
};

/* What every rank publishes for an endpoint. */
struct ep_addr {
	struct sockaddr_storage addr;
	uint64_t token;
};

struct vqp {
	int peer;
	unsigned flags; /* SPARDL_TP_PEER_* */
	uint64_t remote_len;
	int active; /* this rank connects (lower rank), the peer accepts */
	int connected;
	int failed; /* its connection failed during setup */
	int gone; /* reported as PEER_GONE */
	struct rdma_cm_id *id;
	struct ibv_qp *qp;
	uint64_t posted, completed, last_signaled;
	int owed; /* receives consumed and not yet re-posted */
	unsigned since_signal;
	uint64_t last_raddr;
	uint32_t last_rkey;
};

struct verbs_ep {
	struct spardl_tp_ep base;
	uint64_t seq;
	uint64_t token;            /* what a peer must present to connect here */
	struct verbs_mr *recv;     /* this rank's receive region */
	const struct ep_addr *all; /* during setup: every rank's published address */
	int refusals;
	struct rdma_event_channel *ech;
	struct rdma_cm_id *listen;
	struct ibv_comp_channel *cch;
	struct ibv_cq *cq;
	unsigned unacked;
	struct vqp *qps;
	int nqp;
	int *qp_of; /* per rank: index in qps, -1 when not a peer */
	int sq_depth, rq_depth, max_inline;
	struct spardl_tp_event *stash;
	int nstash, stash_cap;
	int failed;
};

static struct verbs_tp *vtp(struct spardl_tp *tp)
{
	return (struct verbs_tp *)tp;
}

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -errno;
	return 0;
}

static const char *addr_str(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	char ip[INET6_ADDRSTRLEN] = "?";

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)ss;

		inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
		snprintf(buf, len, "%s:%u", ip, ntohs(in->sin_port));
	} else {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;

		inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
		snprintf(buf, len, "[%s]:%u", ip, ntohs(in6->sin6_port));
	}
	return buf;
}

static int verbs_available(void)
{
	return spardl_verbs_available();
}

/* The bootstrap's address family steers the GID choice. */
static int bootstrap_family(void)
{
	const char *b = spardl_env_str("SPARDL_BOOTSTRAP");

	if (!b || !strncmp(b, "unix:", 5))
		return AF_UNSPEC;
	return b[0] == '[' ? AF_INET6 : AF_INET;
}

/* Local part of open: device, port, protection domain. */
static int open_local(struct verbs_tp *tp)
{
	struct ibv_port_attr pa;
	int ret, fork_state;

	ret = spardl_env_long("SPARDL_VERBS_TIMEOUT", &tp->qp_timeout);
	if (!ret)
		ret = spardl_env_long("SPARDL_VERBS_RETRY_CNT", &tp->retry_cnt);
	if (!ret)
		ret = spardl_env_long("SPARDL_VERBS_SPIN", &tp->spin_us);
	if (!ret)
		ret = spardl_verbs_choose(bootstrap_family(), &tp->ch);
	if (ret)
		return ret;
	if (ibv_query_device(tp->ch.ctx, &tp->da))
		return spardl_error(-errno, "verbs: ibv_query_device(%s) failed: %s", tp->ch.dev, strerror(errno));
	if (ibv_query_port(tp->ch.ctx, (uint8_t)tp->ch.port, &pa))
		return spardl_error(-errno, "verbs: ibv_query_port(%s, %d) failed: %s", tp->ch.dev, tp->ch.port,
				    strerror(errno));
	/* Longer messages are split by the core into writes of this size. */
	tp->base.max_write = pa.max_msg_sz && pa.max_msg_sz < VERBS_MAX_WRITE ? pa.max_msg_sz : VERBS_MAX_WRITE;
	tp->pd = ibv_alloc_pd(tp->ch.ctx);
	if (!tp->pd)
		return spardl_error(-(errno ? errno : ENOMEM), "verbs: ibv_alloc_pd(%s) failed: %s", tp->ch.dev,
				    strerror(errno));
	ret = set_nonblock(tp->ch.ctx->async_fd);
	if (ret)
		return spardl_error(ret, "verbs: cannot make %s's async event fd non-blocking", tp->ch.dev);
	/* Memory registered for RDMA must not be copied-on-write into a
	 * forked child. Kernels since 5.13 keep it safe on their own. */
	fork_state = ibv_is_fork_initialized();
	if (fork_state == IBV_FORK_DISABLED)
		SPARDL_INFO("verbs: this kernel needs RDMAV_FORK_SAFE=1 (or ibv_fork_init before any verbs call) if the process forks after creating plans");
	return 0;
}

static int verbs_open(struct spardl_bootstrap *bs, int timeout_ms, struct spardl_tp **tp_out)
{
	struct verbs_tp *tp = calloc(1, sizeof(*tp));
	char a[80];
	int ret;

	ret = tp ? open_local(tp) : spardl_error(-ENOMEM, "verbs: out of memory");
	/* Every rank learns whether every rank could open its device. */
	ret = spardl_bootstrap_exchange(bs, ret, "open its RDMA device", NULL, NULL, 0);
	if (ret) {
		if (tp && tp->pd)
			ibv_dealloc_pd(tp->pd);
		free(tp);
		return ret;
	}
	tp->base.bs = bs;
	tp->base.rank = spardl_bootstrap_rank(bs);
	tp->base.size = spardl_bootstrap_size(bs);
	tp->base.timeout_ms = timeout_ms;
	spardl_log(tp->base.rank == 0 ? SPARDL_LOG_INFO : SPARDL_LOG_DEBUG, "verbs: %s port %d, %s, address %s, MTU %d: %s", tp->ch.dev, tp->ch.port,
		    tp->ch.link_layer == IBV_LINK_LAYER_ETHERNET ? "RoCE" : "InfiniBand",
		    addr_str(&tp->ch.addr, a, sizeof(a)), tp->ch.mtu, tp->ch.why);
	*tp_out = &tp->base;
	return 0;
}

static void verbs_close(struct spardl_tp *base)
{
	struct verbs_tp *tp = vtp(base);

	if (!tp)
		return;
	if (tp->pd)
		ibv_dealloc_pd(tp->pd);
	free(tp);
}

static int reg_error(struct verbs_tp *tp, size_t len, int err)
{
	struct rlimit rl;

	if ((err == ENOMEM || err == EPERM || err == EAGAIN) && !getrlimit(RLIMIT_MEMLOCK, &rl) &&
	    rl.rlim_cur != RLIM_INFINITY)
		return spardl_error(-ENOMEM,
				    "verbs: registering %zu bytes on %s failed (%s): the locked-memory limit is %llu KiB; raise it (`ulimit -l unlimited`, memlock in /etc/security/limits.conf, LimitMEMLOCK=infinity for systemd, --ulimit memlock=-1 for docker)",
				    len, tp->ch.dev, strerror(err), (unsigned long long)rl.rlim_cur / 1024);
	return spardl_error(-err, "verbs: ibv_reg_mr of %zu bytes on %s failed: %s", len, tp->ch.dev, strerror(err));
}

static int verbs_mem_alloc(struct spardl_tp *base, size_t len, enum spardl_mem_type type, unsigned access,
			   struct spardl_tp_mr **mr_out)
{
	struct verbs_tp *tp = vtp(base);
	struct verbs_mr *mr;
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);
	int flags = 0, ret;

	if (type != SPARDL_MEM_HOST)
		return spardl_tp_no_mem_alloc(base, len, type, access, mr_out);
	mr = calloc(1, sizeof(*mr));
	if (!mr)
		return spardl_error(-ENOMEM, "verbs: out of memory");
	mr->map_len = len ? (len + pg - 1) / pg * pg : pg;
	mr->base.addr = mmap(NULL, mr->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mr->base.addr == MAP_FAILED) {
		ret = spardl_error(-errno, "verbs: cannot map %zu bytes: %s", mr->map_len, strerror(errno));
		free(mr);
		return ret;
	}
	if (mr->map_len >= HUGE_THRESHOLD)
		(void)madvise(mr->base.addr, mr->map_len, MADV_HUGEPAGE);
	/* Touch before registering: pinning and first-touch both happen now,
	 * never in a call. */
	memset(mr->base.addr, 0, mr->map_len);
	if (access & SPARDL_ACCESS_REMOTE_WRITE)
		flags |= IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE;
	mr->mr = ibv_reg_mr(tp->pd, mr->base.addr, mr->map_len, flags);
	if (!mr->mr) {
		ret = reg_error(tp, mr->map_len, errno ? errno : ENOMEM);
		munmap(mr->base.addr, mr->map_len);
		free(mr);
		return ret;
	}
	mr->base.len = len;
	mr->base.alloc_len = mr->map_len;
	mr->base.mem_type = type;
	mr->base.access = access;
	mr->base.registered = 1;
	*mr_out = &mr->base;
	return 0;
}

static void verbs_mem_free(struct spardl_tp *tp, struct spardl_tp_mr *base)
{
	struct verbs_mr *mr = (struct verbs_mr *)base;

	if (!mr)
		return;
	if (mr->mr && ibv_dereg_mr(mr->mr))
		SPARDL_WARN("verbs: ibv_dereg_mr failed: %s", strerror(errno));
	munmap(mr->base.addr, mr->map_len);
	free(mr);
}

/* ------------------------------------------------------------------ */
/* Endpoints: one RC QP per peer the plan names                        */
/* ------------------------------------------------------------------ */

static struct verbs_ep *vep(struct spardl_tp_ep *ep)
{
	return (struct verbs_ep *)ep;
}

static int post_recvs(struct verbs_ep *ep, struct vqp *q, int n)
{
	struct ibv_recv_wr wr = { 0 }, *bad;
	int i, err;

	/* Zero-length receives: a WRITE WITH IMM only needs one to deliver
	 * its immediate; the data lands by RDMA. */
	wr.wr_id = (uint64_t)(q - ep->qps);
	for (i = 0; i < n; i++) {
		err = ibv_post_recv(q->qp, &wr, &bad);
		if (err)
			return spardl_error_quiet(-err, "verbs: ibv_post_recv on the QP to rank %d failed: %s", q->peer,
						  strerror(err));
	}
	return 0;
}

static int make_qp(struct verbs_ep *ep, struct vqp *q, struct rdma_cm_id *id)
{
	struct verbs_tp *tp = vtp(ep->base.tp);
	struct ibv_qp_init_attr at;
	int ret;

	memset(&at, 0, sizeof(at));
	at.qp_type = IBV_QPT_RC;
	at.send_cq = ep->cq;
	at.recv_cq = ep->cq;
	at.cap.max_send_wr = (uint32_t)ep->sq_depth;
	at.cap.max_recv_wr = (uint32_t)ep->rq_depth;
	at.cap.max_send_sge = 1;
	at.cap.max_recv_sge = 1;
	at.cap.max_inline_data = (uint32_t)ep->max_inline;
	at.sq_sig_all = 0;
	if (rdma_create_qp(id, tp->pd, &at)) {
		/* Some devices take no inline data: try again without. */
		at.cap.max_inline_data = 0;
		if (rdma_create_qp(id, tp->pd, &at))
			return spardl_error(-errno, "verbs: creating the QP to rank %d on %s failed: %s (send %d, recv %d WRs)",
					    q->peer, tp->ch.dev, strerror(errno), ep->sq_depth, ep->rq_depth);
	}
	if ((int)at.cap.max_inline_data < ep->max_inline)
		ep->max_inline = (int)at.cap.max_inline_data;
	q->id = id;
	q->qp = id->qp;
	id->context = q;
	ret = post_recvs(ep, q, ep->rq_depth);
	if (ret)
		return spardl_error(ret, "%s", spardl_last_error());
	return 0;
}

static struct rdma_conn_param conn_param(struct verbs_tp *tp, const struct conn_data *cd)
{
	struct rdma_conn_param p;

	memset(&p, 0, sizeof(p));
	p.private_data = cd;
	p.private_data_len = cd ? sizeof(*cd) : 0;
	p.responder_resources = 1;
	p.initiator_depth = 1;
	p.retry_count = (uint8_t)tp->retry_cnt;
	p.rnr_retry_count = 7; /* receives are always posted ahead; 7 = retry forever */
	return p;
}

/* A QP's state change, in the plan's trace. */
static void trace_qp(struct spardl_trace_buf *b, const struct vqp *q, unsigned state)
{
	struct spardl_trace_rec *r = spardl_trace_ev(b, SPARDL_TR_QP, q->peer, state);

	if (r)
		r->qpn = q->qp ? q->qp->qp_num : 0;
}

static struct vqp *qp_by_peer(struct verbs_ep *ep, int peer)
{
	return peer >= 0 && peer < ep->base.tp->size && ep->qp_of[peer] >= 0 ? &ep->qps[ep->qp_of[peer]] : NULL;
}

/* Connections that are up, or failed, during setup. */
static int settled_count(struct verbs_ep *ep)
{
	int i, n = 0;

	for (i = 0; i < ep->nqp; i++)
		n += ep->qps[i].connected || ep->qps[i].failed;
	return n;
}

static const char *cm_event_hint(enum rdma_cm_event_type t)
{
	switch (t) {
	case RDMA_CM_EVENT_ADDR_ERROR:
		return "the peer's address is not reachable from this device; check the IP configuration of the RDMA ports (SPARDL_VERBS_DEVICE, SPARDL_VERBS_GID_INDEX)";
	case RDMA_CM_EVENT_ROUTE_ERROR:
		return "no route to the peer over this device";
	case RDMA_CM_EVENT_UNREACHABLE:
	case RDMA_CM_EVENT_CONNECT_ERROR:
		return "the peer did not answer the connection; is it alive, and on the same fabric?";
	case RDMA_CM_EVENT_REJECTED:
		return "the peer refused the connection";
	default:
		return "";
	}
}

/* This rank's side of a connection's private data. */
static void conn_fill(struct verbs_ep *ep, const struct vqp *q, uint64_t token, struct conn_data *cd)
{
	struct verbs_tp *tp = vtp(ep->base.tp);

	memset(cd, 0, sizeof(*cd));
	cd->magic = CONN_MAGIC;
	cd->rank = tp->base.rank;
	cd->ep_seq = ep->seq;
	cd->token = token;
	/* The key goes only to a peer that writes here. */
	if ((q->flags & SPARDL_TP_PEER_WRITES_HERE) && ep->recv) {
		cd->flags = CONN_HAS_KEY;
		cd->rkey = ep->recv->mr->rkey;
		cd->addr = (uint64_t)(uintptr_t)ep->recv->base.addr;
		cd->len = ep->recv->map_len;
	}
}

/* The peer's receive region from its private data, when this rank writes
 * there: checked against the size its schedule says it has. */
static int conn_take_key(struct verbs_ep *ep, struct vqp *q, const struct conn_data *cd)
{
	struct verbs_rmr *rmr;

	if (!(q->flags & SPARDL_TP_PEER_WRITTEN))
		return 0;
	if (!(cd->flags & CONN_HAS_KEY) || cd->len < q->remote_len || cd->addr + cd->len < cd->addr)
		return spardl_error(-EPROTO,
				    "verbs: rank %d sent no usable key for its receive region (%llu bytes; this plan writes %llu)",
				    q->peer, (unsigned long long)cd->len, (unsigned long long)q->remote_len);
	rmr = calloc(1, sizeof(*rmr));
	if (!rmr)
		return spardl_error(-ENOMEM, "verbs: out of memory");
	rmr->base.peer = q->peer;
	rmr->base.len = cd->len;
	rmr->addr = cd->addr;
	rmr->rkey = cd->rkey;
	ep->base.remote[q->peer] = &rmr->base;
	return 0;
}

/* The connecting side's IP must be the one that rank published. */
static int same_host(const struct sockaddr *a, const struct sockaddr_storage *b)
{
	if (!a || a->sa_family != b->ss_family)
		return 0;
	if (a->sa_family == AF_INET)
		return !memcmp(&((const struct sockaddr_in *)a)->sin_addr, &((const struct sockaddr_in *)b)->sin_addr,
			       sizeof(struct in_addr));
	if (a->sa_family == AF_INET6)
		return !memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
			       &((const struct sockaddr_in6 *)b)->sin6_addr, sizeof(struct in6_addr));
	return 0;
}

/* Refuse a connection request, logging why (the first few per endpoint:
 * a flood of strangers must not flood the log). */
static void refuse(struct verbs_ep *ep, struct rdma_cm_event *ev, const char *why)
{
	char a[80];

	if (++ep->refusals <= 10)
		SPARDL_WARN("verbs: refused a connection from %s: %s%s",
			    addr_str((struct sockaddr_storage *)rdma_get_peer_addr(ev->id), a, sizeof(a)), why,
			    ep->refusals == 10 ? " (further refusals are not logged)" : "");
	if (rdma_reject(ev->id, why, (uint8_t)(strlen(why) + 1)))
		SPARDL_DEBUG("verbs: rdma_reject failed: %s", strerror(errno));
}

/* Handle one rdma_cm event during connection setup. Returns 1 when the
 * event's id is to be destroyed once the event is acked. */
static int setup_event(struct verbs_ep *ep, struct rdma_cm_event *ev)
{
	struct verbs_tp *tp = vtp(ep->base.tp);
	struct vqp *q = ev->id->context;
	struct conn_data me;
	struct rdma_conn_param cp;
	char a[80];
	int ret;

	switch (ev->event) {
	case RDMA_CM_EVENT_ADDR_RESOLVED: {
		uint8_t t = (uint8_t)tp->qp_timeout;

		if (rdma_set_option(ev->id, RDMA_OPTION_ID, RDMA_OPTION_ID_ACK_TIMEOUT, &t, sizeof(t)))
			SPARDL_DEBUG("verbs: cannot set the ACK timeout: %s", strerror(errno));
		if (rdma_resolve_route(ev->id, 2000))
			return spardl_error(-errno, "verbs: rdma_resolve_route to rank %d failed: %s", q->peer,
					    strerror(errno));
		return 0;
	}
	case RDMA_CM_EVENT_ROUTE_RESOLVED:
		ret = make_qp(ep, q, ev->id);
		if (ret)
			return ret;
		conn_fill(ep, q, ep->all[q->peer].token, &me);
		cp = conn_param(tp, &me);
		if (rdma_connect(ev->id, &cp))
			return spardl_error(-errno, "verbs: rdma_connect to rank %d failed: %s", q->peer, strerror(errno));
		return 0;
	case RDMA_CM_EVENT_CONNECT_REQUEST: {
		const struct conn_data *cdp = ev->param.conn.private_data;
		struct conn_data cd;
		struct vqp *from = NULL;
		const char *why = NULL;

		memset(&cd, 0, sizeof(cd));
		if (cdp && ev->param.conn.private_data_len >= sizeof(cd))
			memcpy(&cd, cdp, sizeof(cd));
		if (cd.magic != CONN_MAGIC)
			why = "not a spardl connection";
		else if (cd.ep_seq != ep->seq)
			why = "another plan";
		else if (!spardl_bs_equal((const uint8_t *)&cd.token, (const uint8_t *)&ep->token, sizeof(ep->token)))
			why = "a wrong endpoint token (another job, or not a rank of this one)";
		else if (!(from = qp_by_peer(ep, cd.rank)) || from->active || from->qp)
			why = "a rank this plan does not expect";
		else if (!same_host(rdma_get_peer_addr(ev->id), &ep->all[cd.rank].addr))
			why = "an address other than the one that rank published";
		if (why) {
			refuse(ep, ev, why);
			return 1;
		}
		ret = conn_take_key(ep, from, &cd);
		if (ret) {
			refuse(ep, ev, "no usable key for its receive region");
			from->failed = 1;
			return ret;
		}
		ret = make_qp(ep, from, ev->id);
		if (ret)
			return ret;
		conn_fill(ep, from, 0, &me);
		cp = conn_param(tp, &me);
		if (rdma_accept(ev->id, &cp))
			return spardl_error(-errno, "verbs: rdma_accept from rank %d failed: %s", from->peer,
					    strerror(errno));
		return 0;
	}
	case RDMA_CM_EVENT_ESTABLISHED:
		if (q->active) {
			/* The accepting side's answer carries its key. */
			const struct conn_data *cdp = ev->param.conn.private_data;
			struct conn_data cd;

			memset(&cd, 0, sizeof(cd));
			if (cdp && ev->param.conn.private_data_len >= sizeof(cd))
				memcpy(&cd, cdp, sizeof(cd));
			if (cd.magic != CONN_MAGIC || cd.rank != q->peer || cd.ep_seq != ep->seq)
				return spardl_error(-EPROTO, "verbs: rank %d answered the connection with data that is not this plan's",
						    q->peer);
			ret = conn_take_key(ep, q, &cd);
			if (ret)
				return ret;
		}
		q->connected = 1;
		trace_qp(ep->base.tp->trace, q, SPARDL_TR_QP_CONNECTED);
		return 0;
	case RDMA_CM_EVENT_REJECTED: {
		/* The peer's reason, not trusted to end in a NUL: its length bounds it. */
		const char *why = ev->param.conn.private_data_len ? ev->param.conn.private_data : NULL;
		int wlen = ev->param.conn.private_data_len < 100 ? ev->param.conn.private_data_len : 100;

		return spardl_error(-ECONNREFUSED, "verbs: rank %d at %s refused the connection%s%.*s", q->peer,
				    addr_str(&ep->all[q->peer].addr, a, sizeof(a)), why ? ": " : " (status ", why ? wlen : 0,
				    why ? why : "");
	}
	case RDMA_CM_EVENT_ADDR_ERROR:
	case RDMA_CM_EVENT_ROUTE_ERROR:
	case RDMA_CM_EVENT_UNREACHABLE:
	case RDMA_CM_EVENT_CONNECT_ERROR:
		return spardl_error(-EHOSTUNREACH, "verbs: connecting to rank %d at %s: %s (status %d); %s",
				    q ? q->peer : -1, q ? addr_str(&ep->all[q->peer].addr, a, sizeof(a)) : "?",
				    rdma_event_str(ev->event), ev->status, cm_event_hint(ev->event));
	case RDMA_CM_EVENT_DISCONNECTED:
	case RDMA_CM_EVENT_DEVICE_REMOVAL:
		return spardl_error(-ECONNRESET, "verbs: %s from rank %d during connection setup",
				    rdma_event_str(ev->event), q ? q->peer : -1);
	default:
		SPARDL_DEBUG("verbs: rdma_cm event %s ignored during setup", rdma_event_str(ev->event));
		return 0;
	}
}

static void destroy_listener(struct verbs_ep *ep)
{
	if (ep->listen && rdma_destroy_id(ep->listen))
		SPARDL_WARN("verbs: rdma_destroy_id of the listener failed: %s", strerror(errno));
	ep->listen = NULL;
}

static void verbs_ep_destroy(struct spardl_tp_ep *base)
{
	struct verbs_ep *ep = vep(base);
	int i;

	if (!ep)
		return;
	for (i = 0; ep->qps && i < ep->nqp; i++) {
		struct vqp *q = &ep->qps[i];

		/* Teardown goes on whatever fails; failures are logged. */
		if (q->connected)
			trace_qp(ep->base.trace, q, SPARDL_TR_QP_CLOSED);
		if (q->connected && rdma_disconnect(q->id) && errno != EINVAL)
			SPARDL_DEBUG("verbs: rdma_disconnect from rank %d: %s", q->peer, strerror(errno));
		if (q->qp)
			rdma_destroy_qp(q->id);
		if (q->id && rdma_destroy_id(q->id))
			SPARDL_WARN("verbs: rdma_destroy_id for rank %d failed: %s", q->peer, strerror(errno));
	}
	destroy_listener(ep);
	if (ep->cq) {
		if (ep->unacked)
			ibv_ack_cq_events(ep->cq, ep->unacked);
		if (ibv_destroy_cq(ep->cq))
			SPARDL_WARN("verbs: ibv_destroy_cq failed: %s", strerror(errno));
	}
	if (ep->cch && ibv_destroy_comp_channel(ep->cch))
		SPARDL_WARN("verbs: ibv_destroy_comp_channel failed: %s", strerror(errno));
	if (ep->ech)
		rdma_destroy_event_channel(ep->ech); /* returns nothing to check */
	if (ep->base.remote && ep->base.tp)
		for (i = 0; i < ep->base.tp->size; i++)
			free(ep->base.remote[i]);
	free(ep->base.remote);
	free(ep->qps);
	free(ep->qp_of);
	free(ep->stash);
	free(ep);
}

void (*spardl_verbs_listen_hook)(const struct sockaddr *addr, uint32_t magic, uint64_t seq);

/* Local part of ep_create: queues, channels and a listener on an ephemeral
 * port of the chosen address, and what to publish. */
static int ep_setup(struct verbs_ep *ep, const struct spardl_tp_peer *peers, int npeers, uint32_t max_notify,
		    struct ep_addr *mine)
{
	struct spardl_tp *base = ep->base.tp;
	struct verbs_tp *tp = vtp(base);
	int ret, i, cqe;

	ep->nqp = npeers;
	ep->qps = calloc((size_t)(npeers ? npeers : 1), sizeof(*ep->qps));
	ep->qp_of = malloc((size_t)base->size * sizeof(int));
	ep->base.remote = calloc((size_t)base->size, sizeof(*ep->base.remote));
	ep->rq_depth = (int)(max_notify + 8 + REPOST_BATCH < (uint32_t)tp->da.max_qp_wr ?
				     max_notify + 8 + REPOST_BATCH :
				     (uint32_t)tp->da.max_qp_wr);
	ep->sq_depth = tp->da.max_qp_wr < 256 ? tp->da.max_qp_wr : 256;
	ep->max_inline = 64;
	ep->stash_cap = (int)max_notify + CQ_BATCH + 8 + npeers;
	ep->stash = calloc((size_t)ep->stash_cap, sizeof(*ep->stash));
	if (!ep->qps || !ep->qp_of || !ep->stash || !ep->base.remote)
		return spardl_error(-ENOMEM, "verbs: out of memory for an endpoint of %d peers", npeers);
	for (i = 0; i < base->size; i++)
		ep->qp_of[i] = -1;
	for (i = 0; i < npeers; i++) {
		if (peers[i].rank < 0 || peers[i].rank >= base->size || peers[i].rank == base->rank)
			return spardl_error(-EINVAL, "verbs: internal: peer %d of an endpoint", peers[i].rank);
		ep->qps[i].peer = peers[i].rank;
		ep->qps[i].flags = peers[i].flags;
		ep->qps[i].remote_len = peers[i].remote_len;
		ep->qps[i].active = base->rank < peers[i].rank;
		ep->qp_of[peers[i].rank] = i;
	}
	ret = spardl_bs_random(&ep->token, sizeof(ep->token));
	if (ret)
		return spardl_error(ret, "verbs: no random bytes from the kernel");
	ep->ech = rdma_create_event_channel();
	if (!ep->ech)
		return spardl_error(-errno, "verbs: rdma_create_event_channel failed: %s%s", strerror(errno),
				    errno == EMFILE || errno == ENFILE ? " (raise the open file limit, ulimit -n)" :
				    errno == ENOENT || errno == ENODEV ? " (is the rdma_ucm module loaded?)" :
									 "");
	ep->cch = ibv_create_comp_channel(tp->ch.ctx);
	if (!ep->cch)
		return spardl_error(-errno, "verbs: ibv_create_comp_channel failed: %s", strerror(errno));
	if ((ret = set_nonblock(ep->ech->fd)) || (ret = set_nonblock(ep->cch->fd)))
		return spardl_error(ret, "verbs: cannot make event channels non-blocking");
	cqe = npeers * (ep->sq_depth + ep->rq_depth) + 16;
	if (cqe > tp->da.max_cqe)
		cqe = tp->da.max_cqe;
	ep->cq = ibv_create_cq(tp->ch.ctx, cqe, NULL, ep->cch, 0);
	if (!ep->cq)
		return spardl_error(-errno, "verbs: ibv_create_cq(%d) on %s failed: %s", cqe, tp->ch.dev, strerror(errno));
	if (rdma_create_id(ep->ech, &ep->listen, NULL, RDMA_PS_TCP))
		return spardl_error(-errno, "verbs: rdma_create_id failed: %s", strerror(errno));
	memset(mine, 0, sizeof(*mine));
	mine->addr = tp->ch.addr;
	if (rdma_bind_addr(ep->listen, (struct sockaddr *)&mine->addr) || rdma_listen(ep->listen, 64)) {
		char a[80];

		return spardl_error(-errno, "verbs: cannot listen on %s (%s): %s", addr_str(&mine->addr, a, sizeof(a)),
				    tp->ch.dev, strerror(errno));
	}
	if (mine->addr.ss_family == AF_INET)
		((struct sockaddr_in *)&mine->addr)->sin_port = rdma_get_src_port(ep->listen);
	else
		((struct sockaddr_in6 *)&mine->addr)->sin6_port = rdma_get_src_port(ep->listen);
	mine->token = ep->token;
	if (spardl_verbs_listen_hook)
		spardl_verbs_listen_hook((const struct sockaddr *)&mine->addr, CONN_MAGIC, ep->seq);
	return 0;
}

/* The lower rank of each pair connects; every rank waits until all its
 * connections are up (or one fails, or the timeout). */
static int ep_connect(struct verbs_ep *ep)
{
	struct spardl_tp *base = ep->base.tp;
	struct verbs_tp *tp = vtp(base);
	uint64_t deadline;
	int ret, i, first = 0;

	for (i = 0; i < ep->nqp; i++) {
		struct vqp *q = &ep->qps[i];
		struct sockaddr_storage src = tp->ch.addr;

		if (!q->active)
			continue;
		if (ep->all[q->peer].addr.ss_family != AF_INET && ep->all[q->peer].addr.ss_family != AF_INET6)
			return spardl_error(-EPROTO, "verbs: rank %d published no usable address", q->peer);
		if (rdma_create_id(ep->ech, &q->id, q, RDMA_PS_TCP) ||
		    rdma_resolve_addr(q->id, (struct sockaddr *)&src, (struct sockaddr *)&ep->all[q->peer].addr, 2000))
			return spardl_error(-errno, "verbs: resolving rank %d's address failed: %s", q->peer, strerror(errno));
	}
	/* A failed connection does not end the loop: the others are still
	 * made, so no peer waits for this rank until its timeout, and the
	 * status exchange after this reports the first error to every rank. */
	deadline = now_ms() + (uint64_t)base->timeout_ms;
	while (settled_count(ep) < ep->nqp) {
		struct pollfd pfd = { .fd = ep->ech->fd, .events = POLLIN };
		struct rdma_cm_event *ev;
		int64_t left = (int64_t)(deadline - now_ms());

		if (left <= 0) {
			char missing[256] = "";

			if (first)
				return first;
			for (i = 0; i < ep->nqp; i++)
				if (!ep->qps[i].connected)
					snprintf(missing + strlen(missing), sizeof(missing) - strlen(missing), " %d",
						 ep->qps[i].peer);
			return spardl_error(-ETIMEDOUT, "verbs: connections to ranks%s not established within %.1f s",
					    missing, base->timeout_ms / 1000.0);
		}
		if (poll(&pfd, 1, (int)(left < SLICE_MS ? left : SLICE_MS)) < 0 && errno != EINTR)
			return spardl_error(-errno, "verbs: poll failed: %s", strerror(errno));
		while (!rdma_get_cm_event(ep->ech, &ev)) {
			struct rdma_cm_id *id = ev->id;
			struct vqp *q = id->context;

			ret = setup_event(ep, ev);
			if (rdma_ack_cm_event(ev))
				SPARDL_WARN("verbs: rdma_ack_cm_event failed: %s", strerror(errno));
			if (ret == 1) {
				rdma_destroy_id(id);
				ret = 0;
			}
			if (ret < 0) {
				if (q)
					q->failed = 1;
				if (!first)
					first = ret;
			}
		}
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return spardl_error(-errno, "verbs: rdma_get_cm_event failed: %s", strerror(errno));
	}
	if (first)
		return first;
	/* Every connection is up: nobody else may connect to this endpoint. */
	destroy_listener(ep);
	if (ibv_req_notify_cq(ep->cq, 0))
		return spardl_error(-errno, "verbs: ibv_req_notify_cq failed: %s", strerror(errno));
	return 0;
}

static int verbs_ep_create(struct spardl_tp *base, const struct spardl_tp_peer *peers, int npeers,
			   uint32_t max_notify, struct spardl_tp_mr *recv, struct spardl_tp_ep **ep_out)
{
	struct verbs_tp *tp = vtp(base);
	struct verbs_ep *ep = calloc(1, sizeof(*ep));
	struct ep_addr mine, *all = calloc((size_t)base->size, sizeof(*all));
	int ret;

	memset(&mine, 0, sizeof(mine));
	if (ep) {
		ep->base.tp = base;
		/* Plans are created collectively in the same order on every rank. */
		ep->seq = ++tp->ep_count;
		ep->recv = (struct verbs_mr *)recv;
	}
	if (!ep || !all)
		ret = spardl_error(-ENOMEM, "verbs: out of memory for an endpoint");
	else
		ret = ep_setup(ep, peers, npeers, max_notify, &mine);
	/* Addresses and tokens travel through the (authenticated) bootstrap;
	 * keys only over the connections, to the ranks that write there. */
	ret = spardl_bootstrap_exchange(base->bs, ret, "create its verbs endpoint", &mine, all, sizeof(mine));
	if (!ret) {
		ep->all = all;
		ret = ep_connect(ep);
		ep->all = NULL;
	}
	/* All ranks agree that every connection is up, or all fail. */
	ret = spardl_bootstrap_exchange(base->bs, ret, "connect the plan's peers over verbs", NULL, NULL, 0);
	free(all);
	if (ret) {
		verbs_ep_destroy(ep ? &ep->base : NULL);
		return ret;
	}
	SPARDL_DEBUG("verbs: %d QPs up (send %d, receive %d WRs, inline %d B)", npeers, ep->sq_depth, ep->rq_depth,
		     ep->max_inline);
	*ep_out = &ep->base;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Data path                                                           */
/* ------------------------------------------------------------------ */

static const char *wc_hint(enum ibv_wc_status s)
{
	switch (s) {
	case IBV_WC_RETRY_EXC_ERR:
		return "the peer stopped answering: it probably died, or the path broke (SPARDL_VERBS_TIMEOUT and SPARDL_VERBS_RETRY_CNT set how long to try)";
	case IBV_WC_RNR_RETRY_EXC_ERR:
		return "the peer had no receive posted";
	case IBV_WC_REM_ACCESS_ERR:
		return "the peer rejected the remote address or key: do all ranks run the same plans?";
	case IBV_WC_WR_FLUSH_ERR:
		return "the QP had already failed (an earlier error or a disconnect)";
	case IBV_WC_LOC_PROT_ERR:
	case IBV_WC_LOC_LEN_ERR:
		return "a local buffer was not registered as expected (internal error)";
	default:
		return "see the device's documentation for the vendor error";
	}
}

static int wc_error(struct verbs_ep *ep, const struct ibv_wc *wc)
{
	struct verbs_tp *tp = vtp(ep->base.tp);
	int recv = !(wc->wr_id & SEND_BIT);
	uint64_t qi = recv ? wc->wr_id : WR_QP(wc->wr_id);
	int peer = qi < (uint64_t)ep->nqp ? ep->qps[qi].peer : -1;

	ep->failed = 1;
	if (!recv && wc->status == IBV_WC_WR_FLUSH_ERR && qi < (uint64_t)ep->nqp && ep->qps[qi].gone)
		return spardl_error_quiet(-ECONNRESET,
					  "verbs: rank %d disconnected (it exited or its call failed) before this rank's writes to it completed",
					  peer);
	return spardl_error_quiet(wc->status == IBV_WC_WR_FLUSH_ERR || wc->status == IBV_WC_RETRY_EXC_ERR ?
					  -ECONNRESET :
					  -EIO,
				  "verbs: %s with rank %d failed on %s port %d, QP %u: %s (vendor error 0x%x); %s",
				  recv ? "receive" : "write", peer, tp->ch.dev, tp->ch.port,
				  wc->qp_num, ibv_wc_status_str(wc->status), wc->vendor_err, wc_hint(wc->status));
}

static int stash_push(struct verbs_ep *ep, const struct spardl_tp_event *e)
{
	if (ep->nstash == ep->stash_cap)
		return spardl_error_quiet(-EOVERFLOW, "verbs: more notifications in flight than planned (%d)",
					  ep->stash_cap);
	ep->stash[ep->nstash++] = *e;
	return 0;
}

/* A peer's QP is gone (disconnected, or flushed after it vanished): report
 * it once; the executor decides whether that peer was still needed. */
static int peer_gone(struct verbs_ep *ep, struct vqp *q)
{
	struct spardl_tp_event e = { .type = SPARDL_TP_EV_PEER_GONE, .peer = q->peer };

	if (q->gone)
		return 0;
	q->gone = 1;
	if (q->qp)
		trace_qp(ep->base.trace, q, SPARDL_TR_QP_ERROR);
	/* The peer's side is gone, but a user QP stays up until we move it
	 * to the error state: do so, so that writes still in flight to it
	 * complete (flushed) instead of waiting out their retries. */
	if (q->connected && q->id && rdma_disconnect(q->id) && errno != EINVAL)
		SPARDL_DEBUG("verbs: rdma_disconnect from rank %d: %s", q->peer, strerror(errno));
	q->connected = 0;
	return stash_push(ep, &e);
}

/* Reap completions: notifications go to ev (up to max) or the stash, send
 * completions advance their QP's count. Returns notifications put in ev. */
static int reap(struct verbs_ep *ep, struct spardl_tp_event *ev, int max)
{
	struct ibv_wc wc[CQ_BATCH];
	int n, i, got = 0, ret;

	n = ibv_poll_cq(ep->cq, CQ_BATCH, wc);
	if (n < 0)
		return spardl_error_quiet(-EIO, "verbs: ibv_poll_cq failed");
	for (i = 0; i < n; i++) {
		int recv = !(wc[i].wr_id & SEND_BIT);

		if (wc[i].status != IBV_WC_SUCCESS) {
			/* Flushed receives: the QP died with its peer. */
			if (recv && wc[i].status == IBV_WC_WR_FLUSH_ERR) {
				ret = peer_gone(ep, &ep->qps[wc[i].wr_id]);
				if (ret)
					return ret;
				continue;
			}
			return wc_error(ep, &wc[i]);
		}
		if (wc[i].opcode == IBV_WC_RECV_RDMA_WITH_IMM) {
			struct vqp *q = &ep->qps[wc[i].wr_id];
			struct spardl_tp_event e = { .type = SPARDL_TP_EV_NOTIFY, .peer = q->peer,
						     .imm = ntohl(wc[i].imm_data), .len = wc[i].byte_len };

			if (++q->owed >= REPOST_BATCH) {
				ret = post_recvs(ep, q, q->owed);
				if (ret)
					return ret;
				q->owed = 0;
			}
			if (got < max) {
				ev[got++] = e;
			} else {
				ret = stash_push(ep, &e);
				if (ret)
					return ret;
			}
		} else if (!recv) {
			struct vqp *q = &ep->qps[WR_QP(wc[i].wr_id)];

			q->completed = wc[i].wr_id & SEQ_MASK;
			spardl_trace_write(ep->base.trace, SPARDL_TR_DONE, q->peer, wc[i].qp_num, wc[i].wr_id, 0, 0);
		}
	}
	return got;
}

static int take_stash(struct verbs_ep *ep, struct spardl_tp_event *ev, int max)
{
	int n = ep->nstash < max ? ep->nstash : max;

	if (!n)
		return 0;
	memcpy(ev, ep->stash, (size_t)n * sizeof(*ev));
	memmove(ep->stash, ep->stash + n, (size_t)(ep->nstash - n) * sizeof(*ev));
	ep->nstash -= n;
	return n;
}

/* Events besides completions: a disconnect becomes a PEER_GONE event;
 * fatal async errors fail the endpoint. */
static int side_events(struct verbs_ep *ep)
{
	struct verbs_tp *tp = vtp(ep->base.tp);
	struct rdma_cm_event *cev;
	struct ibv_async_event aev;
	int ret;

	while (!rdma_get_cm_event(ep->ech, &cev)) {
		struct vqp *q = cev->id->context;
		enum rdma_cm_event_type t = cev->event;

		if (t == RDMA_CM_EVENT_CONNECT_REQUEST) {
			/* Queued before the listener went: every peer is
			 * connected, so this one is late or a stranger. */
			struct rdma_cm_id *id = cev->id;

			refuse(ep, cev, "the endpoint is complete; a late or stray connection");
			if (rdma_ack_cm_event(cev))
				SPARDL_WARN("verbs: rdma_ack_cm_event failed: %s", strerror(errno));
			if (rdma_destroy_id(id))
				SPARDL_WARN("verbs: rdma_destroy_id failed: %s", strerror(errno));
			continue;
		}
		if (rdma_ack_cm_event(cev))
			SPARDL_WARN("verbs: rdma_ack_cm_event failed: %s", strerror(errno));
		SPARDL_DEBUG("verbs: rdma_cm %s from rank %d", rdma_event_str(t), q ? q->peer : -1);
		if (q && (t == RDMA_CM_EVENT_DISCONNECTED || t == RDMA_CM_EVENT_DEVICE_REMOVAL)) {
			ret = peer_gone(ep, q);
			if (ret)
				return ret;
		}
	}
	while (!ibv_get_async_event(tp->ch.ctx, &aev)) {
		enum ibv_event_type t = aev.event_type;

		ibv_ack_async_event(&aev);
		SPARDL_WARN("verbs: async event on %s: %s", tp->ch.dev, ibv_event_type_str(t));
		if (t == IBV_EVENT_CQ_ERR || t == IBV_EVENT_DEVICE_FATAL || t == IBV_EVENT_PORT_ERR) {
			ep->failed = 1;
			return spardl_error_quiet(-EIO, "verbs: %s on %s port %d", ibv_event_type_str(t), tp->ch.dev,
						  tp->ch.port);
		}
	}
	return 0;
}

/* Wait for completions or events for up to ms milliseconds. */
static int wait_events(struct verbs_ep *ep, int ms)
{
	struct verbs_tp *tp = vtp(ep->base.tp);
	struct pollfd pfd[3] = {
		{ .fd = ep->cch->fd, .events = POLLIN },
		{ .fd = ep->ech->fd, .events = POLLIN },
		{ .fd = tp->ch.ctx->async_fd, .events = POLLIN },
	};
	struct ibv_cq *cq;
	void *ctx;
	int ret;

	if (poll(pfd, 3, ms) < 0 && errno != EINTR)
		return spardl_error_quiet(-errno, "verbs: poll failed: %s", strerror(errno));
	if (pfd[0].revents & POLLIN) {
		if (!ibv_get_cq_event(ep->cch, &cq, &ctx)) {
			if (++ep->unacked >= 64) {
				ibv_ack_cq_events(ep->cq, ep->unacked);
				ep->unacked = 0;
			}
		}
		if (ibv_req_notify_cq(ep->cq, 0))
			return spardl_error_quiet(-EIO, "verbs: ibv_req_notify_cq failed");
	}
	ret = side_events(ep);
	return ret;
}

static int verbs_poll(struct spardl_tp_ep *base, struct spardl_tp_event *ev, int max, int timeout_ms)
{
	struct verbs_ep *ep = vep(base);
	struct verbs_tp *tp = vtp(base->tp);
	uint64_t start = 0, spin_until = 0;
	unsigned spins;
	int n;

	n = take_stash(ep, ev, max);
	if (n)
		return n;
	/* The clock is read only after a first round of spins: a notification
	 * usually comes sooner, and reading the clock is not free everywhere
	 * (a syscall on VMs without a usable TSC). */
	for (spins = 1;; spins++) {
		n = reap(ep, ev, max);
		if (n)
			return n;
		if (spins % 64)
			continue;
		n = take_stash(ep, ev, max);
		if (n)
			return n;
		if (!start) {
			start = now_ms();
			spin_until = now_us() + (uint64_t)tp->spin_us;
		} else if (now_us() >= spin_until) {
			break;
		}
	}
	if (!start)
		start = now_ms();
	for (;;) {
		int64_t left = (int64_t)timeout_ms - (int64_t)(now_ms() - start);

		/* The CQ is armed; completions since the last reap are caught
		 * by reaping once more before sleeping. */
		n = reap(ep, ev, max);
		if (n)
			return n;
		if (left <= 0)
			return 0;
		n = wait_events(ep, (int)(left < SLICE_MS ? left : SLICE_MS));
		if (n < 0)
			return n;
		n = take_stash(ep, ev, max);
		if (n)
			return n;
	}
}

/* Make room in q's send queue: wait for signaled writes to complete. */
static int sq_room(struct verbs_ep *ep, struct vqp *q, int timeout_ms)
{
	uint64_t start = now_ms();
	int ret;

	while (q->posted - q->completed >= (uint64_t)ep->sq_depth - 1) {
		ret = reap(ep, ep->stash + ep->nstash, 0);
		if (ret < 0)
			return ret;
		if (q->posted - q->completed < (uint64_t)ep->sq_depth - 1)
			break;
		if ((int64_t)(now_ms() - start) > timeout_ms)
			return spardl_error_quiet(-ETIMEDOUT, "verbs: writes to rank %d did not complete within %d ms",
						  q->peer, timeout_ms);
		ret = wait_events(ep, SLICE_MS);
		if (ret)
			return ret;
	}
	return 0;
}

static int post_write(struct verbs_ep *ep, struct vqp *q, uint64_t laddr, uint32_t lkey, size_t len, uint64_t raddr,
		      uint32_t rkey, int with_imm, uint32_t imm, int signal)
{
	struct ibv_sge sge = { .addr = laddr, .length = (uint32_t)len, .lkey = lkey };
	struct ibv_send_wr wr, *bad;
	int err;

	memset(&wr, 0, sizeof(wr));
	wr.wr_id = SEND_BIT | ((uint64_t)(q - ep->qps) << 40) | (q->posted + 1);
	wr.sg_list = len ? &sge : NULL;
	wr.num_sge = len ? 1 : 0;
	wr.opcode = with_imm ? IBV_WR_RDMA_WRITE_WITH_IMM : IBV_WR_RDMA_WRITE;
	wr.imm_data = htonl(imm);
	wr.send_flags = signal ? IBV_SEND_SIGNALED : 0;
	if (len && len <= (size_t)ep->max_inline)
		wr.send_flags |= IBV_SEND_INLINE;
	wr.wr.rdma.remote_addr = raddr;
	wr.wr.rdma.rkey = rkey;
	err = ibv_post_send(q->qp, &wr, &bad);
	if (err)
		return spardl_error_quiet(-err, "verbs: ibv_post_send to rank %d (QP %u) failed: %s", q->peer,
					  q->qp->qp_num, strerror(err));
	q->posted++;
	q->since_signal++;
	if (with_imm)
		spardl_trace_write(ep->base.trace, SPARDL_TR_POST, q->peer, q->qp->qp_num, wr.wr_id, imm, len);
	if (signal) {
		q->last_signaled = q->posted;
		q->since_signal = 0;
	}
	q->last_raddr = raddr;
	q->last_rkey = rkey;
	return 0;
}

static int verbs_write(struct spardl_tp_ep *base, int peer, struct spardl_tp_mr *lbase, size_t loff,
		       struct spardl_tp_rmr *rbase, size_t roff, size_t len, uint32_t imm, unsigned flags)
{
	struct verbs_ep *ep = vep(base);
	struct verbs_mr *lmr = (struct verbs_mr *)lbase;
	struct verbs_rmr *rmr = (struct verbs_rmr *)rbase;
	struct vqp *q = qp_by_peer(ep, peer);
	int ret, signal;

	if (ep->failed)
		return spardl_error_quiet(-ECONNRESET, "verbs: the endpoint failed earlier");
	if (!q || !rmr || rmr->base.peer != peer || loff > lmr->map_len || len > lmr->map_len - loff ||
	    roff > rmr->base.len || len > rmr->base.len - roff || len > base->tp->max_write)
		return spardl_error_quiet(-EINVAL, "verbs: internal: write of %zu bytes to rank %d out of bounds", len,
					  peer);
	ret = sq_room(ep, q, base->tp->timeout_ms);
	if (ret)
		return ret;
	/* Selective signaling: the last write before a quiesce, and one in
	 * every half send queue so there is always room to reap. */
	signal = (flags & SPARDL_TP_WRITE_LAST) || q->since_signal + 1 >= (unsigned)ep->sq_depth / 2;
	return post_write(ep, q, (uint64_t)(uintptr_t)lmr->base.addr + loff, lmr->mr->lkey, len, rmr->addr + roff,
			  rmr->rkey, 1, imm, signal);
}

static int verbs_quiesce(struct spardl_tp_ep *base, int timeout_ms)
{
	struct verbs_ep *ep = vep(base);
	uint64_t start = now_ms(), spin_until;
	unsigned spins;
	int i, ret, busy;

	for (i = 0; i < ep->nqp; i++) {
		struct vqp *q = &ep->qps[i];

		/* A completion covers the WRs before it on its QP: make sure
		 * the newest one asks for one. */
		if (q->posted > q->last_signaled) {
			ret = sq_room(ep, q, timeout_ms);
			if (!ret)
				ret = post_write(ep, q, 0, 0, 0, q->last_raddr, q->last_rkey, 0, 0, 1);
			if (ret)
				return ret;
		}
	}
	spin_until = 0;
	for (spins = 1;; spins++) {
		busy = 0;
		for (i = 0; i < ep->nqp; i++)
			busy |= ep->qps[i].completed < ep->qps[i].posted;
		if (!busy)
			return 0;
		ret = reap(ep, ep->stash + ep->nstash, 0);
		if (ret < 0)
			return ret;
		/* Spin first: completions come within a round trip. The clock
		 * is looked at only every 64 spins. */
		if (spins % 64)
			continue;
		if (!spin_until)
			spin_until = now_us() + (uint64_t)vtp(base->tp)->spin_us;
		if ((int64_t)(now_ms() - start) > timeout_ms)
			return spardl_error_quiet(-ETIMEDOUT, "verbs: writes did not complete within %d ms", timeout_ms);
		if (now_us() < spin_until)
			continue;
		ret = wait_events(ep, SLICE_MS);
		if (ret)
			return ret;
	}
}

/* After a failed call: disconnecting every QP turns into PEER_GONE on the
 * peers at once, instead of their waiting for a write until the timeout. */
static void verbs_abort(struct spardl_tp_ep *base)
{
	struct verbs_ep *ep = vep(base);
	int i;

	if (!ep)
		return;
	ep->failed = 1;
	for (i = 0; i < ep->nqp; i++) {
		struct vqp *q = &ep->qps[i];

		if (q->connected)
			trace_qp(ep->base.trace, q, SPARDL_TR_QP_CLOSED);
		if (q->connected && rdma_disconnect(q->id) && errno != EINVAL)
			SPARDL_DEBUG("verbs: rdma_disconnect from rank %d: %s", q->peer, strerror(errno));
		q->connected = 0;
	}
}

const struct spardl_tp_ops spardl_tp_verbs_ops = {
	.version = SPARDL_TP_OPS_VERSION,
	.size = sizeof(struct spardl_tp_ops),
	.name = "verbs",
	.available = verbs_available,
	.open = verbs_open,
	.close = verbs_close,
	.mem_alloc = verbs_mem_alloc,
	.mem_free = verbs_mem_free,
	.ep_create = verbs_ep_create,
	.ep_destroy = verbs_ep_destroy,
	.abort = verbs_abort,
	.write = verbs_write,
	.poll = verbs_poll,
	.quiesce = verbs_quiesce,
	/* The peers' memory is not mapped here: every write is a work request. */
	.direct = NULL,
};
