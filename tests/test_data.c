/* Training data: llm.c shards (uint16 and uint32) and nanoGPT's raw uint16 files round trip;
 * bad magic, a truncated file, a token outside the vocabulary and an empty file are refused with
 * the file (and offset) named; data.train / data.val; format detection; the vocabulary check of
 * a byte corpus before anything is written; and a run on a 2 GB token file in the resident memory
 * of a run on a small one (the file is mapped, never read whole). */
#include "core/error.h"
#include "core/fileio.h"
#include "core/mem.h"
#include "core/sha256.h"
#include "experiments/data.h"
#include "experiments/train.h"
#include "tests/testutil.h"
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[256];

static void put(const char *name, const void *data, size_t len) {
    char p[512];
    ck_assert_int_eq(hy_write_file_atomic(tu_path(p, sizeof p, dir, name), data, len), 0);
}

/* An llm.c shard of n ids at dir/name through the writer (uint16 for vocab <= 65536). */
static void put_shard(const char *name, const int32_t *ids, size_t n, int vocab) {
    char p[512];
    hy_shard_writer w;
    ck_assert_int_eq(hy_shard_open(&w, tu_path(p, sizeof p, dir, name), vocab), 0);
    ck_assert_int_eq(hy_shard_add(&w, ids, n), 0);
    ck_assert_int_eq(hy_shard_close(&w), 0);
}

/* Opens spec, expecting failure whose message holds each of the (up to 3) fragments. */
static void expect_open_error(const hy_data_spec *s, const char *a, const char *b, const char *c) {
    hy_corpus cp;
    ck_assert_int_ne(hy_corpus_open(&cp, s), 0);
    const char *e = hy_last_error(), *want[] = {a, b, c};
    for (int k = 0; k < 3; k++) ck_assert_msg(!want[k] || strstr(e, want[k]), "'%s' not in: %s", want[k], e);
}

/* The whole stream of split k as ids. */
static void read_split(const hy_corpus *c, int k, int32_t *out) { hy_stream_read(&c->split[k], 0, c->split[k].len, out); }

START_TEST(llmc_shards_round_trip) {
    tu_fresh_dir(dir, sizeof dir, "data-llmc", true);
    enum { N = 3000 };
    static int32_t ids[N], back[N];
    for (int i = 0; i < N; i++) ids[i] = (i * 7919) % 50257;
    put_shard("a.bin", ids, N, 50257);
    char p[512];
    /* the header as llm.c writes it: magic, version 1, count; then uint16 tokens */
    char *raw;
    size_t len;
    raw = tu_slurp(NULL, tu_path(p, sizeof p, dir, "a.bin"), &len);
    ck_assert_uint_eq(len, 1024 + 2 * N);
    int32_t h[3];
    memcpy(h, raw, sizeof h);
    ck_assert_int_eq(h[0], 20240520);
    ck_assert_int_eq(h[1], 1);
    ck_assert_int_eq(h[2], N);
    hy_free(raw);
    static const hy_data_format formats[] = {HY_DATA_AUTO, HY_DATA_TOKENS, HY_DATA_LLMC};
    for (int f = 0; f < 3; f++) {
        hy_data_spec s = {.corpus = p, .val_fraction = 0.1, .format = formats[f], .vocab_size = 50257};
        hy_corpus c;
        ck_assert_msg(hy_corpus_open(&c, &s) == 0, "%s", hy_last_error());
        ck_assert(c.tokens);
        ck_assert_uint_eq(c.len, N);
        ck_assert_uint_eq(c.n_train, N - N / 10);
        read_split(&c, 0, back);
        read_split(&c, 1, back + c.n_train);
        ck_assert(memcmp(ids, back, sizeof ids) == 0);
        int max = 0;
        for (int i = 0; i < N; i++) max = ids[i] > max ? ids[i] : max;
        ck_assert_int_eq(c.max_token, max);
        /* windows: targets are the inputs shifted by one, taken from the file */
        hy_rng r;
        hy_rng_seed(&r, 3);
        int32_t in[4 * 16], tg[4 * 16];
        ck_assert_int_eq(hy_corpus_batch(&c, 0, &r, 4, 16, in, tg), 0);
        for (int b = 0; b < 4; b++) {
            int start = -1;
            for (int i = 0; i < N && start < 0; i++) start = ids[i] == in[b * 16] && ids[i + 1] == in[b * 16 + 1] ? i : -1;
            ck_assert_int_ge(start, 0);
            for (int t = 0; t < 16; t++) ck_assert_int_eq(tg[b * 16 + t], ids[start + t + 1]);
        }
        hy_corpus_free(&c);
    }
    /* uint32 tokens (llm.c's Llama-3 header) for a vocabulary above 65536 */
    for (int i = 0; i < N; i++) ids[i] = (i * 104729) % 128256;
    put_shard("b.bin", ids, N, 128256);
    raw = tu_slurp(NULL, tu_path(p, sizeof p, dir, "b.bin"), &len);
    ck_assert_uint_eq(len, 1024 + 4 * N);
    memcpy(h, raw, sizeof h);
    ck_assert_int_eq(h[0], 20240801);
    ck_assert_int_eq(h[1], 7);
    hy_free(raw);
    hy_corpus c;
    ck_assert_msg(hy_corpus_load(&c, p, 0.5) == 0, "%s", hy_last_error());
    read_split(&c, 0, back);
    read_split(&c, 1, back + c.n_train);
    ck_assert(memcmp(ids, back, sizeof ids) == 0);
    hy_corpus_free(&c);
    tu_remove_dir(dir);
}
END_TEST

