/* SPDX-License-Identifier: MIT */
/* Encoding and checking of bootstrap messages, and the HMAC-SHA256 proofs of the job key. */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/random.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "bootstrap_msg.h"
#include "log.h"

void spardl_bs_put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

void spardl_bs_put64(uint8_t *p, uint64_t v)
{
	spardl_bs_put32(p, (uint32_t)(v >> 32));
	spardl_bs_put32(p + 4, (uint32_t)v);
}

uint32_t spardl_bs_get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

uint64_t spardl_bs_get64(const uint8_t *p)
{
	return (uint64_t)spardl_bs_get32(p) << 32 | spardl_bs_get32(p + 4);
}

void spardl_bs_hdr_encode(uint8_t *buf, const struct spardl_bs_hdr *h)
{
	spardl_bs_put32(buf, SPARDL_BS_MAGIC);
	spardl_bs_put32(buf + 4, h->type);
	spardl_bs_put32(buf + 8, h->seq);
	spardl_bs_put32(buf + 12, h->code);
	spardl_bs_put64(buf + 16, h->len);
}

int spardl_bs_hdr_decode(const uint8_t *buf, size_t len, struct spardl_bs_hdr *h)
{
	if (len < SPARDL_BS_HDR_LEN || spardl_bs_get32(buf) != SPARDL_BS_MAGIC)
		return -1;
	h->type = spardl_bs_get32(buf + 4);
	h->seq = spardl_bs_get32(buf + 8);
	h->code = spardl_bs_get32(buf + 12);
	h->len = spardl_bs_get64(buf + 16);
	if (h->type < SPARDL_BS_OK || h->type > SPARDL_BS_CHALLENGE)
		return -1;
	return 0;
}

void spardl_bs_hello_encode(uint8_t *buf, const struct spardl_bs_hello *h)
{
	spardl_bs_put32(buf, SPARDL_BS_MAGIC);
	spardl_bs_put32(buf + 4, SPARDL_BS_HELLO);
	spardl_bs_put32(buf + 8, h->version);
	spardl_bs_put32(buf + 12, h->rank);
	spardl_bs_put32(buf + 16, h->size);
	spardl_bs_put32(buf + 20, h->flags);
	memcpy(buf + 24, h->nonce, SPARDL_BS_NONCE);
	memcpy(buf + 24 + SPARDL_BS_NONCE, h->tag, SPARDL_BS_TAG);
}

int spardl_bs_hello_decode(const uint8_t *buf, size_t len, struct spardl_bs_hello *h)
{
	if (len < SPARDL_BS_HELLO_LEN || spardl_bs_get32(buf) != SPARDL_BS_MAGIC ||
	    spardl_bs_get32(buf + 4) != SPARDL_BS_HELLO)
		return -1;
	h->version = spardl_bs_get32(buf + 8);
	h->rank = spardl_bs_get32(buf + 12);
	h->size = spardl_bs_get32(buf + 16);
	h->flags = spardl_bs_get32(buf + 20);
	memcpy(h->nonce, buf + 24, SPARDL_BS_NONCE);
	memcpy(h->tag, buf + 24 + SPARDL_BS_NONCE, SPARDL_BS_TAG);
	return 0;
}

void spardl_bs_response_encode(uint8_t *buf, const uint8_t mac[SPARDL_BS_MAC])
{
	spardl_bs_put32(buf, SPARDL_BS_MAGIC);
	spardl_bs_put32(buf + 4, SPARDL_BS_RESPONSE);
	memcpy(buf + 8, mac, SPARDL_BS_MAC);
}

int spardl_bs_response_decode(const uint8_t *buf, size_t len, uint8_t mac[SPARDL_BS_MAC])
{
	if (len < SPARDL_BS_RESPONSE_LEN || spardl_bs_get32(buf) != SPARDL_BS_MAGIC ||
	    spardl_bs_get32(buf + 4) != SPARDL_BS_RESPONSE)
		return -1;
	memcpy(mac, buf + 8, SPARDL_BS_MAC);
	return 0;
}

int spardl_bs_error_check(const struct spardl_bs_hdr *h)
{
	if (h->type != SPARDL_BS_ERROR && h->type != SPARDL_BS_REFUSED)
		return -1;
	if (h->len > SPARDL_BS_TEXT_MAX || h->code == 0 || h->code >= 4096)
		return -1;
	return 0;
}

void spardl_bs_text_copy(char *dst, size_t cap, const uint8_t *src, size_t len)
{
	size_t i, n = 0;

	if (!cap)
		return;
	/* Printable text only: a peer's bytes end up in logs and terminals. */
	for (i = 0; i < len && n + 1 < cap; i++) {
		uint8_t c = src[i];

		if (c == 0)
			break;
		dst[n++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
	}
	dst[n] = '\0';
}

int32_t spardl_bs_status_decode(const uint8_t *p)
{
	int32_t v = (int32_t)spardl_bs_get32(p);

	return v <= 0 && v >= -4095 ? v : -EPROTO;
}

int spardl_bs_mac(const uint8_t *key, size_t key_len, const char *label, const uint8_t *hello,
		  const uint8_t *nonce, uint8_t out[SPARDL_BS_MAC])
{
	uint8_t msg[64 + SPARDL_BS_HELLO_LEN + SPARDL_BS_NONCE];
	size_t ll = strlen(label);
	unsigned int olen = 0;

	if (ll > 64 || key_len > (size_t)INT32_MAX)
		return spardl_error_quiet(-EINVAL, "internal: MAC label or key too long");
	/* The label (distinct per direction) keeps a proof from being
	 * reflected back; hello and nonce bind it to this connection. */
	memcpy(msg, label, ll);
	memcpy(msg + ll, hello, SPARDL_BS_HELLO_LEN);
	memcpy(msg + ll + SPARDL_BS_HELLO_LEN, nonce, SPARDL_BS_NONCE);
	if (!HMAC(EVP_sha256(), key, (int)key_len, msg, ll + SPARDL_BS_HELLO_LEN + SPARDL_BS_NONCE, out, &olen) ||
	    olen != SPARDL_BS_MAC)
		return spardl_error_quiet(-EIO, "HMAC-SHA256 failed in libcrypto");
	return 0;
}

int spardl_bs_digest(const char *label, const void *data, size_t len, uint8_t out[32])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned int olen = 0;
	int ok;

	if (!ctx)
		return spardl_error_quiet(-ENOMEM, "out of memory for a SHA-256 context");
	ok = EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) && EVP_DigestUpdate(ctx, label, strlen(label) + 1) &&
	     EVP_DigestUpdate(ctx, data, len) && EVP_DigestFinal_ex(ctx, out, &olen) && olen == 32;
	EVP_MD_CTX_free(ctx);
	return ok ? 0 : spardl_error_quiet(-EIO, "SHA-256 failed in libcrypto");
}

int spardl_bs_equal(const uint8_t *a, const uint8_t *b, size_t len)
{
	return CRYPTO_memcmp(a, b, len) == 0;
}

int spardl_bs_random(void *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t r = getrandom((uint8_t *)buf + got, len - got, 0);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return spardl_error_quiet(-errno, "getrandom failed: %s", strerror(errno));
		}
		got += (size_t)r;
	}
	return 0;
}
