/* Shared-memory transport: memfd segments mapped by peers, a write is a copy plus a doorbell. */
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
#include <time.h>
#include <unistd.h>

#include "env.h"
#include "log.h"
#include "transport.h"

#define SHM_KEY_MAGIC 0x73686d6bu /* "shmk" */
#define HUGE_THRESHOLD (4u << 20)
/* How often a blocked wait looks whether its peers are still alive. */
#define LIVENESS_MS 100

struct shm_tp {
	struct spardl_tp base;
	pid_t *pids; /* per rank */
	long spin_us;
};

struct shm_mr {
	struct spardl_tp_mr base;
	int fd; /* memfd for REMOTE_WRITE memory, else -1 */
	size_t map_len;
};

/* What a peer needs to map a segment: fits SPARDL_TP_RKEY_SIZE. */
struct shm_rkey {
	uint32_t magic;
	int32_t pid;
	int32_t fd;
	uint32_t pad;
	uint64_t len;
};

struct shm_rmr {
	struct spardl_tp_rmr base;
	void *addr;
	size_t map_len;
};

/* The notification queue of one rank: many producers (peers), one consumer. */
struct ring_entry {
	_Atomic uint64_t seq; /* position + 1 once the entry is published */
	uint32_t imm;
	int32_t peer;
	uint64_t len;
};

struct ring {
	_Atomic uint32_t wake;    /* futex word, bumped after every publish */
	_Atomic uint32_t waiters; /* the consumer sleeps on wake */
	uint32_t cap;             /* entries, a power of two */
	uint32_t pad;
	_Atomic uint64_t reserve __attribute__((aligned(64))); /* next position for producers */
	_Atomic uint64_t head __attribute__((aligned(64)));    /* next position for the consumer */
	struct ring_entry e[] __attribute__((aligned(64)));
};

struct ring_info {
	int32_t pid;
	int32_t fd;
	uint64_t len;
};

struct shm_ep {
	struct spardl_tp_ep base;
	struct ring *own;
	int own_fd;
	size_t own_len;
	int npeers;
	int *peers;
	struct ring **rings; /* per rank; mapped for listed peers only */
	size_t *ring_len;
	int *pidfds;         /* per listed peer, -1 when unavailable */
	char *gone;          /* per listed peer: its exit was reported */
	struct timespec last_check;
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
	char boot_id[48];
};

static int host_identity(struct host_id *id)
{
	struct stat st;
	int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
	ssize_t n;

	memset(id, 0, sizeof(*id));
	id->pid = (int32_t)getpid();
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

static int shm_open_tp(struct spardl_bootstrap *bs, int timeout_ms, struct spardl_tp **tp_out)
{
	int size = spardl_bootstrap_size(bs), rank = spardl_bootstrap_rank(bs), ret, i;
	struct host_id me, *all;
	struct shm_tp *tp;
	long spin;

	ret = spardl_env_long("SPARDL_SHM_SPIN", 20, 0, 1000000, &spin);
	if (ret)
		return ret;
	ret = host_identity(&me);
	if (ret)
		return ret;
	all = calloc((size_t)size, sizeof(*all));
	tp = calloc(1, sizeof(*tp));
	if (!all || !tp) {
		ret = -ENOMEM;
		goto err_free;
	}
	tp->pids = calloc((size_t)size, sizeof(*tp->pids));
	if (!tp->pids) {
		ret = -ENOMEM;
		goto err_free;
	}
	ret = spardl_bootstrap_allgather(bs, &me, all, sizeof(me));
	if (ret)
		goto err_free;
	for (i = 0; i < size; i++) {
		if (strcmp(all[i].boot_id, me.boot_id) || all[i].pidns != me.pidns) {
			ret = spardl_error(-EOPNOTSUPP,
					   "shm transport: rank %d runs on another host or pid namespace than rank %d; the shm transport needs all ranks on one host (use SPARDL_TRANSPORT=verbs across hosts)",
					   i, rank);
			goto err_free;
		}
		tp->pids[i] = all[i].pid;
	}
	free(all);
	tp->spin_us = spin;
	tp->base.bs = bs;
	tp->base.rank = rank;
	tp->base.size = size;
	tp->base.timeout_ms = timeout_ms;
	*tp_out = &tp->base;
	return 0;

err_free:
	if (tp)
		free(tp->pids);
	free(tp);
	free(all);
	return ret;
}

static void shm_close(struct spardl_tp *tp)
{
	if (!tp)
		return;
	free(tp_of(tp)->pids);
	free(tp);
}

static size_t page_round(size_t len)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);

	return len ? (len + pg - 1) / pg * pg : pg;
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
		return -ENOMEM;
	mr->fd = -1;
	mr->map_len = page_round(len);
	if (access & SPARDL_ACCESS_REMOTE_WRITE) {
		mr->fd = memfd_create("spardl", MFD_CLOEXEC);
		if (mr->fd < 0) {
			ret = spardl_error(-errno, "shm: memfd_create failed: %s", strerror(errno));
			goto err_free;
		}
		if (ftruncate(mr->fd, (off_t)mr->map_len)) {
			ret = spardl_error(-errno, "shm: cannot size a %zu-byte segment: %s", mr->map_len,
					   strerror(errno));
			goto err_close;
		}
		mr->base.addr = mmap(NULL, mr->map_len, PROT_READ | PROT_WRITE, MAP_SHARED, mr->fd, 0);
	} else {
		mr->base.addr = mmap(NULL, mr->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
				     -1, 0);
	}
	if (mr->base.addr == MAP_FAILED) {
		ret = spardl_error(-errno, "shm: cannot map %zu bytes: %s", mr->map_len, strerror(errno));
		goto err_close;
	}
	/* Large private buffers are scanned every call: huge pages cut the
	 * first-touch and TLB cost. Advice only, so failure is fine. */
	if (mr->fd < 0 && mr->map_len >= HUGE_THRESHOLD)
		(void)madvise(mr->base.addr, mr->map_len, MADV_HUGEPAGE);
	/* Touch every page now so no call pays the first-touch faults. */
	memset(mr->base.addr, 0, mr->map_len);
	mr->base.len = len;
	mr->base.mem_type = type;
	mr->base.access = access;
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
	munmap(mr->base.addr, mr->map_len);
	if (mr->fd >= 0)
		close(mr->fd);
	free(mr);
}

