"""A sandbox's disk limit (``limits.disk_mb``): what it may write, in one place.

As root, a sandbox's writable places -- the overlay's upper layer (its changes), its temp
dir, its private object directory, its private home and its private ref and reflog dirs
-- go on a file system of their own: a sparse image file of ``disk_mb`` MiB, formatted
ext4 (no journal, no reserved blocks), loop-mounted at ``disk`` in the sandbox's own
directory (``sandbox/places.py``: the image is ``disk.img`` beside it), and each of those
dirs is a bind mount of a directory on it, at the name :class:`places.Place` gives it --
so every path stays where the rest of forkyard (and confinement) expects it.  Everything
is under the sandbox's own directory, so task ids cannot make two sandboxes share an
image, and a dead run's mounts are found under the sandbox root (``places.mount_roots``).
A write beyond the limit fails with ENOSPC inside the agent, and :meth:`Disk.full` tells
the result.  A little more is reserved (ext4's reserved blocks, out of the agent's reach:
it has no capabilities) so that forkyard can still commit what a full sandbox left.  The
image takes only the blocks written on the host's disk and is deleted with the sandbox.

Why not a tmpfs: its pages are charged to the writer's memory cgroup, so a full disk
would be an OOM kill, and the limit would eat the memory limit.  Why not project
quotas: they need the file system mounted with ``prjquota``, which forkyard does not
control.  Without root (no loop mount), the fallback is ``RLIMIT_FSIZE``: each *file*
is limited to ``disk_mb`` (EFBIG), not their sum -- weaker, and said so in the result.
A full checkout (``layers='checkout'``) lies outside the limited file system (a kept
sandbox's worktree must outlive it): there the limit covers the other dirs only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from gitproc.process import run
from sandbox import overlay
from sandbox.places import Place

#: Below this much free space after the agent ran (or 1/32 of the limit, if more) the
#: limit counts as reached: ext4 keeps back a little for its own metadata, so the agent
#: meets ENOSPC with some space still shown free.
FULL_MARGIN = 1024 * 1024
#: Room kept back for forkyard's harvest (MiB; 10% of the limit above 80 MiB).
RESERVE_MIN_MB = 8


#: The Place dirs that go on the limited file system (all it writes besides a checkout).
ON_DISK = ("tmp", "objects", "layer", "home", "refs", "logs")


@dataclass(frozen=True)
class Disk:
    """One sandbox's size-limited file system, mounted at ``root`` (``<place>/disk``),
    with the place's writable dirs (``binds``) bind mounts of directories on it."""

    root: Path
    image: Path
    size_mb: int
    binds: tuple[Path, ...]

    @classmethod
    def make(cls, own: Place, size_mb: int) -> Disk | None:
        """Make and mount it for the sandbox at ``own``; None where this process cannot
        (not root, no loop devices)."""
        if os.geteuid() != 0 or not shutil.which("mkfs.ext4") or not Path("/dev/loop-control").exists():
            return None
        root, image = own.root / "disk", own.root / "disk.img"
        binds = tuple(own.root / name for name in ON_DISK)
        for point in (*binds, root):  # a killed run's
            overlay.unmount_under(point)
        image.unlink(missing_ok=True)
        root.mkdir(parents=True, exist_ok=True)
        overlay.private_root(own.root.parent.parent)  # see overlay.private_root
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
        space = cls(root, image, size_mb, binds)
        try:
            for point in binds:
                shutil.rmtree(point, ignore_errors=True)  # a killed run's, off the disk
                point.mkdir(exist_ok=True)
                (root / point.name).mkdir()
                overlay.bind(root / point.name, point)
        except OSError:
            space.remove()
            return None
        return space

    def full(self) -> bool:
        """Whether the agent wrote up to the limit."""
        try:
            st = os.statvfs(self.root)
        except OSError:
            return False
        return st.f_bavail * st.f_frsize < max(FULL_MARGIN, self.size_mb * 1024 * 1024 // 32)

    def remove(self) -> None:
        """Unmount the binds and the file system, delete the image and the mount point
        (the bind points stay, empty, for the sandbox's own clean-up)."""
        for point in (*self.binds, self.root):
            overlay.unmount_under(point)
        self.image.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.root.rmdir()


def fsize_args(size_mb: int) -> tuple[str, ...]:
    """The exec shim's fallback: no file larger than ``size_mb``."""
    return ("--rlimit", f"fsize={size_mb * 1024 * 1024}")
