/* SPDX-License-Identifier: MIT */
/* Hostile clients and fake ranks against the rendezvous and the shm transport: each is refused with a log line, and the job still completes. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>

#include <spardl/spardl.h>

#include "bootstrap.h"
#include "bootstrap_msg.h"
#include "shm.h"

#define KEY "trust-test-key-0123456789abcdef"
#define TIMEOUT_MS 8000

static int ntests, nfailed;

static void tap(int ok, const char *fmt, ...)
{
	va_list ap;

	ntests++;
	nfailed += !ok;
	printf("%s %d - ", ok ? "ok" : "not ok", ntests);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

static void skip(const char *why, const char *fmt, ...)
{
	va_list ap;

	ntests++;
	printf("ok %d - ", ntests);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf(" # SKIP %s\n", why);
	fflush(stdout);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A child process whose stderr goes to a file the parent reads later. */
struct child {
	pid_t pid;
	char log[64];
};

typedef int (*child_fn)(void *arg);

static void start(struct child *c, child_fn fn, void *arg)
{
	int fd;

	snprintf(c->log, sizeof(c->log), "/tmp/spardl-trust-%d-XXXXXX", (int)getpid());
	fd = mkstemp(c->log);
	if (fd < 0) {
		perror("mkstemp");
		exit(1);
	}
	fflush(NULL);
	c->pid = fork();
	if (c->pid < 0) {
		perror("fork");
		exit(1);
	}
	if (c->pid == 0) {
		dup2(fd, 2);
		close(fd);
		_exit(fn(arg));
	}
	close(fd);
}

/* Exit status of the child (killed after limit_ms: 99), and whether its
 * log holds want (NULL: not checked). */
static int finish(struct child *c, int limit_ms, const char *want, int *found)
{
	int64_t deadline = now_ms() + limit_ms;
	int st = 0, code = 99;
	char buf[16384];
	ssize_t n;
	int fd;

	for (;;) {
		pid_t w = waitpid(c->pid, &st, WNOHANG);

		if (w == c->pid) {
			code = WIFEXITED(st) ? WEXITSTATUS(st) : 100 + WTERMSIG(st);
			break;
		}
		if (now_ms() > deadline) {
			kill(c->pid, SIGKILL);
			waitpid(c->pid, &st, 0);
			break;
		}
		usleep(5000);
	}
	fd = open(c->log, O_RDONLY);
	n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
	buf[n > 0 ? n : 0] = '\0';
	if (fd >= 0)
		close(fd);
	if (found)
		*found = want && strstr(buf, want) != NULL;
	if (code)
		fprintf(stderr, "# child %d exited with %d; its log:\n%s\n", (int)c->pid, code, buf);
	unlink(c->log);
	return code;
}

static int log_has(const char *path, const char *want)
{
	char buf[16384];
	int fd = open(path, O_RDONLY);
	ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;

	if (fd >= 0)
		close(fd);
	buf[n > 0 ? n : 0] = '\0';
	return strstr(buf, want) != NULL;
}

struct job {
	char addr[128];
	const char *key; /* NULL: unauthenticated, job_id below */
	const char *job_id;
	int size;
	int nofile;      /* rank 0: RLIMIT_NOFILE headroom over the descriptors open now (0: unchanged) */
};

static int open_fds(void)
{
	int n = 0;

	for (int fd = 0; fd < 1024; fd++)
		n += fcntl(fd, F_GETFD) >= 0;
	return n;
}

