#!/usr/bin/env bash
# Issue 5's benchmark: smoothd's agent against browser-use 0.13.14 on the same 6 local pages, with
# the same scripted OpenAI-compatible model and the same metric code, the two clients interleaved
# round by round (bench/peer-bench, see its README). Builds smoothd in release mode first.
#
#   bench/agent-vs-browser-use.sh                 # 1 warm-up + 5 measured rounds
#   bench/agent-vs-browser-use.sh --runs 10       # more rounds
#
# Results: bench/peer-bench/results/compare/{browser-use,smoothd}.json and comparison.md;
# BENCHMARKS.md says what they mean. Needs Debian's chromium, python3, and PyPI/npm access once
# (bench/peer-bench/setup.sh makes its .venv).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release -p smoothd
export SMOOTHD_BIN="$PWD/target/release/smoothd"
cd bench/peer-bench
exec bash compare.sh "$@"
