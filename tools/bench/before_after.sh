#!/usr/bin/env bash
# The scenarios that must not get worse, with the node and load generator of
# an earlier revision (BASE) and of this tree, side by side in one run, each
# scenario run for both sides back to back (the order alternating from one
# scenario to the next):
#
#   seed     the seed's scenario (benchmark 1): one worker slowed to ~100
#            texts/s (fault.compute-delay=10ms), offered RATE embed requests/s
#            of 1 KiB texts for SEED_SECONDS, open loop, under pool.overload-
#            policy wait and reject: answered, overloaded, missing/duplicate
#            answers, node RSS growth after warm-up
#   waits    the sender waits (benchmark 2): the same slow worker in closed
#            loop at window 16 for WAIT_SECONDS: throughput, latency,
#            overloaded answers, RSS growth
#   bert     BERT through the node (benchmark 6): a random-weight
#            all-MiniLM-L6-v2-shaped model (tools/bench/make_minilm_dir.py),
#            one worker with 2 BLAS threads, the real sentences of
#            tools/bench/data/sentences.txt, batches of 16 at window 4 and
#            single embeds at window 64, BERT_SECONDS each: sentences/s
#
# Each side runs its own load generator, as its users ran it: the base's
# client may not speak this tree's protocol additions (lists of embeds).
# BASE's node and load generator are built (with ccache if present) in
# BASE_BUILD from a git worktree of BASE in BASE_BUILD/src; both are removed
# at the end.
#
# usage: tools/bench/before_after.sh
# env:   BASE (ec062a7: main when issue 16 was filed), BASE_BUILD
#        (build-base), BUILD (build), RATE (10000), SEED_SECONDS (60),
#        WAIT_SECONDS (30), BERT_SECONDS (10), OUT (tools/bench/results)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
BASE="${BASE:-ec062a7}"
BASE_BUILD="${BASE_BUILD:-build-base}"
BUILD="${BUILD:-build}"
RATE="${RATE:-10000}"
SEED_SECONDS="${SEED_SECONDS:-60}"
WAIT_SECONDS="${WAIT_SECONDS:-30}"
BERT_SECONDS="${BERT_SECONDS:-10}"
OUT="${OUT:-tools/bench/results}"
BENCH=before_after.sh
. tools/bench/common.sh
bench_init "$NODE" "$LOADGEN"

base_rev=$(git rev-parse --short "$BASE")
head_rev=$(git describe --always --dirty)
build_revision "$base_rev" "$BASE_BUILD" embedpool-node embedpool-loadgen

declare -A NODE_OF LOADGEN_OF
NODE_OF[base]="$BASE_BUILD/bin/apps/embedpool-node"
LOADGEN_OF[base]="$BASE_BUILD/bin/tools/loadgen/embedpool-loadgen"
NODE_OF[head]="$NODE"
LOADGEN_OF[head]="$LOADGEN"

MODEL="$TMP/minilm-l6-random"
/usr/bin/python3 tools/bench/make_minilm_dir.py "$MODEL" >/dev/null
TEXTS=tools/bench/data/sentences.txt

echo "before_after.sh: load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" \
  "($(nproc) cores)"

RUNS="$OUT/before_after_runs.jsonl"
: >"$RUNS"

# run SIDE SCENARIO NODE_ARGS... -- LOADGEN_ARGS...: one node of SIDE, one
# load-generator run against it, its JSON tagged into $RUNS.
run() {
  local side="$1" scenario="$2"
  shift 2
  local node_args=()
  while [ "$1" != "--" ]; do
    node_args+=("$1")
    shift
  done
  shift
  NODE="${NODE_OF[$side]}"
  start_node "$side-$scenario" --log.stats-interval=0s "${node_args[@]}"
  echo "before_after.sh: $scenario, $side" >&2
  "${LOADGEN_OF[$side]}" --host=127.0.0.1 --port="$PORT" --node-pid="$PID" "$@" \
    2>/dev/null | tag_json "\"side\":\"$side\",\"scenario\":\"$scenario\"" >>"$RUNS" ||
    echo "before_after.sh: $scenario, $side: the load generator failed" >&2
  stop_all
}

