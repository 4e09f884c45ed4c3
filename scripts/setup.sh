#!/usr/bin/env bash
# Idempotent setup for a fresh Debian machine (as root): system packages, dockerd, the venv,
# and the local test image. Safe to run again; does only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

need_pkgs=()
command -v dockerd >/dev/null 2>&1 || need_pkgs+=(docker.io)
command -v haproxy >/dev/null 2>&1 || need_pkgs+=(haproxy)
[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx httpd || need_pkgs+=(busybox-static)
command -v wrk >/dev/null 2>&1 || need_pkgs+=(wrk)
command -v hyperfine >/dev/null 2>&1 || need_pkgs+=(hyperfine)
command -v ip >/dev/null 2>&1 || need_pkgs+=(iproute2)
command -v git >/dev/null 2>&1 || need_pkgs+=(git)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# promtool (Debian's prometheus package) checks the /metrics exposition in the tests; the
# Prometheus server itself is not run.
if ! command -v promtool >/dev/null 2>&1; then
  log "installing promtool (prometheus)"
  export DEBIAN_FRONTEND=noninteractive
  [ ${#need_pkgs[@]} -gt 0 ] || apt-get update -qq
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

# HAProxy sends one datagram per request to Legato; the kernel's default queue of 10 per unix
# datagram socket drops lines as soon as the reader pauses.
qlen=$(cat /proc/sys/net/unix/max_dgram_qlen 2>/dev/null || echo 1024)
if [ "$qlen" -lt 1024 ]; then
  log "raising net.unix.max_dgram_qlen from $qlen to 1024"
  echo 1024 > /proc/sys/net/unix/max_dgram_qlen || log "could not raise net.unix.max_dgram_qlen"
fi

if ! docker info >/dev/null 2>&1; then
  log "starting dockerd"
  setsid dockerd >/var/log/dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 1 120); do
    docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || { log "dockerd did not come up; see /var/log/dockerd.log"; exit 1; }
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  log "installing Legato and its dependencies into .venv"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e ".[dev]"
  rm -f .venv/.installed-*
  touch "$stamp"
fi

scripts/registry.sh
scripts/test-image.sh
