/* SPDX-License-Identifier: MIT */
/* Communicators: rank, size, bootstrap and transport from the parameters or the launcher's environment. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bootstrap_msg.h"
#include "core.h"
#include "cuda_plan.h"
#include "env.h"
#include "log.h"

SPARDL_API void spardl_comm_params_init(struct spardl_comm_params *params)
{
	if (params)
		memset(params, 0, sizeof(*params));
}

/* Launchers whose rank and size variables spardl understands, in order. */
static const struct {
	const char *rank, *size, *who;
} launchers[] = {
	{ "SPARDL_RANK", "SPARDL_SIZE", "spardl-run or the user" },
	{ "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "Open MPI" },
	{ "PMI_RANK", "PMI_SIZE", "an MPICH/PMI launcher" },
	{ "SLURM_PROCID", "SLURM_NTASKS", "Slurm" },
	{ "RANK", "WORLD_SIZE", "torchrun" },
};

static int rank_size_from_env(int *rank, int *size, int *launcher)
{
	size_t i;
	int ret;

	for (i = 0; i < sizeof(launchers) / sizeof(launchers[0]); i++) {
		const char *r = spardl_env_str(launchers[i].rank), *s = spardl_env_str(launchers[i].size);

		if (!r && !s)
			continue;
		if (!r || !s)
			return spardl_error(-SPARDL_ERR_ENV, "%s is set but %s is not; set both (or neither)",
					    r ? launchers[i].rank : launchers[i].size,
					    r ? launchers[i].size : launchers[i].rank);
		ret = spardl_env_int(launchers[i].size, size);
		if (!ret)
			ret = spardl_env_int_max(launchers[i].rank, *size - 1, rank);
		if (ret)
			return ret;
		*launcher = (int)i;
		return 0;
	}
	return spardl_error(-SPARDL_ERR_ENV,
			    "no rank and size: run under spardl-run, mpirun, srun or torchrun, set SPARDL_RANK and SPARDL_SIZE, or pass them in struct spardl_comm_params");
}

/* A public identifier of the job from the launcher: keeps two jobs apart
 * when there is no key, but proves nothing. */
static char *job_id_from_env(void)
{
	const char *v;
	char buf[256];

	if ((v = spardl_env_str("PMIX_NAMESPACE")) || (v = spardl_env_str("OMPI_MCA_ess_base_jobid")) ||
	    (v = spardl_env_str("OMPI_MCA_orte_ess_jobid")))
		return strdup(v);
	if ((v = spardl_env_str("SLURM_JOB_ID"))) {
		const char *st = spardl_env_str("SLURM_STEP_ID");

		snprintf(buf, sizeof(buf), "slurm-%s.%s", v, st ? st : "0");
		return strdup(buf);
	}
	if ((v = spardl_env_str("TORCHELASTIC_RUN_ID")))
		return strdup(v);
	return NULL;
}

#define KEY_FILE_MAX 4096

/* SPARDL_JOB_KEY_FILE: a regular file of this user that nobody else can
 * read or write; its content, trailing white space removed, is the key. */
static int read_key_file(const char *path, uint8_t **key_out, size_t *len_out)
{
	struct stat st;
	uint8_t *buf = NULL;
	ssize_t n;
	size_t len;
	int fd, ret;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
	if (fd < 0)
		return spardl_error(-SPARDL_ERR_ENV, "SPARDL_JOB_KEY_FILE=%s cannot be opened: %s%s", path,
				    strerror(errno), errno == ELOOP ? " (a symbolic link is not accepted)" : "");
	if (fstat(fd, &st)) {
		ret = spardl_error(-SPARDL_ERR_ENV, "SPARDL_JOB_KEY_FILE=%s: fstat failed: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		ret = spardl_error(-SPARDL_ERR_ENV, "SPARDL_JOB_KEY_FILE=%s is not a regular file", path);
		goto out;
	}
	if (st.st_uid != geteuid() || (st.st_mode & 077)) {
		ret = spardl_error(-SPARDL_ERR_ENV,
				   "SPARDL_JOB_KEY_FILE=%s must belong to this user (uid %u) and be private (mode "
				   "0600 or stricter); it has uid %u and mode %04o: chmod 600 it",
				   path, (unsigned)geteuid(), (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777));
		goto out;
	}
	if (st.st_size < 1 || st.st_size > KEY_FILE_MAX) {
		ret = spardl_error(-SPARDL_ERR_ENV, "SPARDL_JOB_KEY_FILE=%s holds %lld bytes; a key is 1 to %d bytes",
				   path, (long long)st.st_size, KEY_FILE_MAX);
		goto out;
	}
	buf = malloc((size_t)st.st_size);
	if (!buf) {
		ret = spardl_error(-ENOMEM, "out of memory reading SPARDL_JOB_KEY_FILE");
		goto out;
	}
	n = read(fd, buf, (size_t)st.st_size);
	if (n != (ssize_t)st.st_size) {
		ret = spardl_error(-SPARDL_ERR_ENV, "SPARDL_JOB_KEY_FILE=%s could not be read whole: %s", path,
				   n < 0 ? strerror(errno) : "short read");
		goto out;
	}
	len = (size_t)n;
	while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' ' || buf[len - 1] == '\t'))
		len--;
	if (!len) {
		ret = spardl_error(-SPARDL_ERR_ENV, "SPARDL_JOB_KEY_FILE=%s holds no key (only white space)", path);
		goto out;
	}
	*key_out = buf;
	*len_out = len;
	buf = NULL;
	ret = 0;
out:
	if (buf) {
		explicit_bzero(buf, (size_t)st.st_size);
		free(buf);
	}
	close(fd);
	return ret;
}

