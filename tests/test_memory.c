/* The training-memory estimate (hy_block_ops.train_bytes, hy_model_train_memory) against the bytes
 * really allocated (hy_mem_current / hy_mem_peak): every registered block at two shapes, and whole
 * models with their optimizer through a training step. */
#include "core/error.h"
#include "core/mem.h"
#include "core/timer.h"
#include "models/model.h"
#include "models/optim.h"
#include "tests/testutil.h"
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* Measures a training forward + backward of a standalone layer of block `name` (default options)
 * on (B, T) and compares it with the block's train_bytes. What is allocated after backward must
 * be `kept` within 1% (the small structs). The peak must not exceed kept + scratch; scratch counts
 * every thread's buffers at once, and threads that allocate their own inside a parallel region
 * may not overlap in time, so scratch may be up to `threads` times what the peak shows, not more. */
static void check_block(const char *name, int d, int B, int T) {
    hy_layer L;
    tu_layer(&L, name, d, NULL, 0, 3);
    size_t rows = (size_t)B * T;
    float *x = hy_malloc(rows * d * sizeof(float)), *y = hy_malloc(rows * d * sizeof(float)),
          *dx = hy_malloc(rows * d * sizeof(float));
    tu_fill_normal(x, rows * d, 1.0f, 5);
    size_t base = hy_mem_current();
    hy_mem_reset_peak();
    L.keep_for_backward = true;
    ck_assert_msg(L.ops->forward(&L, x, y, B, T) == 0, "%s", hy_last_error());
    ck_assert_msg(L.ops->backward(&L, y, dx, B, T) == 0, "%s", hy_last_error());
    double kept = (double)(hy_mem_current() - base), peak = (double)(hy_mem_peak() - base);
    ck_assert_msg(L.ops->train_bytes != NULL, "%s has no train_bytes", name);
    hy_train_bytes e = L.ops->train_bytes(&L.opts, d, B, T, hy_threads(), hy_first_writes(&L));
    if (L.ops->flags & HY_BLOCK_FIRST_VALUE) e.kept += 2.0 * rows * d * sizeof(float);   /* its slot: the model's */
    ck_assert_msg(e.kept >= kept * 0.99 && e.kept <= kept * 1.01, "%s B %d T %d: %.0f bytes kept, estimated %.0f",
                  name, B, T, kept, e.kept);
    ck_assert_msg(peak <= (e.kept + e.scratch) * 1.01, "%s B %d T %d: peak %.0f bytes, estimated %.0f", name, B, T, peak,
                  e.kept + e.scratch);
    ck_assert_msg(e.scratch <= hy_threads() * (peak - kept) * 1.01 + 1024, "%s B %d T %d: scratch %.0f bytes seen, %.0f estimated",
                  name, B, T, peak - kept, e.scratch);
    hy_free(x), hy_free(y), hy_free(dx);
    hy_layer_standalone_free(&L);
}

/* Every registered block, at two shapes (the thread count of the test run). */
START_TEST(block_train_bytes_match_allocations) {
    for (int i = 0; i < hy_block_count(); i++) {
        const hy_block_ops *ops = hy_block_at(i);
        check_block(ops->name, 64, 2, 100);
        check_block(ops->name, 64, 3, 200);
    }
    check_block("attention", 64, 3, 9);   /* T <= HY_FLASH_DECODE_TQ: the split-key forward's scratch */
}
END_TEST

/* A stack with every kind of sub-block (two rwkv7 layers: the first writes v_first), untied head,
 * no ffn in one layer. */
static const char *const MIXED =
    "model:\n  d_model: 64\n  n_layers: 7\n  vocab_size: 200\n  tie_embeddings: false\n"
    "  layers:\n"
    "    - {mixer: attention, ffn: swiglu}\n"
    "    - {mixer: mamba, ffn: moe}\n"
    "    - {mixer: rwkv7, ffn: cmix}\n"
    "    - {mixer: s4d, ffn: none}\n"
    "    - {mixer: hyena, ffn: swiglu}\n"
    "    - {mixer: rwkv7, ffn: cmix}\n"
    "    - {mixer: {type: attention, n_heads: 4, n_kv_heads: 2, rope_theta: 10000}, ffn: {type: moe, n_experts: 4}}\n";

/* One AdamW training step of the mixed stack on (B, T): the arenas, the moments and what stays
 * allocated after the step against the estimate's params, grads, optimizer and activations, and
 * the peak against its total. */
