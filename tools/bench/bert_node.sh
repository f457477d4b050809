#!/usr/bin/env bash
# Throughput of a real-shaped BERT model through the node: a random-weight
# all-MiniLM-L6-v2-shaped directory (tools/bench/make_minilm_dir.py, written to
# a temporary directory), served by embedpool-node with model.kind=bert and
# driven by embedpool-loadgen in closed loop with the real English sentences
# of tools/bench/data/sentences.txt (mixed lengths), for each
# workers x BLAS-threads combination, in batch mode (BATCH_SIZE sentences per
# request) and embed mode (one sentence per request, which workers
# micro-batch up to pool.micro-batch-texts = 64). Next to it, the same
# embedder called directly in one process on the same sentences
# (build/tools/bert_node_direct) at 1 and 2 BLAS threads, BATCH_SIZE and 64
# sentences per call. Prints a table; ratio = node sentences/s / direct
# sentences/s at the node's BLAS thread count and call size (BATCH_SIZE for
# batch mode, 64 for embed mode), one direct thread: so 2 workers can reach 2.
#
# usage: tools/bench/bert_node.sh
# env:   BUILD (build), COMBOS ("1x2 2x1": WORKERSxTHREADS), BATCH_SIZE (16),
#        BATCH_WINDOW (4), EMBED_WINDOW (64), SECONDS_EACH (10),
#        TEXTS (tools/bench/data/sentences.txt), OUT (tools/bench/results)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
BUILD="${BUILD:-build}"
COMBOS="${COMBOS:-1x2 2x1}"
BATCH_SIZE="${BATCH_SIZE:-16}"
BATCH_WINDOW="${BATCH_WINDOW:-4}"
EMBED_WINDOW="${EMBED_WINDOW:-64}"
SECONDS_EACH="${SECONDS_EACH:-10}"
TEXTS="${TEXTS:-tools/bench/data/sentences.txt}"
OUT="${OUT:-tools/bench/results}"
BENCH=bert_node.sh
. tools/bench/common.sh
DIRECT="$BUILD/tools/bert_node_direct"
bench_init "$NODE" "$LOADGEN" "$DIRECT"

MODEL="$TMP/minilm-l6-random"
/usr/bin/python3 tools/bench/make_minilm_dir.py "$MODEL"

loadavg before
: >"$OUT/bert_node_direct.jsonl"
for group in "$BATCH_SIZE" 64; do
  "$DIRECT" --model-path="$MODEL" --texts-file="$TEXTS" --threads=1,2 \
    --group="$group" --seconds="$SECONDS_EACH" >>"$OUT/bert_node_direct.jsonl"
done

: >"$OUT/bert_node_runs.jsonl"
for combo in $COMBOS; do
  workers="${combo%x*}"
  threads="${combo#*x}"
  start_node "bert-$combo" --model.kind=bert --model.path="$MODEL" \
    --pool.workers="$workers" --model.blas-threads="$threads" --log.stats-interval=0s
  for mode in batch embed; do
    if [ "$mode" = batch ]; then
      args=(--mode=batch --batch-size="$BATCH_SIZE" --window="$BATCH_WINDOW")
    else
      args=(--mode=embed --window="$EMBED_WINDOW")
    fi
    "$LOADGEN" --port="$PORT" "${args[@]}" --duration="$SECONDS_EACH" \
      --texts-file="$TEXTS" --status-interval=0 --node-pid="$PID" |
      python3 -c 'import json, sys; j = json.loads(sys.stdin.read()); j["combo"] = sys.argv[1]; print(json.dumps(j))' \
        "$combo" >>"$OUT/bert_node_runs.jsonl"
  done
  stop_all
done
loadavg after

python3 - "$OUT" "$TEXTS" "$BATCH_SIZE" <<'PY' | tee "$OUT/bert_node_summary.txt"
import json, sys
out, texts, batch_size = sys.argv[1], sys.argv[2], int(sys.argv[3])
direct = {}
for line in open(f"{out}/bert_node_direct.jsonl"):
    d = json.loads(line)
    direct[(d["threads"], d["group"])] = d
n = sum(1 for line in open(texts) if line.strip())
print(f"{n} sentences from {texts}; random all-MiniLM-L6-v2-shaped model")
for (t, group), d in sorted(direct.items()):
    print(f"direct, {t} BLAS thread(s), {group} per call: "
          f"{d['sentences_per_s']:.1f} sentences/s")
print(f"{'workers x threads':17} {'mode':6} {'window':>6} {'sentences/s':>11} {'ratio':>6} "
      f"{'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'missing':>7} {'RSS MiB':>8}")
for line in open(f"{out}/bert_node_runs.jsonl"):
    j = json.loads(line)
    threads = int(j["combo"].split("x")[1])
    rate = j["throughput_texts_per_s"] if j["mode"] == "batch" else j["throughput_rps"]
    ref = direct.get((threads, batch_size if j["mode"] == "batch" else 64))
    ratio = rate / ref["sentences_per_s"] if ref else float("nan")
    rss = j.get("node_rss_kb", {}).get("peak", 0) / 1024
    print(f"{j['combo']:17} {j['mode']:6} {j['window']:6} {rate:11.1f} {ratio:6.2f} "
          f"{j['latency_ms']['p50']:8.1f} {j['latency_ms']['p99']:8.1f} "
          f"{sum(j['errors'].values()):6} {j['missing']:7} {rss:8.1f}")
print("ratio = node sentences/s / direct sentences/s at the same BLAS threads and call size")
PY
