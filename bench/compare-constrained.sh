#!/usr/bin/env bash
# Structured-output cost, hetserve against llama.cpp's llama-server: for each server, decode
# throughput at 16 concurrent streams constrained by a JSON Schema (llama.cpp's `json_schema`
# field on /v1/completions, which both servers take: an agent action whose "reasoning" string
# has a fixed length, so outputs are long enough to measure decode) against unconstrained
# streams of the same mean length (max_tokens = min_tokens = that mean, ignore_eos), same
# prompts, same run, rounds interleaved. (This llama-server build fails to start the grammar of
# a chat request's response_format on this model: "Failed to initialize samplers", hence the
# completions endpoint.)
#   bench/compare-constrained.sh [MODEL] [THREADS] [ROUNDS]
# MODEL defaults to the SmolLM-135M-shaped Q8_0 file (written by hetserve mkmodel). Prints each
# server's constrained/unconstrained throughput ratio (median over rounds).
set -euo pipefail
cd "$(dirname "$0")/.."
HS=build/api/hetserve
BENCH=build/bench/hetserve-bench
PEER=../shared/peers/llamacpp.sh
T=${2:-2}
ROUNDS=${3:-3}
C=16
N=$((2 * C))
HS_PORT=18311
LC_PORT=18312
OUT=$(mktemp -d)
. bench/lib-servers.sh
MODEL=$(bench_model "${1:-}")
start_servers "$MODEL" "$T" $C $HS_PORT $LC_PORT 8192 16384

# The constrained workload: N prompts, each with its own task line.
python3 - "$OUT/constrained.jsonl" "$N" <<'PY'
import json, sys
schema = {
    "type": "object",
    "properties": {
        "reasoning": {"type": "string", "minLength": 96, "maxLength": 96},
        "action": {"type": "string", "enum": ["click", "swipe", "type", "wait", "done"]},
        "x": {"type": "integer", "minimum": 0, "maximum": 1080},
        "y": {"type": "integer", "minimum": 0, "maximum": 2400},
    },
    "required": ["reasoning", "action", "x", "y"],
    "additionalProperties": False,
}
apps = ["settings", "mail", "maps", "camera", "notes", "clock", "music", "store"]
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[2])):
        body = {
            "prompt": f"You operate a phone. Task {i}: open {apps[i % 8]} and check item {i}. "
                      "Answer with one JSON action.\n",
            "temperature": 0,
            "max_tokens": 512,
            "json_schema": schema,
        }
        f.write(json.dumps(body) + "\n")
PY

run() { # server port workload out.json [max_tokens]
    local extra=()
    [ -n "${5:-}" ] && extra=(--output-len "$5")
    "$BENCH" --base-url "http://127.0.0.1:$2" --endpoint completions --workload "$3" \
        --concurrency $C --num-requests $N --seed 1 --timeout 1800 --quiet --no-stream "${extra[@]}" \
        --result-json "$4" > /dev/null
}

mean_out() { python3 -c "import json,sys; r=json.load(open(sys.argv[1])); \
print(round(r['total_output_tokens'] / max(r['completed'], 1)))" "$1"; }

# The unconstrained workload: the same messages, no response_format; its length is set per
# server to the mean length of that server's constrained answers (first, warm-up run).
python3 - "$OUT/constrained.jsonl" "$OUT/plain.jsonl" <<'PY'
import json, sys
with open(sys.argv[1]) as f, open(sys.argv[2], "w") as g:
    for line in f:
        b = json.loads(line)
        del b["json_schema"], b["max_tokens"]
        g.write(json.dumps(b) + "\n")
PY

declare -A LEN
for which in hetserve llama.cpp; do
    port=$HS_PORT; [ "$which" = llama.cpp ] && port=$LC_PORT
    run "$which" $port "jsonl:$OUT/constrained.jsonl" "$OUT/warm-$which.json"
    LEN[$which]=$(mean_out "$OUT/warm-$which.json")
done

printf '%-10s %5s %12s %12s %8s %10s\n' server round "constr t/s" "plain t/s" ratio "mean len"
for r in $(seq "$ROUNDS"); do
    for which in hetserve llama.cpp; do
        port=$HS_PORT; [ "$which" = llama.cpp ] && port=$LC_PORT
        run "$which" $port "jsonl:$OUT/constrained.jsonl" "$OUT/c-$which-$r.json"
        run "$which" $port "jsonl:$OUT/plain.jsonl" "$OUT/p-$which-$r.json" "${LEN[$which]}"
        python3 - "$OUT/c-$which-$r.json" "$OUT/p-$which-$r.json" "$which" "$r" "$N" <<'PY'
import json, sys
c, p = (json.load(open(x)) for x in sys.argv[1:3])
for name, res in (("constrained", c), ("plain", p)):
    if res["completed"] != int(sys.argv[5]):
        sys.exit(f"{sys.argv[3]}: {name} run completed {res['completed']} of {sys.argv[5]}")
print(f"{sys.argv[3]:<10} {sys.argv[4]:>5} {c['output_throughput']:12.1f} "
      f"{p['output_throughput']:12.1f} {c['output_throughput'] / p['output_throughput']:8.2f} "
      f"{c['total_output_tokens'] / c['completed']:10.1f}")
PY
    done
done | tee "$OUT/table.txt"
python3 - "$OUT/table.txt" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
for s in ("hetserve", "llama.cpp"):
    r = [float(x[4]) for x in rows if x[0] == s]
    print(f"{s}: constrained/unconstrained median {statistics.median(r):.2f}x over {len(r)} rounds")
PY
