/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the receiver's decoding of a message of sparse blocks. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t buf[4096];
	struct spardl_list l;
	size_t len, pos = 0, max_count;
	uint32_t want, nblocks;
	uint64_t block_len;

	if (size < 12)
		return 0;
	/* The expectations come first: budget, block length, blocks. */
	max_count = (size_t)(data[0] | data[1] << 8);
	block_len = (uint64_t)(data[2] | data[3] << 8 | (uint32_t)data[4] << 16);
	nblocks = (uint32_t)(data[5] % 8) + 1;
	want = (uint32_t)(data[6] | data[7] << 8);
	data += 8;
	size -= 8;
	/* Messages land 8-aligned in the receive slots. */
	len = size < sizeof(buf) ? size : sizeof(buf);
	memcpy(buf, data, len);
	for (uint32_t b = 0; b < nblocks; b++) {
		const char *bad = spardl_wire_check((const uint8_t *)buf + pos, len - pos, max_count, want + b,
						    block_len, &l);

		if (bad)
			break;
		if (l.count > max_count || l.block != want + b)
			abort();
		for (uint32_t i = 0; i < l.count; i++)
			if (l.idx[i] >= block_len || (i && l.idx[i] <= l.idx[i - 1]))
				abort();
		/* Reading every value must stay inside the message. */
		if ((const uint8_t *)(l.val + l.count) > (const uint8_t *)buf + len)
			abort();
		pos += spardl_wire_bytes(l.count);
		if (pos > len)
			abort();
	}
	return 0;
}
