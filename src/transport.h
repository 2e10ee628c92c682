/* The internal transport interface: one-sided writes with notification into registered memory. */
#ifndef SPARDL_TRANSPORT_H
#define SPARDL_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include <spardl/spardl.h>

#include "bootstrap.h"

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
#define SPARDL_TP_OPS_VERSION 1

enum spardl_access {
	SPARDL_ACCESS_LOCAL = 1 << 0,        /* source of local writes */
	SPARDL_ACCESS_REMOTE_WRITE = 1 << 1, /* target of peers' writes */
};

enum spardl_write_flags {
	SPARDL_TP_WRITE_LAST = 1 << 0,
};

/* Fixed size of an exported memory key, for every transport. */
#define SPARDL_TP_RKEY_SIZE 64

struct spardl_tp_ops;

struct spardl_tp {
	const struct spardl_tp_ops *ops;
	struct spardl_bootstrap *bs;
	int rank, size;
	int timeout_ms;
};

struct spardl_tp_mr {
	void *addr;
	size_t len;
	enum spardl_mem_type mem_type;
	unsigned access;
};

struct spardl_tp_ep {
	struct spardl_tp *tp;
};

struct spardl_tp_rmr {
	int peer;
	size_t len;
};

enum spardl_tp_event_type {
	SPARDL_TP_EV_NOTIFY = 0,    /* peer wrote len bytes with immediate imm */
	SPARDL_TP_EV_PEER_GONE = 1, /* peer exited or disconnected (reported once) */
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
	/* Collective over bs. */
	int (*open)(struct spardl_bootstrap *bs, int timeout_ms, struct spardl_tp **tp_out);
	void (*close)(struct spardl_tp *tp);
	/* Allocate len bytes of the given memory type, registered for access,
	 * zeroed and touched. */
	int (*mem_alloc)(struct spardl_tp *tp, size_t len, enum spardl_mem_type type, unsigned access,
			 struct spardl_tp_mr **mr_out);
	void (*mem_free)(struct spardl_tp *tp, struct spardl_tp_mr *mr);
	/* Describe mr (SPARDL_ACCESS_REMOTE_WRITE) in SPARDL_TP_RKEY_SIZE bytes. */
	int (*mr_export)(struct spardl_tp *tp, struct spardl_tp_mr *mr, void *rkey);
	/* Collective: endpoints to exactly the peers listed (those the plan's
	 * schedule names); max_notify bounds the notifications in flight to
	 * this rank at any time. */
	int (*ep_create)(struct spardl_tp *tp, const int *peers, int npeers, uint32_t max_notify,
			 struct spardl_tp_ep **ep_out);
	void (*ep_destroy)(struct spardl_tp_ep *ep);
	int (*rmr_import)(struct spardl_tp_ep *ep, int peer, const void *rkey,
			  struct spardl_tp_rmr **rmr_out);
	void (*rmr_release)(struct spardl_tp_ep *ep, struct spardl_tp_rmr *rmr);
	/* Write len bytes from lmr+loff to rmr+roff, then notify the peer with
	 * imm. The source must stay unchanged until quiesce returns. flags:
	 * SPARDL_TP_WRITE_LAST marks the last write to this peer before the
	 * next quiesce (a transport with selective signaling signals it). */
	int (*write)(struct spardl_tp_ep *ep, int peer, struct spardl_tp_mr *lmr, size_t loff,
		     struct spardl_tp_rmr *rmr, size_t roff, size_t len, uint32_t imm, unsigned flags);
	/* Up to max events; waits up to timeout_ms for the first (0: none). */
	int (*poll)(struct spardl_tp_ep *ep, struct spardl_tp_event *ev, int max, int timeout_ms);
	/* Wait until every write posted so far has left its source buffer. */
	int (*quiesce)(struct spardl_tp_ep *ep, int timeout_ms);
};

/* Transports compiled in, in the order "auto" tries them. */
const struct spardl_tp_ops *const *spardl_tp_registry(void);
/* By name ("shm", "verbs", "auto"); NULL with an error recorded when absent. */
int spardl_tp_find(const char *name, const struct spardl_tp_ops **ops_out);

/* Stubs for operations a transport does not support. */
int spardl_tp_no_mem_alloc(struct spardl_tp *tp, size_t len, enum spardl_mem_type type, unsigned access,
			   struct spardl_tp_mr **mr_out);

#endif
