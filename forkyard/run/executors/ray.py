"""The Ray executor: each task's sandbox is made on a worker of a Ray cluster.

:class:`RayExecutor` is a :class:`~sandbox.backends.base.Backend`, so the run loop drives
it exactly as it drives a local backend.  ``prepare`` only records the spec (there is no
local worktree); ``execute`` puts the base in Ray's object store as a git bundle (once per
base), submits :func:`forkyard.run.executors.node.run_task` with the task's resources, and
when the result comes back verifies its bundle, fetches it and creates the task's branch
by compare-and-swap (:func:`~forkyard.run.executors.bundles.import_result`).  From there
the merge engine integrates the branch as usual.

Ray is imported only here, and only when this executor is chosen (the ``ray`` extra).
Without an address a local Ray instance is started for the run and stopped after it.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from forkyard.run.executors.bundles import base_bundle, import_result, repo_key
from forkyard.run.executors.node import (
    WORKTREE_PLACEHOLDER,
    WorkerOutcome,
    WorkerTask,
    cache_root,
    finish_run,
    run_task,
)
from gitproc.git import Repo
from sandbox.backends.base import (
    Backend,
    ExecResult,
    ExitCallback,
    LineCallback,
    Sandbox,
    SandboxSpec,
)
from sandbox.errors import SandboxBadInputError

#: A task whose worker dies (node lost, process killed) runs again elsewhere this often.
MAX_RETRIES = 3
#: Beyond the task's own timeout (enforced on the worker): the time a result may take to
#: come back before the driver gives up on the worker (hung or partitioned).
TRANSPORT_SLACK_S = 120.0
#: After a cancel, how long the worker has to stop the agent before its process is killed.
CANCEL_GRACE_S = 15.0


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise SandboxBadInputError(
            "the ray executor needs Ray: pip install 'forkyard[ray]'") from None
    return ray


def _remote_run(task: WorkerTask, base_box: list[Any], sink: Any, key: str) -> WorkerOutcome:
    """The Ray task: the base's ObjectRef is passed inside a list, so Ray does not fetch it
    before the task starts; the worker asks for it only if its node lacks the base.  Output
    lines go to the run's line sink (an actor) in batches; the last batch is in before the
    result is returned."""
    import ray

    pending: list[Any] = []

    def send(lines: list[str]) -> None:
        pending.append(sink.put.remote(key, lines))

    def keep(outcome: WorkerOutcome) -> None:
        pending.append(sink.keep.remote(key, outcome))

    node = ray.get_runtime_context().get_node_id()
    try:
        return run_task(task, lambda: ray.get(base_box[0]), node_id=node, send=send,
                        keep=keep)
    except KeyboardInterrupt:  # cancelled: the agent's tree is gone, its work kept
        pending.append(sink.finish.remote(key))
        raise
    finally:
        ray.get(pending)


class _LineSink:
    """Ray actor: output lines per task, from the workers to the driver, in order (calls
    from one caller to an actor run in the order they were made)."""

    def __init__(self) -> None:
        self.lines: dict[str, list[str]] = {}
        self.kept: dict[str, WorkerOutcome] = {}
        self.done: set[str] = set()

    def put(self, key: str, lines: list[str]) -> None:
        self.lines.setdefault(key, []).extend(lines)

    def take(self, key: str) -> list[str]:
        return self.lines.pop(key, [])

    def keep(self, key: str, outcome: WorkerOutcome) -> None:
        """What a cancelled task had done (its result cannot come back as a return)."""
        self.kept[key] = outcome

    def take_kept(self, key: str) -> WorkerOutcome | None:
        self.done.discard(key)
        return self.kept.pop(key, None)

    def finish(self, key: str) -> None:
        """A cancelled task's worker is done with it (its processes are gone)."""
        self.done.add(key)

    def finished(self, key: str) -> bool:
        return key in self.done


def _finish_on_node(key: str, run_id: str) -> bool:
    """The Ray task that tells one node a run is over (see :meth:`RayExecutor.end_run`)."""
    return finish_run(cache_root(), key, run_id)


#: How long the end of a run waits for its nodes to release what they kept for it.
FINISH_WAIT_S = 60.0


