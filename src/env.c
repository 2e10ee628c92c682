/* SPDX-License-Identifier: MIT */
/* The environment variables spardl reads: one table drives parsing, spardl_env_help() and docs/ENVIRONMENT.md. */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <spardl/spardl.h>

#include "bootstrap.h"
#include "env.h"
#include "log.h"

extern char **environ;

_Static_assert(sizeof(long) >= 8, "SPARDL_MAX_WRITE's range needs a 64-bit long");

enum env_kind {
	ENV_INT,  /* decimal in [lo, hi]; also the words, if any */
	ENV_ENUM, /* one of the words */
	ENV_STR,
	ENV_PATH,
};

enum env_section {
	SEC_RENDEZVOUS,
	SEC_SECURITY,
	SEC_TRANSPORT,
	SEC_SHM,
	SEC_VERBS,
	SEC_MEMORY,
	SEC_LOGGING,
	SEC_COUNT,
};

static const char *const section_title[SEC_COUNT] = {
	[SEC_RENDEZVOUS] = "Rank, size and rendezvous",
	[SEC_SECURITY] = "Security",
	[SEC_TRANSPORT] = "Transport",
	[SEC_SHM] = "Shared-memory transport",
	[SEC_VERBS] = "Verbs (RDMA) transport",
	[SEC_MEMORY] = "Memory",
	[SEC_LOGGING] = "Logging",
};

enum {
	ENV_FOREIGN = 1u << 0, /* a launcher's variable, read as a fallback; not checked by spardl_env_check */
	ENV_ZERO_OK = 1u << 1, /* ENV_INT: 0 is accepted besides [lo, hi] */
};

struct env_word {
	const char *word;
	long value;
	int alias; /* accepted, listed apart, never returned by spardl_env_word */
};

struct env_var {
	const char *name;
	enum env_kind kind;
	enum env_section section;
	unsigned flags;
	/* The SPARDL_COMM_PARAM_* bit whose field replaces this variable: then
	 * it is checked where it is read, not by spardl_env_check. */
	uint64_t param;
	long lo, hi;
	const struct env_word *words; /* NULL-terminated */
	/* The default as users see it, parsed like a set value; NULL: none. */
	const char *def;
	/* ENV_STR, ENV_PATH: what is accepted, in words; the code that uses
	 * the value checks it (an address, a device list, a key file). */
	const char *range;
	const char *help;
};

#define MAX_RANKS ((long)SPARDL_MAX_RANKS)

static const struct env_word transport_words[] = {
	{ "shm", 0, 0 }, { "verbs", 1, 0 }, { "auto", 2, 0 }, { NULL, 0, 0 },
};

static const struct env_word debug_words[] = {
	{ "none", SPARDL_LOG_NONE, 0 }, { "warn", SPARDL_LOG_WARN, 0 },   { "info", SPARDL_LOG_INFO, 0 },
	{ "debug", SPARDL_LOG_DEBUG, 0 }, { "0", SPARDL_LOG_NONE, 1 },   { "1", SPARDL_LOG_WARN, 1 },
	{ "2", SPARDL_LOG_INFO, 1 },      { "3", SPARDL_LOG_DEBUG, 1 },  { "trace", SPARDL_LOG_DEBUG, 1 },
	{ NULL, 0, 0 },
};

static const struct env_word stream_words[] = {
	{ "auto", -1, 0 }, { "on", 1, 0 }, { "off", 0, 0 }, { "1", 1, 1 }, { "0", 0, 1 }, { NULL, 0, 0 },
};

static const struct env_word cma_words[] = {
	{ "auto", 1, 0 }, { "all", 2, 0 }, { "off", 0, 0 }, { NULL, 0, 0 },
};

static const struct env_word gid_words[] = {
	{ "auto", -1, 0 }, { NULL, 0, 0 },
};

