"""``--validate CMD``: run a command on merged trees, and find who broke a batch.

The merge engine does not decide *where* a validation runs: a :data:`Validator` is any
callable from a commit sha to a :class:`~merge.models.Validation`.  The application gives
one that runs the command in a sandbox of that commit (``forkyard.run.validation``);
:func:`host_validator` is the plain library default, a throwaway worktree on this host
(no confinement: use it only for commands you trust).

:class:`ValidationPool` runs a validator on several candidates at once (``slots`` at a
time) and remembers each result by the candidate's *tree*: what a command sees is the
tree, so a prefix of a batch rebuilt on the same tip is never validated twice.
:func:`search` finds the source that broke a batch the way merge queues do: candidate
prefixes and "the batch without X" results are validated speculatively in parallel,
so with free slots one bad source delays the good ones by about one validation instead
of log2(n) of them.

A validator may also be :class:`Speculative`: told how many validations are coming
(:meth:`~Speculative.expect`), it makes their sandboxes while the current round runs,
and it cleans up after a validation in the background until :meth:`~Speculative.drain`;
the pool passes both on, and a transaction drains before it returns.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from gitproc.git import WORKTREE_ADMIN_LOCK, Repo
from gitproc.process import background_priority, run
from merge.models import Validation

DEFAULT_TIMEOUT_S = 900.0
#: How long the caller's own work during a round waits for the round's commands to start.
STARTS_WAIT_S = 1.0
TAIL_LINES = 60

#: A commit sha -> what the validation command said about that commit's tree.
Validator = Callable[[str], Validation]


@runtime_checkable
class Speculative(Protocol):
    """A :data:`Validator` that works ahead and cleans up behind."""

    def __call__(self, commit: str) -> Validation: ...

    def expect(self, count: int, near: str) -> None:
        """``count`` validations (those asked now included) are likely soon, of commits
        close to ``near``: have that many sandboxes made or being made."""

    def drain(self) -> None:
        """Wait until everything made for validations so far is gone (clean-up and
        sandboxes made ahead and not used): nothing is left when this returns."""

    @property
    def launched(self) -> int:
        """Validations so far whose command started (or that ended before it could)."""

    def wait_launched(self, count: int, timeout: float) -> None:
        """Wait until :attr:`launched` is ``count`` or more, at most ``timeout`` s."""


def tail(data: bytes | str, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of a command's output."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


_MARKERS = ("FAILED ", "ERROR ", "FAIL:", "ERROR:", "Error:", "error:", "Traceback", "E   ")


def failure_summary(log: str, limit: int = 6) -> str:
    """The lines of a failed validation's log that say *what* failed (pytest's
    ``FAILED tests/x.py::test_y``, an ``Error:`` line...), else its last lines: a
    message cut to its tail must not lose the failing test's name."""
    lines = [ln.rstrip() for ln in log.splitlines() if ln.strip()]
    picked = [ln for ln in lines if ln.lstrip().startswith(_MARKERS)]
    if not picked:
        picked = lines[-limit:]
    shown = picked[:limit]
    more = len(picked) - len(shown)
    return "\n".join(shown) + (f"\n(+{more} more)" if more > 0 else "")


def run_on_commit(
    repo: Repo, commit: str, command: str, *, timeout: float = DEFAULT_TIMEOUT_S,
    env: Mapping[str, str] | None = None,
) -> Validation:
    """Run ``command`` (a shell command line) in a scratch checkout of ``commit`` on this
    host, unconfined, in its own process group (a timeout kills everything it started)."""
    scratch = repo.forkyard_dir / "scratch" / f"validate-{uuid.uuid4().hex[:12]}"
    scratch.parent.mkdir(parents=True, exist_ok=True)
    with WORKTREE_ADMIN_LOCK:  # validations run in parallel: git's admin dir is not safe
        repo.git("worktree", "add", "--quiet", "--detach", str(scratch), commit)
    try:
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        child_env.update(env or {})
        child_env["FORKYARD_VALIDATE_COMMIT"] = commit
        r = run(["/bin/sh", "-c", command], cwd=scratch, env=child_env, timeout=timeout,
                check=False)
        log = tail(r.stdout + (b"\n" if r.stdout and r.stderr else b"") + r.stderr)
        if r.timed_out:
            log += f"\n[forkyard] validation timed out after {timeout:g}s"
            return Validation(command=command, passed=False, exit_code=None, log_tail=log)
        return Validation(command=command, passed=r.returncode == 0, exit_code=r.returncode,
                          log_tail=log)
    finally:
        with WORKTREE_ADMIN_LOCK:
            repo.git("worktree", "remove", "--force", "--force", str(scratch), check=False)
            if Path(scratch).exists():
                shutil.rmtree(scratch, ignore_errors=True)
                repo.git("worktree", "prune", check=False)


