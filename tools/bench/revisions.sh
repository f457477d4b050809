#!/usr/bin/env bash
# The node of this tree against the node of an earlier revision, side by side
# in one run, rounds interleaved (the order alternating) so that a noisy
# machine hits both the same way. Each side is a node with one worker
# (hash-384, default settings); per round and side:
#
#   latency  one embed request at a time, each call timed alone, p50 and p99
#            (tools/bench/floor_probe.cpp, pool mode)
#   embed    the load generator at window 256, TEXT_BYTES-byte texts
#   batch    the load generator, batches of BATCH_SIZE at window 16
#
# and prints the medians and the median of each round's ratio this tree / base
# (for latency lower is better, for throughput higher). The base revision's node is built (with
# ccache if present) in BASE_BUILD from a git worktree of BASE in
# BASE_BUILD/src; both are removed at the end.
#
# usage: tools/bench/revisions.sh
# env:   BASE (the revision to compare with, default HEAD~1), BASE_BUILD
#        (build-base), BUILD (build), ROUNDS (5), CALLS (2000
#        per latency round), SECONDS_EACH (4 per throughput round),
#        TEXT_BYTES (64), BATCH_SIZE (16), OUT (tools/bench/results)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
BASE="${BASE:-HEAD~1}"
BASE_BUILD="${BASE_BUILD:-build-base}"
BUILD="${BUILD:-build}"
ROUNDS="${ROUNDS:-5}"
CALLS="${CALLS:-2000}"
SECONDS_EACH="${SECONDS_EACH:-4}"
TEXT_BYTES="${TEXT_BYTES:-64}"
BATCH_SIZE="${BATCH_SIZE:-16}"
OUT="${OUT:-tools/bench/results}"
BENCH=revisions.sh
. tools/bench/common.sh
PROBE="$BUILD/tools/floor_probe"
bench_init "$NODE" "$LOADGEN" "$PROBE"

base_rev=$(git rev-parse --short "$BASE")
head_rev=$(git describe --always --dirty)
build_revision "$base_rev" "$BASE_BUILD" embedpool-node

echo "revisions.sh: load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" \
  "($(nproc) cores; figures are meant for a load average < 1)"

NEW_NODE="$NODE"
NODE="$BASE_BUILD/bin/apps/embedpool-node"
start_node base --pool.workers=1
BASE_PORT=$PORT
NODE="$NEW_NODE"
start_node head --pool.workers=1
HEAD_PORT=$PORT

measure() {  # side port round
  local tag="\"round\":$3,\"side\":\"$1\""
  "$PROBE" pool --port="$2" --calls="$CALLS" --text-bytes="$TEXT_BYTES" |
    tag_json "$tag,\"kind\":\"latency\"" >>"$RUNS"
  "$LOADGEN" --port="$2" --mode=embed --window=256 --duration="$SECONDS_EACH" \
    --text-bytes="$TEXT_BYTES" --status-interval=0 --quiet 2>/dev/null |
    tag_json "$tag,\"kind\":\"loadgen\"" >>"$RUNS"
  "$LOADGEN" --port="$2" --mode=batch --batch-size="$BATCH_SIZE" --window=16 \
    --duration="$SECONDS_EACH" --text-bytes="$TEXT_BYTES" --status-interval=0 --quiet \
    2>/dev/null | tag_json "$tag,\"kind\":\"loadgen\"" >>"$RUNS"
}

RUNS="$OUT/revisions_runs.jsonl"
: >"$RUNS"
for round in $(seq 1 "$ROUNDS"); do
  echo "revisions.sh: round $round of $ROUNDS" >&2
  if [ $((round % 2)) -eq 1 ]; then
    measure base "$BASE_PORT" "$round"
    measure head "$HEAD_PORT" "$round"
  else
    measure head "$HEAD_PORT" "$round"
    measure base "$BASE_PORT" "$round"
  fi
done
stop_all
echo "revisions.sh: load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$RUNS" "$base_rev" "$head_rev" <<'PY' | tee "$OUT/revisions_summary.txt"
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
base_rev, head_rev = sys.argv[2], sys.argv[3]
def pick(side, kind, mode=None):
    return [r for r in runs if r["side"] == side and r["kind"] == kind
            and (mode is None or r.get("mode") == mode)]
def med(xs):
    return statistics.median(xs)
def per_round(side, kind, field, mode=None):
    return {r["round"]: r[field] for r in pick(side, kind, mode)}
rows = [("one request, p50 (us)", "latency", "p50_us", None),
        ("one request, p99 (us)", "latency", "p99_us", None),
        ("embed w256 (req/s)", "loadgen", "throughput_rps", "embed"),
        ("batch w16 (texts/s)", "loadgen", "throughput_texts_per_s", "batch")]
bad = sum(sum(r["errors"].values()) + r["missing"] for r in runs if r["kind"] == "loadgen")
rounds = len(pick("head", "latency"))
print(f"revisions.sh: medians of {rounds} interleaved rounds, node with one worker; "
      f"base {base_rev}, this tree {head_rev}")
print(f"{'':24} {'base':>10} {'this tree':>10}  this/base: median of the rounds' ratios "
      f"(min-max)")
for name, kind, field, mode in rows:
    b, h = per_round("base", kind, field, mode), per_round("head", kind, field, mode)
    ratios = sorted(h[k] / b[k] for k in b if k in h)
    print(f"{name:24} {med(list(b.values())):10.0f} {med(list(h.values())):10.0f}  "
          f"{med(ratios):.2f} ({ratios[0]:.2f}-{ratios[-1]:.2f})")
print(f"errors or missing answers in the load-generator runs: {bad}")
PY