static const struct env_var vars[] = {
	/* Rank, size and rendezvous */
	{ .name = "SPARDL_RANK", .kind = ENV_INT, .section = SEC_RENDEZVOUS, .param = SPARDL_COMM_PARAM_RANK_SIZE,
	  .lo = 0, .hi = MAX_RANKS - 1,
	  .help = "this process's rank, below SPARDL_SIZE; set by spardl-run (launchers' variables are read when it is unset)" },
	{ .name = "SPARDL_SIZE", .kind = ENV_INT, .section = SEC_RENDEZVOUS, .param = SPARDL_COMM_PARAM_RANK_SIZE,
	  .lo = 1, .hi = MAX_RANKS, .help = "number of ranks; set by spardl-run" },
	{ .name = "SPARDL_LOCAL_RANK", .kind = ENV_INT, .section = SEC_RENDEZVOUS, .lo = 0, .hi = MAX_RANKS - 1,
	  .help = "rank among the processes on this host; set by spardl-run for programs, unused by the library" },
	{ .name = "SPARDL_LOCAL_SIZE", .kind = ENV_INT, .section = SEC_RENDEZVOUS, .lo = 1, .hi = MAX_RANKS,
	  .help = "number of ranks on this host; below SPARDL_SIZE the default local rendezvous cannot work and SPARDL_BOOTSTRAP is required" },
	{ .name = "SPARDL_BOOTSTRAP", .kind = ENV_STR, .section = SEC_RENDEZVOUS, .param = SPARDL_COMM_PARAM_BOOTSTRAP,
	  .range = "host:port, [ipv6]:port or unix:NAME",
	  .help = "where rank 0 listens for the rendezvous (unix: a Linux abstract socket); unset: MASTER_ADDR:(MASTER_PORT+1) under torchrun, else a unix socket named after the job when all ranks share a host" },
	{ .name = "SPARDL_TIMEOUT", .kind = ENV_INT, .section = SEC_RENDEZVOUS, .param = SPARDL_COMM_PARAM_TIMEOUT,
	  .lo = 1, .hi = 1000000, .def = "60",
	  .help = "seconds any wait may last (rendezvous, every exchange, every wait for a peer's write) before it fails with -ETIMEDOUT naming who was missing" },

	/* Security */
	{ .name = "SPARDL_JOB_KEY", .kind = ENV_STR, .section = SEC_SECURITY,
	  .param = SPARDL_COMM_PARAM_JOB_KEY, .range = "any string; keep it secret",
	  .help = "secret string that authenticates the rendezvous and keeps jobs apart; unset: SPARDL_JOB_KEY_FILE, else no authentication, and a launcher's job id (below) or the bootstrap address keeps jobs apart" },
	{ .name = "SPARDL_JOB_KEY_FILE", .kind = ENV_PATH, .section = SEC_SECURITY,
	  .range = "a regular file owned by you, mode 0600 or stricter",
	  .help = "path of a file holding the job key: keeps the key out of the environment, which every child process inherits" },
	{ .name = "SPARDL_BOOTSTRAP_UIDS", .kind = ENV_STR, .section = SEC_SECURITY, .range = "uid[,uid...] or any",
	  .help = "uids admitted to a unix: rendezvous besides the process's own, or any; unset: the process's own uid only" },

	/* Transport */
	{ .name = "SPARDL_TRANSPORT", .kind = ENV_ENUM, .section = SEC_TRANSPORT, .param = SPARDL_COMM_PARAM_TRANSPORT,
	  .words = transport_words, .def = "auto",
	  .help = "the transport; auto: the first that can run here, in the order verbs, shm. All ranks must end up with the same one (checked)" },
	{ .name = "SPARDL_MAX_WRITE", .kind = ENV_INT, .section = SEC_TRANSPORT, .flags = ENV_ZERO_OK, .lo = 64,
	  .hi = 1L << 62, .def = "0",
	  .help = "bytes one transport write may carry (rounded down to a multiple of 8); longer messages travel as several writes. 0: the transport's own limit (verbs: the port's max_msg_sz, at most 2^31). A dense plan's chunks travel in pieces of 1 MiB or more (at most 64 per chunk), or of this size where it is smaller" },

	/* Shared-memory transport */
	{ .name = "SPARDL_SHM_SPIN", .kind = ENV_INT, .section = SEC_SHM, .lo = 0, .hi = 1000000, .def = "20",
	  .help = "microseconds the shm transport polls before sleeping on a futex; 0 sleeps at once (many ranks on few cores)" },
	{ .name = "SPARDL_SHM_CMA", .kind = ENV_ENUM, .section = SEC_SHM, .words = cma_words, .def = "auto",
	  .help = "which receive regions are the owner's private memory, written by the peers with cross-memory attach (process_vm_writev), instead of shared memfd segments the peers map: auto, those of 64 MiB and more where shared memory gets no huge pages (transparent_hugepage/shmem_enabled never or deny, Debian's default), since private memory does (docs/PERFORMANCE.md); all, every one; off, none. auto and all need every rank to be able to attach to every other (same user; no Yama ptrace_scope above 0, no seccomp filter against it), checked when the transport opens: auto falls back to shared segments, all fails naming the rank" },

	/* Verbs transport */
	{ .name = "SPARDL_VERBS_DEVICE", .kind = ENV_STR, .section = SEC_VERBS, .range = "dev[:port],... or ^dev,...",
	  .help = "RDMA devices to use, or with ^ to exclude (docs/VERBS.md); unset: all, the first ACTIVE port wins (with hwloc, the one on this process's NUMA node)" },
	{ .name = "SPARDL_VERBS_GID_INDEX", .kind = ENV_INT, .section = SEC_VERBS, .lo = 0, .hi = 65535,
	  .words = gid_words, .def = "auto",
	  .help = "RoCE GID index; auto prefers RoCE v2, the bootstrap's address family, not link-local" },
	{ .name = "SPARDL_VERBS_TIMEOUT", .kind = ENV_INT, .section = SEC_VERBS, .lo = 1, .hi = 31, .def = "18",
	  .help = "QP ACK timeout exponent: 4.096 us x 2^value per try" },
	{ .name = "SPARDL_VERBS_RETRY_CNT", .kind = ENV_INT, .section = SEC_VERBS, .lo = 0, .hi = 7, .def = "7",
	  .help = "QP retransmissions before a write fails" },
	{ .name = "SPARDL_VERBS_SPIN", .kind = ENV_INT, .section = SEC_VERBS, .lo = 0, .hi = 100000000, .def = "100",
	  .help = "microseconds the verbs transport polls its CQ before sleeping on the completion channel" },

	/* Memory */
	{ .name = "SPARDL_STREAM_OUTPUT", .kind = ENV_ENUM, .section = SEC_MEMORY, .words = stream_words, .def = "auto",
	  .help = "how a dense-layout output (n floats) is stored: on, streaming (non-temporal) stores, which neither fetch its lines nor evict what the next call reads; off, plain stores, faster where the caller's buffers stay in the caches; auto, a plan tries both in its calls 2 to 7 that write a dense-layout output (three each, timing the output and the next accumulate pass) and keeps the faster. Only a sparse algorithm's plan without a residual writes a whole output: with a residual the accumulate pass zeroes grad and the output writes only the result's entries" },

	/* Logging */
	{ .name = "SPARDL_DEBUG", .kind = ENV_ENUM, .section = SEC_LOGGING, .words = debug_words, .def = "warn",
	  .help = "log level: none; warn (errors, once, where they are decided); info (choices such as the transport); debug (plans, peers, sizes)" },
	{ .name = "SPARDL_TRACE", .kind = ENV_PATH, .section = SEC_LOGGING, .range = "a file path; %r is the rank",
	  .help = "record every call (phases, rounds, writes, notifications, compute, registrations, QP states) in a binary trace file per rank, read with spardl-verbs trace; unset: no tracing" },
	{ .name = "SPARDL_TRACE_DIR", .kind = ENV_PATH, .section = SEC_LOGGING, .range = "an existing directory",
	  .help = "where a failed call's flight recorder (the plan's last 256 events) is written, as spardl-flight-PID-rRANK.txt; unset: only the last 12 go to the log" },

	/* Launchers' variables, read when the SPARDL_ ones are unset, in this order. */
	{ .name = "OMPI_COMM_WORLD_RANK", .kind = ENV_INT, .flags = ENV_FOREIGN, .lo = 0, .hi = MAX_RANKS - 1,
	  .help = "Open MPI's mpirun: rank" },
	{ .name = "OMPI_COMM_WORLD_SIZE", .kind = ENV_INT, .flags = ENV_FOREIGN, .lo = 1, .hi = MAX_RANKS,
	  .help = "Open MPI's mpirun: size" },
	{ .name = "OMPI_COMM_WORLD_LOCAL_SIZE", .kind = ENV_INT, .flags = ENV_FOREIGN, .lo = 1, .hi = MAX_RANKS,
	  .help = "Open MPI's mpirun: ranks on this host (read before SPARDL_LOCAL_SIZE)" },
	{ .name = "PMI_RANK", .kind = ENV_INT, .flags = ENV_FOREIGN, .lo = 0, .hi = MAX_RANKS - 1,
	  .help = "MPICH/Hydra and other PMI launchers: rank" },
	{ .name = "PMI_SIZE", .kind = ENV_INT, .flags = ENV_FOREIGN, .lo = 1, .hi = MAX_RANKS,
	  .help = "PMI launchers: size" },
	{ .name = "SLURM_PROCID", .kind = ENV_INT, .flags = ENV_FOREIGN, .lo = 0, .hi = MAX_RANKS - 1,
	  .help = "Slurm's srun: rank" },
	{ .name = "SLURM_NTASKS", .kind = ENV_INT, .flags = ENV_FOREIGN, .lo = 1, .hi = MAX_RANKS,
	  .help = "Slurm's srun: size" },
	{ .name = "RANK", .kind = ENV_INT, .flags = ENV_FOREIGN, .lo = 0, .hi = MAX_RANKS - 1,
	  .help = "torchrun: rank" },
	{ .name = "WORLD_SIZE", .kind = ENV_INT, .flags = ENV_FOREIGN, .lo = 1, .hi = MAX_RANKS,
	  .help = "torchrun: size" },
	{ .name = "LOCAL_WORLD_SIZE", .kind = ENV_INT, .flags = ENV_FOREIGN, .lo = 1, .hi = MAX_RANKS,
	  .help = "torchrun: ranks on this host (read after SPARDL_LOCAL_SIZE)" },
	{ .name = "MASTER_ADDR", .kind = ENV_STR, .flags = ENV_FOREIGN, .range = "host name or address",
	  .help = "torchrun's store host; with MASTER_PORT it gives the default SPARDL_BOOTSTRAP" },
	{ .name = "MASTER_PORT", .kind = ENV_INT, .flags = ENV_FOREIGN, .lo = 1, .hi = 65534,
	  .help = "torchrun's store port; spardl listens on the next one" },
	{ .name = "PMIX_NAMESPACE", .kind = ENV_STR, .flags = ENV_FOREIGN, .range = "any string",
	  .help = "Open MPI (PMIx) job name: the job identifier when there is no key" },
	{ .name = "OMPI_MCA_ess_base_jobid", .kind = ENV_STR, .flags = ENV_FOREIGN, .range = "any string",
	  .help = "Open MPI job id: the job identifier when there is no key" },
	{ .name = "OMPI_MCA_orte_ess_jobid", .kind = ENV_STR, .flags = ENV_FOREIGN, .range = "any string",
	  .help = "older Open MPI's job id: the job identifier when there is no key" },
	{ .name = "SLURM_JOB_ID", .kind = ENV_STR, .flags = ENV_FOREIGN, .range = "any string",
	  .help = "Slurm job: the job identifier slurm-SLURM_JOB_ID.SLURM_STEP_ID when there is no key" },
	{ .name = "SLURM_STEP_ID", .kind = ENV_STR, .flags = ENV_FOREIGN, .range = "any string",
	  .help = "Slurm step (0 when unset)" },
	{ .name = "TORCHELASTIC_RUN_ID", .kind = ENV_STR, .flags = ENV_FOREIGN, .range = "any string",
	  .help = "torchrun's run id: the job identifier when there is no key" },
};

