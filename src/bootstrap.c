/* SPDX-License-Identifier: MIT */
/* Bootstrap: rank 0 listens and every other rank connects (authenticated by the job key when there is one); allgathers are a star through rank 0. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "bootstrap.h"
#include "bootstrap_msg.h"
#include "log.h"

#define HDR_LEN SPARDL_BS_HDR_LEN
#define HELLO_LEN SPARDL_BS_HELLO_LEN
#define TEXT_MAX SPARDL_BS_TEXT_MAX
#define MAX_LISTED 16
/* Connections that have not yet proved they belong to the job: at most
 * this many are held at once (the oldest is dropped for a new one), and
 * each gets HANDSHAKE_MS to finish its hello and response. */
#define MAX_PENDING 64
#define HANDSHAKE_MS 5000
/* Refusals logged per rendezvous before the rest are only counted. */
#define MAX_REFUSALS_LOGGED 10
/* Text of a failed rank's report in spardl_bootstrap_exchange(). */
#define STATUS_TEXT 512

/* Labels of the two proofs: distinct, so one cannot be reflected as the other. */
static const char label_server[] = "spardl bootstrap v2 rank 0";
static const char label_client[] = "spardl bootstrap v2 rank";

/* Rank 0's view of one peer during a gather. */
struct peer_state {
	uint8_t hdr[HDR_LEN];
	size_t hdr_got;
	uint64_t body_got;
	struct spardl_bs_hdr m;
	int st;
};

enum { PS_HDR, PS_BODY, PS_DONE, PS_BAD };

struct spardl_bootstrap {
	int rank;
	int size;
	int timeout_ms;
	spardl_oob_allgather_fn oob;
	void *oob_ctx;
	uint8_t *key;      /* the job's secret, or NULL */
	size_t key_len;
	uint8_t tag[32];   /* without a key: digest of the job identifier */
	uid_t *uids;       /* unix sockets: admitted uids besides our own */
	int nuids, any_uid;
	char *address;
	int fd;       /* ranks > 0: the connection to rank 0 */
	int *peers;   /* rank 0: peers[r] is rank r's connection (r >= 1) */
	struct peer_state *ps;
	struct pollfd *pfd;
	int *pfd_rank;
	size_t *off;
	char *todo;
	uint32_t seq;
	/* Rank 0 during the rendezvous: refusals so far, and whether it ran
	 * out of file descriptors (named in a later timeout). */
	int refusals;
	int fd_exhausted;
	/* A failed exchange leaves the streams out of step, so later calls
	 * repeat its error instead of reading garbage. */
	int failed;
	char failed_msg[1024];
};

/* Resolved form of an address: a getaddrinfo list, or one abstract unix name. */
struct bs_addr {
	struct addrinfo *list;
	struct addrinfo un_ai;
	struct sockaddr_un un;
	int is_unix;
};

static const char *errstr(int err)
{
	const char *s = strerrordesc_np(err < 0 ? -err : err);

	return s ? s : "unknown error";
}

static int64_t now_ms(void)
{
	struct timespec ts;

	/* Only fails for an invalid clock id. */
	if (clock_gettime(CLOCK_MONOTONIC, &ts))
		return 0;
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double secs(int ms)
{
	return ms / 1000.0;
}

/* Extra wait for a rank > 0, so that it still hears rank 0's report of who
 * is missing when rank 0 started a little later than it did. */
static int grace_ms(int timeout_ms)
{
	int g = timeout_ms / 4;

	return g > 5000 ? 5000 : g;
}

static void make_hdr(uint8_t *h, uint32_t type, uint32_t seq, uint32_t code, uint64_t len)
{
	struct spardl_bs_hdr m = { .type = type, .seq = seq, .code = code, .len = len };

	spardl_bs_hdr_encode(h, &m);
}

/* poll() until deadline: > 0 ready, 0 timed out, < 0 -errno. */
static int poll_until(struct pollfd *p, nfds_t n, int64_t deadline)
{
	for (;;) {
		int64_t left = deadline - now_ms();
		int rc;

		if (left < 0)
			left = 0;
		rc = poll(p, n, left > INT_MAX ? INT_MAX : (int)left);
		if (rc >= 0)
			return rc;
		if (errno != EINTR)
			return -errno;
	}
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static int is_reset(int err)
{
	return err == -ECONNRESET || err == -EPIPE || err == -ECONNABORTED;
}

/* Reads exactly len bytes; EOF is -ECONNRESET. */
static int recv_full(int fd, void *buf, size_t len, int64_t deadline)
{
	size_t got = 0;

	while (got < len) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t r = recv(fd, (char *)buf + got, len - got, MSG_DONTWAIT);
		int rc;

		if (r > 0) {
			got += (size_t)r;
			continue;
		}
		if (r == 0)
			return -ECONNRESET;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		rc = poll_until(&p, 1, deadline);
		if (rc < 0)
			return rc;
		if (rc == 0)
			return -ETIMEDOUT;
	}
	return 0;
}

/* Writes a then b. With watch_in, returns 1 as soon as the peer has
 * something to say: rank 0 only talks early to report an error. */
static int send_full(int fd, const void *a, size_t alen, const void *b, size_t blen, int64_t deadline,
		     int watch_in)
{
	size_t off = 0, total = alen + blen;

	while (off < total) {
		struct pollfd p = { .fd = fd, .events = POLLOUT | (watch_in ? POLLIN : 0) };
		struct iovec iov[2];
		struct msghdr mh = { .msg_iov = iov };
		ssize_t w;
		int rc;

		if (off < alen) {
			iov[0].iov_base = (char *)a + off;
			iov[0].iov_len = alen - off;
			iov[1].iov_base = (void *)b;
			iov[1].iov_len = blen;
			mh.msg_iovlen = blen ? 2 : 1;
		} else {
			iov[0].iov_base = (char *)b + (off - alen);
			iov[0].iov_len = total - off;
			mh.msg_iovlen = 1;
		}
		w = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w >= 0) {
			off += (size_t)w;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		rc = poll_until(&p, 1, deadline);
		if (rc < 0)
			return rc;
		if (rc == 0)
			return -ETIMEDOUT;
		if (watch_in && (p.revents & POLLIN))
			return 1;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* Addresses                                                           */
/* ------------------------------------------------------------------ */

static int bad_address(const char *s, const char *why)
{
	return spardl_error(-EINVAL,
			    "bootstrap address \"%s\" is malformed (%s); expected host:port, [ipv6]:port or unix:NAME "
			    "(check SPARDL_BOOTSTRAP)",
			    s, why);
}

static int parse_port(const char *s, const char *p, char *out, size_t outsz)
{
	size_t n = strlen(p);
	unsigned long v;
	char *end;

	if (n == 0)
		return bad_address(s, "the port is missing");
	if (n >= outsz || strspn(p, "0123456789") != n)
		return bad_address(s, "the port is not a decimal number");
	v = strtoul(p, &end, 10);
	if (v < 1 || v > 65535)
		return bad_address(s, "the port is not in 1..65535");
	memcpy(out, p, n + 1);
	return 0;
}

static void addr_free(struct bs_addr *a)
{
	if (a->list)
		freeaddrinfo(a->list);
	a->list = NULL;
}

/* Resolves a host; a transient DNS failure is retried until deadline. */
static int resolve(const char *s, const char *host, const char *port, int numeric_v6, int64_t deadline,
		   struct addrinfo **out)
{
	struct addrinfo hints = { 0 };
	int rc;

	hints.ai_socktype = SOCK_STREAM;
	hints.ai_family = numeric_v6 ? AF_INET6 : AF_UNSPEC;
	hints.ai_flags = AI_NUMERICSERV | (numeric_v6 ? AI_NUMERICHOST : 0);
	for (;;) {
		rc = getaddrinfo(host, port, &hints, out);
		if (rc == 0)
			return 0;
		if (rc != EAI_AGAIN || now_ms() >= deadline)
			break;
		if (poll(NULL, 0, 50) < 0 && errno != EINTR)
			return spardl_error(-errno, "bootstrap at %s: poll failed: %s", s, errstr(errno));
	}
	if (rc == EAI_MEMORY)
		return spardl_error(-ENOMEM, "bootstrap at %s: out of memory resolving \"%s\"", s, host);
	if (rc == EAI_SYSTEM)
		return spardl_error(-errno, "bootstrap at %s: resolving \"%s\" failed: %s", s, host, errstr(errno));
	if (rc == EAI_AGAIN)
		return spardl_error(-ETIMEDOUT, "bootstrap at %s: resolving \"%s\" failed temporarily until the timeout: %s",
				    s, host, gai_strerror(rc));
	return spardl_error(-EINVAL, "bootstrap address \"%s\": cannot resolve host \"%s\" (%s); check SPARDL_BOOTSTRAP",
			    s, host, gai_strerror(rc));
}

static int parse_address(const char *s, int64_t deadline, struct bs_addr *a)
{
	char host[256], port[8];
	const char *p, *colon;
	size_t n;

	memset(a, 0, sizeof(*a));
	if (!strncmp(s, "unix:", 5)) {
		n = strlen(s + 5);
		if (n == 0)
			return bad_address(s, "the unix socket name is empty");
		if (n > sizeof(a->un.sun_path) - 1)
			return bad_address(s, "the unix socket name is longer than 107 bytes");
		a->is_unix = 1;
		a->un.sun_family = AF_UNIX;
		/* Abstract namespace: leading NUL, nothing on the filesystem. */
		memcpy(a->un.sun_path + 1, s + 5, n);
		a->un_ai.ai_family = AF_UNIX;
		a->un_ai.ai_socktype = SOCK_STREAM;
		a->un_ai.ai_addr = (struct sockaddr *)&a->un;
		a->un_ai.ai_addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
		return 0;
	}
	if (s[0] == '[') {
		p = strchr(s, ']');
		if (!p)
			return bad_address(s, "the closing ']' is missing");
		n = (size_t)(p - s - 1);
		if (n == 0)
			return bad_address(s, "the IPv6 address between [ ] is empty");
		if (n >= sizeof(host))
			return bad_address(s, "the host is too long");
		if (p[1] != ':')
			return bad_address(s, "':port' must follow ']'");
		memcpy(host, s + 1, n);
		host[n] = '\0';
		if (parse_port(s, p + 2, port, sizeof(port)))
			return -EINVAL;
		return resolve(s, host, port, 1, deadline, &a->list);
	}
	colon = strchr(s, ':');
	if (!colon)
		return bad_address(s, "the ':port' is missing");
	if (strchr(colon + 1, ':'))
		return bad_address(s, "too many ':'; write an IPv6 address as [addr]:port");
	n = (size_t)(colon - s);
	if (n == 0)
		return bad_address(s, "the host is empty");
	if (n >= sizeof(host))
		return bad_address(s, "the host is too long");
	memcpy(host, s, n);
	host[n] = '\0';
	if (parse_port(s, colon + 1, port, sizeof(port)))
		return -EINVAL;
	return resolve(s, host, port, 0, deadline, &a->list);
}

static struct addrinfo *addr_first(struct bs_addr *a)
{
	return a->is_unix ? &a->un_ai : a->list;
}

static int set_nodelay(int fd, int family)
{
	int one = 1;

	if (family != AF_INET && family != AF_INET6)
		return 0;
	/* Small request/reply exchanges: Nagle would add delayed-ACK stalls. */
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)))
		return -errno;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Rank 0                                                              */
/* ------------------------------------------------------------------ */

static int listen_on(struct spardl_bootstrap *bs, struct bs_addr *a, int *fd_out)
{
	struct addrinfo *ai;
	int err = -EADDRNOTAVAIL, one = 1, fd;

	for (ai = addr_first(a); ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0) {
			err = -errno;
			continue;
		}
		if (ai->ai_family != AF_UNIX && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one))) {
			err = -errno;
			close(fd);
			continue;
		}
		if (bind(fd, ai->ai_addr, ai->ai_addrlen)) {
			err = -errno;
			close(fd);
			if (err == -EADDRINUSE)
				return spardl_error(-EADDRINUSE,
						    "bootstrap at %s: the address is already in use; another job may be "
						    "using it: choose another SPARDL_BOOTSTRAP",
						    bs->address);
			continue;
		}
		if (listen(fd, SOMAXCONN)) {
			err = -errno;
			close(fd);
			continue;
		}
		*fd_out = fd;
		return 0;
	}
	if (err == -EADDRNOTAVAIL)
		return spardl_error(err,
				    "bootstrap at %s: rank 0 cannot listen there: it is not an address of this host; "
				    "run rank 0 on the host SPARDL_BOOTSTRAP names",
				    bs->address);
	return spardl_error(err, "bootstrap at %s: rank 0 cannot listen there: %s", bs->address, errstr(err));
}

