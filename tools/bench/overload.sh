#!/usr/bin/env bash
# Benchmarks 1 and 4 of issue 3 — the seed's scenario — in one run:
# one worker slowed to ~100 texts/s (fault.compute-delay=10ms), offered RATE
# embed requests/s of TEXT_BYTES-byte texts for DURATION seconds (open loop),
# against
#   1. embedpool, pool.overload-policy=wait
#   2. embedpool, pool.overload-policy=reject
#   3. embedpool-naive-node: one plain CAF actor with an unbounded mailbox doing
#      the same slow work (the seed's "before")
# and reports node RSS start / after warm-up / peak / end, the largest worker
# queue depth the node reported, answered / overloaded / expired counts and
# the exactly-once check; then plots node RSS over time (gnuplot, SVG).
#
# usage: tools/bench/overload.sh            (from the repository root)
# env:   BUILD (build), RATE (10000), DURATION (60), TEXT_BYTES (1024),
#        WARMUP (5), OUT (tools/bench/results), NAIVE_MAX_OUTSTANDING (1000000),
#        PLOT_ONLY (0; 1 = only redraw the plot from the CSVs already in $OUT)
# Output: $OUT/overload_{wait,reject,naive}.json and .csv, $OUT/overload_rss.svg,
#         $OUT/overload_summary.txt
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
BUILD="${BUILD:-build}"
RATE="${RATE:-10000}"
DURATION="${DURATION:-60}"
TEXT_BYTES="${TEXT_BYTES:-1024}"
WARMUP="${WARMUP:-5}"
OUT="${OUT:-tools/bench/results}"
NAIVE_MAX_OUTSTANDING="${NAIVE_MAX_OUTSTANDING:-1000000}"
PLOT_ONLY="${PLOT_ONLY:-0}"
BENCH=overload.sh

# Node RSS over time, from the three CSVs: the top panel shows all three runs
# on the naive node's scale; the bottom one the two embedpool runs on their
# own scale, where their bounded RSS is visible (on the top one they lie on
# the axis). White background, so the plot reads on dark pages too; no
# enhanced text, so the title's "~" is printed, not read as an overprint.
plot_rss() {
  if ! command -v gnuplot >/dev/null; then
    echo "overload.sh: gnuplot not installed (apt-get install gnuplot-nox): no plot" >&2
    return 0
  fi
  gnuplot <<GP
set terminal svg size 900,800 dynamic font "sans,12" background rgb "white"
set termoption noenhanced
set output "$OUT/overload_rss.svg"
set datafile separator ","
set grid
set key top left
set xlabel "seconds since the load started"
set ylabel "node RSS (MiB)"
rss(kb) = kb > 0 ? kb / 1024.0 : NaN
set multiplot layout 2,1 title "Node RSS under ${RATE} embed req/s of ${TEXT_BYTES}-byte texts, one worker at ~100 texts/s"
set title "all three nodes"
plot "$OUT/overload_naive.csv" every ::1 using 1:(rss(\$7)) with lines lw 2 lc rgb "#d62728" title "naive CAF actor, unbounded mailbox", \
     "$OUT/overload_wait.csv" every ::1 using 1:(rss(\$7)) with lines lw 2 lc rgb "#1f77b4" title "embedpool, policy wait", \
     "$OUT/overload_reject.csv" every ::1 using 1:(rss(\$7)) with lines lw 2 lc rgb "#2ca02c" title "embedpool, policy reject"
set title "embedpool only (its own scale)"
set yrange [0:*]
set key bottom right
plot "$OUT/overload_wait.csv" every ::1 using 1:(rss(\$7)) with lines lw 2 lc rgb "#1f77b4" title "embedpool, policy wait", \
     "$OUT/overload_reject.csv" every ::1 using 1:(rss(\$7)) with lines lw 2 lc rgb "#2ca02c" title "embedpool, policy reject"
unset multiplot
GP
  echo "overload.sh: wrote $OUT/overload_rss.svg" >&2
}

if [ "$PLOT_ONLY" = 1 ]; then
  plot_rss
  exit 0
fi

. tools/bench/common.sh
bench_init "$NODE" "$NAIVE" "$LOADGEN"

