#!/usr/bin/env bash
# The scheduler defaults of pool::node_caf_defaults / client_caf_defaults
# against CAF 0.17's own (work-stealing.moderate-poll-attempts=500,
# relaxed-sleep-duration=10ms), side by side in one run: two nodes (hash-384,
# one worker) started together, measured idle over the same IDLE_SECONDS, then
# in interleaved rounds: one request at a time (floor_probe, each call timed
# alone, the probe's client with the same settings as its node), embed at
# window 256 and batches of 16 at window 16 (load generator).
#
# usage: tools/bench/scheduler_defaults.sh
# env:   BUILD (build), ROUNDS (3), CALLS (3000), SECONDS_EACH (4),
#        IDLE_SECONDS (30), OUT (tools/bench/results)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
BUILD="${BUILD:-build}"
ROUNDS="${ROUNDS:-3}"
CALLS="${CALLS:-3000}"
SECONDS_EACH="${SECONDS_EACH:-4}"
IDLE_SECONDS="${IDLE_SECONDS:-30}"
OUT="${OUT:-tools/bench/results}"
BENCH=scheduler_defaults.sh
. tools/bench/common.sh
PROBE="$BUILD/tools/floor_probe"
bench_init "$NODE" "$LOADGEN" "$PROBE"
CAF_OWN=(--work-stealing.moderate-poll-attempts=500 --work-stealing.relaxed-sleep-duration=10ms)

echo "$BENCH: load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
start_node ours --pool.workers=1
OURS_PID=$PID
OURS_PORT=$PORT
start_node caf --pool.workers=1 "${CAF_OWN[@]}"
CAF_PID=$PID
CAF_PORT=$PORT

RUNS="$OUT/scheduler_defaults_runs.jsonl"
: >"$RUNS"
o0=$(cpu_ticks "$OURS_PID")
c0=$(cpu_ticks "$CAF_PID")
sleep "$IDLE_SECONDS"
o1=$(cpu_ticks "$OURS_PID")
c1=$(cpu_ticks "$CAF_PID")
hz=$(getconf CLK_TCK)
echo "{\"side\":\"ours\",\"kind\":\"idle\",\"ticks\":$((o1 - o0)),\"hz\":$hz,\"seconds\":$IDLE_SECONDS}" >>"$RUNS"
echo "{\"side\":\"caf\",\"kind\":\"idle\",\"ticks\":$((c1 - c0)),\"hz\":$hz,\"seconds\":$IDLE_SECONDS}" >>"$RUNS"

tag() { tag_json "\"side\":\"$1\",\"kind\":\"$2\""; }
for round in $(seq 1 "$ROUNDS"); do
  echo "$BENCH: round $round of $ROUNDS" >&2
  "$PROBE" pool --port="$OURS_PORT" --calls="$CALLS" | tag ours latency >>"$RUNS"
  "$PROBE" pool --port="$CAF_PORT" --calls="$CALLS" "${CAF_OWN[@]}" | tag caf latency >>"$RUNS"
  for side in ours caf; do
    port=$OURS_PORT
    [ "$side" = caf ] && port=$CAF_PORT
    "$LOADGEN" --port="$port" --mode=embed --window=256 --duration="$SECONDS_EACH" --text-bytes=64 \
      --status-interval=0 2>/dev/null | tag "$side" embed >>"$RUNS"
    "$LOADGEN" --port="$port" --mode=batch --batch-size=16 --window=16 --text-bytes=64 \
      --duration="$SECONDS_EACH" --status-interval=0 2>/dev/null | tag "$side" batch >>"$RUNS"
  done
done
stop_all
echo "$BENCH: load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$RUNS" <<'PY' | tee "$OUT/scheduler_defaults_summary.txt"
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
def pick(side, kind, key):
    return statistics.median(r[key] for r in runs if r["side"] == side and r["kind"] == kind)
def idle(side):
    r = next(r for r in runs if r["side"] == side and r["kind"] == "idle")
    return 100 * r["ticks"] / r["hz"] / r["seconds"]
rows = [
    ("idle node, % of one core", idle("ours"), idle("caf"), "{:.1f}"),
    ("one request p50, us", pick("ours", "latency", "p50_us"), pick("caf", "latency", "p50_us"), "{:.0f}"),
    ("one request p99, us", pick("ours", "latency", "p99_us"), pick("caf", "latency", "p99_us"), "{:.0f}"),
    ("embed w256, req/s", pick("ours", "embed", "throughput_rps"), pick("caf", "embed", "throughput_rps"), "{:.0f}"),
    ("batch16 w16, texts/s", pick("ours", "batch", "throughput_texts_per_s"),
     pick("caf", "batch", "throughput_texts_per_s"), "{:.0f}"),
]
print(f"{'(medians of the rounds)':28} {'embedpool defaults':>18} {'CAF defaults':>13} {'ratio':>6}")
for name, ours, caf, fmt in rows:
    ratio = ours / caf if caf else float("nan")
    print(f"{name:28} {fmt.format(ours):>18} {fmt.format(caf):>13} {ratio:6.2f}")
PY
