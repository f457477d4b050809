#!/usr/bin/env bash
# Prints the README's command examples as the commands print them: starts a
# node as the quick start does (conf/embedpool.ini, the built-in model), but
# on a free port and with its log in a temporary directory, runs each
# example against it and prints "$ COMMAND" followed by its output. The
# README's blocks are copied from this output, not written by hand.
#
#   tools/readme_examples.sh [BUILD_DIR]      (default build/)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
BUILD="${1:-build}"
BENCH=readme_examples
OUT="$(mktemp -d)"
source tools/bench/common.sh
CLI="$BUILD/apps/embedpool-cli"
bench_init "$NODE" "$CLI"
trap 'bench_cleanup; rm -rf "$OUT"' EXIT

# Shows COMMAND as the README writes it (the quick start's node listens on
# 4242), runs it against this node's port.
show() {
  local shown="$1"
  shift
  echo "\$ $shown"
  "$@" 2>&1 || echo "(exit status $?)"
  echo
}

echo "## Quick start"
start_node quickstart --config-file=conf/embedpool.ini
cd "$TMP"
show 'build/apps/embedpool-cli embed "the cat sat on the mat" "a dog in the fog" | cut -c1-60' \
  bash -c "\"$OLDPWD/$CLI\" --port=$PORT embed 'the cat sat on the mat' 'a dog in the fog' | cut -c1-60"
printf 'first text\nsecond text\n' > texts.txt
show "printf 'first text\\nsecond text\\n' > texts.txt" true
show 'build/apps/embedpool-cli batch < texts.txt | cut -c1-60' \
  bash -c "\"$OLDPWD/$CLI\" --port=$PORT batch < texts.txt | cut -c1-60"
show 'build/apps/embedpool-cli status | jq .' \
  bash -c "\"$OLDPWD/$CLI\" --port=$PORT status | jq ."
show 'build/apps/embedpool-cli embed ""' "$OLDPWD/$CLI" --port=$PORT embed ""
cd "$OLDPWD"

stop_all

echo "## Request ids: why was request X refused, by whom, from where"
# A node logging JSON lines, with one worker of one embed credit that sheds
# what it cannot take at once: while it computes order-16 (300 ms), order-17
# is refused.
LOG="$TMP/json.log"
"$NODE" --config-file=conf/embedpool.ini --node.port=0 --log.console=false \
  --log.file="$LOG" --log.format=json --pool.workers=1 --pool.embed-queue-capacity=1 \
  --pool.overload-policy=reject --fault.compute-delay=300ms >"$TMP/json.out" 2>&1 &
PIDS+=("$!")
wait_for "$LOG" '"event":"listening"'
PORT=$(grep -o '"event":"listening".*"port":[0-9]*' "$LOG" | head -1 | sed 's/.*"port"://')
"$CLI" --port=$PORT --request-id=order-16 embed "a slow one" >/dev/null &
FIRST=$!
sleep 0.1
show 'embedpool-cli --request-id=order-17 embed "the next one"' \
  "$CLI" --port=$PORT --request-id=order-17 embed "the next one"
show "jq -c 'select(.request_id == \"order-17\")' logs/supervisor.log" \
  jq -c 'select(.request_id == "order-17")' "$LOG"
wait "$FIRST" || true
stop_all

echo "## HTTP front"
# As the README starts it: the built-in model plus a small BERT model; curl
# output as it comes (-i adds the status line and headers), on one line each.
HLOG="$TMP/http.log"
"$NODE" --config-file=conf/embedpool.ini --node.port=0 --log.console=false \
  --log.file="$HLOG" --http.port=0 --models.names=tiny --models.tiny.kind=bert \
  --models.tiny.path=tests/data/bert/mini-mean-norm-prefixed >"$TMP/http.out" 2>&1 &
PIDS+=("$!")
wait_for "$HLOG" "event=http_listening"
HPORT=$(grep -o 'event=http_listening.*port=[0-9]*' "$HLOG" | head -1 | sed 's/.*port=//')
# Shows `curl ARGS` against localhost:8080, runs it against this node, with
# embeddings cut after their first two values.
curl_show() {
  local shown="curl"
  for arg in "$@"; do
    case "$arg" in
      -s | -i | -H | -d) shown+=" $arg" ;;
      localhost*\?*) shown+=" '${arg/localhost:PORT/localhost:8080}'" ;;
      localhost*) shown+=" ${arg/localhost:PORT/localhost:8080}" ;;
      *) shown+=" '$arg'" ;;
    esac
  done
  local real=()
  for arg in "$@"; do real+=("${arg/localhost:PORT/127.0.0.1:$HPORT}"); done
  echo "\$ $shown"
  curl "${real[@]}" | tr -d '\r' |
    sed -E 's/("embedding":\[|^\[\[)(-?[0-9.e-]+,-?[0-9.e-]+)[^]]*\]/\1\2,...]/g'
  echo
}
curl_show -s localhost:PORT/v1/embeddings -H 'Content-Type: application/json' \
  -d '{"model":"hash-384","input":["hello world","second text"]}'
curl_show -s localhost:PORT/tokenize -d '{"model":"tiny","inputs":"hello world"}'
curl_show -s localhost:PORT/v1/embeddings -d '{"model":"tiny","input":[[1604,1094]],"task":"query"}'
curl_show -s localhost:PORT/v1/embeddings -d '{"model":"tiny","input":"x","task":"document"}'
curl_show -s localhost:PORT/v1/models
curl_show -s localhost:PORT/v1/models/tiny
curl_show -s -i localhost:PORT/v1/embeddings -d '{"model":"gpt-9","input":"x"}'
curl_show -s -i localhost:PORT/v1/embeddings
curl_show -s -i localhost:PORT/embed -d '{"inputs":"hello world","normalize":true}'
curl_show -s localhost:PORT/embed -d '{"inputs":"x","normalize":false}'
curl_show -s 'localhost:PORT/info?model=tiny'
curl_show -s -i localhost:PORT/embed_all -d '{"inputs":"x"}'
curl_show -s -i localhost:PORT/health
stop_all
