/* SPDX-License-Identifier: MIT */
/* libFuzzer target: every bootstrap message parser on arbitrary bytes. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bootstrap_msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct spardl_bs_hdr h;
	struct spardl_bs_hello hello;
	uint8_t mac[SPARDL_BS_MAC], again[SPARDL_BS_HELLO_LEN];
	char text[SPARDL_BS_TEXT_MAX + 1];

	/* A header, and an error report's code and text behind it. */
	if (!spardl_bs_hdr_decode(data, size, &h)) {
		uint8_t enc[SPARDL_BS_HDR_LEN];

		if (h.type < SPARDL_BS_OK || h.type > SPARDL_BS_CHALLENGE)
			abort();
		spardl_bs_hdr_encode(enc, &h);
		if (memcmp(enc, data, SPARDL_BS_HDR_LEN))
			abort();
		if (!spardl_bs_error_check(&h)) {
			size_t avail = size - SPARDL_BS_HDR_LEN, len = (size_t)h.len < avail ? (size_t)h.len : avail;

			if (h.len > SPARDL_BS_TEXT_MAX || h.code == 0 || h.code >= 4096)
				abort();
			spardl_bs_text_copy(text, sizeof(text), data + SPARDL_BS_HDR_LEN, len);
			if (strlen(text) > len || strlen(text) >= sizeof(text))
				abort();
			for (size_t i = 0; text[i]; i++)
				if (text[i] < 0x20 || text[i] > 0x7e)
					abort();
		}
	}
	/* A hello: what decodes re-encodes to the same bytes. */
	if (!spardl_bs_hello_decode(data, size, &hello)) {
		spardl_bs_hello_encode(again, &hello);
		if (memcmp(again, data, SPARDL_BS_HELLO_LEN))
			abort();
	}
	/* A response. */
	if (!spardl_bs_response_decode(data, size, mac) && memcmp(mac, data + 8, SPARDL_BS_MAC))
		abort();
	/* A status of a collective step. */
	if (size >= 4) {
		int32_t st = spardl_bs_status_decode(data);

		if (st > 0 || st < -4095)
			abort();
	}
	/* Text of any length into a small buffer. */
	spardl_bs_text_copy(text, 17, data, size);
	if (strlen(text) > 16)
		abort();
	return 0;
}