#define NVARS (sizeof(vars) / sizeof(vars[0]))

static const struct env_var *lookup_n(const char *name, size_t len)
{
	size_t i;

	for (i = 0; i < NVARS; i++)
		if (strlen(vars[i].name) == len && !memcmp(vars[i].name, name, len))
			return &vars[i];
	return NULL;
}

/* Names come from the code, never from users: a missing one is a bug. */
static const struct env_var *lookup(const char *name, enum env_kind kind, int *err)
{
	const struct env_var *e = lookup_n(name, strlen(name));

	*err = 0;
	assert(e && "environment variable missing from the table in src/env.c");
	if (!e) {
		*err = spardl_error(-EINVAL, "internal error: %s is not in spardl's table of environment variables", name);
		return NULL;
	}
	/* ENV_STR: the raw text, of any kind (a launcher pair's presence). */
	assert(e->kind == kind || kind == ENV_STR);
	if (e->kind != kind && kind != ENV_STR) {
		*err = spardl_error(-EINVAL, "internal error: %s is read as the wrong kind of value", name);
		return NULL;
	}
	return e;
}

/* Bounds read better as powers of two when they are ones. */
static void fmt_num(char *buf, size_t len, long x)
{
	int k;

	for (k = 16; k < 63; k++)
		if (x == 1L << k) {
			snprintf(buf, len, "2^%d", k);
			return;
		}
	snprintf(buf, len, "%ld", x);
}

