#!/usr/bin/env bash
# Careless and hostile peers against one node each (default configuration),
# with a well-behaved client beside them: the scenarios of issue #11.
#
#   slow-reader   one raw BASP peer offers RATE embeds/s of 1 KiB for DURATION
#                 seconds and never reads its socket (it connects again when
#                 the node closes the connection); run twice: with the bound
#                 off (node.max-unread-bytes-per-peer=0, "before") and on
#   batches       8 peers keep 4 batches of 256 x 64 KiB each in flight
#   unknown       100,000 messages of 1 MB that no handler takes
#   status        200,000 status requests, never reading the replies
#   http-*        tools/bench/hostile_http.sh (chunked 300 MB body, slowloris),
#                 when present
#
# For each: node RSS start / after warm-up / peak / end, the well-behaved
# client's throughput during the attack as a ratio to its throughput alone
# (embedpool-loadgen, window 16, 64-byte texts, the same run), its worst
# latency, an embed right after the attack, the ledger, and the targets.
#
# usage: tools/bench/hostile.sh              (from the repository root)
# env:   BUILD (build), OUT (tools/bench/results), DURATION (60), RATE (15000),
#        BASELINE (10: seconds of the client alone), SCENARIOS (all of
#        "slow-reader-before slow-reader batches unknown status http")
# Output: $OUT/hostile_*.json, $OUT/hostile_*_rss.csv, $OUT/hostile_summary.txt,
#         $OUT/hostile_slow_reader_rss.svg
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
BUILD="${BUILD:-build}"
OUT="${OUT:-tools/bench/results}"
DURATION="${DURATION:-60}"
RATE="${RATE:-15000}"
BASELINE="${BASELINE:-10}"
SCENARIOS="${SCENARIOS:-slow-reader-before slow-reader batches unknown status http}"
BENCH=hostile.sh
. tools/bench/common.sh
HOSTILE="$BUILD/tools/hostile_peer"
CLI="$BUILD/apps/embedpool-cli"
bench_init "$NODE" "$LOADGEN" "$HOSTILE" "$CLI"

rss_of() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# sample_rss PID FILE: "seconds,rss_kb" every 0.25 s until PID ends.
sample_rss() {
  local pid="$1" file="$2" start
  start=$(date +%s.%N)
  echo "seconds,rss_kb" >"$file"
  while kill -0 "$pid" 2>/dev/null; do
    echo "$(awk -v a="$(date +%s.%N)" -v b="$start" 'BEGIN{printf "%.2f", a - b}'),$(rss_of "$pid")" >>"$file"
    sleep 0.25
  done
}

# well_behaved PORT SECONDS OUTFILE: the client whose service we watch.
well_behaved() {
  "$LOADGEN" --host=127.0.0.1 --port="$1" --mode=embed --window=16 --duration="$2" \
    --text-bytes=64 --status-interval=0 --timeout=30 >"$3" 2>/dev/null || true
}

