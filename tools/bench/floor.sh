#!/usr/bin/env bash
# How close the node comes to the framework's floor (issue 16), side by side
# in one run, rounds interleaved so that a noisy machine hits both sides:
#
#   latency  one embed request at a time, each call timed alone (p50):
#            pool::client to a node (hash-384, one worker, default settings)
#            against a raw CAF 0.17 request/reply between two processes with
#            the CAF settings of a node and of pool::client
#            (tools/bench/floor_probe.cpp serves and times both);
#            target: pool <= 1.2 x raw
#   embed    window 256, TEXT_BYTES-byte texts, the load generator against
#            direct embedder calls in one thread; target >= 0.7. The client
#            sends queued calls in lists (client_options::coalesce, default).
#            Beside it, for reference: the load generator with every call in
#            a message of its own (--coalesce=0), and a raw CAF request/reply
#            at window 256 (no compute): what one message per request gets
#            out of CAF here
#   batch    batches of BATCH_SIZE at window 16 against direct calls in
#            batches of BATCH_SIZE; target >= 0.85
#   idle     the node's CPU time over IDLE_SECONDS of no traffic, as a share
#            of one core; target <= 1 %
#
# Each run comes right after its own anchor (the raw probe before the pool
# probe; direct calls of the same kind before a throughput run), and each
# ratio is the median of the rounds' ratios, so that a burst of noise from
# outside the machine lands on both halves of a ratio. The figures beside the
# ratios are medians of each side's own rounds, for scale.
# The load average at the start is printed: figures mean something on a quiet
# machine (load average < 1).
#
# usage: tools/bench/floor.sh
# env:   BUILD (build), ROUNDS (5), CALLS (3000 per latency round),
#        SECONDS_EACH (4 per throughput round), TEXT_BYTES (64),
#        BATCH_SIZE (16), IDLE_SECONDS (30), QUIET_WAIT (180: the most seconds
#        to wait at the start for a load average below 1), OUT (tools/bench/results)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
BUILD="${BUILD:-build}"
ROUNDS="${ROUNDS:-5}"
CALLS="${CALLS:-3000}"
SECONDS_EACH="${SECONDS_EACH:-4}"
TEXT_BYTES="${TEXT_BYTES:-64}"
BATCH_SIZE="${BATCH_SIZE:-16}"
IDLE_SECONDS="${IDLE_SECONDS:-30}"
QUIET_WAIT="${QUIET_WAIT:-180}"
OUT="${OUT:-tools/bench/results}"
BENCH=floor.sh
. tools/bench/common.sh
PROBE="$BUILD/tools/floor_probe"
DIRECT="$BUILD/tools/pool_overhead_direct"
bench_init "$NODE" "$LOADGEN" "$PROBE" "$DIRECT"

# Waits (at most QUIET_WAIT seconds) for the one-minute load average to fall
# below 1, e.g. after a build or a previous run.
waited=0
while awk '{exit !($1 >= 1)}' /proc/loadavg && [ "$waited" -lt "$QUIET_WAIT" ]; do
  sleep 5
  waited=$((waited + 5))
done
[ "$waited" -gt 0 ] && echo "floor.sh: waited $waited s for the load average to fall below 1"
echo "floor.sh: load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" \
  "($(nproc) cores; figures are meant for a load average < 1)"

# The raw anchor serves until its stdin closes (fd 4 below).
mkfifo "$TMP/raw.in"
"$PROBE" serve-raw <"$TMP/raw.in" >"$TMP/raw.out" 2>&1 &
PIDS+=("$!")
exec 4>"$TMP/raw.in"
wait_for "$TMP/raw.out" "port="
RAW_PORT=$(sed -n 's/^port=//p' "$TMP/raw.out")

start_node floor --pool.workers=1
NODE_PID=$PID
NODE_PORT=$PORT

# Warm-up, not counted: the first seconds of a fresh node (its allocator,
# the connection's buffers, the worker's estimate of a text's time) are not
# what the rounds measure.
for mode in embed batch; do
  "$LOADGEN" --port="$NODE_PORT" --mode=$mode --batch-size="$BATCH_SIZE" --window=16 \
    --duration=1 --text-bytes="$TEXT_BYTES" --status-interval=0 >/dev/null 2>&1
