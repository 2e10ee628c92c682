/* SPDX-License-Identifier: MIT */
/* Tests of the bootstrap: rendezvous, allgather and failure reports between forked ranks. */
#define _GNU_SOURCE
#include <check.h>

#include "unit.h"
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>

#include "bootstrap.h"
#include "log.h"

#define HUNG 99
#define MAX_CHILDREN 8

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* In a child: report the failed check on stderr and end the child with a
 * status naming its line (the child is a forked process of its own). */
static void child_fail(const char *file, int line, const char *cond)
{
	fprintf(stderr, "child %d: %s:%d: check failed: %s (last error: %s)\n", (int)getpid(), file, line, cond,
		spardl_last_error());
	fflush(stderr);
	_exit(line % 90 + 1);
}

#define CHILD_CHECK(cond) ((cond) ? (void)0 : child_fail(__FILE__, __LINE__, #cond))

/* Open descriptors of this process, to catch leaks on every path. */
static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	if (!d)
		return -1;
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

typedef int (*child_fn)(int idx, void *arg);

/* Runs fn(i) in n children; codes[i] is the exit status, 100 + signal, or
 * HUNG when the child outlived limit_ms (then it is killed). */
static void run_children(int n, child_fn fn, void *arg, int limit_ms, int *codes)
{
	pid_t pid[MAX_CHILDREN];
	int64_t deadline = now_ms() + limit_ms;
	int i, left = n;

	ck_assert_int_le(n, MAX_CHILDREN);
	fflush(NULL);
	for (i = 0; i < n; i++) {
		pid[i] = fork();
		ck_assert_int_ge(pid[i], 0);
		if (pid[i] == 0)
			_exit(fn(i, arg));
		codes[i] = -1;
	}
	while (left > 0) {
		for (i = 0; i < n; i++) {
			int st;
			pid_t w;

			if (codes[i] != -1)
				continue;
			w = waitpid(pid[i], &st, WNOHANG);
			ck_assert_int_ge(w, 0);
			if (w == 0)
				continue;
			codes[i] = WIFEXITED(st) ? WEXITSTATUS(st) : 100 + WTERMSIG(st);
			left--;
		}
		if (left > 0 && now_ms() > deadline) {
			for (i = 0; i < n; i++) {
				if (codes[i] != -1)
					continue;
				kill(pid[i], SIGKILL);
				waitpid(pid[i], NULL, 0);
				codes[i] = HUNG;
				left--;
			}
		}
		if (left > 0)
			usleep(5000);
	}
}

static void assert_all_ok(int n, const int *codes)
{
	for (int i = 0; i < n; i++)
		ck_assert_msg(codes[i] == 0, "child %d failed with code %d (99: hung)", i, codes[i]);
}

static void tcp_addr(char *buf, size_t sz)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	ck_assert_int_ge(fd, 0);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
	snprintf(buf, sz, "127.0.0.1:%d", ntohs(sin.sin_port));
	close(fd);
}

static void unix_addr(char *buf, size_t sz, const char *tag)
{
	static int counter;

	snprintf(buf, sz, "unix:spardl-test-%d-%s-%d", (int)getpid(), tag, counter++);
}

struct job {
	char addr[128];
	int size;
	int timeout_ms;
};

static int create(const struct job *j, int rank, const char *key, struct spardl_bootstrap **bs)
{
	struct spardl_bootstrap_config cfg = {
		.rank = rank,
		.size = j->size,
		.address = j->addr,
		.key = key,
		.key_len = key ? strlen(key) : 0,
		.timeout_ms = j->timeout_ms,
	};

	return spardl_bootstrap_create(&cfg, bs);
}

static unsigned char pattern(int rank, size_t i, int round)
{
	return (unsigned char)(rank * 31 + i * 7 + (i >> 8) + round * 13);
}

/* ---------------------------------------------------------------- */

