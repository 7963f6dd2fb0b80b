#!/usr/bin/env bash
# Installs what the test suite runs for real: redis-server (and redis-tools
# for redis-cli/redis-benchmark), Kamailio 5.6 with the modules the shipped
# config loads, SIPp (package sip-tester), the sqlite3 shell that make bench
# uses to set up msilo's database, m4 (which renders the shipped
# opensips.cfg), Chromium and Prometheus (the console's and the monitoring
# rules' tests), and OpenSIPS 3.4.
#
# Debian 12 has no OpenSIPS package. When no `opensips` 3.4 is installed,
# OpenSIPS is built once per machine from ../shared/opensips/opensips-*.tar.xz
# beside the checkout (or beside the main checkout of a git worktree) into
# a cache outside the checkout, keyed by the tarball's sha256:
# /var/cache/deferpush-opensips/<sha256>/ as root, else
# ${XDG_CACHE_HOME:-~/.cache}/deferpush-opensips/<sha256>/. test/harness
# finds it there. Without the tarball and without a binary the OpenSIPS
# tests skip (fail under CI=true).
#
# It installs only when something is missing, and only as root on a
# Debian/Ubuntu machine; otherwise it prints the apt-get line to run.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)

pkgs=(redis-server redis-tools kamailio kamailio-json-modules
      kamailio-utils-modules kamailio-extra-modules kamailio-sqlite-modules
      kamailio-redis-modules sip-tester sqlite3 m4)
# Chromium for the console's browser tests, promtool (package prometheus)
# and a Prometheus server for the monitoring rules' tests.
pkgs+=(chromium prometheus)

# What building OpenSIPS needs (installed only when it is built).
build_pkgs=(build-essential bison flex m4 pkg-config libcurl4-openssl-dev
            libjson-c-dev libssl-dev libhiredis-dev libsqlite3-dev)

# Each package is judged by a file it ships (a glob: library and module
# directories differ by architecture), so the check is cheap and does not
# depend on dpkg's state database being readable.
declare -A probe=(
  [redis-server]=/usr/bin/redis-server
  [redis-tools]=/usr/bin/redis-cli
  [kamailio]=/usr/sbin/kamailio
  [kamailio-json-modules]='/usr/lib/*/kamailio/modules/jansson.so'
  [kamailio-utils-modules]='/usr/lib/*/kamailio/modules/http_client.so'
  [kamailio-extra-modules]='/usr/lib/*/kamailio/modules/msrp.so'
  [kamailio-sqlite-modules]='/usr/lib/*/kamailio/modules/db_sqlite.so'
  [kamailio-redis-modules]='/usr/lib/*/kamailio/modules/ndb_redis.so'
  [sip-tester]=/usr/bin/sipp
  [sqlite3]=/usr/bin/sqlite3
  [m4]=/usr/bin/m4
  [chromium]=/usr/bin/chromium
  [prometheus]=/usr/bin/promtool
  [build-essential]=/usr/share/build-essential/essential-packages-list
  [bison]=/usr/bin/bison
  [flex]=/usr/bin/flex
  [pkg-config]=/usr/bin/pkg-config
  [libcurl4-openssl-dev]='/usr/include/*/curl/curl.h'
  [libjson-c-dev]=/usr/include/json-c/json.h
  [libssl-dev]=/usr/include/openssl/ssl.h
  [libhiredis-dev]=/usr/include/hiredis/hiredis.h
  [libsqlite3-dev]=/usr/include/sqlite3.h
)

# missing prints the packages among its arguments that are not installed.
missing() {
  local p
  for p in "$@"; do
    compgen -G "${probe[$p]}" >/dev/null || echo "$p"
  done
}

