/* SPDX-License-Identifier: MIT */
/* Serial reference of SPEC.md: simulates one step of all P ranks in one process, for the tests. */
#ifndef SPARDL_TESTS_REFERENCE_H
#define SPARDL_TESTS_REFERENCE_H

#include <stddef.h>

/* Written from the specification alone, never from the library's sources,
 * so that the tests compare two independent readings of the same text. */
struct ref_params {
	int size;          /* P */
	size_t n;          /* elements */
	double density;    /* k = ceil(density * n) computed in double, at least 1 */
	int algo;          /* SPARDL_ALGO_SPARDL, _DENSE, _TOPKA, _GTOPK from spardl.h */
	int teams;         /* d (SparDL only; ignored, i.e. 1, otherwise) */
	int sag;           /* SPARDL_SAG_BRUCK / SPARDL_SAG_RECURSIVE */
	int residual;      /* 1: residual kept; 0: residual stays zero and acc = g */
	int average;       /* 1: result divided by P */
};

/* One step for all ranks. g[w] (n floats) is rank w's gradient (input only);
 * res[w] (n floats) is rank w's residual, updated in place (set to zero when
 * residual == 0, its old content then ignored);
 * out[w] (n floats) receives rank w's dense result. out[w] may alias g[w].
 * Returns 0, or -1 for invalid params (size < 1, n == 0, density not in
 * (0, 1], teams not dividing size, R-SAG with teams not a power of two,
 * gTopk with size not a power of two, unknown algo or sag). */
int ref_step(const struct ref_params *p, const float *const *g, float *const *res,
	     float *const *out);

#endif
