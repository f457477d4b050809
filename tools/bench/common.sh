# Shared by the benchmark scripts in tools/bench/ (sourced, not run).
# The caller sets BENCH (its name, for messages), BUILD and OUT, and cd's to
# the repository root first. Provides:
#   NODE, LOADGEN, NAIVE       the built executables
#   bench_init BIN...          checks that each BIN exists, makes $OUT and a
#                              temporary $TMP, and kills every pid in PIDS
#                              and removes $TMP on exit
#   wait_for FILE PATTERN      bounded poll (15 s) until FILE contains PATTERN
#   port_of FILE               the port of FILE's first `event=listening` line
#   start_node NAME ARGS...    starts a node on a free port, logging to
#                              $TMP/NAME.log; sets PID and PORT
#   stop_all                   SIGTERM to every pid in PIDS, waits for them
#   loadavg LABEL              prints the load average to stderr
#   cpu_ticks PID              user + system CPU time of PID so far, in
#                              clock ticks (getconf CLK_TCK per second)
#   tag_json FIELDS            copies stdin's JSON lines with FIELDS (e.g.
#                              '"round":1,"kind":"latency"') put first

NODE="$BUILD/apps/embedpool-node"
LOADGEN="$BUILD/tools/loadgen/embedpool-loadgen"
NAIVE="$BUILD/tools/loadgen/embedpool-naive-node"
PIDS=()
TMP=""

bench_cleanup() {
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  [ -n "$TMP" ] && rm -rf "$TMP"
}

bench_init() {
  for bin in "$@"; do
    [ -x "$bin" ] || { echo "$BENCH: missing $bin (build first)" >&2; exit 2; }
  done
  mkdir -p "$OUT"
  TMP="$(mktemp -d)"
  trap bench_cleanup EXIT
}

wait_for() {
  for _ in $(seq 1 300); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "$BENCH: no '$2' in $1" >&2
  exit 1
}

port_of() {
  grep -o 'event=listening.*port=[0-9]*' "$1" | head -1 | sed 's/.*port=//'
}

start_node() {
  local name="$1"
  shift
  local log="$TMP/$name.log"
  "$NODE" --node.port=0 --log.console=false --log.file="$log" "$@" \
    >"$TMP/$name.out" 2>&1 &
  PID=$!
  PIDS+=("$PID")
  wait_for "$log" "event=listening"
  PORT=$(port_of "$log")
}

stop_all() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}

loadavg() {
  echo "$BENCH: load average $1: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
}

cpu_ticks() {
  awk '{print $14 + $15}' "/proc/$1/stat"
}

tag_json() {
  sed "s/^{/{$1,/"
}
