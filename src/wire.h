/* SPDX-License-Identifier: MIT */
/* Wire layout of a sparse block: {u32 block id, u32 count, u32 idx[count], value[count]}. */
#ifndef SPARDL_WIRE_H
#define SPARDL_WIRE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define SPARDL_WIRE_HDR 8u

/* Bytes of a block holding count float32 pairs. */
static inline size_t spardl_wire_bytes(size_t count)
{
	return SPARDL_WIRE_HDR + 8u * count;
}

/* A decoded view of a block in place (no copy). */
struct spardl_list {
	uint32_t block;
	uint32_t count;
	const uint32_t *idx;
	const float *val;
};

static inline void spardl_wire_put_hdr(void *blk, uint32_t block, uint32_t count)
{
	uint32_t h[2] = { block, count };

	memcpy(blk, h, sizeof(h));
}

static inline uint32_t *spardl_wire_idx(void *blk)
{
	return (uint32_t *)((uint8_t *)blk + SPARDL_WIRE_HDR);
}

static inline float *spardl_wire_val(void *blk, uint32_t count)
{
	return (float *)((uint8_t *)blk + SPARDL_WIRE_HDR + 4u * (size_t)count);
}

/* Decode the block at buf (len bytes available): 0, or -1 when the header
 * does not fit, the count exceeds max_count or the pairs run past len. */
static inline int spardl_wire_view(const void *buf, size_t len, size_t max_count, struct spardl_list *l)
{
	uint32_t h[2];

	if (len < SPARDL_WIRE_HDR)
		return -1;
	memcpy(h, buf, sizeof(h));
	if (h[1] > max_count || spardl_wire_bytes(h[1]) > len)
		return -1;
	l->block = h[0];
	l->count = h[1];
	l->idx = (const uint32_t *)((const uint8_t *)buf + SPARDL_WIRE_HDR);
	l->val = (const float *)((const uint8_t *)buf + SPARDL_WIRE_HDR + 4u * (size_t)h[1]);
	return 0;
}

/* Decode and check a received block as the schedule expects it: the block
 * id is want_block, the count at most max_count, every index inside the
 * block (block_len entries) and strictly increasing (the merges rely on
 * it). Returns NULL with *l set, or what is wrong (a static string). */
static inline const char *spardl_wire_check(const void *buf, size_t len, size_t max_count, uint32_t want_block,
					    uint64_t block_len, struct spardl_list *l)
{
	uint32_t i;

	if (spardl_wire_view(buf, len, max_count, l))
		return "truncated block or count over budget";
	if (l->block != want_block)
		return "unexpected block id";
	for (i = 0; i < l->count; i++)
		if (l->idx[i] >= block_len || (i && l->idx[i] <= l->idx[i - 1]))
			return "index outside the block or out of order";
	return NULL;
}

/* Copy a list into dst as one block; returns the bytes written. */
static inline size_t spardl_wire_put(void *dst, const struct spardl_list *l)
{
	spardl_wire_put_hdr(dst, l->block, l->count);
	if (l->count) {
		memcpy(spardl_wire_idx(dst), l->idx, 4u * (size_t)l->count);
		memcpy(spardl_wire_val(dst, l->count), l->val, 4u * (size_t)l->count);
	}
	return spardl_wire_bytes(l->count);
}

#endif
