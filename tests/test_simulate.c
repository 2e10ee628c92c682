// SPDX-License-Identifier: MIT
/* The simulator (spardl_simulate) against closed-form costs. */
#include <errno.h>
#include <math.h>

#include <spardl/spardl.h>

#include "unit.h"

static void model(struct spardl_sim_model *m, double alpha, double beta)
{
	spardl_sim_model_init(m);
	m->alpha = alpha;
	m->beta = beta;
}

static void params(struct spardl_plan_params *p, enum spardl_algo algo, size_t n, double d, int teams)
{
	spardl_plan_params_init(p);
	p->algo = algo;
	p->count = n;
	p->density = d;
	p->teams = teams;
}

static void near(double got, double want)
{
	ck_assert_msg(fabs(got - want) <= 1e-9 * want + 1e-15, "got %.12g s, want %.12g s", got, want);
}

/* The dense ring: 2(P-1) rounds of one chunk each, alpha + chunk / beta. */
START_TEST(test_dense_ring)
{
	struct spardl_plan_params p;
	struct spardl_sim_model m;
	struct spardl_sim_result r;
	int sizes[] = { 2, 3, 4, 8 }, i;

	model(&m, 1e-6, 1e9);
	for (i = 0; i < 4; i++) {
		int P = sizes[i];
		size_t n = 1024 * (size_t)P;

		params(&p, SPARDL_ALGO_DENSE, n, 0.01, 1);
		ck_assert_int_eq(spardl_simulate(&p, P, &m, &r), 0);
		ck_assert_int_eq(r.exact, 1);
		near(r.time, 2.0 * (P - 1) * (1e-6 + 4096 / 1e9));
		near(r.phase_time[4] + r.phase_time[5], r.time); /* all of it in rs and rag */
		near(r.bytes_per_rank, 2.0 * (P - 1) * 4096);
		ck_assert_double_eq(r.messages_per_rank, 2.0 * (P - 1));
	}
}
END_TEST

/* Too many steps to simulate every rank: rank 0 with symmetric peers
 * gives the ring's closed form too. */
START_TEST(test_dense_ring_symmetric)
{
	struct spardl_plan_params p;
	struct spardl_sim_model m;
	struct spardl_sim_result r;
	int P = 4096;

	model(&m, 2e-6, 12.5e9);
	params(&p, SPARDL_ALGO_DENSE, (size_t)P * 1000, 0.01, 1);
	ck_assert_int_eq(spardl_simulate(&p, P, &m, &r), 0);
	ck_assert_int_eq(r.exact, 0);
	near(r.time, 2.0 * (P - 1) * (2e-6 + 4000 / 12.5e9));
}
END_TEST

/* TopkA: a Bruck all-gather of one k-pair list per rank; at P = 4 two
 * rounds of 1 and 2 lists (8-byte header, 8 bytes per pair). */
START_TEST(test_topka_bruck)
{
	struct spardl_plan_params p;
	struct spardl_sim_model m;
	struct spardl_sim_result r;
	double list = 8 + 8 * 41; /* k = ceil(0.01 * 4096) */

	model(&m, 1e-6, 1e9);
	params(&p, SPARDL_ALGO_TOPKA, 4096, 0.01, 1);
	ck_assert_int_eq(spardl_simulate(&p, 4, &m, &r), 0);
	near(r.time, 2e-6 + 3 * list / 1e9);
	near(r.bytes_per_rank, 3 * list);
}
END_TEST

/* SparDL at P = 2: one SRS exchange of one block (k/2 pairs), one
 * all-gather exchange of the owned block's list. */
START_TEST(test_spardl_two)
{
	struct spardl_plan_params p;
	struct spardl_sim_model m;
	struct spardl_sim_result r;
	double msg = 8 + 8 * 500.0; /* k = 1000, two blocks of budget 500 */

	model(&m, 3e-6, 2e9);
	params(&p, SPARDL_ALGO_SPARDL, 100000, 0.01, 1);
	ck_assert_int_eq(spardl_simulate(&p, 2, &m, &r), 0);
	near(r.time, 2 * (3e-6 + msg / 2e9));
	near(r.phase_time[0], 3e-6 + msg / 2e9);
	near(r.phase_time[2], 3e-6 + msg / 2e9);
}
END_TEST