/*
 * Sends hdr + body to every rank r with todo[r] set, all at once so that
 * one slow rank does not delay the others. Returns 0 with todo cleared,
 * -ETIMEDOUT with todo naming the ranks not served, or a send error with
 * *bad the rank.
 */
static int bcast(struct spardl_bootstrap *bs, const uint8_t *hdr, const void *body, size_t blen,
		 int64_t deadline, int *bad)
{
	size_t total = HDR_LEN + blen;
	int r, n, rc;

	for (r = 1; r < bs->size; r++)
		bs->off[r] = 0;
	for (;;) {
		n = 0;
		for (r = 1; r < bs->size; r++) {
			if (!bs->todo[r])
				continue;
			while (bs->off[r] < total) {
				struct iovec iov[2];
				struct msghdr mh = { .msg_iov = iov };
				size_t o = bs->off[r];
				ssize_t w;

				if (o < HDR_LEN) {
					iov[0].iov_base = (void *)(hdr + o);
					iov[0].iov_len = HDR_LEN - o;
					iov[1].iov_base = (void *)body;
					iov[1].iov_len = blen;
					mh.msg_iovlen = blen ? 2 : 1;
				} else {
					iov[0].iov_base = (char *)body + (o - HDR_LEN);
					iov[0].iov_len = total - o;
					mh.msg_iovlen = 1;
				}
				w = sendmsg(bs->peers[r], &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
				if (w >= 0) {
					bs->off[r] += (size_t)w;
					continue;
				}
				if (errno == EINTR)
					continue;
				if (errno == EAGAIN || errno == EWOULDBLOCK)
					break;
				*bad = r;
				return -errno;
			}
			if (bs->off[r] == total) {
				bs->todo[r] = 0;
				continue;
			}
			bs->pfd[n].fd = bs->peers[r];
			bs->pfd[n].events = POLLOUT;
			bs->pfd[n].revents = 0;
			n++;
		}
		if (n == 0)
			return 0;
		rc = poll_until(bs->pfd, (nfds_t)n, deadline);
		if (rc < 0) {
			*bad = 0;
			return rc;
		}
		if (rc == 0)
			return -ETIMEDOUT;
	}
}

/* Best effort: tells every connected rank why this exchange failed, so it
 * fails at once with the same text instead of timing out. */
static void bcast_error(struct spardl_bootstrap *bs, int err, const char *text, int skip)
{
	uint8_t hdr[HDR_LEN];
	size_t len = strlen(text);
	int64_t wait = bs->timeout_ms < 1000 ? bs->timeout_ms : 1000;
	int r, bad = 0, rc;

	if (len > TEXT_MAX)
		len = TEXT_MAX;
	make_hdr(hdr, SPARDL_BS_ERROR, bs->seq, (uint32_t)-err, len);
	for (r = 1; r < bs->size; r++)
		bs->todo[r] = bs->peers[r] >= 0 && r != skip;
	rc = bcast(bs, hdr, text, len, now_ms() + wait, &bad);
	if (rc)
		SPARDL_DEBUG("bootstrap at %s: could not report the error to every rank: %s", bs->address,
			     errstr(rc));
}

/* "rank 3" or "ranks 2, 5, 7" over the ranks with flag[r] set. */
static int list_ranks(char *buf, size_t sz, const char *flag, int size)
{
	size_t off = 0;
	int r, n = 0, listed = 0;

	for (r = 0; r < size; r++)
		n += flag[r] != 0;
	off += (size_t)snprintf(buf, sz, "%s", n == 1 ? "rank " : "ranks ");
	for (r = 0; r < size && off < sz; r++) {
		if (!flag[r])
			continue;
		if (listed == MAX_LISTED) {
			off += (size_t)snprintf(buf + off, sz - off, " and %d more", n - listed);
			break;
		}
		off += (size_t)snprintf(buf + off, sz - off, "%s%d", listed ? ", " : "", r);
		listed++;
	}
	return n;
}

/* A connection that has not joined yet. */
enum { PEND_HELLO, PEND_RESPONSE };

struct pending {
	int fd;
	int st;
	size_t got;
	int64_t deadline;
	uint8_t hello[HELLO_LEN];
	uint8_t resp[SPARDL_BS_RESPONSE_LEN];
	uint8_t nonce[SPARDL_BS_NONCE]; /* rank 0's, for this connection */
	struct spardl_bs_hello h;
	char who[96]; /* for the log: "uid 1000 pid 4242" or "192.0.2.7:51000" */
	int family;
};

static void send_reply(int fd, uint32_t type, int err, const char *text)
{
	uint8_t hdr[HDR_LEN];
	size_t len = text ? strlen(text) : 0;
	int rc;

	if (len > TEXT_MAX)
		len = TEXT_MAX;
	make_hdr(hdr, type, 0, (uint32_t)-err, len);
	/* A fresh connection's send buffer is empty: this never waits long. */
	rc = send_full(fd, hdr, HDR_LEN, text, len, now_ms() + 200, 0);
	if (rc)
		SPARDL_DEBUG("bootstrap: could not send a reply to a connecting rank: %s", errstr(rc));
}

/* One line per refused connection, up to a limit, so a flood of hostile
 * clients cannot flood the log. */
static void refusal(struct spardl_bootstrap *bs, const struct pending *p, const char *why)
{
	bs->refusals++;
	if (bs->refusals <= MAX_REFUSALS_LOGGED)
		SPARDL_WARN("bootstrap at %s: refused a connection from %s: %s", bs->address, p->who, why);
	if (bs->refusals == MAX_REFUSALS_LOGGED)
		SPARDL_WARN("bootstrap at %s: further refused connections are not logged", bs->address);
}

static void drop(struct pending *p)
{
	close_fd(&p->fd);
}

/* Refuse a connection: log why (limited), tell the peer in an ERROR or
 * REFUSED reply with code err and the formatted text (none when fmt is
 * NULL: garbage gets no answer), and close it. */
__attribute__((format(printf, 6, 7))) static void refuse(struct spardl_bootstrap *bs, struct pending *p,
							   const char *why, uint32_t type, int err, const char *fmt, ...)
{
	char text[TEXT_MAX + 1];
	va_list ap;

	refusal(bs, p, why);
	if (fmt) {
		va_start(ap, fmt);
		vsnprintf(text, sizeof(text), fmt, ap);
		va_end(ap);
		send_reply(p->fd, type, err, text);
	}
	drop(p);
}

/* The peer proved the key (or no key is in use): it joins as its rank. */
static void adopt(struct spardl_bootstrap *bs, struct pending *p)
{
	uint32_t rank = p->h.rank;
	char text[TEXT_MAX + 1];

	if (bs->peers[rank] >= 0) {
		snprintf(text, sizeof(text),
			 "bootstrap at %s: rank %u has already joined; two processes were started with the same "
			 "SPARDL_RANK",
			 bs->address, rank);
		SPARDL_WARN("%s", text);
		send_reply(p->fd, SPARDL_BS_ERROR, -EEXIST, text);
		drop(p);
		return;
	}
	SPARDL_DEBUG("bootstrap at %s: rank %u joined from %s", bs->address, rank, p->who);
	bs->peers[rank] = p->fd;
	p->fd = -1;
}

/* Checks a complete hello: the connection is dropped, challenged, or adopted. */
static void take_hello(struct spardl_bootstrap *bs, struct pending *p)
{
	struct spardl_bs_hello *h = &p->h;
	uint8_t body[SPARDL_BS_CHALLENGE_LEN], hdr[HDR_LEN];
	int keyed, rc;

	if (spardl_bs_hello_decode(p->hello, HELLO_LEN, h)) {
		refuse(bs, p, "it is not a spardl rank (malformed hello)", 0, 0, NULL);
		return;
	}
	if (h->version != SPARDL_BS_VERSION) {
		refuse(bs, p, "another bootstrap protocol version", SPARDL_BS_ERROR, -EPROTO,
		       "bootstrap at %s: this rank speaks bootstrap protocol %u but rank 0 speaks %u; run the same "
		       "spardl version on every rank",
		       bs->address, h->version, SPARDL_BS_VERSION);
		return;
	}
	keyed = (h->flags & SPARDL_BS_HELLO_KEYED) != 0;
	if (keyed != (bs->key != NULL)) {
		refuse(bs, p, keyed ? "it holds a job key and rank 0 has none" : "it holds no job key",
		       SPARDL_BS_REFUSED, -EACCES,
		       "bootstrap at %s: %s; give every rank the same job key (SPARDL_JOB_KEY or "
		       "SPARDL_JOB_KEY_FILE), or none to any",
		       bs->address,
		       keyed ? "this rank holds a job key but rank 0 has none" :
			       "rank 0 requires the job key (authenticated rendezvous) but this rank has none");
		return;
	}
	if (!keyed && !spardl_bs_equal(h->tag, bs->tag, sizeof(bs->tag))) {
		refuse(bs, p, "it belongs to another job", SPARDL_BS_REFUSED, -ECONNREFUSED,
		       "bootstrap at %s: rank 0 belongs to another job (different job identifier); give each job "
		       "its own SPARDL_BOOTSTRAP address, or the same SPARDL_JOB_KEY to all its ranks",
		       bs->address);
		return;
	}
	if (h->size != (uint32_t)bs->size) {
		refuse(bs, p, "another job size", SPARDL_BS_ERROR, -SPARDL_ERR_MISMATCH,
		       "bootstrap at %s: rank %u passed size %u but rank 0 has size %d; start every rank with the "
		       "same SPARDL_SIZE",
		       bs->address, h->rank, h->size, bs->size);
		return;
	}
	if (h->rank < 1 || h->rank >= h->size) {
		refuse(bs, p, "a rank out of range", SPARDL_BS_ERROR, -EINVAL,
		       "bootstrap at %s: a peer connected as rank %u, which is not in 1..%d", bs->address, h->rank,
		       bs->size - 1);
		return;
	}
	if (!keyed) {
		adopt(bs, p);
		return;
	}
	/* Prove the key to the peer over its nonce, and ask it to prove the
	 * key over ours: a recorded handshake never matches a new nonce. */
	rc = spardl_bs_random(p->nonce, sizeof(p->nonce));
	if (!rc)
		rc = spardl_bs_mac(bs->key, bs->key_len, label_server, p->hello, p->nonce, body + SPARDL_BS_NONCE);
	if (rc) {
		SPARDL_WARN("bootstrap at %s: cannot make a challenge (%s); dropping %s", bs->address, errstr(rc),
			    p->who);
		drop(p);
		return;
	}
	memcpy(body, p->nonce, SPARDL_BS_NONCE);
	make_hdr(hdr, SPARDL_BS_CHALLENGE, 0, 0, sizeof(body));
	rc = send_full(p->fd, hdr, HDR_LEN, body, sizeof(body), now_ms() + 200, 0);
	if (rc) {
		SPARDL_DEBUG("bootstrap at %s: could not send the challenge to %s: %s", bs->address, p->who,
			     errstr(rc));
		drop(p);
		return;
	}
	p->st = PEND_RESPONSE;
	p->got = 0;
}

static void take_response(struct spardl_bootstrap *bs, struct pending *p)
{
	uint8_t got[SPARDL_BS_MAC], want[SPARDL_BS_MAC];

	if (spardl_bs_response_decode(p->resp, sizeof(p->resp), got)) {
		refuse(bs, p, "malformed response to the challenge", 0, 0, NULL);
		return;
	}
	if (spardl_bs_mac(bs->key, bs->key_len, label_client, p->hello, p->nonce, want) ||
	    !spardl_bs_equal(got, want, sizeof(got))) {
		refuse(bs, p, "wrong job key or a replayed handshake", SPARDL_BS_REFUSED, -EACCES,
		       "bootstrap at %s: rank 0 refused this rank: its proof of the job key is wrong; it belongs "
		       "to another job, or the ranks were given different job keys",
		       bs->address);
		return;
	}
	adopt(bs, p);
}

/* Reads what a pending connection sent; complete messages are handled. */
static void read_pending(struct spardl_bootstrap *bs, struct pending *p)
{
	while (p->fd >= 0) {
		uint8_t *buf = p->st == PEND_HELLO ? p->hello : p->resp;
		size_t want = p->st == PEND_HELLO ? HELLO_LEN : sizeof(p->resp);
		ssize_t r;

		if (p->got == want) {
			if (p->st == PEND_HELLO)
				take_hello(bs, p);
			else
				take_response(bs, p);
			return;
		}
		r = recv(p->fd, buf + p->got, want - p->got, MSG_DONTWAIT);
		if (r > 0) {
			p->got += (size_t)r;
			continue;
		}
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		drop(p);
	}
}

/* A joined rank says nothing until OK, so anything readable means it left. */
static void check_joined(struct spardl_bootstrap *bs, int r)
{
	char c;
	ssize_t n = recv(bs->peers[r], &c, 1, MSG_DONTWAIT);

	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	SPARDL_WARN("bootstrap at %s: rank %d left before the rendezvous completed; waiting for it to connect again",
		    bs->address, r);
	close_fd(&bs->peers[r]);
}

static int uid_admitted(const struct spardl_bootstrap *bs, uid_t uid)
{
	int i;

	if (uid == getuid() || bs->any_uid)
		return 1;
	for (i = 0; i < bs->nuids; i++)
		if (bs->uids[i] == uid)
			return 1;
	return 0;
}

/* Who is at the other end, for the log; on a unix socket also whether the
 * kernel-reported uid may join at all. Returns 0, or -EACCES. */
static int identify_peer(struct spardl_bootstrap *bs, int fd, struct pending *p)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[64] = "?", serv[16] = "?";

	if (getpeername(fd, (struct sockaddr *)&ss, &sl)) {
		snprintf(p->who, sizeof(p->who), "an unknown peer (%s)", errstr(errno));
		p->family = AF_UNSPEC;
		return 0;
	}
	p->family = ss.ss_family;
	if (ss.ss_family == AF_UNIX) {
		struct ucred cred;
		socklen_t cl = sizeof(cred);

		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl)) {
			snprintf(p->who, sizeof(p->who), "a local process of unknown uid");
			return -EACCES;
		}
		snprintf(p->who, sizeof(p->who), "uid %u pid %d", (unsigned)cred.uid, (int)cred.pid);
		return uid_admitted(bs, cred.uid) ? 0 : -EACCES;
	}
	if (getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), serv, sizeof(serv),
			NI_NUMERICHOST | NI_NUMERICSERV))
		snprintf(host, sizeof(host), "?");
	snprintf(p->who, sizeof(p->who), ss.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, serv);
	return 0;
}