/* The job's secret: the parameter, SPARDL_JOB_KEY, or SPARDL_JOB_KEY_FILE.
 * None is fine (an unauthenticated rendezvous, warned about by rank 0). */
static int job_key(const struct spardl_comm_params *params, uint64_t m, struct spardl_comm *comm)
{
	const char *v = NULL, *path;

	if ((m & SPARDL_COMM_PARAM_JOB_KEY) && params->job_key)
		v = params->job_key;
	else
		v = spardl_env_str("SPARDL_JOB_KEY");
	if (v) {
		comm->key_len = strlen(v);
		if (comm->key_len > KEY_FILE_MAX)
			return spardl_error(-EINVAL, "the job key is %zu bytes; at most %d are allowed", comm->key_len,
					    KEY_FILE_MAX);
		comm->key = malloc(comm->key_len);
		if (!comm->key)
			return spardl_error(-ENOMEM, "out of memory for the job key");
		memcpy(comm->key, v, comm->key_len);
		return 0;
	}
	path = spardl_env_str("SPARDL_JOB_KEY_FILE");
	return path ? read_key_file(path, &comm->key, &comm->key_len) : 0;
}

/* Default rendezvous when SPARDL_BOOTSTRAP is unset. */
static int default_bootstrap(int launcher, const struct spardl_comm *comm, char **addr_out)
{
	const char *ma = spardl_env_str("MASTER_ADDR"), *mp = spardl_env_str("MASTER_PORT");
	char buf[300], hex[33];
	uint8_t digest[32];
	int port = 0, local = -1, ret, i;

	if (ma && mp) {
		/* torchrun's own store listens on MASTER_PORT. */
		ret = spardl_env_int("MASTER_PORT", &port);
		if (ret)
			return ret;
		snprintf(buf, sizeof(buf), strchr(ma, ':') ? "[%s]:%d" : "%s:%d", ma, port + 1);
		*addr_out = strdup(buf);
		return *addr_out ? 0 : spardl_error(-ENOMEM, "out of memory");
	}
	/* The first one set counts; a malformed one is an error, not skipped. */
	if ((ret = spardl_env_int("OMPI_COMM_WORLD_LOCAL_SIZE", &local)) == -ENOENT &&
	    (ret = spardl_env_int("SPARDL_LOCAL_SIZE", &local)) == -ENOENT)
		ret = spardl_env_int("LOCAL_WORLD_SIZE", &local);
	if (ret && ret != -ENOENT)
		return ret;
	if (local >= 0 && local != comm->size)
		return spardl_error(-SPARDL_ERR_ENV,
				    "the ranks span several hosts (%d of %d on this one) and SPARDL_BOOTSTRAP is unset; set SPARDL_BOOTSTRAP=host:port on every rank, an address of rank 0's host",
				    local, comm->size);
	if (!comm->key && !comm->job_id)
		return spardl_error(-SPARDL_ERR_ENV,
				    "SPARDL_BOOTSTRAP is unset and there is no job key or job identifier to name a local rendezvous (launcher: %s); set SPARDL_JOB_KEY (a secret shared by the ranks) or SPARDL_BOOTSTRAP=host:port",
				    launchers[launcher].who);
	/* The name is a digest: /proc/net/unix is world-readable, and the
	 * key is a secret. */
	ret = comm->key ? spardl_bs_digest("spardl rendezvous name", comm->key, comm->key_len, digest) :
			  spardl_bs_digest("spardl rendezvous name", comm->job_id, strlen(comm->job_id), digest);
	if (ret)
		return spardl_error(ret, "cannot name the local rendezvous: SHA-256 failed");
	for (i = 0; i < 16; i++)
		snprintf(hex + 2 * i, 3, "%02x", digest[i]);
	snprintf(buf, sizeof(buf), "unix:spardl-%u-%s", (unsigned)getuid(), hex);
	*addr_out = strdup(buf);
	return *addr_out ? 0 : spardl_error(-ENOMEM, "out of memory");
}

