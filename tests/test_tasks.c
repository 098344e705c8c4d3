/* The synthetic tasks: each generator's label positions, value ranges and determinism, the
 * training set of fixed examples vs fresh validation sequences, and the streaming evaluation
 * scoring exactly what the parallel forward scores. */
#include "core/error.h"
#include "experiments/config.h"
#include "experiments/tasks.h"
#include "tests/testutil.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

START_TEST(mqar_layout) {
    hy_task_config t;
    hy_task_defaults(HY_TASK_MQAR, &t);
    t.vocab = 64, t.num_kv_pairs = 8;
    int T = 128, K = 8, half = 32;
    int32_t in[128], tg[128], in2[128], tg2[128];
    for (uint64_t seed = 1; seed <= 50; seed++) {
        ck_assert_int_eq(hy_task_example(&t, seed, T, in, tg), 0);
        int value_of[64];
        for (int v = 0; v < 64; v++) value_of[v] = -1;
        for (int i = 0; i < K; i++) {   /* context: distinct keys from the lower half, values from the upper */
            ck_assert(in[2 * i] >= 1 && in[2 * i] < half);
            ck_assert(in[2 * i + 1] >= half && in[2 * i + 1] < 64);
            ck_assert_int_eq(value_of[in[2 * i]], -1);
            value_of[in[2 * i]] = in[2 * i + 1];
            ck_assert_int_eq(tg[2 * i], -1);
            ck_assert_int_eq(tg[2 * i + 1], -1);
        }
        int labels = 0, queried[64] = {0};
        for (int p = 0; p < T; p++) {
            ck_assert(in[p] >= 0 && in[p] < 64);
            if (tg[p] < 0) continue;
            labels++;
            ck_assert(p >= 2 * K && (p - 2 * K) % 2 == 0);   /* a query at gap (p - 2K)/2 */
            ck_assert_int_eq(tg[p], value_of[in[p]]);         /* the value stored with that key */
            ck_assert(p + 1 >= T || in[p + 1] == tg[p]);      /* teacher forcing: the value follows */
            ck_assert_int_eq(queried[in[p]]++, 0);
        }
        ck_assert_int_eq(labels, K);
        ck_assert_int_eq(hy_task_example(&t, seed, T, in2, tg2), 0);   /* deterministic */
        ck_assert(!memcmp(in, in2, sizeof in) && !memcmp(tg, tg2, sizeof tg));
    }
    ck_assert_int_eq(hy_task_example(&t, 51, T, in2, tg2), 0);
    ck_assert(memcmp(in, in2, sizeof in) != 0);
    /* power law: short gaps are much more frequent than long ones */
    long short_gaps = 0, long_gaps = 0;
    for (uint64_t seed = 100; seed < 400; seed++) {
        hy_task_example(&t, seed, T, in, tg);
        for (int p = 2 * K; p < T; p++)
            if (tg[p] >= 0) (p - 2 * K) / 2 < 14 ? short_gaps++ : long_gaps++;
    }
    /* gaps below 14 are a quarter of the 56 possible: uniform gaps would put 25% there */
    ck_assert_msg(short_gaps > long_gaps, "short %ld long %ld", short_gaps, long_gaps);
    char msg[256];
    ck_assert_int_lt(hy_task_check(&t, 31, 64, msg, sizeof msg), 0);   /* T < 4K */
    ck_assert_int_lt(hy_task_check(&t, 128, 32, msg, sizeof msg), 0);  /* model vocab too small */
}
END_TEST

/* num_kv_pairs: auto gives Zoology's pairing K = T / 16: that many labels, each a stored value. */
START_TEST(mqar_auto_kv_pairs) {
    hy_task_config t;
    hy_task_defaults(HY_TASK_MQAR, &t);
    t.vocab = 128, t.num_kv_pairs = 0;
    const int Ts[] = {64, 128, 256};
    static int32_t in[256], tg[256];
    for (int i = 0; i < 3; i++) {
        int T = Ts[i], K = T / 16, labels = 0;
        ck_assert_int_eq(hy_task_kv_pairs(&t, T), K);
        ck_assert_int_eq(hy_task_example(&t, 7 + (uint64_t)i, T, in, tg), 0);
        for (int p = 0; p < T; p++) {
            if (tg[p] < 0) continue;
            labels++;
            int stored = -1;
            for (int k = 0; k < K; k++)
                if (in[2 * k] == in[p]) stored = in[2 * k + 1];
            ck_assert_int_eq(tg[p], stored);
        }
        ck_assert_int_eq(labels, K);
    }
    char msg[256];
    t.vocab = 16;   /* K = 8 at T 128 needs vocab >= 18: the message says where K came from */
    ck_assert_int_lt(hy_task_check(&t, 128, 16, msg, sizeof msg), 0);
    ck_assert_msg(strstr(msg, "num_kv_pairs 8 (auto: seq_len / 16)") != NULL, "%s", msg);
}
END_TEST