static int open_files_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > INT_MAX)
		return -1;
	return (int)rl.rlim_cur;
}

/* Accepts what is queued. The connections that have not joined are bounded:
 * beyond MAX_PENDING, or when file descriptors run out, the oldest is
 * dropped (a real rank that was dropped connects again). Returns 0, or an
 * error when rank 0 cannot go on at all. */
static int accept_new(struct spardl_bootstrap *bs, int lfd, struct pending *pend, int *npend, int64_t *pause_until)
{
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK), rc;
		struct pending *p;

		if (fd < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			/* The peer gave up between SYN and accept: not our problem. */
			if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
				continue;
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
				if (!bs->fd_exhausted)
					SPARDL_WARN("bootstrap at %s: accept failed: %s (open file limit %d) while ranks "
						    "connect; dropping connections that have not joined; raise the limit "
						    "(ulimit -n)",
						    bs->address, errstr(errno), open_files_limit());
				bs->fd_exhausted = 1;
				if (*npend > 0) {
					drop(&pend[0]);
					memmove(pend, pend + 1, (size_t)(*npend - 1) * sizeof(*pend));
					(*npend)--;
					continue;
				}
				/* Nothing to free: look at the listener again a little later. */
				*pause_until = now_ms() + 50;
				return 0;
			}
			return spardl_error(-errno, "bootstrap at %s: accept failed: %s", bs->address, errstr(errno));
		}
		if (*npend == MAX_PENDING) {
			bs->refusals++;
			if (bs->refusals <= MAX_REFUSALS_LOGGED)
				SPARDL_WARN("bootstrap at %s: %d connections have not joined yet; dropping the oldest (%s)",
					    bs->address, MAX_PENDING, pend[0].who);
			drop(&pend[0]);
			memmove(pend, pend + 1, (size_t)(*npend - 1) * sizeof(*pend));
			(*npend)--;
		}
		p = &pend[*npend];
		memset(p, 0, sizeof(*p));
		p->fd = fd;
		p->st = PEND_HELLO;
		p->deadline = now_ms() + (bs->timeout_ms < HANDSHAKE_MS ? bs->timeout_ms : HANDSHAKE_MS);
		if (identify_peer(bs, fd, p)) {
			refuse(bs, p, "another user (set SPARDL_BOOTSTRAP_UIDS to admit it)", SPARDL_BS_REFUSED, -EACCES,
			       "bootstrap at %s: rank 0 refused this process: it runs as another user; run all ranks "
			       "as one user, or admit this uid with SPARDL_BOOTSTRAP_UIDS on rank 0",
			       bs->address);
			continue;
		}
		rc = set_nodelay(fd, p->family);
		if (rc) {
			SPARDL_DEBUG("bootstrap at %s: setting TCP_NODELAY failed: %s", bs->address, errstr(rc));
			drop(p);
			continue;
		}
		(*npend)++;
	}
}