START_TEST(nanogpt_bin_round_trip_and_train_val_files) {
    tu_fresh_dir(dir, sizeof dir, "data-nanogpt", true);
    enum { N = 1000 };
    uint16_t raw[N];
    int32_t want[N], back[N];
    for (int i = 0; i < N; i++) raw[i] = (uint16_t)((i * 31) % 65535), want[i] = raw[i];
    put("train.bin", raw, sizeof raw);
    put("val.bin", raw, 200 * sizeof *raw);
    put("meta.pkl", "\x80\x04\x95\x00\x00", 5);   /* binary: skipped in a folder */
    char tr[512], va[512];
    hy_data_spec s = {.train = tu_path(tr, sizeof tr, dir, "train.bin"), .val = tu_path(va, sizeof va, dir, "val.bin"), .val_fraction = 0.1,
                      .vocab_size = 65535};
    hy_corpus c;
    ck_assert_msg(hy_corpus_open(&c, &s) == 0, "%s", hy_last_error());
    ck_assert_uint_eq(c.split[0].len, N);
    ck_assert_uint_eq(c.split[1].len, 200);
    read_split(&c, 0, back);
    ck_assert(memcmp(back, want, sizeof want) == 0);
    read_split(&c, 1, back);
    ck_assert(memcmp(back, want, 200 * sizeof *want) == 0);
    hy_corpus_free(&c);
    /* a folder of token files: train.bin then val.bin (sorted), meta.pkl skipped */
    hy_data_spec f = {.corpus = dir, .val_fraction = 0.1, .format = HY_DATA_TOKENS};
    ck_assert_msg(hy_corpus_open(&c, &f) == 0, "%s", hy_last_error());
    ck_assert_int_eq(c.n_files, 2);
    ck_assert_uint_eq(c.len, N + 200);
    hy_corpus_free(&c);
    /* a folder with text beside the token files is refused in auto mode, named */
    put("input.txt", "hello", 5);
    f.format = HY_DATA_AUTO;
    expect_open_error(&f, "input.txt", "train.bin", "all text or all token files");
    /* ... and read as text only with format: bytes (the .bin files are binary: skipped) */
    f.format = HY_DATA_BYTES;
    ck_assert_msg(hy_corpus_open(&c, &f) == 0, "%s", hy_last_error());
    ck_assert(!c.tokens);
    ck_assert_uint_eq(c.len, 5);
    hy_corpus_free(&c);
    tu_remove_dir(dir);
}
END_TEST

