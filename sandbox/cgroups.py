"""Control groups for the worktree backend: detect the layout, create one group per
sandbox, apply limits, kill the whole group, read the OOM counter, remove it.

Three layouts exist in the wild, detected from ``/proc/self/mountinfo``:

- ``v2`` (unified): one ``cgroup2`` mount with the memory, cpu and pids controllers.
  Limits: ``memory.max``, ``memory.swap.max=0``, ``memory.oom.group=1``, ``cpu.max``,
  ``pids.max``; kill with ``cgroup.kill``; OOM from ``memory.events``' ``oom_kill``.
- ``v1`` (legacy): one mount per controller.  Limits: ``memory.limit_in_bytes`` (and
  ``memory.memsw.limit_in_bytes`` so swap cannot stretch it), ``cpu.cfs_quota_us`` /
  ``cpu.cfs_period_us``, ``pids.max``; kill by freezing the ``freezer`` group, SIGKILLing
  every member and thawing (a frozen process cannot fork away); OOM from
  ``memory.oom_control``'s ``oom_kill``.
- ``hybrid``: v1 controllers plus an (often controller-less) cgroup2 mount.  Limits as
  v1; the sandbox also joins a group in the unified tree so ``cgroup.kill`` can kill the
  whole tree atomically.

Groups are made *below forkyard's own cgroup* (``<own>/forkyard/<repo-key>.<run>/<task>``;
the key keeps repositories apart for gc): a supervisor's limits on forkyard cover its
agents, no delegation boundary is crossed.  On v2 a parent holding processes cannot
enable controllers for its children, so when forkyard's own group cannot host them its
parent is tried.  ``FORKYARD_CGROUP_ROOT`` overrides.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from gitproc.process import BACKGROUND_NICE
from planner.tasks import Limits
from sandbox import reaper

Layout = Literal["v2", "v1", "hybrid", "none"]
CPU_PERIOD_US = 100_000
#: A background group's CPU weight as a share of an ordinary process's: a process's at
#: forkyard's background niceness (each step of niceness is ~1.25x).
BACKGROUND_WEIGHT = 1.25 ** -BACKGROUND_NICE
V1_CONTROLLERS = ("memory", "cpu", "pids", "freezer", "cpuacct")  # first three required
V2_CONTROLLERS = ("memory", "cpu", "pids")


class CgroupUnavailable(OSError):
    """No writable cgroup hierarchy could host a sandbox group."""


@dataclass(frozen=True)
class Hierarchies:
    """Where each hierarchy is mounted and where forkyard's groups go in it."""

    layout: Layout
    v1: dict[str, Path] = field(default_factory=dict)   # controller -> forkyard base dir
    unified: Path | None = None                           # cgroup2 forkyard base dir

    @property
    def enforced_by(self) -> str:
        """The name results record: ``cgroup-v2``, ``cgroup-v1`` or ``cgroup-hybrid``."""
        return "none" if self.layout == "none" else f"cgroup-{self.layout}"

    def bases(self) -> list[Path]:
        """Every forkyard base dir (for gc)."""
        return list(dict.fromkeys([*self.v1.values(), *([self.unified] if self.unified else [])]))


def _mounts(mountinfo: str) -> tuple[dict[str, tuple[Path, str]], tuple[Path, str] | None]:
    """v1 controller -> (mount point, mount root), and the cgroup2 (mount point, root)."""
    v1: dict[str, tuple[Path, str]] = {}
    v2: tuple[Path, str] | None = None
    for line in mountinfo.splitlines():
        pre, _, post = line.partition(" - ")
        fields, rest = pre.split(), post.split()
        if len(fields) < 5 or len(rest) < 3:
            continue
        root, point, fstype = fields[3], Path(fields[4].replace("\\040", " ")), rest[0]
        if fstype == "cgroup2" and v2 is None:
            v2 = (point, root)
        elif fstype == "cgroup":
            for opt in rest[2].split(","):
                if opt in V1_CONTROLLERS and opt not in v1:
                    v1[opt] = (point, root)
    return v1, v2


