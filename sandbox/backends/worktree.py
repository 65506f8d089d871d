"""The worktree backend (the default): a git worktree per task, cgroup limits, bwrap/Landlock.

Creating a sandbox is one ``git worktree add`` (plus copying configured ignored files
and taking a port lease); everything costly -- cgroups, confinement, the temp dir -- is
deferred to :meth:`WorktreeBackend.execute`, so creating and destroying sandboxes costs
about what plain worktrees cost (``bench/sandbox_overhead.py``).

The agent is started as ``shim [cgroups, rlimits] -> bwrap -> shim [Landlock] -> sh -c``:
the outer shim joins the cgroups before anything else runs; bubblewrap confines; the
inner shim layers Landlock.  For a sandbox prepared ahead of its turn the chain is
started early and waits in the inner shim for its command (:meth:`WorktreeBackend.warm`).
After the agent exits, whatever it left running is killed,
its uncommitted changes are committed with forkyard's identity, and the result records
the branch tip and the files changed.

The shared object store (``.git/objects``: every branch's history) is read-only to the
agent.  Its git writes new objects to a private object directory
(``GIT_OBJECT_DIRECTORY``, with the shared store as ``GIT_ALTERNATE_OBJECT_DIRECTORIES``);
afterwards the objects the branch needs are copied into the shared store through
``pack-objects | unpack-objects/index-pack``, which re-hashes every object, and the
branch is checked to be complete there before anyone reads it.
"""

from __future__ import annotations

import collections
import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, NoReturn

from pydantic import BaseModel, ConfigDict, Field

from gitproc.git import WORKTREE_ADMIN_LOCK, GitError, RefMovedError, Repo, clean_env
from gitproc.process import background_priority, raise_priority, spawn
from sandbox import cgroups, confine, limits, overlay, setup, shim
from sandbox.backends.base import (
    Backend,
    ExecResult,
    ExitCallback,
    LineCallback,
    Sandbox,
    SandboxSpec,
    Status,
)
from sandbox.errors import SandboxBadInputError, SandboxError
from sandbox.liveness import RunLock
from sandbox.ports import DEFAULT_RANGE, PortLease, lease_port

SHIM = str(Path(limits.__file__).with_name("shim.py"))
BWRAP_ATTEMPTS = 3
# Below this many objects an import is unpacked to loose objects, above it kept as a
# pack: what `git fetch` does (fetch.unpackLimit), so many small tasks add no packs.
UNPACK_LIMIT = 100
_REMOVING = threading.Lock()  # worktree trees are deleted one at a time (filesystem-bound)
# The exec shim's cgroup part in sh: write our pid to each cgroup.procs file given before
# ``--`` (any failure: exit 125 like the shim, the command never ran), then exec the rest.
JOIN_SH = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'


