/* SPDX-License-Identifier: MIT */
/* The public header compiles alone as strict C99. */
#include <spardl/spardl.h>

int main(void)
{
	struct spardl_plan_params pp;
	struct spardl_comm_params cp;

	(void)pp;
	(void)cp;
	return SPARDL_VERSION_MAJOR < 0;
}
