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
 * heap: scratch of nl entries; oidx and oval hold min(the counts' sum,
 * the merged blocks' total length) entries. */
struct spardl_merge_heap {
	uint64_t key;
	uint32_t list;
	uint32_t pos;
};

size_t spardl_lists_merge(const struct spardl_list *lists, size_t nl, uint64_t block_size,
			  struct spardl_merge_heap *heap, uint64_t *oidx, float *oval);

/*
 * A merge of two ascending index lists in parts merged side by side: each
 * step of one merge waits on the loads its previous step chose, so a merge
 * runs at the latency of that chain, and independent ones fill its gaps.
 * Part q takes a[as[q] .. as[q + 1]) and b[bs[q] .. bs[q + 1]): a is cut at
 * its quarters, b where its entries reach the part's first a entry, so an
 * index in both lists stays in one part. Each part is written where it
 * would start if no index were shared, then moved down behind the previous
 * one (spardl_merge_parts_pack).
 */
#define SPARDL_MERGE_PARTS 4 /* the merges' interleaved loops take four steps */
/* Smallest side worth parting. */
#define SPARDL_MERGE_PART_MIN 4096u
void spardl_merge_split(const uint32_t *a, size_t na, const uint32_t *b, size_t nb,
			size_t as[SPARDL_MERGE_PARTS + 1], size_t bs[SPARDL_MERGE_PARTS + 1]);
/* Moves parts of len[q] entries written at as[q] + bs[q] (of isz-byte
 * indices and 4-byte values) down to follow each other; returns the
 * total. */
size_t spardl_merge_parts_pack(void *idx, size_t isz, float *val, const size_t as[SPARDL_MERGE_PARTS + 1],
			       const size_t bs[SPARDL_MERGE_PARTS + 1], const size_t len[SPARDL_MERGE_PARTS]);

#endif
