"""``run_workflow``: plan a task file, run it with parallel agents, integrate their work.

The Python API behind ``forkyard run``::

    from forkyard import RunOptions, resume_run, run_workflow
    from planner import load_tasks, plan

    result = run_workflow("path/to/repo", "tasks.yaml", RunOptions(agents=4))  # plans for you
    result = run_workflow(repo, tf, RunOptions(agents=4), plan=plan(tf, agents=4))  # or bring one
    result = resume_run(repo, "20261122-0412-ab12")                     # continue a run
    result.model_dump(mode="json")                                      # the run JSON

Everything that can be bad input is checked before anything changes (exit code 2): the
repository, the task file, the target branch, a dirty checkout, the agent commands, the
docker image.  State lives under ``.git/forkyard/runs/<run-id>/``: ``run.json`` (what was
asked, written first), ``events.jsonl`` (the journal), ``result.json`` (the outcome).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from forkyard.journal.events import EventLog, RunPaths, new_run_id, resolve_run
from forkyard.journal.models import RunResult
from forkyard.journal.results import build_result
from forkyard.journal.state import RunManifest, RunView, load_view
from forkyard.run.attempts import attempt_refs, keep_attempt
from forkyard.run.executors import close_executor, local_backend, make_executor
from forkyard.run.integrate import Integrator, merge_integrator
from forkyard.run.options import RunOptions
from forkyard.run.records import RunnerConfig, TaskRecord, TaskSpec
from forkyard.run.runner import Runner
from forkyard.run.screen import ScreenLimits
from forkyard.run.validation import ValidationSetup, sandbox_validator
from forkyard.views.history import History
from gitproc.git import Repo, require_git
from gitproc.lock import FileLock
from merge.validate import DEFAULT_TIMEOUT_S, Validator
from planner import Plan, TaskFile, load_tasks
from planner import plan as make_plan
from sandbox import overlay
from sandbox.agents import check_agent
from sandbox.backends.base import Backend
from sandbox.errors import SandboxBadInputError
from sandbox.policies import check_policies, network_mode_for_docker

Listener = Callable[[Any], None]
#: What a caller-chosen run id may be: it names a directory and a branch prefix.
RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


class RunLockedError(SandboxBadInputError):
    """Another process is running (or resuming) this run right now."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id} is in progress in another process")
        self.run_id = run_id


def _run_lock(paths: RunPaths) -> FileLock:
    """An exclusive lock on the run's directory: one process runs or resumes a run; the
    kernel drops it if we die."""
    lock = FileLock(paths.lock)
    if not lock.acquire(wait=0, write_pid=True):
        raise RunLockedError(paths.run_id)
    return lock


def open_repo(repo: Repo | str | os.PathLike[str]) -> Repo:
    return repo if isinstance(repo, Repo) else Repo(repo)


def resolve_target(repo: Repo, into: str | None) -> tuple[str, str]:
    """(short name, full ref) of the branch the run integrates into."""
    name = into or repo.current_branch()
    if not name:
        raise SandboxBadInputError("HEAD is detached: name the target branch with --into")
    full = repo.full_ref(name)
    if full is None or not full.startswith("refs/heads/"):
        raise SandboxBadInputError(f"target branch {name!r} does not exist")
    return full.removeprefix("refs/heads/"), full


def make_backend(repo: Repo, options: RunOptions) -> Backend:
    """The backend ``options`` name; a docker image that is missing is bad input now, not
    later."""
    from sandbox.backends import get_backend

    opts = dict(options.backend_options)
    if options.backend == "docker" and options.image:
        opts["image"] = options.image
    backend = get_backend(options.backend, repo, **opts)
    check = getattr(backend, "check_image", None)
    if check is not None:
        check(backend.config.image)  # type: ignore[attr-defined]
    return make_executor(repo, options, backend)  # where its sandboxes are made


def with_default_agent(taskfile: TaskFile, agent: str) -> TaskFile:
    """``taskfile`` with ``agent`` (a preset name or a command template) as the default
    agent, e.g. ``--agent claude`` for a spec-kit tasks.md that names no commands."""
    defaults = TaskFile.model_validate(
        {"defaults": {"agent": agent}, "tasks": []}).defaults.agent
    return taskfile.model_copy(update={
        "defaults": taskfile.defaults.model_copy(update={"agent": defaults})})


def _specs(taskfile: TaskFile, the_plan: Plan) -> dict[str, TaskSpec]:
    out = {}
    for task in taskfile.tasks:
        deps = tuple(the_plan.dependencies.get(task.id, task.depends_on))
        # The defaults' env, pass_env and paths folded into the task: the loop sees one task.
        out[task.id] = TaskSpec(taskfile.with_defaults(task), taskfile.agent_for(task),
                                taskfile.limits_for(task), deps)
    return out


