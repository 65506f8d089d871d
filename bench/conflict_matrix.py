"""The pairwise conflict matrix (``forkyard check``): 32 branches on a 5,000-file
repository, every pair, against one ``git merge-tree --write-tree`` process per pair.

    .venv/bin/python -m bench.conflict_matrix

Two branch sets, from bench.merge_batch's repository: the 32 feature branches (each edits
files of its own: every pair is clean), and the same with 8 of them also rewriting one
shared file (28 pairs conflict, and go through merge-tree).  Each verdict is checked
against merge-tree's before any time counts.  Semantic checks on and off.
"""

from __future__ import annotations

import tempfile
import time
from itertools import combinations
from pathlib import Path

from bench.merge_batch import setup
from fixtures.repos import commit_files
from gitproc.git import Repo, git
from merge.matrix import conflict_matrix

REPEAT = 3
N_SHARED = 8


def merge_tree_pairs(repo: Repo, names: list[str]) -> dict[tuple[str, str], bool]:
    """The baseline: one merge-tree per pair; clean or not."""
    out = {}
    for a, b in combinations(names, 2):
        r = git("merge-tree", "--write-tree", "--name-only", a, b, cwd=repo.common_dir,
                check=False)
        assert r.returncode in (0, 1), r.err
        out[(a, b)] = r.returncode == 0
    return out


def best(fn: object) -> float:
    times = []
    for _ in range(REPEAT):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="forkyard-bench-") as tmp:
        repo, names = setup(Path(tmp))
        shared = []
        for i, name in enumerate(names[:N_SHARED]):
            new = f"shared/{i:02d}"
            commit_files(repo, new, {"d000/f00000.txt": f"shared edit {i}\n"}, base=name)
            shared.append(new)
        for label, branch_set in (("own files (all 496 pairs clean)", names),
                                  (f"{N_SHARED} of them also rewrite one shared file",
                                   shared + names[N_SHARED:])):
            truth = merge_tree_pairs(repo, branch_set)
            m = conflict_matrix(repo, branch_set)
            assert {(p.a, p.b): p.status == "clean" for p in m.pairs} == truth
            t_base = best(lambda s=branch_set: merge_tree_pairs(repo, s))
            t_ours = best(lambda s=branch_set: conflict_matrix(repo, s))
            t_plain = best(lambda s=branch_set: conflict_matrix(repo, s, semantic=False))
            bad = sum(1 for ok in truth.values() if not ok)
            rows.append({
                "figure": f"pairwise matrix, 32 branches, 5,000 files: {label}; "
                          f"{bad} conflicting pairs",
                "baseline": f"git merge-tree per pair (496): {t_base:.3f}s",
                "measured": f"{t_ours:.3f}s (no semantic: {t_plain:.3f}s)",
                "ratio": round(t_base / t_ours, 1)})
    print("| figure | baseline | measured | ratio (x faster) |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['figure']} | {r['baseline']} | {r['measured']} | {r['ratio']} |")
    return rows


if __name__ == "__main__":
    main()
