#!/usr/bin/env bash
# Installs the Debian package on this machine and checks it end to end:
#
#   tests/package/deb_test.sh build/embedpool_<version>_amd64.deb
#
# 1. the package's fields and files (Depends from dpkg-shlibdeps, the node and
#    CLI in /usr/bin, the conffile, the systemd unit);
# 2. `dpkg -i`: the user `embedpool`, /var/log/embedpool owned by it;
# 3. `systemd-analyze verify` on the unit when systemd-analyze is installed;
# 4. the installed node started by hand as user embedpool (setpriv, which execs
#    it: the pid is the node) with the installed
#    /etc/embedpool/embedpool.ini (systemd is not needed), on a free port of
#    127.0.0.1; the installed CLI embeds and reads the status; SIGTERM drains
#    it and it exits 0;
# 5. `dpkg -r` removes the binaries and keeps the conffile; `dpkg --purge`
#    removes everything (conffile, logs, user).
#
# Needs root (it changes the machine's package database). Every wait is
# bounded. Exit status 0 when every check passed.
set -euo pipefail

deb="${1:?usage: deb_test.sh PATH/TO/embedpool_VERSION_amd64.deb}"
deb="$(readlink -f "$deb")"
if [ "$(id -u)" -ne 0 ]; then
  echo "deb_test: needs root (dpkg -i); skipped" >&2
  exit 77
fi

fail() {
  echo "deb_test: FAIL: $*" >&2
  exit 1
}
ok() { echo "deb_test: ok: $*"; }

