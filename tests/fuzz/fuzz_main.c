/* The libFuzzer entry of one fuzz target (targets.h), chosen at compile time: `make fuzz` builds
 * this file once per target with -DFUZZ_TARGET=hy_fuzz_<name> into build-fuzz/fuzz-<name>. The
 * model of the state, dump and train-state targets is built from HY_FUZZ_CONFIG (default
 * tests/fuzz/model.yaml, relative to the repository root where `make fuzz` runs). */
#include "core/error.h"
#include "tests/fuzz/targets.h"
#include <stdio.h>
#include <stdlib.h>

#ifndef FUZZ_TARGET
#error "compile with -DFUZZ_TARGET=hy_fuzz_<name>"
#endif

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    hy_set_threads(1);   /* tiny inputs: threads would only add fork/join cost */
    const char *config = getenv("HY_FUZZ_CONFIG") ? getenv("HY_FUZZ_CONFIG") : "tests/fuzz/model.yaml";
    if (hy_fuzz_model_init(config) < 0) {
        fprintf(stderr, "fuzz: cannot build the model of %s: %s\n", config, hy_last_error());
        exit(1);
    }
    atexit(hy_fuzz_model_free);   /* removes its scratch checkpoint when the run ends */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FUZZ_TARGET(data, size);
    return 0;
}
