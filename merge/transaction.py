"""Transactional batches: merge sources in memory, validate, then move the target by CAS.

A batch applies each source in order onto the running result (one two-parent merge
commit per source, or one single-parent commit with ``squash``), all as unreferenced
objects.  Only when the whole batch is acceptable does the target ref move, by
compare-and-swap from the tip the batch started from, after a journal entry is durable.
If the ref moved meanwhile the batch is recomputed on the new tip (bounded retries).

Modes: ``conservative`` lands everything or nothing; ``bisect`` drops the sources that
conflict, add semantic errors or fail validation, lands the largest in-order group that
remains, and names the culprits.  Sources always stay on their own branches.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pygit2

from gitproc.git import IDENTITY, RefMovedError, Repo, UnknownRefError, require_git
from gitproc.lock import integration_lock
from merge import journal
from merge.conflicts import overlaps, touched_paths
from merge.errors import (
    BadInputError,
    DirtyWorktreeError,
    RetriesExhaustedError,
    TargetNotBranchError,
    UnrelatedHistoriesError,
)
from merge.fastpath import (
    Changes,
    apply_changes,
    merge_bases,
    tree_changes,
    trivially_mergeable,
)
from merge.models import MergeReport, Mode, Outcome, SourceMerge, Validation
from merge.semantic import Analyzer, default_analyzers
from merge.tree_merge import TreeMerge, merge_commits
from merge.validate import (
    DEFAULT_TIMEOUT_S,
    Candidate,
    Found,
    ValidationPool,
    Validator,
    host_validator,
    search,
)


@dataclass(frozen=True)
class _Source:
    name: str
    sha: str


@dataclass(frozen=True)
class _Step:
    """One source merged onto the running result."""

    base: str | None
    result: TreeMerge | None
    """None when the source is already contained in the running result."""
    changes: tuple[Changes, Changes] | None = None
    """Ours' and theirs' changes against ``base`` (None: not computed)."""
    merged: Changes | None = None
    """The result's changes against ``base``, when the fast path made it."""


@dataclass
class _Pass:
    """One in-memory application of a group of sources onto a tip."""

    merges: dict[str, SourceMerge] = field(default_factory=dict)
    applied: list[_Source] = field(default_factory=list)
    commits: list[str] = field(default_factory=list)
    """The running result after each applied source (same order as ``applied``)."""
    rejected: list[str] = field(default_factory=list)


_Outcome = tuple[list[SourceMerge], list[str], list[str], str | None, Validation | None,
                 dict[str, Validation]]
"""merges, landed, culprits, new commit, the batch's validation, blame by source."""