def host_validator(repo: Repo, command: str, *, timeout: float = DEFAULT_TIMEOUT_S) -> Validator:
    """A :data:`Validator` running ``command`` unconfined on this host (the library
    default; forkyard's commands use the sandboxed one)."""
    return lambda commit: run_on_commit(repo, commit, command, timeout=timeout)


@dataclass(frozen=True)
class Candidate:
    """One commit to validate; ``key`` is its tree (what the command sees)."""

    key: str
    commit: str


class ValidationPool:
    """A validator run on candidates ``slots`` at a time, its results kept by tree."""

    def __init__(self, validator: Validator, slots: int = 1) -> None:
        self.validator = validator
        self.slots = max(1, slots)
        self._ahead = validator if isinstance(validator, Speculative) else None
        self.results: dict[str, Validation] = {}
        self.rounds = 0
        """How many rounds of (parallel) validations ran: the latency a batch paid."""

    def known(self, key: str) -> Validation | None:
        return self.results.get(key)

    def expect(self, count: int, near: str) -> None:
        """Tell a :class:`Speculative` validator what is coming (else nothing)."""
        if self._ahead is not None and count > 0:
            self._ahead.expect(count, near)

    def drain(self) -> None:
        """Wait for a :class:`Speculative` validator's clean-up (else nothing)."""
        if self._ahead is not None:
            self._ahead.drain()

    def run(self, candidates: Sequence[Candidate], ahead: int = 0,
            meanwhile: Sequence[Callable[[], object]] = ()) -> None:
        """Validate every candidate not validated yet, up to ``slots`` at once;
        ``ahead``: how many more a next round may ask (made while this one runs);
        ``meanwhile``: jobs run on this thread while the validations run in parallel,
        one at a time until they are all done (a job that fails is left to be done
        again when it is needed)."""
        todo: dict[str, str] = {}
        for c in candidates:
            if c.key not in self.results:
                todo.setdefault(c.key, c.commit)
        if not todo:
            return
        self.rounds += 1
        # This round's sandboxes first (made ahead, or now), then the next round's.
        self.expect(min(len(todo), self.slots) + ahead, next(iter(todo.values())))
        if len(todo) == 1 or self.slots == 1:
            for key, commit in todo.items():
                self.results[key] = self.validator(commit)
            return
        launched = self._ahead.launched if self._ahead is not None else 0
        with ThreadPoolExecutor(max_workers=min(self.slots, len(todo)),
                                thread_name_prefix="validate") as pool:
            futures = {key: pool.submit(self.validator, commit) for key, commit in todo.items()}
            if meanwhile and self._ahead is not None:
                # The round's own start first: on a few CPUs (and one GIL) the jobs would
                # delay every sandbox of it.
                self._ahead.wait_launched(launched + min(len(todo), self.slots), STARTS_WAIT_S)
            with background_priority():  # (the commands' own start still comes first)
                for job in meanwhile:
                    if all(f.done() for f in futures.values()):
                        break
                    with contextlib.suppress(Exception):
                        job()
            for key, fut in futures.items():
                self.results[key] = fut.result()