/* A rank: rendezvous, then an allgather whose result is checked. */
static int rank_main(const struct job *j, int rank)
{
	struct spardl_bootstrap_config cfg = {
		.rank = rank,
		.size = j->size,
		.address = j->addr,
		.key = j->key,
		.key_len = j->key ? strlen(j->key) : 0,
		.job_id = j->job_id,
		.timeout_ms = TIMEOUT_MS,
	};
	struct spardl_bootstrap *bs;
	int mine = rank * 7 + 1, all[8], ret, r;

	if (rank == 0 && j->nofile) {
		struct rlimit rl;

		getrlimit(RLIMIT_NOFILE, &rl);
		rl.rlim_cur = (rlim_t)(open_fds() + j->nofile);
		if (setrlimit(RLIMIT_NOFILE, &rl))
			return 3;
	}
	ret = spardl_bootstrap_create(&cfg, &bs);
	if (ret) {
		fprintf(stderr, "rank %d: create: %s\n", rank, spardl_last_error());
		return 1;
	}
	ret = spardl_bootstrap_allgather(bs, &mine, all, sizeof(mine));
	for (r = 0; !ret && r < j->size; r++)
		if (all[r] != r * 7 + 1)
			ret = -EPROTO;
	if (ret)
		fprintf(stderr, "rank %d: allgather: %s\n", rank, spardl_last_error());
	spardl_bootstrap_destroy(bs);
	return ret ? 2 : 0;
}

static int rank0_main(void *arg)
{
	return rank_main(arg, 0);
}

static int rank1_main(void *arg)
{
	return rank_main(arg, 1);
}

/* ---------------------------------------------------------------- */
/* Raw clients                                                       */
/* ---------------------------------------------------------------- */

static int dial(const char *addr)
{
	int64_t deadline = now_ms() + 5000;

	for (;;) {
		int fd;

		if (!strncmp(addr, "unix:", 5)) {
			struct sockaddr_un un = { .sun_family = AF_UNIX };
			size_t n = strlen(addr + 5);

			memcpy(un.sun_path + 1, addr + 5, n);
			fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
			if (fd >= 0 && !connect(fd, (struct sockaddr *)&un,
						 (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n)))
				return fd;
		} else {
			struct sockaddr_in sin = { .sin_family = AF_INET };

			sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
			sin.sin_port = htons((uint16_t)atoi(strchr(addr, ':') + 1));
			fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
			if (fd >= 0 && !connect(fd, (struct sockaddr *)&sin, sizeof(sin)))
				return fd;
		}
		if (fd >= 0)
			close(fd);
		if (now_ms() > deadline)
			return -1;
		usleep(10000);
	}
}

static int read_full(int fd, void *buf, size_t len, int ms)
{
	size_t got = 0;

	while (got < len) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t r;

		if (poll(&p, 1, ms) <= 0)
			return -ETIMEDOUT;
		r = read(fd, (char *)buf + got, len - got);
		if (r <= 0)
			return -ECONNRESET;
		got += (size_t)r;
	}
	return 0;
}

static int write_full(int fd, const void *buf, size_t len)
{
	return send(fd, buf, len, MSG_NOSIGNAL) == (ssize_t)len ? 0 : -EIO;
}

/* rank 0's answer to a hello: the header, and a short text when it is an error. */
static int read_reply(int fd, struct spardl_bs_hdr *h, char *text, size_t cap)
{
	uint8_t raw[SPARDL_BS_HDR_LEN], body[SPARDL_BS_TEXT_MAX];
	int ret = read_full(fd, raw, sizeof(raw), 3000);

	text[0] = '\0';
	if (ret)
		return ret;
	if (spardl_bs_hdr_decode(raw, sizeof(raw), h))
		return -EPROTO;
	if ((h->type == SPARDL_BS_ERROR || h->type == SPARDL_BS_REFUSED) && h->len <= sizeof(body)) {
		ret = read_full(fd, body, (size_t)h->len, 3000);
		if (!ret)
			spardl_bs_text_copy(text, cap, body, (size_t)h->len);
	}
	return 0;
}

static void make_hello(uint8_t *buf, int rank, int size, int keyed)
{
	struct spardl_bs_hello h = { .version = SPARDL_BS_VERSION, .rank = (uint32_t)rank, .size = (uint32_t)size };

	h.flags = keyed ? SPARDL_BS_HELLO_KEYED : 0;
	spardl_bs_random(h.nonce, sizeof(h.nonce));
	spardl_bs_hello_encode(buf, &h);
}

/* The proof a client makes over rank 0's nonce, with some key. */
static void client_proof(const char *key, const uint8_t *hello, const uint8_t *nonce, uint8_t *mac)
{
	spardl_bs_mac((const uint8_t *)key, strlen(key), "spardl bootstrap v2 rank", hello, nonce, mac);
}