static int four_ranks_child(int rank, void *arg)
{
	const struct job *j = arg;
	static const size_t lens[] = { 8, 100000, 3 << 20 };
	struct spardl_bootstrap *bs = NULL;
	unsigned char *send, *recv;
	int round = 0, fds = count_fds();

	CHILD_CHECK(create(j, rank, "job-a", &bs) == 0);
	CHILD_CHECK(spardl_bootstrap_rank(bs) == rank && spardl_bootstrap_size(bs) == j->size);
	send = malloc(lens[2]);
	recv = malloc(lens[2] * (size_t)j->size);
	CHILD_CHECK(send && recv);
	for (int l = 0; l < 3; l++) {
		/* Twice each, the largest once: it only checks megabytes work. */
		for (int rep = 0; rep < (l < 2 ? 2 : 1); rep++, round++) {
			size_t len = lens[l];

			for (size_t i = 0; i < len; i++)
				send[i] = pattern(rank, i, round);
			memset(recv, 0xee, len * (size_t)j->size);
			CHILD_CHECK(spardl_bootstrap_allgather(bs, send, recv, len) == 0);
			for (int r = 0; r < j->size; r++)
				for (size_t i = 0; i < len; i++)
					CHILD_CHECK(recv[(size_t)r * len + i] == pattern(r, i, round));
		}
	}
	CHILD_CHECK(spardl_bootstrap_barrier(bs) == 0);
	CHILD_CHECK(spardl_bootstrap_allgather(bs, NULL, NULL, 0) == 0);
	CHILD_CHECK(spardl_bootstrap_barrier(bs) == 0);
	spardl_bootstrap_destroy(bs);
	CHILD_CHECK(count_fds() == fds);
	free(send);
	free(recv);
	return 0;
}

static void run_four(struct job *j)
{
	int codes[4];

	j->size = 4;
	j->timeout_ms = 8000;
	run_children(4, four_ranks_child, j, 10000, codes);
	assert_all_ok(4, codes);
}

START_TEST(test_four_ranks_tcp)
{
	struct job j;

	tcp_addr(j.addr, sizeof(j.addr));
	run_four(&j);
}
END_TEST

START_TEST(test_four_ranks_unix)
{
	struct job j;

	unix_addr(j.addr, sizeof(j.addr), "four");
	run_four(&j);
}
END_TEST

START_TEST(test_two_ranks_ipv6)
{
	struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	socklen_t sl = sizeof(sin6);
	int fd = socket(AF_INET6, SOCK_STREAM, 0), codes[2];
	struct job j;

	if (fd < 0 || bind(fd, (struct sockaddr *)&sin6, sizeof(sin6))) {
		if (fd >= 0)
			close(fd);
		return; /* no IPv6 loopback here */
	}
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin6, &sl), 0);
	snprintf(j.addr, sizeof(j.addr), "[::1]:%d", ntohs(sin6.sin6_port));
	close(fd);
	j.size = 2;
	j.timeout_ms = 8000;
	run_children(2, four_ranks_child, &j, 10000, codes);
	assert_all_ok(2, codes);
}
END_TEST

START_TEST(test_size_one)
{
	struct spardl_bootstrap_config cfg = { .rank = 0, .size = 1, .timeout_ms = 1000 };
	struct spardl_bootstrap *bs = NULL;
	char out[5];

	ck_assert_int_eq(spardl_bootstrap_create(&cfg, &bs), 0);
	ck_assert_int_eq(spardl_bootstrap_size(bs), 1);
	ck_assert_int_eq(spardl_bootstrap_allgather(bs, "abcd", out, 5), 0);
	ck_assert_str_eq(out, "abcd");
	ck_assert_int_eq(spardl_bootstrap_barrier(bs), 0);
	spardl_bootstrap_destroy(bs);
	spardl_bootstrap_destroy(NULL);
}
END_TEST

/* ---------------------------------------------------------------- */
/* Out-of-band: an allgather over shared memory between forked ranks. */

#define OOB_CAP (1 << 20)

struct oob_shm {
	pthread_barrier_t bar;
	int size;
	unsigned char data[OOB_CAP];
};

