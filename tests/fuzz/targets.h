/* The fuzz targets: one function per loader that takes one input (any bytes) and feeds it through
 * the project's normal loading path. tests/fuzz/fuzz_<name>.c wraps each for libFuzzer (`make
 * fuzz`, clang with ASan and UBSan); tests/test_fuzz_regress.c replays the kept inputs of
 * tests/fuzz/regress/<name>/ through the same functions in `make test` (gcc).
 *
 * A target returns 0 when its loaders accepted the input and a negative code when one refused it.
 * A refusal must be clean: a negative code with a message in hy_last_error(), nothing allocated
 * left behind; a target abort()s on a refusal without a message, so the fuzzer reports it as a
 * crash. Anything else (a crash, a sanitizer report, a leak, a hang) is a bug in a loader. */
#ifndef HY_TESTS_FUZZ_TARGETS_H
#define HY_TESTS_FUZZ_TARGETS_H
#include "models/model.h"
#include <stddef.h>
#include <stdint.h>

/* The run-config, experiment and model-text YAML loaders on the input as a config file. Lines
 * "#set KEY=VALUE" (YAML comments) are also applied as --set overrides, at most 8. */
int hy_fuzz_yaml(const uint8_t *data, size_t size);
/* The JSON parser on the raw input, and the safetensors reader on the input as a file (then every
 * tensor's data is read, so a range outside the file shows). */
int hy_fuzz_safetensors(const uint8_t *data, size_t size);
/* hy_checkpoint_load on the input (a model it accepts, if small, runs a forward pass and two
 * streaming steps), then hy_train_state_load of the input against the fuzz model. */
int hy_fuzz_checkpoint(const uint8_t *data, size_t size);
/* hy_model_state_load of the input into the fuzz model; a state it accepts is continued by a
 * step, a two-token prefill and a greedy generation (B = 1), then saved again. */
int hy_fuzz_state(const uint8_t *data, size_t size);
/* hy_dump of the fuzz model's checkpoint on the input as the batch file. */
int hy_fuzz_dump(const uint8_t *data, size_t size);

/* The model of the state, dump and train-state targets: the config of `config_yaml`
 * (tests/fuzz/model.yaml) with every parameter set to a fixed integer pattern instead of the
 * random init, so its weights (and the weights fingerprint kept state files carry) are the same
 * bits on every machine and compiler. Its checkpoint is written to a scratch file for the dump
 * target. 0 or an error. */
int hy_fuzz_model_init(const char *config_yaml);
hy_model *hy_fuzz_model(void);   /* NULL before hy_fuzz_model_init */
void hy_fuzz_model_free(void);

#endif