def evenly(items: Sequence[int], k: int) -> list[int]:
    """``k`` of ``items`` spread evenly (all of them when there are no more than ``k``)."""
    if k <= 0:
        return []
    if len(items) <= k:
        return list(items)
    return [items[(j + 1) * len(items) // (k + 1)] for j in range(k)]


@dataclass(frozen=True)
class Found:
    """What :func:`search` found: the full batch's validation, and (if it failed) the
    index of the source to blame (None: the target itself fails) with the validation
    that blamed it."""

    full: Validation
    culprit: int | None = None
    evidence: Validation | None = None


def search(pool: ValidationPool, prefixes: Sequence[Candidate],
           without: Callable[[int], Candidate]) -> Found:
    """Find the first source whose merge breaks validation.

    ``prefixes[0]`` is the target's tip, ``prefixes[i]`` the batch after its ``i``-th
    source; ``without(i)`` builds the batch without source ``i`` (1-based).  Each round
    validates up to ``pool.slots`` candidates at once: while the suspects are more than
    the free slots, prefixes spread evenly over the interval still in doubt (a k-ary
    search); once they fit, the batch without each suspect, so that the round that names
    the culprit has also validated what lands without it.  A first round that two
    rounds can follow to the end also validates the batch without its last source and,
    room left, without its first (:func:`_opening`): a culprit at either end then costs
    one round.  Validation is assumed monotone along the prefixes (a prefix that passes
    means every shorter one does).
    """
    n = len(prefixes) - 1
    built: dict[int, Candidate] = {}

    def without_(c: int) -> Candidate:
        if c not in built:
            built[c] = without(c)
        return built[c]

    while True:
        full = pool.known(prefixes[n].key)
        if full is not None and full.passed:
            return Found(full)
        failing = [i for i in range(n + 1) if _ok(pool, prefixes[i]) is False]
        hi = min(failing) if failing else None
        if hi == 0:  # the target fails on its own: nobody to blame
            return Found(full or pool.results[prefixes[0].key])
        lo = max((i for i in range(n + 1) if _ok(pool, prefixes[i]) is True
                  and (hi is None or i < hi)), default=-1)
        suspects = list(range(max(lo + 1, 1), hi + 1)) if hi is not None else []
        if full is not None and hi is not None:
            if hi == lo + 1:
                return Found(full, hi, pool.results[prefixes[hi].key])
            for c in suspects:
                v = pool.known(without_(c).key) if c in built else None
                if v is not None and v.passed:
                    return Found(full, c, pool.known(prefixes[c].key) or full)
        want: list[Candidate] = [] if full is not None else [prefixes[n]]
        room = pool.slots - len(want)
        upper = hi if hi is not None else n
        opening = (None if full is not None or any(pool.known(c.key) for c in prefixes)
                   else _opening(n, pool.slots))
        if opening is not None:
            points, first = opening
            want += [prefixes[i] for i in points] + ([without_(1)] if first else [])
        else:
            if suspects and len(suspects) <= pool.slots:
                for c in suspects:
                    cand = without_(c)
                    if room > 0 and pool.known(cand.key) is None:
                        want.append(cand)
                        room -= 1
            inside = [i for i in range(lo + 1, upper) if pool.known(prefixes[i].key) is None]
            want += [prefixes[i] for i in evenly(inside, max(room, 0 if want else 1))]
        assert want, "an unresolved search always has a prefix left to validate"
        # A round validating the batch without each suspect settles a single culprit;
        # any other may need a next round, whose sandboxes are made meanwhile.
        settles = bool(suspects) and all(
            c in built and (pool.known(built[c].key) is not None or built[c] in want)
            for c in suspects)
        # Meanwhile, the batches without each source that a next round may validate:
        # those in a gap between this round's prefixes small enough to fit the slots.
        probes = sorted({max(lo, 0), upper, *(i for i in range(n + 1) if prefixes[i] in want)})
        later = [] if settles else [
            c for a, b in itertools.pairwise(probes) if b - a <= pool.slots
            for c in range(a + 1, b + 1) if c not in built]
        pool.run(want, ahead=0 if settles else pool.slots,
                 meanwhile=[functools.partial(without_, c) for c in later])


def _opening(n: int, slots: int) -> tuple[list[int], bool] | None:
    """Round one of a search over ``n`` sources with nothing known, when two rounds
    settle any single culprit: (the prefixes to validate beside the full batch, whether
    to validate the batch without its first source too); None: the plain k-ary round.

    Prefix ``n - 1`` is the batch without its last source, and the batch without the
    first one takes a slot when the rest still fits: if the culprit is either of them,
    what lands is validated in round one.  The other prefixes cut sources ``1..n-1``
    into stretches of at most ``slots``, so that round two can validate the batch
    without each suspect of the stretch that failed, as a plain round one would allow."""
    if slots < 3 or not 3 <= n <= slots * slots:
        return None
    for first in (True, False):
        k = slots - 2 - first  # prefixes beside the full batch and prefix n - 1
        if k < 0:
            continue
        ends = [(j + 1) * (n - 1) // (k + 1) for j in range(k)]
        if all(0 < b - a <= slots for a, b in itertools.pairwise([0, *ends, n - 1])):
            return [*ends, n - 1], first
    return None


def _ok(pool: ValidationPool, c: Candidate) -> bool | None:
    v = pool.known(c.key)
    return None if v is None else v.passed
