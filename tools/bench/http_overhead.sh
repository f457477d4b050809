#!/usr/bin/env bash
# Per-request overhead of the HTTP front against the actor path, side by side
# in one run on one node: embedpool-loadgen (BASP, pool::client) and
# http_overhead_client (POST /v1/embeddings, one keep-alive connection per
# in-flight request) at the same windows, one text per request. Prints
# throughput and latency of both and the ratio HTTP / actor.
#
# usage: tools/bench/http_overhead.sh
# env:   BUILD (build), WORKERS (1), TEXT_BYTES (64), SECONDS_EACH (4),
#        WINDOWS ("1 16"), OUT (tools/bench/results)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
BUILD="${BUILD:-build}"
WORKERS="${WORKERS:-1}"
TEXT_BYTES="${TEXT_BYTES:-64}"
SECONDS_EACH="${SECONDS_EACH:-4}"
WINDOWS="${WINDOWS:-1 16}"
OUT="${OUT:-tools/bench/results}"
BENCH=http_overhead.sh
. tools/bench/common.sh
HTTP_CLIENT="$BUILD/tools/http_overhead_client"
bench_init "$NODE" "$LOADGEN" "$HTTP_CLIENT"

max_window=1
for w in $WINDOWS; do [ "$w" -gt "$max_window" ] && max_window="$w"; done

loadavg before
# One HTTP thread per client connection, so that no connection waits for one.
start_node http --pool.workers="$WORKERS" --http.port=0 --http.threads="$max_window"
wait_for "$TMP/http.log" "event=http_listening"
HTTP_PORT=$(grep -o 'event=http_listening.*port=[0-9]*' "$TMP/http.log" | head -1 |
  sed 's/.*port=//')

: >"$OUT/http_overhead_runs.jsonl"
for w in $WINDOWS; do
  "$LOADGEN" --port="$PORT" --mode=embed --window="$w" --duration="$SECONDS_EACH" \
    --text-bytes="$TEXT_BYTES" --status-interval=0 |
    python3 -c 'import json,sys; j=json.load(sys.stdin); j["path"]="actor"; print(json.dumps(j))' \
      >>"$OUT/http_overhead_runs.jsonl"
  "$HTTP_CLIENT" --port="$HTTP_PORT" --path=/v1/embeddings --window="$w" \
    --seconds="$SECONDS_EACH" --text-bytes="$TEXT_BYTES" >>"$OUT/http_overhead_runs.jsonl"
done
stop_all
loadavg after

python3 - "$OUT" "$WORKERS" "$TEXT_BYTES" <<'PY' | tee "$OUT/http_overhead_summary.txt"
import json, sys
out, workers, text_bytes = sys.argv[1:4]
runs = [json.loads(line) for line in open(f"{out}/http_overhead_runs.jsonl")]
print(f"one node, {workers} worker(s), hash-384, {text_bytes}-byte texts, one text per request")
print(f"{'window':>6} {'path':16} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
by_window = {}
for j in runs:
    path = "actor (BASP)" if j["path"] == "actor" else "HTTP " + j["path"]
    errors = sum(j["errors"].values())
    print(f"{j['window']:6} {path:16} {j['throughput_rps']:9.0f} "
          f"{j['latency_ms']['p50']:8.3f} {j['latency_ms']['p99']:8.3f} {errors:7}")
    by_window.setdefault(j["window"], {})["actor" if j["path"] == "actor" else "http"] = j
for w, pair in by_window.items():
    a, h = pair["actor"], pair["http"]
    print(f"window {w}: HTTP / actor throughput = {h['throughput_rps'] / a['throughput_rps']:.2f}; "
          f"p50 latency HTTP - actor = {h['latency_ms']['p50'] - a['latency_ms']['p50']:+.3f} ms")
PY
