/* SPDX-License-Identifier: MIT */
/* Shared-memory transport: sealed memfd segments mapped by peers, a write is a copy plus a doorbell. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/random.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "copy.h"
#include "env.h"
#include "log.h"
#include "shm.h"
#include "transport.h"

#define HUGE_THRESHOLD (4u << 20)
/* SPARDL_SHM_CMA=auto: receive regions from this size on are private
 * (docs/PERFORMANCE.md: below it, shared segments and direct stores were
 * faster; from it on, their 4 KiB pages stalled calls). */
#define CMA_THRESHOLD (64u << 20)
/* Every segment a peer may map: a memfd of this name, with exactly these
 * seals, so a peer's announcement can only ever point at spardl memory. */
#define SEG_NAME "spardl"
#define SEG_SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)
/* Largest notification ring (entries). */
#define RING_MAX_CAP (1u << 24)
/* Writes are copies: no limit but the address space. */
#define SHM_MAX_WRITE (UINT64_C(1) << 62)
/* How often a blocked wait looks whether its peers are still alive. */
#define LIVENESS_MS 100
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

/* A random word of this process, announced with its address: a peer that
 * reads it back by cross-memory attach knows attach works and that the pid
 * is still this process. */
static _Atomic uint64_t cma_probe_word;

struct shm_tp {
	struct spardl_tp base;
	pid_t *pids; /* per rank */
	uint64_t *probe_addr, *probe_val; /* per rank: its cma_probe_word */
	long spin_us;
	int cma_ok; /* every rank can attach to every other (checked at open) */
	int cma;    /* SPARDL_SHM_CMA of this rank: 0 off, 1 large regions, 2 all */
};

struct shm_mr {
	struct spardl_tp_mr base;
	int fd;  /* memfd for shared REMOTE_WRITE memory, else -1 */
	int cma; /* REMOTE_WRITE memory kept private, written by cross-memory attach */
	size_t map_len;
};

/* A peer's receive region: mapped here (addr is local), or with cma its
 * private memory (addr is in the peer), written with process_vm_writev. */
struct shm_rmr {
	struct spardl_tp_rmr base;
	void *addr;
	size_t map_len;
	int cma;
	pid_t pid;
	int pidfd; /* the endpoint's, not owned */
};

/* The notification queue of one rank: many producers (peers), one consumer.
 * Everything in it is writable by the peers, so nothing read from it is
 * trusted as a bound: the capacity each side uses is its own copy, and
 * entries are checked by the executor against the schedule. */
enum { ENTRY_NOTIFY = 0, ENTRY_ABORT = 1 };

struct ring_entry {
	_Atomic uint64_t seq; /* position + 1 once the entry is published */
	uint32_t imm;
	int32_t peer;
	uint64_t len;
	uint32_t kind;
	uint32_t pad;
};

struct ring {
	_Atomic uint32_t wake;    /* futex word, bumped after every publish */
	_Atomic uint32_t waiters; /* the consumer sleeps on wake */
	uint32_t cap_unused;      /* kept for the layout; the capacity is local */
	uint32_t pad;
	_Atomic uint64_t reserve __attribute__((aligned(64))); /* next position for producers */
	_Atomic uint64_t head __attribute__((aligned(64)));    /* next position for the consumer */
	struct ring_entry e[] __attribute__((aligned(64)));
};

/* What a rank announces in ep_create: its ring and its receive region. */
struct ep_info {
	int32_t pid;
	int32_t ring_fd;
	uint32_t ring_cap;
	int32_t recv_fd;    /* -1: no shared receive region */
	uint64_t recv_len;
	uint64_t recv_addr; /* recv_fd -1: the private region's address in the rank, 0 none */
};

struct shm_ep {
	struct spardl_tp_ep base;
	struct ring *own;
	int own_fd;
	size_t own_len;
	uint32_t own_cap;
	int npeers;
	int *peers;
	struct ring **rings; /* per rank; mapped for listed peers only */
	size_t *ring_len;
	uint32_t *ring_cap;  /* per rank: the capacity that rank announced, checked */
	int *pidfds;         /* per listed peer, -1 when unavailable */
	char *gone;          /* per listed peer: its exit was reported */
	struct timespec last_check;
	uint64_t writes; /* writes made, the wr_id of traced ones */
};

static struct shm_tp *tp_of(struct spardl_tp *tp)
{
	return (struct shm_tp *)tp;
}

static int shm_available(void)
{
	return 1;
}

/* Identity of the machine and pid namespace: ranks must share both. */
struct host_id {
	int32_t pid;
	uint32_t pad;
	uint64_t pidns;
	uint64_t probe_addr; /* cma_probe_word in the rank */
	uint64_t probe_val;  /* and its value */
	char boot_id[48];
};

static int host_identity(struct host_id *id)
{
	struct stat st;
	int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
	ssize_t n;

	memset(id, 0, sizeof(*id));
	id->pid = (int32_t)getpid();
	if (!atomic_load(&cma_probe_word)) {
		uint64_t v = 0;

		if (getrandom(&v, sizeof(v), 0) != (ssize_t)sizeof(v))
			v = ((uint64_t)getpid() << 32) ^ (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)id;
		v |= 1;
		atomic_compare_exchange_strong(&cma_probe_word, &(uint64_t){ 0 }, v);
	}
	id->probe_addr = (uint64_t)(uintptr_t)&cma_probe_word;
	id->probe_val = atomic_load(&cma_probe_word);
	if (fd < 0)
		return spardl_error(-errno, "shm: cannot open /proc/sys/kernel/random/boot_id: %s (is /proc mounted?)",
				    strerror(errno));
	n = read(fd, id->boot_id, sizeof(id->boot_id) - 1);
	close(fd);
	if (n <= 0)
		return spardl_error(-EIO, "shm: cannot read the boot id");
	if (stat("/proc/self/ns/pid", &st) == 0)
		id->pidns = (uint64_t)st.st_ino;
	return 0;
}

