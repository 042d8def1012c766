#!/bin/sh
# Run every benchmark in turn and print each one's JSON line (progress goes to stderr).
# Usage: bench/run_all.sh [--quick]    (from the repository root, with the project's venv)
set -eu
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
for bench in propagation efficiency storm idle ledger_scale failover; do
    echo "# $bench" >&2
    "$PY" "bench/$bench.py" "$@" 2>>"${BENCH_LOG:-/dev/null}" | tail -n 1
done
