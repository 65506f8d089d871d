"""Audit a run against the commit graph: was every task's work integrated at most once, and
did every batch land whole?

The journal says what the run meant to do; the target's first-parent history says what
happened.  Used by the crash tests and ``bench/run_crash.py``; cheap enough to run after
any run (one ``git log``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from forkyard.journal.events import RunPaths
from forkyard.journal.state import RunManifest, load_view
from gitproc.git import Repo

# The subject forkyard/run/integrate.py gives each merge commit of a batch.
_SUBJECT = re.compile(r"^forkyard (?P<run>\S+): batch (?P<index>\d+): merge (?P<source>\S+)")


@dataclass(frozen=True)
class Audit:
    run_id: str
    integrations: dict[str, int]                 # task -> times its work was merged
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def audit_run(repo: Repo, run_id: str) -> Audit:
    """Check run ``run_id``'s integrations on its target (see the module docstring)."""
    paths = RunPaths.of(repo, run_id)
    manifest = RunManifest.load(paths)
    view = load_view(paths)
    commit_task: dict[str, str] = {}
    from forkyard.journal.events import read_events

    for ev in read_events(paths.events):
        if ev.type == "task_finished" and ev.get("commit"):
            commit_task[str(ev.get("commit"))] = str(ev.task)
    out = repo.out("log", "--first-parent", "--format=%H%x00%P%x00%s",
                   f"{manifest.target_sha_before}..{manifest.target_ref}")
    integrations = {t: 0 for t in view.tasks}
    problems: list[str] = []
    groups: dict[int, list[tuple[str, str | None]]] = {}
    order: list[int] = []
    for line in reversed(out.splitlines()):  # oldest first
        sha, parents, subject = line.split("\0", 2)
        m = _SUBJECT.match(subject)
        if m is None or m["run"] != run_id:
            continue
        ps = parents.split()
        task = commit_task.get(ps[1]) if len(ps) > 1 else None
        if len(ps) > 1 and task is None:
            problems.append(f"{sha[:10]} merges {ps[1][:10]}, which no task of the run produced")
        if task is not None:
            integrations[task] = integrations.get(task, 0) + 1
        index = int(m["index"])
        if index not in groups:
            if order and index in order:
                problems.append(f"batch {index} is not contiguous on the target")
            order.append(index)
            groups[index] = []
        groups[index].append((sha, task))
    for t, n in integrations.items():
        if n > 1:
            problems.append(f"task {t} was integrated {n} times")
    for index, merges in groups.items():
        landed = {t for _, t in merges if t}
        batch = view.batch(index)
        # A batch the journal saw land meant what it says landed; one a crash cut short
        # (no batch_committed event) meant every task it started with.
        expected = (set(batch.landed) if batch and batch.outcome == "committed"
                    else set(batch.tasks) if batch else landed)
        if landed != expected:
            problems.append(f"batch {index} landed {sorted(landed)} but meant {sorted(expected)}")
        if batch and batch.outcome == "committed" and batch.new_tip and batch.new_tip != merges[-1][0]:
            problems.append(f"batch {index} ends at {merges[-1][0][:10]}, journal says "
                            f"{batch.new_tip[:10]}")
    for tv in view.tasks.values():
        if tv.integrated and tv.commit and integrations.get(tv.id, 0) != 1:
            problems.append(f"task {tv.id} is reported integrated but merged "
                            f"{integrations.get(tv.id, 0)} times")
    return Audit(run_id, integrations, problems)
