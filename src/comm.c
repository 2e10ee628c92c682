/* Communicators: rank, size, bootstrap and transport from the parameters or the launcher's environment. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core.h"
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

static int parse_int(const char *name, const char *v, long lo, long hi, int *out)
{
	char *end;
	long x;

	errno = 0;
	x = strtol(v, &end, 10);
	if (errno || end == v || *end || x < lo || x > hi)
		return spardl_error(-SPARDL_ERR_ENV, "%s=%s is not an integer in [%ld, %ld]", name, v, lo, hi);
	*out = (int)x;
	return 0;
}

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
		ret = parse_int(launchers[i].size, s, 1, 1 << 20, size);
		if (!ret)
			ret = parse_int(launchers[i].rank, r, 0, *size - 1, rank);
		if (ret)
			return ret;
		*launcher = (int)i;
		return 0;
	}
	return spardl_error(-SPARDL_ERR_ENV,
			    "no rank and size: run under spardl-run, mpirun, srun or torchrun, set SPARDL_RANK and SPARDL_SIZE, or pass them in struct spardl_comm_params");
}

static char *job_key_from_env(void)
{
	const char *v;
	char buf[256];

	if ((v = spardl_env_str("SPARDL_JOB_KEY")) || (v = spardl_env_str("PMIX_NAMESPACE")) ||
	    (v = spardl_env_str("OMPI_MCA_ess_base_jobid")) || (v = spardl_env_str("OMPI_MCA_orte_ess_jobid")))
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

/* Default rendezvous when SPARDL_BOOTSTRAP is unset. */
static int default_bootstrap(int launcher, int size, const char *job_key, char **addr_out)
{
	const char *ma = spardl_env_str("MASTER_ADDR"), *mp = spardl_env_str("MASTER_PORT"), *ls;
	char buf[300];
	int port = 0, local = -1, ret;

	if (ma && mp) {
		/* torchrun's own store listens on MASTER_PORT. */
		ret = parse_int("MASTER_PORT", mp, 1, 65534, &port);
		if (ret)
			return ret;
		snprintf(buf, sizeof(buf), strchr(ma, ':') ? "[%s]:%d" : "%s:%d", ma, port + 1);
		*addr_out = strdup(buf);
		return *addr_out ? 0 : -ENOMEM;
	}
	if ((ls = spardl_env_str("OMPI_COMM_WORLD_LOCAL_SIZE")) || (ls = spardl_env_str("SPARDL_LOCAL_SIZE")) ||
	    (ls = spardl_env_str("LOCAL_WORLD_SIZE")))
		(void)parse_int("local size", ls, 1, 1 << 20, &local);
	if (local >= 0 && local != size)
		return spardl_error(-SPARDL_ERR_ENV,
				    "the ranks span several hosts (%d of %d on this one) and SPARDL_BOOTSTRAP is unset; set SPARDL_BOOTSTRAP=host:port on every rank, an address of rank 0's host",
				    local, size);
	if (!job_key)
		return spardl_error(-SPARDL_ERR_ENV,
				    "SPARDL_BOOTSTRAP is unset and there is no job key to name a local rendezvous (launcher: %s); set SPARDL_BOOTSTRAP=host:port or SPARDL_JOB_KEY",
				    launchers[launcher].who);
	snprintf(buf, sizeof(buf), "unix:spardl-%u-%s", (unsigned)getuid(), job_key);
	*addr_out = strdup(buf);
	return *addr_out ? 0 : -ENOMEM;
}

/* What each rank resolved SPARDL_TRANSPORT to. */
struct tp_choice {
	char name[32];
	int32_t err;
};

static int choose_transport(struct spardl_comm *comm, const char *name)
{
	struct tp_choice mine = { "", 0 }, *all;
	int ret, w;

	mine.err = spardl_tp_find(name, &comm->tp_ops);
	if (!mine.err)
		snprintf(mine.name, sizeof(mine.name), "%s", comm->tp_ops->name);
	all = calloc((size_t)comm->size, sizeof(*all));
	if (!all)
		return -ENOMEM;
	/* Ranks on different machines may resolve "auto" differently. */
	ret = spardl_bootstrap_allgather(comm->bs, &mine, all, sizeof(mine));
	if (!ret && mine.err)
		ret = mine.err; /* the message spardl_tp_find recorded stands */
	for (w = 0; !ret && w < comm->size; w++) {
		if (all[w].err)
			ret = spardl_error(all[w].err, "rank %d cannot use SPARDL_TRANSPORT=%s (%s); see its log", w,
					   name, spardl_strerror(all[w].err));
		else if (strcmp(all[w].name, mine.name))
			ret = spardl_error(-SPARDL_ERR_MISMATCH,
					   "ranks chose different transports: rank %d %s, rank %d %s; set SPARDL_TRANSPORT to the same value everywhere",
					   comm->rank, mine.name, w, all[w].name);
	}
	free(all);
	if (ret)
		return ret;
	ret = comm->tp_ops->open(comm->bs, comm->timeout_ms, &comm->tp);
	if (ret)
		return ret;
	comm->tp->ops = comm->tp_ops;
	if (comm->rank == 0)
		SPARDL_INFO("%d ranks, transport %s (SPARDL_TRANSPORT=%s)", comm->size, comm->tp_ops->name, name);
	return 0;
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
	comm = calloc(1, sizeof(*comm));
	if (!comm)
		return -ENOMEM;
	if (m & SPARDL_COMM_PARAM_RANK_SIZE) {
		if (params->size < 1 || params->rank < 0 || params->rank >= params->size) {
			ret = spardl_error(-EINVAL, "spardl_comm_create: rank %d and size %d: need 0 <= rank < size",
					   params->rank, params->size);
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
		ret = spardl_env_long("SPARDL_TIMEOUT", 60, 1, 1000000, &timeout_s);
		if (ret)
			goto err;
		comm->timeout_ms = (int)(timeout_s * 1000);
	}
	if ((m & SPARDL_COMM_PARAM_JOB_KEY) && params->job_key)
		comm->job_key = strdup(params->job_key);
	else
		comm->job_key = job_key_from_env();
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
		ret = default_bootstrap(launcher, comm->size, comm->job_key, &addr);
		if (ret)
			goto err;
	}
	if (!comm->job_key && addr) {
		/* One rendezvous address serves one job at a time anyway. */
		comm->job_key = malloc(strlen(addr) + 6);
		if (comm->job_key)
			sprintf(comm->job_key, "addr:%s", addr);
	}
	cfg.rank = comm->rank;
	cfg.size = comm->size;
	cfg.address = addr;
	cfg.job_key = comm->job_key;
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
	else if (spardl_env_str("SPARDL_TRANSPORT"))
		transport = spardl_env_str("SPARDL_TRANSPORT");
	else
		transport = "auto";
	ret = choose_transport(comm, transport);
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
	if (comm->tp)
		comm->tp_ops->close(comm->tp);
	spardl_bootstrap_destroy(comm->bs);
	free(comm->job_key);
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
