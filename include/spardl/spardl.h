/* SPDX-License-Identifier: MIT */
/* spardl: sparse gradient allreduce (SparDL) over one-sided-write transports. */
#ifndef SPARDL_SPARDL_H
#define SPARDL_SPARDL_H

#include <stddef.h>
#include <stdint.h>

#include <spardl/version.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(SPARDL_BUILDING_LIBRARY)
#define SPARDL_API __attribute__((visibility("default")))
#else
#define SPARDL_API
#endif

/*
 * Error convention: every fallible function returns 0 or a negative error
 * code, either a negative errno (-EINVAL, -ENOMEM, -ETIMEDOUT, -ECONNRESET,
 * -EOPNOTSUPP, ...) or one of the library codes below (negated).
 * spardl_strerror() names any of them; spardl_last_error() returns the
 * calling thread's detailed message for the last failure.
 */
#define SPARDL_ERR_BASE 256
enum spardl_error {
	/* Ranks passed different parameters to a collective call. */
	SPARDL_ERR_MISMATCH = SPARDL_ERR_BASE + 1,
	/* A peer wrote something the schedule did not expect. */
	SPARDL_ERR_PROTOCOL = SPARDL_ERR_BASE + 2,
	/* An earlier call on this plan failed; the plan cannot be used. */
	SPARDL_ERR_PLAN_FAILED = SPARDL_ERR_BASE + 3,
	/* Invalid or contradictory environment variable. */
	SPARDL_ERR_ENV = SPARDL_ERR_BASE + 4,
};

SPARDL_API const char *spardl_strerror(int err);
SPARDL_API const char *spardl_last_error(void);

/* ------------------------------------------------------------------ */
/* Communicator                                                        */
/* ------------------------------------------------------------------ */

/*
 * Out-of-band allgather supplied by the caller (an MPI program, a
 * framework's store). Collective: every rank calls it with the same len;
 * recvbuf receives size * len bytes, rank i's sendbuf at offset i * len.
 * Return 0 on success, anything else on failure.
 */
typedef int (*spardl_oob_allgather_fn)(void *ctx, const void *sendbuf,
				       void *recvbuf, size_t len);

enum spardl_comm_param_field {
	SPARDL_COMM_PARAM_RANK_SIZE = 1u << 0, /* rank and size */
	SPARDL_COMM_PARAM_BOOTSTRAP = 1u << 1, /* bootstrap address */
	SPARDL_COMM_PARAM_JOB_KEY = 1u << 2,
	SPARDL_COMM_PARAM_TRANSPORT = 1u << 3,
	SPARDL_COMM_PARAM_OOB = 1u << 4, /* oob_allgather and oob_ctx */
	SPARDL_COMM_PARAM_TIMEOUT = 1u << 5,
};

struct spardl_comm_params {
	/* Bits of enum spardl_comm_param_field: only those fields are read;
	 * the others come from the environment or defaults. */
	uint64_t field_mask;
	int rank;
	int size;
	/* "host:port", "[ipv6]:port" or "unix:NAME" (abstract socket);
	 * rank 0 listens there. Ignored when oob_allgather is set. */
	const char *bootstrap;
	/* Keeps two jobs on one host apart; every rank must pass the same. */
	const char *job_key;
	/* "shm", "verbs" or "auto". */
	const char *transport;
	spardl_oob_allgather_fn oob_allgather;
	void *oob_ctx;
	/* Bound on every wait, in milliseconds (> 0). */
	int timeout_ms;
};

struct spardl_comm;

/* Zero the struct (field_mask 0: everything from the environment). */
SPARDL_API void spardl_comm_params_init(struct spardl_comm_params *params);

/* Collective over all ranks. params may be NULL: rank, size, bootstrap and
 * transport then come from the environment (see docs/ENVIRONMENT.md). */
SPARDL_API int spardl_comm_create(const struct spardl_comm_params *params,
				  struct spardl_comm **comm_out);
SPARDL_API void spardl_comm_destroy(struct spardl_comm *comm);
SPARDL_API int spardl_comm_rank(const struct spardl_comm *comm);
SPARDL_API int spardl_comm_size(const struct spardl_comm *comm);
/* Name of the transport the communicator runs on ("shm", "verbs"). */
SPARDL_API const char *spardl_comm_transport(const struct spardl_comm *comm);