can_install() { [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; }

updated=
apt_install() {
  echo "install-test-deps: installing $*"
  export DEBIAN_FRONTEND=noninteractive
  if [[ -z $updated ]]; then
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    updated=1
  fi
  # Wait for another apt-get (another checkout's make deps) to finish.
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "$@" >/dev/null
}

mapfile -t need < <(missing "${pkgs[@]}")
if ((${#need[@]} > 0)); then
  if ! can_install; then
    echo "install-test-deps: missing ${need[*]}" >&2
    echo "install-test-deps: run as root: apt-get install -y ${need[*]}" >&2
  else
    apt_install "${need[@]}"
    # Debian's packages start services we do not want: tests start their
    # own servers on free ports. Stop whatever the postinst started.
    for svc in redis-server kamailio; do
      if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
        systemctl stop "$svc" || true
      fi
    done
    # Without systemd the postinst starts the packaged redis-server
    # itself: stop that one only (its pid file), never the test servers of
    # other runs.
    for pidfile in /run/redis/redis-server.pid /var/run/redis/redis-server.pid; do
      if [[ -s $pidfile ]]; then
        kill "$(cat "$pidfile")" 2>/dev/null || true
      fi
    done
    # The prometheus package enables a server on :9090: only its promtool
    # is wanted.
    if command -v systemctl >/dev/null; then
      systemctl disable --now prometheus 2>/dev/null || true
    fi
  fi
fi

# ---- OpenSIPS 3.4 ----

# The modules the tests load: the shipped opensips.cfg's, msilo (make
# bench) on db_sqlite, the MSRP modules (msrp_relay needs auth), and
# cachedb_redis for Redis access from the route script. A cached build
# that lacks one of them is built again.
opensips_modules=(tm sl rr maxfwd signaling sipmsgops usrloc registrar
  json rest_client event_route event_routing cfgutils mi_fifo
  msilo db_sqlite cachedb_redis cachedb_local
  proto_msrp msrp_relay msrp_ua msrp_gateway b2b_entities uac_auth auth)

opensips_installed() {
  local bin
  for bin in "$(command -v opensips 2>/dev/null)" /usr/sbin/opensips /usr/local/sbin/opensips; do
    [[ -x $bin ]] && "$bin" -V 2>/dev/null | grep -q '^version: opensips 3\.4\.' && return 0
  done
  return 1
}

# The tarball: ../shared/opensips beside the checkout, or beside the main
# checkout when this is a git worktree.
find_tarball() {
  local dirs=("$root/../shared/opensips") common
  if common=$(git -C "$root" rev-parse --path-format=absolute --git-common-dir 2>/dev/null); then
    dirs+=("$(dirname "$common")/../shared/opensips")
  fi
  local d f
  for d in "${dirs[@]}"; do
    for f in "$d"/opensips-3.4.*.tar.xz; do
      [[ -f $f ]] && { echo "$f"; return 0; }
    done
  done
  return 1
}

cache_root() {
  if [[ $(id -u) -eq 0 ]]; then
    echo /var/cache/deferpush-opensips
  else
    echo "${XDG_CACHE_HOME:-$HOME/.cache}/deferpush-opensips"
  fi
}

# built DIR: the build in DIR is complete and has every module needed.
built() {
  local m
  [[ -x $1/sbin/opensips && -f $1/.complete ]] || return 1
  for m in "${opensips_modules[@]}"; do
    compgen -G "$1/lib*/opensips/modules/$m.so" >/dev/null || return 1
  done
}

build_opensips() {
  local tarball=$1 sha dest cache log src mods=()
  sha=$(sha256sum "$tarball" | cut -d' ' -f1)
  cache=$(cache_root)
  dest=$cache/$sha
  if built "$dest"; then
    return 0
  fi
  mapfile -t need < <(missing "${build_pkgs[@]}")
  if ((${#need[@]} > 0)); then
    if ! can_install; then
      echo "install-test-deps: building OpenSIPS needs ${need[*]}" >&2
      echo "install-test-deps: run as root: apt-get install -y ${need[*]}" >&2
      return 1
    fi
    apt_install "${need[@]}"
  fi
  mkdir -p "$cache"
  # One build per machine, even when several checkouts run make deps at once.
  exec 9>"$cache/.lock"
  flock 9
  if built "$dest"; then
    exec 9>&-
    return 0
  fi
  echo "install-test-deps: building OpenSIPS from $(basename "$tarball") into $dest (once per machine, a few minutes)"
  rm -rf "$dest" "$cache/build-$sha"
  src=$cache/build-$sha
  log=$cache/build-$sha.log
  mkdir -p "$src"
  for m in "${opensips_modules[@]}"; do mods+=("modules/$m"); done
  if ! {
    tar -xJf "$tarball" -C "$src" --strip-components=1 &&
    make -C "$src" -j"$(nproc)" prefix="$dest/" app &&
    make -C "$src" -j"$(nproc)" prefix="$dest/" modules modules="${mods[*]}" &&
    make -C "$src" prefix="$dest/" install-modules modules="${mods[*]}" &&
    install -D -m 0755 "$src/opensips" "$dest/sbin/opensips" &&
    "$dest/sbin/opensips" -V
  } >"$log" 2>&1; then
    echo "install-test-deps: building OpenSIPS failed; the end of $log:" >&2
    tail -n 150 "$log" >&2
    rm -rf "$dest"
    exec 9>&-
    return 1
  fi
  touch "$dest/.complete"
  rm -rf "$src" "$log"
  exec 9>&-
}

if opensips_installed; then
  :
elif tarball=$(find_tarball); then
  build_opensips "$tarball"
  sha=$(sha256sum "$tarball" | cut -d' ' -f1)
  echo "install-test-deps: $("$(cache_root)/$sha/sbin/opensips" -V | head -n1) in $(cache_root)/$sha"
else
  echo "install-test-deps: no opensips 3.4 and no ../shared/opensips/opensips-3.4.*.tar.xz to build it from:" \
    "the OpenSIPS tests will skip (and fail under CI=true)" >&2
fi
echo "install-test-deps: done"