def _order(the_plan: Plan, taskfile: TaskFile) -> list[str]:
    """Dispatch priority: the plan's start times (ties: the task file's order)."""
    pos = {t.id: i for i, t in enumerate(taskfile.tasks)}
    start = {a.task: a.start for a in the_plan.assignments}
    return sorted(pos, key=lambda t: (start.get(t, 0.0), pos[t]))


def run_workflow(
    repo: Repo | str | os.PathLike[str],
    tasks: TaskFile | Plan | str | os.PathLike[str],
    options: RunOptions | None = None,
    *,
    plan: Plan | None = None,
    backend: Backend | None = None,
    integrator: Integrator | None = None,
    listeners: tuple[Listener, ...] = (),
    run_id: str | None = None,
) -> RunResult:
    """Plan and run ``tasks`` in ``repo`` with ``options``; see the module docstring.

    ``tasks`` is a task file (path or :class:`TaskFile`), or a :class:`Plan` together
    with the task file as ``plan=``'s source.  ``backend`` replaces the backend
    ``options.backend`` names with one already made (tests, benchmarks); ``listeners``
    receive every :class:`~forkyard.journal.events.Event` (the live display is one).
    Raises bad-input errors (exit code 2) before anything changes; returns the
    :class:`RunResult` otherwise, also for a run Ctrl-C stopped (outcome ``cancelled``).
    ``run_id`` names the run in advance (a process that starts the run in the background
    needs its id before the journal exists); it must be new.
    """
    opts = options or RunOptions()
    r = open_repo(repo)
    if run_id is not None:
        check_new_run_id(r, run_id)
    if isinstance(tasks, Plan):
        raise SandboxBadInputError("give the task file as tasks= and the plan as plan=")
    require_git()  # before any agent runs, not at the first integration
    taskfile = tasks if isinstance(tasks, TaskFile) else load_tasks(Path(tasks))
    if not taskfile.tasks:
        raise SandboxBadInputError("the task file has no tasks")
    if opts.agent is not None:
        taskfile = with_default_agent(taskfile, opts.agent)
    for task in taskfile.tasks:
        agent, folded = taskfile.agent_for(task), taskfile.with_defaults(task)
        network = check_policies(agent, folded, taskfile.limits_for(task))
        check_agent(agent, folded, installed=opts.backend == "worktree",
                    network=network.kind != "none")
    target, target_ref = resolve_target(r, opts.into)
    if not r.bare and r.current_branch() == target and r.is_dirty():
        raise SandboxBadInputError(
            f"{r.path} has uncommitted changes on {target}, the branch this run integrates "
            "into: commit or stash them first")
    if plan is None:
        durations = History.measured(r, taskfile.tasks) if opts.use_history else {}
        plan = make_plan(taskfile, agents=opts.agents, goal=opts.goal,
                         durations=durations or None)
    be = backend or make_backend(r, opts)
    if be.name == "docker":  # what it cannot enforce is bad input now, not a failed task
        for task in taskfile.tasks:
            network_mode_for_docker(task.id, taskfile.agent_for(task), taskfile.limits_for(task))
    _recover(r)  # a crashed run's half-done batch: finish or roll back before we read the tip
    tip = r.rev_parse(target_ref)

    run_id = run_id or new_run_id()
    paths = RunPaths.of(r, run_id)
    lock = _run_lock(paths)
    try:
        manifest = RunManifest(
            run_id=run_id, created=time.time(), repo=str(r.path), target=target,
            target_ref=target_ref, target_sha_before=tip,
            options=opts.model_copy(update={"backend": be.name}),
            taskfile=taskfile.model_dump(mode="json", by_alias=True),
            plan=plan.model_dump(mode="json"),
        )
        manifest.save(paths)
        log = EventLog(paths.events)
        for listener in listeners:
            log.subscribe(listener)
        order = _order(plan, taskfile)
        log.emit("run_started", run_id=run_id, target=target, tip=tip, tasks=order,
                 agents=opts.agents, strategy=opts.strategy, mode=opts.mode, pid=os.getpid())
        for t in order:
            log.emit("task_queued", task=t)
        return _execute(r, manifest, paths, log, taskfile, plan, be, tip, integrator,
                        records=None, first_batch=0)
    finally:
        lock.release()
        if backend is None:
            close_executor(be)  # e.g. the local Ray instance started for this run


