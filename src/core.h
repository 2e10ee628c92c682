/* SPDX-License-Identifier: MIT */
/* The communicator and plan objects shared by comm.c, plan.c and exec.c. */
#ifndef SPARDL_CORE_H
#define SPARDL_CORE_H

#include <stdint.h>

#include <spardl/spardl.h>

#include "bootstrap.h"
#include "flight.h"
#include "lists.h"
#include "schedule.h"
#include "topk.h"
#include "trace.h"
#include "transport.h"

struct spardl_comm {
	int rank, size;
	int timeout_ms;
	uint64_t max_write; /* largest single write, agreed by all ranks */
	uint8_t *key;   /* the job's secret, or NULL */
	size_t key_len;
	char *job_id;   /* a public job identifier, or NULL */
	struct spardl_bootstrap *bs;
	const struct spardl_tp_ops *tp_ops;
	struct spardl_tp *tp;
	struct spardl_trace *trace; /* SPARDL_TRACE's file, or NULL */
	/* Set by the first CUDA plan: the event that ends the last call
	 * enqueued on any of the communicator's CUDA plans (cuda_plan.c). */
	const struct spardl_cuda_rt *cuda_rt;
	void *cuda_done;
};

/* Calls per store type that SPARDL_STREAM_OUTPUT=auto times. */
#define SPARDL_STREAM_PROBES 3

/* One change to acc: position and the value it had before. */
struct spardl_undo {
	uint64_t pos;
	float old;
};

/* Marks a receive piece whose write has not arrived yet. */
#define SPARDL_NOT_ARRIVED UINT64_MAX
/* Events taken from the transport per poll. */
#define SPARDL_MAX_EVENTS 64

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
	uint64_t *peer_half;        /* per rank: a peer's receive parity half, from its schedule */

	/* Per-call state. */
	uint64_t *arrived[2];   /* per parity and receive piece: bytes, or SPARDL_NOT_ARRIVED */
	uint64_t *slot_len;     /* per receive slot: bytes of this call's message, once complete */
	uint64_t *send_len;     /* per send slot: bytes packed this call */
	struct spardl_list *regs;
	uint8_t *lbuf;          /* nbufs list buffers of lbuf_bytes each */
	size_t lbuf_bytes;
	uint64_t *u_idx;        /* the merge buffer: global indices */
	float *u_val;
	size_t u_n;
	struct spardl_list *mlists;   /* the lists of one merge, nregs */
	struct spardl_merge_heap *heap; /* nregs */
	/* The sparse algorithms log every change to acc in a call with the
	 * value before: GRC undoes those outside the final set, and a failed
	 * call undoes them all. */
	struct spardl_undo *undo;
	size_t nundo;
	size_t *useg;             /* starts of the undo log's runs, each sorted by position */
	size_t nuseg;
	uint64_t *final_bits;     /* GRC: n bits, the final positions while the residual is updated */
	/* GRC, and plain error feedback without a reduce (TopkA): positions
	 * where the residual is zero but acc may still hold the value
	 * selected there: the zeros of lazy runs the residual update left to
	 * the next accumulate pass, which reads acc there anyway
	 * (spardl_exec_settle writes them). A bitmap per block, pend_wpb words
	 * each, bit i for the block's entry i. */
	uint64_t *pend_bits;      /* NULL: the update writes those zeros itself */
	size_t pend_wpb;
	int pend;                 /* some bit of pend_bits is set */
	int own_lazy;             /* the owner's selection is lazy too (plan_deferrable, or TopkA's with pend_bits) */
	/* The dense-layout output's stores (SPARDL_STREAM_OUTPUT): streaming
	 * or plain. Which is faster depends on what the caller leaves in the
	 * caches between calls, so by default (auto) the plan times both
	 * (stream_probe in exec.c): its calls 2 to 2 * SPARDL_STREAM_PROBES + 1
	 * with a dense-layout output alternate them, each timed as its output
	 * plus the next such call's accumulate pass (which the output's stores
	 * affect too), and the faster by median stays. */
	int stream;
	int stream_auto;          /* still probing */
	uint32_t stream_probes;   /* calls with a dense output seen while probing */
	double stream_pend;       /* the last such call's output time */
	double stream_s[2][SPARDL_STREAM_PROBES];
	struct spardl_topk_ws ws;
	struct spardl_arena arena; /* where plan_calloc and ws take their buffers (arena.h) */
	/* Per block: candidates gathered while acc was formed (SIZE_MAX: none),
	 * and the received lists that changed it since. */
	uint32_t *cand;         /* nblocks x cand_cap positions */
	float *cand_val;        /* and their values */
	size_t cand_cap;
	size_t *cand_n;
	uint32_t *cand_lo;
	const uint32_t **blk_lidx; /* nblocks x max_lists */
	const float **blk_lval;    /* acc at those positions once each list was added */
	float *lval;               /* nblocks x max_lists x kb: where blk_lval point */
	uint32_t *blk_lcnt;
	uint32_t *blk_nl;
	uint32_t max_lists;
	/* GRC: per block, 1 where its scatter keeps the list's sums without
	 * writing acc (plan_deferrable: the block gets one list and its
	 * final set is this rank's selection of it); blk_def: this call's
	 * sums are still kept aside (a scan of the block writes them first). */
	uint8_t *blk_defer;
	uint8_t *blk_def;
	/* Per block, 1 where its accumulate pass waits for its list
	 * (plan_late): the pass then makes the list's sums while the block is
	 * in cache, not by a second, scattered read of acc. blk_unformed: this
	 * call's pass is still to come. */
	uint8_t *blk_late;
	uint8_t *blk_unformed;
	/* Residual update scratch: per block, 1 where a logged change is
	 * tested against the final-position bitmap (op_residual). */
	uint8_t *blk_test;
	struct spardl_tp_event *events;
	struct spardl_tp_peer *tp_peers; /* the endpoint's peers, npeers */

	struct spardl_flight *flight; /* the last events, dumped when a call fails (flight.h) */
	struct spardl_trace_buf *trace; /* this plan's trace records, NULL without SPARDL_TRACE (trace.h) */
	char *gone; /* per rank: 1 exited or disconnected, 2 aborted its call */
	uint64_t calls;
	int failed;
	struct spardl_plan_stats stats;
	size_t host_bytes;       /* everything the plan allocated */
	size_t registered_bytes; /* of which registered or shared with peers */
	size_t device_bytes;     /* CUDA plans: device memory */
	struct spardl_cuda_plan *cuda; /* CUDA plans only (cuda_plan.c), else NULL */
};

