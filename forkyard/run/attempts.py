"""Every attempt's work stays reachable: one ref per attempt.

A task's branch ``forkyard/<run>/<task>`` holds its latest attempt only: a retry, or a
task run again by ``--resume``, starts the branch afresh from the current tip.  Before
that can happen, each attempt's commit is kept under
``refs/forkyard/attempts/<run>/<task>/<n>`` (outside ``refs/heads``: not a branch
anyone works on, but reachable, so git's gc keeps it) and named in the run JSON.
"""

from __future__ import annotations

from gitproc.git import Repo

ATTEMPTS_REF = "refs/forkyard/attempts"


def attempt_ref(run_id: str, task: str, n: int) -> str:
    """The ref keeping attempt ``n`` of ``task``'s commit reachable, whatever becomes of
    the task's branch (a retry or a resumed run starts it afresh)."""
    return f"{ATTEMPTS_REF}/{run_id}/{task}/{n}"


def keep_attempt(repo: Repo, run_id: str, task: str, n: int, commit: str | None) -> str | None:
    """Point :func:`attempt_ref` at ``commit``; the ref, or None when the
    attempt left no commit or the ref could not be written (the branch still holds it)."""
    if not commit:
        return None
    ref = attempt_ref(run_id, task, n)
    try:  # the git wrapper's in-process compare-and-swap (git's update-ref as its fallback)
        repo.update_ref(ref, commit, repo.ref_target(ref), "forkyard: keep an attempt's work",
                        durable=False)
    except Exception:
        return None
    return ref


def attempt_refs(repo: Repo, run_id: str, task: str) -> dict[int, str]:
    """The attempt refs of ``task`` in ``run_id``: attempt number -> commit."""
    prefix = f"{ATTEMPTS_REF}/{run_id}/{task}/"
    out = repo.out("for-each-ref", "--format=%(refname) %(objectname)", prefix)
    refs: dict[int, str] = {}
    for line in out.splitlines():
        name, _, sha = line.partition(" ")
        n = name.removeprefix(prefix)
        if n.isdigit():
            refs[int(n)] = sha
    return refs
