/* The communicator and plan objects shared by comm.c, plan.c and exec.c. */
#ifndef SPARDL_CORE_H
#define SPARDL_CORE_H

#include <stdint.h>

#include <spardl/spardl.h>

#include "bootstrap.h"
#include "lists.h"
#include "schedule.h"
#include "topk.h"
#include "transport.h"

struct spardl_comm {
	int rank, size;
	int timeout_ms;
	char *job_key;
	struct spardl_bootstrap *bs;
	const struct spardl_tp_ops *tp_ops;
	struct spardl_tp *tp;
};

/* One change to acc: position and the value it had before. */
struct spardl_undo {
	uint64_t pos;
	float old;
};

/* Marks a receive slot whose write has not arrived yet. */
#define SPARDL_NOT_ARRIVED UINT64_MAX

struct spardl_plan {
	struct spardl_comm *comm;
	struct spardl_plan_params params; /* resolved: every field set */
	struct spardl_sched *sched;
	const struct spardl_tp_ops *ops;
	struct spardl_tp_ep *ep;

	/* The sparse algorithms keep the residual in acc itself: a call adds
	 * grad in place, and the GRC update undoes its own changes where the
	 * result did not take them (the undo log below). The dense algorithm
	 * has a separate residual (res), zero unless the user set one. */
	struct spardl_tp_mr *acc;
	struct spardl_tp_mr *res; /* dense only; NULL otherwise */
	int res_dirty;            /* dense: res may be non-zero */
	struct spardl_tp_mr *send, *recv;
	struct spardl_tp_rmr **rmr; /* per rank: receive region of peers written to */
	uint64_t *peer_half;        /* per rank: size of a peer's receive parity half */

	/* Per-call state. */
	uint64_t *arrived[2];   /* per parity and receive slot: bytes, or SPARDL_NOT_ARRIVED */
	uint64_t *send_len;     /* per send slot: bytes packed this call */
	struct spardl_list *regs;
	uint8_t *lbuf;          /* nbufs list buffers of lbuf_bytes each */
	size_t lbuf_bytes;
	uint64_t *u_idx;        /* the merge buffer: global indices */
	float *u_val;
	size_t u_n;
	struct spardl_list *mlists;   /* the lists of one merge, nregs */
	struct spardl_merge_heap *heap; /* nregs */
	struct spardl_undo *undo; /* GRC: every change to acc this call, with the value before */
	size_t nundo;
	uint32_t *useg;           /* starts of the undo log's runs, each sorted by position */
	size_t nuseg;
	struct spardl_topk_ws ws;
	/* Per block: candidates gathered while acc was formed (SIZE_MAX: none),
	 * and the received lists that changed it since. */
	uint32_t *cand;         /* nblocks x cand_cap positions */
	float *cand_val;        /* and their values */
	size_t cand_cap;
	size_t *cand_n;
	uint32_t *cand_lo;
	const uint32_t **blk_lidx; /* nblocks x max_lists */
	uint32_t *blk_lcnt;
	uint32_t *blk_nl;
	uint32_t max_lists;
	struct spardl_tp_event *events;

	char *gone; /* per rank: the transport reported it exited or disconnected */
	uint64_t calls;
	int failed;
	struct spardl_plan_stats stats;
};

/* Run one call: grad in; dense output to out (may be grad), or the sparse
 * result to indices/values when indices is non-NULL. */
int spardl_exec(struct spardl_plan *plan, const float *grad, float *out, int64_t *indices, float *values,
		size_t *nnz_out);

#endif
