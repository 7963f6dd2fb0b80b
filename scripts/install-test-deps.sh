#!/usr/bin/env bash
# Installs what the test suite runs for real: redis-server (and redis-tools
# for redis-cli/redis-benchmark), Kamailio 5.6 with the modules the shipped
# config loads, SIPp (package sip-tester), and the sqlite3 shell that
# make bench uses to set up Kamailio msilo's database.
#
# It installs only when something is missing, and only as root on a
# Debian/Ubuntu machine; otherwise it prints the apt-get line to run.
set -euo pipefail

pkgs=(redis-server redis-tools kamailio kamailio-json-modules
      kamailio-utils-modules kamailio-extra-modules kamailio-sqlite-modules
      sip-tester sqlite3)
# Chromium for the console's browser tests, promtool (package prometheus)
# and a Prometheus server for the monitoring rules' tests.
pkgs+=(chromium prometheus)

# Each package is judged by a file it ships, so the check is cheap and
# does not depend on dpkg's state database being readable.
declare -A probe=(
  [redis-server]=/usr/bin/redis-server
  [redis-tools]=/usr/bin/redis-cli
  [kamailio]=/usr/sbin/kamailio
  [kamailio-json-modules]=/usr/lib/x86_64-linux-gnu/kamailio/modules/jansson.so
  [kamailio-utils-modules]=/usr/lib/x86_64-linux-gnu/kamailio/modules/http_client.so
  [kamailio-extra-modules]=/usr/lib/x86_64-linux-gnu/kamailio/modules/msrp.so
  [kamailio-sqlite-modules]=/usr/lib/x86_64-linux-gnu/kamailio/modules/db_sqlite.so
  [sip-tester]=/usr/bin/sipp
  [sqlite3]=/usr/bin/sqlite3
  [chromium]=/usr/bin/chromium
  [prometheus]=/usr/bin/promtool
)

missing=()
for p in "${pkgs[@]}"; do
  f=${probe[$p]}
  # Module paths differ by architecture: accept any multiarch directory.
  if [[ $f == /usr/lib/x86_64-linux-gnu/* ]]; then
    base=${f#/usr/lib/x86_64-linux-gnu/}
    compgen -G "/usr/lib/*/$base" >/dev/null && continue
  elif [[ -e $f ]]; then
    continue
  fi
  missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  echo "install-test-deps: all present"
  exit 0
fi

if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
  echo "install-test-deps: missing ${missing[*]}" >&2
  echo "install-test-deps: run as root: apt-get install -y ${missing[*]}" >&2
  exit 0
fi

echo "install-test-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian's packages start services we do not want: tests start their own
# servers on free ports. Stop whatever the postinst started.
for svc in redis-server kamailio; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl stop "$svc" || true
  fi
done
# Without systemd the postinst starts the packaged redis-server itself: stop
# that one only (its pid file), never the test servers of other runs.
for pidfile in /run/redis/redis-server.pid /var/run/redis/redis-server.pid; do
  if [[ -s $pidfile ]]; then
    kill "$(cat "$pidfile")" 2>/dev/null || true
  fi
done
# The prometheus package enables a server on :9090: only its promtool is
# wanted.
if command -v systemctl >/dev/null; then
  systemctl disable --now prometheus 2>/dev/null || true
fi
echo "install-test-deps: done"
