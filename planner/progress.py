"""Progress of a running plan: three aggregates, bottlenecks and an ETA.

The run loop (``forkyard status``) calls::

    aggregate_progress(
        plan: Plan,
        progress: Mapping[str, TaskProgress | float | Mapping[str, Any]],
        elapsed: float = 0.0,
    ) -> ProgressSummary

``progress`` maps task ids to a :class:`TaskProgress` (state, fraction 0..1, minutes the
task has run), a bare fraction (``1.0`` means done), or a dict of TaskProgress fields;
tasks it does not mention are pending.  ``elapsed`` is the run's wall time so far.
Times are in the plan's unit (minutes).  Finished states (done, failed, skipped,
cancelled, timed_out, oom_killed) count as resolved: nothing is left to wait for.

The three aggregates, each 0..1:

- ``simple``: the mean fraction over tasks;
- ``weighted``: fractions weighted by duration (work done over total work);
- ``critical_path``: 1 - (remaining critical path / original critical path), the share
  of the unavoidable sequential time already behind us.

ETA = max(remaining critical path, remaining work / agents): the same lower bound the
planner uses, applied to what is left.  A bottleneck is an unfinished task whose
dependencies are resolved and which carries the most remaining downstream time, or a
running task past its estimate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from planner.plans import Plan

State = Literal["pending", "running", "done", "failed", "skipped", "cancelled", "timed_out", "oom_killed"]
FINISHED = frozenset({"done", "failed", "skipped", "cancelled", "timed_out", "oom_killed"})


class TaskProgress(BaseModel):
    """What one agent reports about its task."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    state: State = "pending"
    fraction: float | None = Field(None, ge=0.0, le=1.0, description="Share done, if known.")
    elapsed: float = Field(0.0, ge=0.0, description="Minutes this task has run.")


class Bottleneck(BaseModel):
    model_config = ConfigDict(frozen=True)

    task: str
    reason: str
    remaining_path: float = Field(description="Remaining minutes from this task to the end.")


class ProgressSummary(BaseModel):
    """Aggregated progress of a plan; see the module docstring."""

    model_config = ConfigDict(frozen=True)

    simple: float
    weighted: float
    critical_path: float
    total_work: float
    remaining_work: float
    remaining_critical_path: float
    eta: float = Field(description="Estimated minutes until every task is resolved.")
    elapsed: float
    projected_total: float = Field(description="elapsed + eta")
    counts: dict[str, int]
    bottlenecks: list[Bottleneck]
    remaining: dict[str, float] = Field(description="Remaining minutes per task.")


def _coerce(value: TaskProgress | float | Mapping[str, Any]) -> TaskProgress:
    if isinstance(value, TaskProgress):
        return value
    if isinstance(value, int | float):
        f = max(0.0, min(1.0, float(value)))
        return TaskProgress(state="done" if f >= 1.0 else ("running" if f > 0 else "pending"),
                            fraction=f)
    return TaskProgress.model_validate(dict(value))


def aggregate_progress(
    plan: Plan,
    progress: Mapping[str, TaskProgress | float | Mapping[str, Any]],
    elapsed: float = 0.0,
) -> ProgressSummary:
    """Aggregate per-task progress for ``plan`` (signature and meaning: module docstring)."""
    unknown = sorted(set(progress) - set(plan.durations))
    if unknown:
        raise KeyError(f"progress for task(s) not in the plan: {', '.join(unknown)}")
    ids = list(plan.durations)
    dur = plan.durations
    states = {t: _coerce(progress[t]) if t in progress else TaskProgress() for t in ids}
    fraction: dict[str, float] = {}
    remaining: dict[str, float] = {}
    overrun: dict[str, float] = {}
    for t, p in states.items():
        d = dur[t]
        if p.state in FINISHED:
            fraction[t], remaining[t] = 1.0, 0.0
        elif p.state == "pending":
            fraction[t], remaining[t] = p.fraction or 0.0, d * (1 - (p.fraction or 0.0))
        else:
            if p.fraction is not None:
                f = p.fraction
            else:
                f = min(p.elapsed / d, 0.99) if d > 0 else 0.0
            fraction[t] = f
            remaining[t] = d * (1 - f)
            if p.elapsed > d:
                overrun[t] = p.elapsed / d
    total = sum(dur.values())
    n = len(ids)
    # Remaining bottom levels over what is left, in reverse topological order.
    deps = plan.dependencies
    succs: dict[str, list[str]] = {t: [] for t in ids}
    for t, ds in deps.items():
        for dep in ds:
            succs[dep].append(t)
    rbl: dict[str, float] = {}
    for t in _reverse_topo(ids, succs):
        rbl[t] = remaining[t] + max((rbl[s] for s in succs[t]), default=0.0)
    remaining_cp = max(rbl.values(), default=0.0)
    remaining_work = sum(remaining.values())
    eta = max(remaining_cp, remaining_work / plan.agents) if plan.agents else remaining_work
    cp0 = plan.critical_path_length
    ready = [t for t in ids if states[t].state not in FINISHED
             and all(states[d].state in FINISHED for d in deps.get(t, []))]
    bottlenecks: list[Bottleneck] = []
    pos = {t: k for k, t in enumerate(ids)}
    for t in sorted(ready, key=lambda x: (-rbl[x], pos[x]))[:3]:
        if rbl[t] <= 0:
            continue
        waiting = len(succs[t])
        why = (f"on the remaining critical path ({rbl[t]:g} min)" if rbl[t] >= remaining_cp - 1e-9
               else f"{rbl[t]:g} min of work hangs on it")
        if waiting:
            why += f"; {waiting} task(s) wait on it"
        bottlenecks.append(Bottleneck(task=t, reason=why, remaining_path=round(rbl[t], 6)))
    listed = {b.task for b in bottlenecks}
    for t, ratio in sorted(overrun.items(), key=lambda kv: -kv[1]):
        if t not in listed:
            bottlenecks.append(Bottleneck(task=t, reason=f"running {ratio:.0%} of its estimate",
                                          remaining_path=round(rbl[t], 6)))
        else:
            bottlenecks = [b if b.task != t else b.model_copy(
                update={"reason": b.reason + f"; running {ratio:.0%} of its estimate"})
                for b in bottlenecks]
    counts: dict[str, int] = {}
    for p in states.values():
        counts[p.state] = counts.get(p.state, 0) + 1
    return ProgressSummary(
        simple=round(sum(fraction.values()) / n, 6) if n else 1.0,
        weighted=round(sum(fraction[t] * dur[t] for t in ids) / total, 6) if total else 1.0,
        critical_path=round(max(0.0, 1 - remaining_cp / cp0), 6) if cp0 else 1.0,
        total_work=total,
        remaining_work=round(remaining_work, 6),
        remaining_critical_path=round(remaining_cp, 6),
        eta=round(eta, 6),
        elapsed=elapsed,
        projected_total=round(elapsed + eta, 6),
        counts=counts,
        bottlenecks=bottlenecks,
        remaining={t: round(v, 6) for t, v in remaining.items()},
    )


def _reverse_topo(ids: list[str], succs: Mapping[str, list[str]]) -> list[str]:
    """Tasks with every successor before them (the plan's graph is a DAG)."""
    out: list[str] = []
    state: dict[str, int] = {}
    for root in ids:
        if root in state:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        state[root] = 1
        while stack:
            t, k = stack.pop()
            if k < len(succs[t]):
                stack.append((t, k + 1))
                s = succs[t][k]
                if s not in state:
                    state[s] = 1
                    stack.append((s, 0))
            else:
                out.append(t)
    return out
