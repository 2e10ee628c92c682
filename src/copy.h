/* SPDX-License-Identifier: MIT */
/* Copies of large buffers that nothing reads soon. */
#ifndef SPARDL_COPY_H
#define SPARDL_COPY_H

#include <stddef.h>

/* At or above this many bytes a copy streams: its destination is not
 * brought into the caches (it would evict what the call reads next, and
 * fetching lines only to overwrite them costs bandwidth). */
#define SPARDL_STREAM_MIN (4u << 20)

/* memcpy(dst, src, len), for buffers that do not overlap: from
 * SPARDL_STREAM_MIN bytes on with streaming stores (AVX2), below (or
 * without AVX2) memcpy itself. */
void spardl_copy(void *dst, const void *src, size_t len);

#endif
