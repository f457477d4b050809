#!/usr/bin/env bash
# Fuzzes the safetensors parser and weight mapping with libFuzzer.
#
# Usage: tools/fuzz.sh [SECONDS] [extra libFuzzer flags...]
#   SECONDS  total fuzzing time (default 60)
#
# Configures a clang build with EMBEDPOOL_FUZZ=ON in build-fuzz/, builds
# fuzz_safetensors (ASan + UBSan + libFuzzer), and runs it on a scratch corpus
# (build-fuzz/fuzz-corpus/, grows across runs) seeded from tests/fuzz/corpus/
# (never modified). Crash inputs land in build-fuzz/fuzz-artifacts/.
# Exit status: 0 when the time ran out without findings, non-zero otherwise.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/build-fuzz"
seconds="${1:-60}"
if [[ $# -gt 0 ]]; then shift; fi
if ! [[ "$seconds" =~ ^[0-9]+$ ]]; then
  echo "usage: $0 [SECONDS] [libFuzzer flags...]" >&2
  exit 2
fi

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DEMBEDPOOL_FUZZ=ON -DEMBEDPOOL_BUILD_TOOLS=OFF >/dev/null
cmake --build "$build" -j2 --target fuzz_safetensors

mkdir -p "$build/fuzz-corpus" "$build/fuzz-artifacts"
exec "$build/tests/fuzz/fuzz_safetensors" \
  -max_total_time="$seconds" \
  -dict="$root/tests/fuzz/safetensors.dict" \
  -artifact_prefix="$build/fuzz-artifacts/" \
  -print_final_stats=1 \
  "$@" \
  "$build/fuzz-corpus" "$root/tests/fuzz/corpus"
