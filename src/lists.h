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

/* First position of the ascending array a[0..n) at or above v (n if
 * none), for any element type. */
#define spardl_lower_bound(a, n, v)                                  \
	__extension__({                                              \
		size_t lo_ = 0, hi_ = (n);                           \
		while (lo_ < hi_) {                                  \
			size_t mid_ = lo_ + (hi_ - lo_) / 2;         \
			if ((a)[mid_] < (v))                         \
				lo_ = mid_ + 1;                      \
			else                                         \
				hi_ = mid_;                          \
		}                                                    \
		lo_;                                                 \
	})

/* The vector level of two-list merges and unions: 2 (the default) uses
 * AVX-512 where the CPU has it, lower values the scalar merge; tests and
 * benchmarks lower it to compare the two. */
extern int spardl_lists_isa;

/* The union of a[0..na) and b[0..nb), each with ascending indices, into
 * out/ov (na + nb pairs): at an index in both, b's value. Long lists are
 * merged sixteen entries at a time (AVX-512) or in four parts side by side
 * (lists.c). */
size_t spardl_union(const uint32_t *a, const float *av, size_t na, const uint32_t *b, const float *bv, size_t nb,
		    uint32_t *out, float *ov);

#endif
