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
#   build_revision REV DIR TARGET...
#                              builds TARGETs of git revision REV (with ccache
#                              if present) in DIR/bin from a worktree in
#                              DIR/src; both are removed on exit

NODE="$BUILD/apps/embedpool-node"
LOADGEN="$BUILD/tools/loadgen/embedpool-loadgen"
NAIVE="$BUILD/tools/loadgen/embedpool-naive-node"
PIDS=()
TMP=""
REVISION_DIR=""

bench_cleanup() {
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  [ -n "$TMP" ] && rm -rf "$TMP"
  if [ -n "$REVISION_DIR" ]; then
    git worktree remove --force "$REVISION_DIR/src" 2>/dev/null || true
    rm -rf "$REVISION_DIR"
  fi
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

build_revision() {
  local rev="$1" dir="$2"
  shift 2
  rm -rf "$dir"
  git worktree prune
  REVISION_DIR="$dir"
  git worktree add --detach -q "$dir/src" "$rev"
  local launcher=()
  if command -v ccache >/dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
  echo "$BENCH: building $* of $rev in $dir" >&2
  cmake -S "$dir/src" -B "$dir/bin" -DCMAKE_BUILD_TYPE=RelWithDebInfo "${launcher[@]}" \
    >/dev/null
  cmake --build "$dir/bin" -j2 --target "$@" >/dev/null
}