static int rendezvous_root(struct spardl_bootstrap *bs, struct bs_addr *a, int64_t deadline)
{
	struct pending *pend;
	struct pollfd *pfd;
	int npend = 0, lfd = -1, ret, i, r, bad = 0;
	int64_t pause_until = 0;
	uint8_t hdr[HDR_LEN];
	char who[512];

	pend = calloc(MAX_PENDING, sizeof(*pend));
	pfd = calloc((size_t)(1 + MAX_PENDING + bs->size), sizeof(*pfd));
	if (!pend || !pfd) {
		free(pend);
		free(pfd);
		return spardl_error(-ENOMEM, "bootstrap at %s: out of memory for %d ranks", bs->address, bs->size);
	}
	ret = listen_on(bs, a, &lfd);
	if (ret)
		goto out;
	SPARDL_DEBUG("bootstrap at %s: rank 0 waits for %d ranks", bs->address, bs->size - 1);
	for (;;) {
		int joined = 0, n = 0, rc, listening;
		int64_t now = now_ms(), until = deadline;

		for (r = 1; r < bs->size; r++) {
			joined += bs->peers[r] >= 0;
			bs->todo[r] = bs->peers[r] < 0;
		}
		if (joined == bs->size - 1)
			break;
		if (now >= deadline) {
			char extra[160] = "";

			if (bs->fd_exhausted)
				snprintf(extra, sizeof(extra),
					 "; rank 0 ran out of file descriptors meanwhile (limit %d): raise ulimit -n",
					 open_files_limit());
			bs->todo[0] = 0;
			list_ranks(who, sizeof(who), bs->todo, bs->size);
			ret = spardl_error(-ETIMEDOUT,
					   "bootstrap at %s: %s did not arrive within %g s; check that every rank was "
					   "started with the same SPARDL_BOOTSTRAP and SPARDL_SIZE%s",
					   bs->address, who, secs(bs->timeout_ms), extra);
			bcast_error(bs, ret, spardl_last_error(), 0);
			goto out;
		}
		/* Connections that did not finish their handshake in time go. */
		for (i = 0; i < npend; i++) {
			if (pend[i].deadline <= now) {
				refusal(bs, &pend[i], "it did not finish its handshake in time");
				drop(&pend[i]);
			} else if (pend[i].deadline < until) {
				until = pend[i].deadline;
			}
		}
		for (i = 0, n = 0; i < npend; i++)
			if (pend[i].fd >= 0)
				pend[n++] = pend[i];
		npend = n;
		n = 0;
		listening = now >= pause_until;
		if (!listening && pause_until < until)
			until = pause_until;
		pfd[n++] = (struct pollfd){ .fd = listening ? lfd : -1, .events = POLLIN };
		for (i = 0; i < npend; i++)
			pfd[n++] = (struct pollfd){ .fd = pend[i].fd, .events = POLLIN };
		for (r = 1; r < bs->size; r++)
			pfd[n++] = (struct pollfd){ .fd = bs->peers[r], .events = POLLIN };
		rc = poll_until(pfd, (nfds_t)n, until);
		if (rc < 0) {
			ret = spardl_error(rc, "bootstrap at %s: poll failed: %s", bs->address, errstr(rc));
			goto out;
		}
		if (rc == 0)
			continue;
		for (r = 1; r < bs->size; r++)
			if (bs->peers[r] >= 0 && pfd[1 + npend + r - 1].revents)
				check_joined(bs, r);
		for (i = 0; i < npend; i++)
			if (pfd[1 + i].revents)
				read_pending(bs, &pend[i]);
		/* Compact: handled connections were adopted or closed. */
		for (i = 0, n = 0; i < npend; i++)
			if (pend[i].fd >= 0)
				pend[n++] = pend[i];
		npend = n;
		if (pfd[0].revents) {
			ret = accept_new(bs, lfd, pend, &npend, &pause_until);
			if (ret)
				goto out;
		}
	}
	make_hdr(hdr, SPARDL_BS_OK, 0, 0, 0);
	for (r = 1; r < bs->size; r++)
		bs->todo[r] = 1;
	ret = bcast(bs, hdr, NULL, 0, deadline + bs->timeout_ms, &bad);
	if (ret == -ETIMEDOUT) {
		list_ranks(who, sizeof(who), bs->todo, bs->size);
		ret = spardl_error(ret, "bootstrap at %s: %s did not take the rendezvous reply within %g s",
				   bs->address, who, secs(bs->timeout_ms));
	} else if (is_reset(ret)) {
		ret = spardl_error(-ECONNRESET,
				   "rank %d closed its bootstrap connection at the end of the rendezvous: it probably "
				   "exited",
				   bad);
		bcast_error(bs, ret, spardl_last_error(), bad);
	} else if (ret) {
		ret = spardl_error(ret, "bootstrap at %s: sending to rank %d failed: %s", bs->address, bad,
				   errstr(ret));
	}
	if (!ret)
		SPARDL_DEBUG("bootstrap at %s: all %d ranks arrived", bs->address, bs->size);
out:
	for (i = 0; i < npend; i++)
		drop(&pend[i]);
	free(pend);
	free(pfd);
	close_fd(&lfd);
	return ret;
}

/* ------------------------------------------------------------------ */
/* Ranks > 0                                                           */
/* ------------------------------------------------------------------ */

