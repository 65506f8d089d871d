"""Integration: one batch of finished tasks onto the target, through the merge engine.

The run loop hands a batch to an :class:`Integrator`; the default one calls
``merge.merge_sources``: one transaction, journaled, in which the target ref moves by
compare-and-swap (and a checkout of the target moves along) or nothing moves at all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from forkyard.run.screen import ScreenLimits, screen
from gitproc.git import Repo
from merge.validate import Validator


@dataclass(frozen=True)
class BatchItem:
    """One finished task in a batch: ``commit`` is what it finished with (recorded then),
    the only thing merged, whatever its branch points at later."""

    task: str
    branch: str
    commit: str
    files: tuple[str, ...] = ()     # what the task changed (to name who it conflicts with)
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
    validation: Mapping[str, Any] | None = None
    """The batch's validation (command, passed, exit_code, log_tail), passing or not."""
    reasons: Mapping[str, str] = field(default_factory=dict)
    """Why each rejected task did not land, in its own words (its conflict, the
    validation that failed with it, or "held back" naming the culprit)."""

    @property
    def committed(self) -> bool:
        return bool(self.landed) and self.new_tip != self.old_tip


Integrator = Callable[[int, Sequence[BatchItem], str], BatchOutcome]


def conflicts_of(report: Any, task_of: dict[str, str],
                 landed_by: Mapping[str, Sequence[str]] | None = None) -> list[dict[str, Any]]:
    """The conflicts of a ``MergeReport`` as the run JSON lists them: each with its own
    task, and for a textual conflict the tasks it conflicts with: those of the batch
    touching that path, and those of earlier batches that landed a change to it
    (``landed_by``: path -> tasks); an empty ``with`` means someone else's commit."""
    from merge.validate import failure_summary

    out: list[dict[str, Any]] = []
    touching = {o.path: [task_of.get(s, s) for s in o.sources] for o in report.overlaps}
    for m in report.merges:
        task = task_of.get(m.source, m.source)
        for c in m.conflicts:
            paths = c.paths or [c.path]
            others = [t for p in paths for t in touching.get(p, []) if t != task]
            others += [t for p in paths for t in (landed_by or {}).get(p, ())
                       if t != task and t not in others]
            out.append({"task": task, "path": c.path, "kind": c.kind, "with": others,
                        "message": c.message})
        for f in m.semantic:
            if f.severity == "error":
                out.append({"task": task, "path": f.path, "kind": f.kind, "message": f.message})
    v = report.validation
    blame = getattr(report, "blame", {}) or {}
    for source, bv in blame.items():
        out.append({"task": task_of.get(source, source), "path": None, "kind": "validation",
                    "message": f"{bv.command} exited {bv.exit_code}: "
                               f"{failure_summary(bv.log_tail)}"})
    if v is not None and not v.passed and not blame:
        out.append({"task": None, "path": None, "kind": "validation",
                    "message": f"{v.command} exited {v.exit_code} on the combined batch "
                               f"(no task fails it alone): {failure_summary(v.log_tail)}"})
    return out


def reasons_of(report: Any, task_of: dict[str, str], rejected: Sequence[str],
               landed_by: Mapping[str, Sequence[str]] | None = None) -> dict[str, str]:
    """One line per rejected task saying why *it* did not land."""
    own: dict[str, list[str]] = {}
    for c in conflicts_of(report, task_of, landed_by):
        if c["task"] is None:
            continue
        if c["kind"] == "validation":
            text = f"validation failed with it: {c['message']}"
        elif c.get("with") is not None:
            who = (f" with {', '.join(c['with'])}" if c["with"]
                   else " with a commit made on the target outside this run")
            text = f"conflict ({c['kind']}) in {c['path']}{who}"
        else:
            text = f"{c['kind']} in {c['path']}: {c['message']}"
        own.setdefault(c["task"], []).append(text)
    culprits = [task_of.get(s, s) for s in report.culprits]
    out: dict[str, str] = {}
    for t in rejected:
        if t in own:
            out[t] = "; ".join(own[t])
        elif culprits:
            out[t] = f"held back: its batch was rolled back because of {', '.join(culprits)}"
        elif report.validation is not None and not report.validation.passed:
            out[t] = "held back: validation failed on the combined batch"
        else:
            out[t] = "held back: its batch did not land"
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
    validator: Validator | None = None,
    validate_slots: int = 1,
    limits: ScreenLimits | None = None,
) -> Integrator:
    """An :data:`Integrator` over ``merge.merge_sources`` into ``target_ref``.  Each
    task's commit is screened first (:func:`forkyard.run.screen.screen`): one held back
    is rejected alone, the rest of its batch goes on."""
    from merge import merge_sources

    landed_by: dict[str, list[str]] = {}  # path -> tasks of this run that landed a change
    bounds = limits or ScreenLimits()

    def integrate(index: int, items: Sequence[BatchItem], tip: str) -> BatchOutcome:
        tasks = tuple(i.task for i in items)
        held: list[dict[str, Any]] = []
        for i in items:
            why = screen(repo, tip, i.task, i.commit, bounds, i.allow_deletes)
            if why is not None:
                held.append(why)
        out = {h["task"] for h in held}
        # Each one held back says why in its own words (its reason, as real conflicts do).
        screened = {h["task"]: f"screened out ({h['kind']}): "
                               + str(h["message"]).removesuffix("; held back") for h in held}
        items = [i for i in items if i.task not in out]
        if not items:
            return BatchOutcome(index, tasks, (), tasks, tip, tip, tuple(held),
                                reasons=screened)
        task_of = {i.branch: i.task for i in items}
        try:
            report = merge_sources(
                repo, target_ref, [i.branch for i in items], validate=validate,
                semantic=semantic, mode=mode, shas=[i.commit for i in items],
                message=f"forkyard {run_id}: batch {index}: merge {{source}}",
                validator=validator, validate_slots=validate_slots,
            )
        except Exception as exc:  # lock held, ref moved under us, engine bug: nothing landed
            error = describe(exc)
            return BatchOutcome(index, tasks, (), tasks, tip, tip, tuple(held), error,
                                {**{t: f"not integrated: {error}" for t in tasks}, **screened})
        new_tip = report.new_sha if report.outcome == "committed" and report.new_sha else tip
        if report.outcome == "committed":
            landed = tuple(task_of.get(s, s) for s in report.landed) if report.landed else (
                tuple(i.task for i in items if i.branch not in report.culprits))
        else:
            landed = ()
        rejected = tuple(t for t in tasks if t not in landed)
        old = report.target_sha or tip
        # (merge_sources also brings a checkout of the target along with the ref.)
        outcome = BatchOutcome(index, tasks, landed, rejected, old, new_tip,
                               (*held, *conflicts_of(report, task_of, landed_by)),
                               validation=(report.validation.model_dump(mode="json")
                                           if report.validation is not None else None),
                               reasons={**reasons_of(report, task_of,
                                                     [t for t in rejected if t not in out],
                                                     landed_by),
                                        **screened})
        for item in items:
            if item.task in landed:
                for path in item.files:
                    landed_by.setdefault(path, []).append(item.task)
        return outcome

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
        return BatchOutcome(index, tasks, landed, rejected, tip, new_tip, conflicts,
                            reasons={t: "conflict (planted)" for t in rejected})
