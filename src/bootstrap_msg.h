/* SPDX-License-Identifier: MIT */
/* The bootstrap's messages on the wire: fixed big-endian layouts, encoded and checked without trusting the peer. */
#ifndef SPARDL_BOOTSTRAP_MSG_H
#define SPARDL_BOOTSTRAP_MSG_H

#include <stddef.h>
#include <stdint.h>

#define SPARDL_BS_MAGIC 0x53504442u /* "SPDB" */
#define SPARDL_BS_VERSION 2u
#define SPARDL_BS_NONCE 32u
#define SPARDL_BS_MAC 32u
#define SPARDL_BS_TAG 32u
/* Longest error text a message may carry. */
#define SPARDL_BS_TEXT_MAX 1000u

/* Every message after the hello starts with this header. */
#define SPARDL_BS_HDR_LEN 24u

enum spardl_bs_type {
	SPARDL_BS_HELLO = 1,     /* a rank asks to join (fixed layout, no header) */
	SPARDL_BS_OK = 2,        /* rendezvous complete */
	SPARDL_BS_REFUSED = 3,   /* not a member of this job: code + text */
	SPARDL_BS_ERROR = 4,     /* code + text: the exchange failed on rank 0 */
	SPARDL_BS_DATA = 5,      /* a rank's allgather contribution */
	SPARDL_BS_RESULT = 6,    /* the gathered size * len bytes */
	SPARDL_BS_CHALLENGE = 7, /* rank 0's nonce and proof of the key */
	SPARDL_BS_RESPONSE = 8,  /* the joining rank's proof (fixed layout, no header) */
};

struct spardl_bs_hdr {
	uint32_t type;
	uint32_t seq;
	uint32_t code; /* ERROR/REFUSED: the error code, negated */
	uint64_t len;  /* bytes of body that follow */
};

/* HELLO flags. */
#define SPARDL_BS_HELLO_KEYED 1u /* the rank holds a job key and expects a challenge */

#define SPARDL_BS_HELLO_LEN (24u + SPARDL_BS_NONCE + SPARDL_BS_TAG)

struct spardl_bs_hello {
	uint32_t version;
	uint32_t rank;
	uint32_t size;
	uint32_t flags;
	uint8_t nonce[SPARDL_BS_NONCE]; /* fresh per connection */
	uint8_t tag[SPARDL_BS_TAG];     /* without a key: the job identifier's digest */
};

/* CHALLENGE body: rank 0's nonce, then HMAC(key, "server" label, hello, nonce). */
#define SPARDL_BS_CHALLENGE_LEN (SPARDL_BS_NONCE + SPARDL_BS_MAC)
/* RESPONSE: magic, type, then HMAC(key, "client" label, hello, rank 0's nonce). */
#define SPARDL_BS_RESPONSE_LEN (8u + SPARDL_BS_MAC)

void spardl_bs_put32(uint8_t *p, uint32_t v);
void spardl_bs_put64(uint8_t *p, uint64_t v);
uint32_t spardl_bs_get32(const uint8_t *p);
uint64_t spardl_bs_get64(const uint8_t *p);

void spardl_bs_hdr_encode(uint8_t *buf, const struct spardl_bs_hdr *h);
/* 0, or -1 when the magic is wrong or the type unknown. */
int spardl_bs_hdr_decode(const uint8_t *buf, size_t len, struct spardl_bs_hdr *h);

void spardl_bs_hello_encode(uint8_t *buf, const struct spardl_bs_hello *h);
/* 0, or -1 when buf is short, the magic or type is wrong. The version and
 * ranks are returned as sent: the caller checks and reports them. */
int spardl_bs_hello_decode(const uint8_t *buf, size_t len, struct spardl_bs_hello *h);

void spardl_bs_response_encode(uint8_t *buf, const uint8_t mac[SPARDL_BS_MAC]);
int spardl_bs_response_decode(const uint8_t *buf, size_t len, uint8_t mac[SPARDL_BS_MAC]);

/* An error report's code and text: 0 with code in (0, 4096) and the text
 * copied and terminated (at most cap - 1 bytes), or -1 when the header
 * announces more text than SPARDL_BS_TEXT_MAX or an impossible code. */
int spardl_bs_error_check(const struct spardl_bs_hdr *h);
void spardl_bs_text_copy(char *dst, size_t cap, const uint8_t *src, size_t len);

/* A status exchanged by collective steps: a negative error code in
 * [-4095, 0]; anything else from a peer becomes -EPROTO. */
int32_t spardl_bs_status_decode(const uint8_t *p);

/* Message authentication (HMAC-SHA256); 0 or -EIO. */
int spardl_bs_mac(const uint8_t *key, size_t key_len, const char *label, const uint8_t *hello,
		  const uint8_t *nonce, uint8_t out[SPARDL_BS_MAC]);
/* SHA-256 of label then data; 0 or -EIO. */
int spardl_bs_digest(const char *label, const void *data, size_t len, uint8_t out[32]);
/* Constant-time comparison: 1 when equal. */
int spardl_bs_equal(const uint8_t *a, const uint8_t *b, size_t len);
/* Fresh random bytes from the kernel; 0 or -errno. */
int spardl_bs_random(void *buf, size_t len);

#endif
