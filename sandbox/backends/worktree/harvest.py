"""What an agent leaves, brought home.

The worktree backend: :func:`receive`.  The agent's leftovers were committed inside its
sandbox (a confined last step); here its branch head is read as data (never followed),
the objects that commit needs are imported into the shared store and verified there,
and the real branch moves to exactly that commit.  No git runs in the agent's worktree or
with its git dir, index or config.

The docker backend: :func:`collect` (the container's worktree is committed on the host).

The shared object store (``.git/objects``) is read-only to the agent: its git writes new
objects to a private object directory (:func:`odb_env`), and the import copies what the
branch needs into the shared store before anyone reads the branch."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from gitproc.git import GitError, RefMovedError, Repo
from gitproc.hostile import (
    HostileFileError,
    read_regular,
    read_sha,
    scrub_special,
    write_file_nofollow,
)
from sandbox import confine, overlay
from sandbox.backends.base import Sandbox
from sandbox.backends.worktree.config import UNPACK_LIMIT, commit_command
from sandbox.errors import SandboxError


def collect(repo: Repo, sandbox: Sandbox, pinned: dict[Path, bytes]
            ) -> tuple[str | None, list, str]:
    """Commit leftovers; (commit or None, numstat, message about a failed commit)."""
    commit, files, note, _ = gather(repo, sandbox, pinned)
    return commit, files, note


def gather(repo: Repo, sandbox: Sandbox, pinned: dict[Path, bytes]
           ) -> tuple[str | None, list, str, bool]:
    """:func:`collect`, plus whether the branch was broken (the task has failed)."""
    spec = sandbox.spec
    restore_pinned(pinned)
    ref = repo.common_dir / "refs" / "heads" / spec.branch
    gitdir = sandbox.state.get("gitdir")
    locks = [ref.with_name(ref.name + ".lock")]
    if isinstance(gitdir, Path):
        locks.append(gitdir / "index.lock")
    for lock in locks:
        lock.unlink(missing_ok=True)  # a killed agent's git can leave these behind
    objects = sandbox.state.get("objects")
    branch = f"refs/heads/{spec.branch}"
    ours = _index_ours(sandbox)  # before our add rewrites it
    imported = False
    if isinstance(objects, Path):
        try:
            # First: our commit below then writes straight into the shared store and
            # never leaves the branch on objects that exist only in the sandbox's.
            imported = import_objects(repo, objects, branch, spec.base)
        except _BrokenBranch as exc:
            return None, [], str(exc), True
    message = f"forkyard: {spec.task_id}\n\n{spec.description or 'Changes left by the agent.'}"
    note = ""
    tip: str | None = None
    try:
        repo.stage_all(sandbox.worktree, untouched=_untouched(sandbox))
        tip = repo.commit_staged(
            sandbox.worktree, message, ref=branch,
            gitdir=gitdir if isinstance(gitdir, Path) else None)
    except (GitError, RefMovedError) as exc:
        note = f"could not commit leftover changes: {exc}"
    # With our own index, no objects of the agent's and the branch where we left it,
    # every object of the commit is one our add wrote, or the base's: nothing to check.
    if isinstance(objects, Path) and (imported or not ours):
        try:
            verify(repo, branch, spec.base)
        except _BrokenBranch as exc:
            return None, [], "; ".join(m for m in (note, str(exc)) if m), True
    if tip is None:  # the agent may have committed itself
        tip = repo.try_rev_parse(branch)
    if tip is None or tip == spec.base:
        return None, [], note, False
    return tip, repo.numstat(spec.base, tip), note, False


# Host git reading an object directory the agent wrote: none of the agent's
# commit-graph or multi-pack index (they could lie about what is there), no fsmonitor.
_UNTRUSTED_ODB = ("-c", "core.commitGraph=false", "-c", "core.multiPackIndex=false",
                  "-c", "core.fsmonitor=false")
# A git reading what an agent left must end, whatever it finds.
_HOST_GIT_TIMEOUT_S = 600.0


def receive(repo: Repo, sandbox: Sandbox) -> tuple[str | None, list, str, bool]:
    """What a confined agent left, received as data: (commit or None, numstat, message,
    whether the task failed for it).

    The agent's leftovers were already committed inside its sandbox (a confined step
    after its command: ``config.COMMIT_SH``), so no git runs here in its worktree or
    with its git dir, config, index or hooks.  Its branch head is read from the ref file
    its git wrote (``state["head"]``: a private one under bubblewrap) as 40 hex digits,
    never followed; the objects that commit needs are imported into the shared store,
    each re-hashed, and checked complete there; only then does the real branch move, by
    compare-and-swap from the base to exactly that commit.
    """
    spec = sandbox.spec
    branch = f"refs/heads/{spec.branch}"
    head, objects = sandbox.state.get("head"), sandbox.state.get("objects")
    try:
        tip = read_sha(head) if isinstance(head, Path) else None
    except HostileFileError as exc:
        return None, [], f"the agent's branch is not a commit: {exc}", True
    if tip is None or tip == spec.base:
        return None, [], "", False  # nothing committed (or the branch deleted)
    try:
        if isinstance(objects, Path):
            scrub_special(objects)  # no FIFO for our git to block on, no link to follow
            _tidy_objects(objects)
            if not _import_loose(repo, objects):
                _import(repo, objects, tip, spec.base)
        if not _complete(repo, tip, spec.base):
            repo.git(*_UNTRUSTED_ODB, "rev-list", "--objects", "--quiet", f"{tip}^{{commit}}",
                     "--not", spec.base, timeout=_HOST_GIT_TIMEOUT_S)
    except (GitError, OSError) as exc:
        detail = (exc.stderr.decode("utf-8", "replace").strip().splitlines()
                  if isinstance(exc, GitError) else [str(exc)])
        fate = f"{branch} was left at the base {spec.base[:12]}"
        if not sandbox.state.get("head_private"):  # the agent's git moved the real one
            fate = _reset_real(repo, branch, spec.base, tip)
        return None, [], (f"the agent's branch tip {tip[:12]} is missing objects or has "
                          f"corrupt ones ({detail[-1] if detail else 'git failed'}); "
                          f"{fate}"), True
    if sandbox.state.get("head_private"):
        try:
            repo.update_ref(branch, tip, spec.base, "forkyard: the agent's work",
                            durable=False)  # a scratch branch (see Repo.update_ref)
        except (GitError, RefMovedError) as exc:
            return None, [], f"could not move {branch} to the agent's work: {exc}", True
    return tip, repo.numstat(spec.base, tip), "", False


def bring_home(repo: Repo, sandbox: Sandbox, scratch: tuple[str, ...],
               commit_phase: Callable[[str], int | None]
               ) -> tuple[str | None, list, str, bool]:
    """An agent's work brought home: its leftovers committed where it ran, confined, as
    it, by ``commit_phase`` (run the given command as a confined phase of its own, give
    its exit code), then :func:`receive`.  The phase runs after the agent's process tree
    is gone (nothing of the agent writes while it commits) and after its slot was given
    to the next task.  ``scratch``: see ``config.commit_command``."""
    left = leftovers(sandbox, scratch)
    rc_commit = 0 if left is None else commit_phase(left)
    commit, files, commit_msg, broken = receive(repo, sandbox)
    if rc_commit != 0 and not broken:
        commit_msg = "; ".join(m for m in (
            commit_msg, f"could not commit leftover changes (exit {rc_commit})") if m)
    return commit, files, commit_msg, broken


_LOOSE_MAX = 2000                 # loose objects imported in process, at most
_LOOSE_MAX_BYTES = 16 << 20       # ... each at most this big, inflated


def _import_loose(repo: Repo, objects: Path) -> bool:
    """Import an object directory holding only loose objects (what a few commits make)
    in process: each one inflated, hashed and written to the shared store under the name
    its content has (one whose content does not match its name is left out: the check
    of the history then finds it missing).  False, having imported nothing, when git
    should do it (packs, many or big objects)."""
    found: list[tuple[str, Path]] = []
    with os.scandir(objects) as it:
        for entry in it:
            if entry.name == "pack":
                if any(os.scandir(entry.path)):
                    return False
            elif len(entry.name) == 2 and entry.is_dir(follow_symlinks=False):
                for obj in os.scandir(entry.path):
                    if len(obj.name) == 38 and obj.is_file(follow_symlinks=False):
                        found.append((entry.name + obj.name, Path(obj.path)))
                        if len(found) > _LOOSE_MAX:
                            return False
    decoded = []
    for name, path in found:
        raw = read_regular(path, _LOOSE_MAX_BYTES)
        if raw is None:
            continue
        inflater = zlib.decompressobj()
        try:
            data = inflater.decompress(raw, _LOOSE_MAX_BYTES + 64)
        except zlib.error:
            continue
        if inflater.unconsumed_tail:
            return False  # bigger than we inflate here
        head, _, body = data.partition(b"\0")
        kind, _, size = head.partition(b" ")
        if (kind not in _KINDS or not size.isdigit() or int(size) != len(body)
                or hashlib.sha1(data).hexdigest() != name):
            continue
        decoded.append((_KINDS[kind], body))
    for kind_id, body in decoded:
        repo.odb.write(kind_id, body)
    return True


_KINDS = {b"commit": 1, b"tree": 2, b"blob": 3, b"tag": 4}


def _complete(repo: Repo, tip: str, base: str, limit: int = 100) -> bool:
    """Whether the shared store holds every object of the few commits ``base..tip``,
    checked in process; False means "ask git" (``rev-list --objects``, which fails on
    what is missing): more than ``limit`` commits, or anything unexpected."""
    import pygit2

    odb = repo.odb
    try:
        if pygit2.Oid(hex=tip) not in odb:
            return False
        walker = odb.walk(pygit2.Oid(hex=tip), pygit2.enums.SortMode.NONE)
        walker.hide(pygit2.Oid(hex=base))
        for n, commit in enumerate(walker):
            if n >= limit:
                return False
            # What each commit changes against its parents (a tree diff loads only the
            # trees along changed paths; a missing one raises): every new blob is here.
            parents: list[pygit2.Commit | None] = list(commit.parents) or [None]
            for parent in parents:
                diff = (commit.tree.diff_to_tree(swap=True) if parent is None
                        else parent.tree.diff_to_tree(commit.tree))
                for delta in diff.deltas:
                    new = delta.new_file
                    if (delta.status != pygit2.enums.DeltaStatus.DELETED
                            and new.mode != pygit2.enums.FileMode.COMMIT
                            and new.id not in odb):
                        return False
        return True
    except (pygit2.GitError, KeyError, ValueError, TypeError):
        return False


def _reset_real(repo: Repo, branch: str, base: str, tip: str) -> str:
    """Reset a real branch the agent moved onto a broken commit (Landlock alone): by
    compare-and-swap, never through a link its reflog was replaced by."""
    log = repo.common_dir / "logs" / branch
    with contextlib.suppress(OSError, HostileFileError):
        scrub_special(log)
    try:
        repo.update_ref(branch, base, tip, "forkyard: reset a broken branch")
        return f"{branch} was reset to the base {base[:12]}"
    except (GitError, RefMovedError):
        return f"{branch} was left at {tip[:12]}"


def _import(repo: Repo, objects: Path, tip: str | None, base: str) -> None:
    """Copy what ``base..tip`` needs, and whatever else the agent's object directory
    holds, into the shared store (:class:`GitError` when that fails)."""
    own = repo.git(*_UNTRUSTED_ODB, "cat-file", "--batch-all-objects", "--unordered",
                   "--batch-check=%(objectname)", env={"GIT_OBJECT_DIRECTORY": str(objects)},
                   timeout=_HOST_GIT_TIMEOUT_S).out.split()
    revs = [*own, *((tip, f"^{base}") if tip not in (None, base) else ())]
    if not revs:
        return
    pack = repo.git(*_UNTRUSTED_ODB, "pack-objects", "--revs", "--local", "--stdout", "-q",
                    input="".join(f"{r}\n" for r in revs).encode(),
                    env=odb_env(repo, objects), timeout=_HOST_GIT_TIMEOUT_S).stdout
    count = int.from_bytes(pack[8:12], "big") if len(pack) >= 12 else 0
    if count >= UNPACK_LIMIT:
        repo.git("index-pack", "--stdin", input=pack, timeout=_HOST_GIT_TIMEOUT_S)
    elif count:
        repo.git("unpack-objects", "-q", input=pack, timeout=_HOST_GIT_TIMEOUT_S)


def restore_pinned(pinned: dict[Path, bytes]) -> None:
    """Put back the git control files (``.git`` file, HEAD, the pointers) as we wrote
    them: undo tampering Landlock alone cannot stop (under bubblewrap they are
    read-only binds).  Never reads or writes through a link or a special file."""
    for path, data in pinned.items():
        try:
            if read_regular(path, len(data)) == data:
                continue
        except HostileFileError:
            pass
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        write_file_nofollow(path, data)


def import_objects(repo: Repo, objects: Path, ref: str, base: str) -> bool:
    """Copy the objects the agent made into the shared store, verified; False when
    there were none and the branch is still at ``base`` or gone.

    Everything in the sandbox's object directory (its reflog and index name those,
    not only the branch), plus whatever ``base..tip`` needs; ``pack-objects --local``
    leaves out what the shared store already has.  Unpacking re-hashes every object,
    so an object whose content does not match its name cannot get in under that
    name (:func:`verify` then finds it missing).  Failure: :class:`_BrokenBranch`.
    """
    _tidy_objects(objects)
    tip = repo.ref_target(ref)
    try:
        made = any(os.scandir(objects))
    except OSError:
        made = False
    if not made and tip in (None, base):
        return False  # the agent wrote nothing: the cheap common case
    try:
        scrub_special(objects)
        _import(repo, objects, tip, base)
    except GitError as exc:
        reset_broken(repo, ref, base, tip, exc)
    return True


def verify(repo: Repo, ref: str, base: str) -> None:
    """Check that the whole branch is in the shared store; else :func:`reset_broken`."""
    tip = repo.ref_target(ref)
    if tip in (None, base):
        return
    try:
        repo.git("rev-list", "--objects", "--quiet", f"{tip}^{{commit}}", "--not", base)
    except GitError as exc:
        reset_broken(repo, ref, base, tip, exc)


def reset_broken(repo: Repo, ref: str, base: str, tip: str | None, exc: GitError) -> NoReturn:
    """Reset a branch the shared store cannot hold to ``base`` (compare-and-swap: a
    ref naming objects the repository lacks breaks fsck, gc and every reader) and
    raise :class:`_BrokenBranch`: the task fails."""
    detail = exc.stderr.decode("utf-8", "replace").strip().splitlines()
    fate = ""
    if tip is not None and tip != base:
        try:
            repo.update_ref(ref, base, tip, "forkyard: reset a broken branch")
            fate = f"; {ref} was reset to the base {base[:12]}"
        except (GitError, RefMovedError):
            fate = f"; {ref} was left at {tip[:12]}"
    raise _BrokenBranch(
        f"the agent's branch tip {(tip or 'none')[:12]} is missing objects or has corrupt "
        f"ones ({detail[-1] if detail else 'git failed'}){fate}") from None


class _BrokenBranch(SandboxError):
    """The agent left its branch on a commit whose objects are missing or corrupt."""


def odb_env(repo: Repo, objects: Path) -> dict[str, str]:
    """Git environment for a sandbox: new objects go to ``objects``; everything else is
    read from the shared store (an alternate, which the sandbox cannot write)."""
    shared = str(repo.common_dir / "objects")
    if ":" in shared or shared.startswith('"'):  # the list is ':'-separated; C-quote it
        shared = '"' + shared.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return {"GIT_OBJECT_DIRECTORY": str(objects), "GIT_ALTERNATE_OBJECT_DIRECTORIES": shared}


def _tidy_objects(objects: Path) -> None:
    """Before our git writes to a sandbox's object directory: no symlinked fan-out or
    ``pack`` dirs (our writes would follow them out of it), no alternates of the agent's
    choosing (our git reads only the shared store besides)."""
    try:
        for entry in os.scandir(objects):
            if entry.is_symlink():
                os.unlink(entry.path)
        (objects / "info" / "alternates").unlink(missing_ok=True)
    except OSError:
        pass


def _stat_key(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _index_ours(sandbox: Sandbox) -> bool:
    """Whether an overlay sandbox's index is still the one we wrote: the agent's git
    neither staged nor unstaged anything (its stat data, ``ctime`` included, which no
    one can set back)."""
    gitdir, key = sandbox.state.get("gitdir"), sandbox.state.get("index")
    return (isinstance(sandbox.state.get("layers"), overlay.Layers)
            and isinstance(gitdir, Path) and key is not None
            and _stat_key(gitdir / "index") == key)


def leftovers(sandbox: Sandbox, scratch: tuple[str, ...] = ()) -> str | None:
    """The confined command committing what the agent left, or None when an overlay
    proves it left nothing (no file in the upper layer but ``.git``, the index ours).
    ``scratch``: see :func:`config.commit_command`."""
    layers = sandbox.state.get("layers")
    untouched = _untouched(sandbox)
    if untouched and isinstance(layers, overlay.Layers):
        try:
            if not set(os.listdir(layers.upper)) - {".git"}:
                return None
        except OSError:
            pass
    skip = [f":(top,literal,exclude){name}" for name in untouched]
    return commit_command([":/", *skip] if skip else [], scratch)


def _untouched(sandbox: Sandbox) -> list[str]:
    """Top-level entries of an overlay sandbox that the agent provably left alone: nothing
    under them is in the upper layer (every write, delete or rename puts something there)
    and the index is the one we wrote (:func:`_index_ours`).  ``git add -A`` need not
    look at them (on a large tree, most of what it does).  Empty (look at everything)
    when in doubt."""
    layers = sandbox.state.get("layers")
    if not isinstance(layers, overlay.Layers) or not _index_ours(sandbox):
        return []
    try:
        touched = set(os.listdir(layers.upper))
        return sorted(n for n in os.listdir(layers.lower) if n not in touched and n != ".git")
    except OSError:
        return []


def _pin_git_files(gitpaths: confine.GitPaths, branch: str) -> dict[Path, bytes]:
    """Contents restored before our commit: the ``.git`` file, HEAD and the pointers."""
    pinned = {p: p.read_bytes() for p in gitpaths.ro if p.is_file()}
    pinned[gitpaths.gitdir / "HEAD"] = f"ref: refs/heads/{branch}\n".encode()
    return pinned
