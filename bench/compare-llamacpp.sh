#!/usr/bin/env bash
# Engine speed against llama.cpp on the same files, same machine, same run.
#   bench/compare-llamacpp.sh [THREADS] [REPS]
# Writes SmolLM-135M-shaped random models (Q8_0 and a Q4_K_M-like mix) with hetserve mkmodel,
# runs `hetserve bench` and llama.cpp's llama-bench (through ../shared/peers/llamacpp.sh) on
# each, and prints pp512 / tg128 for both and their ratio. Not a test: llama.cpp is a yardstick.
set -euo pipefail
cd "$(dirname "$0")/.."
T=${1:-2}
R=${2:-5}
HS=build/api/hetserve
PEER=../shared/peers/llamacpp.sh
DIR=$(pwd)/build/bench-models
mkdir -p "$DIR"
[ -x "$HS" ] || { echo "build first: scripts/dev.sh build" >&2; exit 2; }
for t in q8_0 q4_K; do
    f="$DIR/smollm-135m-$t.gguf"
    [ -f "$f" ] || "$HS" mkmodel -o "$f" --preset smollm-135m --type "$t"
done
printf '%-22s %-6s %12s %12s %7s\n' model test hetserve llama.cpp ratio
for t in q8_0 q4_K; do
    f="$DIR/smollm-135m-$t.gguf"
    ours=$("$HS" bench -m "$f" -p 512 -n 128 -t "$T" -r "$R")
    echo "$ours" | sed 's/^/  hetserve: /' >&2
    theirs=$(PEER_MODELS="$DIR" "$PEER" run llama-bench -m "/models/$(basename "$f")" -t "$T" \
        -p 512 -n 128 -r "$R" -o csv 2>/dev/null)
    for test in pp512 tg128; do
        o=$(echo "$ours" | awk -v t="$test" '$2 == t {print $4}')
        n=${test:2}
        if [ "${test:0:2}" = pp ]; then col='n_prompt'; else col='n_gen'; fi
        l=$(echo "$theirs" | python3 -c "
import csv,sys
rows=list(csv.DictReader(sys.stdin))
for r in rows:
    if r['$col']=='$n' and (r['n_gen'] if '$col'=='n_prompt' else r['n_prompt'])=='0':
        print(r['avg_ts'])")
        printf '%-22s %-6s %12.2f %12.2f %6.2fx\n' "smollm-135m-$t" "$test" "$o" "$l" \
            "$(python3 -c "print($o/$l)")"
    done
done
