/* SPDX-License-Identifier: MIT */
/* Environment variables: one table of names, defaults, ranges and help (src/env.c), and checked getters. */
#ifndef SPARDL_ENV_H
#define SPARDL_ENV_H

#include <stddef.h>
#include <stdio.h>

/* Every name passed here must be in the table in src/env.c: a missing one
 * (or one read as the wrong kind) fails an assert, and without asserts
 * returns -EINVAL (NULL for spardl_env_str). Defaults and ranges come from
 * the table; callers never repeat them. */

/* The raw value of a variable of any kind, NULL when unset or empty:
 * string and path ones, or whether a number is set at all. */
const char *spardl_env_str(const char *name);

/* An integer variable in *out: its value, or the table's default when unset.
 * -SPARDL_ERR_ENV, with a message naming the variable, its value and the
 * accepted range, when malformed; -ENOENT (recorded quietly) when unset and
 * the table has no default. *out is written only on success. */
int spardl_env_long(const char *name, long *out);
int spardl_env_int(const char *name, int *out);
/* Same, with the upper bound narrowed to hi (a bound known only at run
 * time, such as SPARDL_SIZE - 1 for a rank). */
int spardl_env_int_max(const char *name, int hi, int *out);

/* A word-valued variable: the value the table gives its word (aliases
 * included), or the default's. Errors as spardl_env_long. */
int spardl_env_enum(const char *name, int *out);
/* Same, as the canonical word (a static string): "SHM" gives "shm". */
int spardl_env_word(const char *name, const char **out);
/* spardl_env_enum for the logger: records and logs nothing; a malformed
 * value gives -SPARDL_ERR_ENV and leaves *out alone. */
int spardl_env_enum_quiet(const char *name, int *out);

/* Check the SPARDL_* variables set in the environment against the table:
 * -SPARDL_ERR_ENV naming the first malformed one; an unknown SPARDL_* name
 * is a WARN line suggesting the closest known one, not an error. Checked
 * where they are read instead: those a field of struct spardl_comm_params
 * can replace (SPARDL_RANK, _SIZE, _TIMEOUT, _TRANSPORT...), so that a
 * parameter makes the variable irrelevant, and string-valued ones (an
 * address, a device list, a key file, uids), whose users parse them. */
int spardl_env_check(void);

/* The variables' tables as markdown, for docs/ENVIRONMENT.md
 * (`spardl-verbs env --markdown`). 0, or -EIO when f cannot be written. */
int spardl_env_markdown(FILE *f);

/* The table's i-th name, NULL past the end (for tests). */
const char *spardl_env_name(size_t i);

#endif