struct oob_ctx {
	struct oob_shm *s;
	int rank;
};

static int shm_allgather(void *ctx, const void *send, void *recv, size_t len)
{
	struct oob_ctx *c = ctx;

	if (len * (size_t)c->s->size > OOB_CAP)
		return 3;
	memcpy(c->s->data + (size_t)c->rank * len, send, len);
	pthread_barrier_wait(&c->s->bar);
	memcpy(recv, c->s->data, len * (size_t)c->s->size);
	pthread_barrier_wait(&c->s->bar);
	return 0;
}

static int failing_allgather(void *ctx, const void *send, void *recv, size_t len)
{
	return 7;
}

static struct oob_shm *oob_shm_new(int size)
{
	struct oob_shm *s = mmap(NULL, sizeof(*s), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	pthread_barrierattr_t a;

	ck_assert_ptr_ne(s, MAP_FAILED);
	ck_assert_int_eq(pthread_barrierattr_init(&a), 0);
	ck_assert_int_eq(pthread_barrierattr_setpshared(&a, PTHREAD_PROCESS_SHARED), 0);
	ck_assert_int_eq(pthread_barrier_init(&s->bar, &a, (unsigned)size), 0);
	s->size = size;
	return s;
}

static int oob_create(struct oob_shm *s, int rank, const char *key, struct oob_ctx *c, struct spardl_bootstrap **bs)
{
	struct spardl_bootstrap_config cfg = {
		.rank = rank,
		.size = s->size,
		.key = key,
		.key_len = key ? strlen(key) : 0,
		.timeout_ms = 1000,
		.oob = shm_allgather,
		.oob_ctx = c,
	};

	c->s = s;
	c->rank = rank;
	return spardl_bootstrap_create(&cfg, bs);
}

static int oob_child(int rank, void *arg)
{
	struct spardl_bootstrap *bs = NULL;
	struct oob_ctx c;
	unsigned char send[100], recv[300];

	CHILD_CHECK(oob_create(arg, rank, NULL, &c, &bs) == 0);
	for (size_t i = 0; i < sizeof(send); i++)
		send[i] = pattern(rank, i, 0);
	CHILD_CHECK(spardl_bootstrap_allgather(bs, send, recv, sizeof(send)) == 0);
	for (int r = 0; r < 3; r++)
		for (size_t i = 0; i < sizeof(send); i++)
			CHILD_CHECK(recv[(size_t)r * sizeof(send) + i] == pattern(r, i, 0));
	CHILD_CHECK(spardl_bootstrap_barrier(bs) == 0);
	spardl_bootstrap_destroy(bs);
	return 0;
}

static int oob_key_child(int rank, void *arg)
{
	struct spardl_bootstrap *bs = NULL;
	struct oob_ctx c;

	CHILD_CHECK(oob_create(arg, rank, rank == 2 ? "other" : "mine", &c, &bs) == -SPARDL_ERR_MISMATCH);
	CHILD_CHECK(strstr(spardl_last_error(), "job key"));
	return 0;
}

START_TEST(test_oob)
{
	struct oob_shm *s = oob_shm_new(3);
	int codes[3];

	run_children(3, oob_child, s, 5000, codes);
	assert_all_ok(3, codes);
	run_children(3, oob_key_child, s, 5000, codes);
	assert_all_ok(3, codes);
	munmap(s, sizeof(*s));
}
END_TEST

START_TEST(test_oob_failing_callback)
{
	struct spardl_bootstrap_config cfg = { .rank = 0, .size = 1, .timeout_ms = 1000, .oob = failing_allgather };
	struct spardl_bootstrap *bs = (void *)1;

	ck_assert_int_eq(spardl_bootstrap_create(&cfg, &bs), -EIO);
	ck_assert_ptr_eq(bs, (void *)1);
	ck_assert_ptr_nonnull(strstr(spardl_last_error(), "returned 7"));
}
END_TEST

/* ---------------------------------------------------------------- */

static int missing_child(int rank, void *arg)
{
	struct spardl_bootstrap *bs = NULL;
	int64_t t0 = now_ms();
	int fds = count_fds();

	CHILD_CHECK(create(arg, rank, "job", &bs) == -ETIMEDOUT);
	CHILD_CHECK(count_fds() == fds);
	CHILD_CHECK(now_ms() - t0 < 3000);
	/* Rank 1 hears rank 0's report, so both name the missing rank. */
	CHILD_CHECK(strstr(spardl_last_error(), "rank 2 did not arrive"));
	return 0;
}

START_TEST(test_missing_rank)
{
	struct job j = { .size = 3, .timeout_ms = 1500 };
	int codes[2];

	tcp_addr(j.addr, sizeof(j.addr));
	run_children(2, missing_child, &j, 6000, codes);
	assert_all_ok(2, codes);
}
END_TEST

static int rank0_unreached_child(int idx, void *arg)
{
	struct spardl_bootstrap *bs = NULL;
	int64_t t0 = now_ms();

	CHILD_CHECK(create(arg, 1, "job", &bs) == -ETIMEDOUT);
	CHILD_CHECK(now_ms() - t0 < 2000);
	CHILD_CHECK(strstr(spardl_last_error(), "rank 0 was not reached"));
	return 0;
}

START_TEST(test_rank0_unreached)
{
	struct job j = { .size = 2, .timeout_ms = 500 };
	int codes[1];

	unix_addr(j.addr, sizeof(j.addr), "nobody");
	run_children(1, rank0_unreached_child, &j, 5000, codes);
	assert_all_ok(1, codes);
}
END_TEST

struct key_test {
	struct job j;
	int pipe[2];  /* child 1 -> child 3 */
	int pipe2[2]; /* child 3 -> child 2 */
};

static void close_pipes(struct key_test *k)
{
	close(k->pipe[0]);
	close(k->pipe[1]);
	close(k->pipe2[0]);
	close(k->pipe2[1]);
}

static int wait_pipe(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	return poll(&p, 1, 5000) == 1 ? 0 : -1;
}

/* Child 0: rank 0. Child 1: rank 1 of another job, refused. Child 3: a
 * rank 1 with another size, rejected. Child 2: the real rank 1, started
 * once the intruders are gone. */
static int key_child(int idx, void *arg)
{
	struct key_test *k = arg;
	struct spardl_bootstrap *bs = NULL;
	int64_t t0 = now_ms();

	if (idx == 0) {
		close_pipes(k);
		CHILD_CHECK(create(&k->j, 0, "job-a", &bs) == 0);
		CHILD_CHECK(spardl_bootstrap_barrier(bs) == 0);
		spardl_bootstrap_destroy(bs);
		return 0;
	}
	if (idx == 1) {
		CHILD_CHECK(create(&k->j, 1, "job-b", &bs) == -EACCES);
		CHILD_CHECK(now_ms() - t0 < 2000);
		CHILD_CHECK(strstr(spardl_last_error(), "another job"));
		CHILD_CHECK(write(k->pipe[1], "x", 1) == 1);
		return 0;
	}
	if (idx == 3) {
		struct job other = k->j;

		other.size = 4;
		CHILD_CHECK(wait_pipe(k->pipe[0]) == 0);
		t0 = now_ms();
		CHILD_CHECK(create(&other, 1, "job-a", &bs) == -SPARDL_ERR_MISMATCH);
		CHILD_CHECK(now_ms() - t0 < 2000);
		CHILD_CHECK(strstr(spardl_last_error(), "SPARDL_SIZE"));
		CHILD_CHECK(write(k->pipe2[1], "x", 1) == 1);
		return 0;
	}
	CHILD_CHECK(wait_pipe(k->pipe2[0]) == 0);
	CHILD_CHECK(create(&k->j, 1, "job-a", &bs) == 0);
	CHILD_CHECK(spardl_bootstrap_barrier(bs) == 0);
	spardl_bootstrap_destroy(bs);
	return 0;
}

START_TEST(test_refused_peers)
{
	struct key_test k = { .j = { .size = 2, .timeout_ms = 6000 } };
	int codes[4];

	ck_assert_int_eq(pipe(k.pipe), 0);
	ck_assert_int_eq(pipe(k.pipe2), 0);
	tcp_addr(k.j.addr, sizeof(k.j.addr));
	run_children(4, key_child, &k, 10000, codes);
	close_pipes(&k);
	assert_all_ok(4, codes);
}
END_TEST

/* Rank 2 sends far more than a socket buffer holds, so it is still
 * writing when rank 0 reports the mismatch. */
static int mismatch_child(int rank, void *arg)
{
	struct spardl_bootstrap *bs = NULL;
	size_t len = rank == 2 ? 4 << 20 : 16;
	unsigned char *send = calloc(1, len), *recv = calloc(3, len);
	int64_t t0;

	CHILD_CHECK(send && recv);
	CHILD_CHECK(create(arg, rank, "job", &bs) == 0);
	t0 = now_ms();
	CHILD_CHECK(spardl_bootstrap_allgather(bs, send, recv, len) == -SPARDL_ERR_MISMATCH);
	CHILD_CHECK(now_ms() - t0 < 3000);
	CHILD_CHECK(strstr(spardl_last_error(), "rank 2 passed 4194304"));
	/* The streams are out of step: later calls fail at once. */
	CHILD_CHECK(spardl_bootstrap_barrier(bs) == -SPARDL_ERR_MISMATCH);
	spardl_bootstrap_destroy(bs);
	free(send);
	free(recv);
	return 0;
}

START_TEST(test_mismatched_len)
{
	struct job j = { .size = 3, .timeout_ms = 6000 };
	int codes[3];

	unix_addr(j.addr, sizeof(j.addr), "mismatch");
	run_children(3, mismatch_child, &j, 10000, codes);
	assert_all_ok(3, codes);
}
END_TEST

static int exit_child(int rank, void *arg)
{
	struct job *j = arg;
	struct spardl_bootstrap *bs = NULL;
	int64_t t0;
	char one = 1, all[3];

	CHILD_CHECK(create(j, rank, "job", &bs) == 0);
	if (rank == j->size - 1) {
		spardl_bootstrap_destroy(bs);
		return 0;
	}
	t0 = now_ms();
	CHILD_CHECK(spardl_bootstrap_allgather(bs, &one, all, 1) == -ECONNRESET);
	CHILD_CHECK(now_ms() - t0 < 2000);
	if (j->size == 3)
		CHILD_CHECK(strstr(spardl_last_error(), "rank 2 closed its bootstrap connection"));
	spardl_bootstrap_destroy(bs);
	return 0;
}

/* Rank 0 leaving: the others' next exchange fails quickly too. */
static int root_exit_child(int rank, void *arg)
{
	struct spardl_bootstrap *bs = NULL;
	int64_t t0;
	char one = 1, all[2];

	CHILD_CHECK(create(arg, rank, "job", &bs) == 0);
	if (rank == 0) {
		spardl_bootstrap_destroy(bs);
		return 0;
	}
	t0 = now_ms();
	CHILD_CHECK(spardl_bootstrap_allgather(bs, &one, all, 1) == -ECONNRESET);
	CHILD_CHECK(now_ms() - t0 < 2000);
	CHILD_CHECK(strstr(spardl_last_error(), "rank 0 closed"));
	spardl_bootstrap_destroy(bs);
	return 0;
}

START_TEST(test_rank_exits)
{
	struct job j = { .size = 3, .timeout_ms = 6000 };
	int codes[3];

	tcp_addr(j.addr, sizeof(j.addr));
	run_children(3, exit_child, &j, 10000, codes);
	assert_all_ok(3, codes);

	j.size = 2;
	unix_addr(j.addr, sizeof(j.addr), "rootexit");
	run_children(2, root_exit_child, &j, 10000, codes);
	assert_all_ok(2, codes);
}
END_TEST

/* Rank 2 joins but never calls the allgather. */
static int silent_child(int rank, void *arg)
{
	struct spardl_bootstrap *bs = NULL;
	int64_t t0;
	char one = 1, all[3];

	CHILD_CHECK(create(arg, rank, "job", &bs) == 0);
	if (rank == 2) {
		usleep(1500 * 1000);
		spardl_bootstrap_destroy(bs);
		return 0;
	}
	t0 = now_ms();
	CHILD_CHECK(spardl_bootstrap_allgather(bs, &one, all, 1) == -ETIMEDOUT);
	CHILD_CHECK(now_ms() - t0 < 1800);
	CHILD_CHECK(strstr(spardl_last_error(), "rank 2 did not contribute"));
	spardl_bootstrap_destroy(bs);
	return 0;
}

START_TEST(test_allgather_timeout)
{
	struct job j = { .size = 3, .timeout_ms = 800 };
	int codes[3];

	unix_addr(j.addr, sizeof(j.addr), "silent");
	run_children(3, silent_child, &j, 6000, codes);
	assert_all_ok(3, codes);
}
END_TEST

/* ---------------------------------------------------------------- */

START_TEST(test_malformed_address)
{
	static const char *bad[] = { "localhost", "host:", "[::1", "unix:", ":80", "[]:80", "[::1]80",
				     "h:0", "h:65536", "h:8x", "a:b:c" };
	struct spardl_bootstrap *bs = (void *)1;
	int fds = count_fds();

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		for (int rank = 0; rank < 2; rank++) {
			struct spardl_bootstrap_config cfg = {
				.rank = rank, .size = 2, .address = bad[i], .timeout_ms = 1000
			};

			ck_assert_int_eq(spardl_bootstrap_create(&cfg, &bs), -EINVAL);
			ck_assert_ptr_eq(bs, (void *)1);
			ck_assert_msg(strstr(spardl_last_error(), bad[i]) &&
					      strstr(spardl_last_error(), "unix:NAME"),
				      "message for \"%s\": %s", bad[i], spardl_last_error());
		}
	}
	ck_assert_int_eq(count_fds(), fds);
}
END_TEST

