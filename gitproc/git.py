"""The one git wrapper: every git command forkyard runs goes through :func:`git`.

Why a wrapper: a git hook or a worktree can leak ``GIT_DIR``/``GIT_INDEX_FILE`` and
friends into our environment and silently point our git calls at the wrong repository
(pre-commit learned this the hard way), user hooks must not run on commits we make,
and commits we make carry a fixed identity.  Object reads, commit creation, line counts
and moves of forkyard's own scratch branches use pygit2 through :attr:`Repo.odb` (in
process: no git to start); everything else is the git CLI.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gitproc.errors import (  # noqa: F401  (re-exported: the git wrapper's errors)
    GitError,
    GitVersionError,
    NotARepositoryError,
    ProcessError,
    RefMovedError,
    UnknownRefError,
)
from gitproc.lock import FileLock
from gitproc.process import Completed, probed_once, run
from gitproc.worktrees import drop_half_made

if TYPE_CHECKING:
    import pygit2

MIN_GIT_VERSION = (2, 38)

# GIT_* variables that configure git rather than aim it at a repository: keep them
# (tests rely on GIT_CONFIG_GLOBAL / GIT_CONFIG_NOSYSTEM to stay hermetic).
_KEEP = re.compile(
    r"^GIT_(CONFIG_NOSYSTEM|CONFIG_GLOBAL|CONFIG_COUNT|CONFIG_KEY_\d+|CONFIG_VALUE_\d+"
    r"|EXEC_PATH|SSH|SSH_COMMAND|SSL_CAINFO|SSL_NO_VERIFY|ASKPASS|TERMINAL_PROMPT"
    r"|TRACE\w*|HTTP_PROXY\w*)$"
)

IDENTITY: dict[str, str] = {
    "GIT_AUTHOR_NAME": "forkyard",
    "GIT_AUTHOR_EMAIL": "forkyard@localhost",
    "GIT_COMMITTER_NAME": "forkyard",
    "GIT_COMMITTER_EMAIL": "forkyard@localhost",
}

# Options for every git we run: no user hooks, no background gc, no signing prompts.
_CONFIG = (
    "-c", "core.hooksPath=/dev/null",
    "-c", "gc.auto=0",
    "-c", "maintenance.auto=false",
    "-c", "commit.gpgSign=false",
    "-c", "advice.detachedHead=false",
)


#: Held around `git worktree add/remove/prune` in this process (see Repo.worktree_add).
WORKTREE_ADMIN_LOCK = threading.RLock()


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The current environment minus leaked ``GIT_*`` variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_") or _KEEP.match(k)}
    env["LC_ALL"] = "C"
    env["GIT_TERMINAL_PROMPT"] = "0"
    if extra:
        env.update(extra)
    return env


def git(
    *args: str,
    cwd: str | os.PathLike[str],
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    timeout: float | None = None,
) -> Completed:
    """Run ``git args...`` in ``cwd`` with a clean environment and hooks disabled."""
    try:
        return run(
            ["git", *_CONFIG, *args],
            cwd=cwd,
            env=clean_env(env),
            input=input,
            timeout=timeout,
            check=check,
        )
    except ProcessError as exc:
        raise GitError(
            Completed(exc.argv, exc.returncode, exc.stdout, exc.stderr, exc.timed_out)
        ) from None


@probed_once
def git_version() -> tuple[int, int, int]:
    """The installed git's version (asked once per process)."""
    out = git("version", cwd=os.getcwd()).out
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", out)
    if not m:
        raise GitVersionError(f"cannot parse git version from {out!r}")
    return int(m[1]), int(m[2]), int(m[3] or 0)


def require_git(minimum: tuple[int, int] = MIN_GIT_VERSION) -> None:
    """Fail with a clear message when the installed git is older than ``minimum``."""
    have = git_version()
    if have[:2] < minimum:
        need = ".".join(map(str, minimum))
        raise GitVersionError(
            f"forkyard needs git >= {need} (for merge-tree --write-tree); found "
            + ".".join(map(str, have))
        )


@dataclass(frozen=True)
class NumStat:
    path: str
    added: int
    removed: int


