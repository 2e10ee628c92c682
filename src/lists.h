/* SPDX-License-Identifier: MIT */
/* Sparse lists: k-way merge with a fixed summation order, used by unions, merges and results. */
#ifndef SPARDL_LISTS_H
#define SPARDL_LISTS_H

#include <stddef.h>
#include <stdint.h>

#include "wire.h"

/* Merge lists[0..nl) (each sorted by index) into one list sorted by global
 * index (block * block_size + local index). Where several lists hold an
 * index, their values are added in list order, so every rank merging the
 * same lists in the same order gets the same bits. Returns the count.
 * heap: scratch of nl entries. */
struct spardl_merge_heap {
	uint64_t key;
	uint32_t list;
	uint32_t pos;
};

size_t spardl_lists_merge(const struct spardl_list *lists, size_t nl, uint64_t block_size,
			  struct spardl_merge_heap *heap, uint64_t *oidx, float *oval);

#endif
