#!/usr/bin/env bash
# Speculative decoding from history: output tokens/s of hetserve serve with --speculative off and
# with serve's defaults (--speculative suffix), measured by hetserve-bench in the same run (two
# servers side by side, runs interleaved, medians of REPS), on two workloads:
#   agent  MobiAgent-shaped requests that repeat with small variations, as an RL rollout group
#          or an agent's retries send them: TASKS tasks (default 2, at most 8) x 4 steps (the
#          history grows by one fixed answer per step), each prompt sent GROUP (4) times in a
#          shuffled order; temperature 0.
#   plain  random-word prompts of ~130 tokens, none repeated, temperature 0.
# Every request makes exactly OUT_TOK (64) tokens (ignore_eos). Prints tok/s per server and workload,
# the on/off ratio, and the server's drafted/accepted counters.
# With LLAMACPP=TYPE (e.g. ngram-cache, ngram-simple) llama.cpp's llama-server runs beside them
# (from the chroot of ../shared/peers/llamacpp.sh, called directly) with --spec-type none and
# --spec-type TYPE, and the agent workload is measured on those two as well.
#   bench/bench-spec.sh [MODEL] [THREADS] [CONCURRENCY] [REPS]
# MODEL defaults to the SmolLM-135M-shaped Q8_0 file (written by hetserve mkmodel): random
# weights, so a repeated prompt's answer repeats only because greedy decoding is deterministic,
# and a near-repeated prompt's answer shares little with its neighbours' (a trained model's
# would share more).
set -euo pipefail
cd "$(dirname "$0")/.."
HS=build/api/hetserve
BENCH=build/bench/hetserve-bench
T=${2:-2}
CONC=${3:-4}
REPS=${4:-3}
OUT_TOK=${OUT_TOK:-64}
GROUP=${GROUP:-4}
TASKS=${TASKS:-2}
DIR=$(pwd)/build/bench-models
mkdir -p "$DIR"
MODEL=${1:-$DIR/smollm-135m-q8_0.gguf}
[ -f "$MODEL" ] || "$HS" mkmodel -o "$MODEL" --preset smollm-135m --type q8_0
OFF_PORT=${OFF_PORT:-18321}
ON_PORT=${ON_PORT:-18322}
OUT=$(mktemp -d)

python3 - "$OUT/agent.jsonl" "$OUT_TOK" "$GROUP" "$TASKS" <<'PY'
import json, random, sys
path, out_tok, group, n_tasks = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(7)
words = ("the of and to in is it you that he was for on are with as his they be at one have "
         "this from or had by word but what some we can out other were all there when up use "
         "your how said an each she which do their time if will way about many then them write "
         "would like so these her long make thing see him two has look more day could go come").split()
system = ("You are a mobile phone GUI agent. You see the current screen of an Android phone as a "
          "list of UI elements with their bounds, and you operate the phone to complete the "
          "user's task. At every step answer with exactly one JSON object and nothing else.")
tasks = ["Open the Settings app and turn on Wi-Fi.",
         "Send a message saying 'on my way' to Alice in the Messages app.",
         "Search for a coffee shop nearby in Maps and start navigation to the closest one.",
         "Set an alarm for 7:30 tomorrow morning in the Clock app.",
         "Order a large pepperoni pizza for delivery in the food delivery app.",
         "Find the cheapest flight from Shanghai to Beijing next Friday in the travel app.",
         "Play the most recent episode of the first podcast in the podcast app.",
         "Add a calendar event called 'team sync' at 3 pm on Monday."]
prompts = []
for t in tasks[:n_tasks]:
    history = []
    screen = " ".join(rng.choice(words) for _ in range(24))
    for step in range(4):
        hist = "\n".join(f"{i + 1}. {h}" for i, h in enumerate(history)) or "(none)"
        prompts.append(f"{system}\n\nTask: {t}\n\nHistory of your previous actions:\n{hist}\n\n"
                       f"Current screen (step {step + 1}): {screen}\n\nAnswer with the next "
                       f"action as one JSON object.")
        history.append(json.dumps({"action": "click", "x": rng.randrange(1080),
                                   "y": rng.randrange(2400)}))
