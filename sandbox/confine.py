"""Confinement for the worktree backend: bubblewrap and/or Landlock.

What an agent may write: its worktree, its temp dir, and the git paths a ``git commit``
in the worktree needs -- the worktree's own gitdir (``.git/worktrees/<name>``: index,
HEAD, logs), the sandbox's *private* object directory (``GIT_OBJECT_DIRECTORY``; the
shared ``.git/objects`` is only an alternate, read-only: it holds every branch's
history), and the directory holding its branch's ref (and reflog).  Everything else,
including the shared object store and the git control files (``hooks``, ``config``,
``info``, and the worktree's ``commondir``/``gitdir`` pointers and its ``.git`` file), is
read-only.

bubblewrap runs the agent with all capabilities dropped (as root, a bwrap that keeps
them lets the agent remount ``/`` read-write), in new user (nested user namespaces
disabled, so ``unshare`` cannot regain capabilities), pid, ipc and uts namespaces and,
with network off, a new network namespace; a new session (no TIOCSTI into our terminal)
and die-with-parent.  ``/run`` is replaced by an empty tmpfs: a read-only bind does not
stop ``connect()`` on a unix socket, and ``/run/docker.sock`` would be a way out.

Landlock is applied by the exec shim (raw syscalls): read/execute everywhere, write
only in the paths above, no signals to processes outside the sandbox, and no TCP when
network is off.  It is the confinement where bubblewrap is unavailable and a second
layer inside bubblewrap where both are.  It cannot make single files inside a writable
directory read-only, so with Landlock alone the backend restores the worktree's ``.git``
file before it commits.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import stat
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from gitproc.process import probed_once, run
from sandbox.network.policy import INSIDE_DIR, PROXY_PORT, NetworkPolicy

Mode = Literal["auto", "bwrap", "landlock", "bwrap+landlock", "none"]

# Unix sockets of container engines: never reachable from a sandbox (see module doc).
_RUN_DIRS = ("/run", "/var/run")


@dataclass(frozen=True)
class GitPaths:
    """The paths a commit from inside a worktree writes, and the ones to keep read-only."""

    common_dir: Path                  # .git
    gitdir: Path                      # .git/worktrees/<name>
    rw: tuple[Path, ...]
    ro: tuple[Path, ...]
    objects: Path | None = None       # the sandbox's private object directory, if any
    # (host dir, where it appears): under bubblewrap the branch's ref and reflog dirs
    # are the sandbox's own, so its git never writes the repository's real refs.
    binds: tuple[tuple[Path, Path], ...] = ()

    @classmethod
    def of(cls, common_dir: Path, worktree: Path, branch: str,
           objects: Path | None = None, private: Path | None = None) -> GitPaths:
        """``objects``: the private object directory new objects go to (writable).
        ``private``: a host directory whose ``refs`` and ``logs`` stand in, under
        bubblewrap, for the directories holding the branch's ref and reflog (see
        :attr:`binds`; Landlock alone cannot do that: it then writes the real ones).

        Never the shared ``common_dir/objects``: an agent that can write there can delete
        or overwrite the whole repository's history.
        """
        dotgit = worktree / ".git"
        text = dotgit.read_text().strip() if dotgit.is_file() else ""
        gitdir = Path(text.removeprefix("gitdir:").strip()) if text.startswith("gitdir:") else common_dir
        ref_dir = (common_dir / "refs" / "heads" / branch).parent
        log_dir = (common_dir / "logs" / "refs" / "heads" / branch).parent
        rw = [gitdir, ref_dir]
        if objects is not None:
            if objects.resolve().is_relative_to((common_dir / "objects").resolve()):
                raise ValueError(f"{objects} is inside the shared object store")
            rw.append(objects)
        binds: list[tuple[Path, Path]] = []
        if private is not None:
            # Mount points for the private ones.  Each holds a dot file (which git never
            # reads as a ref): git removes a ref dir its last ref leaves empty, and a
            # sibling's branch deleted meanwhile (a Ray worker's cache) would take the
            # mount point from under bubblewrap.
            for d in (ref_dir, log_dir):
                d.mkdir(parents=True, exist_ok=True)
                (d / ".forkyard-keep").touch(exist_ok=True)
            binds = [(private / "refs", ref_dir), (private / "logs", log_dir)]
        if log_dir.is_dir():
            rw.append(log_dir)
        # HEAD too: a commit moves the branch HEAD points to, never HEAD itself, and a
        # HEAD re-pointed at main would make *our* leftover commit land on main.
        ro = [p for p in (gitdir / "HEAD", gitdir / "commondir", gitdir / "gitdir",
                          gitdir / "config.worktree", dotgit) if p.exists()]
        return cls(common_dir, gitdir, tuple(rw), tuple(ro), objects, tuple(binds))


@dataclass(frozen=True)
class Confinement:
    """The resolved confinement for one sandbox: a name and the argv prefix to run under."""

    name: str                                     # bwrap | landlock | bwrap+landlock | none
    bwrap: bool = False
    landlock: bool = False
    notes: tuple[str, ...] = field(default=())


@probed_once
def bwrap_flags() -> tuple[str, ...] | None:
    """The namespace flags this host's bubblewrap accepts, or None if it cannot run.

    Probed once: ``--disable-userns`` needs bubblewrap >= 0.8 and a user namespace, which
    some container runtimes forbid; then we fall back to no user namespace (still no
    capabilities, so ``unshare`` fails for lack of CAP_SYS_ADMIN).
    """
    exe = shutil.which("bwrap")
    if exe is None:
        return None
    ids = ("--uid", str(os.getuid()), "--gid", str(os.getgid()))
    for flags in (("--unshare-user", "--disable-userns", *ids), ()):
        probe = [exe, "--die-with-parent", "--new-session", "--cap-drop", "ALL", *flags,
                 "--unshare-pid", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "true"]
        try:
            if run(probe, check=False, timeout=10).returncode == 0:
                return flags
        except OSError:
            return None
    return None


@functools.cache
def landlock_abi() -> int:
    """The kernel's Landlock ABI version (0: unavailable), asked as the shim asks it (no
    search for libc, which runs ``ldconfig``)."""
    from sandbox import shim

    try:
        return shim.abi_version()
    except OSError:  # no libc to call through: Landlock is simply not there
        return 0


def resolve(mode: Mode, required: bool) -> Confinement:
    """Pick the confinement for ``mode`` on this host.

    ``auto`` layers bubblewrap and Landlock when both work.  When confinement is
    ``required`` (the default; only an explicit opt-out clears it) and nothing works,
    raise :class:`~sandbox.errors.ConfinementError` instead of running unconfined.
    """
    from sandbox.errors import ConfinementError

    if not required or mode == "none":
        return Confinement("none", notes=("confinement disabled by explicit opt-out",))
    has_bwrap = bwrap_flags() is not None
    has_ll = landlock_abi() >= 1
    want_bwrap = mode in ("auto", "bwrap", "bwrap+landlock")
    want_ll = mode in ("auto", "landlock", "bwrap+landlock")
    if mode in ("bwrap", "bwrap+landlock") and not has_bwrap:
        raise ConfinementError(f"confinement {mode!r} needs bubblewrap, which cannot run here")
    if mode in ("landlock", "bwrap+landlock") and not has_ll:
        raise ConfinementError(f"confinement {mode!r} needs Landlock, which this kernel lacks")
    use_bwrap, use_ll = want_bwrap and has_bwrap, want_ll and has_ll
    if not (use_bwrap or use_ll):
        raise ConfinementError(
            "neither bubblewrap nor Landlock is usable here; install bubblewrap or opt out "
            "explicitly (confine=False / --no-confine) to run agents unconfined"
        )
    name = "+".join(n for n, on in (("bwrap", use_bwrap), ("landlock", use_ll)) if on)
    return Confinement(name, bwrap=use_bwrap, landlock=use_ll)


def bwrap_argv(
    *, worktree: Path, tmpdir: Path, git: GitPaths, network: NetworkPolicy | bool,
    extra_rw: tuple[Path, ...] = (), extra_ro: tuple[Path, ...] = (),
    status_fd: int | None = None, proxy_dir: Path | None = None, deny: tuple[Path, ...] = (),
) -> list[str]:
    """The ``bwrap ...`` prefix that confines a command to ``worktree``.

    ``network``: the policy (a bool: ``full``/``none``); ``proxy_dir``: with ``allow``, the
    directory of the run's proxy socket for this sandbox, mounted read-only at
    ``network.INSIDE_DIR``; ``deny``: paths hidden (``sandbox/secrets.py``) but for one
    the task file shows on purpose (``extra_rw``/``extra_ro``; a denied path below a
    shown one stays hidden).
    """
    kind = _kind(network)
    flags = bwrap_flags() or ()
    argv = [
        shutil.which("bwrap") or "bwrap",
        "--die-with-parent", "--new-session", "--cap-drop", "ALL", *flags,
        "--unshare-pid", "--unshare-ipc", "--unshare-uts",
        *(() if kind == "full" else ("--unshare-net",)),
        "--ro-bind", "/", "/",
        "--dev", "/dev", "--proc", "/proc",
    ]
    for d in _RUN_DIRS:
        if os.path.isdir(d) and not os.path.islink(d):
            argv += ["--tmpfs", d]
    resolved = Path("/run/systemd/resolve")  # resolv.conf often points here
    if kind == "full" and resolved.is_dir():
        argv += ["--ro-bind", str(resolved), str(resolved)]
    if kind == "allow":
        if proxy_dir is None:
            raise ValueError("the allow network policy needs the proxy's directory")
        # Read-only: with write access an agent could replace the socket.
        argv += ["--ro-bind", str(proxy_dir), INSIDE_DIR]
    # The sandbox's temp dir becomes /tmp first; the repository may itself live under
    # /tmp (test suites, CI), so its git dir is re-exposed read-only on top, then the
    # writable paths on top of that.
    argv += ["--bind", str(tmpdir), "/tmp", "--ro-bind", str(git.common_dir), str(git.common_dir)]
    # The same goes for our own interpreter and source (the exec shim runs inside): a
    # clone and its .venv under /tmp would otherwise vanish behind the new /tmp.
    for p in _host_paths_under_tmp():
        argv += ["--ro-bind", str(p), str(p)]
    # Secrets and other sandboxes' files (``deny``) are hidden; a path the task file shows
    # on purpose (extra_ro, e.g. a tool under /tmp; extra_rw) is mounted before them,
    # so a secret below it stays hidden, or after them when it lies below one (the
    # sandbox's own home, under the hidden sandbox root; a denied path shown exactly is
    # not hidden).
    hidden = [p for p in deny if not _already_hidden(p, git.common_dir)
              and p not in (*extra_rw, *extra_ro)]

    def shown(later: bool) -> list[str]:
        out = []
        for paths, opt in ((extra_ro, "--ro-bind-try"), (extra_rw, "--bind")):
            for p in paths:
                if _under(p, hidden) == later:
                    out += [opt, str(p), str(p)]
        return out

    argv += shown(later=False)
    for p in hidden:
        argv += ["--tmpfs", str(p)] if p.is_dir() else ["--ro-bind", "/dev/null", str(p)]
    # Listening unix sockets elsewhere (a daemon's under $HOME, /var/lib...): connect()
    # ignores network namespaces and read-only mounts, so cover each with /dev/null.
    # (String tests: a run's proxy makes this list long, one socket per sandbox.)
    covered = (*hidden, worktree, tmpdir)
    for sock in map(str, _host_sockets()):
        if not _under(sock, covered) and not _already_hidden(sock, git.common_dir):
            argv += ["--ro-bind", "/dev/null", sock]
    # The sandbox's own paths, back over what hid them; its branch's ref and reflog dirs
    # are its private ones (``GitPaths.binds``: source elsewhere, mounted at the real dir).
    private = {dest: src for src, dest in git.binds}
    for p in (worktree, tmpdir, *git.rw):
        argv += ["--bind", str(private.get(p, p)), str(p)]
    argv += shown(later=True)
    for p in hidden:  # the tmpfs itself, not what is mounted back below it
        if p.is_dir():
            argv += ["--remount-ro", str(p)]
    # Read-only islands inside the writable binds: mounted last so they sit on top.
    for p in git.ro:
        argv += ["--ro-bind", str(p), str(p)]
    if status_fd is not None:  # tells the caller whether the sandboxed child started
        argv += ["--json-status-fd", str(status_fd)]
    argv += ["--chdir", str(worktree), "--"]
    return argv


def _kind(network: NetworkPolicy | bool) -> str:
    if isinstance(network, bool):
        return "full" if network else "none"
    return network.kind


def _under(path: Path | str, dirs: Iterable[Path | str]) -> bool:
    """Whether absolute, normalised ``path`` is one of ``dirs`` or below one (what
    ``PurePath.is_relative_to`` says, without a path object per test)."""
    return f"{path}/".startswith(tuple(str(d).rstrip("/") + "/" for d in dirs))


def _already_hidden(path: Path | str, common_dir: Path) -> bool:
    """Under /run or /tmp (replaced whole) and not re-exposed with the git dir."""
    return not _under(path, (common_dir,)) and _under(path, (*_RUN_DIRS, "/tmp"))


def _host_sockets() -> list[Path]:
    """Path-bound listening unix sockets of this host's network namespace that exist here."""
    found: list[Path] = []
    try:
        with open("/proc/net/unix", encoding="utf-8", errors="replace") as f:
            next(f, None)
            for line in f:
                fields = line.split()
                # Num RefCount Protocol Flags Type St Inode Path; flag 0x10000: listening
                if len(fields) < 8 or not fields[7].startswith("/") or not int(fields[3], 16) & 0x10000:
                    continue
                p = Path(fields[7])
                with contextlib.suppress(OSError):
                    if stat.S_ISSOCK(p.lstat().st_mode):
                        found.append(p)
    except OSError:
        pass
    return sorted(set(found))


