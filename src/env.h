/* Environment variables: one table of names, defaults and help, and checked getters. */
#ifndef SPARDL_ENV_H
#define SPARDL_ENV_H

/* Value of a variable, NULL when unset or empty. */
const char *spardl_env_str(const char *name);

/* Parse an integer variable in [lo, hi]; *out = def when unset.
 * Returns -SPARDL_ERR_ENV with a message naming the variable when malformed. */
int spardl_env_long(const char *name, long def, long lo, long hi, long *out);

#endif