/* Every rank resolves SPARDL_TRANSPORT (ranks on different machines may
 * resolve "auto" differently); all must end with the same transport. Then
 * the transport opens (collective), and the ranks agree on the largest
 * write: the smallest transport limit, or SPARDL_MAX_WRITE if lower. */
static int choose_transport(struct spardl_comm *comm, const char *name)
{
	char mine[32] = "", *all;
	uint64_t wmine = 0, *wall;
	long env_max = 0;
	int ret, st, w;

	st = spardl_tp_find(name, &comm->tp_ops);
	if (!st)
		snprintf(mine, sizeof(mine), "%s", comm->tp_ops->name);
	all = calloc((size_t)comm->size, sizeof(mine));
	wall = calloc((size_t)comm->size, sizeof(*wall));
	if (!all || !wall) {
		free(all);
		free(wall);
		return spardl_error(-ENOMEM, "out of memory for %d ranks", comm->size);
	}
	ret = spardl_bootstrap_exchange(comm->bs, st, "use the transport asked for", mine, all, sizeof(mine));
	for (w = 0; !ret && w < comm->size; w++) {
		char theirs[sizeof(mine)];

		memcpy(theirs, all + (size_t)w * sizeof(mine), sizeof(mine));
		theirs[sizeof(mine) - 1] = '\0';
		if (strcmp(theirs, mine))
			ret = spardl_error(-SPARDL_ERR_MISMATCH,
					   "ranks chose different transports: rank %d %s, rank %d %.31s; set SPARDL_TRANSPORT to the same value everywhere",
					   comm->rank, mine, w, theirs);
	}
	if (ret)
		goto out;
	ret = comm->tp_ops->open(comm->bs, comm->timeout_ms, &comm->tp);
	if (ret)
		goto out;
	comm->tp->ops = comm->tp_ops;
	st = spardl_env_long("SPARDL_MAX_WRITE", &env_max);
	wmine = comm->tp->max_write;
	if (!st && env_max > 0 && (uint64_t)env_max < wmine)
		wmine = (uint64_t)env_max;
	ret = spardl_bootstrap_exchange(comm->bs, st, "read SPARDL_MAX_WRITE", &wmine, wall, sizeof(wmine));
	if (ret)
		goto out;
	comm->max_write = UINT64_MAX;
	for (w = 0; w < comm->size; w++)
		if (wall[w] < comm->max_write)
			comm->max_write = wall[w];
	/* Pieces of a split message keep the 8-byte alignment of the slots. */
	comm->max_write &= ~(uint64_t)7;
	if (comm->max_write < 8) {
		ret = spardl_error(-EINVAL, "the largest write the ranks agree on is %llu bytes; it must be at least 8",
				   (unsigned long long)comm->max_write);
		goto out;
	}
	if (comm->rank == 0)
		SPARDL_INFO("%d ranks, transport %s (SPARDL_TRANSPORT=%s), writes of at most %llu bytes", comm->size,
			    comm->tp_ops->name, name, (unsigned long long)comm->max_write);
out:
	free(all);
	free(wall);
	return ret;
}

