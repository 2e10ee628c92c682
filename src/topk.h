/* SPDX-License-Identifier: MIT */
/* Deterministic top-k selection (SPEC section 3) on dense blocks and on sparse lists. */
#ifndef SPARDL_TOPK_H
#define SPARDL_TOPK_H

#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include <string.h>

/* Ordering key: |v| as bits, every NaN collapsed to one key above +Inf.
 * Larger key ranks first; key 0 (+0, -0) is never selected. */
static inline uint32_t spardl_key(float v)
{
	uint32_t u;

	memcpy(&u, &v, sizeof(u));
	u &= 0x7fffffffu;
	return u > 0x7f800000u ? 0x7f800001u : u;
}

/* A selection threshold: entry i is selected iff key > t.key, or
 * key == t.key and it is among the first t.ties such entries (smaller index
 * wins ties). {0, 0} selects every non-zero entry. */
struct spardl_thr {
	uint32_t key;
	size_t ties;
	size_t count; /* entries it selects: min(m, non-zero entries) */
};

/* Exact threshold of topk(v[0..len), m). */
void spardl_topk_threshold(const float *v, size_t len, size_t m, struct spardl_thr *t);

/* Scattered accesses into n-sized buffers prefetch this many entries ahead,
 * into L2 (locality hint 1: prefetcht2), not L1. A prefetch into L1 holds one
 * of L1's few miss buffers as a load would, so it adds nothing to what
 * out-of-order loads already keep in flight; L2's deeper miss queue keeps
 * about this many lines coming (docs/PERFORMANCE.md, "Prefetching into L2").
 * A read prefetch for stores too: a write prefetch (prefetchw, where the
 * target has it) ignores the hint and fills L1. */
#define PREFETCH_AHEAD 64
#define spardl_prefetch(p) __builtin_prefetch((p), 0, 1)

/* x[idx[i]] = 0 for i < n. */
void spardl_zero_at(float *x, const uint32_t *idx, size_t n);

struct spardl_topk_ws;

/* The same, faster, with a workspace's scratch. */
void spardl_topk_threshold_ws(const float *v, size_t len, size_t m, struct spardl_thr *t,
			      struct spardl_topk_ws *ws);

/* Scratch for the selections, sized at plan creation. */
struct spardl_topk_ws {
	struct spardl_arena *arena; /* where the buffers live (NULL: calloc) */
	uint32_t *cand_idx;
	float *cand_val;
	size_t cap;
	/* spardl_topk_from_cands(): union of positions, their values. */
	uint32_t *u[2];
	float *uv[2];
	size_t ucap;
	/* The threshold's finer levels: keys of one bucket. */
	uint32_t *tkeys;
	size_t tcap;
	/* Selections from candidates whose sampled key range held the
	 * threshold, and those that fell back to the full radix levels. */
	size_t range_hits, range_misses;
};

/* spardl_topk_threshold() of a list of at most ws->tcap entries, the way
 * selections from candidates find it: from a sampled key range of the
 * list's own keys when it holds the threshold (ws->range_hits), else by
 * the full radix levels (ws->range_misses). */
void spardl_topk_threshold_list(const float *v, size_t len, size_t m, struct spardl_thr *t,
				struct spardl_topk_ws *ws);

/* max_m: largest m; max_extra: most positions changed in a block between
 * its candidate gathering and its selection. */
int spardl_topk_ws_init(struct spardl_topk_ws *ws, size_t max_m, size_t max_extra);
/* The same, its buffers taken from arena (a plan's work memory). */
int spardl_topk_ws_init_in(struct spardl_topk_ws *ws, size_t max_m, size_t max_extra, struct spardl_arena *arena);
void spardl_topk_ws_fini(struct spardl_topk_ws *ws);
/* Bytes a workspace holds. */
size_t spardl_topk_ws_bytes(const struct spardl_topk_ws *ws);

