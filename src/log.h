/* SPDX-License-Identifier: MIT */
/* Logging and the thread-local last-error message. */
#ifndef SPARDL_LOG_H
#define SPARDL_LOG_H

#include <stdarg.h>

enum spardl_log_level {
	SPARDL_LOG_NONE = 0,
	SPARDL_LOG_WARN = 1,
	SPARDL_LOG_INFO = 2,
	SPARDL_LOG_DEBUG = 3,
};

/* Rank shown in the log prefix (-1 before a communicator exists). */
void spardl_log_set_rank(int rank);
int spardl_log_enabled(enum spardl_log_level level);
void spardl_log(enum spardl_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Record err (negative) with a message for spardl_last_error(), log it once
 * at WARN and return err, so callers can write `return spardl_error(...)`. */
int spardl_error(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Same, but not logged: for errors a caller may handle (probing). */
int spardl_error_quiet(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Put context in front of the message a callee recorded quietly, then log
 * the whole once: "context: callee's message". */
int spardl_error_wrap(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define SPARDL_WARN(...) spardl_log(SPARDL_LOG_WARN, __VA_ARGS__)
#define SPARDL_INFO(...) spardl_log(SPARDL_LOG_INFO, __VA_ARGS__)
#define SPARDL_DEBUG(...)                                   \
	do {                                                \
		if (spardl_log_enabled(SPARDL_LOG_DEBUG))   \
			spardl_log(SPARDL_LOG_DEBUG, __VA_ARGS__); \
	} while (0)

#endif