static int connect_once(struct addrinfo *ai, int64_t deadline, int *fd_out)
{
	struct pollfd p;
	socklen_t sl = sizeof(int);
	int fd, rc, soerr = 0;

	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, ai->ai_addr, ai->ai_addrlen)) {
		if (errno != EINPROGRESS && errno != EINTR) {
			rc = -errno;
			goto fail;
		}
		p = (struct pollfd){ .fd = fd, .events = POLLOUT };
		rc = poll_until(&p, 1, deadline);
		if (rc < 0)
			goto fail;
		if (rc == 0) {
			rc = -ETIMEDOUT;
			goto fail;
		}
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl)) {
			rc = -errno;
			goto fail;
		}
		if (soerr) {
			rc = -soerr;
			goto fail;
		}
	}
	rc = set_nodelay(fd, ai->ai_family);
	if (rc)
		goto fail;
	*fd_out = fd;
	return 0;
fail:
	close(fd);
	return rc;
}

/* Rank 0 may not be listening yet: these mean "try again shortly". */
static int retryable(int err)
{
	return err == -ECONNREFUSED || err == -ENOENT || err == -ETIMEDOUT || err == -EHOSTUNREACH ||
	       err == -ENETUNREACH || err == -EAGAIN || err == -ECONNRESET || err == -ECONNABORTED ||
	       err == -EADDRNOTAVAIL || err == -EINTR;
}

static int connect_root(struct spardl_bootstrap *bs, struct bs_addr *a, int64_t deadline, int *fd_out)
{
	int last = -ECONNREFUSED, attempt = 0, rc;
	struct addrinfo *ai;

	for (;;) {
		int64_t left, nap;

		for (ai = addr_first(a); ai; ai = ai->ai_next) {
			rc = connect_once(ai, deadline, fd_out);
			if (rc == 0)
				return 0;
			if (!retryable(rc))
				return spardl_error(rc, "bootstrap at %s: cannot connect to rank 0: %s", bs->address,
						    errstr(rc));
			last = rc;
		}
		left = deadline - now_ms();
		if (left <= 0)
			return spardl_error(-ETIMEDOUT,
					    "bootstrap at %s: rank 0 was not reached within %g s (last attempt: %s); "
					    "check that rank 0 was started with the same SPARDL_BOOTSTRAP and that its "
					    "host is reachable from here",
					    bs->address, secs(bs->timeout_ms), errstr(last));
		nap = attempt < 3 ? 10 << attempt : 50;
		if (nap > left)
			nap = left;
		attempt++;
		if (poll(NULL, 0, (int)nap) < 0 && errno != EINTR)
			return spardl_error(-errno, "bootstrap at %s: poll failed: %s", bs->address, errstr(errno));
	}
}

#define LOCAL_TIMEOUT 1
#define LOCAL_RESET 2

/* Reads one message from rank 0. An ERROR or REFUSED message becomes this
 * rank's error, with rank 0's text (possibly -ETIMEDOUT naming missing
 * ranks), so our own timeout is the distinct LOCAL_TIMEOUT, and a closed
 * connection LOCAL_RESET, for the caller to word. */
static int read_msg(struct spardl_bootstrap *bs, int64_t deadline, const char *during, struct spardl_bs_hdr *m)
{
	uint8_t h[HDR_LEN], raw[TEXT_MAX];
	char text[TEXT_MAX + 1];
	int rc;

	rc = recv_full(bs->fd, h, HDR_LEN, deadline);
	if (rc == -ETIMEDOUT)
		return LOCAL_TIMEOUT;
	if (is_reset(rc))
		return LOCAL_RESET;
	if (rc)
		return spardl_error(rc, "bootstrap at %s: receiving from rank 0 failed during %s: %s", bs->address,
				    during, errstr(rc));
	if (spardl_bs_hdr_decode(h, sizeof(h), m))
		return spardl_error(-EPROTO,
				    "bootstrap at %s: rank 0 sent data that is not a spardl bootstrap message during "
				    "%s; is another program listening there?",
				    bs->address, during);
	if (m->type != SPARDL_BS_ERROR && m->type != SPARDL_BS_REFUSED)
		return 0;
	if (spardl_bs_error_check(m))
		return spardl_error(-EPROTO, "bootstrap at %s: rank 0 sent a malformed error report during %s",
				    bs->address, during);
	rc = recv_full(bs->fd, raw, (size_t)m->len, deadline);
	if (rc)
		snprintf(text, sizeof(text), "rank 0 failed during %s (%s) but its report was lost", during,
			 bs->address);
	else
		spardl_bs_text_copy(text, sizeof(text), raw, (size_t)m->len);
	return spardl_error(-(int)m->code, "%s", text);
}

/* On a unix socket the kernel names the listener's uid: another user's
 * process holding the name is not this job's rank 0. */
static int check_listener(struct spardl_bootstrap *bs, int fd)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	struct ucred cred;
	socklen_t cl = sizeof(cred);

	if (getpeername(fd, (struct sockaddr *)&ss, &sl) || ss.ss_family != AF_UNIX)
		return 0;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl))
		return spardl_error(-errno, "bootstrap at %s: cannot learn who listens there: %s", bs->address,
				    errstr(errno));
	if (!uid_admitted(bs, cred.uid))
		return spardl_error(-EACCES,
				    "bootstrap at %s: the socket is held by uid %u (pid %d), not by this user: it is "
				    "not this job's rank 0; choose another SPARDL_BOOTSTRAP (or admit that uid with "
				    "SPARDL_BOOTSTRAP_UIDS)",
				    bs->address, (unsigned)cred.uid, (int)cred.pid);
	return 0;
}

/* One attempt: hello, then the challenge when there is a key, then OK.
 * Returns 0, LOCAL_RESET when rank 0 closed the connection before it
 * answered (it may have been busy: try again), or an error. */
static int join_once(struct spardl_bootstrap *bs, int64_t deadline)
{
	struct spardl_bs_hello h = { .version = SPARDL_BS_VERSION };
	uint8_t hello[HELLO_LEN], body[SPARDL_BS_CHALLENGE_LEN], resp[SPARDL_BS_RESPONSE_LEN];
	uint8_t mac[SPARDL_BS_MAC];
	struct spardl_bs_hdr m;
	int ret;

	ret = check_listener(bs, bs->fd);
	if (ret)
		return ret;
	h.rank = (uint32_t)bs->rank;
	h.size = (uint32_t)bs->size;
	h.flags = bs->key ? SPARDL_BS_HELLO_KEYED : 0;
	ret = spardl_bs_random(h.nonce, sizeof(h.nonce));
	if (ret)
		return spardl_error(ret, "bootstrap: no random bytes from the kernel: %s", errstr(ret));
	if (!bs->key)
		memcpy(h.tag, bs->tag, sizeof(h.tag));
	spardl_bs_hello_encode(hello, &h);
	ret = send_full(bs->fd, hello, HELLO_LEN, NULL, 0, deadline, 0);
	if (ret == -ETIMEDOUT)
		return spardl_error(ret, "bootstrap at %s: rank 0 did not take this rank's hello within %g s",
				    bs->address, secs(bs->timeout_ms));
	if (is_reset(ret))
		return LOCAL_RESET;
	if (ret)
		return spardl_error(ret, "bootstrap at %s: sending the hello failed: %s", bs->address, errstr(ret));
	ret = read_msg(bs, deadline + grace_ms(bs->timeout_ms), "the rendezvous", &m);
	if (ret)
		return ret;
	if (m.type == SPARDL_BS_CHALLENGE) {
		if (!bs->key)
			return spardl_error(-EACCES,
					    "bootstrap at %s: rank 0 requires the job key but this rank has none; give "
					    "every rank the same SPARDL_JOB_KEY or SPARDL_JOB_KEY_FILE",
					    bs->address);
		if (m.len != sizeof(body))
			return spardl_error(-EPROTO, "bootstrap at %s: rank 0 sent a malformed challenge", bs->address);
		ret = recv_full(bs->fd, body, sizeof(body), deadline + grace_ms(bs->timeout_ms));
		if (is_reset(ret))
			return LOCAL_RESET;
		if (ret)
			return spardl_error(ret, "bootstrap at %s: receiving the challenge failed: %s", bs->address,
					    errstr(ret));
		if (spardl_bs_mac(bs->key, bs->key_len, label_server, hello, body, mac) ||
		    !spardl_bs_equal(mac, body + SPARDL_BS_NONCE, sizeof(mac)))
			return spardl_error(-EACCES,
					    "bootstrap at %s: the process listening there did not prove it holds this "
					    "job's key: it belongs to another job (or the ranks were given different job "
					    "keys), or it is not a spardl rank 0",
					    bs->address);
		ret = spardl_bs_mac(bs->key, bs->key_len, label_client, hello, body, mac);
		if (ret)
			return spardl_error(ret, "bootstrap: computing the proof of the job key failed");
		spardl_bs_response_encode(resp, mac);
		ret = send_full(bs->fd, resp, sizeof(resp), NULL, 0, deadline, 0);
		if (is_reset(ret))
			return LOCAL_RESET;
		if (ret)
			return spardl_error(ret, "bootstrap at %s: sending the response failed: %s", bs->address,
					    errstr(ret));
		ret = read_msg(bs, deadline + grace_ms(bs->timeout_ms), "the rendezvous", &m);
		if (ret)
			return ret;
	} else if (bs->key) {
		/* Never trust a rank 0 that did not ask for the key we hold. */
		return spardl_error(-EACCES,
				    "bootstrap at %s: rank 0 did not ask for the job key: it runs without one, or "
				    "it is not this job's rank 0; give every rank the same job key",
				    bs->address);
	}
	if (m.type != SPARDL_BS_OK || m.len)
		return spardl_error(-EPROTO,
				    "bootstrap at %s: rank 0 sent an unexpected message (type %u) during the rendezvous",
				    bs->address, m.type);
	return 0;
}

