#!/usr/bin/env bash
# Build the Docker image the tests run agents in, with no registry: a root filesystem
# made from Debian's busybox-static (sh, coreutils, ps, ip, ...) imported with
# `docker import`.  Idempotent: an image already carrying this recipe's version is kept.
#
#   bash scripts/test-image.sh [TAG]     (default: $FORKYARD_TEST_IMAGE or forkyard-test:latest)
#
# Contents: /bin/busybox and one symlink per applet in /bin, a /bin/bash that runs sh,
# /etc/passwd and /etc/group with root and nobody (so `id` and `whoami` resolve), a
# sticky world-writable /tmp, /work (the bind mount point) and empty /etc/hosts etc.
# for docker to bind over.
set -euo pipefail
# dockerd, iptables and friends live in the sbin directories, which a CI PATH may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
TAG=${1:-${FORKYARD_TEST_IMAGE:-forkyard-test:latest}}
# Bump when the recipe below changes, so existing machines rebuild.
VERSION=2
BUSYBOX=${BUSYBOX:-/bin/busybox}

# Keep an image of that tag built by this recipe's current version, or by no recipe of
# ours at all (someone's own image named by FORKYARD_TEST_IMAGE is not ours to replace).
if have=$(docker image inspect --format '{{json .Config.Labels}}' "$TAG" 2>/dev/null); then
  case "$have" in
    *'"forkyard.test-image":"'"$VERSION"'"'*) exit 0 ;;
    *'"forkyard.test-image"'*)
      echo "test-image: rebuilding $TAG (recipe changed)" >&2
      old_id=$(docker image inspect --format '{{.Id}}' "$TAG") ;;
    *) exit 0 ;;
  esac
fi

if ! docker info >/dev/null 2>&1; then
  echo "test-image: no Docker engine answers (run scripts/docker-up.sh)" >&2
  exit 1
fi
if [ ! -x "$BUSYBOX" ] || ! "$BUSYBOX" --list >/dev/null 2>&1; then
  echo "test-image: $BUSYBOX missing (scripts/system-deps.sh installs busybox-static)" >&2
  exit 1
fi

rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
mkdir -p "$rootfs"/{bin,etc,tmp,work,root,proc,sys,dev}
chmod 1777 "$rootfs/tmp"
chmod 0777 "$rootfs/work"
cp "$BUSYBOX" "$rootfs/bin/busybox"
for applet in $("$BUSYBOX" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$rootfs/bin/$applet"
done
# Task files default to `bash -c {command}`; busybox has no bash applet, so a bash that
# is its sh lets those tasks run here unchanged (the tests' commands are POSIX sh).
printf '#!/bin/sh\nexec /bin/sh "$@"\n' >"$rootfs/bin/bash"
chmod 0755 "$rootfs/bin/bash"
cat >"$rootfs/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat >"$rootfs/etc/group" <<'GROUP'
root:x:0:
nogroup:x:65534:
GROUP
touch "$rootfs/etc/hosts" "$rootfs/etc/hostname" "$rootfs/etc/resolv.conf"

# Numeric owners and a fixed mtime keep the layer identical from one build to the next.
tar --numeric-owner --owner=0 --group=0 --mtime=@0 -C "$rootfs" -c . \
  | docker import \
      --change 'ENV PATH=/bin' \
      --change 'WORKDIR /work' \
      --change 'CMD ["/bin/sh"]' \
      --change "LABEL forkyard.test-image=$VERSION" \
      --message "forkyard test image v$VERSION (busybox-static)" \
      - "$TAG" >/dev/null
# A dynamically linked busybox would lack its libraries in there: prove it runs.
if ! out=$(docker run --rm --network none "$TAG" /bin/sh -c 'echo ok' 2>&1) || [ "$out" != ok ]; then
  echo "test-image: $TAG does not run /bin/sh ($out); is $BUSYBOX static (busybox-static)?" >&2
  docker image rm "$TAG" >/dev/null 2>&1 || true
  exit 1
fi
# The image this replaced is now untagged: drop it (only it, not anyone's dangling images).
if [ -n "${old_id:-}" ] && [ "$old_id" != "$(docker image inspect --format '{{.Id}}' "$TAG")" ]; then
  docker image rm "$old_id" >/dev/null 2>&1 || true
fi
echo "test-image: built $TAG from $BUSYBOX" >&2