/* The shared-memory huge-page setting, transparent_hugepage/shmem_enabled
 * ("" when unknown), and whether shared segments can get huge pages. */
static int shmem_thp(char *word, size_t len)
{
	char line[128] = "", *open_b, *close_b;
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/shmem_enabled", "re");

	word[0] = '\0';
	if (f) {
		if (!fgets(line, sizeof(line), f))
			line[0] = '\0';
		fclose(f);
	}
	open_b = strchr(line, '[');
	close_b = open_b ? strchr(open_b, ']') : NULL;
	if (!open_b || !close_b)
		return 0;
	*close_b = '\0';
	snprintf(word, len, "%s", open_b + 1);
	return strcmp(word, "never") && strcmp(word, "deny");
}

/* Reads rank's probe word by cross-memory attach (the kernel's ptrace
 * access check, which writes need too): 0, or an errno (EPROTO: another
 * value, so pid is no longer that rank). */
static int cma_check(const struct shm_tp *tp, int rank)
{
	uint64_t v = 0;
	struct iovec l = { &v, sizeof(v) }, r = { (void *)(uintptr_t)tp->probe_addr[rank], sizeof(v) };
	ssize_t n = process_vm_readv(tp->pids[rank], &l, 1, &r, 1, 0);

	if (n != (ssize_t)sizeof(v))
		return n < 0 ? errno : EIO;
	return v == tp->probe_val[rank] ? 0 : EPROTO;
}

/* Whether this rank can attach to every other: 0 or the first failure's
 * errno, with its rank in *bad. */
static int cma_probe(const struct shm_tp *tp, int *bad)
{
	int i, err;

	for (i = 0; i < tp->base.size; i++) {
		int pfd;

		if (i == tp->base.rank)
			continue;
		*bad = i;
		pfd = (int)syscall(SYS_pidfd_open, tp->pids[i], 0);
		if (pfd < 0)
			return errno ? errno : EIO;
		err = cma_check(tp, i);
		close(pfd);
		if (err)
			return err;
	}
	return 0;
}

/* SPARDL_SHM_CMA: every rank probes every other, and all learn every
 * rank's result and setting, so all decide the same. */
static int cma_agree(struct shm_tp *tp, struct spardl_bootstrap *bs, int mode)
{
	int size = tp->base.size, rank = tp->base.rank, bad = -1, err, i, ret;
	uint8_t mine[2], *every = calloc((size_t)size, 2);

	err = cma_probe(tp, &bad);
	mine[0] = !err;
	mine[1] = (uint8_t)mode;
	ret = every ? 0 : spardl_error(-ENOMEM, "shm: out of memory for %d ranks", size);
	ret = spardl_bootstrap_exchange(bs, ret, "check cross-memory attach", mine, every, 2);
	if (ret) {
		free(every);
		return ret;
	}
	tp->cma_ok = 1;
	for (i = 0; i < size; i++)
		tp->cma_ok &= every[2 * i] != 0;
	tp->cma = tp->cma_ok ? mode : 0;
	/* Shared segments with huge pages take the dense ring's direct
	 * stores, which measured faster still (docs/PERFORMANCE.md). */
	if (tp->cma == 1) {
		char word[32];

		if (shmem_thp(word, sizeof(word))) {
			tp->cma = 0;
			SPARDL_DEBUG("shm: receive regions are shared memfd segments: transparent_hugepage/shmem_enabled is '%s', so they get huge pages (SPARDL_SHM_CMA=auto)",
				     word);
		}
	}
	for (i = 0; !tp->cma_ok && i < size; i++) {
		if (every[2 * i + 1] != 2)
			continue;
		if (err)
			ret = spardl_error(-EPERM, "shm: SPARDL_SHM_CMA=all (rank %d), but rank %d cannot attach to rank %d's memory: %s; ranks must run as one user, with kernel.yama.ptrace_scope 0 and no seccomp filter against process_vm_readv/writev (or use SPARDL_SHM_CMA=auto or off)",
					   i, rank, bad, strerror(err));
		else
			ret = spardl_error(-EPERM, "shm: SPARDL_SHM_CMA=all (rank %d), but not every rank can attach to its peers' memory (see the failing rank's message); use SPARDL_SHM_CMA=auto or off",
					   i);
		break;
	}
	free(every);
	if (!ret && tp->cma)
		SPARDL_DEBUG("shm: %s receive regions are private memory, written by cross-memory attach (SPARDL_SHM_CMA=%s)",
			     tp->cma == 2 ? "all" : "64 MiB and larger", tp->cma == 2 ? "all" : "auto");
	if (!ret && mode && !tp->cma_ok && err)
		SPARDL_DEBUG("shm: receive regions are shared memfd segments: cross-memory attach to rank %d failed: %s",
			     bad, strerror(err));
	return ret;
}