node_pid=""
work="$(mktemp -d /tmp/embedpool-deb-XXXXXX)"
cleanup() {
  if [ -n "$node_pid" ] && kill -0 "$node_pid" 2>/dev/null; then
    kill -KILL "$node_pid" 2>/dev/null || true
  fi
  if dpkg-query -W -f='${Status}' embedpool 2>/dev/null | grep -q "installed\|config-files"; then
    dpkg --purge embedpool >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# -- 1. the package itself -------------------------------------------------------
[ "$(dpkg-deb --field "$deb" Package)" = embedpool ] || fail "package name"
depends="$(dpkg-deb --field "$deb" Depends)"
echo "deb_test: Depends: $depends"
for lib in libcaf-core libcaf-io libcaf-openssl libopenblas libssl3 libc6 libstdc++6; do
  grep -q "$lib" <<<"$depends" || fail "Depends lacks $lib (dpkg-shlibdeps)"
done
contents="$(dpkg-deb --contents "$deb")"
for path in ./usr/bin/embedpool-node ./usr/bin/embedpool-cli ./usr/bin/embedpool-loadgen \
            ./etc/embedpool/embedpool.ini ./lib/systemd/system/embedpool.service \
            ./usr/include/pool/client.hpp ./usr/share/doc/embedpool/LICENSE; do
  grep -q " $path\$" <<<"$contents" || fail "package lacks $path"
done
dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles | grep -qx /etc/embedpool/embedpool.ini ||
  fail "/etc/embedpool/embedpool.ini is not a conffile"
ok "fields and files of $(basename "$deb")"

# -- 2. install --------------------------------------------------------------------
dpkg -i "$deb" >"$work/dpkg-i.log" 2>&1 || { cat "$work/dpkg-i.log" >&2; fail "dpkg -i"; }
getent passwd embedpool >/dev/null || fail "no user embedpool after dpkg -i"
[ "$(stat -c %U /var/log/embedpool)" = embedpool ] || fail "/var/log/embedpool not owned by embedpool"
wants=/etc/systemd/system/multi-user.target.wants/embedpool.service
[ -L "$wants" ] || fail "the unit is not enabled after dpkg -i ($wants missing)"
grep -q '^file = "/var/log/embedpool/supervisor.log"' /etc/embedpool/embedpool.ini ||
  fail "the installed config does not log to /var/log/embedpool"
/usr/bin/embedpool-node --version | tee "$work/version.txt"
grep -q "^embedpool-node $(dpkg-deb --field "$deb" Version) (git " "$work/version.txt" ||
  fail "embedpool-node --version does not name the package version"
grep -q "^protocol " "$work/version.txt" || fail "--version has no protocol line"
grep -q "^CAF 0\.17\." "$work/version.txt" || fail "--version has no CAF line"
grep -q "^OpenBLAS " "$work/version.txt" || fail "--version has no OpenBLAS line"
ok "dpkg -i: user, /var/log/embedpool, conffile, unit enabled, --version"

# -- 3. the unit -------------------------------------------------------------------
if command -v systemd-analyze >/dev/null 2>&1; then
  systemd-analyze verify /lib/systemd/system/embedpool.service >"$work/verify.log" 2>&1 ||
    { cat "$work/verify.log" >&2; fail "systemd-analyze verify embedpool.service"; }
  if grep -q "embedpool.service" "$work/verify.log"; then
    cat "$work/verify.log" >&2
    fail "systemd-analyze verify reported problems in embedpool.service"
  fi
  ok "systemd-analyze verify embedpool.service"
else
  echo "deb_test: systemd-analyze not installed; unit verification skipped"
fi

# -- 4. run the installed node by hand (what the unit runs, on a free port) ----------
log=/var/log/embedpool/supervisor.log
rm -f "$log"
cd /var/lib/embedpool
setpriv --reuid=embedpool --regid=embedpool --init-groups -- /usr/bin/embedpool-node --config-file=/etc/embedpool/embedpool.ini \
  --node.port=0 --log.console=false >"$work/node.out" 2>"$work/node.err" &
node_pid=$!
cd - >/dev/null
port=""
for _ in $(seq 1 200); do  # up to 20 s
  if [ -f "$log" ]; then
    port="$(sed -n 's/.*event=listening .* port=\([0-9][0-9]*\).*/\1/p' "$log" | head -n 1)"
    [ -n "$port" ] && break
  fi
  kill -0 "$node_pid" 2>/dev/null || { cat "$work/node.err" >&2; fail "the installed node exited"; }
  sleep 0.1
done
[ -n "$port" ] || fail "no event=listening line in $log within 20 s"
ok "installed node listening on 127.0.0.1:$port as user $(ps -o user= -p "$node_pid")"

out="$(/usr/bin/embedpool-cli --port="$port" --timeout=30 embed "the cat sat on the mat")"
grep -q '^{"dim":384,"embedding":\[' <<<"$out" || fail "embed printed: $out"
echo "deb_test: embedpool-cli embed: ${out:0:60}..."
status="$(/usr/bin/embedpool-cli --port="$port" status)"
grep -q '"protocol":1' <<<"$status" || fail "status has no protocol: $status"
grep -q '"version":"' <<<"$status" || fail "status has no version: $status"
ok "installed embedpool-cli embeds and reads the status"

kill -TERM "$node_pid"
rc=""
for _ in $(seq 1 300); do  # up to 30 s (pool.drain-timeout)
  if ! kill -0 "$node_pid" 2>/dev/null; then
    set +e
    wait "$node_pid"
    rc=$?
    set -e
    break
  fi
  sleep 0.1
done
[ "$rc" = 0 ] || fail "the node did not exit 0 within 30 s of SIGTERM (status '${rc}')"
node_pid=""
grep -q "event=drained" "$log" || fail "no event=drained line in $log"
ok "SIGTERM: drained, exit 0"

# -- 5. remove and purge -------------------------------------------------------------
dpkg -r embedpool >"$work/dpkg-r.log" 2>&1 || { cat "$work/dpkg-r.log" >&2; fail "dpkg -r"; }
[ ! -e /usr/bin/embedpool-node ] || fail "/usr/bin/embedpool-node left after dpkg -r"
[ -f /etc/embedpool/embedpool.ini ] || fail "dpkg -r removed the conffile (it must stay until purge)"
ok "dpkg -r: binaries gone, conffile kept"
dpkg --purge embedpool >"$work/dpkg-purge.log" 2>&1 ||
  { cat "$work/dpkg-purge.log" >&2; fail "dpkg --purge"; }
for path in /etc/embedpool /var/log/embedpool /var/lib/embedpool \
            /lib/systemd/system/embedpool.service "$wants"; do
  [ ! -e "$path" ] && [ ! -L "$path" ] || fail "$path left after dpkg --purge"
done
! getent passwd embedpool >/dev/null || fail "user embedpool left after dpkg --purge"
! dpkg-query -W embedpool >/dev/null 2>&1 || fail "dpkg still knows embedpool after purge"
ok "dpkg --purge: nothing left"
echo "deb_test: PASS"
