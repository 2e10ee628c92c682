/* SPDX-License-Identifier: MIT */
#ifndef SPARDL_TOOLS_VERBS_SCHEDULE_H
#define SPARDL_TOOLS_VERBS_SCHEDULE_H

/* spardl-verbs schedule ARGS (argv[0] is "schedule"); returns the exit status. */
int spardl_verbs_schedule(int argc, char **argv);

#endif
