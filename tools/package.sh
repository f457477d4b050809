#!/usr/bin/env bash
# Builds the Debian package embedpool_<version>_amd64.deb with CPack.
#
#   tools/package.sh [BUILD_DIR]
#
# Reuses BUILD_DIR (default build/, configured like tools/quickstart.sh does
# when it is not yet), builds what is missing, then runs CPack's DEB generator
# there (Depends from dpkg-shlibdeps, so dpkg-dev must be installed). Prints
# the path of the package on its last line. Install it with
# `dpkg -i build/embedpool_<version>_amd64.deb`; tests/package/deb_test.sh
# checks it.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
BUILD_DIR="${1:-build}"
JOBS="${JOBS:-2}"

for tool in dpkg-shlibdeps dpkg-deb; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "package.sh: $tool not found (apt-get install dpkg-dev)" >&2
    exit 2
  fi
done

if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
  cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEMBEDPOOL_WERROR=ON >/dev/null
fi
cmake --build "$BUILD_DIR" -j"$JOBS"
rm -f "$BUILD_DIR"/embedpool_*.deb
(cd "$BUILD_DIR" && cpack -G DEB --config CPackConfig.cmake >cpack.log 2>&1) || {
  echo "package.sh: cpack failed; its output:" >&2
  cat "$BUILD_DIR/cpack.log" >&2
  exit 1
}
deb="$(ls "$BUILD_DIR"/embedpool_*.deb)"
dpkg-deb --field "$deb" Package Version Architecture Depends
echo "$deb"