START_TEST(bad_files_are_refused_with_file_and_offset) {
    tu_fresh_dir(dir, sizeof dir, "data-bad", true);
    char p[512];
    int32_t ids[100];
    for (int i = 0; i < 100; i++) ids[i] = i;
    /* bad magic: llmc format wants the header */
    uint8_t junk[2048] = {1, 2, 3, 4};
    put("junk.bin", junk, sizeof junk);
    hy_data_spec s = {.corpus = tu_path(p, sizeof p, dir, "junk.bin"), .val_fraction = 0.1, .format = HY_DATA_LLMC};
    expect_open_error(&s, "junk.bin", "bad magic 67305985", NULL);
    /* an unsupported version */
    int32_t head[256] = {20240520, 2, 4};
    put("v2.bin", head, sizeof head);
    s.corpus = tu_path(p, sizeof p, dir, "v2.bin"), s.format = HY_DATA_AUTO;
    expect_open_error(&s, "v2.bin", "version 2 is not supported", NULL);
    /* truncated: the header announces 100 tokens, 60 are there; a header cut short; an odd raw file */
    put_shard("full.bin", ids, 100, 1000);
    char *raw;
    size_t len;
    raw = tu_slurp(NULL, tu_path(p, sizeof p, dir, "full.bin"), &len);
    put("cut.bin", raw, 1024 + 2 * 60);
    s.corpus = tu_path(p, sizeof p, dir, "cut.bin");
    expect_open_error(&s, "cut.bin", "truncated", "announces 100 tokens (1224 bytes) but the file has 1144 bytes");
    put("long.bin", raw, 1024 + 2 * 100);
    put("head.bin", raw, 500);
    s.corpus = tu_path(p, sizeof p, dir, "head.bin");
    expect_open_error(&s, "head.bin", "truncated llm.c shard: 500 bytes", NULL);
    put("odd.bin", raw + 1024, 7);
    s.corpus = tu_path(p, sizeof p, dir, "odd.bin");
    expect_open_error(&s, "odd.bin", "not a whole number of uint16 tokens", NULL);
    hy_free(raw);
    /* a token outside the vocabulary: the file, the byte offset and the token index */
    ids[37] = 999;
    put_shard("big.bin", ids, 100, 1000);
    s.corpus = tu_path(p, sizeof p, dir, "big.bin"), s.vocab_size = 500;
    expect_open_error(&s, "big.bin", "token 999 at byte offset 1098 (token 37 of the file)", "model.vocab_size 500");
    s.vocab_size = 1000;
    hy_corpus c;
    ck_assert_msg(hy_corpus_open(&c, &s) == 0, "%s", hy_last_error());
    ck_assert_int_eq(c.max_token, 999);
    hy_corpus_free(&c);
    /* the same check without opening for training (the validation's entry point) */
    s.vocab_size = 500;
    ck_assert_int_ne(hy_data_check(&s), 0);
    ck_assert_ptr_nonnull(strstr(hy_last_error(), "byte offset 1098"));
    /* empty: a 0-byte file, and a shard of 0 tokens */
    put("empty.txt", "", 0);
    s.corpus = tu_path(p, sizeof p, dir, "empty.txt"), s.vocab_size = 256;
    expect_open_error(&s, "empty.txt", "no text found", NULL);
    put_shard("none.bin", ids, 0, 1000);
    s.corpus = tu_path(p, sizeof p, dir, "none.bin");
    expect_open_error(&s, "none.bin", "no tokens found", NULL);
    /* a missing file, a pattern matching nothing */
    s.corpus = tu_path(p, sizeof p, dir, "missing.bin");
    expect_open_error(&s, "missing.bin", NULL, NULL);
    s.corpus = tu_path(p, sizeof p, dir, "nothing-*.bin");
    expect_open_error(&s, "nothing-*.bin", "no file matches", NULL);
    /* a glob: full.bin and long.bin (and big.bin, none.bin) in sorted order */
    s.corpus = tu_path(p, sizeof p, dir, "[fl]*.bin"), s.vocab_size = 0;
    ck_assert_msg(hy_corpus_open(&c, &s) == 0, "%s", hy_last_error());
    ck_assert_int_eq(c.n_files, 2);
    ck_assert_uint_eq(c.len, 200);
    hy_corpus_free(&c);
    tu_remove_dir(dir);
}
END_TEST