START_TEST(test_bad_config)
{
	struct spardl_bootstrap_config ok = { .rank = 0, .size = 2, .address = "unix:x", .timeout_ms = 1000 };
	struct spardl_bootstrap_config c;
	struct spardl_bootstrap *bs = (void *)1;

	c = ok;
	c.size = 0;
	ck_assert_int_eq(spardl_bootstrap_create(&c, &bs), -EINVAL);
	c = ok;
	c.rank = 2;
	ck_assert_int_eq(spardl_bootstrap_create(&c, &bs), -EINVAL);
	ck_assert_ptr_nonnull(strstr(spardl_last_error(), "rank 2"));
	c = ok;
	c.rank = -1;
	ck_assert_int_eq(spardl_bootstrap_create(&c, &bs), -EINVAL);
	c = ok;
	c.timeout_ms = 0;
	ck_assert_int_eq(spardl_bootstrap_create(&c, &bs), -EINVAL);
	c = ok;
	c.address = NULL;
	ck_assert_int_eq(spardl_bootstrap_create(&c, &bs), -EINVAL);
	ck_assert_ptr_nonnull(strstr(spardl_last_error(), "SPARDL_BOOTSTRAP"));
	ck_assert_int_eq(spardl_bootstrap_create(NULL, &bs), -EINVAL);
	ck_assert_ptr_eq(bs, (void *)1);
}
END_TEST

