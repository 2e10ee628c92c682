/* Out-of-band bootstrap: rendezvous of all ranks and small allgathers (TCP, unix socket or a user callback). */
#ifndef SPARDL_BOOTSTRAP_H
#define SPARDL_BOOTSTRAP_H

#include <stddef.h>
#include <stdint.h>

#include <spardl/spardl.h>

struct spardl_bootstrap;

struct spardl_bootstrap_config {
	int rank;
	int size;
	/* "host:port", "[v6]:port" or "unix:NAME" (Linux abstract socket);
	 * rank 0 listens there, the others connect. Unused with oob. */
	const char *address;
	/* Every rank of one job passes the same key; a rank of another job
	 * that reaches this rendezvous is refused. */
	const char *job_key;
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

int spardl_bootstrap_rank(const struct spardl_bootstrap *bs);
/* A hash of the job key, for transports to refuse other jobs' connections. */
uint64_t spardl_bootstrap_job_hash(const struct spardl_bootstrap *bs);
int spardl_bootstrap_size(const struct spardl_bootstrap *bs);

#endif
