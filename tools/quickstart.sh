#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to a running node or a tested tree.
#
#   tools/quickstart.sh node [--section.key=value ...]
#       installs the missing Debian packages, builds (build/), and runs a node in
#       the foreground with conf/embedpool.ini (built-in hash model,
#       127.0.0.1:4242, logs on the console and in logs/supervisor.log).
#   tools/quickstart.sh test
#       the same set-up, then the whole test suite through ctest, then the
#       Debian package built from build/ (tools/package.sh) and, as root,
#       installed, run and purged (tests/package/deb_test.sh), then the
#       safetensors fuzzer for a bounded time, then the test suite again built
#       with AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/).
#   tools/quickstart.sh build
#       set-up and build only.
#
# Environment: JOBS (default 2) parallel compile jobs; FUZZ_SECONDS (default 60,
# 0 skips fuzzing) for the test command.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
JOBS="${JOBS:-2}"

# Every Debian package the build, the tests and the tools need.
PACKAGES=(
  build-essential cmake pkg-config
  libcaf-dev libopenblas-dev catch2 libspdlog-dev libfmt-dev
  libutf8proc-dev nlohmann-json3-dev libssl-dev openssl
  clang libclang-rt-dev
  jq procps gnuplot-nox python3-numpy
  libcpp-httplib-dev libcli11-dev prometheus nodejs
  dpkg-dev file
)

apt_install() {
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "quickstart: installing $*"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@"
}

install_missing() {
  local missing=()
  for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$pkg")
    fi
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "${missing[@]}"
  fi
  # Debian's own nodejs ships npm as a separate package (NodeSource's includes it).
  if ! command -v npm >/dev/null 2>&1; then
    apt_install npm
  fi
}

build() {
  cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEMBEDPOOL_WERROR=ON >/dev/null
  cmake --build build -j"$JOBS"
}

run_tests() {
  build
  # The OpenAI and LangChain client checks (tests/http_test.cpp) run the
  # official openai npm package and @langchain/openai at the versions pinned in
  # tools/openai_check/package-lock.json and tools/langchain_check/package-lock.json.
  (cd tools/openai_check && npm ci --no-audit --no-fund)
  (cd tools/langchain_check && npm ci --no-audit --no-fund)
  (cd build && ctest --output-on-failure --timeout 300)
  # The Debian package from the same tree; installing it changes the machine,
  # so only as root (CI runs as root).
  local deb
  deb="$(tools/package.sh build | tail -n 1)"
  if [ "$(id -u)" -eq 0 ]; then
    tests/package/deb_test.sh "$deb"
  else
    echo "quickstart: not root: $deb built, its install test (tests/package/deb_test.sh) skipped"
  fi
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEMBEDPOOL_SANITIZE=ON \
    -DEMBEDPOOL_BUILD_TOOLS=OFF -DEMBEDPOOL_WERROR=ON >/dev/null
  cmake --build build-asan -j"$JOBS"
  if [ "${FUZZ_SECONDS:-60}" -gt 0 ] && [ -x tools/fuzz.sh ]; then
    tools/fuzz.sh "${FUZZ_SECONDS:-60}"
  fi
  # Last, so that ctest's summary closes the output.
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
     UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
     ctest --output-on-failure --timeout 300)
}

case "${1:-}" in
  node)
    shift
    install_missing
    build
    exec build/apps/embedpool-node --config-file=conf/embedpool.ini "$@"
    ;;
  test)
    install_missing
    run_tests
    ;;
  build)
    install_missing
    build
    ;;
  *)
    sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