class WorktreeConfig(BaseModel):
    """Configuration of the worktree backend (the default)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    type: Literal["worktree"] = "worktree"
    """Backend discriminator."""
    confinement: confine.Mode = "auto"
    """auto (bwrap + Landlock where available), bwrap, landlock, bwrap+landlock, or none
    (the same explicit opt-out as a task's ``confine=False``)."""
    limits: Literal["auto", "cgroup", "rlimit", "none"] = "auto"
    """auto: cgroups where writable, else rlimits (recorded); cgroup: fail without them."""
    grace_s: float = Field(2.0, ge=0)
    """On timeout or cancel: seconds between SIGTERM and killing the whole group."""
    log_tail_lines: int = Field(200, ge=1)
    """How many trailing output lines a result keeps."""
    lease_ports: bool = True
    """Lease a distinct ``PORT``/``FORKYARD_PORT`` per agent when the spec has none."""
    port_range: tuple[int, int] = DEFAULT_RANGE
    """Leased ports come from ``[lo, hi)``."""
    extra_rw: tuple[Path, ...] = ()
    """More paths agents may write (e.g. ``~/.cache``): bound read-write, allowed by Landlock."""
    setup_timeout_s: float = Field(600, gt=0)
    """Wall-clock limit of the per-run setup command."""
    layers: Literal["auto", "overlay", "checkout"] = "auto"
    """How a sandbox's files are made.  overlay: a copy-on-write mount over one checkout
    per run (``sandbox/overlay.py``; needs root); checkout: a full checkout per sandbox;
    auto: overlay where this process can mount, else checkout."""


class WorktreeBackend(Backend):
    """Agents in git worktrees under ``.git/forkyard/worktrees/<run-id>/<task-id>``."""

    name = "worktree"

    def __init__(self, repo: Repo, config: WorktreeConfig | None = None, **options: object) -> None:
        super().__init__(repo)
        self.config = config or WorktreeConfig.model_validate(options)
        self._hier: cgroups.Hierarchies | None = None
        self._locks: dict[str, tuple[RunLock, int]] = {}
        self._bases: dict[str, overlay.Bases] = {}
        self._lock = threading.Lock()

    # -- prepare ------------------------------------------------------------------

    def prepare(self, spec: SandboxSpec) -> Sandbox:
        """A worktree on a new branch ``forkyard/<run>/<task>`` at the base -- an overlay
        (:meth:`_prepare_overlay`) or ``git worktree add`` -- plus set-up."""
        path = self.repo.forkyard_dir / "worktrees" / spec.run_id / spec.task_id
        if path.exists() and not _spare_mount_point(path):
            raise SandboxBadInputError(f"sandbox {path} already exists (run `forkyard gc`?)")
        self._hold(spec.run_id)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._drop_dangling(spec.branch)
            state: dict[str, object] = {"made_at": spec.base}  # where the branch was made
            if self._overlays():
                self._prepare_overlay(spec, path, state)
            else:
                self.repo.worktree_add(path, spec.branch, spec.base)
                state["at"] = spec.base
            patterns = setup.include_patterns(self.repo.path, spec.copy_files)
            if patterns:
                state["copied"] = setup.copy_ignored(self.repo.path, path, patterns)
            if spec.port is None and self.config.lease_ports:
                state["lease"] = lease_port(self.repo.forkyard_dir / "ports", self.config.port_range)
        except BaseException:
            self._release(spec.run_id)
            raise
        return Sandbox(spec, path, spec.branch, state)

    def _overlays(self) -> bool:
        if self.config.layers == "checkout":
            return False
        if overlay.usable():
            return True
        if self.config.layers == "overlay":
            raise SandboxError("layers='overlay' but this process cannot mount an overlay "
                               "here (it needs root and overlayfs)")
        return False

    def _prepare_overlay(self, spec: SandboxSpec, path: Path, state: dict[str, object]) -> None:
        """The worktree as an overlay on the run's base checkout (``sandbox/overlay.py``).

        The branch, the admin dir and the ``.git`` file (in the upper layer) are written
        directly (:meth:`Repo.worktree_register`), the overlay is mounted and the base's
        index copied in; :meth:`to_base` resets to ``spec.base`` when the agent starts.
        Mounting failing (no overlay after all): a full checkout, as without overlays.
        """
        with self._lock:
            bases = self._bases.setdefault(spec.run_id, overlay.Bases(self.repo, spec.run_id))
        base = bases.get(spec.base)
        layer = self.repo.forkyard_dir / "tmp" / spec.run_id / f"{spec.task_id}.layer"
        shutil.rmtree(layer, ignore_errors=True)  # a killed run's
        layers = overlay.Layers(base.tree, layer / "upper", layer / "work", path)
        layers.upper.mkdir(parents=True)
        path.mkdir(exist_ok=True)  # an earlier attempt's mount point may be left
        admin = self.repo.worktree_register(path, spec.branch, spec.base, layers.upper / ".git")
        try:
            try:
                layers.mount()
            except overlay.OverlayUnavailable:
                if self.config.layers == "overlay":
                    raise SandboxError("layers='overlay' but mounting one failed") from None
                os.rename(layers.upper / ".git", path / ".git")
                shutil.rmtree(layer, ignore_errors=True)
                self.repo.git("reset", "--quiet", "--hard", cwd=path)  # a full checkout
                state["at"] = spec.base
            else:
                state["layers"] = layers
                shutil.copy2(base.index, admin / "index")  # with its mtime: see overlay.py
                state["at"] = base.commit
                state["index"] = _stat_key(admin / "index")
            state["gitdir"] = admin
        except BaseException:
            layers.unmount()
            shutil.rmtree(admin, ignore_errors=True)
            with contextlib.suppress(GitError):
                self.repo.delete_ref(f"refs/heads/{spec.branch}", spec.base)
            raise
        finally:
            self.repo.worktree_unlock(admin)

    def _drop_dangling(self, branch: str) -> None:
        """Delete ``branch`` if it names a commit the shared store lacks.

        Only forkyard itself dying while an agent runs leaves one: the agent's commits
        were in its private object directory, not yet imported.  Such a ref cannot be
        read, merged or built on (and breaks ``git fsck``); what held it was cut off
        mid-run and runs again afresh.  A readable branch is left alone (``worktree add``
        then refuses, as always).  One ``stat`` when there is no such loose ref.
        """
        if not (self.repo.common_dir / "refs" / "heads" / branch).is_file():
            return
        ref = f"refs/heads/{branch}"
        raw = self.repo.ref_target(ref)
        if raw is not None and self.repo.try_rev_parse(ref) is None:
            self.repo.git("update-ref", "-d", ref, raw, check=False)

    def _hold(self, run_id: str) -> None:
        # A shared flock per live run: `forkyard gc` leaves runs alone while it is held.
        with self._lock:
            lock, n = self._locks.get(run_id, (None, 0))
            if lock is None:
                lock = RunLock(self.repo.forkyard_dir, run_id)
                lock.acquire_shared()
            self._locks[run_id] = (lock, n + 1)

    def _release(self, run_id: str) -> None:
        with self._lock:
            lock, n = self._locks.get(run_id, (None, 0))
            if lock is None:
                return
            if n <= 1:
                lock.release()
                del self._locks[run_id]
                bases = self._bases.pop(run_id, None)
                if bases is not None:
                    bases.close()  # the run's last sandbox is gone
            else:
                self._locks[run_id] = (lock, n - 1)

    # -- execute ------------------------------------------------------------------

    def to_base(self, sandbox: Sandbox) -> None:
        """Bring the sandbox's files and branch to ``spec.base`` if they are elsewhere
        (an overlay starts at the run's base checkout; a sandbox made ahead of time is at
        an older tip).  ``read-tree -m -u`` from where the files are writes only the files
        in between and, unlike ``reset --hard``, does not re-stat every other file."""
        spec = sandbox.spec
        at, made = sandbox.state.get("at"), sandbox.state.get("made_at", spec.base)
        if at != spec.base:
            moved = isinstance(at, str) and self.repo.git(
                "read-tree", "-m", "-u", at, spec.base, cwd=sandbox.worktree,
                check=False).returncode == 0
            if moved and made != spec.base:
                self.repo.update_ref(f"refs/heads/{spec.branch}", spec.base, str(made),
                                     "forkyard: sandbox moved to the current tip", durable=False)
            elif not moved:  # files not as expected: the sure way
                self.repo.git("reset", "--quiet", "--hard", spec.base, cwd=sandbox.worktree)
        sandbox.state["at"] = sandbox.state["made_at"] = spec.base
        gitdir = sandbox.state.get("gitdir")
        if isinstance(gitdir, Path) and "index" in sandbox.state:
            sandbox.state["index"] = _stat_key(gitdir / "index")

    def move(self, sandbox: Sandbox, base: str) -> None:
        sandbox.spec = replace(sandbox.spec, base=base)
        self.to_base(sandbox)

    def _enforcement(self, spec: SandboxSpec, defer_cpu: bool = False) -> limits.Enforcement:
        mode = self.config.limits
        if mode == "none":
            return limits.Enforcement("none")
        if mode in ("auto", "cgroup"):
            if self._hier is None:
                self._hier = cgroups.detect()
            if self._hier.layout != "none":
                try:
                    group = cgroups.Cgroup.create(
                        self._hier, spec.run_id, spec.task_id, spec.limits,
                        scope=cgroups.repo_scope(self.repo.common_dir), defer_cpu=defer_cpu)
                    return limits.Enforcement(self._hier.enforced_by, group,
                                              limits.cgroup_args(group))
                except cgroups.CgroupUnavailable:
                    if mode == "cgroup":
                        raise
            elif mode == "cgroup":
                raise SandboxError("limits='cgroup' but no writable cgroup hierarchy here")
        return limits.Enforcement("rlimit", None, limits.rlimit_args(spec.limits))

    def _env(self, sandbox: Sandbox, tmpdir: Path, token: str) -> dict[str, str]:
        spec = sandbox.spec
        env = clean_env()  # no leaked GIT_DIR & co pointing the agent at another repository
        if "LC_ALL" in os.environ:
            env["LC_ALL"] = os.environ["LC_ALL"]
        else:
            env.pop("LC_ALL", None)
        env.update({
            "FORKYARD_TASK_ID": spec.task_id, "FORKYARD_RUN_ID": spec.run_id,
            "FORKYARD_BRANCH": spec.branch, "FORKYARD_BASE": spec.base,
            "FORKYARD_WORKTREE": str(sandbox.worktree), "FORKYARD_DESCRIPTION": spec.description,
            "TMPDIR": str(tmpdir), limits.TOKEN_VAR: token,
        })
        port = spec.port if spec.port is not None else _lease_port(sandbox)
        if port is not None:
            env["PORT"] = env["FORKYARD_PORT"] = str(port)
        env.update(spec.env)
        return env

    def _argv(self, sandbox: Sandbox, prep: _Prepared, command: str | None,
              status_fd: int | None = None, gate_fd: int | None = None) -> list[str]:
        """The agent's argv; ``command`` None with ``gate_fd``: a warm start's, whose
        command comes through the gate (``sandbox/shim.py``)."""
        spec, conf, enf = sandbox.spec, prep.conf, prep.enf
        opts = enf.shim_args
        if all(o == "--procs" for o in opts[::2]):
            # Only cgroup joins (or nothing): the shell does that ~10x cheaper than a Python.
            argv = ["/bin/sh", "-c", JOIN_SH, "forkyard-shim", *opts[1::2], "--"]
        else:
            argv = [sys.executable, "-I", "-S", SHIM, *opts, "--"]
        if conf.bwrap:
            argv += confine.bwrap_argv(worktree=sandbox.worktree, tmpdir=prep.tmpdir,
                                       git=prep.gitpaths, network=spec.limits.network,
                                       extra_rw=self.config.extra_rw, status_fd=status_fd)
        if conf.landlock or gate_fd is not None:
            # -S too: the shim makes the ruleset with raw syscalls (stdlib ctypes only).
            argv += [sys.executable, "-I", "-S", SHIM]
            if conf.landlock:
                ll = confine.landlock_spec(worktree=sandbox.worktree, tmpdir=prep.tmpdir,
                                           git=prep.gitpaths, network=spec.limits.network,
                                           inside_bwrap=conf.bwrap)
                ll["rw"] = [*ll["rw"], *map(str, self.config.extra_rw)]  # type: ignore[misc]
                argv += confine.landlock_shim_args(ll)
            if prep.cpu_fd is not None and enf.cgroup is not None and enf.cgroup.cpu_quota:
                argv += ["--write-fd", f"{prep.cpu_fd}={enf.cgroup.cpu_quota[1]}"]
            if gate_fd is not None:
                argv += ["--gate", str(gate_fd)]
            argv += ["--"]
        return argv if command is None else [*argv, "/bin/sh", "-c", command]

    def _prepare_run(self, sandbox: Sandbox, gated: bool = False) -> _Prepared:
        """What the agent runs in and under: temp and object dirs, limits, confinement.
        ``gated``: a warm start (the CPU quota is then always left to the inner shim)."""
        spec = sandbox.spec
        conf = confine.resolve(self.config.confinement, spec.confine)
        tmpdir = self.repo.forkyard_dir / "tmp" / spec.run_id / spec.task_id
        tmpdir.mkdir(parents=True, exist_ok=True)
        sandbox.state["tmpdir"] = tmpdir
        # Beside the temp dir, not in it: an agent emptying its $TMPDIR keeps its commits.
        objects = tmpdir.with_name(f"{spec.task_id}.objects")
        shutil.rmtree(objects, ignore_errors=True)  # a crashed run's
        objects.mkdir()
        sandbox.state["objects"] = objects
        gitpaths = confine.GitPaths.of(self.repo.common_dir, sandbox.worktree, spec.branch,
                                       objects)
        pinned = _pin_git_files(gitpaths, spec.branch)
        sandbox.state["gitdir"] = gitpaths.gitdir
        # The CPU quota is written by the inner shim, last, when there is one.
        enf = self._enforcement(spec, defer_cpu=conf.landlock or gated)
        sandbox.state["cgroup"] = enf.cgroup
        cpu_fd = None
        if enf.cgroup is not None and enf.cgroup.cpu_quota is not None:
            cpu_fd = os.open(enf.cgroup.cpu_quota[0], os.O_WRONLY | os.O_CLOEXEC)
        token = uuid.uuid4().hex
        sandbox.state["token"] = token
        return _Prepared(conf, tmpdir, objects, gitpaths, pinned, enf, cpu_fd, token)

    def _agent_env(self, sandbox: Sandbox, prep: _Prepared) -> dict[str, str]:
        return {**self._env(sandbox, prep.tmpdir, prep.token), **odb_env(self.repo, prep.objects)}

    def warm(self, sandbox: Sandbox) -> None:
        """Start the agent's process chain ahead of its turn, up to its last ``exec``.
        Called from a background-priority thread where the niceness can be taken back
        (root): the chain is re-niced to the agent thread's when the task starts.

        Joining cgroups, bubblewrap's namespaces and mounts and the Landlock ruleset cost
        tens of milliseconds of CPU per agent, paid at the worst moment when several
        agents start together.  A sandbox prepared ahead (``sandbox/sandboxes.py``) has
        them done while the agents before it run: the chain waits in the exec shim on a
        pipe (``--gate``) for the command and environment, which :meth:`execute` writes
        once the sandbox is at its base.  Failing here only means a cold start later.
        """
        if sandbox.state.get("warm") is not None or sandbox.state.get("cgroup") is not None:
            return
        try:
            prep = self._prepare_run(sandbox, gated=True)
        except Exception:
            return
        gate_r, gate_w = os.pipe()
        os.set_inheritable(gate_w, False)
        status_r, status_w = os.pipe() if prep.conf.bwrap else (-1, -1)
        fds = tuple(fd for fd in (gate_r, status_w, prep.cpu_fd) if fd is not None and fd >= 0)
        try:
            agent = self._launch(self._argv(sandbox, prep, None, status_w if prep.conf.bwrap
                                            else None, gate_r),
                                 fds, sandbox, self._agent_env(sandbox, prep),
                                 _Lines(self.config.log_tail_lines))
        except Exception:
            for fd in (gate_w, status_r):
                if fd >= 0:
                    os.close(fd)
            self._unprepare(sandbox, prep)
            return
        finally:
            for fd in (gate_r, status_w):
                if fd >= 0:
                    os.close(fd)
        agent.gate, agent.status = gate_w, status_r
        sandbox.state["warm"] = _Warm(prep, agent)

    def _unprepare(self, sandbox: Sandbox, prep: _Prepared) -> None:
        """Undo :meth:`_prepare_run` (a warm start that did not happen)."""
        if prep.cpu_fd is not None:
            os.close(prep.cpu_fd)
        group = sandbox.state.pop("cgroup", None)
        if isinstance(group, cgroups.Cgroup):
            with contextlib.suppress(Exception):
                group.remove()
        sandbox.state.pop("token", None)

    def _abandon(self, sandbox: Sandbox) -> None:
        """Stop a warm start's waiting chain (its shim exits on the closed gate)."""
        warm = sandbox.state.pop("warm", None)
        if not isinstance(warm, _Warm):
            return
        self._kill_tree(warm.agent.proc, warm.prep.enf, warm.prep.token)
        warm.agent.discard()
        if warm.prep.cpu_fd is not None:
            os.close(warm.prep.cpu_fd)

    def execute(
        self, sandbox: Sandbox, on_line: LineCallback | None = None,
        cancel: threading.Event | None = None, on_exit: ExitCallback | None = None,
    ) -> ExecResult:
        """Run setup command and agent confined and limited; commit what it left."""
        spec = sandbox.spec
        started = time.monotonic()
        self.to_base(sandbox)
        warm = sandbox.state.pop("warm", None)
        prep = warm.prep if isinstance(warm, _Warm) else self._prepare_run(sandbox)
        env = self._agent_env(sandbox, prep)
        lines = warm.agent.lines if isinstance(warm, _Warm) else _Lines(self.config.log_tail_lines)
        lines.on_line = on_line
        deadline = started + spec.limits.timeout_s if spec.limits.timeout_s else None
        reason: str | None = None
        rc: int | None = None
        message = ""

        def phase(command: str, until: float | None, ready: _Agent | None = None,
                  last: bool = True) -> tuple[int | None, str | None]:
            return self._run_phase(
                lambda fd: self._argv(sandbox, prep, command, fd), command, prep.conf.bwrap,
                sandbox, env, prep, until, cancel, lines,
                () if prep.cpu_fd is None else (prep.cpu_fd,), ready, settle=not last)

        try:
            ready = warm.agent if isinstance(warm, _Warm) else None
            if spec.setup_command:
                setup_deadline = time.monotonic() + self.config.setup_timeout_s
                rc, reason = phase(spec.setup_command,
                                   min(d for d in (deadline, setup_deadline) if d), ready,
                                   last=False)
                ready = None
                if rc != 0 and reason is None:
                    message = f"setup command failed with exit code {rc}"
            if rc in (None, 0) and reason is None:
                rc, reason = phase(spec.command, deadline, ready)
        finally:
            if prep.cpu_fd is not None:
                os.close(prep.cpu_fd)
        if on_exit is not None:
            on_exit()  # the agent's processes are killed: its slot can take the next one
        enf = prep.enf
        if enf.cgroup is not None:
            enf.cgroup.wait_empty()  # ...and gone, before anything reads what they left
        status = self._status(rc, reason, enf)
        if status == "timed_out":
            message = f"killed after the {spec.limits.timeout_s:g}s timeout"
        elif status == "oom_killed":
            message = f"killed by the OOM killer at the {spec.limits.memory_mb} MiB memory limit"
        elif status == "cancelled":
            message = "cancelled"
        if enf.name == "rlimit":
            # Say so: rlimits are per process and weaker (see sandbox/limits.py).
            message = "; ".join(m for m in (message, "limits enforced by rlimits only: no "
                                            "writable cgroup here") if m)
        with background_priority():  # the agent is gone: agents starting come first
            commit, files, commit_msg, broken = self._gather(sandbox, prep.pinned)
        if broken:
            status = "failed"
        return ExecResult(
            status=status, exit_code=rc, duration_s=round(time.monotonic() - started, 3),
            log_tail="\n".join(lines.tail), commit=commit, files_modified=tuple(files),
            enforced_by=enf.name, confinement=prep.conf.name,
            message="; ".join(m for m in (message, commit_msg) if m),
        )

    def _status(self, rc: int | None, reason: str | None, enf: limits.Enforcement) -> Status:
        if reason == "cancelled":
            return "cancelled"
        if reason == "timed_out":
            return "timed_out"
        # OOM: the group's kernel counter, cross-checked with a failed exit (a kill signal
        # shows up as 137 through sh/bwrap, or -9 directly).
        if enf.cgroup is not None and rc not in (0, None) and enf.cgroup.oom_kills() > 0:
            return "oom_killed"
        return "succeeded" if rc == 0 else "failed"

    def _run_phase(
        self, build: Callable[[int | None], list[str]], command: str, uses_bwrap: bool,
        sandbox: Sandbox, env: dict[str, str], prep: _Prepared, deadline: float | None,
        cancel: threading.Event | None, lines: _Lines, fds: tuple[int, ...] = (),
        ready: _Agent | None = None, settle: bool = True,
    ) -> tuple[int | None, str | None]:
        """Run one process tree to the end, a timeout or a cancel; (exit code, reason).
        ``fds``: more file descriptors the process inherits; ``ready``: a warm start's
        waiting chain (:meth:`warm`), given the command here, else a cold start;
        ``settle``: see :meth:`_wait`.

        bubblewrap's own set-up can fail transiently: it remounts every mount under ``/``
        read-only, and a mount that vanishes meanwhile (a container engine tearing one
        down) makes that fail.  Its ``--json-status-fd`` says whether the child started;
        if not, the phase is retried (the command never ran, so this is safe).  A warm
        chain that did not survive until its turn is just such a failed attempt.
        """
        enf, token = prep.enf, prep.token
        if ready is not None:
            # Warmed on a background thread (see warm()): the agent runs at our priority.
            raise_priority(lambda: _members(ready.proc.pid, enf, token),
                           os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
            if ready.go(["/bin/sh", "-c", command], env):
                rc, reason = self._wait(ready, enf, token, deadline, cancel, settle)
                if ready.started() or reason is not None:
                    return rc, reason
            else:
                self._kill_tree(ready.proc, enf, token)
                ready.discard()
        for attempt in range(BWRAP_ATTEMPTS):
            status_r, status_w = os.pipe() if uses_bwrap else (-1, -1)
            try:
                agent = self._launch(build(status_w if uses_bwrap else None),
                                     ((status_w,) if uses_bwrap else ()) + fds, sandbox, env,
                                     lines)
            finally:
                if uses_bwrap:
                    os.close(status_w)
            agent.status = status_r
            rc, reason = self._wait(agent, enf, token, deadline, cancel, settle)
            if agent.started() or reason is not None or attempt == BWRAP_ATTEMPTS - 1:
                return rc, reason
            time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    def _launch(self, argv: list[str], pass_fds: tuple[int, ...], sandbox: Sandbox,
                env: dict[str, str], lines: _Lines) -> _Agent:
        """Start ``argv`` in the sandbox, its output pumped into ``lines``."""
        proc = spawn(argv, cwd=sandbox.worktree, env=env, stdout=subprocess.PIPE,
                     stderr=subprocess.STDOUT, pass_fds=pass_fds)
        pump = threading.Thread(target=_pump, args=(proc, lines), daemon=True)
        pump.start()
        return _Agent(proc, pump, lines)

    def _wait(self, agent: _Agent, enf: limits.Enforcement, token: str,
              deadline: float | None, cancel: threading.Event | None, settle: bool = True,
              ) -> tuple[int | None, str | None]:
        """Wait for the agent to exit, time out or be cancelled; then kill its tree
        (``settle``: and wait for all of it to be gone; see :meth:`_kill_tree`)."""
        proc = agent.proc
        reason: str | None = None
        exited = _ExitWaiter(proc)
        try:
            while True:
                # Wakes the moment the agent exits (a pidfd); cancel and timeout are
                # checked every 50 ms.
                if exited(0.05):
                    break
                if cancel is not None and cancel.is_set():
                    reason = "cancelled"
                elif deadline is not None and time.monotonic() >= deadline:
                    reason = "timed_out"
                if reason:
                    self._stop(proc, enf, token, self.config.grace_s)
                    break
        finally:
            exited.close()
        # Whatever the agent left behind (daemons, double forks) dies with it: no orphans.
        self._kill_tree(proc, enf, token, settle)
        agent.finish()
        rc = proc.returncode
        return (128 - rc if rc < 0 else rc), reason

    def _stop(self, proc: subprocess.Popen[bytes], enf: limits.Enforcement, token: str,
              grace_s: float) -> None:
        """SIGTERM the tree, wait ``grace_s`` for it to go, then kill it."""
        if enf.cgroup is not None:
            enf.cgroup.signal(signal.SIGTERM)
        else:
            _killpg(proc.pid, signal.SIGTERM)
            limits.signal_token(token, signal.SIGTERM)
        end = time.monotonic() + grace_s
        while time.monotonic() < end:
            alive = enf.cgroup.pids() if enf.cgroup is not None else limits.pids_with_token(token)
            if proc.poll() is not None and not alive:
                return
            time.sleep(0.05)
        self._kill_tree(proc, enf, token)

    def _kill_tree(self, proc: subprocess.Popen[bytes], enf: limits.Enforcement, token: str,
                   settle: bool = True) -> None:
        """SIGKILL the agent's whole tree; ``settle``: and wait until it is gone (else
        the caller waits with ``Cgroup.wait_empty`` before touching the sandbox)."""
        _killpg(proc.pid, signal.SIGKILL)
        if enf.cgroup is not None:
            # cgroup.kill / freezer: nothing in the group can escape
            enf.cgroup.kill(wait_s=5.0 if settle else 0.0)
            return
        # Without a cgroup, descendants that left the process group are found by token.
        for _ in range(50):
            if limits.signal_token(token) == 0:
                break
            time.sleep(0.02)

    # -- results ------------------------------------------------------------------

    def _collect(self, sandbox: Sandbox, pinned: dict[Path, bytes]) -> tuple[str | None, list, str]:
        """Commit leftovers; (commit or None, numstat, message about a failed commit)."""
        commit, files, note, _ = self._gather(sandbox, pinned)
        return commit, files, note

    def _gather(self, sandbox: Sandbox, pinned: dict[Path, bytes]
                ) -> tuple[str | None, list, str, bool]:
        """:meth:`_collect`, plus whether the branch was broken (the task has failed)."""
        spec = sandbox.spec
        for path, data in pinned.items():  # undo tampering Landlock alone cannot stop
            try:
                if not path.is_symlink() and path.is_file() and path.read_bytes() == data:
                    continue
            except OSError:
                pass
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
            path.write_bytes(data)
        ref = self.repo.common_dir / "refs" / "heads" / spec.branch
        gitdir = sandbox.state.get("gitdir")
        locks = [ref.with_name(ref.name + ".lock")]
        if isinstance(gitdir, Path):
            locks.append(gitdir / "index.lock")
        for lock in locks:
            lock.unlink(missing_ok=True)  # a killed agent's git can leave these behind
        objects = sandbox.state.get("objects")
        branch = f"refs/heads/{spec.branch}"
        ours = _index_ours(sandbox)  # before our add rewrites it
        imported = False
        if isinstance(objects, Path):
            try:
                # First: our commit below then writes straight into the shared store and
                # never leaves the branch on objects that exist only in the sandbox's.
                imported = self._import(objects, branch, spec.base)
            except _BrokenBranch as exc:
                return None, [], str(exc), True
        message = f"forkyard: {spec.task_id}\n\n{spec.description or 'Changes left by the agent.'}"
        note = ""
        tip: str | None = None
        try:
            self.repo.stage_all(sandbox.worktree, untouched=_untouched(sandbox))
            tip = self.repo.commit_staged(
                sandbox.worktree, message, ref=branch,
                gitdir=gitdir if isinstance(gitdir, Path) else None)
        except (GitError, RefMovedError) as exc:
            note = f"could not commit leftover changes: {exc}"
        # With our own index, no objects of the agent's and the branch where we left it,
        # every object of the commit is one our add wrote, or the base's: nothing to check.
        if isinstance(objects, Path) and (imported or not ours):
            try:
                self._verify(branch, spec.base)
            except _BrokenBranch as exc:
                return None, [], "; ".join(m for m in (note, str(exc)) if m), True
        if tip is None:  # the agent may have committed itself
            tip = self.repo.try_rev_parse(branch)
        if tip is None or tip == spec.base:
            return None, [], note, False
        return tip, self.repo.numstat(spec.base, tip), note, False

    def _import(self, objects: Path, ref: str, base: str) -> bool:
        """Copy the objects the agent made into the shared store, verified; False when
        there were none and the branch is still at ``base`` or gone.

        Everything in the sandbox's object directory (its reflog and index name those,
        not only the branch), plus whatever ``base..tip`` needs; ``pack-objects --local``
        leaves out what the shared store already has.  Unpacking re-hashes every object,
        so an object whose content does not match its name cannot get in under that
        name (:meth:`_verify` then finds it missing).  Failure: :class:`_BrokenBranch`.
        """
        _tidy_objects(objects)
        tip = self.repo.ref_target(ref)
        try:
            made = any(os.scandir(objects))
        except OSError:
            made = False
        if not made and tip in (None, base):
            return False  # the agent wrote nothing: the cheap common case
        try:
            own = self.repo.git("cat-file", "--batch-all-objects", "--unordered",
                                "--batch-check=%(objectname)",
                                env={"GIT_OBJECT_DIRECTORY": str(objects)}).out.split()
            revs = [*own, *((tip, f"^{base}") if tip not in (None, base) else ())]
            if not revs:
                return True
            pack = self.repo.git("pack-objects", "--revs", "--local", "--stdout", "-q",
                                 input="".join(f"{r}\n" for r in revs).encode(),
                                 env=odb_env(self.repo, objects)).stdout
            count = int.from_bytes(pack[8:12], "big") if len(pack) >= 12 else 0
            if count >= UNPACK_LIMIT:
                self.repo.git("index-pack", "--stdin", input=pack)
            elif count:
                self.repo.git("unpack-objects", "-q", input=pack)
        except GitError as exc:
            self._broken(ref, base, tip, exc)
        return True

    def _verify(self, ref: str, base: str) -> None:
        """Check that the whole branch is in the shared store; else :meth:`_broken`."""
        tip = self.repo.ref_target(ref)
        if tip in (None, base):
            return
        try:
            self.repo.git("rev-list", "--objects", "--quiet", f"{tip}^{{commit}}", "--not", base)
        except GitError as exc:
            self._broken(ref, base, tip, exc)

    def _broken(self, ref: str, base: str, tip: str | None, exc: GitError) -> NoReturn:
        """Reset a branch the shared store cannot hold to ``base`` (compare-and-swap: a
        ref naming objects the repository lacks breaks fsck, gc and every reader) and
        raise :class:`_BrokenBranch`: the task fails."""
        detail = exc.stderr.decode("utf-8", "replace").strip().splitlines()
        fate = ""
        if tip is not None and tip != base:
            try:
                self.repo.update_ref(ref, base, tip, "forkyard: reset a broken branch")
                fate = f"; {ref} was reset to the base {base[:12]}"
            except (GitError, RefMovedError):
                fate = f"; {ref} was left at {tip[:12]}"
        raise _BrokenBranch(
            f"the agent's branch tip {(tip or 'none')[:12]} is missing objects or has corrupt "
            f"ones ({detail[-1] if detail else 'git failed'}){fate}") from None

    # -- cleanup ------------------------------------------------------------------

    def cleanup(self, sandbox: Sandbox, keep: bool = False) -> None:
        """Kill leftovers, remove cgroups, release the port, remove the worktree unless keep."""
        spec = sandbox.spec
        try:
            self._abandon(sandbox)  # prepared ahead, never run
            group = sandbox.state.pop("cgroup", None)
            if isinstance(group, cgroups.Cgroup):
                group.remove()
            token = sandbox.state.get("token")
            if isinstance(token, str):
                limits.signal_token(token)
            lease = sandbox.state.pop("lease", None)
            if isinstance(lease, PortLease):
                lease.release()
            objects = sandbox.state.pop("objects", None)
            if isinstance(objects, Path):
                shutil.rmtree(objects, ignore_errors=True)
            tmpdir = sandbox.state.pop("tmpdir", None)
            layers = sandbox.state.pop("layers", None)
            if isinstance(layers, overlay.Layers):
                if keep:
                    _materialize(sandbox.worktree)
                layers.unmount()
            if isinstance(tmpdir, Path):
                shutil.rmtree(tmpdir, ignore_errors=True)
                _rmdir_quiet(tmpdir.parent)
            if not keep and sandbox.worktree.exists():
                # An overlay's mount point stays until the run's base goes (see overlay.py).
                self._remove_worktree(sandbox, keep_dir=isinstance(layers, overlay.Layers))
                _rmdir_quiet(sandbox.worktree.parent)
        finally:
            self._release(spec.run_id)


    def _remove_worktree(self, sandbox: Sandbox, keep_dir: bool = False) -> None:
        """What ``git worktree remove --force --force`` does, with the slow part unlocked.

        Deleting thousands of files takes a while; git holds nothing meanwhile, but our
        worktree bookkeeping lock would be held for all of it (and block the next
        sandbox's ``git worktree add``).  So the tree goes first, unlocked, then its
        administrative dir (``.git/worktrees/<name>``, known from before the agent ran)
        under the lock.  Anything unexpected: ``git worktree remove`` as before.
        """
        worktree = sandbox.worktree
        gitdir = sandbox.state.get("gitdir")
        admin = self.repo.common_dir / "worktrees"
        try:
            ok = (isinstance(gitdir, Path) and gitdir.parent == admin and not gitdir.is_symlink()
                  and (gitdir / "gitdir").read_text().strip() == str(worktree / ".git"))
        except OSError:
            ok = False
        if ok and not keep_dir:
            try:
                with _REMOVING:  # one at a time, as under git's lock before
                    shutil.rmtree(worktree)
            except OSError:
                ok = False
        if not ok:
            self.repo.worktree_remove(worktree)
            return
        with WORKTREE_ADMIN_LOCK:
            shutil.rmtree(gitdir, ignore_errors=True)  # type: ignore[arg-type]


class _BrokenBranch(SandboxError):
    """The agent left its branch on a commit whose objects are missing or corrupt."""


def odb_env(repo: Repo, objects: Path) -> dict[str, str]:
    """Git environment for a sandbox: new objects go to ``objects``; everything else is
    read from the shared store (an alternate, which the sandbox cannot write)."""
    shared = str(repo.common_dir / "objects")
    if ":" in shared or shared.startswith('"'):  # the list is ':'-separated; C-quote it
        shared = '"' + shared.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return {"GIT_OBJECT_DIRECTORY": str(objects), "GIT_ALTERNATE_OBJECT_DIRECTORIES": shared}


def _tidy_objects(objects: Path) -> None:
    """Before our git writes to a sandbox's object directory: no symlinked fan-out or
    ``pack`` dirs (our writes would follow them out of it), no alternates of the agent's
    choosing (our git reads only the shared store besides)."""
    try:
        for entry in os.scandir(objects):
            if entry.is_symlink():
                os.unlink(entry.path)
        (objects / "info" / "alternates").unlink(missing_ok=True)
    except OSError:
        pass


def _stat_key(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _index_ours(sandbox: Sandbox) -> bool:
    """Whether an overlay sandbox's index is still the one we wrote: the agent's git
    neither staged nor unstaged anything (its stat data, ``ctime`` included, which no
    one can set back)."""
    gitdir, key = sandbox.state.get("gitdir"), sandbox.state.get("index")
    return (isinstance(sandbox.state.get("layers"), overlay.Layers)
            and isinstance(gitdir, Path) and key is not None
            and _stat_key(gitdir / "index") == key)


def _untouched(sandbox: Sandbox) -> list[str]:
    """Top-level entries of an overlay sandbox that the agent provably left alone: nothing
    under them is in the upper layer (every write, delete or rename puts something there)
    and the index is the one we wrote (:func:`_index_ours`).  ``git add -A`` need not
    look at them (on a large tree, most of what it does).  Empty (look at everything)
    when in doubt."""
    layers = sandbox.state.get("layers")
    if not isinstance(layers, overlay.Layers) or not _index_ours(sandbox):
        return []
    try:
        touched = set(os.listdir(layers.upper))
        return sorted(n for n in os.listdir(layers.lower) if n not in touched and n != ".git")
    except OSError:
        return []


def _pin_git_files(gitpaths: confine.GitPaths, branch: str) -> dict[Path, bytes]:
    """Contents restored before our commit: the ``.git`` file, HEAD and the pointers."""
    pinned = {p: p.read_bytes() for p in gitpaths.ro if p.is_file()}
    pinned[gitpaths.gitdir / "HEAD"] = f"ref: refs/heads/{branch}\n".encode()
    return pinned


def _lease_port(sandbox: Sandbox) -> int | None:
    lease = sandbox.state.get("lease")
    return lease.port if isinstance(lease, PortLease) else None


def _pump(proc: subprocess.Popen[bytes], lines: _Lines) -> None:
    assert proc.stdout is not None
    for raw in iter(proc.stdout.readline, b""):
        lines(raw.decode("utf-8", "replace").rstrip("\r\n"))
    proc.stdout.close()


class _Lines:
    """An agent's output: the trailing lines kept, and where each line goes as it comes
    (set when the task starts: a warm start's chain is pumped before it has a task)."""

    def __init__(self, keep: int) -> None:
        self.tail: collections.deque[str] = collections.deque(maxlen=keep)
        self.on_line: LineCallback | None = None

    def __call__(self, line: str) -> None:
        self.tail.append(line)
        if self.on_line is not None:
            try:
                self.on_line(line)
            except Exception:  # a broken display must not kill the agent's pump
                pass


@dataclass
class _Agent:
    """A started process tree: its process, output pump, and (warm start) gate pipe and
    (bubblewrap) status pipe."""

    proc: subprocess.Popen[bytes]
    pump: threading.Thread
    lines: _Lines
    gate: int = -1
    status: int = -1

    def go(self, argv: list[str], env: dict[str, str]) -> bool:
        """Give a waiting chain its command and environment; False if it is gone."""
        try:
            if self.proc.poll() is not None:
                return False
            payload = memoryview(shim.gate_payload(argv, env))
            while payload:
                payload = payload[os.write(self.gate, payload):]
            return True
        except OSError:  # EPIPE: the chain died meanwhile
            return False
        finally:
            self._close("gate")

    def started(self) -> bool:
        """Did bubblewrap start its child (its ``--json-status-fd``)?  True without one."""
        if self.status < 0:
            return True
        os.set_blocking(self.status, False)
        try:
            ok = b"child-pid" in os.read(self.status, 65536)
        except BlockingIOError:
            ok = False
        self._close("status")
        return ok

    def finish(self) -> None:
        """After the tree was killed: reap, drain the output, close the gate."""
        self.proc.wait()
        self.pump.join(timeout=5)
        self._close("gate")

    def discard(self) -> None:
        self.finish()
        self._close("status")

    def _close(self, which: str) -> None:
        fd = getattr(self, which)
        if fd >= 0:
            setattr(self, which, -1)
            os.close(fd)


@dataclass(frozen=True)
class _Prepared:
    """What :meth:`WorktreeBackend._prepare_run` set up for one sandbox's agent."""

    conf: confine.Confinement
    tmpdir: Path
    objects: Path
    gitpaths: confine.GitPaths
    pinned: dict[Path, bytes]
    enf: limits.Enforcement
    cpu_fd: int | None
    token: str


@dataclass(frozen=True)
class _Warm:
    """A warm start: the set-up and the chain waiting at its gate."""

    prep: _Prepared
    agent: _Agent


class _ExitWaiter:
    """``waiter(timeout)``: True once the process has exited, waiting up to ``timeout``.

    With a pidfd the wait ends the moment the process exits; ``Popen.wait(timeout)``
    polls with growing sleeps instead (up to tens of milliseconds late).
    """

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        try:
            self.pidfd: int | None = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):  # no pidfd (old kernel): poll
            self.pidfd = None

    def __call__(self, timeout: float) -> bool:
        if self.pidfd is None or self.proc.returncode is not None:
            try:
                self.proc.wait(timeout=timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        ready, _, _ = select.select([self.pidfd], [], [], timeout)
        if ready:
            self.proc.wait()
        return bool(ready)

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


def _members(pid: int, enf: limits.Enforcement, token: str) -> set[int]:
    """The process tree from ``pid``: its cgroup's members, else the processes carrying
    the sandbox's token."""
    found = enf.cgroup.pids() if enf.cgroup is not None else limits.pids_with_token(token)
    return found | {pid}


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _materialize(worktree: Path) -> None:
    """Turn an overlay sandbox that is kept into plain files (a mount would not outlive
    this process's clean-up of the base, nor a reboot)."""
    copy = worktree.with_name(worktree.name + ".kept")
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(worktree, copy, symlinks=True)
    overlay.unmount(worktree)
    worktree.rmdir()
    copy.rename(worktree)


def _spare_mount_point(path: Path) -> bool:
    """An empty directory nothing is mounted on: what an overlay sandbox leaves."""
    try:
        return path.is_dir() and not any(path.iterdir()) and not overlay.has_mounts(path)
    except OSError:
        return False


def _rmdir_quiet(d: Path) -> None:
    try:
        d.rmdir()
    except OSError:
        pass
