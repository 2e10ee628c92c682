/* The environment variables spardl reads, with defaults and one line of help each. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>

#include <spardl/spardl.h>

#include "env.h"
#include "log.h"

const char *spardl_env_str(const char *name)
{
	const char *v = getenv(name);

	return v && *v ? v : NULL;
}

int spardl_env_long(const char *name, long def, long lo, long hi, long *out)
{
	const char *v = spardl_env_str(name);
	char *end;
	long x;

	if (!v) {
		*out = def;
		return 0;
	}
	errno = 0;
	x = strtol(v, &end, 10);
	if (errno || end == v || *end || x < lo || x > hi)
		return spardl_error(-SPARDL_ERR_ENV, "%s=%s is not an integer in [%ld, %ld]; unset it for the default %ld",
				    name, v, lo, hi, def);
	*out = x;
	return 0;
}

SPARDL_API const char *spardl_env_help(void)
{
	return
		"SPARDL_RANK            (unset)  this process's rank; also RANK, OMPI_COMM_WORLD_RANK, PMI_RANK, SLURM_PROCID\n"
		"SPARDL_SIZE            (unset)  number of ranks; also WORLD_SIZE, OMPI_COMM_WORLD_SIZE, PMI_SIZE, SLURM_NTASKS\n"
		"SPARDL_BOOTSTRAP       (unset)  rendezvous address host:port, [v6]:port or unix:NAME where rank 0 listens;\n"
		"                                default MASTER_ADDR:(MASTER_PORT+1) under torchrun, else a per-job unix socket (one host)\n"
		"SPARDL_JOB_KEY         (unset)  string that keeps two jobs apart; default from PMIX_NAMESPACE, SLURM_JOB_ID.SLURM_STEP_ID,\n"
		"                                TORCHELASTIC_RUN_ID or the bootstrap address\n"
		"SPARDL_TRANSPORT       auto     shm, verbs or auto (verbs when an active RDMA device exists, else shm)\n"
		"SPARDL_TIMEOUT         60       seconds any wait may last before it fails with a timeout error\n"
		"SPARDL_DEBUG           warn     log level: none, warn, info or debug\n"
		"SPARDL_SHM_SPIN        20       microseconds the shm transport spins before it sleeps on a futex\n"
		"SPARDL_VERBS_DEVICE    (all)    RDMA devices to use: dev[:port],... or ^dev,... to exclude (first ACTIVE port wins;\n"
		"                                with hwloc, the one on this process's NUMA node)\n"
		"SPARDL_VERBS_GID_INDEX (auto)   RoCE GID index; auto picks RoCE v2, the bootstrap's address family, not link-local\n"
		"SPARDL_VERBS_TIMEOUT   18       QP ACK timeout exponent: 4.096 us * 2^value per retry\n"
		"SPARDL_VERBS_RETRY_CNT 7        QP retransmissions before a write fails (0..7)\n"
		"SPARDL_VERBS_SPIN      100      microseconds the verbs transport polls its CQ before it sleeps on the channel\n";
}