/* A byte corpus whose bytes exceed vocab_size: the trainer refuses it before writing anything,
 * naming the file and the offset of the first such byte. */
START_TEST(byte_corpus_vocab_checked_before_writing) {
    tu_fresh_dir(dir, sizeof dir, "data-vocab", true);
    char out[512], set_out[600];
    snprintf(out, sizeof out, "%s/run", dir);
    snprintf(set_out, sizeof set_out, "out_dir=%s", out);
    const char *sets[] = {set_out, "model.vocab_size=100"};
    hy_run_config c;
    ck_assert_msg(hy_run_config_load("tests/configs/tiny-train.yaml", sets, 2, &c) == 0, "%s", hy_last_error());
    hy_train_opts o = {0};
    hy_train_result r;
    ck_assert_int_ne(hy_train(&c, &o, &r), 0);
    const char *e = hy_last_error();
    ck_assert_msg(strstr(e, "model.vocab_size=100: 100 is too small for the byte corpus tests/data/tiny-corpus.txt, whose "
                            "bytes go up to 122") && strstr(e, "byte 114 (0x72) at byte offset 1 of tests/data/tiny-corpus.txt"),
                  "%s", e);
    ck_assert_int_ne(access(out, F_OK), 0);   /* nothing written */
    /* the program: a config error (exit 2), nothing written */
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "%s tests/configs/tiny-train.yaml --set model.vocab_size=100 --out %s --quiet 2>/dev/null",
             tu_exe(), out);
    int st = system(cmd);
    ck_assert_int_eq(WIFEXITED(st) ? WEXITSTATUS(st) : -1, 2);
    ck_assert_int_ne(access(out, F_OK), 0);
    hy_data_spec s;   /* the data layer's own check: the file and offset */
    hy_run_data_spec(&c, &s);
    ck_assert_int_eq(hy_data_check(&s), HY_ERR_CONFIG);
    ck_assert_msg(strstr(hy_last_error(), "tests/data/tiny-corpus.txt: byte 114 (0x72) at byte offset 1 is not below "
                                          "model.vocab_size 100: a byte-level model of this corpus needs vocab_size >= 123"),
                  "%s", hy_last_error());
    s.vocab_size = 256;
    ck_assert_msg(hy_data_check(&s) == 0, "%s", hy_last_error());
    hy_run_config_free(&c);
    tu_remove_dir(dir);
}
END_TEST

/* The peak resident set of this process (VmHWM), in bytes. */
static size_t peak_rss(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    size_t kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) kb = strtoul(line + 6, NULL, 10);
    if (f) fclose(f);
    return kb * 1024;
}

/* Trains the tiny model 10 steps on token file `path` (corpus split 90/10); returns VmHWM after. */
static size_t train_on(const char *path, const char *out) {
    char set_out[600], set_data[600];
    snprintf(set_out, sizeof set_out, "out_dir=%s", out);
    snprintf(set_data, sizeof set_data, "data.corpus=%s", path);
    const char *sets[] = {set_out, set_data, "data.format=llmc", "train.steps=10", "train.eval_every=5",
                          "model.vocab_size=512"};
    hy_run_config c;
    ck_assert_msg(hy_run_config_load("tests/configs/tiny-train.yaml", sets, 6, &c) == 0, "%s", hy_last_error());
    hy_train_opts o = {0};
    hy_train_result r;
    ck_assert_msg(hy_train(&c, &o, &r) == 0, "%s", hy_last_error());
    ck_assert_int_eq(r.steps, 10);
    hy_run_config_free(&c);
    return peak_rss();
}

