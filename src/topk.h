/* Deterministic top-k selection (SPEC section 3) on dense blocks and on sparse lists. */
#ifndef SPARDL_TOPK_H
#define SPARDL_TOPK_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Ordering key: |v| as bits, every NaN collapsed to one key above +Inf.
 * Larger key ranks first; key 0 (+0, -0) is never selected. */
static inline uint32_t spardl_key(float v)
{
	uint32_t u;

	memcpy(&u, &v, sizeof(u));
	u &= 0x7fffffffu;
	return u > 0x7f800000u ? 0x7f800001u : u;
}

/* A selection threshold: entry i is selected iff key > t.key, or
 * key == t.key and it is among the first t.ties such entries (smaller index
 * wins ties). {0, 0} selects every non-zero entry. */
struct spardl_thr {
	uint32_t key;
	size_t ties;
};

/* Exact threshold of topk(v[0..len), m). */
void spardl_topk_threshold(const float *v, size_t len, size_t m, struct spardl_thr *t);

/* Scratch for spardl_topk_block(), sized at plan creation for the largest m. */
struct spardl_topk_ws {
	uint32_t *cand_idx;
	float *cand_val;
	size_t cap;
};

int spardl_topk_ws_init(struct spardl_topk_ws *ws, size_t max_m);
void spardl_topk_ws_fini(struct spardl_topk_ws *ws);

/* topk(x[0..len), m): writes the selected block-local indices in ascending
 * order and their values, sets those entries of x to 0, returns the count
 * (<= m; fewer when x has fewer non-zeros). */
size_t spardl_topk_block(float *x, size_t len, size_t m, uint32_t *idx, float *val,
			 struct spardl_topk_ws *ws);

#endif
