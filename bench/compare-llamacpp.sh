#!/usr/bin/env bash
# Engine speed against llama.cpp on the same files, same machine, same run.
#   bench/compare-llamacpp.sh [THREADS] [REPS] [SET] [DEPTH]
# Writes random models with hetserve mkmodel, runs `hetserve bench` and llama.cpp's llama-bench
# (through ../shared/peers/llamacpp.sh) on each, and prints pp512 / tg128 for both and their
# ratio. Not a test: llama.cpp is a yardstick. SET:
#   smollm  (default) SmolLM-135M-shaped models: Q8_0, Q4_K_M (mkmodel --type q4_K writes the
#           types llama-quantize picks for it: mostly Q5_0 here, as 576 is no multiple of 256)
#           and Q4_0
#   moe     the qwen2moe benchmark model (dim 256, 4 layers, 8 experts / 4 used of ffn 512,
#           shared expert 512, vocab 4096, Q8_0) and a dense qwen2 with the same active
#           parameters (ffn 2560 = 4 x 512 + 512), so MoE decode can be compared with dense
#   moe-big the same comparison on models far larger than the caches (dim 1024, 8 layers, 8
#           experts / 2 used of ffn 1024, shared 1024, vocab 8192 vs a dense ffn 3072), where
#           decode is bound by memory bandwidth rather than by which weights stay in L3
# DEPTH (default 0): both run their tests after that many tokens of context (llama-bench's -d;
# `hetserve bench -d`), which is where decode attention shows.
# HS_CPU_ISA=avx2 PEER_CPU=haswell holds both to their AVX2 kernels (bench/lib-peer.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
T=${1:-2}
R=${2:-5}
SET=${3:-smollm}
D=${4:-0}
HS=build/api/hetserve
PEER=../shared/peers/llamacpp.sh
. bench/lib-peer.sh
DIR=$(pwd)/build/bench-models
mkdir -p "$DIR"
[ -x "$HS" ] || { echo "build first: scripts/dev.sh build" >&2; exit 2; }
case "$SET" in
    smollm)
        NAMES=(smollm-135m-q8_0 smollm-135m-q4_K smollm-135m-q4_0)
        SPECS=("--preset smollm-135m --type q8_0" "--preset smollm-135m --type q4_K"
               "--preset smollm-135m --type q4_0") ;;
    moe)
        NAMES=(qwen2moe-bench-q8_0 qwen2-dense-active-q8_0)
        SPECS=("--preset qwen2moe-bench"
               "--arch qwen2 --dim 256 --layers 4 --heads 8 --kv-heads 4 --ffn 2560 --vocab 4096 --ctx 4096 --type q8_0") ;;
    moe-big)
        NAMES=(qwen2moe-big-q8_0 qwen2-dense-big-q8_0)
        SPECS=("--arch qwen2moe --dim 1024 --layers 8 --heads 16 --kv-heads 4 --ffn 1024 --vocab 8192 --ctx 4096 --experts 8 --experts-used 2 --ffn-exp 1024 --ffn-shexp 1024 --type q8_0"
               "--arch qwen2 --dim 1024 --layers 8 --heads 16 --kv-heads 4 --ffn 3072 --vocab 8192 --ctx 4096 --type q8_0") ;;
    *) echo "unknown set '$SET' (smollm, moe, moe-big)" >&2; exit 2 ;;
esac
for i in "${!NAMES[@]}"; do
    f="$DIR/${NAMES[$i]}.gguf"
    # shellcheck disable=SC2086
    [ -f "$f" ] || "$HS" mkmodel -o "$f" ${SPECS[$i]}
done
printf '%-24s %-12s %12s %12s %7s\n' model test hetserve llama.cpp ratio
for name in "${NAMES[@]}"; do
    f="$DIR/$name.gguf"
    ours=$("$HS" bench -m "$f" -p 512 -n 128 -d "$D" -t "$T" -r "$R")
    echo "$ours" | sed 's/^/  hetserve: /' >&2
    theirs=$(PEER_MODELS="$DIR" peer_cpu "$PEER" run llama-bench -m "/models/$(basename "$f")" -t "$T" \
        -p 512 -n 128 -d "$D" -r "$R" -o csv 2>/dev/null)
    for test in pp512 tg128; do
        o=$(echo "$ours" | awk -F'|' -v t="$test" '{split($2, a, " ")} a[1] == t {split($3, b, " "); print b[1]}')
        n=${test:2}
        if [ "${test:0:2}" = pp ]; then col='n_prompt'; else col='n_gen'; fi
        l=$(echo "$theirs" | python3 -c "
import csv,sys
rows=list(csv.DictReader(sys.stdin))
for r in rows:
    if r['$col']=='$n' and (r['n_gen'] if '$col'=='n_prompt' else r['n_prompt'])=='0' and r.get('n_depth', '0')=='$D':
        print(r['avg_ts'])")
        label=$test; [ "$D" = 0 ] || label="$test@d$D"
        printf '%-24s %-12s %12.2f %12.2f %6.2fx\n' "$name" "$label" "$o" "$l" \
            "$(python3 -c "print($o/$l)")"
    done
done
