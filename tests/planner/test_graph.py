"""The dependency graph: validation errors and implicit file conflicts."""

from __future__ import annotations

import pytest

from planner import CycleError, DuplicateTaskError, Task, UnknownDependencyError, build_graph
from planner.graph import globs_overlap, mentioned_files


def T(id: str, deps: list[str] | None = None, files: list[str] | None = None,
      description: str = "", minutes: float = 10) -> Task:
    return Task(id=id, depends_on=deps or [], files=files or [], description=description,
                estimated_minutes=minutes)


def test_unknown_dependency_is_named() -> None:
    with pytest.raises(UnknownDependencyError) as err:
        build_graph([T("a"), T("b", ["zzz"])])
    assert (err.value.task, err.value.dependency) == ("b", "zzz")
    assert str(err.value) == "task 'b' depends on unknown task 'zzz'"


def test_duplicate_id_is_named() -> None:
    with pytest.raises(DuplicateTaskError, match="'a'"):
        build_graph([T("a"), T("a")])


def test_every_cycle_is_reported_as_a_closed_path() -> None:
    tasks = [T("a", ["c"]), T("b", ["a"]), T("c", ["b"]), T("d", ["e"]), T("e", ["d"]), T("f")]
    with pytest.raises(CycleError) as err:
        build_graph(tasks)
    assert err.value.cycles == [["d", "e", "d"], ["a", "c", "b", "a"]]
    assert "a -> c -> b -> a" in str(err.value)


def test_self_dependency_is_a_cycle() -> None:
    with pytest.raises(CycleError) as err:
        build_graph([T("a", ["a"])])
    assert err.value.cycles == [["a", "a"]]


def test_number_of_cycles_listed_is_capped() -> None:
    # A complete digraph on 6 nodes has hundreds of simple cycles.
    ids = [f"n{i}" for i in range(6)]
    tasks = [T(i, [j for j in ids if j != i]) for i in ids]
    with pytest.raises(CycleError) as err:
        build_graph(tasks)
    assert 1 <= len(err.value.cycles) <= 10
    assert all(c[0] == c[-1] for c in err.value.cycles)


def test_to_networkx_has_dependency_edges() -> None:
    g = build_graph([T("a"), T("b", ["a"]), T("c", ["a", "b"])]).to_networkx()
    assert set(g.edges) == {("a", "b"), ("a", "c"), ("b", "c")}


@pytest.mark.parametrize(("a", "b", "overlap"), [
    ("src/user.py", "src/user.py", True),
    ("src/user.py", "src/api.py", False),
    ("src/**", "src/models/user.py", True),
    ("src/*.py", "src/models/user.py", False),  # * does not cross directories
    ("src/*.py", "src/user.py", True),
    ("src/models/**", "src/**/user.py", True),
    ("src/models/**", "src/api/**", False),
    ("src/*/user.py", "src/models/*.py", True),
    ("src/*/user.py", "src/models/*.ts", False),
    ("docs/*.md", "src/**", False),
])
def test_glob_overlap(a: str, b: str, overlap: bool) -> None:
    assert globs_overlap(a, b) is overlap
    assert globs_overlap(b, a) is overlap


def test_file_names_in_descriptions() -> None:
    assert mentioned_files("Update user.ts model, e.g. v1.5 via Node") == ["user.ts"]
    assert mentioned_files("Fix `src/api/users.py` and docs/api.md.") == ["src/api/users.py", "docs/api.md"]


def _conflicts(tasks: list[Task]) -> set[tuple[str, str, str]]:
    return {(c.a, c.b, c.reason) for c in build_graph(tasks).conflict_list()}


def test_descriptions_naming_the_same_file_conflict() -> None:
    tasks = [T("m", description="Update user.ts model"),
             T("v", description="Update user.ts validation"), T("x", description="Other work")]
    assert _conflicts(tasks) == {("m", "v", "both touch user.ts")}


def test_overlapping_globs_conflict_with_reason() -> None:
    tasks = [T("a", files=["src/models/**"]), T("b", files=["src/models/user.py"]),
             T("c", files=["src/api/**"]), T("d", description="tweak src/api/routes.py")]
    assert _conflicts(tasks) == {
        ("a", "b", "src/models/** overlaps src/models/user.py"),
        ("c", "d", "src/api/** overlaps src/api/routes.py"),
    }


def test_bare_file_name_matches_listed_path() -> None:
    tasks = [T("a", files=["src/models/user.py"]), T("b", description="Validate user.py fields")]
    assert _conflicts(tasks) == {("a", "b", "both touch src/models/user.py")}


def test_tasks_ordered_by_a_dependency_path_are_not_reported_as_conflicts() -> None:
    tasks = [T("a", files=["x.py"]), T("b", ["a"]), T("c", ["b"], files=["x.py"]),
             T("d", files=["x.py"])]
    assert {(a, b) for a, b, _ in _conflicts(tasks)} == {("a", "d"), ("c", "d")}
