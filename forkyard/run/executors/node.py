"""What a Ray worker does for one task: node cache, sandbox, agent, result bundle.

Nothing here reads the driver's filesystem.  A node keeps one bare repository per project
(its *cache*, ``<root>/repos/<key>.git``); a task's base arrives as a git bundle through
Ray's object store and is fetched into the cache only if the node lacks it.  The sandbox
is made from the cache by the same backend as on the driver's machine (the worktree
backend: limits, confinement, network policy, private temp dir), the agent runs, its work
is committed and harvested into the cache as locally, and a bundle of just the new commits
goes back with the head's sha.

The cache root is ``$FORKYARD_RAY_CACHE_DIR`` (set in the node's environment, e.g. by
``ray start`` or a pod spec), else ``forkyard`` under the node's Ray temp dir.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from forkyard.run.executors.bundles import fetch_base, result_bundle
from gitproc.git import Repo, git
from gitproc.lock import FileLock
from gitproc.process import probed_once
from gitproc.process import run as run_process
from sandbox import limits, places, shared_bases
from sandbox.backends.base import ExecResult, Sandbox, SandboxSpec
from sandbox.errors import SandboxError

CACHE_ENV = "FORKYARD_RAY_CACHE_DIR"
#: Where the driver's sandbox path stands in the command and environment: the real
#: worktree is only known on the worker, which puts its own path in its place.
WORKTREE_PLACEHOLDER = "/forkyard-ray-worktree"


@dataclass(frozen=True)
class WorkerTask:
    """Everything a worker needs for one task; it names no path of the driver's."""

    spec: SandboxSpec
    repo_key: str
    backend: Mapping[str, Any]      # the backend's configuration (``type`` included)

    def __repr__(self) -> str:
        # The spec's env holds the caller's secrets (its ``${NAME}`` and ``pass_env``
        # values): a task that shows up in a log or an error names the variables only.
        spec = replace(self.spec, env=dict.fromkeys(self.spec.env, "***"))
        return f"WorkerTask(spec={spec!r}, repo_key={self.repo_key!r})"


@dataclass(frozen=True)
class WorkerOutcome:
    """What comes back: the result, the new commits, and where it ran."""

    result: ExecResult
    bundle: bytes | None            # the new commits (None: the agent changed nothing)
    node_id: str
    hostname: str
    attempt: int                    # 2 when Ray retried the task after a lost worker
    fetched_base: bool              # the node had to fetch the base from the driver
    timings: Mapping[str, float] = field(default_factory=dict)  # seconds per step


def cache_root() -> Path:
    """This node's cache root (see the module docstring)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    try:  # the node's temp dir is not in Ray's public API
        import ray

        node = ray._private.worker.global_worker.node
        return Path(node.get_temp_dir_path()) / "forkyard"
    except Exception:
        return Path(tempfile.gettempdir()) / "forkyard-ray-cache"


def open_cache(root: Path, key: str) -> Repo:
    """The node's bare cache for repository ``key``, made on first use."""
    path = root / "repos" / f"{key}.git"
    known = _CACHES.get(path)
    if known is not None and (path / "HEAD").exists():
        return known
    with FileLock(root / "locks" / f"{key}.lock"):
        if not (path / "HEAD").exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            git("init", "-q", "--bare", str(path), cwd=path.parent)
            # Bases are kept by refs; nothing may be collected while tasks run.
            git("config", "gc.auto", "0", cwd=path)
        repo = Repo(path)
        # Recorded once, under the lock (the record is replaced through one temp name): every
        # path of this node's sandboxes (places.py) is then under the node's own root.
        places.set_sandbox_root(repo.forkyard_dir, sandbox_root(root))
    collect_runs(repo)  # once per worker process: what dead runs left on this node
    _CACHES[path] = repo
    return repo


def collect_runs(cache: Repo) -> list[str]:
    """Remove the base checkouts of runs that are over, or whose driver died (unused for
    ``shared_bases.IDLE_S``), and nobody uses (:func:`shared_bases.collect`), with what
    their sandboxes left on this node; the runs collected.  Never raises."""
    from forkyard.run.sandboxes import discard_branch

    try:
        gone = shared_bases.collect(cache)
        for run_id in gone:
            prefix = f"refs/heads/forkyard/{run_id}/"
            for ref in cache.out("for-each-ref", "--format=%(refname)", prefix).split():
                discard_branch(cache, ref.removeprefix("refs/heads/"))
            with contextlib.suppress(OSError):
                places.run_dir(cache.forkyard_dir, run_id).rmdir()
        return gone
    except Exception:
        return []


def finish_run(root: Path, key: str, run_id: str) -> bool:
    """The run ``run_id`` is over: its base checkout on this node goes (now, or when the
    last worker process using it is done); True if it is gone now."""
    path = root / "repos" / f"{key}.git"
    if not (path / "HEAD").exists():
        return True
    return shared_bases.finish_run(Repo(path), run_id)


