/* SPDX-License-Identifier: MIT */
/* Copies of large buffers that nothing reads soon. */
#ifndef SPARDL_COPY_H
#define SPARDL_COPY_H

#include <stddef.h>

/* At or above this many bytes a copy streams: its destination is not
 * brought into the caches (it would evict what the call reads next, and
 * fetching lines only to overwrite them costs bandwidth). */
#define SPARDL_STREAM_MIN (4u << 20)

/* Passes over large buffers (the accumulate pass, the dense ring's adds,
 * these copies) fetch their reads this many floats (4 KiB) ahead
 * themselves, one line at a time: with a loop's own work in the way, the
 * core keeps too few misses in flight on its own (docs/PERFORMANCE.md). */
#define STREAM_AHEAD 1024
#define spardl_prefetch_stream(p) __builtin_prefetch((p), 0, 3)

/* memcpy(dst, src, len), for buffers that do not overlap: from
 * SPARDL_STREAM_MIN bytes on with streaming stores (AVX2), below (or
 * without AVX2) memcpy itself. */
void spardl_copy(void *dst, const void *src, size_t len);

/* The same with streaming stores from 4 KiB on: a piece of a message of
 * SPARDL_STREAM_MIN bytes or more (SPARDL_TP_WRITE_STREAM). */
void spardl_copy_stream(void *dst, const void *src, size_t len);

#endif
