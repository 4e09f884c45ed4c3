#!/usr/bin/env bash
# Idempotent: the local image registry Legato pushes builds to (Debian's docker-registry,
# the Docker Distribution 2.x server) on 127.0.0.1:5000 only, with its own config and storage.
# Installs the package if the binary is missing, keeps the packaged service (which would listen
# on :5000 on every interface) from running, writes /etc/legato/registry.yml, and starts the
# registry detached unless it already answers. Does nothing when all of that is already so.
set -euo pipefail

ADDR=127.0.0.1:5000
CONF=/etc/legato/registry.yml
DATA=/var/lib/legato/registry
LOG=/var/log/legato-registry.log
PIDFILE=/run/legato-registry.pid
USER_NAME=docker-registry  # the system user the package creates; root if it does not exist

log() { printf '\033[1m[registry]\033[0m %s\n' "$*"; }

# True when GET /v2/ answers 200. curl and wget are not in every Debian image; bash is.
answers() {
  if command -v curl >/dev/null 2>&1; then
    curl -fsS -o /dev/null --max-time 2 "http://$ADDR/v2/" 2>/dev/null
  elif command -v wget >/dev/null 2>&1; then
    wget -q -O /dev/null -T 2 "http://$ADDR/v2/" 2>/dev/null
  else
    timeout 2 bash -c '
      exec 3<>"/dev/tcp/${1%:*}/${1##*:}" || exit 1
      printf "GET /v2/ HTTP/1.0\r\nHost: %s\r\n\r\n" "$1" >&3
      IFS=" " read -r _ status _ <&3
      [ "$status" = 200 ]' _ "$ADDR" 2>/dev/null
  fi
}

# Listeners on port 5000 that are not bound to 127.0.0.1 (e.g. the packaged service's ":5000").
exposed_listeners() {
  command -v ss >/dev/null 2>&1 || return 0
  ss -Hltn 'sport = :5000' 2>/dev/null | awk '$4 != "127.0.0.1:5000" {print $4}'
}

our_pid() {
  local pid
  [ -f "$PIDFILE" ] || return 1
  pid=$(cat "$PIDFILE")
  [ -n "$pid" ] && [ -d "/proc/$pid" ] && grep -qa "$CONF" "/proc/$pid/cmdline" && echo "$pid"
}

if ! command -v docker-registry >/dev/null 2>&1; then
  log "installing docker-registry"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  NEEDRESTART_SUSPEND=1 apt-get install -y -qq docker-registry >/dev/null
  # The package enables and (under systemd or a plain sysv init without a policy-rc.d that
  # forbids it) starts its own service with /etc/docker/registry/config.yml: every interface,
  # htpasswd auth. Legato runs its own instance instead, so the packaged one is switched off.
  if [ -d /run/systemd/system ]; then
    systemctl disable --now docker-registry.service >/dev/null 2>&1 || true
  else
    /etc/init.d/docker-registry stop >/dev/null 2>&1 || true
    update-rc.d docker-registry disable >/dev/null 2>&1 || true
  fi
fi

mkdir -p "$(dirname "$CONF")" "$DATA"
if id "$USER_NAME" >/dev/null 2>&1; then
  run_as=(setpriv "--reuid=$USER_NAME" "--regid=$USER_NAME" --init-groups)
  [ "$(stat -c %U "$DATA")" = "$USER_NAME" ] || chown -R "$USER_NAME:$USER_NAME" "$DATA"
else
  run_as=()
fi

new_conf=$(cat <<YAML
# Written by scripts/registry.sh; changes here are overwritten.
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
# No blob descriptor cache: after a garbage-collect it would vouch for blobs that are gone.
storage:
  filesystem:
    rootdirectory: $DATA
  delete:
    enabled: true
http:
  addr: $ADDR
  headers:
    X-Content-Type-Options: [nosniff]
YAML
)
conf_changed=false
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$new_conf" ]; then
  log "writing $CONF"
  printf '%s\n' "$new_conf" > "$CONF.tmp"
  mv "$CONF.tmp" "$CONF"
  conf_changed=true
fi

if $conf_changed && pid=$(our_pid); then
  log "restarting the registry (pid $pid) for the new config"
  kill "$pid"
  for _ in $(seq 1 50); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
fi

if ! answers; then
  exposed=$(exposed_listeners)
  if [ -n "$exposed" ]; then
    log "port 5000 is taken by something else ($exposed); stop it and run again"
    exit 1
  fi
  log "starting docker-registry on $ADDR"
  touch "$LOG"
  setsid "${run_as[@]}" docker-registry serve "$CONF" >>"$LOG" 2>&1 </dev/null &
  echo $! > "$PIDFILE"
  for _ in $(seq 1 60); do
    answers && break
    sleep 0.25
  done
  answers || { log "the registry did not answer on $ADDR; see $LOG"; exit 1; }
fi

exposed=$(exposed_listeners)
if [ -n "$exposed" ]; then
  log "warning: something also listens on port 5000 beyond 127.0.0.1: $exposed"
fi
