// SPDX-License-Identifier: MIT
/* Tracing: the trace file and the plans' record buffers (trace.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "env.h"
#include "log.h"
#include "trace.h"

/* Records per plan buffer (64 B each): written out between calls once half full. */
#define BUF_RECS 16384u

struct spardl_trace {
	pthread_mutex_t lock;
	int fd;
	int failed; /* a write failed: tracing stops, the job goes on */
	uint32_t next_plan;
	uint64_t epoch_ns;
	char path[4096];
};

struct spardl_trace_buf {
	struct spardl_trace *t;
	uint32_t plan;
	struct spardl_trace_ctx ctx;
	uint32_t n;
	struct spardl_trace_rec rec[BUF_RECS];
};

static uint64_t clock_ns(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* PATH with every %r replaced by the rank and %% by %. */
static int expand(const char *pat, int rank, char *out, size_t len)
{
	size_t o = 0;
	int w;

	for (; *pat; pat++) {
		if (pat[0] == '%' && pat[1] == 'r') {
			w = snprintf(out + o, len - o, "%d", rank);
			if (w < 0 || (size_t)w >= len - o)
				return -1;
			o += (size_t)w;
			pat++;
			continue;
		}
		if (pat[0] == '%' && pat[1] == '%')
			pat++;
		if (o + 1 >= len)
			return -1;
		out[o++] = *pat;
	}
	out[o] = 0;
	return 0;
}

static int write_all(int fd, const void *p, size_t len)
{
	const char *c = p;

	while (len) {
		ssize_t w = write(fd, c, len);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return w < 0 ? -errno : -EIO;
		c += w;
		len -= (size_t)w;
	}
	return 0;
}

int spardl_trace_open(int rank, int size, struct spardl_trace **out)
{
	const char *pat = spardl_env_str("SPARDL_TRACE");
	struct spardl_trace_hdr h;
	struct spardl_trace *t;
	int ret;

	*out = NULL;
	if (!pat || !*pat)
		return 0;
	t = calloc(1, sizeof(*t));
	if (!t)
		return spardl_error(-ENOMEM, "out of memory for the trace");
	if (expand(pat, rank, t->path, sizeof(t->path))) {
		free(t);
		return spardl_error(-ENAMETOOLONG, "SPARDL_TRACE=%s: the path is too long", pat);
	}
	if (!strstr(pat, "%r") && size > 1)
		SPARDL_WARN("SPARDL_TRACE=%s has no %%r: ranks on one host write the same file; add %%r for the rank",
			    pat);
	t->fd = open(t->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (t->fd < 0) {
		ret = spardl_error(-errno, "SPARDL_TRACE: cannot create %s: %s (unset SPARDL_TRACE or name a writable file)",
				   t->path, strerror(errno));
		free(t);
		return ret;
	}
	pthread_mutex_init(&t->lock, NULL);
	memset(&h, 0, sizeof(h));
	memcpy(h.magic, SPARDL_TRACE_MAGIC, 8);
	h.version = SPARDL_TRACE_VERSION;
	h.hdr_size = sizeof(h);
	h.rec_size = sizeof(struct spardl_trace_rec);
	h.rank = rank;
	h.size = size;
	h.pid = (int32_t)getpid();
	t->epoch_ns = clock_ns(CLOCK_MONOTONIC);
	h.epoch_real_ns = clock_ns(CLOCK_REALTIME);
	if (gethostname(h.host, sizeof(h.host) - 1))
		snprintf(h.host, sizeof(h.host), "?");
	ret = write_all(t->fd, &h, sizeof(h));
	if (ret) {
		ret = spardl_error(ret, "SPARDL_TRACE: writing %s: %s", t->path, strerror(-ret));
		spardl_trace_close(t);
		return ret;
	}
	SPARDL_INFO("tracing to %s", t->path);
	*out = t;
	return 0;
}

void spardl_trace_close(struct spardl_trace *t)
{
	if (!t)
		return;
	if (close(t->fd))
		SPARDL_WARN("SPARDL_TRACE: closing %s: %s", t->path, strerror(errno));
	pthread_mutex_destroy(&t->lock);
	free(t);
}

int spardl_trace_buf_new(struct spardl_trace *t, struct spardl_trace_buf **out)
{
	struct spardl_trace_buf *b;

	*out = NULL;
	if (!t)
		return 0;
	b = malloc(sizeof(*b));
	if (!b)
		return spardl_error(-ENOMEM, "out of memory for the plan's trace buffer");
	/* Touched now, not in the first call. */
	memset(b, 0, sizeof(*b));
	b->t = t;
	pthread_mutex_lock(&t->lock);
	b->plan = t->next_plan++;
	pthread_mutex_unlock(&t->lock);
	*out = b;
	return 0;
}

static void flush(struct spardl_trace_buf *b)
{
	struct spardl_trace *t = b->t;
	struct spardl_trace_chunk ch = { .magic = SPARDL_TRACE_CHUNK_MAGIC, .nrec = b->n };
	int ret = 0;

	if (!b->n)
		return;
	ch.hash = spardl_trace_hash(b->rec, (size_t)b->n * sizeof(b->rec[0]));
	pthread_mutex_lock(&t->lock);
	if (!t->failed) {
		ret = write_all(t->fd, &ch, sizeof(ch));
		if (!ret)
			ret = write_all(t->fd, b->rec, (size_t)b->n * sizeof(b->rec[0]));
		if (ret) {
			t->failed = 1;
			SPARDL_WARN("SPARDL_TRACE: writing %s failed (%s): tracing stops here, the job goes on",
				    t->path, strerror(-ret));
		}
	}
	pthread_mutex_unlock(&t->lock);
	b->n = 0;
}

void spardl_trace_buf_free(struct spardl_trace_buf *b)
{
	if (!b)
		return;
	flush(b);
	free(b);
}

void spardl_trace_call_done(struct spardl_trace_buf *b)
{
	if (b && b->n >= BUF_RECS / 2)
		flush(b);
}

struct spardl_trace_ctx *spardl_trace_ctx(struct spardl_trace_buf *b)
{
	return &b->ctx;
}

struct spardl_trace_rec *spardl_trace_next(struct spardl_trace_buf *b)
{
	struct spardl_trace_rec *r;

	/* Only a call of more than BUF_RECS / 2 records gets here full. */
	if (b->n == BUF_RECS)
		flush(b);
	r = &b->rec[b->n++];
	memset(r, 0, sizeof(*r));
	r->t_ns = clock_ns(CLOCK_MONOTONIC) - b->t->epoch_ns;
	r->call = b->ctx.call;
	r->step = b->ctx.step;
	r->round = b->ctx.round;
	r->phase = b->ctx.phase;
	r->plan = b->plan;
	return r;
}
