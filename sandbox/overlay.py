"""Copy-on-write sandboxes: an overlay mount over one shared, read-only checkout.

A worktree is a full checkout, and creating files is what a checkout costs: on a disk
whose inode tables have seen much churn, half a millisecond or more per file, so eight
agents starting at once on a 2,000-file repository wait seconds for their trees.  Where
this process may mount (root, an ``overlay`` filesystem), a sandbox is instead an
overlayfs at the worktree's path: its lower layer is a checkout of the run's base made
once per run (:class:`Bases`, in a tmpfs of its own when it fits in memory), its upper
layer holds only what the agent changes.  Creating one is a mount; removing one unmounts
and deletes the few files the agent wrote.

git sees an ordinary worktree.  Its index starts as a copy of the base checkout's, whose
stat data matches the files seen through the overlay (``xino=off``: a lower file keeps
its inode number, and git does not compare ``st_dev``); a file the agent changes is
copied up to a new inode and so never looks clean.  The base's files are dated a minute
back before its index is written, so that no entry is "racily clean" and git does not
re-hash every file in every sandbox.

Mounts live in the host's mount namespace, so that the agent (under bubblewrap), our own
git and a user in another terminal all see the same tree.  They are lazily detached
(``MNT_DETACH``: never "busy"), and whatever a killed run left mounted is unmounted by
``--resume`` and ``forkyard gc`` (:func:`unmount_under`).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from gitproc.git import Repo
from sandbox import places

MS_NOSUID, MS_NODEV, MS_BIND, MS_PRIVATE = 0x2, 0x4, 0x1000, 0x40000
MNT_DETACH = 0x2
#: Base checkouts go to a tmpfs when they take at most this share of available memory.
MEMORY_SHARE = 0.25
#: Before its index is written, a base's files are dated this far back (see module doc).
BACKDATE_S = 60.0
#: How long a private root held only by a sandbox being torn down is waited for.
RELEASE_WAIT_S = 1.0
_PAGE = 4096

_libc = ctypes.CDLL(None, use_errno=True)
_state: dict[str, bool | None] = {"usable": None}  # None: not tried; False: a mount failed
_state_lock = threading.Lock()


class OverlayUnavailable(OSError):
    """This process cannot make overlay mounts here (not root, no overlayfs, ...)."""


def _mount(source: str, target: Path, fstype: str | None, flags: int, data: str | None) -> None:
    if _libc.mount(source.encode(), os.fsencode(target), fstype and fstype.encode(), flags,
                   data and data.encode()) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount -t {fstype} on {target}: {os.strerror(err)}")


def unmount(target: Path) -> bool:
    """Detach the mount at ``target``; False when nothing was mounted there."""
    if _libc.umount2(os.fsencode(target), MNT_DETACH) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOENT):
        return False
    raise OSError(err, f"umount {target}: {os.strerror(err)}")


def bind(source: Path, target: Path) -> None:
    """Bind-mount directory ``source`` at ``target`` (both existing)."""
    _mount(str(source), target, None, MS_BIND, None)


def private_root(path: Path) -> None:
    """Make ``path`` a private mount point (a bind mount of itself), once.

    Mounts made under a private mount do not propagate: bubblewrap copies the mount table
    when a sandbox starts and remounts every copy read-only, and an overlay of another
    sandbox unmounted meanwhile would otherwise vanish from that copy mid-way ("Can't
    bind mount ... No such file or directory").  Under a private root the copy stays
    until the sandbox that holds it ends.  :func:`release_root` undoes it.
    """
    real = os.path.realpath(path)
    with _state_lock:
        os.makedirs(real, exist_ok=True)
        if not _is_mount_point(real):
            _mount(real, Path(real), None, MS_BIND, None)
        _mount("none", Path(real), None, MS_PRIVATE, None)


def release_root(path: Path) -> None:
    """Unmount :func:`private_root`'s bind unless something is mounted (or open) under
    it: a plain unmount, which the kernel refuses while it is busy.

    Busy with nothing mounted under it, the root is held by a sandbox that is still going:
    an overlay whose upper dir lies in the root lives on, detached, until the kernel has
    torn down the mount namespace of the sandbox's last process -- some milliseconds
    after that process died, tens on a loaded machine.  That is waited for, up to
    :data:`RELEASE_WAIT_S`; with other mounts under it (another run's sandboxes), or not
    mounted at all, the root is left as it is."""
    real = os.path.realpath(path)
    deadline = time.monotonic() + RELEASE_WAIT_S
    while True:
        with _state_lock:
            if _libc.umount2(os.fsencode(real), 0) == 0:
                return
            busy = ctypes.get_errno() == errno.EBUSY
        if not busy or mounts_under(Path(real)) != [Path(real)] \
                or time.monotonic() > deadline:
            return
        time.sleep(0.01)


def unmount_run(forkyard_dir: Path, run_id: str) -> None:
    """Detach whatever a (dead) run left mounted, then release the private roots."""
    for root in places.mount_roots(forkyard_dir):
        unmount_under(root / run_id)
    release_roots(forkyard_dir)


def release_roots(forkyard_dir: Path) -> None:
    for root in places.mount_roots(forkyard_dir):
        release_root(root)


def has_mounts(path: Path) -> bool:
    """Whether something is mounted at or below ``path``."""
    return bool(mounts_under(path))


def _is_mount_point(real: str) -> bool:
    return Path(real) in mounts_under(Path(real))


def mounts_under(path: Path) -> list[Path]:
    """Mount points at or below ``path``, deepest first."""
    root = os.path.realpath(path)
    found = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                point = _unescape(line.split(" ", 5)[4])
                if point == root or point.startswith(root.rstrip("/") + "/"):
                    found.append(Path(point))
    except OSError:
        return []
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def unmount_under(path: Path) -> int:
    """Detach every mount at or below ``path`` (a killed run's); how many there were."""
    n = 0
    for point in mounts_under(path):
        try:
            n += unmount(point)
        except OSError:
            pass
    return n


def _unescape(field: str) -> str:
    # mountinfo octal-escapes space, tab, newline and backslash.
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _escape_option(path: Path) -> str:
    # overlayfs option values: ',' separates options and ':' lower layers.
    return str(path).replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")


@dataclass(frozen=True)
class Layers:
    """One sandbox's overlay: ``upper`` holds its changes, ``work`` is overlayfs's own."""

    lower: Path
    upper: Path
    work: Path
    target: Path

    def mount(self) -> None:
        """Mount; :class:`OverlayUnavailable` when this process cannot (remembered)."""
        self.upper.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True, exist_ok=True)
        opts = (f"lowerdir={_escape_option(self.lower)},upperdir={_escape_option(self.upper)},"
                f"workdir={_escape_option(self.work)},xino=off")
        try:
            # volatile: no sync on unmount (Linux 5.10+); what matters is committed by then.
            _mount("forkyard", self.target, "overlay", MS_NOSUID | MS_NODEV, opts + ",volatile")
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                _give_up()
                raise OverlayUnavailable(exc.errno, str(exc)) from None
            try:
                _mount("forkyard", self.target, "overlay", MS_NOSUID | MS_NODEV, opts)
            except OSError as exc2:
                _give_up()
                raise OverlayUnavailable(exc2.errno, str(exc2)) from None

    def unmount(self) -> None:
        """Unmount and delete the layers.  The mount point itself stays (empty) until the
        run's base goes (:meth:`Bases.close`): removing a directory that is a mount point
        in another mount namespace detaches the mount there, and a sandbox whose
        bubblewrap is copying the mount table at that moment fails to start."""
        unmount(self.target)
        shutil.rmtree(self.upper.parent, ignore_errors=True)


def usable() -> bool:
    """Whether to try overlay sandboxes at all: root, overlayfs known, no failure yet."""
    with _state_lock:
        if _state["usable"] is None:
            _state["usable"] = os.geteuid() == 0 and _has_overlayfs()
        return bool(_state["usable"])


def _give_up() -> None:
    with _state_lock:
        _state["usable"] = False


def _has_overlayfs() -> bool:
    try:
        with open("/proc/filesystems", encoding="ascii") as f:
            if any(line.split()[-1] == "overlay" for line in f if line.strip()):
                return True
    except OSError:
        return False
    return os.path.isdir("/sys/module/overlay") or _modprobe_overlay()


def _modprobe_overlay() -> bool:
    from gitproc.process import run

    exe = shutil.which("modprobe") or shutil.which("modprobe", path="/sbin:/usr/sbin")
    if exe is None:
        return False
    return run([exe, "-q", "overlay"], check=False).returncode == 0


@dataclass(frozen=True)
class Base:
    """A read-only checkout of ``commit`` (``tree``) and the index that describes it."""

    commit: str
    tree: Path
    index: Path


class Bases:
    """The base checkouts of one run, under ``.git/forkyard/bases/<run-id>``.

    One checkout per run, of the first base asked for: sandboxes at later tips start from
    it and ``git read-tree -m -u`` to their tip, which writes only the files in between.
    """

    def __init__(self, repo: Repo, run_id: str) -> None:
        self.repo = repo
        self.root = repo.forkyard_dir / "bases" / run_id
        self._base: Base | None = None
        self._lock = threading.Lock()

    def get(self, commit: str) -> Base:
        with self._lock:
            if self._base is None:
                self._base = self._make(commit)
            return self._base

    def _make(self, commit: str) -> Base:
        unmount_under(self.root)  # a killed run's, being resumed
        shutil.rmtree(self.root, ignore_errors=True)
        for root in places.mount_roots(self.repo.forkyard_dir):  # where this run's mounts go
            private_root(root)
        self.root.mkdir(parents=True)
        need = self._footprint(commit)
        if need <= MEMORY_SHARE * _available_memory():
            try:
                _mount("forkyard-base", self.root, "tmpfs", MS_NOSUID | MS_NODEV,
                       f"size={need},mode=0755")
            except OSError:
                pass  # on the repository's disk, then
        base = Base(commit, self.root / "tree", self.root / "index")
        base.tree.mkdir()
        env = {"GIT_INDEX_FILE": str(base.index), "GIT_WORK_TREE": str(base.tree)}
        self.repo.git("read-tree", "--reset", "-u", commit, env=env)
        then = time.time() - BACKDATE_S
        for dirpath, _, files in os.walk(base.tree):
            for name in files:
                os.utime(os.path.join(dirpath, name), (then, then), follow_symlinks=False)
        self.repo.git("update-index", "-q", "--refresh", env=env, check=False)
        return base

    def _footprint(self, commit: str) -> int:
        """Bytes a tmpfs needs for the checkout and its index (pages, not file sizes)."""
        out = self.repo.git("ls-tree", "-r", "-t", "-l", "-z", commit).stdout
        total, entries = 0, 0
        for rec in out.split(b"\0"):
            if not rec:
                continue
            entries += 1
            size = rec.split(b"\t", 1)[0].split()[-1]
            total += _PAGE * (1 + (int(size) if size.isdigit() else 0) // _PAGE)
        return int(1.25 * (total + 128 * entries)) + (16 << 20)

    def close(self) -> None:
        """Unmount and delete (sandboxes still mounted on it keep it alive until theirs go)."""
        with self._lock:
            self._base = None
            unmount_under(self.root)
            shutil.rmtree(self.root, ignore_errors=True)
            # The sandboxes' mount points (kept sandboxes are plain, non-empty dirs).
            spare = places.run_dir(self.repo.forkyard_dir, self.root.name)
            # At or above a mount point: keep.  (One read of the mount table for them all.)
            mounted = {p for r in places.mount_roots(self.repo.forkyard_dir)
                       for m in mounts_under(r) for p in (m, *m.parents)}
            tasks = [t for t in (spare.iterdir() if spare.is_dir() else ())]
            for d in (*(t / places.WORKTREE for t in tasks), *tasks, spare, self.root.parent):
                with contextlib.suppress(OSError):
                    if Path(os.path.realpath(d)) not in mounted:
                        d.rmdir()
            release_roots(self.repo.forkyard_dir)


def _available_memory() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0