def check_new_run_id(repo: Repo, run_id: str) -> None:
    """Bad input unless ``run_id`` is a safe directory name no run of ``repo`` has yet."""
    if not RUN_ID_RE.fullmatch(run_id):
        raise SandboxBadInputError(
            f"run id {run_id!r}: use letters, digits, '-' and '_' (at most 64)")
    if RunPaths.of(repo, run_id).root.exists():
        raise SandboxBadInputError(f"run id {run_id!r} is taken: a run of that id exists")


def run_validator(repo: Repo, backend: Backend, run_id: str, opts: RunOptions,
                  taskfile: TaskFile) -> Validator:
    """The run's ``--validate``: in a sandbox of the run's backend at the merged commit,
    with the task file's set-up, default limits and ``copy`` files, and the run's
    confinement (see :mod:`forkyard.run.validation`).  Always on this machine, where the
    merged commit is: with ``--executor ray`` the backend behind the executor runs it."""
    assert opts.validate_command is not None
    backend = local_backend(backend)
    if backend.name == "dummy":  # scheduling tests: no sandbox to run anything in
        from merge.validate import host_validator

        return host_validator(repo, opts.validate_command)
    limits = taskfile.defaults.limits
    return sandbox_validator(repo, backend, run_id, ValidationSetup(
        command=opts.validate_command, limits=limits, setup_command=taskfile.setup.command,
        copy_files=tuple(taskfile.setup.copy_files), confine=opts.confine,
        timeout_s=limits.timeout_s or DEFAULT_TIMEOUT_S, image=opts.image))


def _recover(repo: Repo) -> None:
    from merge import recover

    recover(repo)


def _execute(
    repo: Repo, manifest: RunManifest, paths: RunPaths, log: EventLog, taskfile: TaskFile,
    the_plan: Plan, backend: Backend, tip: str, integrator: Integrator | None,
    records: dict[str, TaskRecord] | None, first_batch: int,
) -> RunResult:
    opts = manifest.options
    config = RunnerConfig(
        run_id=manifest.run_id, agents=opts.agents, strategy=opts.strategy,
        mode=opts.mode, keep=opts.keep, confine=opts.confine,
        image=opts.image, retry_backoff_s=opts.retry_backoff_s,
        setup_command=taskfile.setup.command, copy_files=tuple(taskfile.setup.copy_files),
    )
    if integrator is None:
        validator = None
        if opts.validate_command is not None:
            validator = run_validator(repo, backend, manifest.run_id, opts, taskfile)
        integrator = merge_integrator(
            repo, manifest.target_ref, run_id=manifest.run_id,
            validate=opts.validate_command,
            mode="bisect" if config.strategy == "aggressive" else "conservative",
            validator=validator, validate_slots=opts.agents,
            limits=ScreenLimits(
                None if opts.max_file_mb is None else int(opts.max_file_mb * 1024 * 1024),
                opts.max_delete_share))
    runner = Runner(
        repo, _specs(taskfile, the_plan), _order(the_plan, taskfile),
        [b.tasks for b in the_plan.batches], config, backend, integrator, log, tip,
        records=records, first_batch=first_batch, conflicts=the_plan.conflicts,
    )
    try:
        runner.run()
    finally:
        tip_after = repo.try_rev_parse(manifest.target_ref) or runner.tip
        view = load_view(paths)
        result = build_result(manifest, view, the_plan, tip_after)
        # The result first (whole, by rename): a reader that sees run_finished can read it.
        tmp = paths.result.with_suffix(".tmp")
        tmp.write_text(result.model_dump_json(indent=1))
        tmp.replace(paths.result)
        log.emit("run_finished", outcome=result.outcome, tip=tip_after,
                 reason=runner.stop_reason)
        log.close()
        try:
            History(repo).record(manifest.run_id, result.results,
                                 {t.id: t for t in taskfile.tasks}, the_plan.durations)
        except Exception:  # history is a nicety; a locked database must not fail the run
            pass
    return result


