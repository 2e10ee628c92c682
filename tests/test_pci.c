/* SPDX-License-Identifier: MIT */
/* PCI distance between a GPU and an RDMA device, from sysfs paths (spardl-verbs devices). */
#include <check.h>
#include <errno.h>

#include "pci.h"
#include "unit.h"

#define ROOT0 "/sys/devices/pci0000:00"
#define ROOT1 "/sys/devices/pci0000:80"

START_TEST(test_pci_same_switch)
{
	/* Root port, switch upstream port, two downstream ports. */
	ck_assert_int_eq(spardl_pci_distance(ROOT0 "/0000:00:01.0/0000:01:00.0/0000:02:08.0/0000:03:00.0", 0,
					     ROOT0 "/0000:00:01.0/0000:01:00.0/0000:02:10.0/0000:04:00.0", 0),
			 SPARDL_PCI_PIX);
	/* Two functions of one device behind one bridge. */
	ck_assert_int_eq(spardl_pci_distance(ROOT0 "/0000:00:01.0/0000:01:00.0", 0,
					     ROOT0 "/0000:00:01.0/0000:01:00.1", 0),
			 SPARDL_PCI_PIX);
}
END_TEST

START_TEST(test_pci_bridges)
{
	/* Two switch levels on one side. */
	ck_assert_int_eq(spardl_pci_distance(
				 ROOT0 "/0000:00:01.0/0000:01:00.0/0000:02:08.0/0000:03:00.0/0000:04:00.0/0000:05:00.0", 0,
				 ROOT0 "/0000:00:01.0/0000:01:00.0/0000:02:10.0/0000:06:00.0", 0),
			 SPARDL_PCI_PXB);
}
END_TEST

START_TEST(test_pci_host_bridge)
{
	/* Different root ports of one root complex. */
	ck_assert_int_eq(spardl_pci_distance(ROOT0 "/0000:00:01.0/0000:01:00.0", 0, ROOT0 "/0000:00:02.0/0000:02:00.0", 0),
			 SPARDL_PCI_PHB);
	/* Different root complexes on one NUMA node, or with NUMA unknown on both. */
	ck_assert_int_eq(spardl_pci_distance(ROOT0 "/0000:00:01.0/0000:01:00.0", 1, ROOT1 "/0000:80:01.0/0000:81:00.0", 1),
			 SPARDL_PCI_PHB);
	ck_assert_int_eq(spardl_pci_distance(ROOT0 "/0000:00:01.0/0000:01:00.0", -1, ROOT1 "/0000:80:01.0/0000:81:00.0", -1),
			 SPARDL_PCI_PHB);
}
END_TEST

START_TEST(test_pci_sys)
{
	ck_assert_int_eq(spardl_pci_distance(ROOT0 "/0000:00:01.0/0000:01:00.0", 0, ROOT1 "/0000:80:01.0/0000:81:00.0", 1),
			 SPARDL_PCI_SYS);
	ck_assert_str_eq(spardl_pci_dist_name(SPARDL_PCI_SYS), "SYS");
	ck_assert_str_eq(spardl_pci_dist_what(SPARDL_PCI_SYS), "across NUMA nodes");
}
END_TEST

START_TEST(test_pci_not_pci)
{
	char out[64];

	/* A software RDMA device has no PCI path. */
	ck_assert_int_eq(spardl_pci_distance("/sys/devices/virtual/infiniband/rxe0", -1, ROOT0 "/0000:00:01.0", 0),
			 SPARDL_PCI_UNKNOWN);
	ck_assert_int_eq(spardl_pci_distance(ROOT0, 0, ROOT0 "/0000:00:01.0", 0), SPARDL_PCI_UNKNOWN);
	ck_assert_int_eq(spardl_pci_resolve("/nonexistent/device", out, sizeof(out)), -ENOENT);
	ck_assert_int_eq(spardl_pci_numa("/nonexistent"), -1);
}
END_TEST

static Suite *pci_suite(void)
{
	Suite *s = suite_create("pci");
	TCase *tc = tcase_create("distance");

	tcase_add_test(tc, test_pci_same_switch);
	tcase_add_test(tc, test_pci_bridges);
	tcase_add_test(tc, test_pci_host_bridge);
	tcase_add_test(tc, test_pci_sys);
	tcase_add_test(tc, test_pci_not_pci);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return run_unit_suite(pci_suite());
}
