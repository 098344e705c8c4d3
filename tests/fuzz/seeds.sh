#!/bin/bash
# The seed corpora of the fuzz targets (docs/reliability.md), made by `make fuzz` from the shipped
# configs and from files the built programs write:
#   yaml         every YAML file under configs/ and tests/ (and two with "#set" override lines)
#   checkpoint   the fuzz model's checkpoint and training state, the tiny-train model's checkpoint
#                and the checkpoint and training state hybrid-exp writes training it for 2 steps
#   state        state files `hybrid-exp generate` writes with the fuzz model (several prompts,
#                a continued one, a fresh one)
#   dump         token batches (I32 (B, T+1)) of several shapes
#   safetensors  all of the above files, a dump output, and their JSON headers alone
# usage: tests/fuzz/seeds.sh HYBRID_EXP MAKE_FUZZ_MODEL OUT_DIR   (from the repository root)
set -euo pipefail
exe=$1 mkmodel=$2 out=$3
rm -rf "$out"
mkdir -p "$out"/{yaml,checkpoint,state,dump,safetensors,work}

find configs tests -name '*.yaml' | sort | while read -r f; do cp "$f" "$out/yaml/$(echo "$f" | tr / _)"; done
{ cat configs/transformer.yaml; printf '#set train.lr=0.5\n#set model.layers.mixer=mamba\n'; } > "$out/yaml/set-transformer.yaml"
{ cat configs/quick-sweep.yaml; printf '#set budget.steps=20\n'; } > "$out/yaml/set-quick-sweep.yaml"

model=$out/model.safetensors
"$mkmodel" tests/fuzz/model.yaml "$model" "$out/checkpoint/fuzz-model.state.safetensors"
cp "$model" "$out/checkpoint/fuzz-model.safetensors"
"$exe" init tests/configs/tiny-train.yaml --out "$out/checkpoint/tiny-train.safetensors"
"$exe" tests/configs/tiny-train.yaml --out "$out/work/train" --set train.steps=2 --set train.checkpoint_every=1 \
    --set train.eval_every=1 --set train.eval_batches=1 --set train.log_every=1 > /dev/null 2>&1
cp "$out/work/train/checkpoint.safetensors" "$out/checkpoint/trained.safetensors"
cp "$out/work/train/checkpoint.state.safetensors" "$out/checkpoint/trained.state.safetensors"

# the fuzz model's vocabulary is 64: prompts of bytes below '@'
gen() { "$exe" generate --checkpoint "$model" --quiet --temperature 0 "$@" > /dev/null; }
gen --prompt "" -n 0 --state-out "$out/state/fresh.st"
gen --prompt "0123" -n 0 --state-out "$out/state/prompt4.st"
gen --prompt "1+2=3; 4*5=20. (6/3)=2!" -n 3 --state-out "$out/state/prompt23.st"
gen --state-in "$out/state/prompt4.st" --prompt "56" -n 2 --state-out "$out/state/continued.st"

python3 - "$out/dump" <<'EOF'
import struct, sys
def batch(path, B, T1, vocab=64):
    data = b''.join(struct.pack('<i', (7 * i + 3) % vocab) for i in range(B * T1))
    header = ('{"tokens":{"dtype":"I32","shape":[%d,%d],"data_offsets":[0,%d]}}' % (B, T1, len(data))).encode()
    header += b' ' * (-len(header) % 8)
    open(path, 'wb').write(struct.pack('<Q', len(header)) + header + data)
for B, T1 in [(1, 2), (1, 9), (2, 5), (3, 17), (4, 65)]:
    batch('%s/batch-%dx%d.safetensors' % (sys.argv[1], B, T1), B, T1)
EOF
"$exe" dump --checkpoint "$model" --batch "$out/dump/batch-2x5.safetensors" --out "$out/safetensors/dump-2x5.safetensors"

cp "$out"/checkpoint/* "$out"/state/* "$out"/dump/* "$out/safetensors/"
python3 - "$out/safetensors" <<'EOF'
import glob, os, struct, sys
for f in sorted(glob.glob(sys.argv[1] + '/*')):
    d = open(f, 'rb').read()
    n = struct.unpack('<Q', d[:8])[0]
    open(f + '.json', 'wb').write(d[8:8 + n])
EOF
rm -rf "$out/work"
for d in yaml checkpoint state dump safetensors; do echo "fuzz seeds: $d: $(ls "$out/$d" | wc -l) files"; done
