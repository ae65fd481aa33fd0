#!/usr/bin/env bash
# Usage: run.sh N "ARGS" [more "ARGS"...]  -- runs each case as its own process under /usr/bin/time -v
# Build first:  CARGO_TARGET_DIR=$HOME/.cache/boost-bench-target RUSTC_BOOTSTRAP=perpetual nice -n 10 cargo build --release
set -u
cd "$(dirname "$0")"
B=${CARGO_TARGET_DIR:-$HOME/.cache/boost-bench-target}/release/boost-bench
N=$1; shift
for a in "$@"; do
  tag=$(echo "$N $a" | tr -c 'a-zA-Z0-9.' '_')
  mkdir -p results; out=results/$tag.txt
  echo "== $N $a" | tee "$out"
  nice -n 10 timeout "${TIMEOUT:-0}" /usr/bin/time -v "$B" $a --n "$N" >>"$out" 2>&1
  echo "exit=$?" >>"$out"
  grep -E "^RESULT|Maximum resident|Elapsed \(wall|User time|System time|Percent of CPU|^exit=" "$out"
done