def _own_paths(proc_cgroup: str) -> tuple[dict[str, str], str | None]:
    """From ``/proc/self/cgroup``: v1 controller -> own path, and the v2 own path."""
    v1: dict[str, str] = {}
    v2: str | None = None
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, ctrls, path = parts
        if hid == "0" and ctrls == "":
            v2 = path
            continue
        for c in ctrls.split(","):
            v1[c.removeprefix("name=")] = path
    return v1, v2


def _join(mount: tuple[Path, str], own: str | None) -> Path:
    point, root = mount
    own = own or "/"
    # Inside a cgroup namespace or a bind-mounted subtree the mount root is a prefix
    # of our path (or "/" already is our group).
    if root != "/" and own.startswith(root):
        own = own[len(root):] or "/"
    candidate = point / own.lstrip("/")
    return candidate if candidate.is_dir() else point


def _writable(d: Path) -> bool:
    return os.access(d, os.W_OK) and (d / "cgroup.procs").exists()


def _v2_base(own: Path, mount: Path) -> Path | None:
    """A dir under which ``forkyard/`` can get memory/cpu/pids for its children."""
    for cand in (own, own.parent) if own != mount else (own,):
        if not cand.is_relative_to(mount) or not _writable(cand):
            continue
        enabled = set((cand / "cgroup.subtree_control").read_text().split())
        if set(V2_CONTROLLERS) <= enabled:
            return cand
        avail = set((cand / "cgroup.controllers").read_text().split())
        if not set(V2_CONTROLLERS) <= avail:
            continue
        try:
            _write(cand / "cgroup.subtree_control", " ".join(f"+{c}" for c in V2_CONTROLLERS))
            return cand
        except OSError:  # EBUSY: cand holds processes and is not the root
            continue
    return None


def detect(mountinfo: str | None = None, proc_cgroup: str | None = None) -> Hierarchies:
    """Find the layout and a writable place for forkyard's groups (``none`` if there is none)."""
    try:
        mountinfo = mountinfo if mountinfo is not None else Path("/proc/self/mountinfo").read_text()
        proc_cgroup = proc_cgroup if proc_cgroup is not None else Path("/proc/self/cgroup").read_text()
    except OSError:
        return Hierarchies("none")
    v1m, v2m = _mounts(mountinfo)
    own1, own2 = _own_paths(proc_cgroup)
    override = os.environ.get("FORKYARD_CGROUP_ROOT")
    unified: Path | None = None
    if v2m is not None:
        own = Path(override) if override else _join(v2m, own2)
        unified = own if _writable(own) else (v2m[0] if _writable(v2m[0]) else None)
    if {"memory", "cpu", "pids"} <= v1m.keys():
        v1 = {c: _join(m, own1.get(c)) for c, m in v1m.items()}
        # freezer and cpuacct are nice to have (kill, accounting); the limits are not.
        v1 = {c: d for c, d in v1.items() if _writable(d) or c in ("memory", "cpu", "pids")}
        if all(_writable(d) for d in v1.values()):
            bases = {c: d / "forkyard" for c, d in v1.items()}
            if unified is not None:
                return Hierarchies("hybrid", bases, unified / "forkyard")
            return Hierarchies("v1", bases)
        return Hierarchies("none")
    if v2m is not None and unified is not None:
        avail = set((v2m[0] / "cgroup.controllers").read_text().split())
        if set(V2_CONTROLLERS) <= avail:
            base = Path(override) if override else _v2_base(unified, v2m[0])
            if base is not None:
                return Hierarchies("v2", {}, base / "forkyard")
    return Hierarchies("none")


