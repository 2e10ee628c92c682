/* SPDX-License-Identifier: MIT */
/* The internal transport interface: one-sided writes with notification into registered memory. */
#ifndef SPARDL_TRANSPORT_H
#define SPARDL_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include <spardl/spardl.h>

#include "bootstrap.h"
#include "trace.h"

/*
 * A transport is a const ops table (versioned, size first) found in a static
 * registry. Objects a transport returns embed the base structs below as their
 * first member. Collectives (open, ep_create) run over the bootstrap.
 *
 * Every wait takes a timeout in milliseconds and fails with -ETIMEDOUT; a
 * peer known to be gone fails with -ECONNRESET. Errors are negative errno or
 * -SPARDL_ERR_*, with the message already recorded by spardl_error(). The
 * per-call operations (write, poll, quiesce) record theirs quietly
 * (spardl_error_quiet): the executor adds the step and peer and logs once.
 */
#define SPARDL_TP_OPS_VERSION 4

enum spardl_access {
	SPARDL_ACCESS_LOCAL = 1 << 0,        /* source of local writes */
	SPARDL_ACCESS_REMOTE_WRITE = 1 << 1, /* target of peers' writes */
};

enum spardl_write_flags {
	SPARDL_TP_WRITE_LAST = 1 << 0,
	/* The bytes are already at rmr+roff, stored through direct(): only
	 * notify the peer (SPARDL_TP_CAP_DIRECT transports). */
	SPARDL_TP_WRITE_DIRECT = 1 << 1,
	/* A piece of a message of SPARDL_STREAM_MIN bytes or more: a
	 * transport that copies may stream its stores (a hint). */
	SPARDL_TP_WRITE_STREAM = 1 << 2,
};

struct spardl_tp_ops;

struct spardl_tp {
	const struct spardl_tp_ops *ops;
	struct spardl_bootstrap *bs;
	int rank, size;
	int timeout_ms;
	/* Largest single write this rank's transport can make (bytes), set by
	 * open; the core splits larger messages into pieces. */
	uint64_t max_write;
	/* Set by the core around ep_create when tracing: where the transport
	 * records QP state changes (trace.h). NULL otherwise. */
	struct spardl_trace_buf *trace;
	/* enum spardl_tp_caps, set by open. */
	unsigned caps;
};

enum spardl_tp_caps {
	/* write() takes any host memory as its source: an MR that only names
	 * an address and a length (registered = 0), such as the caller's
	 * gradient, so the core need not copy it into registered memory
	 * first. */
	SPARDL_TP_CAP_HOST_SOURCE = 1u << 0,
	/* The peers' receive regions are mapped here: direct() gives an
	 * address the core can store into, and a write with
	 * SPARDL_TP_WRITE_DIRECT then only notifies. A reduction can so put
	 * its result straight into the next peer's slot (no staging copy). */
	SPARDL_TP_CAP_DIRECT = 1u << 1,
};

struct spardl_tp_mr {
	void *addr;
	size_t len;       /* bytes asked for */
	size_t alloc_len; /* bytes mapped (whole pages) */
	enum spardl_mem_type mem_type;
	unsigned access;
	int registered;   /* registered with a device, or shared with peers */
};

/* A peer of an endpoint, as the plan's schedule names it. */
enum spardl_tp_peer_flags {
	SPARDL_TP_PEER_WRITES_HERE = 1 << 0, /* it writes into this rank's receive region (it gets the key) */
	SPARDL_TP_PEER_WRITTEN = 1 << 1,     /* this rank writes into its receive region */
};

struct spardl_tp_peer {
	int rank;
	unsigned flags;
	/* SPARDL_TP_PEER_WRITTEN: bytes of the peer's receive region this rank
	 * writes into, known from the peer's schedule (never taken from the
	 * peer): a smaller region is refused. */
	uint64_t remote_len;
};

struct spardl_tp_ep {
	struct spardl_tp *tp;
	/* Per rank: the receive region of every peer flagged
	 * SPARDL_TP_PEER_WRITTEN, NULL for the others; owned by the endpoint. */
	struct spardl_tp_rmr **remote;
	/* Set by the core after ep_create when tracing, NULL otherwise: the
	 * transport records each write posted and completed (with its QP and
	 * wr_id) and QP state changes there, in the executor's context. */
	struct spardl_trace_buf *trace;
};

struct spardl_tp_rmr {
	int peer;
	size_t len;
};

