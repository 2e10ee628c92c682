/* SPDX-License-Identifier: MIT */
/* Float addition in a fixed operand order, NaNs included: every rank and the reference get the same bits. */
#ifndef SPARDL_FP_H
#define SPARDL_FP_H

#include <stdint.h>
#include <string.h>

/*
 * a + b, where a NaN operand decides the result the way the hardware does
 * for the first operand (x86 SSE/AVX, Arm): a's NaN if a is one, else b's,
 * quieted; Inf + -Inf gives the hardware's default NaN. C lets a compiler
 * swap the operands of + (and GCC does), which changes which NaN comes out
 * when both are NaN, so SPEC's order (acc = g + residual, acc += received,
 * lists summed in order) is spelled out. Branch-free: loops still vectorize.
 */
static inline float spardl_add(float a, float b)
{
	float s = a + b;
	uint32_t ua, ub, us, r;
	int na, nb;

	memcpy(&ua, &a, sizeof(ua));
	memcpy(&ub, &b, sizeof(ub));
	memcpy(&us, &s, sizeof(us));
	na = (ua & 0x7fffffffu) > 0x7f800000u;
	nb = (ub & 0x7fffffffu) > 0x7f800000u;
	r = na ? (ua | 0x00400000u) : nb ? (ub | 0x00400000u) : us;
	memcpy(&s, &r, sizeof(s));
	return s;
}

#endif
