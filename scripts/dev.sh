#!/usr/bin/env bash
# hetserve's one entry point for newcomers and CI.
#   scripts/dev.sh run [-- extra serve flags]      install what is missing, build, and start the
#                                                  OpenAI-compatible server on the default model
#   scripts/dev.sh test                            install, build, run every test: the normal
#                                                  build, an ASan+UBSan build, and bounded fuzzing
#   scripts/dev.sh valgrind [MESON TEST ARGS]      the unit suites under valgrind memcheck (slow:
#                                                  hours for all; e.g. --suite server to narrow)
#   scripts/dev.sh deps | build                    the individual steps
# Environment: HETSERVE_MODEL (default ../shared/models/stories260K.gguf), PORT (8080), FUZZ_SECONDS (per
# target, default 30), FUZZ_JOBS (targets fuzzed at a time, default 1), FUZZ_TARGETS (names, default
# all), JOBS (default: nproc).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
JOBS=${JOBS:-$(nproc)}

# python3-jsonschema: the trace-event JSON Schema tests (tests/common/check-trace-schema.py).
# valgrind: `scripts/dev.sh valgrind` (memcheck over the unit suites).
# libpng-dev, libjpeg62-turbo-dev: image input (model/vision/image.c); the reference decoders,
# fuzzed upstream (OSS-Fuzz) and patched by Debian security, unlike a vendored decoder.
PKGS=(meson ninja-build pkg-config gcc clang libclang-rt-14-dev
      libmicrohttpd-dev libcurl4-openssl-dev libjansson-dev libhwloc-dev libdnnl-dev libcriterion-dev libutf8proc-dev
      libpng-dev libjpeg62-turbo-dev
      python3-jsonschema valgrind)

# Node for the end-to-end test with the openai npm client (tests/e2e). Installed from Debian only
# when no node/npm is on the PATH (a NodeSource nodejs already bundles npm, and Debian's npm
# package would conflict with it).
NODE_PKGS=(nodejs npm)

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

deps() {
    local missing=()
    for p in "${PKGS[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        missing+=("${NODE_PKGS[@]}")
    fi
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing: ${missing[*]}"
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        # A fresh machine often runs its own apt at boot: wait for the dpkg lock (bounded by
        # HS_APT_LOCK_TIMEOUT seconds, default 600) rather than failing at once.
        local lock_s="${HS_APT_LOCK_TIMEOUT:-600}"
        if fuser /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock >/dev/null 2>&1; then
            log "another apt/dpkg holds the lock: waiting up to ${lock_s}s for it"
        fi
        $sudo apt-get -o DPkg::Lock::Timeout="$lock_s" update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout="$lock_s" \
            install -y -qq "${missing[@]}" >/dev/null
    fi
}

# The openai client and the ajv JSON Schema validator for tests/e2e, pinned by
# tests/e2e/package-lock.json.
node_deps() {
    if [ ! -d tests/e2e/node_modules/openai ] || [ ! -d tests/e2e/node_modules/ajv ]; then
        log "npm ci --prefix tests/e2e"
        npm ci --prefix tests/e2e --no-audit --no-fund >/dev/null
    fi
}

setup_dir() { # dir, meson args...
    local dir=$1; shift
    if [ -f "$dir/build.ninja" ]; then
        meson setup --reconfigure "$dir" "$@" >/dev/null
    else
        meson setup "$dir" "$@" >/dev/null
    fi
}

build() {
    log "building (build/)"
    setup_dir build
    ninja -C build -j "$JOBS"
}

default_model() {
    if [ -n "${HETSERVE_MODEL:-}" ]; then
        echo "$HETSERVE_MODEL"
    elif [ -f "$ROOT/../shared/models/stories260K.gguf" ]; then
        echo "$ROOT/../shared/models/stories260K.gguf"
    else
        local m="$ROOT/build/random-tiny.gguf"
        log "no ../shared/models/stories260K.gguf and no \$HETSERVE_MODEL: writing a random-weight model to $m (its text is gibberish)"
        [ -f "$m" ] || build/api/hetserve mkmodel -o "$m" --preset tiny >&2
        echo "$m"
    fi
}