/* A keyed hello; returns the fd with rank 0's nonce read, or -1. */
static int challenge(const char *addr, const uint8_t *hello, uint8_t *nonce)
{
	uint8_t body[SPARDL_BS_CHALLENGE_LEN];
	struct spardl_bs_hdr h;
	char text[256];
	int fd = dial(addr);

	if (fd < 0 || write_full(fd, hello, SPARDL_BS_HELLO_LEN) || read_reply(fd, &h, text, sizeof(text)) ||
	    h.type != SPARDL_BS_CHALLENGE || h.len != sizeof(body) || read_full(fd, body, sizeof(body), 3000)) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	memcpy(nonce, body, SPARDL_BS_NONCE);
	return fd;
}

/* After the response: rank 0 must refuse, naming why. */
static int refused(int fd, const char *want)
{
	struct spardl_bs_hdr h;
	char text[1024];
	int ret = read_reply(fd, &h, text, sizeof(text));

	close(fd);
	if (ret == -ECONNRESET && !want)
		return 1;
	if (ret || h.type != SPARDL_BS_REFUSED) {
		fprintf(stderr, "# expected a refusal, got %d type %u: %s\n", ret, ret ? 0 : h.type, text);
		return 0;
	}
	if (want && !strstr(text, want)) {
		fprintf(stderr, "# refusal lacks '%s': %s\n", want, text);
		return 0;
	}
	return 1;
}

static void tcp_addr(char *buf, size_t sz)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) || getsockname(fd, (struct sockaddr *)&sin, &sl))
		exit(1);
	snprintf(buf, sz, "127.0.0.1:%d", ntohs(sin.sin_port));
	close(fd);
}

/* ---------------------------------------------------------------- */
/* Tests                                                             */
/* ---------------------------------------------------------------- */

/* Hostile clients against a keyed TCP rendezvous; then the real rank 1. */
static void test_tcp_hostile(void)
{
	struct job j = { .key = KEY, .size = 2 };
	struct child r0, r1;
	uint8_t hello[SPARDL_BS_HELLO_LEN], nonce[SPARDL_BS_NONCE], nonce2[SPARDL_BS_NONCE], mac[SPARDL_BS_MAC];
	uint8_t resp[SPARDL_BS_RESPONSE_LEN], junk[300];
	int fd, idle, ok, c0, c1;

	tcp_addr(j.addr, sizeof(j.addr));
	start(&r0, rank0_main, &j);

	/* Garbage instead of a hello. */
	fd = dial(j.addr);
	spardl_bs_random(junk, sizeof(junk));
	ok = fd >= 0 && !write_full(fd, junk, sizeof(junk)) && refused(fd, NULL);
	tap(ok, "tcp: garbage instead of a hello is dropped");

	/* A header with a huge length field where the hello belongs. */
	{
		struct spardl_bs_hdr h = { .type = SPARDL_BS_DATA, .len = UINT64_C(1) << 62 };

		memset(junk, 0xff, sizeof(junk));
		spardl_bs_hdr_encode(junk, &h);
		fd = dial(j.addr);
		ok = fd >= 0 && !write_full(fd, junk, SPARDL_BS_HELLO_LEN) && refused(fd, NULL);
		tap(ok, "tcp: an oversized length field in place of a hello is dropped");
	}

	/* A hello with impossible rank and size. */
	make_hello(hello, 0x7fffffff, -1, 1);
	fd = dial(j.addr);
	ok = fd >= 0 && !write_full(fd, hello, sizeof(hello));
	if (ok) {
		struct spardl_bs_hdr h;
		char text[512];

		ok = !read_reply(fd, &h, text, sizeof(text)) && h.type == SPARDL_BS_ERROR && strstr(text, "size");
		close(fd);
	}
	tap(ok, "tcp: a hello with an impossible rank and size is refused with an error report");

	/* No key at all. */
	make_hello(hello, 1, 2, 0);
	fd = dial(j.addr);
	ok = fd >= 0 && !write_full(fd, hello, sizeof(hello)) && refused(fd, "requires the job key");
	tap(ok, "tcp: a hello without a key is refused");

	/* The wrong key. */
	make_hello(hello, 1, 2, 1);
	fd = challenge(j.addr, hello, nonce);
	ok = fd >= 0;
	if (ok) {
		client_proof("not the key", hello, nonce, mac);
		spardl_bs_response_encode(resp, mac);
		ok = !write_full(fd, resp, sizeof(resp)) && refused(fd, "proof of the job key is wrong");
	}
	tap(ok, "tcp: a wrong job key is refused");

	/* A replayed handshake: the right key's proof, but for an old nonce. */
	make_hello(hello, 1, 2, 1);
	fd = challenge(j.addr, hello, nonce);
	ok = fd >= 0;
	if (ok) {
		client_proof(KEY, hello, nonce, mac);
		close(fd);
		fd = challenge(j.addr, hello, nonce2);
		ok = fd >= 0 && memcmp(nonce, nonce2, sizeof(nonce));
	}
	if (ok) {
		spardl_bs_response_encode(resp, mac);
		ok = !write_full(fd, resp, sizeof(resp)) && refused(fd, "proof of the job key is wrong");
	}
	tap(ok, "tcp: a replayed handshake (a proof over an old nonce) is refused");

	/* A connection that says nothing does not hold up the job. */
	idle = dial(j.addr);

	start(&r1, rank1_main, &j);
	c1 = finish(&r1, 15000, NULL, NULL);
	c0 = finish(&r0, 15000, NULL, NULL);
	if (idle >= 0)
		close(idle);
	tap(c0 == 0 && c1 == 0, "tcp: after the hostile clients the real ranks meet and exchange (exit %d, %d)", c0,
	    c1);
}

