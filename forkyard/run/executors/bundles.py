"""Moving history between the driver and a worker that shares no filesystem with it.

The driver ships a task's base as a git bundle (:func:`base_bundle`); the worker sends
back a bundle of just the commits the agent made (:func:`result_bundle`), which the
driver checks and imports before it names any branch after it (:func:`import_result`).
Everything in a result bundle was written by an agent: it is hostile input until every
check here has passed.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from gitproc.git import Repo, git
from sandbox.errors import SandboxError

#: The one ref a base bundle carries.  A base is a commit, not a branch tip (a task that
#: depends on others starts from an integrated commit), and git bundles refs, not shas.
BASE_REF = "refs/forkyard/base"
#: Results larger than this are refused on the worker: they travel through Ray's object
#: store, which is memory.
MAX_RESULT_BYTES = 256 * 2**20


class ImportRefused(SandboxError):
    """A worker's result failed a check: nothing was written to any branch."""


def repo_key(repo: Repo, base: str) -> str:
    """The repository's identity across machines: a hash of the base's root commits.

    Two clones of one project share it (and so a node's cache); unrelated ones never do.
    """
    roots = sorted(repo.out("rev-list", "--max-parents=0", base).split())
    return hashlib.sha256(" ".join(roots).encode()).hexdigest()[:24]


def base_bundle(repo: Repo, base: str) -> bytes:
    """A bundle of ``base``'s history (and nothing else) under :data:`BASE_REF`.

    Not ``--all``: that would ship every branch and stash of the driver's repository.  The
    bundle is made in a throwaway bare repository that borrows the driver's objects through
    ``alternates`` and holds one ref, so the driver's repository is only read.
    """
    base = repo.out("rev-parse", "--verify", f"{base}^{{commit}}")
    scratch = repo.forkyard_dir / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bundle-", dir=scratch) as tmp:
        shadow = Path(tmp) / "shadow.git"
        git("init", "-q", "--bare", str(shadow), cwd=tmp)
        (shadow / "objects" / "info" / "alternates").write_text(
            f"{repo.common_dir / 'objects'}\n")
        git("update-ref", BASE_REF, base, cwd=shadow)
        out = Path(tmp) / "base.bundle"
        git("bundle", "create", "-q", str(out), BASE_REF, cwd=shadow)
        return out.read_bytes()


def result_bundle(repo: Repo, ref: str, base: str, scratch: Path) -> bytes:
    """Worker side: a bundle of the commits on ``ref`` that ``base`` lacks."""
    scratch.mkdir(parents=True, exist_ok=True)
    out = scratch / "result.bundle"
    git("bundle", "create", "-q", str(out), ref, f"^{base}", cwd=repo.path)
    try:
        data = out.read_bytes()
    finally:
        out.unlink(missing_ok=True)
    if len(data) > MAX_RESULT_BYTES:
        raise SandboxError(f"the task's new commits take {len(data) >> 20} MiB as a bundle, "
                           f"more than the {MAX_RESULT_BYTES >> 20} MiB a result may take")
    return data


def bundle_tips(data: bytes) -> dict[str, str]:
    """The refs a bundle advertises, ``{ref: sha}``, read from its header (v2 or v3)."""
    head, sep, _ = data.partition(b"\n\n")
    lines = head.decode("utf-8", "replace").split("\n")
    if not sep or lines[0] not in ("# v2 git bundle", "# v3 git bundle"):
        raise ImportRefused("the result is not a git bundle")
    tips: dict[str, str] = {}
    for line in lines[1:]:
        if line.startswith(("@", "-")):  # a capability, a prerequisite
            continue
        sha, _, name = line.partition(" ")
        tips[name] = sha
    return tips


def fetch_base(cache: Repo, base: str, data: bytes, scratch: Path) -> None:
    """Worker side: fetch a base bundle into the node's cache, under a ref per base (so a
    later gc of the cache keeps it)."""
    scratch.mkdir(parents=True, exist_ok=True)
    path = scratch / f"base-{base}.bundle"
    path.write_bytes(data)
    try:
        cache.git("bundle", "verify", "-q", str(path))
        cache.git("fetch", "-q", "--no-tags", "--no-write-fetch-head", str(path),
                  f"{BASE_REF}:refs/forkyard/bases/{base}")
    finally:
        path.unlink(missing_ok=True)
    if cache.try_rev_parse(f"{base}^{{commit}}") is None:
        raise SandboxError(f"the base bundle does not hold {base}")


def import_result(repo: Repo, data: bytes | None, head: str | None, base: str,
                  branch: str, task_id: str) -> None:
    """Driver side: check a worker's result and create ``branch`` at its head.

    Refused (:class:`ImportRefused`, nothing written to any ref) unless the bundle
    advertises exactly the claimed head, verifies against this repository, its objects
    pass fsck on fetch, and the head descends from ``base``.  The branch is created by
    compare-and-swap: an existing branch is never moved.  No head: the branch is made at
    the base (the agent changed nothing), as a local sandbox's branch would be.
    """
    ref = f"refs/heads/{branch}"
    if data is None:
        if head is not None:
            raise ImportRefused(f"{task_id}: the worker claims {head} but sent no commits")
        repo.update_ref(ref, base, None, f"forkyard: {task_id} (no change)")
        return
    if head is None:
        raise ImportRefused(f"{task_id}: the worker sent commits but names no head")
    tips = set(bundle_tips(data).values())
    if tips != {head}:
        raise ImportRefused(f"{task_id}: the bundle's tips {sorted(tips)} are not the "
                            f"claimed head {head}")
    scratch = repo.forkyard_dir / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="import-", dir=scratch) as tmp:
        path = Path(tmp) / "result.bundle"
        path.write_bytes(data)
        verify = repo.git("bundle", "verify", "-q", str(path), check=False)
        if verify.returncode != 0:
            raise ImportRefused(f"{task_id}: the bundle does not verify: {verify.err.strip()}")
        fetch = repo.git("-c", "fetch.fsckObjects=true", "fetch", "-q", "--no-tags",
                         "--no-write-fetch-head", str(path), head, check=False)
        if fetch.returncode != 0:
            raise ImportRefused(f"{task_id}: fetching the bundle failed: {fetch.err.strip()}")
    if repo.git("merge-base", "--is-ancestor", base, head, check=False).returncode != 0:
        raise ImportRefused(f"{task_id}: {head} does not descend from the base {base}")
    repo.update_ref(ref, head, None, f"forkyard: {task_id} (from a Ray worker)")