static void fmt_words(char *buf, size_t len, const struct env_word *w, int alias)
{
	size_t off = 0;
	int n = 0;

	buf[0] = 0;
	for (; w && w->word; w++)
		if (w->alias == alias && off < len)
			off += (size_t)snprintf(buf + off, len - off, "%s%s", n++ ? ", " : "", w->word);
}

/* What is accepted, in words; hi narrows the table's upper bound. */
static void fmt_range(const struct env_var *e, long hi, char *buf, size_t len)
{
	char lo_s[32], hi_s[32], words[128], aliases[128];

	switch (e->kind) {
	case ENV_INT:
		fmt_num(lo_s, sizeof(lo_s), e->lo);
		fmt_num(hi_s, sizeof(hi_s), hi);
		fmt_words(words, sizeof(words), e->words, 0);
		snprintf(buf, len, "%s%s%s[%s, %s]", e->flags & ENV_ZERO_OK ? "0 or " : "", words,
			 words[0] ? " or " : "", lo_s, hi_s);
		break;
	case ENV_ENUM:
		fmt_words(words, sizeof(words), e->words, 0);
		fmt_words(aliases, sizeof(aliases), e->words, 1);
		snprintf(buf, len, aliases[0] ? "%s (also %s)" : "%s", words, aliases);
		break;
	default:
		snprintf(buf, len, "%s", e->range);
		break;
	}
}

