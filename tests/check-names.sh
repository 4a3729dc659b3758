#!/usr/bin/env bash
# STYLE.md's prefixes: hs_ public, hs__ internal but not static; a static (function or variable,
# in a .c file or inline in a header) never carries hs__. Prints each offender and fails when
# there is one. Types (struct hs__x, hs__x_fn) may be shared internally and are not checked.
set -u
cd "$(dirname "$0")/.." || exit 1
files=$(find api server model attention moe kvcache backends common bench tests -name '*.[ch]' 2>/dev/null)
[ -n "$files" ] || { echo "no sources found"; exit 1; }
# The declared name is the last identifier before '(' / '=' / '[' / ';' on a line starting with
# `static` (attributes first allowed), or on the line after a `static ...` line that ends
# without one (the ggml style of a return type on its own line).
# shellcheck disable=SC2086
bad=$(awk '
    function check(line) {
        sub(/[(=\[;].*/, "", line)
        n = split(line, w, /[^A-Za-z0-9_#]+/)
        while (n > 0 && w[n] == "") n--
        if (n > 0 && w[n] ~ /^hs__/) print FILENAME ":" FNR ": static " w[n]
    }
    pending { pending = 0; if ($0 ~ /^[A-Za-z_]/) check($0) }
    /^(__attribute__\(\(.*\)\) )?static / {
        line = $0
        sub(/^__attribute__\(\(.*\)\) /, "", line)
        if (line ~ /[(=\[;]/) check(line); else pending = 1
    }
' $files)
if [ -n "$bad" ]; then
    echo "$bad"
    echo "statics must not carry the hs__ prefix (STYLE.md): name them without it"
    exit 1
fi
echo "names: $(echo "$files" | wc -w) files checked"
