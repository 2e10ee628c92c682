/* SPDX-License-Identifier: MIT */
/* Copies of large buffers that nothing reads soon. */
#include <stdint.h>
#include <string.h>

#include "copy.h"

#if defined(__x86_64__)
#include <immintrin.h>

/* The 64-byte lines of [dst, dst + len), dst aligned to 64, written with
 * streaming stores. */
__attribute__((target("avx2"))) static void copy_lines_avx2(uint8_t *restrict dst, const uint8_t *restrict src,
							      size_t len)
{
	size_t i;

	for (i = 0; i + 64 <= len; i += 64) {
		__m256i a, b;

		spardl_prefetch_stream(src + i + STREAM_AHEAD * sizeof(float));
		a = _mm256_loadu_si256((const __m256i *)(src + i));
		b = _mm256_loadu_si256((const __m256i *)(src + i + 32));

		_mm256_stream_si256((__m256i *)(dst + i), a);
		_mm256_stream_si256((__m256i *)(dst + i + 32), b);
	}
	/* Streaming stores are weakly ordered: publish them before the
	 * caller signals that the copy is done. */
	_mm_sfence();
}
#endif

static void copy_from(void *dst, const void *src, size_t len, size_t min)
{
#if defined(__x86_64__)
	if (len >= min && __builtin_cpu_supports("avx2")) {
		uint8_t *d = dst;
		const uint8_t *s = src;
		size_t head = (size_t)(-(uintptr_t)d & 63), body = (len - head) & ~(size_t)63;

		memcpy(d, s, head);
		copy_lines_avx2(d + head, s + head, body);
		memcpy(d + head + body, s + head + body, len - head - body);
		return;
	}
#endif
	memcpy(dst, src, len);
}

void spardl_copy(void *dst, const void *src, size_t len)
{
	copy_from(dst, src, len, SPARDL_STREAM_MIN);
}

void spardl_copy_stream(void *dst, const void *src, size_t len)
{
	copy_from(dst, src, len, 4096);
}
