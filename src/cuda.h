/* SPDX-License-Identifier: MIT */
/* CUDA devices: whether this process can use one, and why not; the runtime
 * calls CUDA plans make. */
#ifndef SPARDL_CUDA_H
#define SPARDL_CUDA_H

#include <stddef.h>
#include <stdio.h>

/*
 * The CUDA runtime calls of CUDA plans (cuda_plan.c), as a table: cudart's
 * in a build with CUDA. Tests install a simulated runtime here to check the
 * host side of CUDA plans without a device (tests/cuda_sim.c).
 * Every function but probe returns 0 or the runtime's error code, which
 * err_name names. Streams and events are cudaStream_t and cudaEvent_t passed
 * as void *; the NULL stream is the legacy default stream.
 */
struct spardl_cuda_rt {
	const char *name;
	/* 0 with the device in use named in why, or -ENODEV with the reason. */
	int (*probe)(char *why, size_t len);
	int (*get_device)(int *dev);
	/* The device holding p (device or managed memory), or -1 for host memory. */
	int (*pointer_device)(const void *p, int *dev);
	int (*dev_alloc)(void **p, size_t len);
	int (*dev_free)(void *p);
	int (*host_alloc)(void **p, size_t len); /* page-locked */
	int (*host_free)(void *p);
	int (*memcpy)(void *dst, const void *src, size_t len); /* synchronous, any direction */
	int (*memcpy_async)(void *dst, const void *src, size_t len, void *stream);
	/* fn(arg) runs on a runtime thread once the stream's earlier work is
	 * done; the stream's later work waits for it. */
	int (*launch_host)(void *stream, void (*fn)(void *), void *arg);
	int (*stream_create)(void **stream);
	int (*stream_destroy)(void *stream);
	int (*stream_sync)(void *stream);
	int (*stream_wait_event)(void *stream, void *event);
	int (*event_create)(void **event);
	int (*event_destroy)(void *event);
	int (*event_record)(void *event, void *stream);
	int (*event_sync)(void *event);
	const char *(*err_name)(int err);
};

/* cudart's table, or NULL in a build without CUDA. Not exported. */
extern const struct spardl_cuda_rt *spardl_cuda_rt;

/* 0 with the device in use named in why, or -ENODEV with the reason (no
 * CUDA in this build, no driver, no device) in why. */
int spardl_cuda_probe(char *why, size_t len);

/* The CUDA devices this process sees (spardl-verbs devices), or why none. */
int spardl_cuda_describe(FILE *out);

#endif