START_TEST(large_token_file_is_mapped_not_read) {
    tu_fresh_dir(dir, sizeof dir, "data-mmap", true);
    struct stat st;
    ck_assert_int_eq(stat("/tmp", &st), 0);
    enum { SMALL = 1 << 16 };
    static int32_t ids[SMALL];
    for (int i = 0; i < SMALL; i++) ids[i] = (i * 37) % 512;
    put_shard("small.bin", ids, SMALL, 512);
    /* 2 GiB of tokens: an llm.c header announcing 2^30 uint16 tokens, the rest a sparse hole
     * (zeros: token 0), so the disk holds almost nothing */
    char big[512], small[512], out1[512], out2[512];
    tu_path(big, sizeof big, dir, "big.bin");
    const size_t n = (size_t)1 << 30;
    int32_t head[256] = {20240520, 1, (int32_t)n};
    int fd = open(big, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, head, sizeof head), (ssize_t)sizeof head);
    ck_assert_int_eq(ftruncate(fd, (off_t)(1024 + 2 * n)), 0);
    close(fd);
    size_t before = train_on(tu_path(small, sizeof small, dir, "small.bin"), tu_path(out1, sizeof out1, dir, "run-small"));
    size_t after = train_on(big, tu_path(out2, sizeof out2, dir, "run-big"));
    /* the big run read 2 GiB (every token is checked against vocab_size) and trained on windows
     * all over it, yet its resident peak is that of the small run within a few MiB */
    ck_assert_msg(after < before + (16u << 20), "peak resident memory %.1f MiB on 2 GiB of tokens, %.1f MiB on 128 KiB",
                  after / 1048576.0, before / 1048576.0);
    tu_remove_dir(dir);
}
END_TEST

/* SHA-256 (which names tokenizers and cached tokens) on FIPS 180-4's examples, fed whole and in pieces. */
START_TEST(sha256_known_answers) {
    static const struct {
        const char *msg, *hex;
    } kat[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    for (int k = 0; k < 3; k++)
        for (size_t piece = 1; piece <= 64; piece *= 4) {
            hy_sha256 h;
            char hex[65];
            hy_sha256_init(&h);
            for (size_t at = 0, n = strlen(kat[k].msg); at < n; at += piece)
                hy_sha256_add(&h, kat[k].msg + at, n - at < piece ? n - at : piece);
            hy_sha256_hex(&h, hex);
            ck_assert_str_eq(hex, kat[k].hex);
        }
    /* a million 'a': many blocks */
    hy_sha256 h;
    char hex[65], a[1000];
    memset(a, 'a', sizeof a);
    hy_sha256_init(&h);
    for (int i = 0; i < 1000; i++) hy_sha256_add(&h, a, sizeof a);
    hy_sha256_hex(&h, hex);
    ck_assert_str_eq(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}
END_TEST

static Suite *data_suite(void) {
    Suite *s = suite_create("data");
    TCase *tc = tcase_create("data");
    tcase_add_test(tc, sha256_known_answers);
    tcase_add_test(tc, llmc_shards_round_trip);
    tcase_add_test(tc, nanogpt_bin_round_trip_and_train_val_files);
    tcase_add_test(tc, bad_files_are_refused_with_file_and_offset);
    tcase_add_test(tc, byte_corpus_vocab_checked_before_writing);
    tcase_add_test(tc, large_token_file_is_mapped_not_read);
    suite_add_tcase(s, tc);
    return s;
}
HY_TEST_SUITE(data_suite)