static int rendezvous_rank(struct spardl_bootstrap *bs, struct bs_addr *a, int64_t start)
{
	int64_t deadline = start + bs->timeout_ms;
	int ret, attempt = 0;

	for (;;) {
		ret = connect_root(bs, a, deadline, &bs->fd);
		if (ret)
			return ret;
		ret = join_once(bs, deadline);
		if (ret == 0)
			return 0;
		if (ret == LOCAL_TIMEOUT)
			return spardl_error(-ETIMEDOUT,
					    "bootstrap at %s: rank 0 was reached but did not complete the rendezvous "
					    "within %g s; check that every rank was started with the same "
					    "SPARDL_BOOTSTRAP and SPARDL_SIZE",
					    bs->address, secs(bs->timeout_ms));
		if (ret != LOCAL_RESET)
			return ret;
		/* Rank 0 dropped the connection before answering: it may be
		 * shedding load. Connect again while time is left. */
		close_fd(&bs->fd);
		if (now_ms() >= deadline)
			return spardl_error(-ECONNRESET,
					    "bootstrap at %s: rank 0 kept closing the connection during the "
					    "rendezvous until the timeout",
					    bs->address);
		if (poll(NULL, 0, attempt < 4 ? 10 << attempt : 200) < 0 && errno != EINTR)
			return spardl_error(-errno, "bootstrap: poll failed: %s", errstr(errno));
		attempt++;
	}
}

/* ------------------------------------------------------------------ */
/* Allgather                                                           */
/* ------------------------------------------------------------------ */

static int fail(struct spardl_bootstrap *bs, int err)
{
	bs->failed = err;
	snprintf(bs->failed_msg, sizeof(bs->failed_msg), "%s", spardl_last_error());
	return err;
}

static int gather_rank(struct spardl_bootstrap *bs, const void *send, void *recv, size_t len)
{
	int64_t deadline = now_ms() + bs->timeout_ms + grace_ms(bs->timeout_ms);
	size_t total = (size_t)bs->size * len;
	uint8_t hdr[HDR_LEN];
	char during[64];
	struct spardl_bs_hdr m;
	int ret;

	snprintf(during, sizeof(during), "bootstrap allgather #%u", bs->seq);
	make_hdr(hdr, SPARDL_BS_DATA, bs->seq, 0, len);
	ret = send_full(bs->fd, hdr, HDR_LEN, send, len, deadline, 1);
	if (ret == -ETIMEDOUT)
		return spardl_error(ret,
				    "%s: rank 0 (%s) did not take this rank's %zu bytes within %g s; is every rank "
				    "calling the same collective?",
				    during, bs->address, len, secs(bs->timeout_ms));
	if (ret < 0 && !is_reset(ret))
		return spardl_error(ret, "%s: sending to rank 0 (%s) failed: %s", during, bs->address, errstr(ret));
	/* Early input or a reset: rank 0's error report may be waiting. */
	ret = read_msg(bs, deadline, during, &m);
	if (ret == LOCAL_TIMEOUT)
		return spardl_error(-ETIMEDOUT,
				    "%s: rank 0 (%s) did not send the result within %g s; is every rank calling the "
				    "same collective?",
				    during, bs->address, secs(bs->timeout_ms));
	if (ret == LOCAL_RESET)
		return spardl_error(-ECONNRESET,
				    "rank 0 closed its bootstrap connection (%s) during %s: it probably exited; see "
				    "its log",
				    bs->address, during);
	if (ret)
		return ret;
	if (m.type != SPARDL_BS_RESULT || m.seq != bs->seq || m.len != total)
		return spardl_error(-SPARDL_ERR_PROTOCOL,
				    "%s: rank 0 sent an unexpected reply (type %u, exchange #%u, %llu bytes; expected "
				    "%zu bytes)",
				    during, m.type, m.seq, (unsigned long long)m.len, total);
	/* Data is flowing now: the body gets its own bound. */
	ret = recv_full(bs->fd, recv, total, now_ms() + bs->timeout_ms);
	if (ret == -ETIMEDOUT)
		return spardl_error(ret, "%s: the result from rank 0 stalled for %g s", during, secs(bs->timeout_ms));
	if (is_reset(ret))
		return spardl_error(-ECONNRESET, "rank 0 closed its bootstrap connection during %s: it probably exited",
				    during);
	if (ret)
		return spardl_error(ret, "%s: receiving from rank 0 failed: %s", during, errstr(ret));
	return 0;
}

/* Reads whatever rank r has ready; returns -ECONNRESET or -errno on loss. */
static int gather_read(struct spardl_bootstrap *bs, int r, void *out, size_t len)
{
	struct peer_state *p = &bs->ps[r];

	for (;;) {
		void *dst;
		size_t want;
		ssize_t n;

		if (p->st == PS_HDR) {
			dst = p->hdr + p->hdr_got;
			want = HDR_LEN - p->hdr_got;
		} else if (p->st == PS_BODY) {
			dst = (char *)out + (size_t)r * len + p->body_got;
			want = len - (size_t)p->body_got;
		} else {
			return 0;
		}
		n = recv(bs->peers[r], dst, want, MSG_DONTWAIT);
		if (n == 0)
			return -ECONNRESET;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			return -errno;
		}
		if (p->st == PS_BODY) {
			p->body_got += (uint64_t)n;
			if (p->body_got == len)
				p->st = PS_DONE;
			continue;
		}
		p->hdr_got += (size_t)n;
		if (p->hdr_got < HDR_LEN)
			continue;
		if (spardl_bs_hdr_decode(p->hdr, HDR_LEN, &p->m) || p->m.type != SPARDL_BS_DATA)
			return -EPROTO;
		if (p->m.seq != bs->seq || p->m.len != len)
			p->st = PS_BAD;
		else
			p->st = len ? PS_BODY : PS_DONE;
	}
}

static int mismatch_error(struct spardl_bootstrap *bs, size_t len)
{
	char buf[700];
	size_t off = 0;
	int r, listed = 0;

	for (r = 1; r < bs->size; r++) {
		if (bs->ps[r].st == PS_BAD && bs->ps[r].m.seq != bs->seq)
			return spardl_error(-SPARDL_ERR_MISMATCH,
					    "bootstrap allgather: rank %d is at exchange #%u but rank 0 at #%u; the ranks "
					    "called the bootstrap collectives a different number of times",
					    r, bs->ps[r].m.seq, bs->seq);
	}
	for (r = 1; r < bs->size && off < sizeof(buf); r++) {
		if (bs->ps[r].st != PS_BAD)
			continue;
		if (listed++ == MAX_LISTED) {
			off += (size_t)snprintf(buf + off, sizeof(buf) - off, ", ...");
			break;
		}
		off += (size_t)snprintf(buf + off, sizeof(buf) - off, ", rank %d passed %llu", r,
					(unsigned long long)bs->ps[r].m.len);
	}
	return spardl_error(-SPARDL_ERR_MISMATCH,
			    "bootstrap allgather #%u: the ranks passed different lengths: rank 0 passed %zu bytes%s; "
			    "every rank must pass the same len",
			    bs->seq, len, buf);
}

