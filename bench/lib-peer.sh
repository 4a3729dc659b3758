# Sourced by bench/compare-llamacpp.sh and bench/compare-batched.sh.
# peer_cpu CMD...: runs CMD (which enters llama.cpp's peer chroot at PEER_ROOT) with only the CPU
# backend named by PEER_CPU visible to ggml (e.g. PEER_CPU=haswell, its AVX2 build, beside our
# HS_CPU_ISA=avx2), through a private mount namespace (needs root, as the peer does). Without
# PEER_CPU, ggml picks its best build for this CPU, as it always does.
PEER_ROOT=${PEER_ROOT:-/var/tmp/llamacpp-peer}
peer_cpu() {
    if [ -z "${PEER_CPU:-}" ]; then
        "$@"
        return
    fi
    local b="$PEER_ROOT/usr/lib/x86_64-linux-gnu/ggml/backends0" d rc=0
    [ -f "$b/libggml-cpu-$PEER_CPU.so" ] || {
        echo "no llama.cpp CPU backend '$PEER_CPU' in $b" >&2
        return 2
    }
    d=$(mktemp -d)
    cp "$b/libggml-cpu-$PEER_CPU.so" "$d/"
    unshare -m sh -c 'mount --bind "$1" "$2" && shift 2 && exec "$@"' sh "$d" "$b" "$@" || rc=$?
    rm -rf "$d"
    return "$rc"
}