run() {
    deps
    build
    local model; model=$(default_model)
    local port=${PORT:-8080}
    log "serving $model on http://127.0.0.1:$port (Ctrl-C stops it); try:"
    printf '  curl -s http://127.0.0.1:%s/v1/completions -H "Content-Type: application/json" \\\n    -d %s\n' \
        "$port" "'{\"prompt\": \"Once upon a time\", \"max_tokens\": 64}'" >&2
    exec build/api/hetserve serve -m "$model" --port "$port" "$@"
}

# One target: seed its corpus (kept between runs in build-fuzz/corpus-NAME) and run it for
# FUZZ_SECONDS. Its log, with libFuzzer's final stats and the CPU time it got, is
# build-fuzz/NAME.log.
fuzz_one() { # path secs
    local f=$1 secs=$2
    local name; name=$(basename "$f")
    local corpus="build-fuzz/corpus-$name" art="build-fuzz/artifacts-$name/"
    mkdir -p "$corpus" "$art"
    local max_len=4096
    if [ "$name" = fuzz-gguf ]; then
        # Seed with the heads of the shared models (header and metadata are what is parsed).
        max_len=65536
        for m in "$ROOT"/../shared/models/*.gguf; do
            [ -f "$m" ] && head -c 65536 "$m" > "$corpus/seed-$(basename "$m")"
        done
    fi
    if [ "$name" = fuzz-model ]; then
        # Whole small models of every architecture (the loader reads tensor data too).
        max_len=131072
        local tiny="--dim 32 --heads 2 --kv-heads 1 --ffn 32 --vocab 300 --layers 2 --tied"
        local moe="--experts 4 --experts-used 2 --ffn-exp 32"
        local i=0
        for spec in "--arch llama --type q8_0" "--arch qwen3 --type q4_0" \
            "--arch qwen2 --type q5_0" "--arch llama --type q4_1" "--arch qwen3 --type q5_1" \
            "--arch llama $moe" "--arch qwen2moe $moe --ffn-shexp 32 --type q8_0" \
            "--arch qwen3moe $moe --gating sigmoid --weights-scale 2" "--arch olmoe $moe" \
            "--arch hunyuan-moe $moe" "--arch hunyuan-large --experts 4 --experts-used 1 --cla 2"; do
            # shellcheck disable=SC2086
            build/api/hetserve mkmodel -o "$corpus/seed-$i.gguf" $tiny $spec 2>/dev/null
            i=$((i + 1))
        done
    fi
    printf 'Hello, world! 123 \xc3\xa9\xf0\x9f\x98\x80 <|im_start|>user\n' > "$corpus/seed-text"
    # Target-specific seeds (e.g. request bodies for fuzz-request).
    if [ -d "tests/fuzz/seeds-$name" ]; then
        cp tests/fuzz/seeds-"$name"/* "$corpus/"
    fi
    log "fuzz $name (${secs}s)"
    local rc=0 TIMEFORMAT="cpu: %U s user, %S s sys, %R s wall"
    { time "$f" -max_total_time="$secs" -max_len="$max_len" -timeout=60 -rss_limit_mb=4096 \
        -print_final_stats=1 -artifact_prefix="$art" "$corpus" > "build-fuzz/$name.log" 2>&1; } \
        2>> "build-fuzz/$name.log" || rc=$?
    grep -E 'stat::number_of_executed_units|^cpu:|ERROR|SUMMARY' "build-fuzz/$name.log" |
        sed "s/^/$name: /" || true
    if [ "$rc" -ne 0 ]; then
        log "fuzzer $name failed (exit $rc); inputs in $art"; tail -40 "build-fuzz/$name.log"
        return 1
    fi
}

# Every fuzz target (or those named in FUZZ_TARGETS) for FUZZ_SECONDS each, FUZZ_JOBS at a time
# (default 1: one after the other). The long campaigns recorded in the README ran as
# FUZZ_SECONDS=3600 FUZZ_JOBS=9 nice -n 19 scripts/dev.sh fuzz.
fuzz() {
    local secs=${FUZZ_SECONDS:-30} jobs=${FUZZ_JOBS:-1}
    log "fuzzing (build-fuzz/, ${secs}s per target, $jobs at a time)"
    CC=clang setup_dir build-fuzz -Dfuzz=true -Db_lundef=false -Dbuildtype=debugoptimized
    ninja -C build-fuzz -j "$JOBS"
    local targets=() f
    for f in build-fuzz/tests/fuzz/fuzz-*; do
        [ -x "$f" ] && [ -f "$f" ] || continue
        if [ -n "${FUZZ_TARGETS:-}" ] && ! [[ " $FUZZ_TARGETS " == *" $(basename "$f") "* ]]; then
            continue
        fi
        targets+=("$f")
    done
    [ "${#targets[@]}" -gt 0 ] || { log "no fuzz targets were built"; return 1; }
    local failed=0 running=0
    for f in "${targets[@]}"; do
        if [ "$running" -ge "$jobs" ]; then
            wait -n || failed=1
            running=$((running - 1))
        fi
        fuzz_one "$f" "$secs" &
        running=$((running + 1))
    done
    while [ "$running" -gt 0 ]; do
        wait -n || failed=1
        running=$((running - 1))
    done
    [ "$failed" -eq 0 ] || { log "a fuzz target failed (see above)"; return 1; }
}

# "N passed, N failed" over the suites of a meson build dir (its last test run).
count_results() { # dir
    local log="$1/meson-logs/testlog.json"
    local ok bad
    ok=$(grep -o '"result": "[A-Z]*"' "$log" | grep -c -E '"(OK|EXPECTEDFAIL)"' || true)
    bad=$(grep -o '"result": "[A-Z]*"' "$log" | grep -c -v -E '"(OK|EXPECTEDFAIL|SKIP)"' || true)
    echo "$ok $bad"
}

test_all() {
    deps
    node_deps
    build
    log "tests (build/)"
    meson test -C build --print-errorlogs --num-processes "$JOBS"
    log "tests under AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/)"
    CC=clang setup_dir build-asan -Db_sanitize=address,undefined -Db_lundef=false \
        -Dbuildtype=debugoptimized
    ninja -C build-asan -j "$JOBS"
    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
        LSAN_OPTIONS=suppressions="$PWD/tests/lsan-criterion.supp" \
        meson test -C build-asan --print-errorlogs --num-processes "$JOBS" --timeout-multiplier 4
    fuzz
    local n_fuzz; n_fuzz=$(find build-fuzz/tests/fuzz -maxdepth 1 -type f -name 'fuzz-*' -executable | wc -l)
    read -r ok1 bad1 <<<"$(count_results build)"
    read -r ok2 bad2 <<<"$(count_results build-asan)"
    log "all tests passed (suites: $ok1 plain, $ok2 sanitized; $n_fuzz fuzz targets)"
    echo "$((ok1 + ok2 + n_fuzz)) passed, $((bad1 + bad2)) failed"
}

# The unit suites under valgrind memcheck: meson's `valgrind` test setup (tests/meson.build) wraps
# each test in scripts/valgrind-test.sh, which fails it on any memcheck error in any of its
# processes. Extra arguments go to meson test (--suite NAME, test names, --num-processes).
valgrind_tests() {
    deps
    build
    log "unit suites under valgrind memcheck (build/, meson test --setup valgrind)"
    meson test -C build --setup valgrind --print-errorlogs --num-processes "$JOBS" "$@"
}

case "${1:-}" in
    run) shift; [ "${1:-}" = "--" ] && shift; run "$@" ;;
    test) test_all ;;
    deps) deps; node_deps ;;
    build) deps; build ;;
    fuzz) deps; fuzz ;;
    valgrind) shift; valgrind_tests "$@" ;;
    *) sed -n '2,13p' "$0"; exit 2 ;;
esac
