#!/usr/bin/env bash
# Runs a test program under valgrind memcheck (meson's `--setup valgrind` wraps every test of the
# unit suites with it): `valgrind-test.sh PROGRAM ARGS...`. Criterion runs each test in a child
# process and ignores how that child exits, so valgrind's own exit code says nothing about the
# tests: every process (children traced, interpreters skipped) writes its report to a file of its
# own, and any report with an error (invalid access, uninitialised value used, memory definitely
# or indirectly lost) fails the run, after printing it.
set -u
# Script tests (Python, Node, shell) check file formats and HTTP, not our memory: run them as is.
case "$(basename "$1")" in
    python3* | node | bash | sh) exec "$@" ;;
esac
logs=$(mktemp -d "${TMPDIR:-/tmp}/hs-valgrind.XXXXXX") || exit 1
supp=$(dirname "$0")/valgrind.supp
valgrind --tool=memcheck --quiet --trace-children=yes \
    --trace-children-skip='*/python3*,*/node,*/sh,*/bash,*/env' \
    --leak-check=full --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect \
    --track-origins=yes --num-callers=30 --error-exitcode=97 \
    --suppressions="$supp" --log-file="$logs/vg.%p" "$@"
rc=$?
bad=0
for f in "$logs"/vg.*; do
    [ -s "$f" ] || continue
    echo "==== valgrind report ($f) for: $*" >&2
    cat "$f" >&2
    bad=1
done
rm -rf "$logs"
if [ "$bad" -ne 0 ]; then
    echo "valgrind: errors in $*" >&2
    exit 1
fi
exit "$rc"