def resume_run(
    repo: Repo | str | os.PathLike[str], run_id: str, *, backend: Backend | None = None,
    integrator: Integrator | None = None, listeners: tuple[Listener, ...] = (),
) -> RunResult:
    """Continue a stopped or crashed run from its journal, on the options it was started
    with (its manifest stores them whole)."""
    r = open_repo(repo)
    paths = resolve_run(r, run_id)
    lock = _run_lock(paths)
    be: Backend | None = None  # the finally below may run before it is made
    try:
        manifest = RunManifest.load(paths)
        taskfile = TaskFile.model_validate(manifest.taskfile)
        the_plan = Plan.model_validate(manifest.plan)
        be = backend or make_backend(r, manifest.options)
        _recover(r)
        # What the dead process left -- agents' and validations' processes (killed by
        # cgroup), their sandboxes and temp dirs -- goes before anything runs again.
        from forkyard.gc import gc

        gc(r, only=manifest.run_id, branches=False)
        overlay.unmount_run(r.forkyard_dir, manifest.run_id)
        tip = r.rev_parse(manifest.target_ref)
        view = load_view(paths)
        records = records_for_resume(r, view, tip)
        log = EventLog(paths.events)
        for listener in listeners:
            log.subscribe(listener)
        rerun = [t for t, rec in records.items() if rec.state == "pending"]
        # run_resumed first: it opens this session's segment of wall time, so the time
        # the run lay dead is not counted (the closing events below belong to it).
        log.emit("run_resumed", run_id=manifest.run_id, tip=tip, pid=os.getpid(),
                 tasks=list(records), rerun=rerun, agents=manifest.options.agents,
                 was={t: (view.tasks[t].status if t in view.tasks else "queued")
                      for t in rerun})
        _close_interrupted_batch(log, view, records, tip)
        for t in rerun:
            log.emit("task_queued", task=t)
        first_batch = max((b.index for b in view.batches), default=-1) + 1
        return _execute(r, manifest, paths, log, taskfile, the_plan, be, tip, integrator,
                        records=records, first_batch=first_batch)
    finally:
        lock.release()
        if backend is None and be is not None:
            close_executor(be)  # e.g. the local Ray instance started for this run


def records_for_resume(repo: Repo, view: RunView, tip: str) -> dict[str, TaskRecord]:
    """Loop state for a resumed run.

    A task's work counts as integrated when its commit is an ancestor of the target tip:
    the journal may lack the ``batch_committed`` line (a crash just after the ref moved),
    but the commit graph cannot lie, and so no task's work is integrated twice.  Finished
    work not yet integrated is integrated; everything else (failed, cancelled, cut off
    mid-run, skipped) runs again on a fresh branch.
    """
    records: dict[str, TaskRecord] = {}
    run_id = view.run_id
    for tid, t in view.tasks.items():
        rec = TaskRecord(tid, attempts=0, agent=t.agent, base=t.base, needs_fresh_branch=True)
        # Whatever the branch holds now (a cancelled agent's partial work, an attempt the
        # crash cut off after its commit) is kept under an attempt ref before any rerun
        # starts the branch afresh.
        kept = attempt_refs(repo, run_id, tid)
        tip_sha = repo.try_rev_parse(f"refs/heads/{t.branch}") if t.branch else None
        n = max([*kept, t.attempts, 0])
        if tip_sha and tip_sha not in kept.values() and tip_sha != t.base:
            n += 1
            keep_attempt(repo, run_id, tid, n, tip_sha)
        rec.attempt_offset = n
        if t.status == "succeeded" and t.commit:
            if _is_ancestor(repo, t.commit, tip):
                rec.state, rec.status, rec.integrated = "done", "succeeded", True
            elif t.branch and repo.try_rev_parse(f"refs/heads/{t.branch}") == t.commit:
                # (its branch must still hold the work: `forkyard gc --prune-unmerged` may
                # have removed it, and then the task simply runs again)
                from sandbox.backends.base import ExecResult

                rec.state, rec.status = "done", "succeeded"
                rec.result = ExecResult("succeeded", t.exit_code, t.duration_s, t.log_tail,
                                        t.commit)
        elif t.status == "succeeded":
            rec.state, rec.status, rec.integrated = "done", "succeeded", True
        records[tid] = rec
    return records


def _close_interrupted_batch(log: EventLog, view: RunView, records: dict[str, TaskRecord],
                             tip: str) -> None:
    """Journal the outcome of the batch a crash interrupted (at most one: batches are
    sequential), as the commit graph tells it after the merge engine's recovery."""
    for b in view.batches:
        if b.outcome != "integrating":
            continue
        landed = [t for t in b.tasks if t in records and records[t].integrated]
        if landed:
            log.emit("batch_committed", index=b.index, tasks=b.tasks, landed=landed,
                     rejected=[t for t in b.tasks if t not in landed], old_tip=b.old_tip,
                     new_tip=tip, conflicts=[], recovered=True)
        else:
            log.emit("batch_rolled_back", index=b.index, tasks=b.tasks, tip=b.old_tip,
                     conflicts=[], error="interrupted by a crash; rolled back by recovery",
                     recovered=True)


def _is_ancestor(repo: Repo, commit: str, tip: str) -> bool:
    return repo.git("merge-base", "--is-ancestor", commit, tip, check=False).returncode == 0
