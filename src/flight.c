// SPDX-License-Identifier: MIT
/* The flight recorder's dump (flight.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "env.h"
#include "flight.h"
#include "log.h"
#include "schedule.h"

/* Events shown in the log; the file gets the whole ring. */
#define LOG_EVENTS 12u

static void render(FILE *f, const struct spardl_flight_ev *e, double t0)
{
	fprintf(f, "  %+10.6f s call %llu step %u %s %u: ", e->t - t0, (unsigned long long)e->call, e->step,
		spardl_phase_name(e->phase), e->round);
	switch (e->kind) {
	case SPARDL_FL_STEP:
		fprintf(f, "enter (%s)\n", spardl_op_name(e->slot));
		break;
	case SPARDL_FL_WAIT:
		fprintf(f, "wait for rank %d (receive slot %u)\n", e->peer, e->slot);
		break;
	case SPARDL_FL_ARRIVED:
		fprintf(f, "arrived from rank %d (receive slot %u, %llu B)\n", e->peer, e->slot,
			(unsigned long long)e->bytes);
		break;
	case SPARDL_FL_POST:
		fprintf(f, "write %llu B to rank %d (imm 0x%08x)\n", (unsigned long long)e->bytes, e->peer, e->imm);
		break;
	default:
		fprintf(f, "?\n");
		break;
	}
}

static void dump_to(FILE *f, const struct spardl_flight *fl, uint64_t first, double t0)
{
	uint64_t i;

	for (i = first; i < fl->n; i++)
		render(f, &fl->ev[i % SPARDL_FLIGHT_EVENTS], t0);
}

void spardl_flight_dump(const struct spardl_flight *fl, int rank, int size, const char *why)
{
	uint64_t kept = fl->n < SPARDL_FLIGHT_EVENTS ? fl->n : SPARDL_FLIGHT_EVENTS;
	const char *dir = spardl_env_str("SPARDL_TRACE_DIR");
	double t0 = fl->n ? fl->ev[(fl->n - 1) % SPARDL_FLIGHT_EVENTS].t : 0;

	if (spardl_log_enabled(SPARDL_LOG_WARN)) {
		uint64_t shown = kept < LOG_EVENTS ? kept : LOG_EVENTS;
		char *buf = NULL;
		size_t len = 0;
		FILE *m = open_memstream(&buf, &len);

		if (m) {
			dump_to(m, fl, fl->n - shown, t0);
			if (fclose(m) == 0)
				SPARDL_WARN("flight recorder, the last %llu of %llu events before the failure (times "
					    "relative to the last):\n%s%s",
					    (unsigned long long)shown, (unsigned long long)fl->n, buf ? buf : "",
					    dir ? "" : "  (set SPARDL_TRACE_DIR=DIR to keep the last 256 in a file)");
		}
		free(buf);
	}
	if (dir) {
		char path[4096];
		int fd;
		FILE *f;

		snprintf(path, sizeof(path), "%s/spardl-flight-%d-r%d.txt", dir, (int)getpid(), rank);
		fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
		f = fd >= 0 ? fdopen(fd, "w") : NULL;
		if (!f) {
			SPARDL_WARN("flight recorder: cannot write %s: %s", path, strerror(errno));
			if (fd >= 0)
				close(fd);
			return;
		}
		fprintf(f, "spardl flight recorder: rank %d of %d, pid %d\nfailure: %s\nthe last %llu of %llu events "
			   "(times relative to the last):\n",
			rank, size, (int)getpid(), why, (unsigned long long)kept, (unsigned long long)fl->n);
		dump_to(f, fl, fl->n - kept, t0);
		if (fclose(f))
			SPARDL_WARN("flight recorder: writing %s failed: %s", path, strerror(errno));
	}
}