/* Back-to-back messages each pay alpha: sequential SRS sends one message
 * per block, batched one per round. */
START_TEST(test_alpha_per_message)
{
	struct spardl_plan_params p;
	struct spardl_sim_model m;
	struct spardl_sim_result b, s;

	model(&m, 1e-3, 1e15);
	params(&p, SPARDL_ALGO_SPARDL, 1 << 16, 0.01, 1);
	ck_assert_int_eq(spardl_simulate(&p, 8, &m, &b), 0);
	p.srs = SPARDL_SRS_SEQUENTIAL;
	ck_assert_int_eq(spardl_simulate(&p, 8, &m, &s), 0);
	ck_assert_double_gt(s.messages_per_rank, b.messages_per_rank);
	ck_assert_double_gt(s.time, b.time + 1e-3 * (s.messages_per_rank - b.messages_per_rank) * 0.5);
}
END_TEST

/* One node: every message is among its ranks and free. */
START_TEST(test_one_node)
{
	struct spardl_plan_params p;
	struct spardl_sim_model m;
	struct spardl_sim_result r;

	model(&m, 1e-6, 1e9);
	m.ranks_per_node = 8;
	params(&p, SPARDL_ALGO_SPARDL, 1 << 16, 0.01, 2);
	ck_assert_int_eq(spardl_simulate(&p, 8, &m, &r), 0);
	ck_assert_double_eq(r.time, 0);
	/* Two nodes of two ranks sharing a NIC: in TopkA's second round both
	 * ranks of a node send to the other node, one after the other. */
	m.ranks_per_node = 2;
	params(&p, SPARDL_ALGO_TOPKA, 1 << 16, 0.01, 1);
	{
		struct spardl_sim_result shared, alone;

		ck_assert_int_eq(spardl_simulate(&p, 4, &m, &shared), 0);
		m.ranks_per_node = 1;
		ck_assert_int_eq(spardl_simulate(&p, 4, &m, &alone), 0);
		ck_assert_double_gt(shared.time, 0);
		ck_assert_double_gt(shared.time, alone.time);
	}
}
END_TEST

/* gamma: with a residual (the default), exactly one streaming pass over
 * n elements (the accumulate pass, which also writes the output's zeros),
 * in the local row; without one, the output's pass too. */
START_TEST(test_gamma)
{
	struct spardl_plan_params p;
	struct spardl_sim_model m;
	struct spardl_sim_result r0, r1;
	size_t n = 1 << 20;

	model(&m, 1e-6, 1e9);
	params(&p, SPARDL_ALGO_SPARDL, n, 0.01, 1);
	ck_assert_int_eq(spardl_simulate(&p, 4, &m, &r0), 0);
	m.gamma = 1e-9;
	ck_assert_int_eq(spardl_simulate(&p, 4, &m, &r1), 0);
	near(r1.time - r0.time, (double)n * 1e-9);
	ck_assert_double_ge(r1.phase_time[6], (double)n * 1e-9 * (1 - 1e-9));
	p.residual = 0;
	m.gamma = 0;
	ck_assert_int_eq(spardl_simulate(&p, 4, &m, &r0), 0);
	m.gamma = 1e-9;
	ck_assert_int_eq(spardl_simulate(&p, 4, &m, &r1), 0);
	near(r1.time - r0.time, 2 * (double)n * 1e-9);
}
END_TEST