/* What rank 0 logged about the hostile clients: one refusal line each. */
static int rank0_log_main(void *arg)
{
	return rank_main(arg, 0);
}

static void test_refusals_logged(void)
{
	struct job j = { .key = KEY, .size = 2 };
	struct child r0, r1;
	uint8_t hello[SPARDL_BS_HELLO_LEN], nonce[SPARDL_BS_NONCE], mac[SPARDL_BS_MAC], resp[SPARDL_BS_RESPONSE_LEN];
	int fd, c0, c1, a, b;

	tcp_addr(j.addr, sizeof(j.addr));
	start(&r0, rank0_log_main, &j);
	make_hello(hello, 1, 2, 1);
	fd = challenge(j.addr, hello, nonce);
	if (fd >= 0) {
		client_proof("wrong", hello, nonce, mac);
		spardl_bs_response_encode(resp, mac);
		write_full(fd, resp, sizeof(resp));
		refused(fd, NULL);
	}
	fd = dial(j.addr);
	if (fd >= 0) {
		write_full(fd, "GET / HTTP/1.0\r\n\r\n" "................................................................"
			       "........",
			   SPARDL_BS_HELLO_LEN);
		refused(fd, NULL);
	}
	start(&r1, rank1_main, &j);
	c1 = finish(&r1, 15000, NULL, NULL);
	/* finish() reads the log before unlinking it. */
	a = log_has(r0.log, "wrong job key or a replayed handshake");
	b = log_has(r0.log, "not a spardl rank");
	c0 = finish(&r0, 15000, NULL, NULL);
	tap(c0 == 0 && c1 == 0 && a && b, "rank 0 logs a line for each refused client (wrong key %d, garbage %d)", a,
	    b);
}

/* A fake rank 0: the client must not trust it. */
struct fake_server {
	char addr[128];
	int mode; /* 0: huge error report, 1: a challenge with a forged proof */
};