START_TEST(test_address_in_use)
{
	char addr[64];
	struct spardl_bootstrap_config cfg = { .rank = 0, .size = 2, .address = addr, .timeout_ms = 300 };
	struct spardl_bootstrap *bs = NULL;
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un un = { .sun_family = AF_UNIX };

	/* Hold the abstract name ourselves, as another job would. */
	unix_addr(addr, sizeof(addr), "busy");
	ck_assert_int_ge(fd, 0);
	memcpy(un.sun_path + 1, addr + 5, strlen(addr + 5));
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&un,
			      (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(addr + 5))), 0);
	int fds = count_fds();

	ck_assert_int_eq(spardl_bootstrap_create(&cfg, &bs), -EADDRINUSE);
	ck_assert_ptr_nonnull(strstr(spardl_last_error(), "another job"));
	ck_assert_int_eq(count_fds(), fds);
	close(fd);
}
END_TEST

/* A collective step that failed on some ranks: every rank returns the
 * cause (a failure that is not a timeout or lost connection wins over
 * those echoes), and the bootstrap stays in step for the next exchange. */
static int exchange_child(int rank, void *arg)
{
	struct spardl_bootstrap *bs = NULL;
	int mine = rank * 10, all[4], status = 0, ret;

	CHILD_CHECK(create(arg, rank, "job-x", &bs) == 0);
	/* First: all succeed. */
	CHILD_CHECK(spardl_bootstrap_exchange(bs, 0, "agree", &mine, all, sizeof(mine)) == 0);
	CHILD_CHECK(all[0] == 0 && all[3] == 30);
	/* Then rank 1 times out (an echo) and rank 3 runs out of descriptors. */
	if (rank == 1)
		status = spardl_error_quiet(-ETIMEDOUT, "rank 1 waited too long");
	if (rank == 3)
		status = spardl_error_quiet(-EMFILE, "memfd_create failed: too many open files");
	ret = spardl_bootstrap_exchange(bs, status, "make its endpoint", status ? NULL : &mine, all, sizeof(mine));
	CHILD_CHECK(ret == -EMFILE);
	if (rank == 3)
		CHILD_CHECK(strstr(spardl_last_error(), "memfd_create failed") &&
			    !strstr(spardl_last_error(), "rank 3 could not"));
	else
		CHILD_CHECK(strstr(spardl_last_error(), "rank 3 could not make its endpoint: memfd_create failed"));
	if (rank == 1)
		CHILD_CHECK(strstr(spardl_last_error(), "and on this rank: rank 1 waited too long"));
	/* The streams are still in step. */
	mine = rank + 100;
	CHILD_CHECK(spardl_bootstrap_exchange(bs, 0, "agree again", &mine, all, sizeof(mine)) == 0);
	CHILD_CHECK(all[0] == 100 && all[1] == 101 && all[2] == 102 && all[3] == 103);
	spardl_bootstrap_destroy(bs);
	return 0;
}