static int shm_open_tp(struct spardl_bootstrap *bs, int timeout_ms, struct spardl_tp **tp_out)
{
	int size = spardl_bootstrap_size(bs), rank = spardl_bootstrap_rank(bs), ret, i;
	struct host_id me, *all;
	struct shm_tp *tp;
	long spin = 0;
	int cma = 1;

	all = calloc((size_t)size, sizeof(*all));
	tp = calloc(1, sizeof(*tp));
	if (tp) {
		tp->pids = calloc((size_t)size, sizeof(*tp->pids));
		tp->probe_addr = calloc((size_t)size, sizeof(*tp->probe_addr));
		tp->probe_val = calloc((size_t)size, sizeof(*tp->probe_val));
	}
	if (!all || !tp || !tp->pids || !tp->probe_addr || !tp->probe_val)
		ret = spardl_error(-ENOMEM, "shm: out of memory for %d ranks", size);
	else
		ret = spardl_env_long("SPARDL_SHM_SPIN", &spin);
	if (!ret)
		ret = spardl_env_enum("SPARDL_SHM_CMA", &cma);
	if (!ret)
		ret = host_identity(&me);
	/* Whatever failed here, take part: every rank learns of it. */
	ret = spardl_bootstrap_exchange(bs, ret, "open the shm transport", &me, all, sizeof(me));
	for (i = 0; !ret && i < size; i++) {
		all[i].boot_id[sizeof(all[i].boot_id) - 1] = '\0';
		if (strcmp(all[i].boot_id, me.boot_id) || all[i].pidns != me.pidns) {
			ret = spardl_error(-EOPNOTSUPP,
					   "shm transport: rank %d runs on another host or pid namespace than rank %d; the shm transport needs all ranks on one host (use SPARDL_TRANSPORT=verbs across hosts)",
					   i, rank);
			break;
		}
		if (all[i].pid <= 0) {
			ret = spardl_error(-EPROTO, "shm transport: rank %d announced pid %d", i, (int)all[i].pid);
			break;
		}
		tp->pids[i] = all[i].pid;
		tp->probe_addr[i] = all[i].probe_addr;
		tp->probe_val[i] = all[i].probe_val;
	}
	/* Every rank checked the same table: all agree. */
	if (ret)
		goto err_free;
	tp->spin_us = spin;
	tp->base.bs = bs;
	tp->base.rank = rank;
	tp->base.size = size;
	ret = cma_agree(tp, bs, cma);
	if (ret)
		goto err_free;
	free(all);
	tp->base.timeout_ms = timeout_ms;
	tp->base.max_write = SHM_MAX_WRITE;
	/* A write is a memcpy by the writer: any of its memory can be the
	 * source, and the peers' regions are mapped here (direct()). */
	tp->base.caps = SPARDL_TP_CAP_HOST_SOURCE | SPARDL_TP_CAP_DIRECT;
	*tp_out = &tp->base;
	return 0;

err_free:
	if (tp) {
		free(tp->pids);
		free(tp->probe_addr);
		free(tp->probe_val);
	}
	free(tp);
	free(all);
	return ret;
}

static void shm_close(struct spardl_tp *tp)
{
	if (!tp)
		return;
	free(tp_of(tp)->pids);
	free(tp_of(tp)->probe_addr);
	free(tp_of(tp)->probe_val);
	free(tp);
}

static size_t page_round(size_t len)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);

	return len ? (len + pg - 1) / pg * pg : pg;
}

/* A memfd peers may map: named SEG_NAME, len bytes, sealed against resizing. */
static int make_segment(size_t len, const char *what, int *fd_out)
{
	int fd = memfd_create(SEG_NAME, MFD_CLOEXEC | MFD_ALLOW_SEALING), ret;

	if (fd < 0)
		return spardl_error(-errno, "shm: memfd_create for the %s failed: %s%s", what, strerror(errno),
				    errno == EMFILE || errno == ENFILE ? " (raise the open file limit, ulimit -n)" : "");
	if (ftruncate(fd, (off_t)len)) {
		ret = spardl_error(-errno, "shm: cannot size the %s (%zu bytes): %s", what, len, strerror(errno));
		close(fd);
		return ret;
	}
	if (fcntl(fd, F_ADD_SEALS, SEG_SEALS)) {
		ret = spardl_error(-errno, "shm: cannot seal the %s: %s", what, strerror(errno));
		close(fd);
		return ret;
	}
	*fd_out = fd;
	return 0;
}

/* Once per process: whether large shared receive regions have huge pages. */
static void log_shmem_thp(void)
{
	static atomic_int said;
	char word[32];

	if (atomic_exchange(&said, 1))
		return;
	if (shmem_thp(word, sizeof(word)))
		SPARDL_DEBUG("shm: shared receive regions of 4 MiB and more ask for huge pages (transparent_hugepage/shmem_enabled is '%s')",
			     word);
	else
		SPARDL_DEBUG("shm: shared receive regions of 4 MiB and more use 4 KiB pages: transparent_hugepage/shmem_enabled is '%s' "
			     "(docs/PERFORMANCE.md)",
			     word[0] ? word : "unknown");
}

static int shm_mem_alloc(struct spardl_tp *tp, size_t len, enum spardl_mem_type type, unsigned access,
			 struct spardl_tp_mr **mr_out)
{
	struct shm_mr *mr;
	int ret;

