/* SPDX-License-Identifier: MIT */
/* Logging to stderr and the thread-local last-error message. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <spardl/spardl.h>

#include "env.h"
#include "log.h"

static int log_rank = -1;
static int log_level = -1;
static __thread char last_error[1024];

void spardl_log_set_rank(int rank)
{
	log_rank = rank;
}

static int level_from_env(void)
{
	int level;

	/* The logger cannot fail: a malformed value keeps warn, so that the
	 * error spardl_env_check() then reports from spardl_comm_create shows. */
	if (spardl_env_enum_quiet("SPARDL_DEBUG", &level))
		return SPARDL_LOG_WARN;
	return level;
}

int spardl_log_enabled(enum spardl_log_level level)
{
	int cur = __atomic_load_n(&log_level, __ATOMIC_RELAXED);

	if (cur < 0) {
		cur = level_from_env();
		__atomic_store_n(&log_level, cur, __ATOMIC_RELAXED);
	}
	return (int)level <= cur;
}

static void vlog(enum spardl_log_level level, const char *fmt, va_list ap)
{
	static const char *names[] = { "", "WARN", "INFO", "DEBUG" };
	char line[1400];
	int off;

	off = log_rank >= 0 ?
		      snprintf(line, sizeof(line), "spardl rank %d %s: ", log_rank, names[level]) :
		      snprintf(line, sizeof(line), "spardl %s: ", names[level]);
	vsnprintf(line + off, sizeof(line) - (size_t)off - 1, fmt, ap);
	/* One write per line so ranks sharing a terminal do not interleave. */
	strcat(line, "\n");
	fputs(line, stderr);
}

void spardl_log(enum spardl_log_level level, const char *fmt, ...)
{
	va_list ap;

	if (!spardl_log_enabled(level))
		return;
	va_start(ap, fmt);
	vlog(level, fmt, ap);
	va_end(ap);
}

static int verror(int err, int loud, const char *fmt, va_list ap)
{
	va_list ap2;

	va_copy(ap2, ap);
	vsnprintf(last_error, sizeof(last_error), fmt, ap);
	if (loud && spardl_log_enabled(SPARDL_LOG_WARN))
		vlog(SPARDL_LOG_WARN, fmt, ap2);
	va_end(ap2);
	return err;
}

int spardl_error(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	verror(err, 1, fmt, ap);
	va_end(ap);
	return err;
}

int spardl_error_quiet(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	verror(err, 0, fmt, ap);
	va_end(ap);
	return err;
}

int spardl_error_wrap(int err, const char *fmt, ...)
{
	char prev[sizeof(last_error)], ctx[512];
	va_list ap;

	snprintf(prev, sizeof(prev), "%s", last_error);
	va_start(ap, fmt);
	vsnprintf(ctx, sizeof(ctx), fmt, ap);
	va_end(ap);
	return spardl_error(err, "%s: %s", ctx, prev);
}

SPARDL_API const char *spardl_last_error(void)
{
	return last_error;
}

SPARDL_API const char *spardl_strerror(int err)
{
	int e = err < 0 ? -err : err;

	if (err == 0)
		return "success";
	switch (e) {
	case SPARDL_ERR_MISMATCH:
		return "ranks passed different parameters to a collective call";
	case SPARDL_ERR_PROTOCOL:
		return "a peer wrote data the schedule did not expect";
	case SPARDL_ERR_PLAN_FAILED:
		return "an earlier call on this plan failed; destroy and recreate it";
	case SPARDL_ERR_ENV:
		return "invalid environment variable";
	default:
		break;
	}
	if (e < SPARDL_ERR_BASE && strerrordesc_np(e))
		return strerrordesc_np(e);
	return "unknown spardl error";
}