static int gather_root(struct spardl_bootstrap *bs, const void *send, void *recv, size_t len)
{
	int64_t deadline = now_ms() + bs->timeout_ms;
	size_t total = (size_t)bs->size * len;
	uint8_t hdr[HDR_LEN];
	int r, n, rc, bad = 0, left = bs->size - 1, mismatch = 0;
	char who[512];

	if (len)
		memmove(recv, send, len);
	for (r = 1; r < bs->size; r++)
		bs->ps[r] = (struct peer_state){ .st = PS_HDR };
	while (left > 0) {
		n = 0;
		for (r = 1; r < bs->size; r++) {
			if (bs->ps[r].st >= PS_DONE)
				continue;
			bs->pfd[n] = (struct pollfd){ .fd = bs->peers[r], .events = POLLIN };
			bs->pfd_rank[n++] = r;
		}
		rc = poll_until(bs->pfd, (nfds_t)n, deadline);
		if (rc < 0)
			return spardl_error(rc, "bootstrap allgather #%u: poll failed: %s", bs->seq, errstr(rc));
		if (rc == 0) {
			for (r = 0; r < bs->size; r++)
				bs->todo[r] = r > 0 && bs->ps[r].st < PS_DONE;
			list_ranks(who, sizeof(who), bs->todo, bs->size);
			rc = spardl_error(-ETIMEDOUT,
					  "bootstrap allgather #%u: %s did not contribute within %g s; is every rank "
					  "calling the same collective?",
					  bs->seq, who, secs(bs->timeout_ms));
			bcast_error(bs, rc, spardl_last_error(), 0);
			return rc;
		}
		for (int i = 0; i < n; i++) {
			if (!bs->pfd[i].revents)
				continue;
			r = bs->pfd_rank[i];
			rc = gather_read(bs, r, recv, len);
			if (is_reset(rc)) {
				rc = spardl_error(-ECONNRESET,
						  "rank %d closed its bootstrap connection: it probably exited; see its log",
						  r);
				bcast_error(bs, rc, spardl_last_error(), r);
				return rc;
			}
			if (rc == -EPROTO) {
				rc = spardl_error(-SPARDL_ERR_PROTOCOL,
						  "bootstrap allgather #%u: rank %d sent something other than its "
						  "contribution",
						  bs->seq, r);
				bcast_error(bs, rc, spardl_last_error(), 0);
				return rc;
			}
			if (rc) {
				rc = spardl_error(rc, "bootstrap allgather #%u: receiving from rank %d failed: %s",
						  bs->seq, r, errstr(rc));
				bcast_error(bs, rc, spardl_last_error(), r);
				return rc;
			}
			if (bs->ps[r].st >= PS_DONE)
				left--;
			mismatch |= bs->ps[r].st == PS_BAD;
		}
	}
	if (mismatch) {
		rc = mismatch_error(bs, len);
		bcast_error(bs, rc, spardl_last_error(), 0);
		return rc;
	}
	make_hdr(hdr, SPARDL_BS_RESULT, bs->seq, 0, total);
	for (r = 1; r < bs->size; r++)
		bs->todo[r] = 1;
	rc = bcast(bs, hdr, recv, total, now_ms() + bs->timeout_ms, &bad);
	if (rc == 0)
		return 0;
	/* Some ranks hold part of the result: end their streams so they fail
	 * now instead of waiting for the rest. */
	for (r = 1; r < bs->size; r++)
		if (bs->todo[r] && shutdown(bs->peers[r], SHUT_RDWR))
			SPARDL_DEBUG("bootstrap: shutdown of rank %d's connection failed: %s", r, errstr(errno));
	if (rc == -ETIMEDOUT) {
		list_ranks(who, sizeof(who), bs->todo, bs->size);
		return spardl_error(rc, "bootstrap allgather #%u: %s did not take the result within %g s", bs->seq,
				    who, secs(bs->timeout_ms));
	}
	if (is_reset(rc))
		return spardl_error(-ECONNRESET, "rank %d closed its bootstrap connection: it probably exited", bad);
	return spardl_error(rc, "bootstrap allgather #%u: sending to rank %d failed: %s", bs->seq, bad, errstr(rc));
}

static int oob_call(struct spardl_bootstrap *bs, const void *send, void *recv, size_t len)
{
	int rc = bs->oob(bs->oob_ctx, send, recv, len);

	if (rc)
		return spardl_error(-EIO, "the out-of-band allgather callback failed (returned %d)", rc);
	return 0;
}

int spardl_bootstrap_allgather(struct spardl_bootstrap *bs, const void *send, void *recv, size_t len)
{
	int ret;

	if (!bs || (len && (!send || !recv)))
		return spardl_error(-EINVAL, "bootstrap allgather: NULL %s", !bs ? "bootstrap" : "buffer");
	if (len > SIZE_MAX / (size_t)bs->size)
		return spardl_error(-EINVAL, "bootstrap allgather: %zu bytes times %d ranks overflows", len, bs->size);
	if (bs->oob)
		return oob_call(bs, send, recv, len);
	if (bs->size == 1) {
		if (len)
			memmove(recv, send, len);
		return 0;
	}
	if (bs->failed)
		return spardl_error(bs->failed,
				    "an earlier bootstrap exchange failed, so the bootstrap cannot be used any more: %s",
				    bs->failed_msg);
	bs->seq++;
	ret = bs->rank == 0 ? gather_root(bs, send, recv, len) : gather_rank(bs, send, recv, len);
	return ret ? fail(bs, ret) : 0;
}

int spardl_bootstrap_barrier(struct spardl_bootstrap *bs)
{
	uint8_t one = 1, *all;
	int ret;

	if (!bs)
		return spardl_error(-EINVAL, "bootstrap barrier: NULL bootstrap");
	all = malloc((size_t)bs->size);
	if (!all)
		return spardl_error(-ENOMEM, "bootstrap barrier: out of memory for %d bytes", bs->size);
	ret = spardl_bootstrap_allgather(bs, &one, all, 1);
	free(all);
	return ret;
}

/* A timeout or a lost connection is usually the echo of another rank's
 * failure; anything else is a cause. */
static int is_echo(int status)
{
	return status == -ETIMEDOUT || status == -ECONNRESET;
}

/* After a failed step: every rank learns the text of the failed ones, and
 * reports the cause: the first rank whose failure is not an echo (else the
 * first failed rank). A rank whose own failure is a cause keeps its own. */
static int exchange_failure(struct spardl_bootstrap *bs, int status, const char *what, const uint8_t *all,
			    size_t slot)
{
	char mine[STATUS_TEXT], *texts, text[STATUS_TEXT];
	int ret, w, first = -1, cause = -1;

	snprintf(mine, sizeof(mine), "%s", status ? spardl_last_error() : "");
	texts = malloc((size_t)bs->size * STATUS_TEXT);
	if (!texts)
		return spardl_error(-ENOMEM, "bootstrap: out of memory for %d failure reports", bs->size);
	ret = spardl_bootstrap_allgather(bs, mine, texts, STATUS_TEXT);
	if (ret)
		goto out;
	for (w = 0; w < bs->size; w++) {
		int st = spardl_bs_status_decode(all + (size_t)w * slot);

		if (st && first < 0)
			first = w;
		if (st && !is_echo(st) && cause < 0)
			cause = w;
	}
	if (cause < 0)
		cause = first;
	if (status && (!is_echo(status) || cause == bs->rank)) {
		/* This rank's own message stands; it was logged where it was decided. */
		ret = spardl_error_quiet(status, "%s", mine);
		goto out;
	}
	spardl_bs_text_copy(text, sizeof(text), (const uint8_t *)texts + (size_t)cause * STATUS_TEXT, STATUS_TEXT);
	if (status)
		ret = spardl_error(spardl_bs_status_decode(all + (size_t)cause * slot),
				   "rank %d could not %s: %s (and on this rank: %s)", cause, what, text, mine);
	else
		ret = spardl_error(spardl_bs_status_decode(all + (size_t)cause * slot), "rank %d could not %s: %s",
				   cause, what, text);
out:
	free(texts);
	return ret;
}

int spardl_bootstrap_exchange(struct spardl_bootstrap *bs, int status, const char *what, const void *send,
			      void *recv, size_t len)
{
	size_t slot = 4 + len;
	uint8_t *me, *all;
	int ret, w, failed = 0;

	if (!bs)
		return spardl_error(-EINVAL, "bootstrap exchange: NULL bootstrap");
	if (status > 0 || status < -4095)
		status = -EPROTO;
	me = calloc(1, slot);
	all = malloc((size_t)bs->size * slot);
	if (!me || !all) {
		free(me);
		free(all);
		/* This rank cannot take part: the others time out on it. */
		return spardl_error(-ENOMEM, "bootstrap: out of memory for an exchange of %d x %zu bytes", bs->size,
				    slot);
	}
	spardl_bs_put32(me, (uint32_t)status);
	if (!status && len)
		memcpy(me + 4, send, len);
	ret = spardl_bootstrap_allgather(bs, me, all, slot);
	if (ret)
		goto out;
	for (w = 0; w < bs->size; w++)
		failed |= spardl_bs_status_decode(all + (size_t)w * slot) != 0;
	if (failed) {
		ret = exchange_failure(bs, status, what, all, slot);
		goto out;
	}
	for (w = 0; len && w < bs->size; w++)
		memcpy((uint8_t *)recv + (size_t)w * len, all + (size_t)w * slot + 4, len);
out:
	free(me);
	free(all);
	return ret;
}

/* ------------------------------------------------------------------ */
/* Create / destroy                                                    */
/* ------------------------------------------------------------------ */