SLOW=(--pool.workers=1 --fault.compute-delay=10ms)
order=(base head)
flip() { order=("${order[1]}" "${order[0]}"); }
for policy in wait reject; do
  for side in "${order[@]}"; do
    run "$side" "seed_$policy" "${SLOW[@]}" --pool.overload-policy="$policy" -- \
      --mode=embed --rate="$RATE" --duration="$SEED_SECONDS" --text-bytes=1024 --warmup=5
  done
  flip
done
for side in "${order[@]}"; do
  run "$side" waits "${SLOW[@]}" -- \
    --mode=embed --window=16 --duration="$WAIT_SECONDS" --text-bytes=1024 --warmup=5
done
flip
BERT=(--model.kind=bert --model.path="$MODEL" --pool.workers=1 --model.blas-threads=2)
for side in "${order[@]}"; do
  run "$side" bert_batch "${BERT[@]}" -- --mode=batch --batch-size=16 --window=4 \
    --duration="$BERT_SECONDS" --texts-file="$TEXTS" --status-interval=0
  run "$side" bert_embed "${BERT[@]}" -- --mode=embed --window=64 \
    --duration="$BERT_SECONDS" --texts-file="$TEXTS" --status-interval=0
done
echo "before_after.sh: load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$RUNS" "$base_rev" "$head_rev" <<'PY' | tee "$OUT/before_after_summary.txt"
import json, sys
runs, base_rev, head_rev = sys.argv[1:4]
by = {(r["scenario"], r["side"]): r for r in map(json.loads, open(runs))}
def growth(r):
    k = r.get("node_rss_kb")
    return (k["peak"] - k["after_warmup"]) / 1024 if k else float("nan")
def bad(r):
    return r["missing"] + r["duplicates"]
def texts_per_s(r):
    return r.get("throughput_texts_per_s", r["throughput_rps"])
rows = []
for policy in ("wait", "reject"):
    s = f"seed_{policy}"
    rows += [
        (f"seed, {policy}: answered", s, lambda r: r["completed"], "{:.0f}"),
        (f"seed, {policy}: overloaded", s, lambda r: r["errors"].get("overloaded", 0), "{:.0f}"),
        (f"seed, {policy}: missing + duplicates", s, bad, "{:.0f}"),
        (f"seed, {policy}: RSS growth MiB", s, growth, "{:.1f}"),
    ]
rows += [
    ("sender waits: req/s", "waits", lambda r: r["throughput_rps"], "{:.1f}"),
    ("sender waits: p50 ms", "waits", lambda r: r["latency_ms"]["p50"], "{:.0f}"),
    ("sender waits: p99 ms", "waits", lambda r: r["latency_ms"]["p99"], "{:.0f}"),
    ("sender waits: overloaded", "waits", lambda r: r["errors"].get("overloaded", 0), "{:.0f}"),
    ("sender waits: missing + duplicates", "waits", bad, "{:.0f}"),
    ("sender waits: RSS growth MiB", "waits", growth, "{:.1f}"),
    ("BERT batches of 16: sentences/s", "bert_batch", texts_per_s, "{:.1f}"),
    ("BERT batches of 16: p50 ms", "bert_batch", lambda r: r["latency_ms"]["p50"], "{:.0f}"),
    ("BERT single embeds: sentences/s", "bert_embed", texts_per_s, "{:.1f}"),
    ("BERT single embeds: p50 ms", "bert_embed", lambda r: r["latency_ms"]["p50"], "{:.0f}"),
    ("BERT batches: errors + missing", "bert_batch",
     lambda r: sum(r["errors"].values()) + bad(r), "{:.0f}"),
    ("BERT single embeds: errors + missing", "bert_embed",
     lambda r: sum(r["errors"].values()) + bad(r), "{:.0f}"),
]
print(f"before_after.sh: base {base_rev}, this tree {head_rev}; each scenario run for both "
      "sides back to back")
print(f"{'':36} {'base':>10} {'this tree':>10} {'this/base':>10}")
for name, scenario, get, fmt in rows:
    b, h = by.get((scenario, "base")), by.get((scenario, "head"))
    if b is None or h is None:
        print(f"{name:36} {'(no run)':>10}")
        continue
    bv, hv = get(b), get(h)
    ratio = f"{hv / bv:.2f}" if bv else "-"
    print(f"{name:36} {fmt.format(bv):>10} {fmt.format(hv):>10} {ratio:>10}")
PY