/* Run one call: grad in; dense output to out (may be grad), or the sparse
 * result to indices/values when indices is non-NULL. On failure grad and
 * out are untouched and the residual holds old residual + grad. */
/* Tests only (not exported): called before each step of every call; a
 * negative errno fails the call there, as a failed wait would. */
extern int (*spardl_exec_step_hook)(const struct spardl_plan *plan, uint64_t call, uint32_t step);
/* Tests only (not exported): called before each piece of a dense add that
 * runs a piece at a time (exec.c, run_pipelined); a negative errno fails
 * the call there. */
extern int (*spardl_exec_piece_hook)(const struct spardl_plan *plan, uint64_t call, uint32_t step, uint32_t piece);

/* The smallest n (floats) whose plans leave the residual's zeros pending
 * (pend_bits): below it acc mostly stays in the caches, where writing the
 * zeros costs less than applying them in the next pass. Tests lower it
 * (not exported). */
#define SPARDL_PEND_MIN_N ((size_t)1 << 23)
extern size_t spardl_pend_min_n;

/* 0: the dense ring never stores its sums straight into the peer's slot
 * (SPARDL_TP_CAP_DIRECT), as on a transport without it. Tests alternate
 * (not exported). */
extern int spardl_dense_direct;

int spardl_exec(struct spardl_plan *plan, const float *grad, float *out, int64_t *indices, float *values,
		size_t *nnz_out);

/* Writes the residual's pending zeros (pend_bits) into acc: before anything
 * but a call reads or replaces the residual. */
void spardl_exec_settle(struct spardl_plan *plan);

/* The schedule parameters a plan with these parameters compiles for rank of
 * size ranks, after the checks one rank can make alone (an error names the
 * problem). For tools that compile schedules without a communicator. */
int spardl_plan_sched_params(const struct spardl_plan_params *params, int size, int rank, uint64_t max_write,
			     struct spardl_sched_params *sp_out);

/* The teams the simulator's default model finds fastest for these
 * parameters (teams ignored) on size ranks: plan parameters teams = 0. */
int spardl_sim_auto_teams(const struct spardl_plan_params *params, int size, int *teams_out);

#endif