	if (type != SPARDL_MEM_HOST)
		return spardl_tp_no_mem_alloc(tp, len, type, access, mr_out);
	mr = calloc(1, sizeof(*mr));
	if (!mr)
		return spardl_error(-ENOMEM, "shm: out of memory");
	mr->fd = -1;
	mr->map_len = page_round(len);
	/* Private receive memory, which gets huge pages where shared memory
	 * may not (docs/PERFORMANCE.md), when every rank can attach. */
	mr->cma = (access & SPARDL_ACCESS_REMOTE_WRITE) && tp_of(tp)->cma_ok &&
		  (tp_of(tp)->cma == 2 || (tp_of(tp)->cma == 1 && mr->map_len >= CMA_THRESHOLD));
	if ((access & SPARDL_ACCESS_REMOTE_WRITE) && !mr->cma) {
		ret = make_segment(mr->map_len, "receive region", &mr->fd);
		if (ret)
			goto err_free;
		mr->base.addr = mmap(NULL, mr->map_len, PROT_READ | PROT_WRITE, MAP_SHARED, mr->fd, 0);
	} else {
		mr->base.addr = mmap(NULL, mr->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
				     -1, 0);
	}
	if (mr->base.addr == MAP_FAILED) {
		ret = spardl_error(-errno, "shm: cannot map %zu bytes: %s", mr->map_len, strerror(errno));
		goto err_close;
	}
	/* Large buffers are walked every call: huge pages cut the first-touch
	 * and TLB cost (docs/PERFORMANCE.md). Advice only, so failure is fine;
	 * a shared segment gets them only where the kernel allows shmem THP. */
	if (mr->map_len >= HUGE_THRESHOLD) {
		(void)madvise(mr->base.addr, mr->map_len, MADV_HUGEPAGE);
		if (mr->fd >= 0)
			log_shmem_thp();
	}
	/* Touch every page now so no call pays the first-touch faults. */
	memset(mr->base.addr, 0, mr->map_len);
	mr->base.len = len;
	mr->base.alloc_len = mr->map_len;
	mr->base.mem_type = type;
	mr->base.access = access;
	mr->base.registered = mr->fd >= 0 || mr->cma;
	*mr_out = &mr->base;
	return 0;

err_close:
	if (mr->fd >= 0)
		close(mr->fd);
err_free:
	free(mr);
	return ret;
}

static void shm_mem_free(struct spardl_tp *tp, struct spardl_tp_mr *base)
{
	struct shm_mr *mr = (struct shm_mr *)base;

	if (!mr)
		return;
	if (mr->cma) {
		/* A late peer may still write here: the memory goes, but the
		 * addresses stay reserved (inaccessible), so such a write
		 * fails instead of landing in whatever reused them. */
		if (mmap(mr->base.addr, mr->map_len, PROT_NONE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
			 -1, 0) == MAP_FAILED)
			SPARDL_DEBUG("shm: could not release a private receive region (%zu bytes): %s; it stays mapped",
				     mr->map_len, strerror(errno));
		free(mr);
		return;
	}
	munmap(mr->base.addr, mr->map_len);
	if (mr->fd >= 0)
		close(mr->fd);
	free(mr);
}

/* Checks an opened descriptor of a peer's segment: a spardl memfd (its
 * name, exactly spardl's seals, so it can neither be a file the peer has
 * open nor change size under us) of exactly len bytes. */
int spardl_shm_check_segment(int fd, const char *path, size_t len, char *why, size_t why_len)
{
	char link[128];
	struct stat st;
	ssize_t n;
	int seals;

	n = readlink(path, link, sizeof(link) - 1);
	if (n < 0) {
		snprintf(why, why_len, "cannot read the link %s: %s", path, strerror(errno));
		return -EACCES;
	}
	link[n] = '\0';
	if (strncmp(link, "/memfd:" SEG_NAME " ", sizeof("/memfd:" SEG_NAME " ") - 1)) {
		snprintf(why, why_len, "it is not a spardl segment but %.80s", link);
		return -EACCES;
	}
	seals = fcntl(fd, F_GET_SEALS);
	if (seals < 0 || seals != SEG_SEALS) {
		snprintf(why, why_len, "it is not a sealed spardl memfd (seals %d)", seals);
		return -EACCES;
	}
	if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		snprintf(why, why_len, "it is not a regular memory file");
		return -EACCES;
	}
	if ((uint64_t)st.st_size != len) {
		snprintf(why, why_len, "it holds %lld bytes, not the %zu announced", (long long)st.st_size, len);
		return -EACCES;
	}
	return 0;
}

/* Map a peer's segment through /proc: no names to clean up, and the memory
 * stays valid for as long as any rank maps it, whoever dies first. Nothing
 * the peer announced is used before it is checked. */
static int map_peer(struct shm_tp *tp, int peer, int32_t pid, int32_t fd, uint64_t len, uint64_t min_len,
		    const char *what, void **addr_out)
{
	char path[64], why[200];
	void *addr;
	int pfd, ret;

	if (pid != tp->pids[peer])
		return spardl_error(-EPROTO, "shm: rank %d announced its %s in pid %d, but it is pid %d", peer, what,
				    (int)pid, (int)tp->pids[peer]);
	if (fd < 0 || len < min_len || len > (uint64_t)SIZE_MAX / 2)
		return spardl_error(-EPROTO, "shm: rank %d announced a %s of %llu bytes (fd %d); at least %llu are needed",
				    peer, what, (unsigned long long)len, (int)fd, (unsigned long long)min_len);
	snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)pid, (int)fd);
	pfd = open(path, O_RDWR | O_CLOEXEC);
	if (pfd < 0) {
		int err = errno;

		if (err == ENOENT)
			return spardl_error(-ECONNRESET, "shm: rank %d (pid %d) has exited", peer, (int)pid);
		return spardl_error(-err, "shm: cannot open rank %d's %s %s: %s; the shm transport needs all ranks to run as the same user in one pid namespace",
				    peer, what, path, strerror(err));
	}
	ret = spardl_shm_check_segment(pfd, path, (size_t)len, why, sizeof(why));
	if (ret) {
		close(pfd);
		return spardl_error(ret, "shm: refused rank %d's %s (%s): %s", peer, what, path, why);
	}
	addr = mmap(NULL, (size_t)len, PROT_READ | PROT_WRITE, MAP_SHARED, pfd, 0);
	close(pfd);
	if (addr == MAP_FAILED)
		return spardl_error(-errno, "shm: cannot map rank %d's %s (%llu bytes): %s", peer, what,
				    (unsigned long long)len, strerror(errno));
	/* The owner's huge pages are mapped whole here too (advice only). */
	if (len >= HUGE_THRESHOLD)
		(void)madvise(addr, (size_t)len, MADV_HUGEPAGE);
	*addr_out = addr;
	return 0;
}

