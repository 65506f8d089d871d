#!/usr/bin/env bash
# Make sure a Docker engine answers; start dockerd with its own data root if none does.
set -euo pipefail
if docker info >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" -ne 0 ] || ! command -v dockerd >/dev/null; then
  echo "docker-up: no Docker engine and cannot start one (tests needing it will skip)" >&2
  exit 0
fi
root=/var/lib/forkyard-docker
mkdir -p "$root"
nohup dockerd --data-root "$root" --pidfile /run/forkyard-dockerd.pid \
  >/var/log/forkyard-dockerd.log 2>&1 &
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 0.5
done
echo "docker-up: dockerd did not start; see /var/log/forkyard-dockerd.log" >&2
tail -20 /var/log/forkyard-dockerd.log >&2 || true
exit 1