static const struct env_word *find_word(const struct env_word *w, const char *v)
{
	for (; w && w->word; w++)
		if (!strcasecmp(w->word, v))
			return w;
	return NULL;
}

/* Parse v for e, accepting at most hi; no side effects. */
static int parse_value(const struct env_var *e, const char *v, long hi, long *out)
{
	const struct env_word *w = find_word(e->words, v);
	char *end;
	long x;

	if (w) {
		*out = w->value;
		return 0;
	}
	if (e->kind != ENV_INT)
		return -SPARDL_ERR_ENV;
	errno = 0;
	x = strtol(v, &end, 10);
	if (errno || end == v || *end)
		return -SPARDL_ERR_ENV;
	if (!(x == 0 && (e->flags & ENV_ZERO_OK)) && (x < e->lo || x > hi))
		return -SPARDL_ERR_ENV;
	*out = x;
	return 0;
}

/* Value of e (or its default) in *out; -ENOENT, recorded quietly, when unset without a default. */
static int get_value(const struct env_var *e, long hi, long *out)
{
	const char *v = getenv(e->name);
	char range[256];
	long x;

	if (!v || !*v) {
		if (!e->def)
			return spardl_error_quiet(-ENOENT, "%s is unset", e->name);
		if (parse_value(e, e->def, e->hi, &x))
			return spardl_error(-EINVAL, "internal error: %s's default %s is outside its own range", e->name,
					    e->def);
		*out = x;
		return 0;
	}
	if (!parse_value(e, v, hi, &x)) {
		*out = x;
		return 0;
	}
	fmt_range(e, hi, range, sizeof(range));
	if (e->kind == ENV_INT)
		return spardl_error(-SPARDL_ERR_ENV, "%s=%s is not %s%s%s%s", e->name, v,
				    e->words || (e->flags & ENV_ZERO_OK) ? "" : "an integer in ", range,
				    e->def ? "; unset it for the default " : "", e->def ? e->def : "");
	return spardl_error(-SPARDL_ERR_ENV, "%s=%s is not one of %s%s%s", e->name, v, range,
			    e->def ? "; unset it for the default " : "", e->def ? e->def : "");
}

