"""Analysis: bounds, speedup, score factors, risks and the recommendation."""

from __future__ import annotations

from planner import Task, plan


def T(id: str, minutes: float = 10, deps: list[str] | None = None,
      files: list[str] | None = None) -> Task:
    return Task(id=id, estimated_minutes=minutes, depends_on=deps or [], files=files or [])


def test_design_json_fields_are_all_present() -> None:
    doc = plan([T("a", 20), T("b", 10, ["a"]), T("c", 30)], agents=2).model_dump(mode="json")
    for field in ("agents", "goal", "total_work", "makespan", "lower_bound", "critical_path",
                  "critical_path_length", "estimated_speedup", "parallelizable", "score",
                  "implicit_dependencies", "batches", "assignments"):
        assert field in doc
    assert set(doc["assignments"][0]) == {"task", "agent", "start", "end"}


def test_critical_path_and_total_work() -> None:
    p = plan([T("a", 20), T("b", 10, ["a"]), T("c", 25), T("d", 15, ["b"])], agents=4)
    assert p.total_work == 70
    assert p.critical_path == ["a", "b", "d"]
    assert p.critical_path_length == 45


def test_lower_bound_is_work_over_agents_when_that_dominates() -> None:
    p = plan([T(f"t{i}", 10) for i in range(9)], agents=2)
    assert p.lower_bound == 45
    assert p.makespan == 50


def test_lower_bound_is_the_heaviest_file_when_that_dominates() -> None:
    tasks = [T(f"t{i}", 10, files=["src/settings.py"]) for i in range(4)] + [T("x", 5)]
    p = plan(tasks, agents=4)
    assert p.lower_bound == 40
    assert p.makespan == 40
    assert any("src/settings.py" in r for r in p.risks)


def test_speedup_is_bracketed_by_its_bounds() -> None:
    tasks = [T("a", 30), T("b", 30), T("c", 30, ["a"]), T("d", 10, ["b"]), T("e", 5)]
    p = plan(tasks, agents=2)
    lo, hi = p.speedup_bounds
    assert p.estimated_speedup == round(p.total_work / p.makespan, 3)
    assert lo <= p.estimated_speedup <= hi
    assert hi == round(p.total_work / p.lower_bound, 3)


def test_a_chain_is_not_parallelizable_and_says_so() -> None:
    p = plan([T("a"), T("b", deps=["a"]), T("c", deps=["b"])], agents=4)
    assert p.estimated_speedup == 1.0
    assert not p.parallelizable
    assert p.recommendation.startswith("sequential is better: speedup below 1.5x")
    assert p.score_factors["dependency_depth"] == 0.0
    assert p.score_factors["independence"] == 0.0


def test_independent_even_tasks_score_high() -> None:
    p = plan([T(f"t{i}", 10) for i in range(8)], agents=4)
    assert p.parallelizable and p.estimated_speedup == 4.0
    assert p.score_factors["balance"] == 1.0
    assert p.score >= 85
    assert p.recommendation.startswith("parallel with 4 agents")


def test_score_drops_with_file_conflicts() -> None:
    free = plan([T(f"t{i}", 10) for i in range(8)], agents=4)
    locked = plan([T(f"t{i}", 10, files=["same.py"] if i < 4 else []) for i in range(8)], agents=4)
    assert locked.score_factors["file_conflicts"] == 0.5
    assert locked.score < free.score


def test_risks_name_a_dominant_task_and_idle_agents() -> None:
    p = plan([T("huge", 100), T("a", 5), T("b", 5)], agents=4)
    assert any("'huge'" in r and "splitting" in r for r in p.risks)
    assert any("agent(s) stay idle" in r for r in p.risks)
    assert p.recommendation.startswith("sequential is better")


def test_default_estimates_are_a_risk() -> None:
    p = plan([Task(id="a"), Task(id="b", estimated_minutes=5)], agents=2)
    assert any("no estimate" in r and ": a" in r for r in p.risks)