static void shm_ep_destroy(struct spardl_tp_ep *base)
{
	struct shm_ep *ep = (struct shm_ep *)base;
	int i;

	if (!ep)
		return;
	for (i = 0; i < ep->npeers; i++) {
		int p = ep->peers[i];

		if (ep->rings && ep->rings[p])
			munmap(ep->rings[p], ep->ring_len[p]);
		if (ep->pidfds && ep->pidfds[i] >= 0)
			close(ep->pidfds[i]);
		if (ep->base.remote && ep->base.remote[p]) {
			struct shm_rmr *rmr = (struct shm_rmr *)ep->base.remote[p];

			if (!rmr->cma)
				munmap(rmr->addr, rmr->map_len);
			free(rmr);
		}
	}
	if (ep->own)
		munmap(ep->own, ep->own_len);
	if (ep->own_fd >= 0)
		close(ep->own_fd);
	free(ep->base.remote);
	free(ep->rings);
	free(ep->ring_len);
	free(ep->ring_cap);
	free(ep->pidfds);
	free(ep->gone);
	free(ep->peers);
	free(ep);
}

static size_t ring_bytes(uint32_t cap)
{
	return page_round(sizeof(struct ring) + (size_t)cap * sizeof(struct ring_entry));
}

int spardl_shm_fake_announce_fd = -1;
void (*spardl_shm_announce_hook)(int32_t *pid, int32_t *ring_fd, uint32_t *ring_cap, int32_t *recv_fd,
				 uint64_t *recv_len);

/* Local part of ep_create: the ring, and what to announce. */
static int ep_setup(struct shm_ep *ep, const struct spardl_tp_peer *peers, int npeers, uint32_t max_notify,
		    struct spardl_tp_mr *recv, struct ep_info *me)
{
	struct spardl_tp *base = ep->base.tp;
	struct shm_mr *rmr = (struct shm_mr *)recv;
	uint32_t cap = 16;
	int ret, i;

	if (max_notify > RING_MAX_CAP - 16)
		return spardl_error(-E2BIG, "shm: %u notifications in flight exceed the ring's limit of %u", max_notify,
				    RING_MAX_CAP - 16);
	while (cap < max_notify + 16)
		cap <<= 1;
	ep->peers = calloc((size_t)(npeers ? npeers : 1), sizeof(int));
	ep->pidfds = calloc((size_t)(npeers ? npeers : 1), sizeof(int));
	ep->gone = calloc((size_t)(npeers ? npeers : 1), 1);
	ep->rings = calloc((size_t)base->size, sizeof(*ep->rings));
	ep->ring_len = calloc((size_t)base->size, sizeof(*ep->ring_len));
	ep->ring_cap = calloc((size_t)base->size, sizeof(*ep->ring_cap));
	ep->base.remote = calloc((size_t)base->size, sizeof(*ep->base.remote));
	if (!ep->peers || !ep->pidfds || !ep->gone || !ep->rings || !ep->ring_len || !ep->ring_cap ||
	    !ep->base.remote)
		return spardl_error(-ENOMEM, "shm: out of memory for an endpoint of %d peers", npeers);
	for (i = 0; i < npeers; i++) {
		if (peers[i].rank < 0 || peers[i].rank >= base->size || peers[i].rank == base->rank)
			return spardl_error(-EINVAL, "shm: internal: peer %d of an endpoint", peers[i].rank);
		ep->peers[i] = peers[i].rank;
		ep->pidfds[i] = -1;
	}
	ep->npeers = npeers;
	ep->own_cap = cap;
	ep->own_len = ring_bytes(cap);
	ret = make_segment(ep->own_len, "notification ring", &ep->own_fd);
	if (ret)
		return ret;
	ep->own = mmap(NULL, ep->own_len, PROT_READ | PROT_WRITE, MAP_SHARED, ep->own_fd, 0);
	if (ep->own == MAP_FAILED) {
		ep->own = NULL;
		return spardl_error(-errno, "shm: cannot map the notification ring: %s", strerror(errno));
	}
	memset(ep->own, 0, ep->own_len);
	me->pid = (int32_t)getpid();
	me->ring_fd = ep->own_fd;
	me->ring_cap = cap;
	me->recv_fd = rmr && rmr->fd >= 0 ? rmr->fd : -1;
	me->recv_len = rmr ? rmr->map_len : 0;
	me->recv_addr = rmr && rmr->cma ? (uint64_t)(uintptr_t)rmr->base.addr : 0;
	if (spardl_shm_fake_announce_fd >= 0)
		me->ring_fd = me->recv_fd = spardl_shm_fake_announce_fd;
	if (spardl_shm_announce_hook)
		spardl_shm_announce_hook(&me->pid, &me->ring_fd, &me->ring_cap, &me->recv_fd, &me->recv_len);
	return 0;
}