/* ------------------------------------------------------------------ */
/* Plans                                                               */
/* ------------------------------------------------------------------ */

enum spardl_algo {
	SPARDL_ALGO_SPARDL = 0, /* SRS + SAG + GRC */
	SPARDL_ALGO_DENSE = 1,  /* ring reduce-scatter + ring all-gather */
	SPARDL_ALGO_TOPKA = 2,  /* all-gather of every rank's top-k */
	SPARDL_ALGO_GTOPK = 3,  /* recursive doubling with re-selection */
};

enum spardl_sag {
	SPARDL_SAG_BRUCK = 0,     /* B-SAG, any number of teams */
	SPARDL_SAG_RECURSIVE = 1, /* R-SAG, teams a power of two */
};

enum spardl_srs {
	SPARDL_SRS_BATCHED = 0,    /* one message per peer and round */
	SPARDL_SRS_SEQUENTIAL = 1, /* one message per block */
};

enum spardl_dtype {
	SPARDL_DTYPE_FLOAT32 = 0,
};

enum spardl_mem_type {
	SPARDL_MEM_HOST = 0,
	/* Since 0.4: grad, indices, values and the residual are device
	 * memory of the device current at plan creation; calls are ordered on
	 * a CUDA stream (the _async calls below). Without a usable device
	 * spardl_plan_create() returns -ENODEV, the message saying why. In
	 * this version a call stages through page-locked host memory: see
	 * docs/API.md, "CUDA plans". */
	SPARDL_MEM_CUDA = 1,
};

enum spardl_plan_param_field {
	SPARDL_PLAN_PARAM_COUNT = 1u << 0,
	SPARDL_PLAN_PARAM_DENSITY = 1u << 1,
	SPARDL_PLAN_PARAM_ALGO = 1u << 2,
	SPARDL_PLAN_PARAM_TEAMS = 1u << 3,
	SPARDL_PLAN_PARAM_SAG = 1u << 4,
	SPARDL_PLAN_PARAM_SRS = 1u << 5,
	SPARDL_PLAN_PARAM_RESIDUAL = 1u << 6,
	SPARDL_PLAN_PARAM_AVERAGE = 1u << 7,
	SPARDL_PLAN_PARAM_DTYPE = 1u << 8,
	SPARDL_PLAN_PARAM_MEM_TYPE = 1u << 9,
};

struct spardl_plan_params {
	/* Bits of enum spardl_plan_param_field; fields whose bit is clear
	 * take their default. spardl_plan_params_init() sets every bit. */
	uint64_t field_mask;
	size_t count;   /* n, elements of the gradient; no default */
	double density; /* k = ceil(density * n) in double, at least 1; 0.01 */
	enum spardl_algo algo; /* SPARDL_ALGO_SPARDL */
	int teams;             /* d, must divide the size; 0: chosen by the simulator's model; 1 */
	enum spardl_sag sag;   /* SPARDL_SAG_BRUCK */
	enum spardl_srs srs;   /* SPARDL_SRS_BATCHED */
	int residual; /* keep what was not delivered for the next call; 1 */
	int average;  /* divide the result by the size; 1 */
	enum spardl_dtype dtype;       /* SPARDL_DTYPE_FLOAT32 */
	enum spardl_mem_type mem_type; /* SPARDL_MEM_HOST */
};

struct spardl_plan;

SPARDL_API void spardl_plan_params_init(struct spardl_plan_params *params);

/* Collective. Every rank must pass the same parameters; a difference is
 * reported on every rank as SPARDL_ERR_MISMATCH naming the field. */
SPARDL_API int spardl_plan_create(struct spardl_comm *comm,
				  const struct spardl_plan_params *params,
				  struct spardl_plan **plan_out);
SPARDL_API void spardl_plan_destroy(struct spardl_plan *plan);

/* Collective, in place: grad (count elements) becomes the global sparse
 * result in dense layout (divided by the size when averaging) and the
 * plan's residual is updated.
 * On failure (a peer died, a timeout, a malformed message) nothing the
 * caller needs is lost: grad is left unchanged, the residual holds exactly
 * old residual + grad (the step's gradient is kept, not delivered: do not
 * submit it again), and the plan is failed: later calls return
 * -SPARDL_ERR_PLAN_FAILED and also add their grad to the residual. Save the
 * residual (spardl_plan_residual) and restore it in a new plan
 * (spardl_plan_set_residual). See docs/API.md, "When a call fails". */
