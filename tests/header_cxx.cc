/* SPDX-License-Identifier: MIT */
// The public header compiles alone as C++.
#include <spardl/spardl.h>

int main()
{
	spardl_plan_params pp = {};
	return static_cast<int>(pp.count) + (SPARDL_VERSION_MAJOR < 0);
}