def _warm() -> int:
    """Start-up of one worker process: the modules a task needs are imported, and the task
    lasts long enough that each warm-up gets a worker of its own."""
    import sandbox.backends  # noqa: F401

    time.sleep(0.5)
    return os.getpid()


class RayExecutor(Backend):
    """Tasks on a Ray cluster, their sandboxes made by ``inner`` configuration's backend on
    the workers.  ``name`` is the inner backend's: the run's manifest and its resume do not
    change (the executor is an option of its own)."""

    def __init__(self, repo: Repo, inner: BaseModel, *, address: str | None = None,
                 agents: int = 4, resources: Mapping[str, float] | None = None,
                 local: Backend | None = None) -> None:
        super().__init__(repo)
        #: The driver's own backend (``inner``'s): validations run there, not on workers.
        self.local = local
        _ray()  # bad input now, not at the first task
        self.inner = inner
        self.name = str(getattr(inner, "type", "worktree"))
        self.address = address
        self.agents = agents
        self.resources = dict(resources or {})
        self.grace_s = float(getattr(inner, "grace_s", 2.0))
        self._lock = threading.Lock()
        self._started = False       # we started a local Ray (and stop it in close())
        self._connected = False
        self._bases: dict[str, Any] = {}  # base sha -> ObjectRef of its bundle
        self._key: str | None = None
        self._remote: Any = None
        self._sink: Any = None
        self._nodes: dict[str, set[str]] = {}  # run id -> the nodes its tasks ran on
        self._release_keeper = threading.Event()  # ends the thread that started Ray
        #: Seconds Ray's own start took (ray.init and warming its workers), for reports.
        self.startup_s = 0.0
        #: Per task, seconds per step on the worker and on the driver (benchmarks).
        self.timings: list[dict[str, float]] = []

    # -- Ray's lifecycle ---------------------------------------------------------------

    def connect(self) -> None:
        """Join the cluster at ``address``, or start a local Ray instance (idempotent; the
        first task calls it).  A Ray already initialised in this process is used as is."""
        with self._lock:
            if self._connected:
                return
            ray = _ray()
            t0 = time.monotonic()
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            # Ray's default 30 s for its GCS to come up is short on a loaded machine.
            os.environ.setdefault("RAY_gcs_server_port_wait_time_s", "120")
            if not ray.is_initialized():
                common: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
                if self.address:
                    ray.init(address=self.address, **common)
                else:
                    # Logical CPUs: agents mostly wait on a model, and each task asks for
                    # its limits' CPUs; the run loop bounds how many run at once anyway.
                    self._init_kept(ray, num_cpus=max(self.agents, 1) * 4,
                                    include_dashboard=False,
                                    object_store_memory=256 * 2**20, **common)
                    self._started = True
                    # Workers start in the background: have them up before the first wave.
                    warm = ray.remote(num_cpus=1)(_warm)
                    ray.get([warm.remote() for _ in range(self.agents)])
            self._remote = ray.remote(_remote_run)
            self._sink = ray.remote(num_cpus=0)(_LineSink).remote()
            self._connected = True
            self.startup_s = time.monotonic() - t0

    def end_run(self, run_id: str) -> None:
        """Tell each node the run's tasks ran on that the run is over: the node's base
        checkout for it goes (at once, or when its last sandbox there is removed)."""
        with self._lock:
            nodes = self._nodes.pop(run_id, set())
            key = self._key
        if not nodes or key is None or not self._connected:
            return
        try:
            ray = _ray()
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            finish = ray.remote(num_cpus=0, max_retries=0)(_finish_on_node)
            refs = [finish.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
                node, soft=False)).remote(key, run_id) for node in nodes]
            ray.wait(refs, num_returns=len(refs), timeout=FINISH_WAIT_S)
        except Exception:  # a lost node: its gc collects the checkout (node.collect_runs)
            pass

    def _init_kept(self, ray: Any, **kwargs: Any) -> None:
        """``ray.init`` on a thread that lives until :meth:`close`.  Ray's processes (its
        GCS first) are started with a parent-death signal, which Linux sends when the
        *thread* that started them exits: started from a run's agent thread, the GCS
        would die with that thread, and the end of the run (:meth:`end_run`) would find
        it gone."""
        done = threading.Event()
        failed: list[BaseException] = []

        def keep() -> None:
            try:
                ray.init(**kwargs)
            except BaseException as exc:  # handed to the caller
                failed.append(exc)
            finally:
                done.set()
            self._release_keeper.wait()

        self._release_keeper.clear()
        threading.Thread(target=keep, name="ray-keeper", daemon=True).start()
        done.wait()
        if failed:
            raise failed[0]

    def close(self) -> None:
        """Tell the nodes the runs still open are over, and stop the local Ray instance
        this executor started (a cluster is left alone)."""
        for run_id in list(self._nodes):
            self.end_run(run_id)
        with self._lock:
            if self._started:
                _ray().shutdown()
            self._release_keeper.set()
            self._started = self._connected = False
            self._bases.clear()

    # -- the Backend contract ----------------------------------------------------------

    def prepare(self, spec: SandboxSpec) -> Sandbox:
        """Record the spec; the sandbox is made on the worker.  Its worktree path is a
        placeholder that the worker replaces with its own in the command and environment."""
        return Sandbox(spec, Path(WORKTREE_PLACEHOLDER), spec.branch, {})

    def move(self, sandbox: Sandbox, base: str) -> None:
        from dataclasses import replace

        sandbox.spec = replace(sandbox.spec, base=base)

    def cleanup(self, sandbox: Sandbox, keep: bool = False) -> None:
        """Nothing is left here: the worker removed its sandbox; the branch stays."""
        return None

    def _base_ref(self, base: str) -> Any:
        with self._lock:
            ref = self._bases.get(base)
            if ref is None:
                ref = self._bases[base] = _ray().put(base_bundle(self.repo, base))
            if self._key is None:
                self._key = repo_key(self.repo, base)
            return ref

    def _options(self, spec: SandboxSpec) -> dict[str, Any]:
        limits = spec.limits
        opts: dict[str, Any] = {"num_cpus": limits.cpus or 1.0, "max_retries": MAX_RETRIES,
                                "retry_exceptions": False}
        if limits.memory_mb:
            opts["memory"] = limits.memory_mb * 2**20
        if self.resources:
            opts["resources"] = dict(self.resources)
        return opts

    def execute(self, sandbox: Sandbox, on_line: LineCallback | None = None,
                cancel: threading.Event | None = None,
                on_exit: ExitCallback | None = None,
                on_start: ExitCallback | None = None) -> ExecResult:
        """Run the task on a worker; import its result onto ``sandbox.branch``."""
        ray = _ray()
        spec = sandbox.spec
        started = time.monotonic()
        self.connect()
        base_ref = self._base_ref(spec.base)
        assert self._key is not None
        task = WorkerTask(driver_env(spec), self._key, self.inner.model_dump(mode="json"))
        key = f"{spec.run_id}/{spec.task_id}/{uuid.uuid4().hex}"
        submitted = time.time()
        ref = self._remote.options(**self._options(spec)).remote(task, [base_ref], self._sink,
                                                                  key)
        if on_start is not None:
            on_start()
        deadline = (started + spec.limits.timeout_s + TRANSPORT_SLACK_S
                    if spec.limits.timeout_s else None)

        def relay() -> None:
            lines = ray.get(self._sink.take.remote(key))
            if on_line is not None:
                for line in lines:
                    on_line(line)

        stopped = self._wait(ref, key, cancel, deadline, relay)
        relay()
        if on_exit is not None:
            on_exit()
        if stopped is None:
            try:
                outcome: WorkerOutcome = ray.get(ref)
            except ray.exceptions.TaskCancelledError:
                stopped = "cancelled"
            except ray.exceptions.RayError as exc:
                return self._failed(sandbox, started,
                                    f"the Ray task failed: {_first_line(exc)}")
        if stopped is not None:
            kept = ray.get(self._sink.take_kept.remote(key))
            if kept is None:
                return self._stopped(sandbox, stopped, started)
            outcome = kept  # the worker's cancel committed what the agent had done
        with self._lock:
            self._nodes.setdefault(spec.run_id, set()).add(outcome.node_id)
        res = outcome.result
        got = time.monotonic()
        arrived = time.time()
        where = f"ran on Ray node {outcome.node_id[:12]} ({outcome.hostname})"
        if outcome.attempt > 1:
            where += f", run {outcome.attempt} there (Ray retried it after a lost worker)"
        try:
            import_result(self.repo, outcome.bundle, res.commit, spec.base, sandbox.branch,
                          spec.task_id)
        except Exception as exc:
            return self._failed(sandbox, started, f"{where}; its result was refused: {exc}")
        from dataclasses import replace

        steps = dict(outcome.timings)
        began, ended = steps.pop("began_at", submitted), steps.pop("ended_at", arrived)
        # Clocks of two machines on a cluster: "queue" and "back" are then approximate.
        self.timings.append({**steps, "queue": round(began - submitted, 4),
                             "back": round(arrived - ended, 4),
                             "import": round(time.monotonic() - got, 4),
                             "total": round(time.monotonic() - started, 4)})
        message = "; ".join(m for m in (res.message, where) if m)
        status = "timed_out" if stopped == "timed_out" else res.status
        return replace(res, status=status, duration_s=round(time.monotonic() - started, 3),
                       message=message)

    def _wait(self, ref: Any, key: str, cancel: threading.Event | None,
              deadline: float | None, relay: Callable[[], None]) -> str | None:
        """Wait for the task; on a cancel or the driver's deadline stop it on the worker
        (a graceful cancel first, whose handler kills the agent's tree, then the worker
        process) and say which (None: it finished)."""
        ray = _ray()
        while True:
            ready, _ = ray.wait([ref], timeout=0.2)
            if ready:
                return None
            relay()
            why = ("cancelled" if cancel is not None and cancel.is_set() else
                   "timed_out" if deadline is not None and time.monotonic() > deadline
                   else None)
            if why is None:
                continue
            ray.cancel(ref, force=False)
            # The task's result may read "cancelled" at once: the worker's own word that
            # the agent is gone (and what it had done is kept) is what counts.
            until = time.monotonic() + CANCEL_GRACE_S + self.grace_s
            while not ray.get(self._sink.finished.remote(key)):
                if time.monotonic() > until:
                    ray.cancel(ref, force=True)
                    ray.wait([ref], timeout=CANCEL_GRACE_S)
                    break
                time.sleep(0.1)
            return why

    def _stopped(self, sandbox: Sandbox, why: str, started: float) -> ExecResult:
        self._branch_at_base(sandbox)
        return ExecResult("cancelled" if why == "cancelled" else "timed_out", None,
                          round(time.monotonic() - started, 3), "", None,
                          message="cancelled" if why == "cancelled" else
                          "the worker did not answer within the timeout; its task was killed")

    def _failed(self, sandbox: Sandbox, started: float, message: str) -> ExecResult:
        self._branch_at_base(sandbox)
        return ExecResult("failed", None, round(time.monotonic() - started, 3), "", None,
                          message=message)

    def _branch_at_base(self, sandbox: Sandbox) -> None:
        """The task's branch exists after every attempt, as a local sandbox's does."""
        ref = f"refs/heads/{sandbox.branch}"
        if self.repo.try_rev_parse(ref) is None:
            try:
                self.repo.update_ref(ref, sandbox.spec.base, None,
                                     f"forkyard: {sandbox.spec.task_id} (no result)")
            except Exception:
                pass


def driver_env(spec: SandboxSpec) -> SandboxSpec:
    """``spec`` with the driver's values of its ``pass_env`` names in ``env``, marked secret.

    A worker's environment is its node's, not the caller's: the preset's key and the task
    file's ``pass_env`` are read here, where the user started forkyard (as ``${NAME}``
    values already were), and travel in the task as masked secrets.  Names the driver lacks
    are left out, as locally."""
    from dataclasses import replace

    from sandbox.secrets import passed

    if not spec.pass_env:
        return spec
    values = passed(spec.pass_env)
    return replace(spec, env={**values, **spec.env}, pass_env=(),
                   secret_env=tuple(dict.fromkeys((*spec.secret_env, *values))))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}"
