# Sourced by the bench/compare-*.sh scripts: starts hetserve serve and llama.cpp's llama-server
# (through ../shared/peers/llamacpp.sh) on the same model file, waits until both answer
# /health, and stops both (and removes $OUT) when the script exits.
#   start_servers MODEL THREADS PARALLEL HS_PORT LC_PORT HS_CTX LC_CTX
# Needs HS, PEER and OUT set; logs go to $OUT/hs.log and $OUT/lc.log.
#   bench_model [MODEL]: prints MODEL, or the SmolLM-135M-shaped Q8_0 file under build/bench-models
#   (written by hetserve mkmodel the first time).
bench_model() {
    if [ -n "${1:-}" ]; then
        echo "$1"
        return
    fi
    local dir
    dir=$(pwd)/build/bench-models
    mkdir -p "$dir"
    [ -f "$dir/smollm-135m-q8_0.gguf" ] ||
        "$HS" mkmodel -o "$dir/smollm-135m-q8_0.gguf" --preset smollm-135m --type q8_0 >&2
    echo "$dir/smollm-135m-q8_0.gguf"
}

start_servers() {
    local model=$1 t=$2 np=$3 hs_port=$4 lc_port=$5 hs_ctx=$6 lc_ctx=$7
    local mdir
    mdir=$(cd "$(dirname "$model")" && pwd)
    "$HS" serve -m "$model" --port "$hs_port" -t "$t" --parallel "$np" --ctx "$hs_ctx" \
        > "$OUT/hs.log" 2>&1 &
    HS_PID=$!
    PEER_MODELS="$mdir" "$PEER" run llama-server -m "/models/$(basename "$model")" \
        --port "$lc_port" -t "$t" -np "$np" -c "$lc_ctx" > "$OUT/lc.log" 2>&1 &
    # shellcheck disable=SC2064 # the ports and pid are fixed now
    trap "kill $HS_PID 2>/dev/null; pkill -f 'llama-server.*--port $lc_port' 2>/dev/null; rm -rf '$OUT'" EXIT
    local port
    for port in "$hs_port" "$lc_port"; do
        for _ in $(seq 240); do
            curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
            sleep 0.5
        done
    done
}
