"""``--validate CMD``: run a command on a merged tree in a throwaway worktree.

The worktree is detached at the (unreferenced) merge commit under
``.git/forkyard/scratch/`` and removed afterwards, so validation never touches the
user's checkout or the target branch.  The command runs through the one process
wrapper, in its own process group, so a timeout kills everything it started.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from gitproc.git import Repo
from gitproc.process import run
from merge.models import Validation

DEFAULT_TIMEOUT_S = 900.0
TAIL_LINES = 40


@dataclass(frozen=True)
class ValidationRun:
    commit: str
    passed: bool
    exit_code: int | None
    log_tail: str


def _tail(data: bytes, lines: int = TAIL_LINES) -> str:
    text = data.decode("utf-8", "replace")
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def run_on_commit(
    repo: Repo, commit: str, command: str, *, timeout: float = DEFAULT_TIMEOUT_S,
    env: Mapping[str, str] | None = None,
) -> ValidationRun:
    """Run ``command`` (a shell command line) in a scratch checkout of ``commit``."""
    scratch = repo.forkyard_dir / "scratch" / f"validate-{uuid.uuid4().hex[:12]}"
    scratch.parent.mkdir(parents=True, exist_ok=True)
    repo.git("worktree", "add", "--quiet", "--detach", str(scratch), commit)
    try:
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        child_env.update(env or {})
        child_env["FORKYARD_VALIDATE_COMMIT"] = commit
        r = run(["/bin/sh", "-c", command], cwd=scratch, env=child_env, timeout=timeout,
                check=False)
        tail = _tail(r.stdout + (b"\n" if r.stdout and r.stderr else b"") + r.stderr)
        if r.timed_out:
            tail += f"\n[forkyard] validation timed out after {timeout:g}s"
            return ValidationRun(commit, False, None, tail)
        return ValidationRun(commit, r.returncode == 0, r.returncode, tail)
    finally:
        repo.git("worktree", "remove", "--force", "--force", str(scratch), check=False)
        if Path(scratch).exists():
            import shutil

            shutil.rmtree(scratch, ignore_errors=True)
            repo.git("worktree", "prune", check=False)


def validate(
    repo: Repo, commit: str, command: str, *, timeout: float = DEFAULT_TIMEOUT_S,
    attribute: Sequence[tuple[str, str]] = (),
) -> Validation:
    """Validate the merged ``commit``; on failure optionally run ``command`` on each
    ``(source name, sha)`` of ``attribute`` alone and name those that fail by themselves.

    ``attributed_to == []`` then means every source passes alone: the merge broke it.
    """
    result = run_on_commit(repo, commit, command, timeout=timeout)
    attributed: list[str] | None = None
    if not result.passed and attribute:
        attributed = [
            name for name, sha in attribute
            if not run_on_commit(repo, sha, command, timeout=timeout).passed
        ]
    return Validation(command=command, passed=result.passed, exit_code=result.exit_code,
                      log_tail=result.log_tail, attributed_to=attributed)