const char *spardl_env_str(const char *name)
{
	const char *v;
	int err;

	if (!lookup(name, ENV_STR, &err))
		return NULL;
	v = getenv(name);
	return v && *v ? v : NULL;
}

/* The number name's value stands for, at most hi; e is its entry. */
static int get(const char *name, enum env_kind kind, long hi, const struct env_var **e_out, long *out)
{
	const struct env_var *e;
	long x;
	int ret;

	e = lookup(name, kind, &ret);
	if (!e)
		return ret;
	ret = get_value(e, hi < e->hi ? hi : e->hi, &x);
	if (ret)
		return ret;
	*e_out = e;
	*out = x;
	return 0;
}

int spardl_env_long(const char *name, long *out)
{
	const struct env_var *e;

	return get(name, ENV_INT, LONG_MAX, &e, out);
}

int spardl_env_int_max(const char *name, int hi, int *out)
{
	const struct env_var *e;
	long x;
	int ret;

	ret = get(name, ENV_INT, hi, &e, &x);
	if (ret)
		return ret;
	assert(e->lo >= INT_MIN);
	*out = (int)x;
	return 0;
}

int spardl_env_int(const char *name, int *out)
{
	return spardl_env_int_max(name, INT_MAX, out);
}

int spardl_env_enum(const char *name, int *out)
{
	const struct env_var *e;
	long x;
	int ret;

	ret = get(name, ENV_ENUM, LONG_MAX, &e, &x);
	if (ret)
		return ret;
	*out = (int)x;
	return 0;
}

int spardl_env_word(const char *name, const char **out)
{
	const struct env_var *e;
	const struct env_word *w;
	long x;
	int ret;

	ret = get(name, ENV_ENUM, LONG_MAX, &e, &x);
	if (ret)
		return ret;
	for (w = e->words; w->alias || w->value != x; w++)
		;
	*out = w->word;
	return 0;
}

int spardl_env_enum_quiet(const char *name, int *out)
{
	const struct env_var *e = lookup_n(name, strlen(name));
	const char *v = getenv(name);
	long x;

	assert(e && e->kind == ENV_ENUM && e->def);
	if (!e || e->kind != ENV_ENUM || !e->def)
		return -EINVAL;
	if (parse_value(e, v && *v ? v : e->def, e->hi, &x))
		return -SPARDL_ERR_ENV;
	*out = (int)x;
	return 0;
}

/* ---- spardl_env_check ---- */

/* The table's SPARDL_ name closest to name (edit distance). */
static const char *closest(const char *name, size_t len)
{
	size_t row[2][65], i, j, k, best = SIZE_MAX;
	const char *pick = NULL;

	if (len > 64)
		len = 64;
	for (k = 0; k < NVARS; k++) {
		const char *t = vars[k].name;
		size_t tl = strlen(t);

		if (vars[k].flags & ENV_FOREIGN || tl > 64)
			continue;
		for (j = 0; j <= tl; j++)
			row[0][j] = j;
		for (i = 1; i <= len; i++) {
			size_t *cur = row[i & 1], *prev = row[(i - 1) & 1];

			cur[0] = i;
			for (j = 1; j <= tl; j++) {
				size_t sub = prev[j - 1] + (name[i - 1] != t[j - 1]);
				size_t del = prev[j] + 1, ins = cur[j - 1] + 1;

				cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
			}
		}
		if (row[len & 1][tl] < best) {
			best = row[len & 1][tl];
			pick = t;
		}
	}
	return pick;
}

int spardl_env_check(void)
{
	const char *v;
	size_t i;
	char **p;
	long x;
	int ret;

	/* In the table's order, so the first malformed one reported is stable. */
	for (i = 0; i < NVARS; i++) {
		const struct env_var *e = &vars[i];

		/* Launchers' variables are read only as fallbacks; those a
		 * parameter can replace are checked where they are read. */
		if ((e->flags & ENV_FOREIGN) || e->param || (e->kind != ENV_INT && e->kind != ENV_ENUM))
			continue;
		v = getenv(e->name);
		if (!v || !*v)
			continue;
		ret = get_value(e, e->hi, &x);
		if (ret)
			return ret;
	}
	for (p = environ; p && *p; p++) {
		const char *eq = strchr(*p, '=');
		size_t len = eq ? (size_t)(eq - *p) : 0;

		if (!strncmp(*p, "SPARDL_", 7) && eq && !lookup_n(*p, len))
			SPARDL_WARN("%.*s is not a variable spardl reads; did you mean %s? (`spardl-verbs env` lists them)",
				    (int)len, *p, closest(*p, len));
	}
	return 0;
}

