#!/usr/bin/env bash
# The C engine's differential tests (tests/unit/test_native_engine.py) under ASan + UBSan, then
# under ThreadSanitizer (the engine reads a kernel log in two threads). Not part of `make test`:
# it builds the engine twice more and runs slower. Run with `make sanitize`.
#
# Each pass copies the working tree (without .git, venvs and runs) to a temporary directory, builds the extension
# there with the sanitizer, and runs the tests from that tree with the sanitizer's runtime
# preloaded into Python (CPython itself is not instrumented: only the engine is checked).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="$ROOT/.venv/bin/python"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# the tests compare the engines on ../shared's fixtures too, when the repo has them beside it
if [ -d "$ROOT/../shared" ]; then ln -s "$(cd "$ROOT/../shared" && pwd)" "$work/shared"; fi

run_pass() {
    local flags="$1" runtimes="$2" tree="$work/$3"
    mkdir -p "$tree"
    tar -C "$ROOT" --exclude=./.git --exclude='./.venv*' --exclude=./runs --exclude=./bench/out \
        --exclude=./build --exclude='*.so' -cf - . | tar -C "$tree" -xf -
    (cd "$tree" && CFLAGS="$flags -fno-omit-frame-pointer -O1 -g" LDFLAGS="$flags" \
        "$PY" setup.py -q build_ext --inplace --force >/dev/null 2>"$tree/build.log") ||
        { cat "$tree/build.log"; exit 1; }
    local preload=""
    for lib in $runtimes; do preload="$preload $(gcc -print-file-name="$lib")"; done
    echo "== $3: tests/unit/test_native_engine.py, engine built with $flags"
    (cd "$tree" && LD_PRELOAD="${preload# }" PYTHONPATH="$tree/src" \
        ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        TSAN_OPTIONS=halt_on_error=1:report_signal_unsafe=0 \
        "$PY" -m pytest -q -p no:cacheprovider tests/unit/test_native_engine.py)
}

run_pass "-fsanitize=address,undefined -fno-sanitize-recover=undefined" "libasan.so libubsan.so" asan-ubsan
run_pass "-fsanitize=thread" "libtsan.so" tsan