/* A peer's private receive region, written by cross-memory attach: only
 * where every rank agreed it works, within the length this rank needs.
 * Its address is the peer's own business: a wrong one fails the write. */
static int cma_peer(struct shm_tp *tp, int peer, const struct ep_info *in, uint64_t min_len, int pidfd,
		    struct shm_rmr *rmr)
{
	int err;

	if (!tp->cma_ok)
		return spardl_error(-EPROTO, "shm: rank %d announced a private receive region, but cross-memory attach was found not to work",
				    peer);
	if (in->pid != tp->pids[peer])
		return spardl_error(-EPROTO, "shm: rank %d announced its receive region in pid %d, but it is pid %d",
				    peer, (int)in->pid, (int)tp->pids[peer]);
	if (in->recv_len < min_len || in->recv_len > (uint64_t)SIZE_MAX / 2 ||
	    in->recv_addr > UINT64_MAX - in->recv_len)
		return spardl_error(-EPROTO, "shm: rank %d announced a receive region of %llu bytes; at least %llu are needed",
				    peer, (unsigned long long)in->recv_len, (unsigned long long)min_len);
	if (pidfd < 0)
		return spardl_error(-ENOSYS, "shm: no pidfd for rank %d (pid %d), which cross-memory attach needs to know the peer is still the same process (SPARDL_SHM_CMA=off avoids it)",
				    peer, (int)in->pid);
	/* The pidfd pins a process; its probe word says it is still the rank. */
	err = cma_check(tp, peer);
	if (err)
		return spardl_error(err == EPROTO ? -ECONNRESET : -err, "shm: rank %d (pid %d) cannot be reached by cross-memory attach: %s",
				    peer, (int)in->pid, err == EPROTO ? "it has exited" : strerror(err));
	rmr->addr = (void *)(uintptr_t)in->recv_addr;
	rmr->cma = 1;
	rmr->pid = (pid_t)in->pid;
	rmr->pidfd = pidfd;
	return 0;
}

/* Map each listed peer's ring, and the receive region of each peer this
 * rank writes to; everything announced is checked first. */
static int ep_map(struct shm_ep *ep, const struct spardl_tp_peer *peers, int npeers, const struct ep_info *all)
{
	struct shm_tp *tp = tp_of(ep->base.tp);
	int ret, i;

	for (i = 0; i < npeers; i++) {
		int p = peers[i].rank;
		const struct ep_info *in = &all[p];
		uint32_t cap = in->ring_cap;
		void *addr;

		if (cap < 16 || cap > RING_MAX_CAP || (cap & (cap - 1)))
			return spardl_error(-EPROTO, "shm: rank %d announced a ring of %u entries", p, cap);
		ret = map_peer(tp, p, in->pid, in->ring_fd, ring_bytes(cap), ring_bytes(cap), "notification ring",
			       &addr);
		if (ret)
			return ret;
		ep->rings[p] = addr;
		ep->ring_len[p] = ring_bytes(cap);
		ep->ring_cap[p] = cap;
		ep->pidfds[i] = (int)syscall(SYS_pidfd_open, (pid_t)tp->pids[p], 0);
		if (peers[i].flags & SPARDL_TP_PEER_WRITTEN) {
			struct shm_rmr *rmr = calloc(1, sizeof(*rmr));

			if (!rmr)
				return spardl_error(-ENOMEM, "shm: out of memory");
			if (in->recv_fd < 0 && in->recv_addr)
				ret = cma_peer(tp, p, in, peers[i].remote_len, ep->pidfds[i], rmr);
			else
				ret = map_peer(tp, p, in->pid, in->recv_fd, in->recv_len, peers[i].remote_len,
					       "receive region", &rmr->addr);
			if (ret) {
				free(rmr);
				return ret;
			}
			rmr->map_len = in->recv_len;
			rmr->base.peer = p;
			rmr->base.len = in->recv_len;
			ep->base.remote[p] = &rmr->base;
		}
	}
	return 0;
}

static int shm_ep_create(struct spardl_tp *base, const struct spardl_tp_peer *peers, int npeers,
			 uint32_t max_notify, struct spardl_tp_mr *recv, struct spardl_tp_ep **ep_out)
{
	struct ep_info me = { 0 }, *all = NULL;
	struct shm_ep *ep;
	int ret;

	ep = calloc(1, sizeof(*ep));
	all = calloc((size_t)base->size, sizeof(*all));
	if (ep) {
		ep->base.tp = base;
		ep->own_fd = -1;
	}
	if (!ep || !all)
		ret = spardl_error(-ENOMEM, "shm: out of memory for an endpoint");
	else
		ret = ep_setup(ep, peers, npeers, max_notify, recv, &me);
	/* On one host every rank could open every segment of this user
	 * anyway: the announcement goes to all ranks, and is checked by the
	 * ones that use it. */
	ret = spardl_bootstrap_exchange(base->bs, ret, "create its shm endpoint", &me, all, sizeof(me));
	if (!ret)
		ret = ep_map(ep, peers, npeers, all);
	/* Every rank must have mapped its peers' rings before any can go. */
	ret = spardl_bootstrap_exchange(base->bs, ret, "map its peers' shm segments", NULL, NULL, 0);
	if (ret)
		goto err;
	free(all);
	clock_gettime(CLOCK_MONOTONIC, &ep->last_check);
	*ep_out = &ep->base;
	return 0;

err:
	free(all);
	shm_ep_destroy(ep ? &ep->base : NULL);
	return ret;
}