static int shm_mr_export(struct spardl_tp *tp, struct spardl_tp_mr *base, void *rkey)
{
	struct shm_mr *mr = (struct shm_mr *)base;
	struct shm_rkey k = { .magic = SHM_KEY_MAGIC, .pid = (int32_t)getpid(), .fd = mr->fd,
			      .len = mr->map_len };

	if (mr->fd < 0)
		return spardl_error(-EINVAL, "shm: internal: exporting memory not allocated for remote write");
	memset(rkey, 0, SPARDL_TP_RKEY_SIZE);
	memcpy(rkey, &k, sizeof(k));
	return 0;
}

/* Map a peer's memfd through /proc: no names to clean up, and the memory
 * stays valid for as long as any rank maps it, whoever dies first. */
static int map_peer(int peer, int32_t pid, int32_t fd, size_t len, void **addr_out)
{
	char path[64];
	void *addr;
	int pfd;

	snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)pid, (int)fd);
	pfd = open(path, O_RDWR | O_CLOEXEC);
	if (pfd < 0) {
		int err = errno;

		if (err == ENOENT)
			return spardl_error(-ECONNRESET, "shm: rank %d (pid %d) has exited", peer, (int)pid);
		return spardl_error(-err, "shm: cannot open rank %d's segment %s: %s; the shm transport needs all ranks to run as the same user in one pid namespace",
				    peer, path, strerror(err));
	}
	addr = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, pfd, 0);
	close(pfd);
	if (addr == MAP_FAILED)
		return spardl_error(-errno, "shm: cannot map rank %d's segment (%zu bytes): %s", peer, len,
				    strerror(errno));
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
	}
	if (ep->own)
		munmap(ep->own, ep->own_len);
	if (ep->own_fd >= 0)
		close(ep->own_fd);
	free(ep->rings);
	free(ep->ring_len);
	free(ep->pidfds);
	free(ep->gone);
	free(ep->peers);
	free(ep);
}

static int shm_ep_create(struct spardl_tp *base, const int *peers, int npeers, uint32_t max_notify,
			 struct spardl_tp_ep **ep_out)
{
	struct shm_tp *tp = tp_of(base);
	struct ring_info me, *all = NULL;
	struct shm_ep *ep;
	uint32_t cap = 16;
	int ret, i;