/* topk(x[0..len), m): writes the selected block-local indices in ascending
 * order and their values, sets those entries of x to 0, returns the count
 * (<= m; fewer when x has fewer non-zeros). */
size_t spardl_topk_block(float *x, size_t len, size_t m, uint32_t *idx, float *val,
			 struct spardl_topk_ws *ws);

/* Candidates for a selection, gathered while acc is being formed:
 * a sampled lower bound lo on the m-th largest key of a (+ b when b is not
 * NULL; b taken as zero where zb, when not NULL, has the entry's bit set, as
 * in spardl_topk_acc_gather_z()), or 0 when the block is too small or m too
 * large for it to pay. */
uint32_t spardl_topk_bound(const float *a, const float *b, const uint64_t *zb, size_t len, size_t m);

/* 1 when a block of len entries with budget m is selected from sampled
 * candidates (spardl_topk_bound() can return non-zero), else 0. */
int spardl_topk_can_sample(size_t len, size_t m);

/* Capacity a candidate list for budget m needs. */
size_t spardl_topk_cand_cap(size_t m);

/* acc[i] = (add ? acc[i] : 0) + g[i] for every i < len, and every index
 * whose new key is >= lo (lo >= 1) into cidx, in ascending order. Returns
 * (and the new value into cval), the count, or SIZE_MAX when there were more
 * than cap (the sums are still all done). */
size_t spardl_topk_acc_gather(float *restrict acc, const float *restrict g, size_t len, int add, uint32_t lo,
			      uint32_t *cidx, float *cval, size_t cap);

/* The same, where acc is zero at the positions i whose bit i is set in
 * zbits (a bitmap, bit i in word i / 64, len bits): acc[i] = g[i] + 0
 * there. zbits NULL: none. */
size_t spardl_topk_acc_gather_z(float *restrict acc, const float *restrict g, size_t len, int add, uint32_t lo,
				uint32_t *cidx, float *cval, size_t cap, const uint64_t *zbits);

/* The same over a part of a block that starts at its entry base: acc, g
 * and zbits point at that entry (base a multiple of 64, so that zbits is a
 * whole word), and the positions gathered are the block's, base + i.
 * clear: g, which must then be writable, is zeroed as it is read (the
 * in-place call's dense-layout output, formed in the same pass). */
size_t spardl_topk_acc_gather_at(float *restrict acc, const float *restrict g, size_t len, int add, uint32_t lo,
				 uint32_t *cidx, float *cval, size_t cap, const uint64_t *zbits, uint32_t base,
				 int clear);

/* The widest vector code the accumulate pass may use, where the CPU has
 * it: 2 AVX-512, 1 AVX2, 0 none (the scalar loop). Every level gives the
 * same bits; the tests compare them. */
extern int spardl_topk_isa;

/* Bit j of a bitmap of 64-bit words. */
static inline unsigned spardl_bit(const uint64_t *bits, uint64_t j)
{
	return (unsigned)(bits[j >> 6] >> (j & 63)) & 1u;
}

/* topk(x, m) like spardl_topk_block(), from candidates instead of a scan:
 * cidx[0..nc) are the positions whose key was >= lo when gathered (cval
 * their values then), and lists[0..nl) (each sorted, lcount[j] entries)
 * every position of x changed since, lvals[j] their values once list j had
 * been added (where lists share a position, the later list's value is the
 * current one). x itself is not read: the caller zeroes the selected
 * entries (spardl_zero_at) when it needs them zero.
 * Returns SIZE_MAX when they cannot prove the answer (fewer than m keys
 * >= lo); then the caller scans. */
size_t spardl_topk_from_cands(size_t m, uint32_t lo, const uint32_t *cidx, const float *cval, size_t nc,
			      const uint32_t *const *lists, const float *const *lvals, const uint32_t *lcount, size_t nl,
			      uint32_t *idx, float *val, struct spardl_topk_ws *ws);

#endif