def _host_paths_under_tmp() -> list[Path]:
    """Interpreter prefixes and forkyard's source root that live under /tmp."""
    import sandbox

    roots = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix),
             Path(sandbox.__file__).resolve().parent.parent}
    tmp = Path("/tmp")
    return sorted({r.resolve() for r in roots if r.resolve().is_relative_to(tmp) and r.resolve() != tmp})


def landlock_shim_args(spec: dict[str, object]) -> list[str]:
    """:func:`landlock_spec` as options of the exec shim."""
    port = spec.get("connect_port")
    args = ["--landlock-network", str(port) if port else "1" if spec.get("network", True) else "0"]
    for key in ("rw", "dev"):
        for path in spec.get(key, []):  # type: ignore[attr-defined]
            args += [f"--landlock-{key}", str(path)]
    return args


def landlock_spec(
    *, worktree: Path, tmpdir: Path, git: GitPaths, network: NetworkPolicy | bool,
    inside_bwrap: bool,
) -> dict[str, object]:
    """The JSON the exec shim turns into a Landlock ruleset.  ``allow`` needs bubblewrap
    (a network namespace): Landlock can only grant TCP to the forwarder's port."""
    kind = _kind(network)
    rw = [str(worktree), str(tmpdir), *(str(p) for p in git.rw), "/dev/shm"]
    if inside_bwrap:
        rw.append("/tmp")  # bubblewrap mounts the sandbox's temp dir there
    return {"rw": rw, "dev": ["/dev/null", "/dev/zero", "/dev/full", "/dev/tty", "/dev/pts",
                              "/dev/ptmx", "/dev/random", "/dev/urandom"],
            "network": kind == "full", "connect_port": PROXY_PORT if kind == "allow" else 0}