START_TEST(test_exchange_failure)
{
	struct job j = { .size = 4, .timeout_ms = 8000 };
	int codes[4];

	unix_addr(j.addr, sizeof(j.addr), "exchange");
	run_children(4, exchange_child, &j, 15000, codes);
	assert_all_ok(4, codes);
}
END_TEST

static Suite *bootstrap_suite(void)
{
	Suite *s = suite_create("bootstrap");
	TCase *tc = tcase_create("bootstrap");

	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_four_ranks_tcp);
	tcase_add_test(tc, test_four_ranks_unix);
	tcase_add_test(tc, test_two_ranks_ipv6);
	tcase_add_test(tc, test_size_one);
	tcase_add_test(tc, test_oob);
	tcase_add_test(tc, test_oob_failing_callback);
	tcase_add_test(tc, test_missing_rank);
	tcase_add_test(tc, test_rank0_unreached);
	tcase_add_test(tc, test_refused_peers);
	tcase_add_test(tc, test_mismatched_len);
	tcase_add_test(tc, test_rank_exits);
	tcase_add_test(tc, test_allgather_timeout);
	tcase_add_test(tc, test_malformed_address);
	tcase_add_test(tc, test_bad_config);
	tcase_add_test(tc, test_address_in_use);
	tcase_add_test(tc, test_exchange_failure);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return run_unit_suite(bootstrap_suite());
}
