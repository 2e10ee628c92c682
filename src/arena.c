// SPDX-License-Identifier: MIT
/* A plan's work memory in one mapping on huge pages (arena.h). */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "arena.h"

#define ARENA_ALIGN ((size_t)2 << 20) /* a huge page */
#define ARENA_LINE 64u

static size_t round_up(size_t x, size_t to)
{
	return (x + to - 1) / to * to;
}

void spardl_arena_open(struct spardl_arena *a, size_t reserve)
{
	size_t len, head;
	uint8_t *p;

	memset(a, 0, sizeof(*a));
#if defined(__SANITIZE_ADDRESS__)
	/* AddressSanitizer checks the bounds of each calloc'd buffer, not of
	 * buffers carved from one mapping. */
	return;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
	return;
#endif
#endif
	if (!reserve || reserve > SIZE_MAX / 2)
		return;
	len = round_up(reserve, ARENA_ALIGN);
	/* One huge page more, so that an aligned start fits. */
	p = mmap(NULL, len + ARENA_ALIGN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1,
		 0);
	if (p == MAP_FAILED)
		return;
	head = (size_t)(round_up((uintptr_t)p, ARENA_ALIGN) - (uintptr_t)p);
	if (head)
		(void)munmap(p, head);
	(void)munmap(p + head + len, ARENA_ALIGN - head);
	a->base = p + head;
	a->len = len;
	/* Advice only: without transparent huge pages the buffers still
	 * share one mapping. */
	(void)madvise(a->base, a->len, MADV_HUGEPAGE);
}

void *spardl_arena_alloc(struct spardl_arena *a, size_t bytes)
{
	size_t at = a ? round_up(a->used, ARENA_LINE) : 0;
	void *p;

	if (!bytes)
		bytes = 1;
	if (a && a->base && at <= a->len && bytes <= a->len - at) {
		p = a->base + at;
		a->used = at + bytes;
	} else {
		p = calloc(1, bytes);
		if (!p)
			return NULL;
	}
	/* Touched now, not in the first call. */
	memset(p, 0, bytes);
	return p;
}

static int owns(const struct spardl_arena *a, const void *buf)
{
	return a && a->base && (const uint8_t *)buf >= a->base && (const uint8_t *)buf < a->base + a->len;
}

void spardl_arena_free(struct spardl_arena *a, void *buf)
{
	if (buf && !owns(a, buf))
		free(buf);
}

void spardl_arena_trim(struct spardl_arena *a)
{
	size_t keep;

	if (!a->base)
		return;
	keep = round_up(a->used ? a->used : 1, ARENA_ALIGN);
	if (keep < a->len && !munmap(a->base + keep, a->len - keep))
		a->len = keep;
}

void spardl_arena_close(struct spardl_arena *a)
{
	if (a->base)
		(void)munmap(a->base, a->len);
	memset(a, 0, sizeof(*a));
}
