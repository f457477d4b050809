#!/usr/bin/env bash
# Benchmark 3 of issue 3 — pool overhead: the node over loopback (embed and
# batch requests, several client windows) against the same embedder (hash-384)
# called directly in one process on the same texts, as a ratio, in one run.
# Target: >= 0.5 of direct throughput with the hash model on short texts.
#
# The node runs WORKERS workers (default 1: one worker thread against one
# direct thread, so the ratio is the pool's own cost).
#
# usage: tools/bench/pool_overhead.sh
# env:   BUILD (build), WORKERS (1), TEXT_BYTES (64), BATCH_SIZE (16),
#        SECONDS_EACH (5), EMBED_WINDOWS ("1 16 64 256"), BATCH_WINDOWS ("1 4 16"),
#        OUT (tools/bench/results)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
BUILD="${BUILD:-build}"
WORKERS="${WORKERS:-1}"
TEXT_BYTES="${TEXT_BYTES:-64}"
BATCH_SIZE="${BATCH_SIZE:-16}"
SECONDS_EACH="${SECONDS_EACH:-5}"
EMBED_WINDOWS="${EMBED_WINDOWS:-1 16 64 256}"
BATCH_WINDOWS="${BATCH_WINDOWS:-1 4 16}"
OUT="${OUT:-tools/bench/results}"
BENCH=pool_overhead.sh
. tools/bench/common.sh
DIRECT="$BUILD/tools/pool_overhead_direct"
bench_init "$NODE" "$LOADGEN" "$DIRECT"

loadavg before
"$DIRECT" --text-bytes="$TEXT_BYTES" --batch-size="$BATCH_SIZE" \
  --seconds="$SECONDS_EACH" >"$OUT/pool_overhead_direct.json"

start_node pool --pool.workers="$WORKERS"

: >"$OUT/pool_overhead_runs.jsonl"
for w in $EMBED_WINDOWS; do
  "$LOADGEN" --port="$PORT" --mode=embed --window="$w" --duration="$SECONDS_EACH" \
    --text-bytes="$TEXT_BYTES" --status-interval=0 >>"$OUT/pool_overhead_runs.jsonl"
done
for w in $BATCH_WINDOWS; do
  "$LOADGEN" --port="$PORT" --mode=batch --batch-size="$BATCH_SIZE" --window="$w" \
    --duration="$SECONDS_EACH" --text-bytes="$TEXT_BYTES" --status-interval=0 \
    >>"$OUT/pool_overhead_runs.jsonl"
done
stop_all
loadavg after

python3 - "$OUT" "$WORKERS" <<'PY' | tee "$OUT/pool_overhead_summary.txt"
import json, sys
out, workers = sys.argv[1:3]
d = json.load(open(f"{out}/pool_overhead_direct.json"))
print(f"direct ({d['model']}, one thread, {d['text_bytes']}-byte texts): "
      f"{d['embed_rps']:.0f} embeds/s one text per call; {d['batch_rps']:.0f} calls/s "
      f"= {d['batch_texts_per_s']:.0f} texts/s in batches of {d['batch_size']}")
print(f"node over loopback, {workers} worker(s):")
print(f"{'mode':6} {'window':>6} {'req/s':>9} {'texts/s':>9} {'ratio':>6} {'p50 ms':>7} "
      f"{'p99 ms':>7} {'errors':>7} {'missing':>7}")
for line in open(f"{out}/pool_overhead_runs.jsonl"):
    j = json.loads(line)
    if j["mode"] == "embed":
        texts = j["throughput_rps"]
        direct = d["embed_rps"]
    else:
        texts = j["throughput_texts_per_s"]
        direct = d["batch_texts_per_s"]
    errors = sum(j["errors"].values())
    print(f"{j['mode']:6} {j['window']:6} {j['throughput_rps']:9.0f} {texts:9.0f} "
          f"{texts / direct:6.2f} {j['latency_ms']['p50']:7.2f} {j['latency_ms']['p99']:7.2f} "
          f"{errors:7} {j['missing']:7}")
print("ratio = node texts/s / direct texts/s (same call shape); target >= 0.5")
PY
