/* SPDX-License-Identifier: MIT */
#ifndef SPARDL_TOOLS_VERBS_TRACE_H
#define SPARDL_TOOLS_VERBS_TRACE_H

/* spardl-verbs trace ARGS (argv[0] is "trace"); returns the exit status. */
int spardl_verbs_trace(int argc, char **argv);

#endif