static void check_model(int B, int T) {
    hy_model_config *cfg;
    ck_assert_msg(hy_model_config_from_yaml(MIXED, "mixed", &cfg) == 0, "%s", hy_last_error());
    hy_train_memory e;
    ck_assert_msg(hy_model_train_memory(cfg, B, T, hy_threads(), 2, &e) == 0, "%s", hy_last_error());
    size_t base = hy_mem_current();
    hy_model *m;
    ck_assert_msg(hy_model_create(cfg, 1, &m) == 0, "%s", hy_last_error());
    ck_assert_double_eq(e.params, (double)m->numel * sizeof(float));
    ck_assert_double_eq(e.grads, e.params);
    hy_optim opt = {.beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8};
    ck_assert_int_eq(hy_optim_init(&opt, m, HY_OPTIM_ADAMW), 0);
    ck_assert_double_eq(e.optimizer, 2 * e.params);
    double fixed = (double)(hy_mem_current() - base) - e.params - e.grads - e.optimizer;   /* the model's small tables */
    ck_assert_msg(fixed >= 0 && fixed < 65536, "%.0f bytes besides the arenas and moments", fixed);
    size_t rows = (size_t)B * T;
    int32_t *in = hy_malloc(rows * sizeof(int32_t)), *tg = hy_malloc(rows * sizeof(int32_t));
    for (size_t i = 0; i < rows; i++) in[i] = (int32_t)(i * 7 % 200), tg[i] = (int32_t)(i * 13 % 200);
    size_t before = hy_mem_current();
    hy_mem_reset_peak();
    hy_loss loss;
    ck_assert_msg(hy_model_forward(m, in, tg, B, T, true, &loss) == 0, "%s", hy_last_error());
    hy_model_zero_grad(m);
    ck_assert_msg(hy_model_backward(m) == 0, "%s", hy_last_error());
    hy_clip_grad_norm(m, 1.0);
    hy_optim_step(&opt, m, 1e-3);
    double act = (double)(hy_mem_current() - before), peak = (double)(hy_mem_peak() - before);
    ck_assert_msg(e.activations >= act * 0.99 && e.activations <= act * 1.01, "B %d T %d: %.0f bytes of activations, "
                  "estimated %.0f", B, T, act, e.activations);
    ck_assert_msg(peak <= (e.activations + e.scratch) * 1.01, "B %d T %d: peak %.0f bytes above the arenas, estimated %.0f",
                  B, T, peak, e.activations + e.scratch);
    ck_assert_double_eq(e.total, e.params + e.grads + e.optimizer + e.activations + e.scratch);
    hy_free(in), hy_free(tg);
    hy_optim_free(&opt);
    hy_model_free(m);
    hy_model_config_destroy(cfg);
}

START_TEST(model_train_memory_matches_a_training_step) {
    check_model(2, 48);
    check_model(3, 100);
}
END_TEST

/* hy_buf_grab_skewed: each array at its slot's offset past a 4 KiB boundary, none overlapping
 * another or leaving the workspace, whose size is hy_skewed_floats; a second, smaller layout reuses
 * the workspace, and a larger one grows it. */
static void check_skewed(hy_buf *b, size_t n, int count, int first) {
    float *arr[40];
    ck_assert_ptr_nonnull(hy_buf_grab_skewed(b, n, count, first, arr));
    ck_assert_uint_ge(b->cap, hy_skewed_floats(n, count));
    for (int i = 0; i < count; i++) {
        const size_t want = (size_t)((first + i) % HY_SKEW_SLOTS) * HY_SKEW_BYTES;
        ck_assert_uint_eq((uintptr_t)arr[i] % 4096, want);
        ck_assert(arr[i] >= b->p && arr[i] + n <= b->p + b->cap);
        if (i) ck_assert(arr[i] >= arr[i - 1] + n);   /* in order, apart */
        for (size_t e = 0; e < n; e++) arr[i][e] = (float)i;   /* writable to the end (ASan checks the bounds) */
    }
    for (int i = 0; i < count; i++) ck_assert(arr[i][0] == (float)i && arr[i][n - 1] == (float)i);
}

START_TEST(skewed_arrays_at_distinct_page_offsets) {
    hy_buf b = {0};
    check_skewed(&b, 4096 * 16, 15, 0);   /* the bench line's layout, 16 pages per array */
    const float *p = b.p;
    check_skewed(&b, 1000, 11, 8);        /* fewer, smaller arrays, slots 8..15, 0..2: the same workspace */
    ck_assert_ptr_eq(b.p, p);
    check_skewed(&b, 1, 3, 14);
    check_skewed(&b, 4096 * 16 + 1, 20, 5);   /* more than HY_SKEW_SLOTS arrays: slots repeat; grows */
    ck_assert_uint_eq(hy_skewed_floats(0, 4), 4096 / 4 + 4 * 4096 / 4);
    ck_assert_uint_eq(hy_skewed_floats(1024, 2), (4096 + 2 * 8192) / 4);
    hy_buf_free(&b);
}
END_TEST

static Suite *memory_suite(void) {
    Suite *s = suite_create("memory");
    TCase *tc = tcase_create("estimate");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, block_train_bytes_match_allocations);
    tcase_add_test(tc, model_train_memory_matches_a_training_step);
    tcase_add_test(tc, skewed_arrays_at_distinct_page_offsets);
    suite_add_tcase(s, tc);
    return s;
}
HY_TEST_SUITE(memory_suite)