run_pool() {  # run_pool POLICY
  local policy="$1"
  start_node "node-$policy" --pool.workers=1 --fault.compute-delay=10ms \
    --pool.overload-policy="$policy"
  local pid="$PID" port="$PORT"
  echo "overload.sh: embedpool policy=$policy pid=$pid port=$port: $RATE req/s for ${DURATION}s" >&2
  "$LOADGEN" --host=127.0.0.1 --port="$port" --mode=embed --rate="$RATE" \
    --duration="$DURATION" --text-bytes="$TEXT_BYTES" --node-pid="$pid" \
    --warmup="$WARMUP" --csv="$OUT/overload_$policy.csv" >"$OUT/overload_$policy.json" ||
    echo "overload.sh: policy=$policy: exactly-once check FAILED (see missing/duplicates)" >&2
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

run_naive() {
  "$NAIVE" --port=0 --compute-delay=10ms >"$TMP/naive.out" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  local port
  wait_for "$TMP/naive.out" "event=listening"
  port=$(port_of "$TMP/naive.out")
  echo "overload.sh: naive unbounded actor pid=$pid port=$port: $RATE req/s for ${DURATION}s" >&2
  # The naive actor answers status only behind its whole mailbox: don't poll.
  # It answers ~100 requests/s, so nearly all requests are still queued in its
  # mailbox when the run ends: they are reported as `missing` (unanswered),
  # with a timeout long enough that no client-side timeout fires meanwhile.
  "$LOADGEN" --host=127.0.0.1 --port="$port" --mode=embed --rate="$RATE" \
    --duration="$DURATION" --text-bytes="$TEXT_BYTES" --node-pid="$pid" \
    --warmup="$WARMUP" --status-interval=0 --timeout=3600 --drain-wait=2 \
    --max-outstanding="$NAIVE_MAX_OUTSTANDING" \
    --csv="$OUT/overload_naive.csv" >"$OUT/overload_naive.json" || true
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

loadavg before
run_pool wait
run_pool reject
run_naive
loadavg after

python3 - "$OUT" "$RATE" "$DURATION" "$TEXT_BYTES" <<'PY' | tee "$OUT/overload_summary.txt"
import json, sys
out, rate, duration, text_bytes = sys.argv[1:5]
rows = {}
for name in ("wait", "reject", "naive"):
    with open(f"{out}/overload_{name}.json") as f:
        rows[name] = json.load(f)
print(f"offered {rate} embed req/s of {text_bytes}-byte texts for {duration} s; "
      "one worker at fault.compute-delay=10ms (~100 texts/s)")
print(f"{'':8} {'sent':>8} {'answered':>8} {'overload':>8} {'expired':>8} {'missing':>7} "
      f"{'dups':>5} {'unsent':>7} {'rss0 MiB':>9} {'warm MiB':>9} {'peak MiB':>9} "
      f"{'end MiB':>8} {'growth':>8} {'max qd':>7}")
growth = {}
for name, j in rows.items():
    r = j["node_rss_kb"]
    g = (r["peak"] - r["after_warmup"]) / 1024
    growth[name] = g
    e = j["errors"]
    print(f"{name:8} {j['sent']:8} {j['completed']:8} {e.get('overloaded', 0):8} "
          f"{e.get('deadline_exceeded', 0):8} {j['missing']:7} {j['duplicates']:5} "
          f"{j.get('unsent', 0):7} {r['start']/1024:9.1f} {r['after_warmup']/1024:9.1f} "
          f"{r['peak']/1024:9.1f} {r['end']/1024:8.1f} {g:8.1f} "
          f"{j.get('max_queue_depth', '-'):>7}")
print("growth = peak RSS - RSS after warm-up (MiB); target <= 16 MiB for wait and reject;")
print("naive: 'missing' = still queued in its unbounded mailbox when the run ended")
print("max qd = largest worker queue depth the node reported (capacity 100)")
for name in ("wait", "reject"):
    ratio = growth["naive"] / growth[name] if growth[name] > 0 else float("inf")
    print(f"naive growth / {name} growth = {ratio:.1f}x")
PY

plot_rss