/* ---- help and documentation, both from the table ---- */

static const char *shown_default(const struct env_var *e)
{
	return e->def ? e->def : "unset";
}

static char help_text[16384];
static pthread_once_t help_once = PTHREAD_ONCE_INIT;

static void help_add(size_t *off, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void help_add(size_t *off, const char *fmt, ...)
{
	va_list ap;

	if (*off >= sizeof(help_text))
		return;
	va_start(ap, fmt);
	*off += (size_t)vsnprintf(help_text + *off, sizeof(help_text) - *off, fmt, ap);
	va_end(ap);
}

static void help_entries(size_t *off, int section, unsigned foreign)
{
	char range[256];
	size_t i;
	long x;

	(void)x; /* unused under NDEBUG */
	for (i = 0; i < NVARS; i++) {
		if ((vars[i].flags & ENV_FOREIGN) != foreign || (!foreign && (int)vars[i].section != section))
			continue;
		/* Every default must pass its own check; the unit test reaches this. */
		assert(!vars[i].def || vars[i].kind == ENV_STR || !parse_value(&vars[i], vars[i].def, vars[i].hi, &x));
		fmt_range(&vars[i], vars[i].hi, range, sizeof(range));
		help_add(off, "  %-26s %-6s %s\n      %s\n", vars[i].name, shown_default(&vars[i]), range, vars[i].help);
	}
}

static void build_help(void)
{
	size_t off = 0;
	int s;

	help_add(&off, "Environment variables (name, default, accepted values, meaning):\n");
	for (s = 0; s < SEC_COUNT; s++) {
		help_add(&off, "%s:\n", section_title[s]);
		help_entries(&off, s, 0);
	}
	help_add(&off, "Launchers' variables, read when SPARDL_RANK and SPARDL_SIZE are unset (pairs in this order):\n");
	help_entries(&off, 0, ENV_FOREIGN);
	/* A truncated list would silently drop variables. */
	assert(off < sizeof(help_text));
}

SPARDL_API const char *spardl_env_help(void)
{
	pthread_once(&help_once, build_help);
	return help_text;
}

static void md_cell(FILE *f, const char *s)
{
	for (; *s; s++) {
		if (*s == '<')
			fputs("&lt;", f);
		else if (*s == '>')
			fputs("&gt;", f);
		else if (*s == '|')
			fputs("\\|", f);
		else
			fputc(*s, f);
	}
}

static void md_table(FILE *f, int section, unsigned foreign)
{
	char range[256];
	size_t i;

	fputs("| variable | default | accepted | meaning |\n|---|---|---|---|\n", f);
	for (i = 0; i < NVARS; i++) {
		if ((vars[i].flags & ENV_FOREIGN) != foreign || (!foreign && (int)vars[i].section != section))
			continue;
		fmt_range(&vars[i], vars[i].hi, range, sizeof(range));
		fprintf(f, vars[i].def ? "| `%s` | `%s` | " : "| `%s` | %s | ", vars[i].name, shown_default(&vars[i]));
		md_cell(f, range);
		fputs(" | ", f);
		md_cell(f, vars[i].help);
		fputs(" |\n", f);
	}
}

int spardl_env_markdown(FILE *f)
{
	int s;

	for (s = 0; s < SEC_COUNT; s++) {
		fprintf(f, "%s### %s\n\n", s ? "\n" : "", section_title[s]);
		md_table(f, s, 0);
	}
	fputs("\n### Launchers' variables\n\nRead when `SPARDL_RANK` and `SPARDL_SIZE` are unset, pairs in the order of this table.\n\n",
	      f);
	md_table(f, 0, ENV_FOREIGN);
	if (fflush(f) || ferror(f))
		return spardl_error(-EIO, "cannot write the environment variables' table");
	return 0;
}

const char *spardl_env_name(size_t i)
{
	return i < NVARS ? vars[i].name : NULL;
}