done

RUNS="$OUT/floor_runs.jsonl"
: >"$RUNS"
for round in $(seq 1 "$ROUNDS"); do
  echo "floor.sh: round $round of $ROUNDS" >&2
  "$PROBE" raw --port="$RAW_PORT" --calls="$CALLS" --text-bytes="$TEXT_BYTES" |
    tag_json "\"round\":$round,\"kind\":\"latency\"" >>"$RUNS"
  "$PROBE" pool --port="$NODE_PORT" --calls="$CALLS" --text-bytes="$TEXT_BYTES" |
    tag_json "\"round\":$round,\"kind\":\"latency\"" >>"$RUNS"
  # Each throughput run right after its own anchor, so that a burst of noise
  # from outside hits both halves of a ratio rather than one.
  "$DIRECT" --text-bytes="$TEXT_BYTES" --batch-size="$BATCH_SIZE" --only=embed \
    --seconds="$SECONDS_EACH" | tag_json "\"round\":$round,\"kind\":\"direct\"" >>"$RUNS"
  "$LOADGEN" --port="$NODE_PORT" --mode=embed --window=256 --duration="$SECONDS_EACH" \
    --text-bytes="$TEXT_BYTES" --status-interval=0 2>/dev/null |
    tag_json "\"round\":$round,\"kind\":\"loadgen\"" >>"$RUNS"
  "$DIRECT" --text-bytes="$TEXT_BYTES" --batch-size="$BATCH_SIZE" --only=batch \
    --seconds="$SECONDS_EACH" | tag_json "\"round\":$round,\"kind\":\"direct\"" >>"$RUNS"
  "$LOADGEN" --port="$NODE_PORT" --mode=batch --batch-size="$BATCH_SIZE" --window=16 \
    --duration="$SECONDS_EACH" --text-bytes="$TEXT_BYTES" --status-interval=0 2>/dev/null |
    tag_json "\"round\":$round,\"kind\":\"loadgen\"" >>"$RUNS"
  "$PROBE" raw-window --port="$RAW_PORT" --window=256 --seconds="$SECONDS_EACH" \
    --text-bytes="$TEXT_BYTES" | tag_json "\"round\":$round,\"kind\":\"raw_window\"" >>"$RUNS"
  "$LOADGEN" --port="$NODE_PORT" --mode=embed --window=256 --duration="$SECONDS_EACH" \
    --text-bytes="$TEXT_BYTES" --status-interval=0 --coalesce=0 2>/dev/null |
    tag_json "\"round\":$round,\"kind\":\"loadgen_single\"" >>"$RUNS"
done

# Idle: no client connected any more; let the last requests drain first.
sleep 2
before=$(cpu_ticks "$NODE_PID")
sleep "$IDLE_SECONDS"
after=$(cpu_ticks "$NODE_PID")
echo "{\"kind\":\"idle\",\"seconds\":$IDLE_SECONDS,\"ticks\":$((after - before)),\"hz\":$(getconf CLK_TCK)}" >>"$RUNS"

exec 4>&-
stop_all
echo "floor.sh: load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$RUNS" <<'PY' | tee "$OUT/floor_summary.txt"
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
def med(xs):
    return statistics.median(xs)
lat = {t: [r["p50_us"] for r in runs if r.get("kind") == "latency" and r["target"] == t]
       for t in ("raw_caf", "embedpool")}
p99 = {t: [r["p99_us"] for r in runs if r.get("kind") == "latency" and r["target"] == t]
       for t in ("raw_caf", "embedpool")}
direct_embed = [r for r in runs if r.get("kind") == "direct" and "embed_rps" in r]
direct_batch = [r for r in runs if r.get("kind") == "direct" and "batch_rps" in r]
direct = direct_embed
embed = [r for r in runs if r.get("kind") == "loadgen" and r["mode"] == "embed"]
batch = [r for r in runs if r.get("kind") == "loadgen" and r["mode"] == "batch"]
idle = next(r for r in runs if r.get("kind") == "idle")
raw_window = [r for r in runs if r.get("kind") == "raw_window"]
single = [r for r in runs if r.get("kind") == "loadgen_single"]
def bad(rs):
    return sum(sum(r["errors"].values()) + r["missing"] for r in rs)
