#!/usr/bin/env bash
# Hostile HTTP clients against one node (1 worker, the built-in hash model,
# HTTP front with its default bounds), driven by tools/bench/hostile_http.py:
#   - a chunked POST of BODY_MB MiB, alone and PARALLEL at once: status, bytes
#     the node read before refusing (target: 413 after at most
#     http.max-body-bytes + 64 KiB), node RSS start/peak/end;
#   - SLOW_CONNS slowloris connections (a header line every 3 s, reconnecting
#     when cut) for SLOW_SECONDS while GET /health/live is probed every 50 ms:
#     worst latency (target: < 100 ms throughout) and RSS.
# Prints a summary and writes $OUT/hostile_http_runs.jsonl and
# $OUT/hostile_http_summary.txt.
#
# usage: tools/bench/hostile_http.sh [BUILD]
# env:   BUILD (build; the argument wins), BODY_MB (300), PARALLEL (3),
#        SLOW_CONNS (64), SLOW_SECONDS (20), NODE_ARGS (extra node flags, e.g.
#        --http.max-connections=128), OUT (tools/bench/results)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
BUILD="${1:-${BUILD:-build}}"
BODY_MB="${BODY_MB:-300}"
PARALLEL="${PARALLEL:-3}"
SLOW_CONNS="${SLOW_CONNS:-64}"
SLOW_SECONDS="${SLOW_SECONDS:-20}"
NODE_ARGS="${NODE_ARGS:-}"
OUT="${OUT:-tools/bench/results}"
BENCH=hostile_http.sh
. tools/bench/common.sh
bench_init "$NODE"

loadavg before
# shellcheck disable=SC2086  # NODE_ARGS is a list of flags
start_node hostile --pool.workers=1 --http.port=0 $NODE_ARGS
wait_for "$TMP/hostile.log" "event=http_listening"
HTTP_PORT=$(grep -o 'event=http_listening.*port=[0-9]*' "$TMP/hostile.log" | head -1 |
  sed 's/.*port=//')
# shellcheck disable=SC2086  # NODE_ARGS is a list of flags
MAX_BODY=$(printf '%s\n' $NODE_ARGS | sed -n 's/^--http.max-body-bytes=//p' | tail -1)
MAX_BODY="${MAX_BODY:-4194304}"

python3 tools/bench/hostile_http.py --port="$HTTP_PORT" --pid="$PID" \
  --log="$TMP/hostile.log" --max-body="$MAX_BODY" --body-mb="$BODY_MB" \
  --parallel="$PARALLEL" --conns="$SLOW_CONNS" --seconds="$SLOW_SECONDS" \
  >"$OUT/hostile_http_runs.jsonl"
stop_all
loadavg after

python3 - "$OUT/hostile_http_runs.jsonl" "$NODE_ARGS" <<'PY' | tee "$OUT/hostile_http_summary.txt"
import json, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
print(f"one node, 1 worker, hash-384, HTTP defaults {sys.argv[2]}".rstrip())
ok = True
for r in runs:
    rss = r["rss_kib"]
    mem = (f"RSS start {rss['start'] / 1024:.0f} MiB, peak {rss['peak'] / 1024:.0f} MiB, "
           f"end {rss['end'] / 1024:.0f} MiB")
    if r["scenario"] == "chunked":
        bound = r["bound_bytes"]
        read = r["node_read_bytes"]
        good = (all(s == 413 for s in r["statuses"]) and len(read) == r["parallel"]
                and all(n <= bound for n in read))
        ok = ok and good
        print(f"chunked {r['body_mib']} MiB x{r['parallel']}: status {r['statuses']}, "
              f"node read {read} bytes before refusing (bound {bound}), "
              f"client sent {r['client_sent_bytes']} bytes in {r['seconds']} s; {mem} "
              f"[{'ok' if good else 'MISSED'}]")
    else:
        lat = r["live_latency_ms"]
        good = lat["max"] is not None and lat["max"] < 100 and set(r["live_statuses"]) == {"200"}
        ok = ok and good
        print(f"slowloris {r['connections']} connections for {r['seconds']} s "
              f"({r['slow_connections_cut_and_reopened']} closed by the node and "
              f"reopened): /health/live x{r['live_probes']} statuses {r['live_statuses']}, "
              f"latency max {lat['max']} ms, p99 {lat['p99']} ms, p50 {lat['p50']} ms; "
              f"{mem} [{'ok' if good else 'MISSED'}]")
print("targets: " + ("all met" if ok else "MISSED"))
PY