/* Publish one entry in peer's ring: a notification or an abort. */
static int ring_push(struct shm_ep *ep, int peer, uint32_t kind, uint32_t imm, uint64_t len)
{
	struct ring *r = ep->rings[peer];
	uint32_t cap = ep->ring_cap[peer];
	struct ring_entry *e;
	uint64_t pos;

	pos = atomic_fetch_add(&r->reserve, 1);
	if (pos - atomic_load_explicit(&r->head, memory_order_acquire) >= cap)
		return spardl_error_quiet(-EOVERFLOW, "shm: rank %d's notification ring is full (%u entries)", peer,
					  cap);
	e = &r->e[pos & (cap - 1)];
	e->imm = imm;
	e->peer = ep->base.tp->rank;
	e->len = len;
	e->kind = kind;
	atomic_store_explicit(&e->seq, pos + 1, memory_order_release);
	atomic_fetch_add(&r->wake, 1);
	if (atomic_load(&r->waiters))
		syscall(SYS_futex, &r->wake, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
	return 0;
}

/* A write into a peer's private region. A peer that has exited or freed
 * the region (left the plan) reads nothing more: the data is dropped, as
 * a copy into a shared segment nobody maps any more would be, and the
 * waits on that peer report it. The pidfd pins the peer: once it has
 * exited nothing is written, even if its pid is reused. */
static int cma_write(struct shm_rmr *rmr, int peer, size_t roff, const uint8_t *src, size_t len)
{
	uint8_t *dst = (uint8_t *)rmr->addr + roff;

	if (syscall(SYS_pidfd_send_signal, rmr->pidfd, 0, NULL, 0)) {
		if (errno == ESRCH)
			return 0;
		return spardl_error_quiet(-errno, "shm: cannot check rank %d (pid %d): %s", peer, (int)rmr->pid,
					  strerror(errno));
	}
	while (len) {
		struct iovec l = { (void *)src, len }, r = { dst, len };
		ssize_t n = process_vm_writev(rmr->pid, &l, 1, &r, 1, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == ESRCH || errno == EFAULT)) {
			SPARDL_DEBUG("shm: a write to rank %d was dropped: %s", peer,
				     errno == ESRCH ? "it has exited" : "its receive region is gone (it left the plan)");
			return 0;
		}
		if (n <= 0)
			return spardl_error_quiet(n < 0 ? -errno : -EIO, "shm: write into rank %d's memory failed: %s", peer,
						  n < 0 ? strerror(errno) : "no progress");
		src += n;
		dst += n;
		len -= (size_t)n;
	}
	return 0;
}

static int shm_write(struct spardl_tp_ep *base, int peer, struct spardl_tp_mr *lmr, size_t loff,
		     struct spardl_tp_rmr *rbase, size_t roff, size_t len, uint32_t imm, unsigned flags)
{
	struct shm_ep *ep = (struct shm_ep *)base;
	struct shm_rmr *rmr = (struct shm_rmr *)rbase;
	int direct = !!(flags & SPARDL_TP_WRITE_DIRECT);
	int ret;

	if (peer < 0 || peer >= base->tp->size || !ep->rings[peer] || !rmr || rmr->base.peer != peer ||
	    (!direct && (!lmr || loff > lmr->len || len > lmr->len - loff)) || roff > rmr->map_len ||
	    len > rmr->map_len - roff || (direct && rmr->cma))
		return spardl_error_quiet(-EINVAL, "shm: internal: write of %zu bytes to rank %d out of bounds",
					  len, peer);
	/* No queue pair: the write is the copy (or, direct, the stores the
	 * core already made), complete when its notification is published. */
	ep->writes++;
	spardl_trace_write(base->trace, SPARDL_TR_POST, peer, 0, ep->writes, imm, len);
	ret = 0;
	if (rmr->cma)
		ret = cma_write(rmr, peer, roff, (const uint8_t *)lmr->addr + loff, len);
	else if (!direct && (flags & SPARDL_TP_WRITE_STREAM))
		spardl_copy_stream((uint8_t *)rmr->addr + roff, (const uint8_t *)lmr->addr + loff, len);
	else if (!direct)
		spardl_copy((uint8_t *)rmr->addr + roff, (const uint8_t *)lmr->addr + loff, len);
	if (!ret)
		ret = ring_push(ep, peer, ENTRY_NOTIFY, imm, len);
	if (!ret)
		spardl_trace_write(base->trace, SPARDL_TR_DONE, peer, 0, ep->writes, imm, len);
	return ret;
}

static void *shm_direct(struct spardl_tp_ep *base, int peer, struct spardl_tp_rmr *rbase, size_t roff, size_t len)
{
	struct shm_ep *ep = (struct shm_ep *)base;
	struct shm_rmr *rmr = (struct shm_rmr *)rbase;

	if (peer < 0 || peer >= base->tp->size || !ep->rings[peer] || !rmr || rmr->base.peer != peer ||
	    roff > rmr->map_len || len > rmr->map_len - roff || rmr->cma)
		return NULL;
	return (uint8_t *)rmr->addr + roff;
}

