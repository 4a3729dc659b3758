#!/usr/bin/env bash
# Layering of ../shared/DESIGN.md: a lower layer never includes a higher one; JSON stays in api/
# (tests/ and bench/ may use it). Prints each violation and fails when there is one.
set -u
cd "$(dirname "$0")/.." || exit 1
# The layer of a path: its top folder, and for model/ its trade (model/gguf and model/chat use
# only common/; model/tokenizer adds model/gguf; model/ itself may use them all). Peers of one
# rank may include each other's headers.
layer() { case "$1" in model/gguf/*) echo model/gguf;; model/tokenizer/*) echo model/tokenizer;;
                       model/chat/*) echo model/chat;; *) echo "${1%%/*}";; esac; }
rank() { case "$1" in api) echo 60;; server) echo 50;; model) echo 45;; model/tokenizer) echo 41;;
                      model/gguf) echo 40;; model/chat) echo 40;; attention|moe|kvcache) echo 30;;
                      backends) echo 20;; common) echo 10;; *) echo 0;; esac; }
bad=0
checked=0
while IFS= read -r f; do
    d=$(layer "$f"); rd=$(rank "$d"); [ "$rd" -gt 0 ] || continue
    checked=$((checked + 1))
    while IFS= read -r inc; do
        t=$(layer "$inc"); rt=$(rank "$t")
        if [ "$d:$t" = model/gguf:model/chat ] || [ "$d:$t" = model/chat:model/gguf ]; then
            echo "$f includes $inc (model/gguf and model/chat are independent)"; bad=1
        fi
        if [ "$rt" -gt "$rd" ]; then echo "$f includes $inc ($d must not depend on $t)"; bad=1; fi
    done < <(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f")
    if [ "$d" != api ] && grep -q '#[[:space:]]*include[[:space:]]*<jansson.h>' "$f"; then
        echo "$f includes jansson.h (JSON belongs in api/)"; bad=1
    fi
    # Backends are used through their public headers: implementers' headers (*-impl.h) and the
    # CPU backend's kernels (backends/cpu/) stay inside backends/.
    if [ "$d" != backends ] && grep -qE '#[[:space:]]*include[[:space:]]*"backends/(cpu/|([a-z]+/)?[a-z-]*-impl\.h)' "$f"; then
        echo "$f includes a backend's implementation header (use backends/backend.h)"; bad=1
    fi
    # Vendor headers stay behind the backend that uses them.
    if [ "$d" != backends ] && grep -qE '#[[:space:]]*include[[:space:]]*<(cuda|cuda_runtime|hwloc|oneapi/dnnl/dnnl)\.h>' "$f"; then
        echo "$f includes a device library header outside backends/"; bad=1
    fi
done < <(find api server model attention moe kvcache backends common -name '*.[ch]' -o -name '*.cu' 2>/dev/null)
[ "$checked" -gt 0 ] || { echo "no sources found"; exit 1; }
echo "layering: $checked files checked"
exit $bad
