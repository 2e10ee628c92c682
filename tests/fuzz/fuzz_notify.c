/* SPDX-License-Identifier: MIT */
/* libFuzzer target: notifications (peer, immediate, length) checked against a compiled schedule. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "schedule.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct spardl_sched_params p = { 0 };
	struct spardl_sched *s;

	if (size < 8)
		return 0;
	/* A small plan chosen by the first bytes. */
	p.size = 1 + data[0] % 12;
	p.rank = data[1] % p.size;
	p.algo = data[2] % 4;
	p.teams = 1 + data[3] % 4;
	if (p.algo != 0 || p.size % p.teams)
		p.teams = 1;
	p.sag = data[4] & 1;
	p.srs = (data[4] >> 1) & 1;
	p.residual = 1;
	p.n = 1 + (uint64_t)(data[5] | data[6] << 8) % 5000;
	p.k = 1 + p.n / (1 + data[7] % 100);
	p.max_write = (data[4] & 4) ? 64 : 0;
	if (spardl_sched_compile(&p, &s))
		return 0;
	for (size_t off = 8; off + 13 <= size; off += 13) {
		const uint8_t *e = data + off;
		int peer = (int)(e[0] % (p.size + 2)) - 1;
		uint32_t imm = (uint32_t)e[1] | (uint32_t)e[2] << 8 | (uint32_t)e[3] << 16 | (uint32_t)e[4] << 24;
		uint64_t len;
		uint32_t piece, slot;

		memcpy(&len, e + 5, sizeof(len));
		if (e[12] & 1)
			len %= 1u << 16;
		if (spardl_sched_check_notify(s, peer, imm, len, &piece, &slot))
			continue;
		if (piece >= s->npieces || slot >= s->nrslots || s->piece_slot[piece] != slot ||
		    s->rslots[slot].peer != peer || len > s->rslots[slot].max)
			abort();
	}
	spardl_sched_free(s);
	return 0;
}
