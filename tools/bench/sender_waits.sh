#!/usr/bin/env bash
# Benchmark 2 of issue 3 — the sender waits: the same slow worker as the
# overload benchmark (one worker, fault.compute-delay=10ms: capacity ~100
# texts/s) driven in closed loop by the client library's credit window.
# Target: zero `overloaded` answers, throughput = the worker's capacity within
# 5 %, node RSS flat.
#
# The worker's capacity is measured in the same run: the node is saturated
# first with an open-loop burst (policy reject, far more than it can take) and
# its completion rate is taken as the capacity; the nominal 1 / 10 ms = 100/s
# is printed too.
#
# usage: tools/bench/sender_waits.sh
# env:   BUILD (build), WINDOW (16), DURATION (30), TEXT_BYTES (1024),
#        OUT (tools/bench/results)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
BUILD="${BUILD:-build}"
WINDOW="${WINDOW:-16}"
DURATION="${DURATION:-30}"
TEXT_BYTES="${TEXT_BYTES:-1024}"
OUT="${OUT:-tools/bench/results}"
BENCH=sender_waits.sh
. tools/bench/common.sh
bench_init "$NODE" "$LOADGEN"
SLOW_WORKER=(--pool.workers=1 --fault.compute-delay=10ms)

loadavg before
start_node capacity "${SLOW_WORKER[@]}" --pool.overload-policy=reject
"$LOADGEN" --port="$PORT" --mode=embed --rate=1000 --duration=10 \
  --text-bytes="$TEXT_BYTES" --status-interval=0 >"$OUT/sender_waits_capacity.json"
kill -TERM "$PID"; wait "$PID" 2>/dev/null || true

start_node closed "${SLOW_WORKER[@]}"
echo "sender_waits.sh: closed loop, window $WINDOW, ${DURATION}s" >&2
"$LOADGEN" --port="$PORT" --mode=embed --window="$WINDOW" --duration="$DURATION" \
  --text-bytes="$TEXT_BYTES" --node-pid="$PID" \
  --csv="$OUT/sender_waits.csv" >"$OUT/sender_waits.json"
kill -TERM "$PID"; wait "$PID" 2>/dev/null || true
loadavg after

python3 - "$OUT" "$WINDOW" <<'PY' | tee "$OUT/sender_waits_summary.txt"
import json, sys
out, window = sys.argv[1:3]
cap = json.load(open(f"{out}/sender_waits_capacity.json"))
j = json.load(open(f"{out}/sender_waits.json"))
capacity = cap["throughput_rps"]
r = j["node_rss_kb"]
print(f"worker capacity (saturated, policy reject): {capacity:.1f} texts/s (nominal 100)")
print(f"closed loop, window {window}: sent {j['sent']} completed {j['completed']} "
      f"errors {j['errors']} missing {j['missing']} duplicates {j['duplicates']}")
print(f"throughput {j['throughput_rps']:.1f} req/s = {j['throughput_rps'] / capacity:.3f} "
      f"of capacity ({j['throughput_rps'] / 100:.3f} of nominal)")
print(f"overloaded answers: {j['errors'].get('overloaded', 0)}")
print(f"latency ms p50 {j['latency_ms']['p50']:.1f} p99 {j['latency_ms']['p99']:.1f}")
print(f"node RSS MiB: start {r['start']/1024:.1f} after warm-up {r['after_warmup']/1024:.1f} "
      f"peak {r['peak']/1024:.1f} end {r['end']/1024:.1f} "
      f"(growth {(r['peak'] - r['after_warmup'])/1024:.1f})")
print(f"largest worker queue depth reported: {j.get('max_queue_depth')}")
PY