# run NAME NODE_ARGS -- ATTACK_ARGS...
run() {
  local name="$1" node_args="$2"
  shift 3
  # shellcheck disable=SC2086
  start_node "$name" $node_args
  local pid="$PID" port="$PORT"
  local rss_csv="$OUT/hostile_${name}_rss.csv"
  sample_rss "$pid" "$rss_csv" &
  local sampler=$!
  local rss_start
  rss_start=$(rss_of "$pid")
  echo "$BENCH: $name: node pid=$pid port=$port; the client alone for ${BASELINE}s" >&2
  well_behaved "$port" "$BASELINE" "$TMP/${name}_alone.json"
  local rss_warm
  rss_warm=$(rss_of "$pid")
  echo "$BENCH: $name: attack: $*" >&2
  "$HOSTILE" --port="$port" "$@" >"$TMP/${name}_attack.json" 2>"$TMP/${name}_attack.err" &
  local attacker=$!
  well_behaved "$port" "$DURATION" "$TMP/${name}_during.json"
  wait "$attacker" || echo "$BENCH: $name: attacker: $(cat "$TMP/${name}_attack.err")" >&2
  local t0 t1 after_ok=false
  t0=$(date +%s.%N)
  "$CLI" --port="$port" --timeout=10 embed "right after the attack" >/dev/null 2>&1 &&
    after_ok=true
  t1=$(date +%s.%N)
  local alive=true
  kill -0 "$pid" 2>/dev/null || alive=false
  "$CLI" --port="$port" --timeout=10 status >"$TMP/${name}_status.json" 2>/dev/null ||
    echo '{}' >"$TMP/${name}_status.json"
  sleep 2  # the end sample: after the trimmer's next look
  local rss_end
  rss_end=$(rss_of "$pid")
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  python3 - "$name" "$rss_csv" "$rss_start" "$rss_warm" "$rss_end" "$t0" "$t1" \
    "$after_ok" "$alive" "$TMP" "$OUT" "$TMP/$name.log" <<'PY'
import json, sys
name, rss_csv, start, warm, end, t0, t1, after_ok, alive, tmp, out, log = sys.argv[1:13]
peak = 0
with open(rss_csv) as f:
    next(f)
    for line in f:
        parts = line.strip().split(",")
        if len(parts) == 2 and parts[1]:
            peak = max(peak, int(parts[1]))
def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except Exception:
        return {}
alone = load(f"{tmp}/{name}_alone.json")
during = load(f"{tmp}/{name}_during.json")
status = load(f"{tmp}/{name}_status.json")
attack = load(f"{tmp}/{name}_attack.json")
ledger = status.get("ledger", {})
events = {}
with open(log) as f:
    for line in f:
        for ev in ("peer_unread_bound action=refuse", "peer_unread_bound action=close",
                   "inbox_full_shed", "foreign_message_dropped", "idle_connections_closed"):
            if "event=" + ev in line:
                events[ev] = events.get(ev, 0) + 1
row = {
    "scenario": name,
    "rss_kb": {"start": int(start), "after_warmup": int(warm), "peak": peak, "end": int(end)},
    "client_alone_rps": alone.get("throughput_rps", 0),
    "client_during_rps": during.get("throughput_rps", 0),
    "client_ratio": (during.get("throughput_rps", 0) / alone["throughput_rps"])
                    if alone.get("throughput_rps") else 0,
    "client_during_latency_ms": during.get("latency_ms", {}),
    "client_during_errors": during.get("errors", {}),
    "embed_after_s": float(t1) - float(t0),
    "embed_after_ok": after_ok == "true",
    "node_alive": alive == "true",
    "ledger": ledger,
    "attack": attack,
    "log_lines": events,
}
with open(f"{out}/hostile_{name}.json", "w") as f:
    json.dump(row, f, indent=1)
PY
}

loadavg before
for s in $SCENARIOS; do
  case "$s" in
    slow-reader-before)
      run slow-reader-before "--node.max-unread-bytes-per-peer=0" -- slow-reader \
        --rate="$RATE" --count=800000 --seconds="$DURATION" ;;
    slow-reader)
      run slow-reader "" -- slow-reader --rate="$RATE" --count=800000 --seconds="$DURATION" ;;
    batches)
      run batches "" -- batches --peers=8 --items=256 --text-bytes=65536 --window=4 \
        --seconds="$DURATION" ;;
    unknown)
      run unknown "" -- unknown --count=100000 --bytes=1000000 --seconds="$DURATION" ;;
    status)
      run status "" -- status --count=200000 --seconds="$DURATION" ;;
    http)
      if [ -x tools/bench/hostile_http.sh ]; then
        BUILD="$BUILD" OUT="$OUT" tools/bench/hostile_http.sh ||
          echo "$BENCH: hostile_http.sh failed" >&2
      fi ;;
    *) echo "$BENCH: unknown scenario $s" >&2; exit 2 ;;
  esac
done
loadavg after

python3 - "$OUT" "$DURATION" "$RATE" <<'PY' | tee "$OUT/hostile_summary.txt"
import json, os, sys
out, duration, rate = sys.argv[1], sys.argv[2], sys.argv[3]
mib = 1024
def load(name):
    p = f"{out}/hostile_{name}.json"
    return json.load(open(p)) if os.path.exists(p) else None