lines = [p for p in prompts for _ in range(group)]
rng.shuffle(lines)
with open(path, "w") as f:
    for p in lines:
        f.write(json.dumps({"prompt": p, "max_tokens": out_tok, "temperature": 0,
                            "ignore_eos": True}) + "\n")
PY
N_AGENT=$((TASKS * 4 * GROUP))

serve() {
    "$HS" serve -m "$MODEL" --port "$1" -t "$T" --parallel 16 --ctx 2048 "${@:2}" \
        > "$OUT/serve-$1.log" 2>&1 &
}
serve $OFF_PORT --speculative off
OFF_PID=$!
# ON_TRACE=FILE: the speculating server writes its --trace there (steps with rows, drafted and
# accepted tokens: what bench/spec-steps.py fits the step cost from)
# serve's defaults: --speculative suffix, --spec-store-mib 8 (ON_ARGS: other flags)
serve $ON_PORT ${ON_ARGS:-} ${ON_TRACE:+--trace "$ON_TRACE"}
ON_PID=$!
PORTS="$OFF_PORT $ON_PORT"
LC_PIDS=""
if [ -n "${LLAMACPP:-}" ]; then
    PEER=${PEER_ROOT:-/var/tmp/llamacpp-peer}
    mkdir -p "$PEER/tmp/spec-bench"
    cp -u "$MODEL" "$PEER/tmp/spec-bench/model.gguf"
    LC_OFF_PORT=$((OFF_PORT + 10))
    LC_ON_PORT=$((ON_PORT + 10))
    for spec in none "$LLAMACPP"; do
        port=$LC_OFF_PORT; [ "$spec" = none ] || port=$LC_ON_PORT
        chroot "$PEER" /usr/bin/llama-server -m /tmp/spec-bench/model.gguf --port $port -t "$T" \
            -np 16 -c $((16 * 2048)) --spec-type "$spec" > "$OUT/lc-$port.log" 2>&1 &
        LC_PIDS="$LC_PIDS $!"
    done
    PORTS="$PORTS $LC_OFF_PORT $LC_ON_PORT"
fi
trap 'kill $OFF_PID $ON_PID $LC_PIDS 2>/dev/null; rm -rf "$OUT"' EXIT
for port in $PORTS; do
    for _ in $(seq 240); do
        curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
        sleep 0.5
    done
done

# the speculating server's draft counters: "source drafted accepted" lines
counters() {
    curl -s "http://127.0.0.1:$ON_PORT/metrics" | python3 -c '
import re, sys
c = {}
for l in sys.stdin:
    m = re.match(r"hetserve:spec_decode_num_(draft_tokens|accepted_tokens)_total\{source=\"(\w+)\"", l)
    if m:
        c.setdefault(m[2], {})[m[1]] = int(float(l.split()[-1]))
for s, v in c.items():
    print(s, v["draft_tokens"], v["accepted_tokens"])'
}

# CPU seconds (user + system) the server on port $1 has used so far: on a shared machine a pass's
# wall time depends on what else runs then, its CPU time much less
cpu_s() {
    local pid=$OFF_PID
    [ "$1" = "$ON_PORT" ] && pid=$ON_PID
    [ "$1" = "$OFF_PORT" ] || [ "$1" = "$ON_PORT" ] || { echo 0; return; }
    awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$pid/stat"
}

