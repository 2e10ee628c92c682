/* SPDX-License-Identifier: MIT */
/*
 * Tracing (SPARDL_TRACE=PATH): what every call did, as fixed-size binary
 * records. Each plan fills its own buffer (a plan's calls run on its
 * caller's thread, so the buffer is that thread's and needs no lock); full
 * buffers go to the communicator's trace file between calls, as checksummed
 * chunks. spardl-verbs trace reads the files back. docs/TRACING.md
 * describes the format.
 *
 * File: one struct spardl_trace_hdr, then chunks: struct spardl_trace_chunk
 * followed by nrec records. Little-endian, as written by the host.
 */
#ifndef SPARDL_TRACE_H
#define SPARDL_TRACE_H

#include <stddef.h>
#include <stdint.h>

#define SPARDL_TRACE_MAGIC "SPDLTRC1"
#define SPARDL_TRACE_VERSION 1u
#define SPARDL_TRACE_CHUNK_MAGIC 0x4b4e4843u /* "CHNK" */

struct spardl_trace_hdr {
	char magic[8];       /* SPARDL_TRACE_MAGIC */
	uint32_t version;    /* SPARDL_TRACE_VERSION */
	uint32_t hdr_size;   /* sizeof(struct spardl_trace_hdr) */
	uint32_t rec_size;   /* sizeof(struct spardl_trace_rec) */
	int32_t rank, size;
	int32_t pid;
	uint64_t epoch_real_ns; /* CLOCK_REALTIME at t_ns = 0: aligns ranks of several hosts */
	char host[64];       /* the host name, terminated */
	uint64_t reserved[4];
};

struct spardl_trace_chunk {
	uint32_t magic; /* SPARDL_TRACE_CHUNK_MAGIC */
	uint32_t nrec;
	uint64_t hash; /* FNV-1a 64 over the chunk's records */
};

enum spardl_trace_kind {
	SPARDL_TR_PLAN = 1,   /* plan created: its schedule parameters (see spardl_trace_plan_*) */
	SPARDL_TR_CALL_BEGIN, /* a = elements */
	SPARDL_TR_CALL_END,   /* peer = the call's return value (0 or negative) */
	SPARDL_TR_OP_BEGIN,   /* aux = op code (schedule.h) */
	SPARDL_TR_OP_END,     /* aux = op code; a = bytes, b = pairs it produced or consumed */
	SPARDL_TR_WAIT,       /* waiting for receive slot aux from peer */
	SPARDL_TR_ARRIVED,    /* receive slot aux from peer complete: a = bytes */
	SPARDL_TR_POST,       /* write posted: peer, imm, a = bytes, qpn, b = wr_id */
	SPARDL_TR_DONE,       /* write completed: peer, qpn, b = wr_id (it and those before it on the QP) */
	SPARDL_TR_NOTIFY,     /* notification accepted: peer (the writer), imm, a = bytes */
	SPARDL_TR_MR,         /* memory registered: aux = region, a = bytes, b = memory type, imm = registered */
	SPARDL_TR_QP,         /* QP state: peer, qpn, aux = enum spardl_trace_qp_state */
	SPARDL_TR_QUIESCE,    /* waiting for every write to complete: a = 0 begin, 1 end */
	SPARDL_TR_KIND_COUNT
};

enum spardl_trace_qp_state {
	SPARDL_TR_QP_CONNECTED = 1, /* ready to send (RTS) */
	SPARDL_TR_QP_ERROR = 2,     /* error or flushed: the peer went away */
	SPARDL_TR_QP_CLOSED = 3,    /* disconnected by this rank */
};

enum spardl_trace_region {
	SPARDL_TR_REG_ACC = 0,
	SPARDL_TR_REG_RES = 1,
	SPARDL_TR_REG_SEND = 2,
	SPARDL_TR_REG_RECV = 3,
};

/* 64 bytes. */
struct spardl_trace_rec {
	uint64_t t_ns;  /* CLOCK_MONOTONIC since the file's epoch */
	uint64_t call;  /* the plan's call number */
	uint64_t a, b;  /* by kind */
	uint32_t plan;  /* the communicator's plan number (the same on every rank) */
	uint32_t step;
	int32_t peer;
	uint32_t imm;
	uint32_t qpn;
	uint32_t aux;
	uint16_t round;
	uint8_t kind;
	uint8_t phase;
	uint32_t reserved;
};

/*
 * SPARDL_TR_PLAN: the plan's schedule parameters, so a reader can compile
 * every rank's schedule again: step = rank, peer = size, a = n, b = k,
 * call = max_write, qpn = teams, imm = algo | sag << 8 | srs << 16 |
 * residual << 24 | average << 25.
 */

struct spardl_trace;     /* the communicator's trace file */
struct spardl_trace_buf; /* one plan's records */

/* Open the file SPARDL_TRACE names (%r: the rank); *out NULL when unset. */
int spardl_trace_open(int rank, int size, struct spardl_trace **out);
void spardl_trace_close(struct spardl_trace *t);
/* A plan's buffer, with the next plan number; NULL trace gives NULL. */
int spardl_trace_buf_new(struct spardl_trace *t, struct spardl_trace_buf **out);
/* Flush and free. */
void spardl_trace_buf_free(struct spardl_trace_buf *b);
/* After a call: write the buffer out if it is over half full. */
void spardl_trace_call_done(struct spardl_trace_buf *b);

/* What the records of a plan carry until changed. */
struct spardl_trace_ctx {
	uint64_t call;
	uint32_t step;
	uint16_t round;
	uint8_t phase;
};

struct spardl_trace_rec *spardl_trace_next(struct spardl_trace_buf *b);
struct spardl_trace_ctx *spardl_trace_ctx(struct spardl_trace_buf *b);

/* One record in the current context; a no-op on a NULL buffer. */
static inline struct spardl_trace_rec *spardl_trace_ev(struct spardl_trace_buf *b, unsigned kind, int peer,
							uint32_t aux)
{
	struct spardl_trace_rec *r;

	if (!b)
		return NULL;
	r = spardl_trace_next(b);
	r->kind = (uint8_t)kind;
	r->peer = peer;
	r->aux = aux;
	return r;
}

/* A transport's write record: POST or DONE. */
static inline void spardl_trace_write(struct spardl_trace_buf *b, unsigned kind, int peer, uint32_t qpn,
				      uint64_t wr_id, uint32_t imm, uint64_t bytes)
{
	struct spardl_trace_rec *r = spardl_trace_ev(b, kind, peer, 0);

	if (!r)
		return;
	r->qpn = qpn;
	r->b = wr_id;
	r->imm = imm;
	r->a = bytes;
}

/* FNV-1a 64, the chunk checksum. */
static inline uint64_t spardl_trace_hash(const void *p, size_t len)
{
	const uint8_t *c = p;
	uint64_t h = 0xcbf29ce484222325ull;
	size_t i;

	for (i = 0; i < len; i++) {
		h ^= c[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

#endif
