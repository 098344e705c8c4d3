#!/usr/bin/env bash
# Cross-check the toolkit against the independent PyTorch implementation of SPEC.md
# (tests/crosscheck.py). `make crosscheck` runs:
#     HY_EXE=./build/hybrid-exp PYTHON=/usr/bin/python3 bash tests/crosscheck.sh
# Extra arguments go to crosscheck.py (e.g. --brief, --keep, --tol 1e-5, --selftest, a config path).
# Exit status: 0 all tensors agree, 1 a mismatch or error, 2 missing prerequisites.
set -euo pipefail
HY_EXE=${HY_EXE:-./build/hybrid-exp}
PYTHON=${PYTHON:-/usr/bin/python3}
case "$HY_EXE" in /*) ;; *) HY_EXE="$PWD/$HY_EXE" ;; esac   # relative to where we were called
cd "$(dirname "$0")/.."

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "crosscheck: Python '$PYTHON' not found (set PYTHON=, Debian: /usr/bin/python3)" >&2
    exit 2
fi
if ! "$PYTHON" -c 'import torch' >/dev/null 2>&1; then
    echo "crosscheck: '$PYTHON' cannot import torch (Debian: apt-get install python3-torch, and use /usr/bin/python3)" >&2
    exit 2
fi
selftest=0
for a in "$@"; do [ "$a" = --selftest ] && selftest=1; done
if [ "$selftest" = 0 ] && [ ! -x "$HY_EXE" ]; then
    echo "crosscheck: toolkit '$HY_EXE' not found or not executable (build it: make; or set HY_EXE=)" >&2
    exit 2
fi
exec "$PYTHON" tests/crosscheck.py --exe "$HY_EXE" "$@"