SPARDL_API int spardl_allreduce(struct spardl_plan *plan, void *grad);

/*
 * Since 0.4. Stream-ordered calls: stream is a cudaStream_t (NULL: the
 * legacy default stream). On a SPARDL_MEM_CUDA plan the call is enqueued on
 * stream and this returns at once: work enqueued on stream before it is
 * finished before the call reads grad, and work enqueued after it sees the
 * result. The calls of a communicator's CUDA plans run in the order they
 * were made, even from different streams; its host plans' calls wait for
 * them. grad (indices, values) must not be touched by other
 * streams until the call is complete on stream; *nnz_out is written from
 * the host when the call runs and must stay valid until then. A failure is
 * reported by spardl_plan_sync() and by the plan's later calls; grad,
 * indices and values then keep their contents, as for the synchronous
 * calls. On a SPARDL_MEM_HOST plan stream must be NULL and the call runs
 * synchronously. */
SPARDL_API int spardl_allreduce_async(struct spardl_plan *plan, void *grad, void *stream);
SPARDL_API int spardl_allreduce_sparse_async(struct spardl_plan *plan, const void *grad, int64_t *indices,
					     void *values, size_t *nnz_out, void *stream);
/* Since 0.4. Waits (host side) until every call made on the plan is
 * complete, and returns 0, or the error of the first call that failed with
 * its message in spardl_last_error(). */
SPARDL_API int spardl_plan_sync(struct spardl_plan *plan);

/* Upper bound on the non-zeros spardl_allreduce_sparse() can return. */
SPARDL_API size_t spardl_plan_max_nnz(const struct spardl_plan *plan);

/* Collective. Same reduction as spardl_allreduce(), but grad is left
 * unchanged and the result is returned as nnz (index, value) pairs sorted by
 * index. indices and values must hold spardl_plan_max_nnz() entries.
 * Every rank receives the same pairs. On failure indices, values and
 * nnz_out are untouched; the residual and plan as for spardl_allreduce(). */
SPARDL_API int spardl_allreduce_sparse(struct spardl_plan *plan,
				       const void *grad, int64_t *indices,
				       void *values, size_t *nnz_out);

/* The plan's residual: count elements, in sum units (never divided by the
 * size). Valid until the next call on the plan. On a CUDA plan both take
 * device memory: spardl_plan_residual() waits for the plan's calls and
 * returns a device copy; spardl_plan_set_residual() waits too. */
SPARDL_API int spardl_plan_residual(struct spardl_plan *plan,
				    const void **residual_out);
/* Restore a residual (count elements), e.g. from a checkpoint. Local. */
SPARDL_API int spardl_plan_set_residual(struct spardl_plan *plan,
					const void *residual);

/*
 * What the plan derived and holds. The struct grows at its end only:
 * spardl_plan_info() passes sizeof(*info) along, so a binary built against
 * an older, shorter struct gets exactly its own fields.
 */
struct spardl_plan_info {
	size_t count;
	size_t k;
	size_t block_size;
	size_t block_budget;
	int team_size;
	int teams;
	/* Since 0.2. */
	size_t host_bytes;       /* host memory the plan holds: buffers, slots, scratch */
	size_t registered_bytes; /* of host_bytes, registered with the device or shared with peers */
	size_t device_bytes;     /* device memory the plan holds (CUDA plans) */
	uint64_t max_write;      /* largest single write; longer messages travel in pieces */
	size_t peers;            /* ranks this rank's schedule writes to or reads from */
};
#define SPARDL_PLAN_INFO_SIZE_V1 (4 * sizeof(size_t) + 2 * sizeof(int))

SPARDL_API int spardl_plan_info_sized(const struct spardl_plan *plan, struct spardl_plan_info *info_out,
				      size_t info_size);
#define spardl_plan_info(plan, info_out) spardl_plan_info_sized((plan), (info_out), sizeof(*(info_out)))

/* Where the time of the calls so far went on this rank, in seconds. Grows
 * at its end like struct spardl_plan_info. */