class Transaction:
    """One batch: ``Transaction(repo, "main", ["a", "b"]).run()`` -> :class:`MergeReport`."""

    def __init__(
        self,
        repo: Repo | str | os.PathLike[str],
        into: str,
        sources: Sequence[str],
        *,
        dry_run: bool = False,
        validate: str | None = None,
        semantic: bool = True,
        squash: bool = False,
        mode: Mode | str = "conservative",
        message: str | None = None,
        shas: Sequence[str] | None = None,
        max_retries: int = 3,
        lock_timeout: float | None = None,
        validate_timeout: float = DEFAULT_TIMEOUT_S,
        validator: Validator | None = None,
        validate_slots: int = 1,
    ) -> None:
        if mode not in ("conservative", "bisect"):
            raise BadInputError(f"unknown mode {mode!r} (conservative|bisect)")
        if not sources:
            raise BadInputError("nothing to merge: give at least one source")
        self.repo = repo if isinstance(repo, Repo) else Repo(repo)
        self.into = into
        self.source_names = list(sources)
        # The exact commits the sources stand for (e.g. recorded when a task finished):
        # merged as given, whatever the names point at by the time the batch runs.
        self.shas = None if shas is None else list(shas)
        if self.shas is not None and len(self.shas) != len(self.source_names):
            raise BadInputError("one commit per source, or none")
        self.dry_run = dry_run
        self.command = validate
        self.semantic = semantic
        self.squash = squash
        self.mode = mode
        self.message = message
        self.max_retries = max_retries
        self.lock_timeout = lock_timeout
        self.validate_timeout = validate_timeout
        # Where the command runs is the caller's choice (forkyard runs it in a sandbox of
        # the merged commit); the library default is a scratch checkout on this host.
        self._pool: ValidationPool | None = None
        if validate is not None:
            self._pool = ValidationPool(
                validator or host_validator(self.repo, validate, timeout=validate_timeout),
                validate_slots)
        # One analyser for the whole batch: it caches parsed files across sources.
        self._analyzers: list[Analyzer] = default_analyzers()
        # Tree diffs by (base commit, commit); results made by the fast path are
        # recorded from their inputs instead of diffed again.
        self._diffs: dict[tuple[str, str], Changes] = {}
        self.landed_at: float | None = None  # time.monotonic() when the target ref moved
        self._passes: dict[tuple[str, tuple[_Source, ...]], _Pass] = {}

    # -- entry point -------------------------------------------------------------

    def run(self) -> MergeReport:
        """Compute the batch and, unless a dry run, land it (or not) atomically.  A
        validator's background clean-up is over when this returns, whatever happened."""
        try:
            return self._run()
        finally:
            if self._pool is not None:
                self._pool.drain()

    def _run(self) -> MergeReport:
        require_git()  # (git's version is asked once per process)
        repo = self.repo
        # Resolve everything first: bad input changes nothing.
        sources = [_Source(n, sha) for n, sha in zip(
            self.source_names,
            resolve_commits(repo, self.shas if self.shas is not None else self.source_names),
            strict=True)]
        if self.dry_run:
            return self._report(repo.rev_parse(self.into), sources, outcome="dry_run")
        ref = repo.full_ref(self.into)
        if ref is None:
            repo.rev_parse(self.into)  # raises UnknownRefError for a name that means nothing
            raise TargetNotBranchError(self.into)
        if not ref.startswith("refs/heads/"):
            raise TargetNotBranchError(self.into)
        with integration_lock(repo.forkyard_dir, self.lock_timeout):
            journal.recover(repo)
            for attempt in range(self.max_retries + 1):
                tip = self._tip(ref)
                report = self._report(tip, sources, outcome="committed")
                if report.new_sha in (None, tip) or report.outcome != "committed":
                    return report  # rolled back, or nothing new to land
                try:
                    self._land(ref, tip, report)
                    return report
                except RefMovedError as exc:
                    if attempt == self.max_retries:
                        raise RetriesExhaustedError(ref, tip, exc.actual) from exc
        raise AssertionError("unreachable")

    # -- computing a batch in memory --------------------------------------------

    def _commit(self, tree: str, ours: str, src: _Source) -> str:
        import pygit2

        sig = pygit2.Signature(IDENTITY["GIT_COMMITTER_NAME"], IDENTITY["GIT_COMMITTER_EMAIL"])
        # A caller's message names each commit's own source through "{source}": a batch
        # message must not claim a source that bisect later leaves out.
        custom = self.message.replace("{source}", src.name) if self.message else None
        if self.squash:
            summary = self.repo.odb[src.sha].peel(pygit2.Commit).message
            msg = custom or f"{src.name} (squashed by forkyard)\n\n{summary}"
            parents = [ours]
        else:
            msg = custom or f"Merge {src.name} into {self.into}\n"
            parents = [ours, src.sha]
        oid = self.repo.odb.create_commit(None, sig, sig, msg, pygit2.Oid(hex=tree),
                                          [pygit2.Oid(hex=p) for p in parents])
        return str(oid)

    def _merge_base(self, a: str, b: str) -> str | None:
        oid = self.repo.odb.merge_base(a, b)
        return str(oid) if oid is not None else None

    def _tip(self, ref: str) -> str:
        """The commit ``ref`` points at, read in process (under the lock, every attempt)."""
        try:
            return str(self.repo.odb.references[ref].resolve().peel(pygit2.Commit).id)
        except (KeyError, pygit2.GitError):
            return self.repo.rev_parse(ref)

    def _changes(self, base: str, commit: str) -> Changes:
        key = (base, commit)
        if key not in self._diffs:
            odb = self.repo.odb
            self._diffs[key] = tree_changes(odb[base].peel(pygit2.Commit).tree,
                                            odb[commit].peel(pygit2.Commit).tree)
        return self._diffs[key]

    def _merge_one(self, cur: str, src: _Source) -> _Step:
        """Merge ``src`` onto ``cur``.  Trivial merges are done in process
        (:mod:`merge.fastpath`), everything else by merge-tree."""
        odb = self.repo.odb
        bases = merge_bases(odb, cur, src.sha)
        if bases == [src.sha]:
            return _Step(src.sha, None)
        if not bases:
            raise UnrelatedHistoriesError(src.name, self.into)
        if len(bases) != 1:
            # Criss-cross histories: merge-ort's virtual base decides.
            tm = merge_commits(self.repo, cur, src.sha, labels=(self.into, src.name))
            return _Step(self._merge_base(cur, src.sha), tm)
        base = bases[0]
        ours, theirs = self._changes(base, cur), self._changes(base, src.sha)
        if trivially_mergeable(ours, theirs):
            tree = apply_changes(odb, odb[cur].peel(pygit2.Commit).tree, theirs)
            merged = Changes({**ours.entries, **theirs.entries}, frozenset(),
                             {**ours.old, **theirs.old})
            return _Step(base, TreeMerge(tree, clean=True), (ours, theirs), merged)
        tm = merge_commits(self.repo, cur, src.sha, labels=(self.into, src.name))
        return _Step(base, tm, (ours, theirs))

    def _apply(self, tip: str, group: Sequence[_Source]) -> _Pass:
        """Merge ``group`` in order onto ``tip``; a source that conflicts (or, in bisect
        mode, adds a semantic error) is not applied, later ones go onto the last good result.
        Remembered: the group the search validated without its culprit is what lands."""
        key = (tip, tuple(group))
        if key not in self._passes:
            self._passes[key] = self._apply_now(tip, group)
        return self._passes[key]

    def _apply_now(self, tip: str, group: Sequence[_Source]) -> _Pass:
        from merge.semantic import analyze

        p = _Pass()
        cur = tip
        for src in group:
            step = self._merge_one(cur, src)
            base, tm = step.base, step.result
            if tm is None:
                # Already contained in the target: nothing to merge, nothing to commit.
                tree = str(self.repo.odb[cur].peel(pygit2.Commit).tree.id)
                p.merges[src.name] = SourceMerge(source=src.name, source_sha=src.sha,
                                                 base_sha=base, status="clean", tree=tree)
                continue
            findings = (analyze(self.repo, base, cur, src.sha, ours_label=self.into,
                                theirs_label=src.name, analyzers=self._analyzers,
                                changes=step.changes) if self.semantic else [])
            sm = SourceMerge(
                source=src.name, source_sha=src.sha, base_sha=base,
                status="clean" if tm.clean else "conflict",
                tree=tm.tree if tm.clean else None,
                conflicts=list(tm.conflicts), semantic=findings,
            )
            p.merges[src.name] = sm
            if not tm.clean or (self.mode == "bisect" and sm.has_errors):
                p.rejected.append(src.name)
                continue
            cur = self._commit(tm.tree, cur, src)
            if step.merged is not None and base is not None:
                self._diffs[(base, cur)] = step.merged
            p.applied.append(src)
            p.commits.append(cur)
        return p

    def _candidate(self, commit: str) -> Candidate:
        return Candidate(str(self.repo.odb[commit].peel(pygit2.Commit).tree.id), commit)

    def _validate(self, commit: str) -> Validation:
        assert self._pool is not None
        cand = self._candidate(commit)
        self._pool.run([cand])
        return self._pool.results[cand.key]

    @property
    def validation_rounds(self) -> int:
        """Rounds of (parallel) validation this transaction waited for."""
        return self._pool.rounds if self._pool is not None else 0

    def _report(self, tip: str, sources: Sequence[_Source], outcome: Outcome) -> MergeReport:
        touched = []
        for s in sources:
            base = self._merge_base(tip, s.sha)
            paths = (self._changes(base, s.sha).paths if base is not None
                     else touched_paths(self.repo, None, s.sha))
            touched.append((s.name, paths))
        ovl = overlaps(touched) if len(sources) > 1 else []
        if self.mode == "bisect":
            merges, landed, culprits, new, validation, blame = self._bisect(tip, sources)
        else:
            merges, landed, culprits, new, validation, blame = self._conservative(tip, sources)
        if outcome == "committed" and not landed:
            outcome, new = "rolled_back", None
        return MergeReport(
            target=self.into, target_sha=tip, outcome=outcome,
            new_sha=new, merges=merges, overlaps=ovl, validation=validation,
            landed=landed, culprits=culprits, blame=blame,
        )

    def _conservative(self, tip: str, sources: Sequence[_Source]) -> _Outcome:
        p = self._apply(tip, sources)
        merges = [p.merges[s.name] for s in sources]
        culprits = [m.source for m in merges if m.has_errors]
        if culprits:
            return merges, [], culprits, None, None, {}
        new = p.commits[-1] if p.commits else tip
        validation = None
        if self._pool is not None:
            validation = self._validate(new)
            if not validation.passed:
                # Blame: each source validated alone (at its own commit), all at once.
                blame: dict[str, Validation] = {}
                if len(p.applied) > 1:
                    alone = {s.name: self._candidate(s.sha) for s in p.applied}
                    self._pool.run(list(alone.values()))
                    blame = {n: v for n, c in alone.items()
                             if not (v := self._pool.results[c.key]).passed}
                elif p.applied:
                    blame = {p.applied[0].name: validation}
                validation = validation.model_copy(update={"attributed_to": list(blame)})
                return merges, [], list(blame), None, validation, blame
        return merges, [s.name for s in sources], [], new, validation, {}

    def _bisect(self, tip: str, sources: Sequence[_Source]) -> _Outcome:
        group = list(sources)
        culprits: list[str] = []
        blame: dict[str, Validation] = {}
        kept: dict[str, SourceMerge] = {}
        validation: Validation | None = None
        while True:
            p = self._apply(tip, group)
            for name in p.rejected:
                kept[name] = p.merges[name]
                culprits.append(name)
            group = [s for s in group if s.name not in p.rejected]
            new = p.commits[-1] if p.commits else tip
            if self._pool is None or not p.applied:
                break
            found = self._search(tip, p, group)
            validation = found.full
            if validation.passed:
                break
            if found.culprit is None:
                # The target fails on its own: no source can be blamed, none can land.
                for s in group:
                    kept[s.name] = p.merges[s.name]
                return self._ordered(sources, kept), [], [], None, validation, {}
            bad = p.applied[found.culprit - 1]
            kept[bad.name] = p.merges[bad.name]
            culprits.append(bad.name)
            blame[bad.name] = found.evidence or validation
            group = [s for s in group if s.name != bad.name]
        for s in group:
            kept[s.name] = p.merges[s.name]
        landed = [s.name for s in p.applied]
        return (self._ordered(sources, kept), landed, culprits, (new if landed else None),
                validation, blame)

    def _search(self, tip: str, p: _Pass, group: Sequence[_Source]) -> Found:
        """Which applied source breaks validation (see :func:`merge.validate.search`)."""
        assert self._pool is not None
        prefixes = [self._candidate(c) for c in [tip, *p.commits]]

        def without(i: int) -> Candidate:
            skip = p.applied[i - 1].name
            q = self._apply(tip, [s for s in group if s.name != skip])
            return self._candidate(q.commits[-1] if q.commits else tip)

        return search(self._pool, prefixes, without)

    @staticmethod
    def _ordered(sources: Sequence[_Source], merges: dict[str, SourceMerge]) -> list[SourceMerge]:
        return [merges[s.name] for s in sources if s.name in merges]

    # -- landing ----------------------------------------------------------------

    def _checked_out(self, ref: str) -> list[str]:
        """Worktrees whose HEAD is ``ref`` (read in process: this runs on every batch)."""
        repo, odb = self.repo, self.repo.odb
        heads: list[tuple[str, Path]] = []
        if not repo.bare:
            heads.append((str(repo.path), repo.common_dir / "HEAD"))
        for name in odb.list_worktrees():
            try:
                wt = odb.lookup_worktree(name)
            except pygit2.GitError:
                continue  # removed since listed: agents' sandboxes come and go meanwhile
            heads.append((wt.path, repo.common_dir / "worktrees" / name / "HEAD"))
        out = []
        for path, head in heads:
            try:
                if head.read_text().strip() == f"ref: {ref}":
                    out.append(path)
            except OSError:
                continue
        return out

    def _refuse_dirty(self, worktree: str, old: str, new: str) -> None:
        touched = touched_paths(self.repo, old, new)
        if not touched:
            return
        # Only local changes to what the batch changes are in the way: status looks at
        # nothing else (on a large checkout, most of its cost), up to a command line's worth.
        only = [f":(literal){p}" for p in sorted(touched)] if len(touched) <= 1000 else []
        # Ignored files too: a batch adding `.env` must not overwrite the user's own
        # git-ignored one (git's checkout treats ignored files as expendable).
        out = self.repo.git("status", "--porcelain=v1", "-z", "--untracked-files=all",
                            "--ignored=matching", "--", *only, cwd=Path(worktree)
                            ).stdout.decode("utf-8", "surrogateescape")
        local: set[str] = set()
        records = out.split("\0")
        i = 0
        while i < len(records):
            rec = records[i]
            if len(rec) > 3:
                local.add(rec[3:])
                if rec[0] in "RC":
                    i += 1  # a rename's second record is its source path
                    if i < len(records):
                        local.add(records[i])
            i += 1
        hit = sorted(local & touched)
        if hit:
            raise DirtyWorktreeError(worktree, hit)

    def _land(self, ref: str, old: str, report: MergeReport) -> None:
        assert report.new_sha is not None
        new = report.new_sha
        journal.fault("after-merge")
        worktrees = self._checked_out(ref)
        for wt in worktrees:
            self._refuse_dirty(wt, old, new)
        journal.fault("before-journal")
        entry = journal.write(self.repo, ref, old, new, report.landed, worktrees)
        journal.fault("after-journal")
        try:
            self.repo.update_ref(ref, new, old, f"forkyard: merge {', '.join(report.landed)}")
        except RefMovedError:
            journal.clear(self.repo, entry)
            raise
        self.landed_at = time.monotonic()
        journal.fault("after-ref")
        for wt in worktrees:  # _refuse_dirty's `git status` refreshed what will change
            journal.sync_worktree(self.repo, wt, old, new, refreshed=True)
        journal.fault("after-worktree")
        journal.clear(self.repo, entry)
        journal.fault("after-cleanup")


def resolve_commits(repo: Repo, revs: Sequence[str]) -> list[str]:
    """Commit shas for ``revs`` with one git process; :class:`UnknownRefError` if any
    does not name a commit."""
    names = list(revs)
    if any("\n" in r for r in names):
        raise UnknownRefError(next(r for r in names if "\n" in r), str(repo.path))
    data = "".join(f"{r}^{{commit}}\n" for r in names).encode()
    out = repo.git("cat-file", "--batch-check=%(objectname) %(objecttype)", input=data).out
    shas = []
    for rev, line in zip(names, out.splitlines(), strict=True):
        sha, _, kind = line.partition(" ")
        if kind != "commit":
            raise UnknownRefError(rev, str(repo.path))
        shas.append(sha)
    return shas