SPARDL_API int spardl_comm_create(const struct spardl_comm_params *params, struct spardl_comm **comm_out)
{
	uint64_t m = params ? params->field_mask : 0;
	struct spardl_bootstrap_config cfg = { 0 };
	const char *transport = NULL;
	struct spardl_comm *comm;
	char *addr = NULL;
	int launcher = 0, ret;
	long timeout_s;

	if (!comm_out)
		return spardl_error(-EINVAL, "spardl_comm_create: comm_out is NULL");
	ret = spardl_env_check();
	if (ret)
		return ret;
	comm = calloc(1, sizeof(*comm));
	if (!comm)
		return spardl_error(-ENOMEM, "spardl_comm_create: out of memory");
	if (m & SPARDL_COMM_PARAM_RANK_SIZE) {
		if (params->size < 1 || params->rank < 0 || params->rank >= params->size) {
			ret = spardl_error(-EINVAL, "spardl_comm_create: rank %d and size %d: need 0 <= rank < size",
					   params->rank, params->size);
			goto err;
		}
		if (params->size > SPARDL_MAX_RANKS) {
			ret = spardl_error(-EINVAL, "spardl_comm_create: size %d is over the most ranks spardl supports, %d",
					   params->size, SPARDL_MAX_RANKS);
			goto err;
		}
		comm->rank = params->rank;
		comm->size = params->size;
	} else {
		ret = rank_size_from_env(&comm->rank, &comm->size, &launcher);
		if (ret)
			goto err;
	}
	spardl_log_set_rank(comm->rank);
	if (m & SPARDL_COMM_PARAM_TIMEOUT) {
		if (params->timeout_ms <= 0) {
			ret = spardl_error(-EINVAL, "spardl_comm_create: timeout_ms %d must be positive",
					   params->timeout_ms);
			goto err;
		}
		comm->timeout_ms = params->timeout_ms;
	} else {
		ret = spardl_env_long("SPARDL_TIMEOUT", &timeout_s);
		if (ret)
			goto err;
		comm->timeout_ms = (int)(timeout_s * 1000);
	}
	ret = job_key(params, m, comm);
	if (ret)
		goto err;
	comm->job_id = job_id_from_env();
	if ((m & SPARDL_COMM_PARAM_OOB) && !params->oob_allgather) {
		ret = spardl_error(-EINVAL, "spardl_comm_create: SPARDL_COMM_PARAM_OOB is set but oob_allgather is NULL");
		goto err;
	}
	if ((m & SPARDL_COMM_PARAM_OOB) || comm->size == 1) {
		/* No address needed. */
	} else if ((m & SPARDL_COMM_PARAM_BOOTSTRAP) && params->bootstrap) {
		addr = strdup(params->bootstrap);
	} else if (spardl_env_str("SPARDL_BOOTSTRAP")) {
		addr = strdup(spardl_env_str("SPARDL_BOOTSTRAP"));
	} else {
		ret = default_bootstrap(launcher, comm, &addr);
		if (ret)
			goto err;
	}
	if (!comm->job_id && addr) {
		/* One rendezvous address serves one job at a time anyway. */
		comm->job_id = malloc(strlen(addr) + 6);
		if (!comm->job_id) {
			ret = spardl_error(-ENOMEM, "out of memory");
			goto err;
		}
		sprintf(comm->job_id, "addr:%s", addr);
	}
	cfg.rank = comm->rank;
	cfg.size = comm->size;
	cfg.address = addr;
	cfg.key = comm->key;
	cfg.key_len = comm->key_len;
	cfg.job_id = comm->job_id;
	cfg.peer_uids = spardl_env_str("SPARDL_BOOTSTRAP_UIDS");
	cfg.timeout_ms = comm->timeout_ms;
	if (m & SPARDL_COMM_PARAM_OOB) {
		cfg.oob = params->oob_allgather;
		cfg.oob_ctx = params->oob_ctx;
	}
	ret = spardl_bootstrap_create(&cfg, &comm->bs);
	if (ret)
		goto err;
	if ((m & SPARDL_COMM_PARAM_TRANSPORT) && params->transport)
		transport = params->transport;
	else if ((ret = spardl_env_word("SPARDL_TRANSPORT", &transport)))
		goto err;
	ret = choose_transport(comm, transport);
	if (!ret)
		ret = spardl_trace_open(comm->rank, comm->size, &comm->trace);
	if (ret)
		goto err;
	free(addr);
	*comm_out = comm;
	return 0;

err:
	free(addr);
	spardl_comm_destroy(comm);
	return ret;
}

SPARDL_API void spardl_comm_destroy(struct spardl_comm *comm)
{
	if (!comm)
		return;
	spardl_cuda_comm_free(comm);
	if (comm->tp)
		comm->tp_ops->close(comm->tp);
	spardl_trace_close(comm->trace);
	spardl_bootstrap_destroy(comm->bs);
	if (comm->key) {
		explicit_bzero(comm->key, comm->key_len);
		free(comm->key);
	}
	free(comm->job_id);
	free(comm);
}

SPARDL_API int spardl_comm_rank(const struct spardl_comm *comm)
{
	return comm ? comm->rank : -EINVAL;
}

SPARDL_API int spardl_comm_size(const struct spardl_comm *comm)
{
	return comm ? comm->size : -EINVAL;
}

SPARDL_API const char *spardl_comm_transport(const struct spardl_comm *comm)
{
	return comm && comm->tp_ops ? comm->tp_ops->name : NULL;
}