static void shm_abort(struct spardl_tp_ep *base)
{
	struct shm_ep *ep = (struct shm_ep *)base;
	int i;

	if (!ep)
		return;
	for (i = 0; i < ep->npeers; i++)
		if (ep->rings[ep->peers[i]] && ring_push(ep, ep->peers[i], ENTRY_ABORT, 0, 0))
			SPARDL_DEBUG("shm: could not tell rank %d of the abort: %s", ep->peers[i], spardl_last_error());
}

static int64_t elapsed_us(const struct timespec *a, const struct timespec *b)
{
	return (int64_t)(b->tv_sec - a->tv_sec) * 1000000 + (b->tv_nsec - a->tv_nsec) / 1000;
}

/* Peers that exited since the last look become PEER_GONE events. */
static int check_peers(struct shm_ep *ep, struct spardl_tp_event *ev, int max)
{
	struct shm_tp *tp = tp_of(ep->base.tp);
	int i, n = 0;

	for (i = 0; i < ep->npeers && n < max; i++) {
		int p = ep->peers[i], dead;

		if (ep->gone[i])
			continue;
		if (ep->pidfds[i] >= 0) {
			struct pollfd pfd = { .fd = ep->pidfds[i], .events = POLLIN };

			dead = poll(&pfd, 1, 0) > 0;
		} else {
			dead = kill(tp->pids[p], 0) && errno == ESRCH;
		}
		if (dead) {
			ep->gone[i] = 1;
			ev[n].type = SPARDL_TP_EV_PEER_GONE;
			ev[n].peer = p;
			ev[n].imm = 0;
			ev[n].len = 0;
			n++;
		}
	}
	return n;
}

static int drain(struct shm_ep *ep, struct spardl_tp_event *ev, int max)
{
	struct ring *r = ep->own;
	uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
	int n = 0;

	while (n < max) {
		struct ring_entry *e = &r->e[head & (ep->own_cap - 1)];

		if (atomic_load_explicit(&e->seq, memory_order_acquire) != head + 1)
			break;
		ev[n].type = e->kind == ENTRY_ABORT ? SPARDL_TP_EV_PEER_ABORT : SPARDL_TP_EV_NOTIFY;
		ev[n].imm = e->imm;
		ev[n].peer = e->peer;
		ev[n].len = e->len;
		n++;
		head++;
		atomic_store_explicit(&r->head, head, memory_order_release);
	}
	return n;
}

static int shm_poll(struct spardl_tp_ep *base, struct spardl_tp_event *ev, int max, int timeout_ms)
{
	struct shm_ep *ep = (struct shm_ep *)base;
	struct shm_tp *tp = tp_of(base->tp);
	struct ring *r = ep->own;
	struct timespec start, now;
	int n, spins = 0;


	n = drain(ep, ev, max);
	if (n)
		return n;
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		uint32_t w;

		for (;;) {
			n = drain(ep, ev, max);
			if (n)
				return n;
			if ((++spins & 63) == 0) {
				clock_gettime(CLOCK_MONOTONIC, &now);
				if (elapsed_us(&start, &now) >= tp->spin_us)
					break;
			}
#if defined(__x86_64__) || defined(__i386__)
			__builtin_ia32_pause();
#endif
		}
		/* Sleep on the futex; publishers bump `wake` after every entry,
		 * so reading it before the re-check closes the lost-wakeup race. */
		w = atomic_load(&r->wake);
		atomic_fetch_add(&r->waiters, 1);
		n = drain(ep, ev, max);
		if (!n) {
			struct timespec ts = { 0, LIVENESS_MS * 1000000L };
			int64_t left_ms;

			clock_gettime(CLOCK_MONOTONIC, &now);
			left_ms = timeout_ms - elapsed_us(&start, &now) / 1000;
			if (left_ms < LIVENESS_MS)
				ts.tv_nsec = (left_ms > 0 ? left_ms : 0) * 1000000L;
			if (syscall(SYS_futex, &r->wake, FUTEX_WAIT, w, &ts, NULL, 0) &&
			    errno != EAGAIN && errno != ETIMEDOUT && errno != EINTR) {
				atomic_fetch_sub(&r->waiters, 1);
				return spardl_error_quiet(-errno, "shm: futex wait failed: %s", strerror(errno));
			}
		}
		atomic_fetch_sub(&r->waiters, 1);
		if (n)
			return n;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (elapsed_us(&ep->last_check, &now) >= LIVENESS_MS * 1000) {
			ep->last_check = now;
			/* A last drain: a peer may have written and then exited. */
			n = drain(ep, ev, max);
			if (n)
				return n;
			n = check_peers(ep, ev, max);
			if (n)
				return n;
		}
		if (elapsed_us(&start, &now) >= (int64_t)timeout_ms * 1000)
			return 0;
	}
}

static int shm_quiesce(struct spardl_tp_ep *ep, int timeout_ms)
{
	/* Writes are copies done before write() returns. */
	return 0;
}

const struct spardl_tp_ops spardl_tp_shm_ops = {
	.version = SPARDL_TP_OPS_VERSION,
	.size = sizeof(struct spardl_tp_ops),
	.name = "shm",
	.available = shm_available,
	.open = shm_open_tp,
	.close = shm_close,
	.mem_alloc = shm_mem_alloc,
	.mem_free = shm_mem_free,
	.ep_create = shm_ep_create,
	.ep_destroy = shm_ep_destroy,
	.abort = shm_abort,
	.write = shm_write,
	.poll = shm_poll,
	.quiesce = shm_quiesce,
	.direct = shm_direct,
};