#: The caches this worker process has opened (a worker runs many tasks).
_CACHES: dict[Path, Repo] = {}


def ensure_base(cache: Repo, root: Path, key: str, base: str,
                fetch: Callable[[], bytes]) -> bool:
    """Make sure the cache has ``base``; True if it had to be fetched (``fetch()`` is only
    called then: the bundle crosses the network only to nodes that lack it)."""
    if cache.try_rev_parse(f"{base}^{{commit}}") is not None:
        return False
    with FileLock(root / "locks" / f"{key}.lock"):
        if cache.try_rev_parse(f"{base}^{{commit}}") is not None:
            return False
        fetch_base(cache, base, fetch(), root / "scratch")
        return True


def _attempt(root: Path, spec: SandboxSpec) -> int:
    """Count the runs of this attempt of the task on this node: more than one when Ray
    retried it here after its worker died."""
    path = root / "attempts" / spec.run_id / f"{spec.task_id}.{spec.env.get('FORKYARD_ATTEMPT', 1)}"
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path.with_suffix(".lock")):
        n = int(path.read_text() or 0) + 1 if path.exists() else 1
        path.write_text(str(n))
        return n


def _pids_of(run_id: str, task_id: str, worktree: Path) -> set[int]:
    """Processes of this task's sandbox on this node, by the variables every agent process
    inherits (a dead worker's agents are orphans: nothing else leads to them)."""
    return limits.pids_with_env(f"FORKYARD_RUN_ID={run_id}", f"FORKYARD_TASK_ID={task_id}",
                                f"FORKYARD_WORKTREE={worktree}")


def sandbox_root(root: Path) -> Path:
    """Where this node's sandboxes go: under its cache root, never a path of the driver's
    (its ``--sandbox-dir`` names a directory on the driver's machine)."""
    return root / "sandboxes"


def clear_previous(cache: Repo, spec: SandboxSpec) -> None:
    """Remove what an earlier attempt of this task left on this node: its processes (its
    worker was killed), its cgroup, its worktree and branch in the cache."""
    from forkyard.run.sandboxes import discard_branch
    from sandbox import cgroups

    worktree = places.worktree_path(cache.forkyard_dir, spec.run_id, spec.task_id)
    for _ in range(3):
        pids = _pids_of(spec.run_id, spec.task_id, worktree)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    with contextlib.suppress(Exception):
        group = f"{cgroups.repo_scope(cache.common_dir)}.{spec.run_id}"
        for name, task, dirs in cgroups.walk_groups(cgroups.detect()):
            if name == group and task == spec.task_id:
                cgroups.remove_dirs(dirs)
    discard_branch(cache, spec.branch)


def _localize(spec: SandboxSpec, worktree: Path) -> SandboxSpec:
    """The spec with this node's worktree in place of the placeholder; files copied from
    the driver's checkout (``copy_files``) do not exist here."""
    real = str(worktree)
    env = {k: v.replace(WORKTREE_PLACEHOLDER, real) for k, v in spec.env.items()}
    return replace(spec, command=spec.command.replace(WORKTREE_PLACEHOLDER, real), env=env,
                   copy_files=())


@probed_once  # (per worker process: the option is the node's)
def _exit_codes_work() -> bool:
    """False where Ray auto-reaps children (its raylet-subreaper option): every exit code
    would then read 0 and a failed agent would look like a success."""
    return run_process(["false"], check=False).returncode != 0


def _backend(config: Mapping[str, Any], cache: Repo) -> Any:
    """This worker process's backend for ``config`` over ``cache``, made once: what it
    learns (cgroups, identity) and keeps per run (the run's base checkout, its network
    proxy) serves every task of the run that this process gets."""
    import json

    from sandbox.backends import get_backend

    key = (str(cache.path), json.dumps(dict(config), sort_keys=True, default=str))
    backend = _BACKENDS.get(key)
    if backend is None:
        backend = _BACKENDS[key] = get_backend(dict(config), cache)
        if hasattr(backend, "bases_class"):
            # One base checkout per run on this node, shared by its worker processes.
            backend.bases_class = shared_bases.SharedBases
    return backend


_BACKENDS: dict[tuple[str, str], Any] = {}


