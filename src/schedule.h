/* SPDX-License-Identifier: MIT */
/* Schedules: per-rank lists of steps {wait for notifications, compute op, post writes}. */
#ifndef SPARDL_SCHEDULE_H
#define SPARDL_SCHEDULE_H

#include <stddef.h>
#include <stdint.h>

#include <spardl/spardl.h>

/* Phases, carried in the write immediate (3 bits). */
enum spardl_phase {
	SPARDL_PH_SRS = 0,   /* Spar-Reduce-Scatter */
	SPARDL_PH_SAG = 1,   /* Spar-All-Gather across teams (B-SAG, R-SAG) */
	SPARDL_PH_AG = 2,    /* all-gather of lists (in-team, TopkA) */
	SPARDL_PH_MERGE = 3, /* pairwise exchange with re-selection (gTopk) */
	SPARDL_PH_RS = 4,    /* dense ring reduce-scatter */
	SPARDL_PH_RAG = 5,   /* dense ring all-gather */
	SPARDL_PH_COUNT
};

enum spardl_opcode {
	SPARDL_OP_NONE = 0,
	SPARDL_OP_ACC_INIT,  /* acc = grad + residual (grad alone without residual) */
	SPARDL_OP_SELECT,    /* topk(acc[block], m) for blocks b0.. (nb, mod nblocks) -> send slot or list reg */
	SPARDL_OP_SCATTER,   /* acc += blocks of a received message (expected ids b0.., nb) */
	SPARDL_OP_SEND_LISTS, /* copy regs [r0, r0+nr) into a send slot */
	SPARDL_OP_RECV_LISTS, /* decode a received message of nr lists into regs [r0, r0+nr) */
	SPARDL_OP_REDUCE,    /* merge regs (in order), keep topk(m) -> list reg; drops shared into acc */
	SPARDL_OP_RESULT,    /* merge regs (in order) into the final global list */
	SPARDL_OP_RESIDUAL,  /* the residual update of the algorithm */
	SPARDL_OP_OUTPUT,    /* write the final list (divided by P when averaging) to the output */
	SPARDL_OP_DENSE_ADD, /* received chunk = acc[chunk] + received chunk (acc is left as it was); the
			      * step's write, if any, forwards that chunk */
	SPARDL_OP_DENSE_OUT, /* output[chunk] = received chunk (or acc[chunk] when no slot) / P */
	SPARDL_OP_COUNT
};

enum spardl_residual_mode {
	SPARDL_RES_GRC = 0,   /* SparDL: acc inside the final set, own input elsewhere */
	SPARDL_RES_LOCAL = 1, /* plain error feedback: whatever stayed in acc */
	SPARDL_RES_ZERO = 2,  /* dense: everything was delivered */
	SPARDL_RES_OFF = 3,   /* residual disabled */
};

/* Memory a write reads from. */
enum spardl_region {
	SPARDL_REG_SEND = 0, /* the send-slot region */
	SPARDL_REG_ACC = 1,  /* the accumulation buffer (dense) */
	SPARDL_REG_RECV = 2, /* a receive slot, current parity (dense forwarding) */
};

struct spardl_op {
	uint8_t code;
	uint8_t phase;
	uint8_t dst_is_reg; /* SELECT/REDUCE: destination is list reg dst (buffer buf) */
	uint8_t reduced;    /* DENSE_ADD: the sum is complete (this rank's own output chunk) */
	uint32_t round;
	uint32_t b0, nb;    /* blocks (SELECT, SCATTER) or expected block ids (RECV_LISTS) */
	uint32_t b_step;    /* RECV_LISTS: expected id of list j is b0 + j * b_step (mod nblocks) */
	uint32_t m;         /* selection budget */
	uint32_t slot;      /* send slot (SELECT, SEND_LISTS) or receive slot (SCATTER, RECV_LISTS, DENSE_*) */
	uint32_t dst;       /* list reg written (SELECT, REDUCE) */
	uint32_t buf;       /* list buffer backing dst */
	uint32_t rl0, nrl;  /* reg list: sched->reglist[rl0 .. rl0+nrl) (SEND_LISTS, REDUCE, RESULT) */
	uint32_t r0;        /* RECV_LISTS: first reg written */
	uint32_t share_log2; /* REDUCE: drops go back to acc times 2^-share_log2 (0: not at all) */
	uint64_t off, len;  /* DENSE_*: element range of the chunk */
};

struct spardl_sslot {
	uint8_t region;
	uint32_t rslot; /* SPARDL_REG_RECV: the receive slot read */
	uint64_t off;   /* bytes into the region */
	uint64_t max;   /* capacity in bytes */
};

/*
 * A receive slot holds one message. A message longer than the largest write
 * (p.max_write) travels as several pieces, each its own write with its own
 * notification; piece i covers bytes [i * max_write, (i + 1) * max_write) of
 * the slot, and the pieces past the message's end are sent empty, so the
 * receiver always waits for npieces notifications. Immediates carry piece
 * ids; a slot's pieces are numbered piece0 .. piece0 + npieces - 1.
 */
struct spardl_rslot {
	int peer;
	uint8_t phase;
	uint8_t exact; /* the message is always exactly max bytes (dense chunks) */
	uint32_t round, seq;
	uint64_t off; /* bytes into one parity half of the receive region */
	uint64_t max;
	uint32_t piece0, npieces;
};

