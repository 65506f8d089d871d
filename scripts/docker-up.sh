#!/usr/bin/env bash
# Make sure a Docker engine answers; start our own dockerd when none does.
#
#   bash scripts/docker-up.sh         start (or find) an engine; idempotent
#   bash scripts/docker-up.sh stop    stop the dockerd this script started
#
# The engine we start has its own data root (/var/lib/forkyard-docker), pid file and
# log, and listens on the default socket so docker-py's from_env() and the CLI find it.
# It is started with setsid so it outlives `make test`.  dockerd needs different flags
# on different machines, so we try a short list of flag sets, most capable first, and
# remember the one that worked in the data root (next start goes straight to it):
#
#   1. defaults: overlay2 storage, the docker0 bridge with iptables NAT.
#   2. vfs storage: overlay2 is refused when the data root itself sits on overlayfs
#      (Docker-in-Docker, some CI runners) or the kernel lacks overlay.
#   3. vfs, no iptables, no bridge: kernels or sandboxes without netfilter.  Containers
#      can then only use network_mode "none" or "host"; forkyard's network-off default
#      is unaffected.
#
# Always: the cgroupfs cgroup driver when PID 1 is not systemd (the systemd driver needs
# a systemd to talk to).  Failing to start an engine is loud: exit 1 with the log tail.
# Not root or no dockerd: say so; exit 1 under CI=true (a green CI must have Docker),
# exit 0 locally (tests needing Docker skip).
set -euo pipefail
# dockerd, iptables and friends live in the sbin directories, which a CI PATH may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

ROOT=${FORKYARD_DOCKER_ROOT:-/var/lib/forkyard-docker}
PIDFILE=/run/forkyard-dockerd.pid
LOG=/var/log/forkyard-dockerd.log
SOCK=/var/run/docker.sock
FLAGS_FILE=$ROOT/forkyard-dockerd.flags
WAIT_S=${FORKYARD_DOCKER_WAIT_S:-60}
in_ci() { case "${CI:-}" in 1|true|TRUE|yes) return 0 ;; *) return 1 ;; esac; }

daemon_pid() {
  local pid
  pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

stop() {
  local pid
  if ! pid=$(daemon_pid); then echo "docker-up: no forkyard dockerd running" >&2; return 0; fi
  echo "docker-up: stopping dockerd (pid $pid)" >&2
  kill -TERM "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  echo "docker-up: dockerd $pid ignored SIGTERM for 20s; killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true
}

if [ "${1:-}" = stop ]; then stop; exit 0; fi

# Ask the daemon through our own socket even when DOCKER_HOST is set elsewhere; the
# first check below honours DOCKER_HOST (a user's remote or rootless engine is fine).
engine_up() { docker info >/dev/null 2>&1; }
our_engine_up() { DOCKER_HOST=unix://$SOCK docker info >/dev/null 2>&1; }

if engine_up; then exit 0; fi

give_up() {
  echo "docker-up: $*" >&2
  if in_ci; then exit 1; fi
  echo "docker-up: tests that need Docker will skip" >&2
  exit 0
}
[ "$(id -u)" -eq 0 ] || give_up "no Docker engine answers and we are not root to start one"
command -v dockerd >/dev/null || give_up "no Docker engine answers and dockerd is not installed (scripts/system-deps.sh installs docker.io)"
command -v docker >/dev/null || give_up "the docker CLI is missing (scripts/system-deps.sh installs docker.io)"

# A dockerd of ours may still be starting (a parallel `make test`): wait for it.
if pid=$(daemon_pid); then
  for _ in $(seq 1 $((WAIT_S * 2))); do
    our_engine_up && exit 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  our_engine_up && exit 0
  echo "docker-up: dockerd $pid from an earlier start does not answer; restarting it" >&2
  stop
fi

common=(--data-root "$ROOT" --pidfile "$PIDFILE" --host "unix://$SOCK")
if [ "$(cat /proc/1/comm 2>/dev/null)" != systemd ]; then
  common+=(--exec-opt native.cgroupdriver=cgroupfs)
fi
attempts=(
  ""
  "--storage-driver vfs"
  "--storage-driver vfs --iptables=false --ip-masq=false --bridge=none"
)
if [ -s "$FLAGS_FILE" ]; then
  attempts=("$(cat "$FLAGS_FILE")" "${attempts[@]}")
fi

mkdir -p "$ROOT" "$(dirname "$LOG")"
: >"$LOG"
for extra in "${attempts[@]}"; do
  # shellcheck disable=SC2206  # word-splitting the flag set is intended
  flags=("${common[@]}" $extra)
  echo "docker-up: starting dockerd ${flags[*]}" | tee -a "$LOG" >&2
  # A dockerd killed hard leaves its socket behind; a stale socket makes the next one
  # fail to listen.
  [ -S "$SOCK" ] && ! our_engine_up && rm -f "$SOCK"
  setsid nohup dockerd "${flags[@]}" </dev/null >>"$LOG" 2>&1 &
  pid=$!
  for _ in $(seq 1 $((WAIT_S * 2))); do
    if our_engine_up; then
      mkdir -p "$ROOT" && printf '%s\n' "$extra" >"$FLAGS_FILE"
      echo "docker-up: Docker engine up (dockerd pid $pid, log $LOG)" >&2
      exit 0
    fi
    kill -0 "$pid" 2>/dev/null || break   # it died: try the next flag set
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "docker-up: dockerd did not answer within ${WAIT_S}s; stopping it" | tee -a "$LOG" >&2
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  echo "docker-up: dockerd with '${extra:-default flags}' failed:" >&2
  grep -E 'level=(error|fatal)|failed to start' "$LOG" | tail -3 >&2 || true
done

echo "docker-up: could not start a Docker engine with any flag set; log tail ($LOG):" >&2
tail -30 "$LOG" >&2 || true
exit 1
