"""The worktree backend itself: prepare a sandbox, run its agent, harvest, clean up.

Everything costly is deferred to :meth:`WorktreeBackend.execute`; the package docstring
(``sandbox/backends/worktree/__init__.py``) has the whole story.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

from gitproc.git import NumStat, Repo
from gitproc.hostile import write_file_nofollow
from gitproc.process import background_priority, probed_once
from sandbox import cgroups, confine, limits, overlay, places, setup
from sandbox.backends.base import (
    NO_CHANGES,
    Backend,
    ExecResult,
    ExitCallback,
    LineCallback,
    Sandbox,
    SandboxSpec,
    once,
)
from sandbox.backends.worktree import home as agent_home
from sandbox.backends.worktree import policies as pol
from sandbox.backends.worktree.config import (
    JOIN_SH,
    SHIM_ARGV,
    WorktreeConfig,
)
from sandbox.backends.worktree.harvest import (
    _pin_git_files,
    _stat_key,
    bring_home,
    odb_env,
    restore_pinned,
)
from sandbox.backends.worktree.layout import (
    _materialize,
    _rmdir_quiet,
    _spare_mount_point,
    drop_dangling,
    own_place,
    prepare_overlay,
    remove_worktree,
)
from sandbox.backends.worktree.supervise import (
    _Agent,
    _Lines,
    _Prepared,
    _Warm,
    for_commit,
    kill_tree,
    launch,
    run_phase,
)
from sandbox.errors import SandboxBadInputError, SandboxError
from sandbox.liveness import RunLock
from sandbox.network import forwarder_args
from sandbox.ports import PortLease, lease_port


class WorktreeBackend(Backend):
    """Agents in git worktrees at ``<sandbox root>/<run-id>/<task-id>`` (``sandbox/places.py``)."""

    name = "worktree"
    starts_take_turns = True
    #: A run's base checkouts: this process's, or ``shared_bases.SharedBases`` (Ray nodes).
    bases_class: type[overlay.Bases] = overlay.Bases

    def __init__(self, repo: Repo, config: WorktreeConfig | None = None, **options: object) -> None:
        super().__init__(repo)
        self.config = config or WorktreeConfig.model_validate(options)
        places.set_sandbox_root(repo.forkyard_dir, self.config.sandbox_dir)
        self._hier: cgroups.Hierarchies | None = None
        self._locks: dict[str, tuple[RunLock, int]] = {}
        self._bases: dict[str, overlay.Bases] = {}
        self._lock = threading.Lock()
        self._ident = probed_once(lambda: agent_home.identity(repo))  # (agents start at once)
        self._net = pol.RunProxies(self.config.proxy_hosts)

    # -- prepare ------------------------------------------------------------------

    def prepare(self, spec: SandboxSpec) -> Sandbox:
        """A worktree on a new branch ``forkyard/<run>/<task>`` at the base -- an overlay
        (:func:`layout.prepare_overlay`) or ``git worktree add`` -- plus set-up."""
        path = places.worktree_path(self.repo.forkyard_dir, spec.run_id, spec.task_id)
        if path.exists() and not _spare_mount_point(path):
            raise SandboxBadInputError(f"sandbox {path} already exists (run `forkyard gc`?)")
        state: dict[str, object] = {"made_at": spec.base}  # where the branch was made
        self._hold(spec.run_id)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            drop_dangling(self.repo, spec.branch)
            state["disk"] = pol.make_disk(own_place(self.repo, spec), spec)
            if self._overlays():
                with self._lock:
                    bases = self._bases.get(spec.run_id) or self._bases.setdefault(
                        spec.run_id, self.bases_class(self.repo, spec.run_id))
                prepare_overlay(self.repo, bases, spec, path, state,
                                required=self.config.layers == "overlay")
            else:
                self.repo.worktree_add(path, spec.branch, spec.base)
                state["at"] = spec.base
            patterns = setup.include_patterns(self.repo.path, spec.copy_files)
            if patterns:
                state["copied"] = setup.copy_ignored(self.repo.path, path, patterns)
            if spec.port is None and self.config.lease_ports:
                state["lease"] = lease_port(self.repo.forkyard_dir / "ports", self.config.port_range)
        except BaseException:
            pol.drop_disk(state)
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
                self._net.stop(run_id)
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
            argv = [*SHIM_ARGV, *opts, "--"]
        extra_rw = agent_home.writable(sandbox, self.config.extra_rw)
        if conf.bwrap:
            argv += confine.bwrap_argv(worktree=sandbox.worktree, tmpdir=prep.tmpdir,
                                       git=prep.gitpaths, network=prep.network,
                                       extra_rw=extra_rw,
                                       extra_ro=(*self.config.extra_ro, *spec.extra_ro),
                                       status_fd=status_fd, proxy_dir=prep.proxy_dir,
                                       deny=prep.deny)
        forwarding = prep.network.kind == "allow" and conf.bwrap
        if conf.landlock or gate_fd is not None or forwarding:
            # -S too: the shim makes the ruleset with raw syscalls (stdlib _ctypes only).
            argv += SHIM_ARGV
            if forwarding:
                argv += forwarder_args()
            if conf.landlock:
                ll = confine.landlock_spec(worktree=sandbox.worktree, tmpdir=prep.tmpdir,
                                           git=prep.gitpaths, network=prep.network,
                                           inside_bwrap=conf.bwrap)
                ll["rw"] = [*ll["rw"], *map(str, extra_rw)]  # type: ignore[misc]
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
        network = pol.check_network(pol.network_of(spec), conf)
        # One directory per sandbox (sandbox/places.py): the temp dir, and beside it, not
        # in it (an agent emptying its $TMPDIR keeps its commits and CLI state), its home,
        # object dir, private ref and reflog dirs (with disk_mb: on its disk, disk.py).
        own = own_place(self.repo, spec)
        own.tmp.mkdir(parents=True, exist_ok=True)
        tmpdir = own.tmp
        sandbox.state["tmpdir"] = tmpdir
        objects = own.objects
        for d in (objects, own.refs, own.logs):
            shutil.rmtree(d, ignore_errors=True)  # a crashed run's
            d.mkdir(exist_ok=os.path.ismount(d))  # (emptied: a bind mount of disk.py's)
        sandbox.state["objects"] = objects
        sandbox.state["home"] = agent_home.make_home(spec, own.home, self._ident())
        gitpaths = confine.GitPaths.of(self.repo.common_dir, sandbox.worktree, spec.branch,
                                       objects, own.root if conf.bwrap else None)
        # The ref file the agent's git moves: its own under bubblewrap; Landlock alone
        # cannot hide the real one (see confine.GitPaths).
        sandbox.state["head_private"] = conf.bwrap
        sandbox.state["head"] = (own.refs / Path(spec.branch).name if conf.bwrap
                                 else self.repo.common_dir / "refs" / "heads" / spec.branch)
        pinned = _pin_git_files(gitpaths, spec.branch)
        sandbox.state["gitdir"] = gitpaths.gitdir
        # The CPU quota is written by the inner shim, last, when there is one.
        enf = self._enforcement(spec, defer_cpu=conf.landlock or gated)
        enf = pol.with_disk_fallback(enf, spec, sandbox.state.get("disk"))
        sandbox.state["cgroup"] = enf.cgroup
        proxy_dir, deny = pol.confinement_paths(sandbox, network, conf, self._net,
                                                self.repo.forkyard_dir)
        cpu_fd = None
        if enf.cgroup is not None and enf.cgroup.cpu_quota is not None:
            cpu_fd = os.open(enf.cgroup.cpu_quota[0], os.O_WRONLY | os.O_CLOEXEC)
        token = uuid.uuid4().hex
        sandbox.state["token"] = token
        return _Prepared(conf, tmpdir, objects, gitpaths, pinned, enf, cpu_fd, token,
                         network, proxy_dir, deny)

    def _agent_env(self, sandbox: Sandbox, prep: _Prepared) -> dict[str, str]:
        return {**agent_home.sandbox_env(sandbox, prep.network, prep.tmpdir, prep.token,
                                         _lease_port(sandbox)),
                **odb_env(self.repo, prep.objects)}

    def warm(self, sandbox: Sandbox) -> None:
        """Start the agent's process chain ahead of its turn, up to its last ``exec``.
        Called from a background-priority thread where the niceness can be taken back
        (root): the chain is re-niced to the agent thread's when the task starts.

        Joining cgroups, bubblewrap's namespaces and mounts and the Landlock ruleset cost
        tens of milliseconds of CPU per agent, paid at the worst moment when several
        agents start together.  A sandbox prepared ahead (``forkyard/run/sandboxes.py``) has
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
        if prep.enf.cgroup is not None:  # until its turn (supervise.launch)
            prep.enf.cgroup.in_background(True)
        gate_r, gate_w = os.pipe()
        os.set_inheritable(gate_w, False)
        status_r, status_w = os.pipe() if prep.conf.bwrap else (-1, -1)
        fds = tuple(fd for fd in (gate_r, status_w, prep.cpu_fd) if fd is not None and fd >= 0)
        try:
            agent = launch(self._argv(sandbox, prep, None, status_w if prep.conf.bwrap
                                      else None, gate_r),
                           fds, sandbox.worktree, self._agent_env(sandbox, prep),
                           _Lines(self.config.log_tail_lines, sandbox.spec.masker() or None))
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
        pol.close_proxy(sandbox, self._net)

    def _abandon(self, sandbox: Sandbox) -> None:
        """Stop a warm start's waiting chain (its shim exits on the closed gate)."""
        warm = sandbox.state.pop("warm", None)
        if not isinstance(warm, _Warm):
            return
        kill_tree(warm.agent.proc, warm.prep.enf, warm.prep.token)
        warm.agent.discard()
        if warm.prep.cpu_fd is not None:
            os.close(warm.prep.cpu_fd)

    def execute(
        self, sandbox: Sandbox, on_line: LineCallback | None = None,
        cancel: threading.Event | None = None, on_exit: ExitCallback | None = None,
        on_start: ExitCallback | None = None,
    ) -> ExecResult:
        """Run setup command and agent confined and limited; commit what it left."""
        spec = sandbox.spec
        started = time.monotonic()
        on_start = once(on_start)
        self.to_base(sandbox)
        warm = sandbox.state.pop("warm", None)
        prep = warm.prep if isinstance(warm, _Warm) else self._prepare_run(sandbox)
        head = sandbox.state.get("head")
        if sandbox.state.get("head_private") and isinstance(head, Path):
            write_file_nofollow(head, f"{spec.base}\n".encode())  # where its git starts
        env = self._agent_env(sandbox, prep)
        lines = warm.agent.lines if isinstance(warm, _Warm) else _Lines(self.config.log_tail_lines)
        lines.mask = spec.masker() or None
        reader = agent_home.stream_reader(spec.preset)
        if reader is None:
            lines.on_line = on_line
        else:  # JSON events, each read whole (supervise.MAX_EVENT_BYTES)
            lines.on_whole = agent_home.reader_callback(reader, on_line)
        deadline = started + spec.limits.timeout_s if spec.limits.timeout_s else None
        reason: str | None = None
        rc: int | None = None
        message = ""

        def phase(command: str, until: float | None, ready: _Agent | None = None,
                  last: bool = True) -> tuple[int | None, str | None]:
            return run_phase(
                lambda fd: self._argv(sandbox, prep, command, fd), command, prep.conf.bwrap,
                sandbox.worktree, env, prep, until, cancel, lines, self.config.grace_s,
                () if prep.cpu_fd is None else (prep.cpu_fd,), ready, settle=not last,
                on_start=on_start)

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
        status = pol.status_of(rc, reason, enf)
        if status == "timed_out":
            message = f"killed after the {spec.limits.timeout_s:g}s timeout"
        elif status == "oom_killed":
            message = f"killed by the OOM killer at the {spec.limits.memory_mb} MiB memory limit"
        elif status == "cancelled":
            message = "cancelled"
        message = "; ".join(m for m in (message, *pol.policy_notes(sandbox, self._net)) if m)
        if enf.name == "rlimit":
            # Say so: rlimits are per process and weaker (see sandbox/limits.py).
            message = "; ".join(m for m in (message, "limits enforced by rlimits only: no "
                                            "writable cgroup here") if m)
        commit: str | None = None
        files: list[NumStat] = []
        commit_msg, broken = "", False
        if enf.cgroup is not None:  # the commit step's group, too
            enf.cgroup.in_background(True)
        with background_priority():  # the agent is gone: agents starting come first
            restore_pinned(prep.pinned)
            if spec.harvest:  # (a validation's leftovers are thrown away with its sandbox)
                commit, files, commit_msg, broken = self._receive(sandbox, prep, env)
        if broken:
            status = "failed"
        if spec.harvest and status == "succeeded" and commit is None and not files:
            message = "; ".join(m for m in (message, NO_CHANGES) if m)
        return ExecResult(
            status=status, exit_code=rc, duration_s=round(time.monotonic() - started, 3),
            log_tail="\n".join(lines.tail), commit=commit, files_modified=tuple(files),
            enforced_by=enf.name, confinement=prep.conf.name,
            message="; ".join(m for m in (message, commit_msg) if m),
            agent_report=None if reader is None else reader.report.to_dict(),
        )

    def _receive(self, sandbox: Sandbox, prep: _Prepared, env: dict[str, str],
                 ) -> tuple[str | None, list[NumStat], str, bool]:
        """:func:`harvest.bring_home`, its commit step run as :func:`for_commit` says."""
        commit_prep = for_commit(prep)
        return bring_home(
            self.repo, sandbox, agent_home.scratch(sandbox.spec.preset),
            lambda left: run_phase(
                lambda fd: self._argv(sandbox, commit_prep, left, fd),
                left, prep.conf.bwrap, sandbox.worktree, env, commit_prep,
                time.monotonic() + self.config.commit_timeout_s, None,
                _Lines(20, sandbox.spec.masker() or None), self.config.grace_s)[0])

    # -- cleanup ------------------------------------------------------------------

    def cleanup(self, sandbox: Sandbox, keep: bool = False) -> None:
        """Kill leftovers, remove cgroups, release the port, remove the worktree unless keep."""
        spec = sandbox.spec
        try:
            self._abandon(sandbox)  # prepared ahead, never run
            group = sandbox.state.pop("cgroup", None)
            gone = isinstance(group, cgroups.Cgroup) and group.remove()
            token = sandbox.state.get("token")
            if isinstance(token, str) and not gone:  # (no group held them all: scan /proc)
                limits.signal_token(token)
            lease = sandbox.state.pop("lease", None)
            if isinstance(lease, PortLease):
                lease.release()
            for key in ("objects", "home"):
                mine = sandbox.state.pop(key, None)
                if isinstance(mine, Path):
                    shutil.rmtree(mine, ignore_errors=True)
            tmpdir = sandbox.state.pop("tmpdir", None)
            layers = sandbox.state.pop("layers", None)
            if isinstance(layers, overlay.Layers):
                if keep:
                    _materialize(sandbox.worktree)
                layers.unmount()
            pol.release(sandbox, self._net)  # the disk_mb file system, the proxy listener
            own = own_place(self.repo, spec)
            if isinstance(tmpdir, Path):  # what it ran with (see _prepare_run)
                for d in (own.tmp, own.refs, own.logs, own.layer):
                    shutil.rmtree(d, ignore_errors=True)
            for d in (own.objects, own.home, own.layer):  # empty mount points of disk.py
                _rmdir_quiet(d)
            if not keep and sandbox.worktree.exists():
                # An overlay's mount point stays until the run's base goes (see overlay.py).
                remove_worktree(self.repo, sandbox,
                                keep_dir=isinstance(layers, overlay.Layers))
            _rmdir_quiet(own.root)  # (kept: the worktree is still in it)
            _rmdir_quiet(own.root.parent)
        finally:
            self._release(spec.run_id)


def _lease_port(sandbox: Sandbox) -> int | None:
    lease = sandbox.state.get("lease")
    return lease.port if isinstance(lease, PortLease) else None

