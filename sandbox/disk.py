"""A sandbox's disk limit (``limits.disk_mb``): what it may write, in one place.

As root, a sandbox's writable places -- the overlay's upper layer (its changes), its temp
dir and its private object directory -- go on a file system of their own: a sparse
image file of ``disk_mb`` MiB, formatted ext4 (no journal, no reserved blocks) and
loop-mounted at ``.git/forkyard/tmp/<run>/<task>.disk``.  A write beyond it fails
with ENOSPC inside the agent, and :meth:`Disk.full` tells the result.  A little more is
reserved (ext4's reserved blocks, out of the agent's reach: it has no capabilities) so
that forkyard can still commit what a full sandbox left.  The image takes
only the blocks written on the host's disk and is deleted with the sandbox.

Why not a tmpfs: its pages are charged to the writer's memory cgroup, so a full disk
would be an OOM kill, and the limit would eat the memory limit.  Why not project
quotas: they need the file system mounted with ``prjquota``, which forkyard does not
control.  Without root (no loop mount), the fallback is ``RLIMIT_FSIZE``: each *file*
is limited to ``disk_mb`` (EFBIG), not their sum -- weaker, and said so in the result.
A full checkout (``layers='checkout'``) lies outside the limited file system: there the
limit covers the temp and object dirs only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from gitproc.process import run
from sandbox import overlay

#: Below this much free space after the agent ran (or 1/32 of the limit, if more) the
#: limit counts as reached: ext4 keeps back a little for its own metadata, so the agent
#: meets ENOSPC with some space still shown free.
FULL_MARGIN = 1024 * 1024
#: Room kept back for forkyard's harvest (MiB; 10% of the limit above 80 MiB).
RESERVE_MIN_MB = 8


@dataclass(frozen=True)
class Disk:
    """One sandbox's size-limited file system, mounted at ``root``."""

    root: Path
    image: Path
    size_mb: int

    @classmethod
    def make(cls, root: Path, size_mb: int) -> Disk | None:
        """Make and mount it; None where this process cannot (not root, no loop devices)."""
        if os.geteuid() != 0 or not shutil.which("mkfs.ext4") or not Path("/dev/loop-control").exists():
            return None
        image = root.with_name(root.name + ".img")
        overlay.unmount_under(root)  # a killed run's
        image.unlink(missing_ok=True)
        root.mkdir(parents=True, exist_ok=True)
        overlay.private_root(root.parent.parent)  # see overlay.private_root: tmp/
        reserve = max(RESERVE_MIN_MB, size_mb // 10)
        with open(image, "wb") as f:
            f.truncate((size_mb + reserve) * 1024 * 1024)
        made = run(["mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal",
                    "-E", f"nodiscard,lazy_itable_init=1,root_owner={os.getuid()}:{os.getgid()}",
                    str(image)], check=False, timeout=60)
        if made.returncode == 0:
            # The reserve is for forkyard's own harvest (committing what the agent left
            # needs room for its objects): only CAP_SYS_RESOURCE or `nobody` may use it,
            # and an agent has no capabilities.
            made = run(["tune2fs", "-r", str(reserve * 256), "-u", "65534", "-g", "65534",
                        str(image)], check=False, timeout=60)
        if made.returncode == 0:
            made = run(["mount", "-o", "loop,nosuid,nodev", str(image), str(root)],
                       check=False, timeout=60)
        if made.returncode != 0:
            image.unlink(missing_ok=True)
            return None
        with contextlib.suppress(OSError):
            (root / "lost+found").rmdir()
        return cls(root, image, size_mb)

    def full(self) -> bool:
        """Whether the agent wrote up to the limit."""
        try:
            st = os.statvfs(self.root)
        except OSError:
            return False
        return st.f_bavail * st.f_frsize < max(FULL_MARGIN, self.size_mb * 1024 * 1024 // 32)

    def remove(self) -> None:
        """Unmount, delete the image and the mount point."""
        overlay.unmount_under(self.root)
        self.image.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.root.rmdir()


def fsize_args(size_mb: int) -> tuple[str, ...]:
    """The exec shim's fallback: no file larger than ``size_mb``."""
    return ("--rlimit", f"fsize={size_mb * 1024 * 1024}")