START_TEST(selective_copy_layout) {
    hy_task_config t;
    hy_task_defaults(HY_TASK_SELECTIVE_COPY, &t);
    ck_assert_int_eq(t.vocab, 16);
    ck_assert_int_eq(t.n_tokens, 16);
    int T = 96, n = 16;
    int32_t in[96], tg[96];
    for (uint64_t seed = 1; seed <= 50; seed++) {
        ck_assert_int_eq(hy_task_example(&t, seed, T, in, tg), 0);
        int marker = T - n, data[16], k = 0;
        for (int p = 0; p < marker; p++) {   /* noise (0) and the data tokens (1..14) */
            ck_assert(in[p] >= 0 && in[p] <= 14);
            if (in[p]) data[k++] = in[p];
            ck_assert_int_eq(tg[p], -1);
        }
        ck_assert_int_eq(k, n);
        ck_assert_int_eq(in[marker], 15);
        for (int j = 0; j < n; j++) {        /* the answers: the data tokens in order */
            ck_assert_int_eq(tg[marker + j], data[j]);
            if (j > 0) ck_assert_int_eq(in[marker + j], data[j - 1]);
        }
    }
    int32_t in2[96], tg2[96];
    hy_task_example(&t, 50, T, in2, tg2);
    ck_assert(!memcmp(in, in2, sizeof in) && !memcmp(tg, tg2, sizeof tg));
}
END_TEST

START_TEST(induction_layout) {
    hy_task_config t;
    hy_task_defaults(HY_TASK_INDUCTION, &t);
    int32_t in[64], tg[64];
    for (uint64_t seed = 1; seed <= 50; seed++) {
        ck_assert_int_eq(hy_task_example(&t, seed, 64, in, tg), 0);
        int triggers = 0, first = -1;
        for (int p = 0; p < 64; p++) {
            ck_assert(in[p] >= 0 && in[p] < 16);
            if (in[p] == 15) triggers++, first = first < 0 ? p : first;
            if (p < 63) ck_assert_int_eq(tg[p], -1);
        }
        ck_assert_int_eq(triggers, 2);
        ck_assert_int_eq(in[63], 15);
        ck_assert_int_eq(tg[63], in[first + 1]);   /* the token that followed the first trigger */
        ck_assert(tg[63] >= 0 && tg[63] < 15);
    }
}
END_TEST

/* Training batches come from the fixed set of `examples`; validation from other sequences. */
START_TEST(task_batches) {
    hy_task_config t;
    hy_task_defaults(HY_TASK_MQAR, &t);
    t.vocab = 32, t.num_kv_pairs = 2, t.examples = 3;
    int B = 24, T = 16;
    int32_t in[24 * 16], tg[24 * 16], vin[24 * 16], vtg[24 * 16];
    hy_rng r, r2;
    hy_rng_seed(&r, 5);
    ck_assert_int_eq(hy_task_batch(&t, 9, 0, &r, B, T, in, tg), 0);
    int distinct = 0;
    for (int b = 0; b < B; b++) {
        int seen = 0;
        for (int c = 0; c < b && !seen; c++) seen = !memcmp(in + b * T, in + c * T, (size_t)T * 4);
        distinct += !seen;
    }
    ck_assert_int_le(distinct, 3);
    hy_rng_seed(&r2, 5);
    ck_assert_int_eq(hy_task_batch(&t, 9, 1, &r2, B, T, vin, vtg), 0);
    for (int b = 0; b < B; b++)
        for (int c = 0; c < B; c++) ck_assert(memcmp(vin + b * T, in + c * T, (size_t)T * 4) != 0);
}
END_TEST

/* The streaming evaluation (hy_model_step token by token) scores exactly what the parallel
 * forward scores, and both count only the labelled positions. */
START_TEST(streaming_eval_matches) {
    hy_run_config c;
    const char *sets[] = {"model.vocab_size=32"};
    ck_assert_msg(hy_run_config_load("tests/configs/tiny-train.yaml", sets, 1, &c) == 0, "%s", hy_last_error());
    hy_model *m;
    ck_assert_int_eq(hy_model_create(&c.model, 11, &m), 0);
    hy_task_config t;
    hy_task_defaults(HY_TASK_MQAR, &t);
    t.vocab = 32, t.num_kv_pairs = 3;
    hy_data d;
    ck_assert_int_eq(hy_data_open(&d, NULL, &t, 5), 0);
    hy_eval_result par, str;
    ck_assert_int_eq(hy_evaluate_data(m, &d, 3, 24, 2, 5, false, &par), 0);
    ck_assert_int_eq(hy_evaluate_data(m, &d, 3, 24, 2, 5, true, &str), 0);
    ck_assert_int_eq(par.labels, 3 * 3 * 2);
    ck_assert_int_eq(str.labels, par.labels);
    ck_assert_double_eq_tol(str.loss, par.loss, 1e-4 * fabs(par.loss));
    ck_assert_double_eq_tol(str.accuracy, par.accuracy, 1e-9);
    ck_assert(par.accuracy >= 0 && par.accuracy <= 1);
    hy_data_free(&d);
    hy_model_free(m);
    hy_run_config_free(&c);
}
END_TEST

static Suite *make_tasks_suite(void) {
    Suite *s = suite_create("tasks");
    TCase *t = tcase_create("tasks");
    tcase_set_timeout(t, getenv("CK_DEFAULT_TIMEOUT") ? atof(getenv("CK_DEFAULT_TIMEOUT")) : 60);
    tcase_add_test(t, mqar_layout);
    tcase_add_test(t, mqar_auto_kv_pairs);
    tcase_add_test(t, selective_copy_layout);
    tcase_add_test(t, induction_layout);
    tcase_add_test(t, task_batches);
    tcase_add_test(t, streaming_eval_matches);
    suite_add_tcase(s, t);
    return s;
}
HY_TEST_SUITE(make_tasks_suite)
