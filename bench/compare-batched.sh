#!/usr/bin/env bash
# Batched decode against llama.cpp on the same file, same machine, same run.
#   bench/compare-batched.sh [THREADS] [REPS] [SEQS] [TOKENS] [MODEL.gguf]
# SEQS sequences (default 16) each decode TOKENS tokens (default 32) together, greedy.
# hetserve: `hetserve bench -b SEQS -n TOKENS` (each sequence BOS then TOKENS tokens, all
# submitted at once, total tokens / wall time). llama.cpp: llama-batched (the Debian package
# ships no llama-batched-bench) with a one-token prompt shared by SEQS sequences, -kvu, which
# reports decoded tokens / time the same way. The two alternate REPS times (default 3) and the
# medians and their ratio are printed with the load average: read them as one run's ratio.
# Default model: the SmolLM-135M-shaped Q8_0 file of bench/compare-llamacpp.sh. Not a test.
# HS_CPU_ISA=avx2 PEER_CPU=haswell holds both to their AVX2 kernels (bench/lib-peer.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
T=${1:-2}
R=${2:-3}
S=${3:-16}
N=${4:-32}
HS=build/api/hetserve
. bench/lib-peer.sh
DIR=$(pwd)/build/bench-models
mkdir -p "$DIR"
[ -x "$HS" ] || { echo "build first: scripts/dev.sh build" >&2; exit 2; }
F=${5:-$DIR/smollm-135m-q8_0.gguf}
[ -f "$F" ] || "$HS" mkmodel -o "$F" --preset smollm-135m --type q8_0
# llama.cpp runs in the peer chroot: the file goes under its tmp/
PD="$PEER_ROOT/tmp/hetserve-batched"
mkdir -p "$PD"
cp -u "$F" "$PD/"
ours=()
theirs=()
for _ in $(seq "$R"); do
    o=$("$HS" bench -m "$F" -p 0 -n "$N" -b "$S" -r 1 -t "$T" --no-probes |
        awk -F'|' '/ x[0-9]/ {split($3, a, " "); print a[1]}')
    # -n counts the prompt (BOS + "a": 2 tokens) too
    l=$(peer_cpu chroot "$PEER_ROOT" /usr/bin/llama-batched -m "/tmp/hetserve-batched/$(basename "$F")" \
        -p a -np "$S" -n $((N + 2)) -t "$T" -tb "$T" -kvu 2>&1 |
        grep -a 'decoded' | sed 's/.*speed: \([0-9.]*\).*/\1/')
    echo "  run: hetserve $o t/s, llama.cpp $l t/s (load $(cut -d' ' -f1 /proc/loadavg))" >&2
    ours+=("$o")
    theirs+=("$l")
done
python3 - "$S" "$N" "${ours[*]}" "${theirs[*]}" <<'EOF'
import statistics, sys
s, n, o, l = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split()
mo, ml = statistics.median(map(float, o)), statistics.median(map(float, l))
print(f"batched decode, {s} sequences x {n} tokens: hetserve {mo:.2f} t/s, "
      f"llama.cpp {ml:.2f} t/s, ratio {mo / ml:.2f}x (medians of {len(o)})")
EOF
