/* SPDX-License-Identifier: MIT */
/* A plan's work memory in one mapping on huge pages. */
#ifndef SPARDL_ARENA_H
#define SPARDL_ARENA_H

#include <stddef.h>
#include <stdint.h>

/*
 * The plan's host buffers that the O(k) steps of a call reach at scattered
 * places (candidates, lists, merge and union buffers, the undo log, the
 * bitmaps) are carved from one anonymous mapping, aligned to 2 MiB and
 * advised MADV_HUGEPAGE, instead of one malloc each: a few huge pages
 * instead of thousands of 4 KiB ones. What does not fit, or everything
 * when the mapping fails, comes from calloc; a buffer's memory is zero and
 * touched either way. Builds with AddressSanitizer take every buffer from
 * calloc, so that its bounds are checked.
 */
struct spardl_arena {
	uint8_t *base; /* NULL: no mapping, every buffer from calloc */
	size_t len;    /* bytes mapped at base */
	size_t used;   /* bytes handed out, from base */
};

/* Maps reserve bytes (rounded up to 2 MiB) of address space; memory is
 * taken only as buffers are handed out. Never fails: without a mapping
 * every buffer comes from calloc. */
void spardl_arena_open(struct spardl_arena *a, size_t reserve);

/* A zeroed, touched buffer of bytes bytes, 64-byte aligned inside the
 * mapping; NULL when calloc fails too. a may be NULL: calloc. */
void *spardl_arena_alloc(struct spardl_arena *a, size_t bytes);

/* Releases buf: nothing for a buffer of the mapping, free() otherwise
 * (a may be NULL). */
void spardl_arena_free(struct spardl_arena *a, void *buf);

/* After the last buffer: unmaps the address space past the last huge
 * page in use. */
void spardl_arena_trim(struct spardl_arena *a);

/* Unmaps the mapping (every buffer of it goes with it). */
void spardl_arena_close(struct spardl_arena *a);

#endif