	while (cap < max_notify + 16)
		cap <<= 1;
	ep = calloc(1, sizeof(*ep));
	if (!ep)
		return -ENOMEM;
	ep->base.tp = base;
	ep->own_fd = -1;
	ep->npeers = npeers;
	ep->peers = calloc((size_t)(npeers ? npeers : 1), sizeof(int));
	ep->pidfds = calloc((size_t)(npeers ? npeers : 1), sizeof(int));
	ep->gone = calloc((size_t)(npeers ? npeers : 1), 1);
	ep->rings = calloc((size_t)base->size, sizeof(*ep->rings));
	ep->ring_len = calloc((size_t)base->size, sizeof(*ep->ring_len));
	all = calloc((size_t)base->size, sizeof(*all));
	if (!ep->peers || !ep->pidfds || !ep->gone || !ep->rings || !ep->ring_len || !all) {
		ret = -ENOMEM;
		goto err;
	}
	for (i = 0; i < npeers; i++) {
		ep->peers[i] = peers[i];
		ep->pidfds[i] = -1;
	}
	ep->own_len = page_round(sizeof(struct ring) + cap * sizeof(struct ring_entry));
	ep->own_fd = memfd_create("spardl-ring", MFD_CLOEXEC);
	if (ep->own_fd < 0) {
		ret = spardl_error(-errno, "shm: memfd_create failed: %s", strerror(errno));
		goto err;
	}
	if (ftruncate(ep->own_fd, (off_t)ep->own_len)) {
		ret = spardl_error(-errno, "shm: cannot size the notification ring: %s", strerror(errno));
		goto err;
	}
	ep->own = mmap(NULL, ep->own_len, PROT_READ | PROT_WRITE, MAP_SHARED, ep->own_fd, 0);
	if (ep->own == MAP_FAILED) {
		ep->own = NULL;
		ret = spardl_error(-errno, "shm: cannot map the notification ring: %s", strerror(errno));
		goto err;
	}
	memset(ep->own, 0, ep->own_len);
	ep->own->cap = cap;
	me.pid = (int32_t)getpid();
	me.fd = ep->own_fd;
	me.len = ep->own_len;
	ret = spardl_bootstrap_allgather(base->bs, &me, all, sizeof(me));
	if (ret)
		goto err;
	for (i = 0; i < npeers; i++) {
		int p = peers[i];
		void *addr;

		ret = map_peer(p, all[p].pid, all[p].fd, all[p].len, &addr);
		if (ret)
			goto err;
		ep->rings[p] = addr;
		ep->ring_len[p] = all[p].len;
		ep->pidfds[i] = (int)syscall(SYS_pidfd_open, (pid_t)tp->pids[p], 0);
	}
	/* Every rank must have mapped its peers' rings before any can go. */
	ret = spardl_bootstrap_barrier(base->bs);
	if (ret)
		goto err;
	free(all);
	clock_gettime(CLOCK_MONOTONIC, &ep->last_check);
	*ep_out = &ep->base;
	return 0;

err:
	free(all);
	shm_ep_destroy(&ep->base);
	return ret;
}

static int shm_rmr_import(struct spardl_tp_ep *ep, int peer, const void *rkey, struct spardl_tp_rmr **rmr_out)
{
	struct shm_rkey k;
	struct shm_rmr *rmr;
	int ret;

	memcpy(&k, rkey, sizeof(k));
	if (k.magic != SHM_KEY_MAGIC)
		return spardl_error(-EPROTO, "shm: rank %d sent a memory key of another transport", peer);
	rmr = calloc(1, sizeof(*rmr));
	if (!rmr)
		return -ENOMEM;
	ret = map_peer(peer, k.pid, k.fd, k.len, &rmr->addr);
	if (ret) {
		free(rmr);
		return ret;
	}
	rmr->map_len = k.len;
	rmr->base.peer = peer;
	rmr->base.len = k.len;
	*rmr_out = &rmr->base;
	return 0;
}

static void shm_rmr_release(struct spardl_tp_ep *ep, struct spardl_tp_rmr *base)
{
	struct shm_rmr *rmr = (struct shm_rmr *)base;

	if (!rmr)
		return;
	munmap(rmr->addr, rmr->map_len);
	free(rmr);
}

static int shm_write(struct spardl_tp_ep *base, int peer, struct spardl_tp_mr *lmr, size_t loff,
		     struct spardl_tp_rmr *rbase, size_t roff, size_t len, uint32_t imm, unsigned flags)
{
	struct shm_ep *ep = (struct shm_ep *)base;
	struct shm_rmr *rmr = (struct shm_rmr *)rbase;
	struct ring *r = ep->rings[peer];
	struct ring_entry *e;
	uint64_t pos;

	if (!r || rmr->base.peer != peer || loff + len > lmr->len || roff + len > rmr->map_len)
		return spardl_error_quiet(-EINVAL, "shm: internal: write of %zu bytes to rank %d out of bounds",
					  len, peer);
	memcpy((uint8_t *)rmr->addr + roff, (const uint8_t *)lmr->addr + loff, len);
	pos = atomic_fetch_add(&r->reserve, 1);
	if (pos - atomic_load_explicit(&r->head, memory_order_acquire) >= r->cap)
		return spardl_error_quiet(-EOVERFLOW, "shm: rank %d's notification ring is full (%u entries)",
					  peer, r->cap);
	e = &r->e[pos & (r->cap - 1)];
	e->imm = imm;
	e->peer = base->tp->rank;
	e->len = len;
	atomic_store_explicit(&e->seq, pos + 1, memory_order_release);
	atomic_fetch_add(&r->wake, 1);
	if (atomic_load(&r->waiters))
		syscall(SYS_futex, &r->wake, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
	return 0;
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
		struct ring_entry *e = &r->e[head & (r->cap - 1)];

		if (atomic_load_explicit(&e->seq, memory_order_acquire) != head + 1)
			break;
		ev[n].type = SPARDL_TP_EV_NOTIFY;
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
	.mr_export = shm_mr_export,
	.ep_create = shm_ep_create,
	.ep_destroy = shm_ep_destroy,
	.rmr_import = shm_rmr_import,
	.rmr_release = shm_rmr_release,
	.write = shm_write,
	.poll = shm_poll,
	.quiesce = shm_quiesce,
};
