"""Property: for random edits on two branches of a base tree, our merge agrees with git.

Tree for tree with ``git merge-tree`` run directly, and with ``git merge --no-ff`` in a
worktree (same tree when clean, same conflicted paths otherwise).
"""

from __future__ import annotations

import atexit
import itertools
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixtures.repos import commit_files
from gitproc.git import Repo, init_repo
from merge.tree_merge import merge_commits
from tests.merge.conftest import git_merge_answer, merge_tree_answer

NAMES = ["a.txt", "b.txt", "d/c.txt", "d/e.txt", "f.txt"]
BASE = {n: "".join(f"{n} line {i}\n" for i in range(8)) for n in NAMES[:4]}

# One edit: (op, file index, line index, text)
edit = st.tuples(
    st.sampled_from(["modify", "delete", "add", "rename", "append"]),
    st.integers(0, len(NAMES) - 1),
    st.integers(0, 7),
    st.sampled_from(["x", "y", "zz"]),
)


def apply(files: dict[str, str], edits: list[tuple[str, int, int, str]]) -> dict[str, str | None]:
    cur: dict[str, str | None] = dict(files)
    for op, fi, li, text in edits:
        name = NAMES[fi]
        content = cur.get(name)
        if op == "modify" and content is not None:
            lines = content.splitlines(keepends=True)
            lines[li % len(lines)] = f"{text} {li}\n"
            cur[name] = "".join(lines)
        elif op == "append" and content is not None:
            cur[name] = content + f"{text}\n"
        elif op == "delete" and content is not None:
            cur[name] = None
        elif op == "add" and content is None:
            cur[name] = f"new {name} {text}\n"
        elif op == "rename" and content is not None:
            target = NAMES[(fi + 1 + li) % len(NAMES)]
            if cur.get(target) is None:
                cur[target], cur[name] = content, None
    return {k: v for k, v in cur.items() if v != files.get(k)}


_counter = itertools.count()
_repo: Repo | None = None


def _shared_repo() -> Repo:
    global _repo
    if _repo is None:
        root = tempfile.mkdtemp(prefix="forkyard-prop-")
        atexit.register(shutil.rmtree, root, True)
        _repo = init_repo(Path(root) / "r")
        commit_files(_repo, "main", dict(BASE), "base")
    return _repo


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(edit, min_size=1, max_size=4), st.lists(edit, min_size=1, max_size=4))
def test_random_edits_agree_with_git(ours_edits: list, theirs_edits: list) -> None:  # type: ignore[type-arg]
    repo = _shared_repo()
    n = next(_counter)
    ours_changes = apply(BASE, ours_edits) or {"a.txt": BASE["a.txt"] + "ours\n"}
    theirs_changes = apply(BASE, theirs_edits) or {"b.txt": BASE["b.txt"] + "theirs\n"}
    ours = commit_files(repo, f"o{n}", ours_changes, "ours", base="main")
    theirs = commit_files(repo, f"t{n}", theirs_changes, "theirs", base="main")

    ours_result = merge_commits(repo, ours, theirs)
    mt_clean, mt_tree, mt_paths = merge_tree_answer(repo, ours, theirs)
    assert ours_result.clean == mt_clean
    assert ours_result.tree == mt_tree
    assert ours_result.conflicted_paths == mt_paths
    covered = {p for c in ours_result.conflicts for p in c.paths}
    assert set(ours_result.conflicted_paths) <= covered

    if n % 3 == 0:  # a real worktree merge is slower: check every third example
        answer = git_merge_answer(repo, ours, theirs, repo.path.parent / f"wt{n}")
        assert answer.clean == ours_result.clean
        if answer.clean:
            assert answer.tree == ours_result.tree
        else:
            assert [p.replace(ours, "HEAD") for p in ours_result.conflicted_paths] == answer.conflicted


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(edit, min_size=1, max_size=4), st.lists(edit, min_size=1, max_size=4),
       st.lists(edit, min_size=0, max_size=3))
def test_batch_agrees_with_chained_merge_tree(
    first_edits: list, second_edits: list, third_edits: list  # type: ignore[type-arg]
) -> None:
    """A batch (fast path or merge-tree) gives the tree git gives, step by step."""
    from merge.transaction import Transaction

    repo = _shared_repo()
    n = next(_counter)
    names = []
    for k, edits in enumerate((first_edits, second_edits, third_edits)):
        changes = apply(BASE, edits) or {f"extra{k}/new{n}.txt": f"{k}\n"}
        commit_files(repo, f"s{n}-{k}", changes, f"source {k}", base="main")
        names.append(f"s{n}-{k}")
    report = Transaction(repo, "main", names, dry_run=True, semantic=False).run()
    cur = repo.rev_parse("main")
    for name, m in zip(names, report.merges, strict=True):
        clean, tree, paths = merge_tree_answer(repo, cur, repo.rev_parse(name))
        assert (m.status == "clean") == clean, name
        if not clean:
            assert sorted({p for c in m.conflicts for p in c.paths} & set(paths)) == paths
            continue
        assert m.tree == tree, name
        cur = repo.out("commit-tree", tree, "-p", cur, "-p", name, "-m", "m")
