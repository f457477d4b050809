#!/usr/bin/env bash
# Benchmark of issue 5: the same number of workers all local vs spread over
# two nodes on this machine, side by side in one run.
#   local : one node with 2 workers
#   spread: a head node with 1 worker + a worker node lending it 1 worker
# Each is driven by embedpool-loadgen in closed loop (window W) for throughput
# and with window 1 for the per-request latency; prints one JSON object with
# the throughput ratio (spread / local) and the added p50 latency.
#
# usage: tools/bench/cluster.sh
# env:   BUILD (build), WINDOW (64), DURATION (15), TEXT_BYTES (256),
#        OUT (tools/bench/results)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
BUILD="${BUILD:-build}"
WINDOW="${WINDOW:-64}"
DURATION="${DURATION:-15}"
TEXT_BYTES="${TEXT_BYTES:-256}"
OUT="${OUT:-tools/bench/results}"
BENCH=cluster.sh
. tools/bench/common.sh
bench_init "$NODE" "$LOADGEN"

start_head() {  # start_head NAME WORKERS; sets PORT
  start_node "$1" --pool.workers="$2" --log.stats-interval=0s
}

start_worker_node() {  # start_worker_node NAME HEAD_PORT
  local log="$TMP/$1.log"
  "$NODE" --node.role=worker --node.join="127.0.0.1:$2" --node.name="$1" \
    --pool.workers=1 --log.console=false --log.file="$log" >"$TMP/$1.out" 2>&1 &
  PIDS+=("$!")
  wait_for "$log" "event=joined"
}

run_load() {  # run_load NAME WINDOW
  "$LOADGEN" --port="$PORT" --mode=embed --window="$2" --duration="$DURATION" \
    --text-bytes="$TEXT_BYTES" --status-interval=0 >"$OUT/cluster_$1.json"
}

loadavg before
start_head local 2
run_load local_w "$WINDOW"
run_load local_1 1
stop_all

start_head head 1
start_worker_node lender "$PORT"
run_load spread_w "$WINDOW"
run_load spread_1 1
stop_all

python3 - "$OUT" "$WINDOW" <<'PY'
import json, sys
out, window = sys.argv[1], sys.argv[2]
r = {k: json.load(open(f"{out}/cluster_{k}.json")) for k in
     ["local_w", "local_1", "spread_w", "spread_1"]}
summary = {
    "window": int(window),
    "local_rps": r["local_w"]["throughput_rps"],
    "spread_rps": r["spread_w"]["throughput_rps"],
    "throughput_ratio_spread_over_local":
        round(r["spread_w"]["throughput_rps"] / r["local_w"]["throughput_rps"], 3),
    "local_p50_ms_window1": r["local_1"]["latency_ms"]["p50"],
    "spread_p50_ms_window1": r["spread_1"]["latency_ms"]["p50"],
    "errors": {k: v["errors"] for k, v in r.items()},
    "missing": sum(v["missing"] for v in r.values()),
}
# With window 1 half the requests go to the remote worker, so the remote hop
# costs twice the difference of the medians' mean.
summary["added_ms_per_remote_request_estimate"] = round(
    2 * (r["spread_1"]["latency_ms"]["p50"] - r["local_1"]["latency_ms"]["p50"]), 3)
print(json.dumps(summary))
PY
loadavg after
