/* The shared main() of the Check unit suites: TAP to stdout for meson, exit 1 on any failure. */
#ifndef SPARDL_TESTS_UNIT_H
#define SPARDL_TESTS_UNIT_H

#include <stdlib.h>

#include <check.h>

static inline int run_unit_suite(Suite *s)
{
	SRunner *sr = srunner_create(s);
	int failed;

	/* Expected failures would flood stderr; SPARDL_DEBUG=warn shows them. */
	setenv("SPARDL_DEBUG", "none", 0);
	srunner_set_tap(sr, "-");
	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}

#endif
