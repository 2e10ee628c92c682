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

/* Marks a receive slot whose write has not arrived yet. */
#define SPARDL_NOT_ARRIVED UINT64_MAX

struct spardl_plan {
	struct spardl_comm *comm;
	struct spardl_plan_params params; /* resolved: every field set */
	struct spardl_sched *sched;
	const struct spardl_tp_ops *ops;
	struct spardl_tp_ep *ep;

	/* acc and residual swap roles each call (see OP_RESIDUAL), so both
	 * are registered; cur indexes acc. */
	struct spardl_tp_mr *buf[2];
	int cur;
	int res_dirty; /* residual may be non-zero (dense keeps it zero) */
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
	float *u_saved;         /* GRC: acc values at the final positions */
	size_t u_n;
	struct spardl_list *mlists;   /* the lists of one merge, nregs */
	struct spardl_merge_heap *heap; /* nregs */
	uint64_t *touched;      /* GRC: acc positions modified this call */
	size_t ntouched;
	struct spardl_topk_ws ws;
	struct spardl_tp_event *events;

	uint64_t calls;
	int failed;
	struct spardl_plan_stats stats;
};

/* Run one call: grad in; dense output to out (may be grad), or the sparse
 * result to indices/values when indices is non-NULL. */
int spardl_exec(struct spardl_plan *plan, const float *grad, float *out, int64_t *indices, float *values,
		size_t *nnz_out);

#endif