class Repo:
    """A git repository (its main worktree, or a bare repository)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        p = Path(path).resolve()
        if not p.exists():
            raise NotARepositoryError(str(path))
        try:
            out = git(
                "rev-parse", "--path-format=absolute", "--git-common-dir", "--git-dir",
                "--is-bare-repository", cwd=p,
            ).out.splitlines()
        except GitError:
            raise NotARepositoryError(str(path)) from None
        self.common_dir = Path(out[0])
        self.git_dir = Path(out[1])
        self.bare = out[2] == "true"
        if self.bare:
            self.path = self.common_dir
        else:
            # The main worktree, even when opened from a linked worktree.
            self.path = self.common_dir.parent if self.common_dir.name == ".git" else p
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"Repo({str(self.path)!r})"

    # -- running git -------------------------------------------------------------

    def git(self, *args: str, **kw: object) -> Completed:
        kw.setdefault("cwd", self.path)
        return git(*args, **kw)  # type: ignore[arg-type]

    def out(self, *args: str, **kw: object) -> str:
        """stdout of ``git args...`` with the trailing newline stripped."""
        return self.git(*args, **kw).out.rstrip("\n")

    @property
    def odb(self) -> pygit2.Repository:
        """pygit2 view of the same repository, for object reads and commit creation: one
        per thread (a libgit2 repository must not be used by two threads at once, and
        pygit2 lets go of the GIL in many of its calls)."""
        odb: pygit2.Repository | None = getattr(self._local, "odb", None)
        if odb is None:
            import pygit2

            odb = self._local.odb = pygit2.Repository(str(self.common_dir))
        return odb

    @property
    def forkyard_dir(self) -> Path:
        """``.git/forkyard``: run state, journals, worktrees, history."""
        return self.common_dir / "forkyard"

    # -- refs --------------------------------------------------------------------

    def rev_parse(self, rev: str) -> str:
        """The commit sha ``rev`` names; :class:`UnknownRefError` when it names none."""
        r = self.git("rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}",
                     check=False)
        if r.returncode != 0:
            raise UnknownRefError(rev, str(self.path))
        return r.out.strip()

    def try_rev_parse(self, rev: str) -> str | None:
        try:
            return self.rev_parse(rev)
        except UnknownRefError:
            return None

    def full_ref(self, name: str) -> str | None:
        """``refs/heads/x`` for a branch name ``x`` (or the ref itself); None if absent."""
        if name.startswith("refs/"):
            r = self.git("show-ref", "--verify", "--quiet", name, check=False)
            return name if r.returncode == 0 else None
        r = self.git("rev-parse", "--verify", "--quiet", "--symbolic-full-name", name, check=False)
        full = r.out.strip()
        return full if r.returncode == 0 and full.startswith("refs/") else None

    def update_ref(self, ref: str, new: str, old: str | None, message: str,
                   *, durable: bool = True) -> None:
        """Move ``ref`` to ``new`` only if it is still at ``old`` (compare-and-swap).

        ``old=None`` requires that the ref does not exist yet.  ``durable=False``: in
        process (libgit2: the same lock file, check and reflog entry, a few milliseconds
        less) but without the fsync git's own ``update-ref`` may do, and in this process:
        killed in the middle, it leaves the ref's lock file (:meth:`drop_ref_locks`).
        For forkyard's scratch branches, which a crash only sends back to be re-run.
        """
        expected = old if old is not None else "0" * 40
        if not durable and self._update_ref_in_process(ref, new, old, message):
            return
        # --no-deref: a ref someone made symbolic is replaced, never followed elsewhere.
        r = self.git("update-ref", "--no-deref", "-m", message, ref, new, expected,
                     check=False)
        if r.returncode != 0:
            actual = self.try_rev_parse(ref)
            raise RefMovedError(ref, expected, actual)

    def _update_ref_in_process(self, ref: str, new: str, old: str | None, message: str) -> bool:
        """:meth:`update_ref` through libgit2; False where git should do it (a symbolic
        ref, or one libgit2 cannot read)."""
        import pygit2

        odb = self.odb
        message = re.sub(r"[ \t\n\r]+", " ", message).strip(" ")  # as git logs it
        try:
            current = odb.references.get(ref)
            if current is not None and current.type != pygit2.enums.ReferenceType.DIRECT:
                return False
            actual = None if current is None else str(current.target)
            if actual != old:
                raise RefMovedError(ref, old or "0" * 40, actual)
            if current is None:
                odb.create_reference_direct(ref, pygit2.Oid(hex=new), False, message=message)
            else:
                current.set_target(pygit2.Oid(hex=new), message)  # locks, checks old again
            return True
        except (pygit2.GitError, ValueError, OSError):
            # Lost a race (or an unreadable ref): ask git.  OSError included: libgit2 makes
            # the ref's directory and then its lock file, and a concurrent deletion of the
            # directory's last ref (git prunes empty ref dirs) removes it in between; git's
            # own update-ref retries that.
            return False

    def drop_ref_locks(self, ref: str) -> None:
        """Delete the lock file of loose ref ``ref``, or with a trailing ``/`` those of
        every ref under it: what a process killed in the middle of an in-process update
        (``durable=False``) leaves, and which makes every later update of the ref fail.
        Only for refs no live process can be writing."""
        path = self.common_dir / ref
        locks = path.rglob("*.lock") if ref.endswith("/") else [path.with_name(f"{path.name}.lock")]
        for lock in locks:
            lock.unlink(missing_ok=True)

    def delete_ref(self, ref: str, old: str | None = None) -> None:
        """Delete ``ref`` itself (if still at ``old``); a symbolic ref is deleted, never
        the ref it points to."""
        args = ["update-ref", "--no-deref", "-d", ref] + ([old] if old else [])
        self.git(*args)

    def current_branch(self) -> str | None:
        r = self.git("symbolic-ref", "--quiet", "--short", "HEAD", check=False)
        return r.out.strip() or None

    def merge_base(self, a: str, b: str) -> str | None:
        r = self.git("merge-base", a, b, check=False)
        return r.out.strip() or None

    def branches(self, pattern: str) -> dict[str, str]:
        """Refs under ``refs/heads`` matching ``pattern`` (a for-each-ref pattern) -> sha."""
        out = self.out("for-each-ref", "--format=%(refname) %(objectname)", f"refs/heads/{pattern}")
        return dict(line.split(" ", 1) for line in out.splitlines() if line)

    # -- working tree ------------------------------------------------------------

    def is_dirty(self, cwd: str | os.PathLike[str] | None = None) -> bool:
        """True when tracked files differ from HEAD (untracked files do not count)."""
        out = self.out("status", "--porcelain", "--untracked-files=no", cwd=cwd or self.path)
        return bool(out)

    def worktree_add(self, path: str | os.PathLike[str], branch: str, base: str,
                     checkout: bool = True) -> None:
        """A worktree at ``path`` on a new ``branch`` at ``base``; ``checkout=False``: no
        files and no index (the caller provides them).

        Concurrent ``git worktree add`` runs read each other's half-written
        ``.git/worktrees/<name>/`` and die ("failed to read .../commondir"): the bookkeeping
        is serialised; the checkout, the slow part, runs in parallel.
        """
        with WORKTREE_ADMIN_LOCK:
            # Other processes add worktrees to the same repository too (Ray workers share
            # a node's cache): the bookkeeping is serialised across processes as well.
            with FileLock(self.common_dir / "forkyard-worktrees.lock"):
                drop_half_made(self.common_dir / "worktrees")
                self.git("worktree", "add", "--quiet", "--no-checkout", "-b", branch,
                         str(path), base)
        if checkout:
            self.git("reset", "--quiet", "--hard", cwd=path)

    def worktree_register(self, path: Path, branch: str, base: str, dotgit: Path) -> Path:
        """Make ``path`` a linked worktree on a new ``branch`` at ``base`` without running
        ``git worktree add``: no checkout, no scan of the other worktrees, no lock held
        while another sandbox's is being made.

        Writes what ``git worktree add --no-checkout`` writes (gitrepository-layout(5)):
        the branch (compare-and-swap: it must not exist), ``.git/worktrees/<id>/`` with
        ``HEAD``, ``commondir`` and ``gitdir``, and the ``.git`` file -- at ``dotgit``,
        which is ``path/.git`` or where it will appear there (an overlay's upper layer).
        The admin dir is created ``locked`` ("initializing", as git does) so that no
        ``git worktree prune`` removes it before ``path/.git`` exists; the caller calls
        :meth:`worktree_unlock` then.  Returns the admin dir.
        """
        self.update_ref(f"refs/heads/{branch}", base, None, "forkyard: sandbox", durable=False)
        admin_root = self.common_dir / "worktrees"
        with WORKTREE_ADMIN_LOCK:  # (`git worktree prune` removes an empty admin_root)
            admin_root.mkdir(exist_ok=True)
            for n in itertools.count():
                admin = admin_root / f"{path.name}{n or ''}"
                try:
                    admin.mkdir()
                    break
                except FileExistsError:
                    continue
            (admin / "locked").write_text("initializing\n")
        (admin / "commondir").write_text("../..\n")
        (admin / "HEAD").write_text(f"ref: refs/heads/{branch}\n")
        (admin / "gitdir").write_text(f"{path / '.git'}\n")
        dotgit.write_text(f"gitdir: {admin}\n")
        return admin

    @staticmethod
    def worktree_unlock(admin: Path) -> None:
        (admin / "locked").unlink(missing_ok=True)

    def worktree_forget(self, path: Path) -> None:
        """Drop git's bookkeeping of the linked worktree at ``path`` whatever its state:
        also a locked one (what a crash in the middle of :meth:`worktree_register`
        leaves), which ``git worktree prune`` keeps and whose branch stays checked out.
        The directory itself is the caller's to remove."""
        dotgit = str(path / ".git")
        with WORKTREE_ADMIN_LOCK:
            for admin in (self.common_dir / "worktrees").glob("*"):
                with contextlib.suppress(OSError):
                    if (admin / "gitdir").read_text().strip() == dotgit:
                        shutil.rmtree(admin)

    def worktree_remove(self, path: str | os.PathLike[str], force: bool = True) -> None:
        args = ["worktree", "remove"] + (["--force", "--force"] if force else []) + [str(path)]
        with WORKTREE_ADMIN_LOCK:
            self.git(*args)

    def worktrees(self) -> list[dict[str, str]]:
        """``git worktree list --porcelain`` as a list of dicts (worktree, HEAD, branch...)."""
        out = self.out("worktree", "list", "--porcelain")
        items: list[dict[str, str]] = []
        for block in out.split("\n\n"):
            entry: dict[str, str] = {}
            for line in block.splitlines():
                key, _, value = line.partition(" ")
                entry[key] = value or "true"
            if entry:
                items.append(entry)
        return items

    def commit_all(
        self, cwd: str | os.PathLike[str], message: str, env: Mapping[str, str] | None = None,
    ) -> str | None:
        """Stage everything in worktree ``cwd`` and commit with our identity: the new
        commit's sha, or None when there was nothing to commit.  ``env`` applies to every
        git call (e.g. a sandbox's ``GIT_OBJECT_DIRECTORY``: ``add`` writes blobs there)."""
        self.stage_all(cwd, env=env)
        return self.commit_staged(cwd, message, env=env)

    def stage_all(self, cwd: str | os.PathLike[str], *, untouched: Sequence[str] = (),
                  env: Mapping[str, str] | None = None) -> None:
        """``git add -A`` in worktree ``cwd``.  ``untouched``: top-level names known to
        hold no change, which ``add`` skips (on a large tree, most of what it does)."""
        skip = [f":(top,literal,exclude){name}" for name in untouched]
        self.git("add", "-A", *(("--", ":/", *skip) if skip else ()), cwd=cwd, env=env)

    def commit_staged(
        self, cwd: str | os.PathLike[str], message: str, env: Mapping[str, str] | None = None,
        *, gitdir: str | os.PathLike[str] | None = None, ref: str | None = None,
    ) -> str | None:
        """Commit what is staged in worktree ``cwd`` with our identity: the new commit's
        sha, or None when the index holds the tree HEAD has.

        Given the worktree's ``gitdir`` and the branch ``ref`` its HEAD is on, this is
        done in process: what ``git commit`` does after ``git add``, without its second
        look at every file of the worktree and its rewrite of the index (on a large tree,
        most of its cost).  ``ref`` then moves by compare-and-swap
        (:class:`RefMovedError`).  ``git commit`` is the fallback, for an index or a ref
        libgit2 cannot read.
        """
        if gitdir is not None and ref is not None and not env:
            import pygit2

            try:
                return self._commit_index(Path(gitdir), ref, message)
            except (pygit2.GitError, KeyError, ValueError):
                pass
        if self.git("diff", "--cached", "--quiet", cwd=cwd, check=False, env=env).returncode == 0:
            return None
        self.git("commit", "--quiet", "--no-verify", "-m", message, cwd=cwd,
                 env={**IDENTITY, **(env or {})})
        return self.out("rev-parse", "HEAD", cwd=cwd, env=env)

    def _commit_index(self, gitdir: Path, ref: str, message: str) -> str | None:
        import pygit2

        odb = self.odb
        parent = odb.references[ref].resolve().peel(pygit2.Commit)
        tree = pygit2.Repository(str(gitdir)).index.write_tree()
        if tree == parent.tree_id:
            return None
        sig = pygit2.Signature(IDENTITY["GIT_AUTHOR_NAME"], IDENTITY["GIT_AUTHOR_EMAIL"])
        text = clean_message(message)
        subject = text.partition("\n")[0]
        oid = odb.create_commit(None, sig, sig, text, tree, [parent.id])
        self.update_ref(ref, str(oid), str(parent.id), f"commit: {subject}", durable=False)
        return str(oid)

    def ref_target(self, ref: str) -> str | None:
        """The object ``ref`` points at, read in process, whether or not that object
        exists (None: no such ref).  Symbolic refs are followed."""
        import pygit2

        try:
            found = self.odb.references.get(ref)
            return None if found is None else str(found.resolve().target)
        except (pygit2.GitError, KeyError, ValueError):  # e.g. a dangling symbolic ref
            r = self.git("rev-parse", "--verify", "--quiet", "--end-of-options", ref,
                         check=False)
            return r.out.strip() if r.returncode == 0 else None

    def numstat(self, a: str, b: str) -> list[NumStat]:
        """Files changed between commits ``a`` and ``b`` with added/removed line counts,
        as ``git diff --numstat --no-renames`` has them (a binary file: 0 and 0), in
        process."""
        import pygit2

        odb = self.odb
        diff = odb.diff(odb[a].peel(pygit2.Commit), odb[b].peel(pygit2.Commit))
        stats = []
        for patch in diff:
            if patch is None:
                continue
            _, added, removed = patch.line_stats
            delta = patch.delta
            path = (delta.new_file if delta.status != pygit2.enums.DeltaStatus.DELETED
                    else delta.old_file).path
            stats.append(NumStat(path, added, removed))
        return stats


def clean_message(message: str) -> str:
    """A commit message as ``git commit -m`` stores it (``--cleanup=whitespace``): no
    trailing whitespace on a line, no leading or trailing blank lines, no runs of them."""
    lines: list[str] = []
    for line in message.split("\n"):
        line = line.rstrip(" \t\r")  # git's whitespace: ASCII only
        if line or (lines and lines[-1]):
            lines.append(line)
    while lines and not lines[-1]:
        lines.pop()
    return "".join(f"{line}\n" for line in lines)


def init_repo(path: str | os.PathLike[str], bare: bool = False, branch: str = "main") -> Repo:
    """``git init`` a new repository at ``path`` with ``branch`` as its initial branch."""
    where = Path(path).resolve()  # relative to us, not to the cwd git runs in
    where.mkdir(parents=True, exist_ok=True)
    args = ["init", "--quiet", f"--initial-branch={branch}"] + (["--bare"] if bare else [])
    git(*args, str(where), cwd=where)
    return Repo(where)


def argv_join(argv: Sequence[str]) -> str:
    import shlex

    return " ".join(shlex.quote(a) for a in argv)