def _write(path: Path, value: str) -> None:
    # cgroup files want one write(2) per value; open without O_TRUNC/O_CREAT surprises.
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _mkdirs(base: Path, rel: tuple[str, ...], enable: bool) -> Path:
    """Create ``base/rel...``; on v2 enable the controllers on each inner level."""
    d = base
    for i, part in enumerate((None, *rel)):
        if part is not None:
            d = d / part
        d.mkdir(exist_ok=True)
        if enable and i < len(rel):
            ctl = d / "cgroup.subtree_control"
            if not set(V2_CONTROLLERS) <= set(ctl.read_text().split()):
                _write(ctl, " ".join(f"+{c}" for c in V2_CONTROLLERS))
    return d


@dataclass
class Cgroup:
    """One sandbox's group in every hierarchy of the layout."""

    hier: Hierarchies
    dirs: dict[str, Path]   # "unified" or a v1 controller -> group dir
    #: With ``defer_cpu``: the CPU quota not written yet, as (control file, value).
    cpu_quota: tuple[Path, str] | None = None

    @classmethod
    def create(cls, hier: Hierarchies, run_id: str, task_id: str, limits: Limits,
               scope: str = "", defer_cpu: bool = False) -> Cgroup:
        """Create the group ``<scope>.<run_id>/<task_id>`` and apply ``limits``.

        ``scope`` names the repository (see :func:`repo_scope`): cgroups are host-wide,
        and gc must never mistake another repository's live run for a crashed one.
        ``defer_cpu``: leave the CPU quota to the caller (:attr:`cpu_quota`), which has
        the exec shim write it just before the agent starts, so that the sandbox's own
        set-up (bubblewrap, Landlock) is not throttled to the agent's share.
        """
        rel = (f"{scope}.{run_id}" if scope else run_id, task_id)
        dirs: dict[str, Path] = {}
        try:
            if hier.layout == "v2" and hier.unified:
                dirs["unified"] = _mkdirs(hier.unified, rel, enable=True)
            else:
                for ctrl, base in hier.v1.items():
                    dirs[ctrl] = _mkdirs(base, rel, enable=False)
                if hier.unified is not None:
                    dirs["unified"] = _mkdirs(hier.unified, rel, enable=False)
            group = cls(hier, dirs)
            group._apply(limits, defer_cpu)
        except OSError as exc:
            for d in dirs.values():
                _rmdir(d)
            raise CgroupUnavailable(exc.errno or errno.EIO, f"cannot set up cgroup: {exc}") from exc
        group._weigh()
        reaper.watch([str(d) for d in dirs.values()])  # killed with us, however we die
        return group

    def _weight(self) -> tuple[Path | None, str, int]:
        """The group's CPU weight: its directory, file, and one ordinary process's."""
        if self.hier.layout == "v2":
            return self.dirs.get("unified"), "cpu.weight", 100
        return self.dirs.get("cpu"), "cpu.shares", 1024

    def _weigh(self) -> None:
        """Give forkyard's run group and base group the CPU weight of one ordinary process
        per sandbox they hold.

        The kernel weighs a group like one process of default priority: left at the
        default, eight agents together would get the CPU share of a single ``git`` of
        forkyard's (or of any other process on the host) while the machine is busy, and
        their start-up crawls.  This is a share under contention only, never more than
        each sandbox's own ``cpus`` limit.  Best effort (here and in :meth:`in_background`):
        a weight that cannot be written changes nothing else.
        """
        d, name, unit = self._weight()
        with contextlib.suppress(OSError):
            if d is None:
                return
            run_dir, base = d.parent, d.parent.parent
            # d_type from the directory listing: no stat of every control file.
            counts = {r: len(_subdirs(r)) for r in _subdirs(base)}
            cap = 10_000 if name == "cpu.weight" else 262_144  # the kernel's maximum
            for level, n in ((run_dir, counts.get(run_dir, 0)), (base, sum(counts.values()))):
                if (level / name).exists():
                    _write(level / name, str(min(cap, unit * max(1, n))))

    def in_background(self, background: bool) -> None:
        """Weigh the group as one process at forkyard's background niceness, or as an
        ordinary one again.  The kernel weighs a group as one entity whatever the
        niceness of its processes: a chain started ahead of its turn, or a commit step,
        would otherwise compete with the agents starting as their equal."""
        d, name, unit = self._weight()
        with contextlib.suppress(OSError):
            if d is not None:
                _write(d / name, str(round(unit * BACKGROUND_WEIGHT) if background else unit))

    def _apply(self, limits: Limits, defer_cpu: bool = False) -> None:
        mem = limits.memory_mb * 1024 * 1024 if limits.memory_mb else None
        quota = int(limits.cpus * CPU_PERIOD_US) if limits.cpus else None
        if self.hier.layout == "v2":
            d = self.dirs["unified"]
            if mem:
                _write(d / "memory.max", str(mem))
                if (d / "memory.swap.max").exists():
                    _write(d / "memory.swap.max", "0")
                # Kill the whole group on OOM, not one random victim: a half-killed
                # agent is worse than a clearly failed one.
                _write(d / "memory.oom.group", "1")
            if quota:
                self._cpu(d / "cpu.max", f"{quota} {CPU_PERIOD_US}", defer_cpu)
            if limits.pids:
                _write(d / "pids.max", str(limits.pids))
            return
        if mem:
            d = self.dirs["memory"]
            _write(d / "memory.limit_in_bytes", str(mem))
            # memsw must be >= limit_in_bytes, so it is set second; equal means no swap.
            if (d / "memory.memsw.limit_in_bytes").exists():
                _write(d / "memory.memsw.limit_in_bytes", str(mem))
            if (d / "memory.swappiness").exists():
                with contextlib.suppress(OSError):
                    _write(d / "memory.swappiness", "0")
        if quota:
            _write(self.dirs["cpu"] / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            self._cpu(self.dirs["cpu"] / "cpu.cfs_quota_us", str(quota), defer_cpu)
        if limits.pids:
            _write(self.dirs["pids"] / "pids.max", str(limits.pids))

    def _cpu(self, path: Path, value: str, defer: bool) -> None:
        if defer:
            self.cpu_quota = (path, value)
        else:
            _write(path, value)

    # -- membership ---------------------------------------------------------------

    def procs_files(self) -> list[str]:
        """The ``cgroup.procs`` files the exec shim writes its pid to."""
        # cpu and cpuacct are often co-mounted: one dir, one write.
        return list(dict.fromkeys(str(d / "cgroup.procs") for d in self.dirs.values()))

    def pids(self, one: bool = False) -> set[int]:
        """Every process in the group (any hierarchy); ``one``: as one hierarchy lists
        them (every member joined all of them: enough where nothing is at stake, as for
        renicing, and one file read instead of one per hierarchy)."""
        found: set[int] = set()
        for d in self.dirs.values():
            found |= _read_pids(d)
            if one:
                break
        return found

    # -- stopping -----------------------------------------------------------------

    def signal(self, sig: int) -> None:
        """Send ``sig`` to every member (SIGTERM for a graceful stop)."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def kill(self, wait_s: float = 5.0) -> bool:
        """Kill every member, including setsid'd and double-forked ones, and wait up to
        ``wait_s`` for the group to be empty (:meth:`wait_empty`).  True when empty."""
        unified = self.dirs.get("unified")
        if unified is not None and (unified / "cgroup.kill").exists():
            _write(unified / "cgroup.kill", "1")
        elif "freezer" in self.dirs:
            self._freeze_kill()
        return self.wait_empty(wait_s)

    def wait_empty(self, wait_s: float = 5.0) -> bool:
        """Wait up to ``wait_s`` for every member to be gone, SIGKILLing what is left
        (processes killed are gone once the kernel has torn down what they held, their
        namespaces for one: that can take tens of milliseconds).  True when empty."""
        deadline = time.monotonic() + wait_s
        pause = 0.001  # killed processes are gone within a millisecond or two, usually
        while time.monotonic() < deadline:
            pids = self.pids()
            if not pids:
                return True
            # Fallback and belt-and-braces: whatever is still there gets SIGKILL.
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(pause)
            pause = min(pause * 2, 0.02)
        return not self.pids()

    def _freeze_kill(self) -> None:
        # A frozen process cannot fork, so the member list is stable while we kill it.
        d = self.dirs["freezer"]
        try:
            _write(d / "freezer.state", "FROZEN")
            for _ in range(100):
                if (d / "freezer.state").read_text().strip() == "FROZEN":
                    break
                time.sleep(0.005)
            for pid in _read_pids(d):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        finally:
            _write(d / "freezer.state", "THAWED")

    # -- accounting ---------------------------------------------------------------

    def oom_kills(self) -> int:
        """How many processes the kernel's OOM killer killed in this group."""
        if "unified" in self.dirs and self.hier.layout == "v2":
            return _keyed(self.dirs["unified"] / "memory.events").get("oom_kill", 0)
        if "memory" in self.dirs:
            return _keyed(self.dirs["memory"] / "memory.oom_control").get("oom_kill", 0)
        return 0

    def cpu_usage_s(self) -> float | None:
        """CPU time the group used, in seconds (None when not accounted)."""
        if self.hier.layout == "v2":
            usec = _keyed(self.dirs["unified"] / "cpu.stat").get("usage_usec")
            return usec / 1e6 if usec is not None else None
        if "cpuacct" in self.dirs:
            try:
                return int((self.dirs["cpuacct"] / "cpuacct.usage").read_text()) / 1e9
            except (OSError, ValueError):
                return None
        return None

    def remove(self) -> bool:
        """Kill what is left and remove the group's directories (and empty run dirs);
        True when every directory is gone (nothing of the group is left running)."""
        if self.pids():
            self.kill()
        for d in self.dirs.values():
            _rmdir(d)
        gone = [d for d in self.dirs.values() if not d.exists()]
        reaper.forget([str(d) for d in gone])
        self._weigh()
        for d in self.dirs.values():
            _rmdir(d.parent)
        return len(gone) == len(self.dirs)


def _read_pids(d: Path) -> set[int]:
    try:
        return {int(x) for x in (d / "cgroup.procs").read_text().split()}
    except OSError:
        return set()


def _keyed(path: Path) -> dict[str, int]:
    try:
        text = path.read_text()
    except OSError:
        return {}
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out


def _rmdir(d: Path) -> None:
    try:
        d.rmdir()
    except OSError:
        pass  # busy (members left, or other tasks of the run) or already gone


def repo_scope(common_dir: Path) -> str:
    """A short stable name for a repository, prefixed to its runs' cgroup names."""
    import hashlib

    return hashlib.sha1(str(common_dir.resolve()).encode()).hexdigest()[:10]


def walk_groups(hier: Hierarchies) -> Iterator[tuple[str, str, list[Path]]]:
    """(run dir name, task_id, dirs) for every forkyard group in any hierarchy (for gc)."""
    seen: dict[tuple[str, str], list[Path]] = {}
    for base in hier.bases():
        if not base.is_dir():
            continue
        for run_dir in sorted(p for p in base.iterdir() if p.is_dir() and _is_group(p)):
            try:
                tasks = sorted(p for p in run_dir.iterdir() if p.is_dir() and _is_group(p))
            except FileNotFoundError:
                continue  # another run (any repository on this host) removed it meanwhile
            for task_dir in tasks:
                seen.setdefault((run_dir.name, task_dir.name), []).append(task_dir)
    for (run_id, task_id), dirs in seen.items():
        yield run_id, task_id, dirs


def _is_group(p: Path) -> bool:
    return (p / "cgroup.procs").exists()


def remove_dirs(dirs: list[Path]) -> bool:
    """Kill the members of raw group dirs (a crashed run's) and remove them, as the
    reaper does when forkyard dies; True if gone."""
    reaper.reap([str(d) for d in dirs])
    return not any(d.exists() for d in dirs)


def _subdirs(d: Path) -> list[Path]:
    with os.scandir(d) as entries:
        return [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]