def run_task(task: WorkerTask, fetch: Callable[[], bytes], node_id: str = "",
             send: Callable[[list[str]], None] | None = None,
             keep: Callable[[WorkerOutcome], None] | None = None) -> WorkerOutcome:
    """Run one task on this node (see the module docstring); ``send`` gets the agent's
    output lines in batches as they come; ``keep`` gets what a cancelled task had done
    (no attempt's work is lost).  A ``KeyboardInterrupt`` (``ray.cancel``) stops
    the agent through the backend's own cancel, which kills its whole process tree, before
    it is re-raised."""
    if not _exit_codes_work():
        raise SandboxError("child exit codes are lost in this Ray worker (is "
                           "RAY_kill_child_processes_on_worker_exit_with_raylet_subreaper set?)")
    spec = task.spec
    timings: dict[str, float] = {"began_at": time.time()}  # (epoch: the driver's "queue")
    t0 = time.monotonic()

    def lap(step: str) -> None:
        nonlocal t0
        now = time.monotonic()
        timings[step] = round(now - t0, 4)
        t0 = now

    root = cache_root()
    cache = open_cache(root, task.repo_key)
    fetched = ensure_base(cache, root, task.repo_key, spec.base, fetch)
    attempt = _attempt(root, spec)
    lap("cache")
    task_lock = FileLock(root / "locks" / "tasks" / spec.run_id / f"{spec.task_id}.lock")
    with task_lock:  # an earlier attempt's clean-up (on its own thread) is done
        worktree = places.worktree_path(cache.forkyard_dir, spec.run_id, spec.task_id)
        if attempt > 1 or worktree.exists() or cache.try_rev_parse(
                f"refs/heads/{spec.branch}") is not None:
            clear_previous(cache, spec)
    lap("clear")
    config = dict(task.backend)
    # Not the driver's --sandbox-dir (a path on its machine): this node's own root.
    config["sandbox_dir"] = str(sandbox_root(root))
    backend = _backend(config, cache)
    sandbox = backend.prepare(replace(spec, copy_files=()))
    lap("prepare")
    try:
        sandbox.spec = _localize(spec, sandbox.worktree)
        marks: dict[str, float] = {}
        result, interrupted = _execute(backend, sandbox, send, marks)
        # The execute step split at the agent's start and exit (harvest: its commit).
        t_start, t_exit = marks.get("start", t0), marks.get("exit", t0)
        timings.update({"start": round(t_start - t0, 4), "agent": round(t_exit - t_start, 4)})
        t0 = t_exit
        lap("harvest")
        bundle = None
        if result.commit is not None:
            bundle = result_bundle(cache, f"refs/heads/{spec.branch}", spec.base,
                                   root / "scratch" / spec.run_id / spec.task_id)
        lap("bundle")
        if interrupted:
            if keep is not None:
                keep(WorkerOutcome(result, bundle, node_id, socket.gethostname(), attempt,
                                   fetched, timings))
            raise KeyboardInterrupt
    except BaseException:
        _cleanup(backend, sandbox, cache, task_lock)
        raise
    # The agent's processes are gone and its work is in the bundle: removing the sandbox
    # overlaps with the next task instead of delaying this result.
    task_lock.acquire()
    _CLEANER.submit(_cleanup, backend, sandbox, cache, task_lock)
    timings["ended_at"] = time.time()
    return WorkerOutcome(result, bundle, node_id, socket.gethostname(), attempt, fetched,
                         timings)


#: Removes finished sandboxes in the background (one thread per worker process).
_CLEANER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cleanup")


def _cleanup(backend: Any, sandbox: Sandbox, cache: Repo, task_lock: FileLock) -> None:
    """Remove a finished sandbox and its branch in the cache (its objects stay there);
    ``task_lock`` is held until done, so a later attempt of the task waits for it."""
    try:
        backend.cleanup(sandbox)
        cache.git("branch", "-D", sandbox.spec.branch, check=False)
    except Exception:  # a later attempt's clear_previous, or the node's gc, finishes it
        pass
    finally:
        task_lock.release()


def _execute(backend: Any, sandbox: Sandbox, send: Callable[[list[str]], None] | None,
             marks: dict[str, float]) -> tuple[ExecResult, bool]:
    """``backend.execute`` on a thread, the main thread waiting in slices (Ray delivers a
    cancel as ``KeyboardInterrupt`` to the main thread, between bytecodes) and sending the
    output lines gathered meanwhile."""
    cancel = threading.Event()
    box: list[ExecResult | BaseException] = []
    lines: list[str] = []
    mu = threading.Lock()

    def on_line(line: str) -> None:
        with mu:
            lines.append(line)

    def flush() -> None:
        with mu:
            batch = lines[:]
            lines.clear()
        if batch and send is not None:
            send(batch)

    def work() -> None:
        try:
            box.append(backend.execute(
                sandbox, on_line=on_line, cancel=cancel,
                on_start=lambda: marks.setdefault("start", time.monotonic()),
                on_exit=lambda: marks.setdefault("exit", time.monotonic())))
        except BaseException as exc:  # handed to the main thread
            box.append(exc)

    thread = threading.Thread(target=work, name="agent", daemon=True)
    thread.start()
    interrupted = False
    # Polled with sleep, not Thread.join: a join that an interrupt cuts short can leave the
    # thread looking alive for ever (its internal lock taken and never given back).
    while not box:
        try:
            time.sleep(0.2)
            flush()
        except KeyboardInterrupt:
            # The backend kills the agent's tree and commits what it left; a second
            # interrupt while it does so changes nothing.
            interrupted = True
            cancel.set()
    flush()
    out = box[0]
    if isinstance(out, BaseException):
        raise out
    return out, interrupted