def line(r, target, ok):
    k = r["rss_kb"]
    print(f"{r['scenario']:>19}: RSS start {k['start']/mib:.0f} / warm {k['after_warmup']/mib:.0f}"
          f" / peak {k['peak']/mib:.0f} / end {k['end']/mib:.0f} MiB;"
          f" client {r['client_during_rps']:.0f} vs {r['client_alone_rps']:.0f} req/s alone"
          f" = {r['client_ratio']:.2f}; worst {r['client_during_latency_ms'].get('max', 0):.0f} ms;"
          f" embed after {r['embed_after_s']:.2f} s {'ok' if r['embed_after_ok'] else 'FAILED'};"
          f" node {'alive' if r['node_alive'] else 'DEAD'}")
    lg = r.get("ledger", {})
    if lg:
        print(f"{'':>21}ledger: " + ", ".join(f"{k}={v}" for k, v in lg.items()))
    print(f"{'':>21}attack: {json.dumps(r['attack'])}; log: {json.dumps(r['log_lines'])}")
    print(f"{'':>21}target: {target}: {'MET' if ok else 'NOT MET'}")
print(f"hostile.sh: {duration} s per attack; default configuration; RSS in MiB")
r = load("slow-reader-before")
if r:
    g = (r["rss_kb"]["peak"] - r["rss_kb"]["start"]) / mib
    line(r, f"(before: bound off) growth {g:.0f} MiB", True)
r = load("slow-reader")
if r:
    g = (r["rss_kb"]["peak"] - r["rss_kb"]["start"]) / mib
    line(r, f"growth {g:.0f} <= 64 MiB and client ratio >= 0.8",
         g <= 64 and r["client_ratio"] >= 0.8)
r = load("batches")
if r:
    k = r["rss_kb"]
    limit = k["after_warmup"] / mib + 256 + 8 * 16 + 64
    worst = r["client_during_latency_ms"].get("max", 1e9) / 1000
    line(r, f"peak {k['peak']/mib:.0f} <= {limit:.0f} MiB (warm + 256 + 8x16 + 64), listener kept,"
            f" embeds within 2 s (worst during {worst:.2f} s, after {r['embed_after_s']:.2f} s)",
         k["peak"] / mib <= limit and r["node_alive"] and r["embed_after_ok"]
         and worst <= 2 and r["embed_after_s"] <= 2)
for name in ("unknown", "status"):
    r = load(name)
    if r:
        g = (r["rss_kb"]["peak"] - r["rss_kb"]["start"]) / mib
        line(r, f"growth {g:.0f} <= 64 MiB and client ratio >= 0.5",
             g <= 64 and r["client_ratio"] >= 0.5)
PY

if command -v gnuplot >/dev/null && [ -f "$OUT/hostile_slow-reader_rss.csv" ] &&
  [ -f "$OUT/hostile_slow-reader-before_rss.csv" ]; then
  gnuplot <<GP
set terminal svg size 900,700 dynamic font "sans,12" background rgb "white"
set output "$OUT/hostile_slow_reader_rss.svg"
set termoption noenhanced
set datafile separator ","
set grid
set multiplot layout 2,1 title "Node RSS while a peer sends ${RATE} embeds/s of 1 KiB and never reads its replies"
set ylabel "node RSS (MiB)"
set key top left opaque box
plot "$OUT/hostile_slow-reader-before_rss.csv" every ::1 using 1:(\$2 > 0 ? \$2/1024 : NaN) with lines lw 2 title "before: no bound on unread replies", \
     "$OUT/hostile_slow-reader_rss.csv" every ::1 using 1:(\$2 > 0 ? \$2/1024 : NaN) with lines lw 2 title "after: node.max-unread-bytes-per-peer = 16 MiB"
set xlabel "seconds since the node started (the attack starts after the client's ${BASELINE} s alone)"
set yrange [0:96]
set key top right opaque box
plot "$OUT/hostile_slow-reader_rss.csv" every ::1 using 1:(\$2 > 0 ? \$2/1024 : NaN) with lines lw 2 lc 2 title "after, on its own scale: refused at 16 MiB unread, closed at 20 MiB"
unset multiplot
GP
  echo "$BENCH: wrote $OUT/hostile_slow_reader_rss.svg" >&2
fi