# one measured pass: prints output tok/s (and logs it on stderr, with the server's CPU seconds,
# which go to $OUT/cpu-PORT-WORKLOAD); the speculating server's passes add their drafted and
# accepted tokens to $OUT/drafts-WORKLOAD
pass() { # port workload rep
    local line before c0 c1
    [ "$1" = "$ON_PORT" ] && before=$(counters)
    c0=$(cpu_s "$1")
    line=$(pass_run "$@")
    c1=$(cpu_s "$1")
    echo "$c0 $c1" | awk '{ print $2 - $1 }' >> "$OUT/cpu-$1-$2"
    echo "$line, $(tail -1 "$OUT/cpu-$1-$2") CPU s" >&2
    [ "$1" = "$ON_PORT" ] && join <(echo "$before" | sort) <(counters | sort) >> "$OUT/drafts-$2"
    echo "${line##* }"
}
pass_run() {
    local args
    if [ "$2" = agent ]; then
        args=(--workload "jsonl:$OUT/agent.jsonl" --num-requests $N_AGENT)
    else
        args=(--workload fixed --input-len 130 --output-len "$OUT_TOK" --seed "$((100 + $3))"
              --num-requests $((CONC * 4)))
    fi
    # A pass that fails must not report the previous pass's figures.
    rm -f "$OUT/r.json"
    "$BENCH" --base-url "http://127.0.0.1:$1" --endpoint completions "${args[@]}" \
        --concurrency "$CONC" --quiet --result-json "$OUT/r.json" > /dev/null ||
        { echo "rep $3 $2 port $1: hetserve-bench failed (exit $?)" >&2; return 1; }
    python3 -c 'import json,sys; print(*sys.argv[2:], json.load(open(sys.argv[1]))["output_throughput"])' \
        "$OUT/r.json" "rep $3 $2 port $1 tok/s"
}

echo "model $(basename "$MODEL"), $T threads, concurrency $CONC, $OUT_TOK output tokens," \
     "$REPS reps interleaved; load: $(cut -d' ' -f1-3 /proc/loadavg)"
declare -A R
for rep in $(seq "$REPS"); do
    for wl in agent plain; do
        R[$wl-off]+="$(pass $OFF_PORT $wl "$rep") "
        R[$wl-on]+="$(pass $ON_PORT $wl "$rep") "
    done
    if [ -n "${LLAMACPP:-}" ]; then
        R[llama-off]+="$(pass $LC_OFF_PORT agent "$rep") "
        R[llama-on]+="$(pass $LC_ON_PORT agent "$rep") "
    fi
done
printf '%-6s %12s %12s %8s\n' workload "off tok/s" "on tok/s" "on/off"
WLS="agent plain"
[ -n "${LLAMACPP:-}" ] && WLS="$WLS llama"
for wl in $WLS; do
    python3 - "$wl" "${R[$wl-off]}" "${R[$wl-on]}" <<'PY'
import statistics, sys
off = [float(x) for x in sys.argv[2].split()]
on = [float(x) for x in sys.argv[3].split()]
ratios = [b / a for a, b in zip(off, on)]
name = "agent (llama.cpp)" if sys.argv[1] == "llama" else sys.argv[1]
print(f"{name:<6} {statistics.median(off):12.1f} {statistics.median(on):12.1f} "
      f"{statistics.median(ratios):7.2f}x   (per rep {', '.join(f'{r:.2f}' for r in ratios)}; "
      f"tok/s off {[round(x, 1) for x in off]}, on {[round(x, 1) for x in on]})")
PY
done
# the same passes by CPU time: output tokens per CPU second are equal per pass on both servers,
# so on/off is off's CPU seconds over on's
for wl in agent plain; do
    python3 - "$wl" "$OUT/cpu-$OFF_PORT-$wl" "$OUT/cpu-$ON_PORT-$wl" <<'PY'
import statistics, sys
off = [float(x) for x in open(sys.argv[2])]
on = [float(x) for x in open(sys.argv[3])]
ratios = [a / b for a, b in zip(off, on)]
print(f"{sys.argv[1]} by CPU time: off {statistics.median(off):.1f} s, on "
      f"{statistics.median(on):.1f} s per pass, on/off {statistics.median(ratios):.2f}x "
      f"(per rep {', '.join(f'{r:.2f}' for r in ratios)})")
PY
done
for wl in agent plain; do
    python3 - "$wl" "$OUT/drafts-$wl" <<'PY'
import sys
tot = {}
for l in open(sys.argv[2]):
    s, d0, a0, d1, a1 = l.split()
    d, a = tot.get(s, (0, 0))
    tot[s] = (d + int(d1) - int(d0), a + int(a1) - int(a0))
print(f"{sys.argv[1]} drafts (drafted/accepted tokens, all reps):",
      ", ".join(f"{s} {d}/{a}" for s, (d, a) in sorted(tot.items())))
PY
done
curl -s "http://127.0.0.1:$ON_PORT/metrics" | grep -E '^hetserve:spec_decode_(acc|mean|cost|store)' |
    sed 's/{model_name="[^"]*"}//'
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
