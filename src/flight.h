/* SPDX-License-Identifier: MIT */
/*
 * The flight recorder: every plan keeps its last SPARDL_FLIGHT_EVENTS
 * events (steps entered, waits begun, messages arrived, writes posted) in a
 * ring, always on. When a call fails the ring is dumped: the last events to
 * the log (at warn level), all of them to a file in SPARDL_TRACE_DIR when
 * that is set, so the step each rank was waiting in, and what it had seen
 * before, can be read after the fact.
 */
#ifndef SPARDL_FLIGHT_H
#define SPARDL_FLIGHT_H

#include <stdint.h>

#define SPARDL_FLIGHT_EVENTS 256u

enum spardl_flight_kind {
	SPARDL_FL_STEP = 0, /* step entered: slot = op code */
	SPARDL_FL_WAIT,     /* a receive slot is not complete yet: waiting for peer */
	SPARDL_FL_ARRIVED,  /* a receive slot completed: bytes received */
	SPARDL_FL_POST,     /* a write (one piece) posted to peer: bytes, imm */
};

struct spardl_flight_ev {
	double t;      /* seconds, CLOCK_MONOTONIC */
	uint64_t call;
	uint64_t bytes;
	uint32_t step;
	uint32_t slot; /* receive slot (WAIT, ARRIVED), op code (STEP) */
	uint32_t imm;
	int32_t peer;
	uint16_t round;
	uint8_t kind;
	uint8_t phase;
};

struct spardl_flight {
	uint64_t n; /* events recorded so far; the ring holds the last ones */
	struct spardl_flight_ev ev[SPARDL_FLIGHT_EVENTS];
};

static inline struct spardl_flight_ev *spardl_flight_next(struct spardl_flight *f)
{
	return &f->ev[f->n++ % SPARDL_FLIGHT_EVENTS];
}

/* Dump the ring after a failed call: why is the call's error message. */
void spardl_flight_dump(const struct spardl_flight *f, int rank, int size, const char *why);

#endif