/* teams = 0: the divisor with the least simulated time. */
START_TEST(test_auto_teams)
{
	struct spardl_plan_params p;
	struct spardl_sim_model m;
	struct spardl_sim_result best, r;
	int d;

	model(&m, 50e-6, 1e9);
	params(&p, SPARDL_ALGO_SPARDL, 1 << 20, 0.001, 0);
	ck_assert_int_eq(spardl_simulate(&p, 12, &m, &best), 0);
	ck_assert_int_ge(best.teams, 1);
	ck_assert_int_eq(12 % best.teams, 0);
	for (d = 1; d <= 12; d++) {
		if (12 % d)
			continue;
		p.teams = d;
		ck_assert_int_eq(spardl_simulate(&p, 12, &m, &r), 0);
		ck_assert_double_ge(r.time * (1 + 1e-6), best.time);
	}
}
END_TEST

/* The published comparison: P = 256 at 100 Gb/s, alpha 2 us, n = 25M, 1%.
 * Ok-Topk's cost is at most (2P + 2 log2 P) alpha + 6k(P-1)/P words of 4 B;
 * the lower bound moves 2k(P-1)/P words. */
START_TEST(test_oktopk_comparison)
{
	struct spardl_plan_params p;
	struct spardl_sim_model m;
	struct spardl_sim_result r;
	double P = 256, k = 250000, okt, lb;

	model(&m, 2e-6, 12.5e9);
	params(&p, SPARDL_ALGO_SPARDL, 25000000, 0.01, 1);
	ck_assert_int_eq(spardl_simulate(&p, 256, &m, &r), 0);
	okt = (2 * P + 2 * log2(P)) * 2e-6 + 6 * k * (P - 1) / P * 4 / 12.5e9;
	lb = 2 * k * (P - 1) / P * 4;
	ck_assert_msg(okt / r.time >= 1.5, "SparDL %.4g ms, Ok-Topk %.4g ms", r.time * 1e3, okt * 1e3);
	ck_assert_msg(r.bytes_per_rank <= 2.01 * lb, "%.0f B per rank, lower bound %.0f B", r.bytes_per_rank, lb);
}
END_TEST

START_TEST(test_bad_input)
{
	struct spardl_plan_params p;
	struct spardl_sim_model m;
	struct spardl_sim_result r;

	model(&m, 1e-6, 1e9);
	params(&p, SPARDL_ALGO_GTOPK, 1000, 0.01, 1);
	ck_assert_int_eq(spardl_simulate(&p, 6, &m, &r), -EINVAL);
	ck_assert_ptr_nonnull(strstr(spardl_last_error(), "power-of-two"));
	params(&p, SPARDL_ALGO_SPARDL, 1000, 0.01, 1);
	m.beta = 0;
	ck_assert_int_eq(spardl_simulate(&p, 4, &m, &r), -EINVAL);
	ck_assert_ptr_nonnull(strstr(spardl_last_error(), "beta"));
	model(&m, 1e-6, 1e9);
	m.ranks_per_node = 3;
	ck_assert_int_eq(spardl_simulate(&p, 4, &m, &r), -EINVAL);
	ck_assert_ptr_nonnull(strstr(spardl_last_error(), "ranks_per_node"));
	ck_assert_int_eq(spardl_simulate(&p, 0, &m, &r), -EINVAL);
	ck_assert_int_eq(spardl_simulate_sized(&p, 4, NULL, &r, 8), -EINVAL);
	ck_assert_int_eq(spardl_simulate(&p, 4, NULL, &r), 0); /* NULL model: the defaults */
}
END_TEST

static Suite *simulate_suite(void)
{
	Suite *s = suite_create("simulate");
	TCase *tc = tcase_create("closed form");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_dense_ring);
	tcase_add_test(tc, test_dense_ring_symmetric);
	tcase_add_test(tc, test_topka_bruck);
	tcase_add_test(tc, test_spardl_two);
	tcase_add_test(tc, test_alpha_per_message);
	tcase_add_test(tc, test_one_node);
	tcase_add_test(tc, test_gamma);
	tcase_add_test(tc, test_auto_teams);
	tcase_add_test(tc, test_oktopk_comparison);
	tcase_add_test(tc, test_bad_input);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return run_unit_suite(simulate_suite());
}