/* Everybody gathers (rank, size, key tag) and checks that all agree. */
static int rendezvous_oob(struct spardl_bootstrap *bs)
{
	uint8_t me[8 + 32], *all;
	int ret = 0, i;

	all = malloc((size_t)bs->size * sizeof(me));
	if (!all)
		return spardl_error(-ENOMEM, "bootstrap: out of memory for %d ranks", bs->size);
	spardl_bs_put32(me, (uint32_t)bs->rank);
	spardl_bs_put32(me + 4, (uint32_t)bs->size);
	memcpy(me + 8, bs->tag, 32);
	ret = oob_call(bs, me, all, sizeof(me));
	if (ret)
		goto out;
	for (i = 0; i < bs->size; i++) {
		const uint8_t *p = all + (size_t)i * sizeof(me);

		if (spardl_bs_get32(p + 4) != (uint32_t)bs->size) {
			ret = spardl_error(-SPARDL_ERR_MISMATCH,
					   "out-of-band bootstrap: rank %d passed size %u but rank %d passed size %d; "
					   "every rank must pass the same size",
					   i, spardl_bs_get32(p + 4), bs->rank, bs->size);
			goto out;
		}
		if (spardl_bs_get32(p) != (uint32_t)i) {
			ret = spardl_error(-SPARDL_ERR_MISMATCH,
					   "out-of-band bootstrap: slot %d holds rank %u; the callback must put rank "
					   "i's data at offset i * len, and every process needs a distinct rank",
					   i, spardl_bs_get32(p));
			goto out;
		}
		if (!spardl_bs_equal(p + 8, bs->tag, 32)) {
			ret = spardl_error(-SPARDL_ERR_MISMATCH,
					   "out-of-band bootstrap: rank %d passed a different job key than rank %d; "
					   "every rank of one job must pass the same job key",
					   i, bs->rank);
			goto out;
		}
	}
out:
	free(all);
	return ret;
}

static int check_config(const struct spardl_bootstrap_config *cfg)
{
	if (cfg->size < 1 || cfg->size > SPARDL_MAX_RANKS)
		return spardl_error(-EINVAL, "bootstrap: size %d must be 1 to %d (check SPARDL_SIZE)", cfg->size,
				    SPARDL_MAX_RANKS);
	if (cfg->rank < 0 || cfg->rank >= cfg->size)
		return spardl_error(-EINVAL, "bootstrap: rank %d is not in 0..%d (check SPARDL_RANK and SPARDL_SIZE)",
				    cfg->rank, cfg->size - 1);
	if (cfg->timeout_ms <= 0)
		return spardl_error(-EINVAL, "bootstrap: timeout %d ms must be positive (check SPARDL_TIMEOUT)",
				    cfg->timeout_ms);
	if (!cfg->oob && cfg->size > 1 && !cfg->address)
		return spardl_error(-EINVAL,
				    "bootstrap: no rendezvous address for %d ranks; set SPARDL_BOOTSTRAP "
				    "(host:port, [ipv6]:port or unix:NAME) or pass an out-of-band allgather",
				    cfg->size);
	if (cfg->key && (cfg->key_len == 0 || cfg->key_len > 4096))
		return spardl_error(-EINVAL, "bootstrap: the job key is %zu bytes; it must be 1 to 4096 bytes",
				    cfg->key_len);
	return 0;
}

/* "1001,1002" or "any": the uids admitted besides our own. */
static int parse_uids(struct spardl_bootstrap *bs, const char *s)
{
	const char *p = s;
	int n = 1;

	if (!s || !*s)
		return 0;
	if (!strcmp(s, "any")) {
		bs->any_uid = 1;
		return 0;
	}
	for (p = s; *p; p++)
		n += *p == ',';
	bs->uids = calloc((size_t)n, sizeof(*bs->uids));
	if (!bs->uids)
		return spardl_error(-ENOMEM, "bootstrap: out of memory");
	for (p = s; *p;) {
		char *end;
		unsigned long v;

		errno = 0;
		v = strtoul(p, &end, 10);
		if (errno || end == p || (*end && *end != ',') || v > (uid_t)-2 || *p == '-' || *p == '+')
			return spardl_error(-SPARDL_ERR_ENV,
					    "SPARDL_BOOTSTRAP_UIDS=%s is not a comma-separated list of uids or 'any'", s);
		bs->uids[bs->nuids++] = (uid_t)v;
		p = *end ? end + 1 : end;
	}
	return 0;
}

static int alloc_root(struct spardl_bootstrap *bs)
{
	size_t n = (size_t)bs->size;
	size_t r;

	bs->peers = malloc(n * sizeof(*bs->peers));
	bs->ps = calloc(n, sizeof(*bs->ps));
	bs->pfd = calloc(n, sizeof(*bs->pfd));
	bs->pfd_rank = calloc(n, sizeof(*bs->pfd_rank));
	bs->off = calloc(n, sizeof(*bs->off));
	if (!bs->peers || !bs->ps || !bs->pfd || !bs->pfd_rank || !bs->off)
		return spardl_error(-ENOMEM, "bootstrap: out of memory for %d ranks", bs->size);
	for (r = 0; r < n; r++)
		bs->peers[r] = -1;
	return 0;
}

/* What identifies the job in hellos (without a key) and in the out-of-band
 * check: a digest, so the hello never carries the key or the identifier. */
static int make_tag(struct spardl_bootstrap *bs, const struct spardl_bootstrap_config *cfg)
{
	static const uint8_t zero[SPARDL_BS_HELLO_LEN];
	const char *id = cfg->job_id ? cfg->job_id : "";

	if (bs->key)
		return spardl_bs_mac(bs->key, bs->key_len, "spardl job tag", zero, zero, bs->tag);
	return spardl_bs_digest("spardl job identifier", id, strlen(id), bs->tag);
}

int spardl_bootstrap_create(const struct spardl_bootstrap_config *cfg, struct spardl_bootstrap **bs_out)
{
	static int warned;
	int64_t start = now_ms();
	struct spardl_bootstrap *bs;
	struct bs_addr a = { 0 };
	int ret;

	if (!cfg || !bs_out)
		return spardl_error(-EINVAL, "bootstrap: NULL %s", !cfg ? "config" : "output pointer");
	ret = check_config(cfg);
	if (ret)
		return ret;
	bs = calloc(1, sizeof(*bs));
	if (!bs)
		return spardl_error(-ENOMEM, "bootstrap: out of memory");
	bs->rank = cfg->rank;
	bs->size = cfg->size;
	bs->timeout_ms = cfg->timeout_ms;
	bs->oob = cfg->oob;
	bs->oob_ctx = cfg->oob_ctx;
	bs->fd = -1;
	bs->address = strdup(cfg->oob ? "the out-of-band allgather" : cfg->address ? cfg->address : "(none)");
	/* todo also serves list_ranks() on every rank. */
	bs->todo = calloc((size_t)bs->size, 1);
	if (!bs->address || !bs->todo) {
		ret = spardl_error(-ENOMEM, "bootstrap: out of memory");
		goto err_bs;
	}
	if (cfg->key) {
		bs->key = malloc(cfg->key_len);
		if (!bs->key) {
			ret = spardl_error(-ENOMEM, "bootstrap: out of memory");
			goto err_bs;
		}
		memcpy(bs->key, cfg->key, cfg->key_len);
		bs->key_len = cfg->key_len;
	}
	ret = make_tag(bs, cfg);
	if (ret) {
		ret = spardl_error(ret, "bootstrap: computing the job tag failed");
		goto err_bs;
	}
	ret = parse_uids(bs, cfg->peer_uids);
	if (ret)
		goto err_bs;
	if (bs->oob) {
		ret = rendezvous_oob(bs);
		if (ret)
			goto err_bs;
		goto done;
	}
	if (bs->size == 1)
		goto done;
	if (bs->rank == 0 && !bs->key && !__atomic_exchange_n(&warned, 1, __ATOMIC_RELAXED))
		SPARDL_WARN("the rendezvous at %s is not authenticated: any process that can reach it can join this "
			    "job or pose as its rank 0; give every rank the same secret in SPARDL_JOB_KEY or "
			    "SPARDL_JOB_KEY_FILE (spardl-run sets one itself)",
			    cfg->address);
	ret = parse_address(cfg->address, start + bs->timeout_ms, &a);
	if (ret)
		goto err_bs;
	if (bs->rank == 0) {
		ret = alloc_root(bs);
		if (ret)
			goto err_addr;
		ret = rendezvous_root(bs, &a, start + bs->timeout_ms);
	} else {
		ret = rendezvous_rank(bs, &a, start);
	}
	if (ret)
		goto err_addr;
	addr_free(&a);
done:
	*bs_out = bs;
	return 0;
err_addr:
	addr_free(&a);
err_bs:
	spardl_bootstrap_destroy(bs);
	return ret;
}

void spardl_bootstrap_destroy(struct spardl_bootstrap *bs)
{
	int r;

	if (!bs)
		return;
	if (bs->peers)
		for (r = 1; r < bs->size; r++)
			close_fd(&bs->peers[r]);
	close_fd(&bs->fd);
	if (bs->key) {
		explicit_bzero(bs->key, bs->key_len);
		free(bs->key);
	}
	free(bs->uids);
	free(bs->peers);
	free(bs->ps);
	free(bs->pfd);
	free(bs->pfd_rank);
	free(bs->off);
	free(bs->todo);
	free(bs->address);
	free(bs);
}

int spardl_bootstrap_rank(const struct spardl_bootstrap *bs)
{
	return bs ? bs->rank : -1;
}

int spardl_bootstrap_size(const struct spardl_bootstrap *bs)
{
	return bs ? bs->size : -1;
}

int spardl_bootstrap_authenticated(const struct spardl_bootstrap *bs)
{
	return bs && bs->key && !bs->oob;
}
