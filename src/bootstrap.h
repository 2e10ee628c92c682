/* SPDX-License-Identifier: MIT */
/* Out-of-band bootstrap: rendezvous of all ranks and small allgathers (TCP, unix socket or a user callback). */
#ifndef SPARDL_BOOTSTRAP_H
#define SPARDL_BOOTSTRAP_H

#include <stddef.h>
#include <stdint.h>

#include <spardl/spardl.h>

/* Most ranks in a job (docs/API.md, "Limits"); also SPARDL_SIZE's range. */
#define SPARDL_MAX_RANKS (1 << 20)

struct spardl_bootstrap;

struct spardl_bootstrap_config {
	int rank;
	int size;
	/* "host:port", "[v6]:port" or "unix:NAME" (Linux abstract socket);
	 * rank 0 listens there, the others connect. Unused with oob. */
	const char *address;
	/* The job's secret. When set, every connection proves on both sides
	 * that it holds it (HMAC-SHA256 challenge and response over fresh
	 * nonces), so only the job's ranks can join or pose as rank 0. */
	const void *key;
	size_t key_len;
	/* Without a key: a public job identifier that keeps two jobs apart
	 * (not a defence against a hostile process). May be NULL. */
	const char *job_id;
	/* Unix sockets: uids admitted besides the process's own ("1001,1002"
	 * or "any"); NULL admits only the own uid. */
	const char *peer_uids;
	int timeout_ms; /* bound on the rendezvous and on every exchange */
	spardl_oob_allgather_fn oob; /* when set, all exchanges go through it */
	void *oob_ctx;
};

/* Collective: returns once all size ranks have met, or an error naming the
 * ranks that did not arrive within timeout_ms. */
int spardl_bootstrap_create(const struct spardl_bootstrap_config *cfg, struct spardl_bootstrap **bs_out);
void spardl_bootstrap_destroy(struct spardl_bootstrap *bs);

/* Collective: recv receives size * len bytes, rank i's send at i * len.
 * Every rank must pass the same len. */
int spardl_bootstrap_allgather(struct spardl_bootstrap *bs, const void *send, void *recv, size_t len);
int spardl_bootstrap_barrier(struct spardl_bootstrap *bs);

/*
 * Collective step that may have failed locally: every rank calls it with
 * its own status (0, or the negative error it met, its message recorded),
 * whatever happened before, so the ranks stay in step. Returns 0 with the
 * payloads gathered when every rank succeeded. Otherwise every rank returns
 * an error: a failed rank its own, the others the first failed rank's code
 * and message ("rank 2 could not <what>: <its message>"). send may be NULL
 * when status is non-zero; recv may be NULL when len is 0.
 */
int spardl_bootstrap_exchange(struct spardl_bootstrap *bs, int status, const char *what, const void *send,
			      void *recv, size_t len);

int spardl_bootstrap_rank(const struct spardl_bootstrap *bs);
int spardl_bootstrap_size(const struct spardl_bootstrap *bs);
/* 1 when the rendezvous proved the job key (a key was configured). */
int spardl_bootstrap_authenticated(const struct spardl_bootstrap *bs);

#endif