enum spardl_tp_event_type {
	SPARDL_TP_EV_NOTIFY = 0,     /* peer wrote len bytes with immediate imm */
	SPARDL_TP_EV_PEER_GONE = 1,  /* peer exited or disconnected (reported once) */
	SPARDL_TP_EV_PEER_ABORT = 2, /* peer's own call failed: it aborted the endpoint */
};

/* What poll returns. A vanished peer is an event, not an error: only the
 * executor knows whether it still needed that peer. */
struct spardl_tp_event {
	int type;
	int peer;
	uint32_t imm;
	uint64_t len;
};

struct spardl_tp_ops {
	uint32_t version; /* SPARDL_TP_OPS_VERSION */
	uint32_t size;    /* sizeof(struct spardl_tp_ops) */
	const char *name;
	/* 1 when the transport can run on this machine (used by "auto"). */
	int (*available)(void);
	/* Collective over bs, with the same result on every rank (a local
	 * failure is reported to all through spardl_bootstrap_exchange). */
	int (*open)(struct spardl_bootstrap *bs, int timeout_ms, struct spardl_tp **tp_out);
	void (*close)(struct spardl_tp *tp);
	/* Allocate len bytes of the given memory type, registered for access,
	 * zeroed and touched. */
	int (*mem_alloc)(struct spardl_tp *tp, size_t len, enum spardl_mem_type type, unsigned access,
			 struct spardl_tp_mr **mr_out);
	void (*mem_free)(struct spardl_tp *tp, struct spardl_tp_mr *mr);
	/* Collective, with the same result on every rank (a local failure is
	 * reported to all through spardl_bootstrap_exchange): endpoints to
	 * exactly the peers listed (those the plan's schedule names). recv
	 * (SPARDL_ACCESS_REMOTE_WRITE) is this rank's receive region: its key
	 * goes only to the peers flagged SPARDL_TP_PEER_WRITES_HERE, and
	 * ep->remote[] receives the regions of the peers flagged
	 * SPARDL_TP_PEER_WRITTEN, checked against remote_len. max_notify
	 * bounds the notifications in flight to this rank at any time. */
	int (*ep_create)(struct spardl_tp *tp, const struct spardl_tp_peer *peers, int npeers, uint32_t max_notify,
			 struct spardl_tp_mr *recv, struct spardl_tp_ep **ep_out);
	void (*ep_destroy)(struct spardl_tp_ep *ep);
	/* After a failed call: tell every peer of the endpoint, so that it
	 * fails at once (SPARDL_TP_EV_PEER_ABORT or PEER_GONE) instead of
	 * waiting for its timeout. Best effort; the endpoint is unusable after. */
	void (*abort)(struct spardl_tp_ep *ep);
	/* Write len bytes (at most tp->max_write) from lmr+loff to rmr+roff,
	 * then notify the peer with imm. The source must stay unchanged until
	 * quiesce returns. flags:
	 * SPARDL_TP_WRITE_LAST marks the last write to this peer before the
	 * next quiesce (a transport with selective signaling signals it). */
	int (*write)(struct spardl_tp_ep *ep, int peer, struct spardl_tp_mr *lmr, size_t loff,
		     struct spardl_tp_rmr *rmr, size_t roff, size_t len, uint32_t imm, unsigned flags);
	/* Up to max events; waits up to timeout_ms for the first (0: none). */
	int (*poll)(struct spardl_tp_ep *ep, struct spardl_tp_event *ev, int max, int timeout_ms);
	/* Wait until every write posted so far has left its source buffer. */
	int (*quiesce)(struct spardl_tp_ep *ep, int timeout_ms);
	/* SPARDL_TP_CAP_DIRECT only (NULL otherwise): the address of
	 * rmr+roff in this process, for len bytes the core stores into before
	 * the write that notifies them (SPARDL_TP_WRITE_DIRECT, same range);
	 * NULL when the range is out of bounds. */
	void *(*direct)(struct spardl_tp_ep *ep, int peer, struct spardl_tp_rmr *rmr, size_t roff, size_t len);
};

/* Transports compiled in, in the order "auto" tries them. */
const struct spardl_tp_ops *const *spardl_tp_registry(void);
/* By name ("shm", "verbs", "auto"); NULL with an error recorded when absent. */
int spardl_tp_find(const char *name, const struct spardl_tp_ops **ops_out);

/* Stubs for operations a transport does not support. */
int spardl_tp_no_mem_alloc(struct spardl_tp *tp, size_t len, enum spardl_mem_type type, unsigned access,
			   struct spardl_tp_mr **mr_out);

#endif