struct spardl_write {
	int peer;
	uint8_t phase;
	uint8_t last; /* the schedule's last write to this peer */
	uint32_t round, seq;
	uint32_t sslot;
	/* Filled by spardl_sched_link() from the peer's schedule. */
	uint32_t rslot;
	uint32_t rpiece0, npieces;
	uint64_t roff;
};

struct spardl_step {
	struct spardl_op op;
	uint32_t wait0, nwait;   /* receive slots: sched->waits[wait0 ..) */
	uint32_t write0, nwrite; /* sched->writes[write0 ..) */
};

/* What a schedule is compiled from: the resolved plan parameters. */
struct spardl_sched_params {
	int size, rank;
	uint64_t n, k;
	int algo, teams, sag, srs, residual, average;
	uint64_t max_write; /* largest single write in bytes, a multiple of 8 (0: no limit) */
};

struct spardl_sched {
	struct spardl_sched_params p;
	/* Derived sizes. */
	int team_size, team, trank; /* P', t, r */
	uint32_t nblocks;           /* blocks of the partition (P' for SparDL, 1 or P otherwise) */
	uint64_t block_size;        /* C (SparDL), n (TopkA, gTopk), chunk (dense) */
	uint64_t kb;                /* per-block budget */
	enum spardl_residual_mode res_mode;

	struct spardl_step *steps;
	uint32_t nsteps, cap_steps;
	struct spardl_write *writes;
	uint32_t nwrites, cap_writes;
	uint32_t *waits;
	uint32_t nwaits, cap_waits;
	struct spardl_sslot *sslots;
	uint32_t nsslots, cap_sslots;
	struct spardl_rslot *rslots;
	uint32_t nrslots, cap_rslots;
	uint32_t *reglist;
	uint32_t nreglist, cap_reglist;
	uint32_t *piece_slot; /* per piece: its receive slot */
	uint32_t npieces;
	/* Steps from here on only compute locally: the executor completes
	 * every write before it, so nothing after can fail. */
	uint32_t quiesce_step;

	uint64_t send_bytes; /* size of the send-slot region */
	uint64_t recv_bytes; /* size of one parity half of the receive region */
	uint32_t nregs;      /* list registers */
	uint32_t nbufs;      /* list buffers */
	uint64_t buf_pairs;  /* capacity of one list buffer, pairs */
	uint64_t union_pairs; /* capacity of the merge buffer, pairs */
	uint64_t result_pairs; /* bound on the pairs of the final result */
	uint64_t touched;    /* bound on the changes to acc per call (GRC undo log) */
	uint64_t undo_runs;  /* bound on the sorted runs of that log */
	uint64_t max_select; /* largest m of a dense-block selection */
	uint32_t srs_rounds; /* ceil(log2 P') for SparDL, else 0 */
	int *peers;          /* distinct peers written to or read from, ascending */
	int npeers;
};

/* Block b of a partition of n into blocks of size bs: [b*bs, min((b+1)*bs, n)). */
static inline uint64_t spardl_block_len(uint64_t n, uint64_t bs, uint64_t b)
{
	uint64_t lo = b * bs;

	if (lo >= n)
		return 0;
	return n - lo < bs ? n - lo : bs;
}

int spardl_sched_compile(const struct spardl_sched_params *p, struct spardl_sched **out);
void spardl_sched_free(struct spardl_sched *s);

/* Resolve every write of s against the compiled schedule of its target
 * (peer_scheds[peer] for each peer written to). */
int spardl_sched_link(struct spardl_sched *s, struct spardl_sched *const *peer_scheds);

/* The schedule as text; release with free(). */
int spardl_sched_render(const struct spardl_sched *s, char **text_out);

/* Pieces of a message slot of max bytes. */
static inline uint64_t spardl_sched_pieces(uint64_t max, uint64_t max_write)
{
	if (!max_write || max <= max_write)
		return 1;
	return (max + max_write - 1) / max_write;
}

/* Capacity of piece i of a slot of max bytes. */
static inline uint64_t spardl_piece_max(uint64_t max, uint64_t max_write, uint32_t i)
{
	uint64_t lo;

	if (!max_write)
		return i ? 0 : max;
	lo = (uint64_t)i * max_write;
	if (lo >= max)
		return 0;
	return max - lo < max_write ? max - lo : max_write;
}

/*
 * Checks a notification against the schedule: the immediate must name a
 * piece of a receive slot of peer with the phase and round it carries, and
 * len must fit that piece. Returns 0 with the piece and its slot, or
 * -SPARDL_ERR_PROTOCOL with a message (recorded quietly) saying what is
 * wrong. The parity bit is the caller's.
 */
int spardl_sched_check_notify(const struct spardl_sched *s, int peer, uint32_t imm, uint64_t len, uint32_t *piece_out,
			      uint32_t *slot_out);

const char *spardl_phase_name(unsigned phase);
const char *spardl_op_name(unsigned code);

/* Immediate: [31] parity | [30:28] phase | [27:23] round mod 32 | [22:0] receive piece. */
#define SPARDL_IMM_SLOT_BITS 23u
#define SPARDL_IMM_MAX_SLOTS (1u << SPARDL_IMM_SLOT_BITS)
static inline uint32_t spardl_imm(unsigned parity, unsigned phase, unsigned round, uint32_t slot)
{
	return ((uint32_t)(parity & 1) << 31) | ((uint32_t)(phase & 7) << 28) |
	       ((uint32_t)(round & 31) << 23) | (slot & (SPARDL_IMM_MAX_SLOTS - 1));
}

#endif