static int fake_server_main(void *arg)
{
	struct fake_server *f = arg;
	struct sockaddr_in sin = { .sin_family = AF_INET };
	uint8_t hello[SPARDL_BS_HELLO_LEN], out[SPARDL_BS_HDR_LEN + SPARDL_BS_CHALLENGE_LEN];
	int lfd = socket(AF_INET, SOCK_STREAM, 0), fd, one = 1;
	struct spardl_bs_hdr h = { 0 };

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = htons((uint16_t)atoi(strchr(f->addr, ':') + 1));
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) || listen(lfd, 4))
		return 3;
	fd = accept(lfd, NULL, NULL);
	if (fd < 0 || read_full(fd, hello, sizeof(hello), 5000))
		return 4;
	if (f->mode == 0) {
		h.type = SPARDL_BS_ERROR;
		h.code = EIO;
		h.len = UINT64_C(1) << 40;
		spardl_bs_hdr_encode(out, &h);
		write_full(fd, out, SPARDL_BS_HDR_LEN);
	} else {
		h.type = SPARDL_BS_CHALLENGE;
		h.len = SPARDL_BS_CHALLENGE_LEN;
		spardl_bs_hdr_encode(out, &h);
		spardl_bs_random(out + SPARDL_BS_HDR_LEN, SPARDL_BS_CHALLENGE_LEN);
		write_full(fd, out, sizeof(out));
	}
	/* Hold the connection until the client gives up. */
	read_full(fd, hello, 1, 5000);
	return 0;
}

static void test_fake_rank0(void)
{
	static const char *want[] = { "malformed error report", "did not prove it holds this job's key" };

	for (int mode = 0; mode < 2; mode++) {
		struct fake_server f = { .mode = mode };
		struct job j = { .key = KEY, .size = 2 };
		struct child srv, r1;
		int c, found;
		int64_t t0;

		tcp_addr(f.addr, sizeof(f.addr));
		memcpy(j.addr, f.addr, sizeof(j.addr));
		start(&srv, fake_server_main, &f);
		usleep(100000);
		t0 = now_ms();
		start(&r1, rank1_main, &j);
		c = finish(&r1, 15000, want[mode], &found);
		finish(&srv, 8000, NULL, NULL);
		tap(c == 1 && found && now_ms() - t0 < 5000, "a fake rank 0 sending %s is refused by the joining rank",
		    mode ? "a challenge with a forged proof" : "an error report of 2^40 bytes");
	}
}

/* Another user on the host may reach the abstract socket, but not join. */
struct uid_test {
	struct job j;
};

static int other_uid_main(void *arg)
{
	struct job *j = arg;
	uint8_t hello[SPARDL_BS_HELLO_LEN];
	int fd;

	if (setgid(65534) || setuid(65534))
		return 3;
	make_hello(hello, 1, 2, 1);
	fd = dial(j->addr);
	if (fd < 0)
		return 4;
	write_full(fd, hello, sizeof(hello));
	return refused(fd, "another user") ? 0 : 5;
}

static void test_other_uid(void)
{
	struct job j = { .key = KEY, .size = 2 };
	struct child r0, r1, other;
	int c0, c1, co, logged;

	if (geteuid() != 0) {
		skip("needs root to run a client as another uid", "unix: another uid is refused");
		return;
	}
	snprintf(j.addr, sizeof(j.addr), "unix:spardl-trust-%d-uid", (int)getpid());
	start(&r0, rank0_main, &j);
	usleep(100000);
	start(&other, other_uid_main, &j);
	co = finish(&other, 10000, NULL, NULL);
	start(&r1, rank1_main, &j);
	c1 = finish(&r1, 15000, NULL, NULL);
	logged = log_has(r0.log, "refused a connection from uid 65534");
	c0 = finish(&r0, 15000, NULL, NULL);
	tap(co == 0 && c0 == 0 && c1 == 0 && logged,
	    "unix: a client of another uid is refused and logged; the job completes (exit %d, %d, %d; logged %d)", co,
	    c0, c1, logged);
}

/* Rank 0 short of descriptors, flooded with idle connections. */
static void test_fd_exhaustion(void)
{
	struct job j = { .key = KEY, .size = 2, .nofile = 8 };
	struct child r0, r1;
	int idle[40], i, c0, c1, logged;

	tcp_addr(j.addr, sizeof(j.addr));
	start(&r0, rank0_main, &j);
	usleep(100000);
	for (i = 0; i < 40; i++)
		idle[i] = dial(j.addr);
	start(&r1, rank1_main, &j);
	c1 = finish(&r1, 20000, NULL, NULL);
	logged = log_has(r0.log, "open file limit");
	c0 = finish(&r0, 20000, NULL, NULL);
	for (i = 0; i < 40; i++)
		if (idle[i] >= 0)
			close(idle[i]);
	tap(c0 == 0 && c1 == 0 && logged,
	    "rank 0 out of file descriptors under a flood of idle connections: a clear log line, and the job completes (exit %d, %d; logged %d)",
	    c0, c1, logged);
}

