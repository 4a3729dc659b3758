#!/usr/bin/env bash
# Serving throughput and latency: hetserve serve against llama.cpp's llama-server on the same
# model file, same machine, same run, both measured by hetserve-bench.
#   bench/compare-servers.sh [MODEL] [THREADS]
# MODEL defaults to the SmolLM-135M-shaped Q8_0 file (written by hetserve mkmodel). For each of
# 1, 4 and 16 concurrent streams: ~130-token prompts, 64 output tokens, 3 rounds of requests per
# stream; prints output tok/s and TTFT p50/p99 for both servers and the throughput ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
HS=build/api/hetserve
BENCH=build/bench/hetserve-bench
PEER=../shared/peers/llamacpp.sh
T=${2:-2}
HS_PORT=18301
LC_PORT=18302
OUT=$(mktemp -d)
. bench/lib-servers.sh
MODEL=$(bench_model "${1:-}")
start_servers "$MODEL" "$T" 16 $HS_PORT $LC_PORT 4096 8192

printf '%-10s %4s %12s %10s %10s\n' server conc "out tok/s" "ttft p50" "ttft p99"
for c in 1 4 16; do
    for which in hetserve llama.cpp; do
        port=$HS_PORT; [ "$which" = llama.cpp ] && port=$LC_PORT
        "$BENCH" --base-url "http://127.0.0.1:$port" --endpoint completions --workload fixed \
            --input-len 130 --output-len 64 --concurrency "$c" --num-requests $((c * 3)) \
            --warmup "$c" --seed 1 --quiet --result-json "$OUT/$which-$c.json" > /dev/null
        python3 - "$OUT/$which-$c.json" "$which" "$c" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]:<10} {sys.argv[3]:>4} {r['output_throughput']:12.1f} "
      f"{r['median_ttft_ms']:8.1f}ms {r['p99_ttft_ms']:8.1f}ms")
PY
    done
done