struct spardl_plan_stats {
	uint64_t calls;
	double total;     /* whole calls */
	double accumulate; /* acc = grad + residual */
	double select;    /* top-k selection and packing */
	double reduce;    /* scatter-add, union, merge of received data */
	double wait;      /* waiting for peers' writes (communication) */
	double post;      /* posting writes and waiting for their local completion */
	double output;    /* writing the result and the residual */
	uint64_t scans;   /* selections that had to rescan their block */
	/* Since 0.2. */
	uint64_t failed_calls; /* calls that returned an error after starting */
	/* Since 0.3. */
	uint64_t bytes_sent; /* payload bytes this rank wrote to peers */
	uint64_t writes;     /* writes this rank posted (pieces of split messages counted) */
};
#define SPARDL_PLAN_STATS_SIZE_V1 (2 * sizeof(uint64_t) + 7 * sizeof(double))

SPARDL_API int spardl_plan_stats_sized(const struct spardl_plan *plan, struct spardl_plan_stats *stats_out,
				       size_t stats_size);
#define spardl_plan_stats(plan, stats_out) spardl_plan_stats_sized((plan), (stats_out), sizeof(*(stats_out)))

/* The 0.1 entry points (the v1 fields only), kept for binaries built
 * against 0.1; new code goes through the macros above. */
SPARDL_API int(spardl_plan_info)(const struct spardl_plan *plan, struct spardl_plan_info *info_out);
SPARDL_API int(spardl_plan_stats)(const struct spardl_plan *plan, struct spardl_plan_stats *stats_out);

/* This rank's compiled schedule as readable text; release with free(). */
SPARDL_API int spardl_plan_schedule_text(const struct spardl_plan *plan,
					 char **text_out);

/* ------------------------------------------------------------------ */
/* Simulation                                                          */
/* ------------------------------------------------------------------ */

/*
 * A plan's compiled schedules, every rank's, run on a virtual clock under
 * an alpha-beta-gamma model, without a communicator (docs/SIMULATION.md).
 * Plan parameters with teams = 0 (SparDL) simulate every divisor of the
 * size and keep the fastest; spardl_plan_create() makes the same choice
 * for teams = 0 under the default model.
 */
enum spardl_sim_model_field {
	SPARDL_SIM_ALPHA = 1u << 0,
	SPARDL_SIM_BETA = 1u << 1,
	SPARDL_SIM_GAMMA = 1u << 2,
	SPARDL_SIM_GAMMA_PAIR = 1u << 3,
	SPARDL_SIM_RANKS_PER_NODE = 1u << 4,
};

struct spardl_sim_model {
	uint64_t field_mask; /* bits of enum spardl_sim_model_field */
	double alpha;        /* seconds per message between nodes: latency and overhead; 2e-6 */
	double beta;         /* bytes per second of a node's NIC, each direction; 12.5e9 (100 Gb/s) */
	double gamma;        /* seconds per gradient element of a streaming pass; 0 */
	double gamma_pair;   /* seconds per index-value pair selected, packed, merged or added; 0 */
	int ranks_per_node;  /* consecutive ranks sharing one NIC; messages among them are free; 1 */
};

/* Grows at its end like struct spardl_plan_info. */
struct spardl_sim_result {
	double time;              /* one call, on the rank that finishes last, seconds */
	double phase_time[7];     /* that rank's time per phase (enum order: srs, sag, ag, merge, rs, rag)
				   * and, last, in steps that neither wait nor write */
	double bytes_per_rank;    /* most bytes one rank sends in a call (messages at their bounds) */
	double messages_per_rank; /* most messages one rank sends in a call */
	int teams;                /* the teams simulated (the choice when teams = 0) */
	int exact;                /* 1: every rank simulated; 0: rank 0, peers taken as symmetric */
};
#define SPARDL_SIM_RESULT_SIZE_V1 (10 * sizeof(double) + 2 * sizeof(int))

SPARDL_API void spardl_sim_model_init(struct spardl_sim_model *model);
/* model may be NULL (the defaults). */
SPARDL_API int spardl_simulate_sized(const struct spardl_plan_params *params, int size,
				     const struct spardl_sim_model *model, struct spardl_sim_result *result_out,
				     size_t result_size);
#define spardl_simulate(params, size, model, result_out) \
	spardl_simulate_sized((params), (size), (model), (result_out), sizeof(*(result_out)))

/* One line per environment variable the library reads, with its default
 * and help; a static string. */
SPARDL_API const char *spardl_env_help(void);

#ifdef __cplusplus
}
#endif

#endif