/* More connections that never say anything than rank 0 holds at once:
 * the oldest are dropped, and the real rank still gets in. */
static void test_pending_flood(void)
{
	struct job j = { .key = KEY, .size = 2 };
	struct child r0, r1;
	int idle[100], i, c0, c1, logged;

	tcp_addr(j.addr, sizeof(j.addr));
	start(&r0, rank0_main, &j);
	usleep(100000);
	for (i = 0; i < 100; i++)
		idle[i] = dial(j.addr);
	usleep(300000);
	start(&r1, rank1_main, &j);
	c1 = finish(&r1, 20000, NULL, NULL);
	logged = log_has(r0.log, "connections have not joined yet; dropping the oldest");
	c0 = finish(&r0, 20000, NULL, NULL);
	for (i = 0; i < 100; i++)
		if (idle[i] >= 0)
			close(idle[i]);
	tap(c0 == 0 && c1 == 0 && logged,
	    "100 idle connections: rank 0 holds at most 64, drops the oldest with a log line, and the job completes (exit %d, %d; logged %d)",
	    c0, c1, logged);
}

/* Without a key: works, rank 0 warns, and another job is kept apart. */
static void test_unauthenticated(void)
{
	struct job j = { .job_id = "job-a", .size = 2 }, other;
	struct child r0, r1, r1b;
	int c0, c1, cb, warned, apart;

	snprintf(j.addr, sizeof(j.addr), "unix:spardl-trust-%d-nokey", (int)getpid());
	other = j;
	other.job_id = "job-b";
	start(&r0, rank0_main, &j);
	start(&r1b, rank1_main, &other);
	cb = finish(&r1b, 15000, "another job", &apart);
	start(&r1, rank1_main, &j);
	c1 = finish(&r1, 15000, NULL, NULL);
	warned = log_has(r0.log, "is not authenticated");
	c0 = finish(&r0, 15000, NULL, NULL);
	tap(c0 == 0 && c1 == 0 && warned && cb == 1 && apart,
	    "no key: the job completes, rank 0 warns it is unauthenticated, another job's rank is refused (%d %d %d %d %d)",
	    c0, c1, warned, cb, apart);
}

/* ---------------------------------------------------------------- */
/* shm: a peer's segment must be a sealed spardl memfd                */
/* ---------------------------------------------------------------- */

static int check_fd(int fd, size_t len, char *why, size_t cap)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)getpid(), fd);
	return spardl_shm_check_segment(fd, path, len, why, cap);
}

