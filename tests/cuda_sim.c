/* SPDX-License-Identifier: MIT */
/*
 * A simulated CUDA runtime for the host side of CUDA plans: no device code
 * runs. Device memory is an address range the host cannot touch (mapped
 * PROT_NONE, so a host read or write of it faults), backed by a separate
 * buffer that only the copies reach. Each stream is a thread that runs its
 * copies, host functions and event operations in order; events carry
 * sequence numbers as CUDA's do (a wait sees the last record made before it).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cuda.h"
#include "cuda_sim.h"

enum { SIM_OK = 0, SIM_EINVAL = 1, SIM_ENOMEM = 2 };

struct sim_mem {
	uint8_t *dev, *back;
	size_t len, mlen; /* bytes asked for, bytes mapped */
};

#define SIM_MAX_MEM 1024
static struct sim_mem mems[SIM_MAX_MEM];
static pthread_mutex_t mem_lock = PTHREAD_MUTEX_INITIALIZER;

struct sim_event {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	uint64_t recorded, done;
};

enum { OP_COPY, OP_HOST, OP_RECORD, OP_WAIT };

struct sim_op {
	int kind;
	void *dst;
	const void *src;
	size_t len;
	void (*fn)(void *);
	void *arg;
	struct sim_event *ev;
	uint64_t seq;
	struct sim_op *next;
};

struct sim_stream {
	pthread_t th;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct sim_op *head, *tail;
	uint64_t enqueued, done;
	int stop;
};

int spardl_cuda_sim_fail_in;

/* The enqueueing calls fail once when the countdown reaches them. */
static int injected(void)
{
	return spardl_cuda_sim_fail_in > 0 && --spardl_cuda_sim_fail_in == 0;
}

static struct sim_stream *default_stream;
static pthread_once_t default_once = PTHREAD_ONCE_INIT;

/* Where the bytes of [p, p+len) are: the backing of device memory, or p. */
static void *backing(const void *p, size_t len)
{
	const uint8_t *a = p;
	void *r = (void *)p;
	int i;

	pthread_mutex_lock(&mem_lock);
	for (i = 0; i < SIM_MAX_MEM; i++) {
		if (mems[i].dev && a >= mems[i].dev && a < mems[i].dev + mems[i].len) {
			if (len > (size_t)(mems[i].dev + mems[i].len - a)) {
				fprintf(stderr, "cuda-sim: a copy of %zu bytes runs past device allocation %p+%zu\n", len,
					(void *)mems[i].dev, mems[i].len);
				abort();
			}
			r = mems[i].back + (a - mems[i].dev);
			break;
		}
	}
	pthread_mutex_unlock(&mem_lock);
	return r;
}

