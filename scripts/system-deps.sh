#!/usr/bin/env bash
# Install the Debian packages the tests exercise for real, when running as root and
# when something is missing.  Not root: say what is missing and carry on (tests that
# need it skip locally and fail under CI=true).
#
# docker.io is Debian's engine (dockerd 20.10); it pulls in what dockerd needs to run
# containers: containerd, runc, tini (docker-init, for `init=True`) and iptables (the
# default bridge network).  A docker CLI installed some other way (e.g. a static v28 in
# /usr/local/bin) is fine beside it: both negotiate the API version with the daemon.
# busybox-static is the whole root filesystem of the test image (scripts/test-image.sh),
# so the tests never need a registry.
set -euo pipefail
# dockerd, iptables and friends live in the sbin directories, which a CI PATH may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
need=()
add() { case " ${need[*]:-} " in *" $1 "*) ;; *) need+=("$1") ;; esac; }
command -v git >/dev/null || add git
command -v bwrap >/dev/null || add bubblewrap
for exe in dockerd docker containerd runc docker-init; do
  command -v "$exe" >/dev/null || add docker.io
done
command -v iptables >/dev/null || add iptables
[ -x /bin/busybox ] || add busybox-static
# The agent CLIs (scripts/agents.sh): npm for Claude Code, Codex and Gemini CLI (node
# itself comes with it; one older than 20 gets a newer runtime from npm), a venv for aider.
command -v node >/dev/null || add nodejs
command -v npm >/dev/null || add npm  # also the MCP Inspector (scripts/mcp-inspector.sh)
python3 -c 'import ensurepip' 2>/dev/null || add python3-venv
# limits.disk_mb (sandbox/disk.py): a loop-mounted ext4 image per sandbox.
command -v mkfs.ext4 >/dev/null || add e2fsprogs
command -v tune2fs >/dev/null || add e2fsprogs
# The attack suite's network tests (tests/security/) use curl inside the sandbox.
command -v curl >/dev/null || add curl
command -v unshare >/dev/null || add util-linux  # the Ray cluster test hides a path from a node
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "system-deps: not root; missing: ${need[*]} (tests needing them will skip)" >&2
  exit 0
fi
echo "system-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Wait for a concurrent apt/dpkg (another bootstrap, unattended-upgrades) instead of
# failing on its lock.
apt_opts=(-o DPkg::Lock::Timeout=300 -qq)
apt-get "${apt_opts[@]}" update >/dev/null
apt-get "${apt_opts[@]}" install -y --no-install-recommends "${need[@]}" >/dev/null
