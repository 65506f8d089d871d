"""Integration: one batch of finished tasks onto the target, through the merge engine.

The run loop hands a batch to an :class:`Integrator`; the default one calls
``merge.merge_sources``: one transaction, journaled, in which the target ref moves by
compare-and-swap (and a checkout of the target moves along) or nothing moves at all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from forkyard.run.screen import ScreenLimits, screen
from gitproc.git import Repo


@dataclass(frozen=True)
class BatchItem:
    """One finished task in a batch: ``commit`` is what it finished with (recorded then),
    the only thing merged, whatever its branch points at later."""

    task: str
    branch: str
    commit: str
    allow_deletes: bool = False


@dataclass(frozen=True)
class BatchOutcome:
    """What integrating one batch did."""

    index: int
    tasks: tuple[str, ...]
    landed: tuple[str, ...]
    rejected: tuple[str, ...]       # tasks whose work did not land (conflict, validation...)
    old_tip: str
    new_tip: str
    conflicts: tuple[dict[str, Any], ...] = ()
    error: str | None = None        # the merge engine failed outright (nothing moved)

    @property
    def committed(self) -> bool:
        return bool(self.landed) and self.new_tip != self.old_tip


Integrator = Callable[[int, Sequence[BatchItem], str], BatchOutcome]


def conflicts_of(report: Any, task_of: dict[str, str]) -> list[dict[str, Any]]:
    """The conflicts of a ``MergeReport`` as the run JSON lists them (with the task)."""
    out: list[dict[str, Any]] = []
    for m in report.merges:
        task = task_of.get(m.source, m.source)
        for c in m.conflicts:
            out.append({"task": task, "path": c.path, "kind": c.kind, "message": c.message})
        for f in m.semantic:
            if f.severity == "error":
                out.append({"task": task, "path": f.path, "kind": f.kind, "message": f.message})
    v = report.validation
    if v is not None and not v.passed:
        out.append({"task": None, "path": None, "kind": "validation",
                    "message": f"{v.command} exited {v.exit_code}: {v.log_tail[-400:]}"})
    return out


def describe(exc: BaseException) -> str:
    """An error as one line, with the command and its stderr when a process failed."""
    import traceback

    where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    text = f"{type(exc).__name__}: {exc}" + "".join(
        f" (at {f.filename.rsplit('/', 2)[-2:][-1]}:{f.lineno} {f.line})" for f in where)
    argv = getattr(exc, "argv", None)
    if argv:
        err = getattr(exc, "stderr", b"") or b""
        tail = err.decode("utf-8", "replace").strip().splitlines()[-3:]
        text += f" [{' '.join(map(str, argv))[-300:]}] {' | '.join(tail)}"
    return text


def merge_integrator(
    repo: Repo,
    target_ref: str,
    *,
    run_id: str,
    validate: str | None,
    mode: str,
    semantic: bool = True,
    limits: ScreenLimits | None = None,
) -> Integrator:
    """An :data:`Integrator` over ``merge.merge_sources`` into ``target_ref``.  Each
    task's commit is screened first (:func:`forkyard.run.screen.screen`): one held back
    is rejected alone, the rest of its batch goes on."""
    from merge import merge_sources

    bounds = limits or ScreenLimits()

    def integrate(index: int, items: Sequence[BatchItem], tip: str) -> BatchOutcome:
        tasks = tuple(i.task for i in items)
        held: list[dict[str, Any]] = []
        for i in items:
            why = screen(repo, tip, i.task, i.commit, bounds, i.allow_deletes)
            if why is not None:
                held.append(why)
        out = {h["task"] for h in held}
        items = [i for i in items if i.task not in out]
        if not items:
            return BatchOutcome(index, tasks, (), tasks, tip, tip, tuple(held))
        task_of = {i.branch: i.task for i in items}
        try:
            report = merge_sources(
                repo, target_ref, [i.branch for i in items], validate=validate,
                semantic=semantic, mode=mode, shas=[i.commit for i in items],
                message=f"forkyard {run_id}: batch {index}: merge {{source}}",
            )
        except Exception as exc:  # lock held, ref moved under us, engine bug: nothing landed
            return BatchOutcome(index, tasks, (), tasks, tip, tip, tuple(held), describe(exc))
        new_tip = report.new_sha if report.outcome == "committed" and report.new_sha else tip
        if report.outcome == "committed":
            landed = tuple(task_of.get(s, s) for s in report.landed) if report.landed else (
                tuple(i.task for i in items if i.branch not in report.culprits))
        else:
            landed = ()
        rejected = tuple(t for t in tasks if t not in landed)
        old = report.target_sha or tip
        # (merge_sources also brings a checkout of the target along with the ref.)
        return BatchOutcome(index, tasks, landed, rejected, old, new_tip,
                            (*held, *conflicts_of(report, task_of)))

    return integrate


@dataclass
class FakeIntegrator:
    """For scheduling unit tests: lands everything except ``reject`` (no git)."""

    reject: set[str] = field(default_factory=set)
    calls: list[tuple[str, ...]] = field(default_factory=list)

    def __call__(self, index: int, items: Sequence[BatchItem], tip: str) -> BatchOutcome:
        tasks = tuple(i.task for i in items)
        self.calls.append(tasks)
        landed = tuple(t for t in tasks if t not in self.reject)
        rejected = tuple(t for t in tasks if t in self.reject)
        new_tip = f"{tip[:8]}+{index}" if landed else tip
        conflicts = tuple({"task": t, "path": "x", "kind": "content", "message": "planted"}
                          for t in rejected)
        return BatchOutcome(index, tasks, landed, rejected, tip, new_tip, conflicts)