static void *worker(void *arg)
{
	struct sim_stream *s = arg;

	pthread_mutex_lock(&s->lock);
	for (;;) {
		struct sim_op *op;

		while (!s->head && !s->stop)
			pthread_cond_wait(&s->cond, &s->lock);
		if (!s->head)
			break;
		op = s->head;
		pthread_mutex_unlock(&s->lock);
		switch (op->kind) {
		case OP_COPY:
			memcpy(backing(op->dst, op->len), backing(op->src, op->len), op->len);
			break;
		case OP_HOST:
			op->fn(op->arg);
			break;
		case OP_RECORD:
			pthread_mutex_lock(&op->ev->lock);
			if (op->seq > op->ev->done)
				op->ev->done = op->seq;
			pthread_cond_broadcast(&op->ev->cond);
			pthread_mutex_unlock(&op->ev->lock);
			break;
		case OP_WAIT:
			pthread_mutex_lock(&op->ev->lock);
			while (op->ev->done < op->seq)
				pthread_cond_wait(&op->ev->cond, &op->ev->lock);
			pthread_mutex_unlock(&op->ev->lock);
			break;
		}
		pthread_mutex_lock(&s->lock);
		s->head = op->next;
		if (!s->head)
			s->tail = NULL;
		s->done++;
		free(op);
		pthread_cond_broadcast(&s->cond);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

static struct sim_stream *stream_new(void)
{
	struct sim_stream *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	if (pthread_create(&s->th, NULL, worker, s)) {
		free(s);
		return NULL;
	}
	return s;
}

static void make_default(void)
{
	default_stream = stream_new();
	if (!default_stream)
		abort();
}

static struct sim_stream *stream_of(void *stream)
{
	if (stream)
		return stream;
	pthread_once(&default_once, make_default);
	return default_stream;
}

static int enqueue(void *stream, struct sim_op *tmpl)
{
	struct sim_stream *s = stream_of(stream);
	struct sim_op *op = malloc(sizeof(*op));

	if (!op)
		return SIM_ENOMEM;
	*op = *tmpl;
	op->next = NULL;
	pthread_mutex_lock(&s->lock);
	if (s->tail)
		s->tail->next = op;
	else
		s->head = op;
	s->tail = op;
	s->enqueued++;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	return SIM_OK;
}

static int sim_probe(char *why, size_t len)
{
	snprintf(why, len, "CUDA device 0: simulated (tests/cuda_sim.c)");
	return 0;
}

static int sim_get_device(int *dev)
{
	*dev = 0;
	return SIM_OK;
}

static int sim_pointer_device(const void *p, int *dev)
{
	*dev = backing(p, 1) != p ? 0 : -1;
	return SIM_OK;
}

static int sim_dev_alloc(void **p, size_t len)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE), mlen = (len + pg - 1) / pg * pg;
	uint8_t *dev, *back;
	int i;

	if (!len)
		mlen = pg;
	dev = mmap(NULL, mlen, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	back = malloc(len ? len : 1);
	if (dev == MAP_FAILED || !back) {
		if (dev != MAP_FAILED)
			munmap(dev, mlen);
		free(back);
		return SIM_ENOMEM;
	}
	memset(back, 0xa5, len);
	pthread_mutex_lock(&mem_lock);
	for (i = 0; i < SIM_MAX_MEM && mems[i].dev; i++)
		;
	if (i < SIM_MAX_MEM) {
		mems[i].dev = dev;
		mems[i].back = back;
		mems[i].len = len;
		mems[i].mlen = mlen;
	}
	pthread_mutex_unlock(&mem_lock);
	if (i == SIM_MAX_MEM) {
		munmap(dev, mlen);
		free(back);
		return SIM_ENOMEM;
	}
	*p = dev;
	return SIM_OK;
}

static int sim_dev_free(void *p)
{
	int i;

	pthread_mutex_lock(&mem_lock);
	for (i = 0; i < SIM_MAX_MEM && mems[i].dev != p; i++)
		;
	if (i < SIM_MAX_MEM) {
		munmap(mems[i].dev, mems[i].mlen);
		free(mems[i].back);
		mems[i].dev = NULL;
	}
	pthread_mutex_unlock(&mem_lock);
	return i < SIM_MAX_MEM ? SIM_OK : SIM_EINVAL;
}

static int sim_host_alloc(void **p, size_t len)
{
	*p = malloc(len ? len : 1);
	return *p ? SIM_OK : SIM_ENOMEM;
}

static int sim_host_free(void *p)
{
	free(p);
	return SIM_OK;
}

static int sim_memcpy(void *dst, const void *src, size_t len)
{
	memcpy(backing(dst, len), backing(src, len), len);
	return SIM_OK;
}

static int sim_memcpy_async(void *dst, const void *src, size_t len, void *stream)
{
	struct sim_op op = { .kind = OP_COPY, .dst = dst, .src = src, .len = len };

	if (injected())
		return SIM_EINVAL;
	return enqueue(stream, &op);
}

static int sim_launch_host(void *stream, void (*fn)(void *), void *arg)
{
	struct sim_op op = { .kind = OP_HOST, .fn = fn, .arg = arg };

	if (injected())
		return SIM_EINVAL;
	return enqueue(stream, &op);
}

static int sim_stream_create(void **stream)
{
	*stream = stream_new();
	return *stream ? SIM_OK : SIM_ENOMEM;
}

static int sim_stream_sync(void *stream)
{
	struct sim_stream *s = stream_of(stream);
	uint64_t want;

	pthread_mutex_lock(&s->lock);
	want = s->enqueued;
	while (s->done < want)
		pthread_cond_wait(&s->cond, &s->lock);
	pthread_mutex_unlock(&s->lock);
	return SIM_OK;
}

static int sim_stream_destroy(void *stream)
{
	struct sim_stream *s = stream;

	sim_stream_sync(stream);
	pthread_mutex_lock(&s->lock);
	s->stop = 1;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	pthread_join(s->th, NULL);
	free(s);
	return SIM_OK;
}

static int sim_event_create(void **event)
{
	struct sim_event *ev = calloc(1, sizeof(*ev));

	if (!ev)
		return SIM_ENOMEM;
	pthread_mutex_init(&ev->lock, NULL);
	pthread_cond_init(&ev->cond, NULL);
	*event = ev;
	return SIM_OK;
}

static int sim_event_destroy(void *event)
{
	free(event);
	return SIM_OK;
}

static int sim_event_record(void *event, void *stream)
{
	struct sim_event *ev = event;
	struct sim_op op = { .kind = OP_RECORD, .ev = ev };

	if (injected())
		return SIM_EINVAL;
	pthread_mutex_lock(&ev->lock);
	op.seq = ++ev->recorded;
	pthread_mutex_unlock(&ev->lock);
	return enqueue(stream, &op);
}

static int sim_stream_wait_event(void *stream, void *event)
{
	struct sim_event *ev = event;
	struct sim_op op = { .kind = OP_WAIT, .ev = ev };

	if (injected())
		return SIM_EINVAL;
	pthread_mutex_lock(&ev->lock);
	op.seq = ev->recorded;
	pthread_mutex_unlock(&ev->lock);
	return enqueue(stream, &op);
}

static int sim_event_sync(void *event)
{
	struct sim_event *ev = event;

	pthread_mutex_lock(&ev->lock);
	while (ev->done < ev->recorded)
		pthread_cond_wait(&ev->cond, &ev->lock);
	pthread_mutex_unlock(&ev->lock);
	return SIM_OK;
}

static const char *sim_err_name(int err)
{
	return err == SIM_EINVAL ? "simInvalidValue" : err == SIM_ENOMEM ? "simOutOfMemory" : "simSuccess";
}

const struct spardl_cuda_rt spardl_cuda_sim = {
	.name = "simulated",
	.probe = sim_probe,
	.get_device = sim_get_device,
	.pointer_device = sim_pointer_device,
	.dev_alloc = sim_dev_alloc,
	.dev_free = sim_dev_free,
	.host_alloc = sim_host_alloc,
	.host_free = sim_host_free,
	.memcpy = sim_memcpy,
	.memcpy_async = sim_memcpy_async,
	.launch_host = sim_launch_host,
	.stream_create = sim_stream_create,
	.stream_destroy = sim_stream_destroy,
	.stream_sync = sim_stream_sync,
	.stream_wait_event = sim_stream_wait_event,
	.event_create = sim_event_create,
	.event_destroy = sim_event_destroy,
	.event_record = sim_event_record,
	.event_sync = sim_event_sync,
	.err_name = sim_err_name,
};