static void test_shm_segments(void)
{
	char why[256], tmpl[] = "/tmp/spardl-trust-file-XXXXXX";
	int file = mkstemp(tmpl), plain = memfd_create("spardl", MFD_CLOEXEC), other, good;

	unlink(tmpl);
	ftruncate(file, 4096);
	ftruncate(plain, 4096);
	other = memfd_create("other", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	ftruncate(other, 4096);
	fcntl(other, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
	good = memfd_create("spardl", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	ftruncate(good, 4096);
	fcntl(good, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
	tap(check_fd(file, 4096, why, sizeof(why)) == -EACCES, "shm: a regular file is not a segment (%s)", why);
	tap(check_fd(plain, 4096, why, sizeof(why)) == -EACCES, "shm: an unsealed memfd is not a segment (%s)", why);
	tap(check_fd(other, 4096, why, sizeof(why)) == -EACCES, "shm: a memfd of another name is not a segment (%s)",
	    why);
	tap(check_fd(good, 8192, why, sizeof(why)) == -EACCES, "shm: a segment of another size is refused (%s)", why);
	why[0] = '\0';
	tap(check_fd(good, 4096, why, sizeof(why)) == 0, "shm: a sealed spardl memfd of the announced size passes");
	close(file);
	close(plain);
	close(other);
	close(good);
}

/* Two ranks over shm; rank 1 announces a file it has open instead of its
 * segments. Rank 0 must refuse it without writing to it. */
struct fake_rank {
	char file[64]; /* rank 1 announces this file; empty: its own segments */
	char addr[128];
	int fuzz;      /* rank 1 announces through fuzz_hook */
};

/* What fuzz_hook changes: bit f of mask changes field f (pid, ring fd,
 * ring capacity, receive fd, receive length) to choice f of a list of
 * values none of which can be right. Set before the fork. */
static unsigned fuzz_mask;
static unsigned fuzz_pick[5];

static void fuzz_hook(int32_t *pid, int32_t *ring_fd, uint32_t *ring_cap, int32_t *recv_fd, uint64_t *recv_len)
{
	const int32_t pids[] = {0, -1, 1, *pid + 1, INT32_MAX, (int32_t)getppid()};
	const int32_t fds[] = {-1, 0, 2, 1023, 100000, INT32_MIN};
	const uint32_t caps[] = {0, 1, 15, 17, *ring_cap * 2, *ring_cap / 2, 0x80000000u, UINT32_MAX};
	const uint64_t lens[] = {0, 1, *recv_len - 1, *recv_len + 1, *recv_len * 2, 1ull << 63, UINT64_MAX};

	if (fuzz_mask & 1)
		*pid = pids[fuzz_pick[0] % (sizeof(pids) / sizeof(pids[0]))];
	if (fuzz_mask & 2)
		*ring_fd = fds[fuzz_pick[1] % (sizeof(fds) / sizeof(fds[0]))];
	if (fuzz_mask & 4)
		*ring_cap = caps[fuzz_pick[2] % (sizeof(caps) / sizeof(caps[0]))];
	if (fuzz_mask & 8)
		*recv_fd = fds[fuzz_pick[3] % (sizeof(fds) / sizeof(fds[0]))];
	if (fuzz_mask & 16)
		*recv_len = lens[fuzz_pick[4] % (sizeof(lens) / sizeof(lens[0]))];
}

static int shm_rank_main(struct fake_rank *f, int rank)
{
	struct spardl_comm_params cp;
	struct spardl_plan_params pp;
	struct spardl_comm *comm;
	struct spardl_plan *plan = NULL;
	int ret;

	spardl_comm_params_init(&cp);
	cp.field_mask = SPARDL_COMM_PARAM_RANK_SIZE | SPARDL_COMM_PARAM_BOOTSTRAP | SPARDL_COMM_PARAM_JOB_KEY |
			SPARDL_COMM_PARAM_TRANSPORT | SPARDL_COMM_PARAM_TIMEOUT;
	cp.rank = rank;
	cp.size = 2;
	cp.bootstrap = f->addr;
	cp.job_key = KEY;
	cp.transport = "shm";
	cp.timeout_ms = TIMEOUT_MS;
	ret = spardl_comm_create(&cp, &comm);
	if (ret) {
		fprintf(stderr, "rank %d: comm_create: %s\n", rank, spardl_last_error());
		return 1;
	}
	if (rank == 1 && f->file[0]) {
		int fd = open(f->file, O_RDWR);

		if (fd < 0)
			return 2;
		spardl_shm_fake_announce_fd = fd;
	}
	if (rank == 1 && f->fuzz)
		spardl_shm_announce_hook = fuzz_hook;
	spardl_plan_params_init(&pp);
	pp.count = 4096;
	ret = spardl_plan_create(comm, &pp, &plan);
	fprintf(stderr, "rank %d: plan_create: %d: %s\n", rank, ret, ret ? spardl_last_error() : "ok");
	spardl_plan_destroy(plan);
	spardl_comm_destroy(comm);
	/* Exit 0 when the plan was refused, as it must be. */
	return ret ? 0 : 5;
}

static int shm_rank0(void *arg)
{
	return shm_rank_main(arg, 0);
}

static int shm_rank1(void *arg)
{
	return shm_rank_main(arg, 1);
}

static void test_shm_fake_rank(void)
{
	struct fake_rank f;
	struct child r0, r1;
	char buf[4096], want[4096];
	int fd, c0, c1, named0, named1;

	memset(&f, 0, sizeof(f));
	snprintf(f.file, sizeof(f.file), "/tmp/spardl-trust-victim-XXXXXX");
	fd = mkstemp(f.file);
	memset(want, 'v', sizeof(want));
	if (write(fd, want, sizeof(want)) != (ssize_t)sizeof(want))
		perror("write");
	close(fd);
	snprintf(f.addr, sizeof(f.addr), "unix:spardl-trust-%d-shm", (int)getpid());
	start(&r0, shm_rank0, &f);
	start(&r1, shm_rank1, &f);
	c1 = finish(&r1, 20000, NULL, NULL);
	named0 = log_has(r0.log, "refused rank 1's");
	named1 = 0;
	c0 = finish(&r0, 20000, NULL, NULL);
	fd = open(f.file, O_RDONLY);
	named1 = fd >= 0 && read(fd, buf, sizeof(buf)) == (ssize_t)sizeof(buf) && !memcmp(buf, want, sizeof(buf));
	if (fd >= 0)
		close(fd);
	unlink(f.file);
	tap(c0 == 0 && c1 == 0 && named0 && named1,
	    "shm: a fake rank announcing a file it has open is refused by every rank, and the file is untouched (%d %d %d %d)",
	    c0, c1, named0, named1);
}

/* Rank 1 announces wrong values for 1 to 3 fields, drawn at random (fixed
 * seed), in 24 jobs: every rank's plan creation must fail, rank 0 naming
 * rank 1, no process may crash or hang. First a job announcing the truth
 * through the same hook, which must succeed. */
static void test_shm_announce_fuzz(void)
{
	struct fake_rank f;
	uint64_t rng = 0x5eed5eedull;
	int jobs = 24, good = 0, control = 0;

	memset(&f, 0, sizeof(f));
	f.fuzz = 1;
	for (int j = -1; j < jobs; j++) {
		struct child r0, r1;
		int c0, c1, named, nfields = 0;

		fuzz_mask = 0;
		if (j >= 0) {
			/* 1 to 3 distinct fields */
			int want = 1 + (int)((rng = rng * 6364136223846793005ull + 1442695040888963407ull) >> 60) % 3;

			while (nfields < want) {
				rng = rng * 6364136223846793005ull + 1442695040888963407ull;
				unsigned bit = 1u << ((rng >> 40) % 5);

				if (!(fuzz_mask & bit)) {
					fuzz_mask |= bit;
					nfields++;
				}
			}
			for (int k = 0; k < 5; k++) {
				rng = rng * 6364136223846793005ull + 1442695040888963407ull;
				fuzz_pick[k] = (unsigned)(rng >> 33);
			}
		}
		snprintf(f.addr, sizeof(f.addr), "unix:spardl-trust-%d-fuzz-%d", (int)getpid(), j + 1);
		start(&r0, shm_rank0, &f);
		start(&r1, shm_rank1, &f);
		c1 = finish(&r1, 20000, NULL, NULL);
		named = log_has(r0.log, "rank 1");
		c0 = finish(&r0, 20000, NULL, NULL);
		if (j < 0) {
			control = c0 == 5 && c1 == 5;
			continue;
		}
		if (c0 == 0 && c1 == 0 && named)
			good++;
		else
			fprintf(stderr, "# fuzzed announcement %d (fields 0x%x): rank 0 exit %d, rank 1 exit %d, named %d\n", j,
				fuzz_mask, c0, c1, named);
	}
	tap(control, "shm: a true announcement through the hook creates the plan");
	tap(good == jobs,
	    "shm: %d of %d jobs whose rank 1 announced wrong values were refused by every rank, rank 0 naming rank 1, no crash or hang",
	    good, jobs);
}

int main(void)
{
	setenv("SPARDL_DEBUG", "warn", 1);
	signal(SIGPIPE, SIG_IGN);
	test_tcp_hostile();
	test_refusals_logged();
	test_fake_rank0();
	test_other_uid();
	test_fd_exhaustion();
	test_pending_flood();
	test_unauthenticated();
	test_shm_segments();
	test_shm_fake_rank();
	test_shm_announce_fuzz();
	printf("1..%d\n", ntests);
	return nfailed ? 1 : 0;
}