rows = []
# Each ratio is the median of the rounds' ratios: a round's two halves run
# back to back, so noise from outside lands on both; a ratio of medians taken
# separately would pair a quiet round's anchor with a noisy round's figure.
lat_ratios = [p / r for p, r in zip(lat["embedpool"], lat["raw_caf"])]
lat_ratio = med(lat_ratios)
rows.append(("one request, p50", f"{med(lat['embedpool']):.0f} us (p99 {med(p99['embedpool']):.0f})",
             f"raw CAF request/reply {med(lat['raw_caf']):.0f} us (p99 {med(p99['raw_caf']):.0f})",
             f"{lat_ratio:.2f}", "<= 1.2", lat_ratio <= 1.2))
embed_ratios = [e["throughput_rps"] / d["embed_rps"] for e, d in zip(embed, direct_embed)]
embed_ratio = med(embed_ratios)
rows.append(("embed, window 256", f"{med([e['throughput_rps'] for e in embed]):.0f} req/s",
             f"direct calls {med([d['embed_rps'] for d in direct_embed]):.0f} texts/s",
             f"{embed_ratio:.2f}", ">= 0.7", embed_ratio >= 0.7))
batch_ratios = [b["throughput_texts_per_s"] / d["batch_texts_per_s"]
                for b, d in zip(batch, direct_batch)]
batch_ratio = med(batch_ratios)
rows.append((f"batch of {direct[0]['batch_size']}, window 16",
             f"{med([b['throughput_texts_per_s'] for b in batch]):.0f} texts/s",
             f"direct in calls of {direct[0]['batch_size']} "
             f"{med([d['batch_texts_per_s'] for d in direct_batch]):.0f} texts/s",
             f"{batch_ratio:.2f}", ">= 0.85", batch_ratio >= 0.85))
idle_share = idle["ticks"] / idle["hz"] / idle["seconds"]
rows.append((f"idle node, {idle['seconds']} s", f"{100 * idle_share:.1f} % of one core", "",
             f"{100 * idle_share:.1f} %", "<= 1 %", idle_share <= 0.01))
rounds = len(lat["raw_caf"])
print(f"floor.sh: medians of {rounds} interleaved rounds, {direct[0]['text_bytes']}-byte texts, "
      f"{direct[0]['model']}, node with one worker")
print(f"{'':22} {'embedpool':28} {'anchor (same run)':44} {'ratio':>6}  target")
for name, ours, anchor, ratio, target, met in rows:
    print(f"{name:22} {ours:28} {anchor:44} {ratio:>6}  {target:7} {'met' if met else 'NOT met'}")
def spread(xs):
    return " ".join(f"{x:.2f}" for x in xs)
print(f"ratio in each round: one request {spread(lat_ratios)}; embed {spread(embed_ratios)}; "
      f"batch {spread(batch_ratios)}")
if single:
    print(f"reference: embed at window 256 with every call in a message of its own "
          f"(--coalesce=0) {med([r['throughput_rps'] for r in single]):.0f} req/s = "
          f"{med([r['throughput_rps'] / d['embed_rps'] for r, d in zip(single, direct_embed)]):.2f} "
          f"of direct calls; with lists "
          f"{med([e['client']['listed'] / max(e['client']['lists'], 1) for e in embed]):.0f} "
          f"calls per list on average")
if raw_window:
    raw_rps = med([r["throughput_rps"] for r in raw_window])
    print(f"reference: raw CAF request/reply at window 256 (no compute) {raw_rps:.0f} req/s "
          f"= {raw_rps / med([d['embed_rps'] for d in direct_embed]):.2f} of direct calls; "
          f"embed at window 256 reached "
          f"{med([e['throughput_rps'] / r['throughput_rps'] for e, r in zip(embed, raw_window)]):.2f} of it")
print(f"errors or missing answers in the load-generator runs: {bad(embed + batch + single)}")
PY
