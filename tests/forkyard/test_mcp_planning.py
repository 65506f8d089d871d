"""The four planning tools as plain functions (the same code the MCP server registers)."""

from __future__ import annotations

from typing import Any

import pytest
from mcp.server.mcpserver.exceptions import ToolError

import planner
from forkyard.mcp.errors import ToolInputError as PlanningInputError
from forkyard.mcp.errors import reporting_errors
from forkyard.mcp.models import DependencyGraph, Goal, Subtask
from forkyard.mcp.planning import (
    aggregate_progress,
    analyze_task_parallelizability,
    create_dependency_graph,
    optimize_batch_distribution,
)

CHAIN: list[dict[str, Any]] = [  # 1 <- 2 <- {3, 4}
    {"id": "1", "description": "schema"},
    {"id": "2", "description": "api", "dependsOn": ["1"]},
    {"id": "3", "description": "web", "dependsOn": ["2"]},
    {"id": "4", "description": "cli", "dependsOn": ["2"]},
]
LOADS: list[dict[str, Any]] = [{"id": "a", "estimatedMinutes": 60}, {"id": "b", "estimatedMinutes": 30},
         {"id": "c", "estimatedMinutes": 10}, {"id": "d", "estimatedMinutes": 10}]


def batches(result: Any) -> list[list[str]]:
    return [b.tasks for b in sorted(result.suggested_batches if hasattr(result, "suggested_batches")
                                    else result.batches, key=lambda b: b.batch_number)]


# -- analyze_task_parallelizability --------------------------------------------------


def test_analyze_chain_gives_one_batch_per_level() -> None:
    r = analyze_task_parallelizability("build a feature", CHAIN)
    assert batches(r) == [["1"], ["2"], ["3", "4"]]
    assert [b.batch_number for b in r.suggested_batches] == [1, 2, 3]
    assert r.critical_path == ["1", "2", "3"]
    assert not r.has_cycles and r.cycles == [] and r.excluded_tasks == []
    # 120 minutes of work, 90 on the critical path: 1.33x, below the 1.5x worth merging.
    assert r.estimated_speedup == pytest.approx(120 / 90, abs=1e-3)
    assert r.parallelizable is False
    assert 0 <= r.parallelization_score <= 100
    assert "build a feature" in r.reasoning and "1 -> 2 -> 3" in r.reasoning


def test_analyze_accepts_numeric_ids_and_reports_camel_case() -> None:
    r = analyze_task_parallelizability("x", [{"id": 1}, {"id": 2, "dependsOn": [1]}])
    dumped = r.model_dump(mode="json")
    assert dumped["suggestedBatches"] == [{"batchNumber": 1, "tasks": ["1"]},
                                          {"batchNumber": 2, "tasks": ["2"]}]
    assert {"parallelizationScore", "estimatedSpeedup", "hasCycles", "implicitDependencies",
            "criticalPath"} <= set(dumped)


def test_analyze_independent_tasks_are_parallelizable() -> None:
    tasks: list[dict[str, Any]] = [{"id": f"t{i}", "estimatedMinutes": 20} for i in range(4)]
    r = analyze_task_parallelizability("x", tasks, maxParallelAgents=4)
    assert batches(r) == [["t0", "t1", "t2", "t3"]]
    assert r.parallelizable and r.estimated_speedup == pytest.approx(4.0)
    one = analyze_task_parallelizability("x", tasks, maxParallelAgents=1)
    assert not one.parallelizable and one.estimated_speedup == pytest.approx(1.0)


def test_analyze_without_subtasks_is_a_clear_error() -> None:
    with pytest.raises(PlanningInputError, match="subtasks is empty"):
        analyze_task_parallelizability("x", [])


def test_analyze_reports_a_cycle_and_plans_the_rest() -> None:
    tasks: list[dict[str, Any]] = [
        {"id": "a", "dependsOn": ["b"]},
        {"id": "b", "dependsOn": ["a"]},
        {"id": "c", "dependsOn": ["a"]},  # behind the cycle
        {"id": "d"},
        {"id": "e", "dependsOn": ["d"]},
    ]
    r = analyze_task_parallelizability("x", tasks)
    assert r.has_cycles and r.cycles == [["a", "b", "a"]]
    assert r.excluded_tasks == ["a", "b", "c"]
    assert batches(r) == [["d"], ["e"]]
    assert r.critical_path == ["d", "e"]
    assert "a -> b -> a" in r.risks[0] and "a -> b -> a" in r.reasoning
    assert r.parallelizable is False


def test_analyze_all_tasks_cyclic_gives_empty_batches() -> None:
    r = analyze_task_parallelizability("x", [{"id": "a", "dependsOn": ["a"]}])
    assert r.has_cycles and r.cycles == [["a", "a"]]
    assert r.suggested_batches == [] and r.excluded_tasks == ["a"]
    assert "Break the cycle" in r.reasoning


def test_analyze_finds_implicit_dependencies_from_files_and_descriptions() -> None:
    tasks: list[dict[str, Any]] = [{"id": "model", "files": ["src/models/user.ts"]},
             {"id": "api", "description": "Update user.ts validation"},
             {"id": "docs", "files": ["docs/**"]}]
    r = analyze_task_parallelizability("x", tasks)
    pairs = {(d.from_, d.to) for d in r.implicit_dependencies}
    assert pairs in ({("model", "api")}, {("api", "model")})
    assert "user.ts" in r.implicit_dependencies[0].reason
    assert all(not {"model", "api"} <= set(b) for b in batches(r))


@pytest.mark.parametrize("bad, reason", [
    ([{"id": "a", "dependsOn": ["zz"]}], "depends on unknown task 'zz'"),
    ([{"id": "a"}, {"id": "a"}], "duplicate task id 'a'"),
    ([{"id": "a", "estimatedMinutes": 0}], "subtasks[0].estimatedMinutes"),
    ([{"id": "a", "depends_on_tasks": []}], "unknown field"),
])
def test_analyze_bad_subtasks_name_the_problem(bad: list[dict[str, Any]], reason: str) -> None:
    with pytest.raises((PlanningInputError, planner.PlannerError)) as info:
        analyze_task_parallelizability("x", bad)
    assert reason in str(info.value) and "\n" not in str(info.value)


# -- create_dependency_graph ---------------------------------------------------------


def test_graph_nodes_edges_and_critical_path() -> None:
    r = create_dependency_graph(CHAIN)
    assert [n.id for n in r.graph.nodes] == ["1", "2", "3", "4"]
    assert {(e.from_, e.to) for e in r.graph.edges} == {("1", "2"), ("2", "3"), ("2", "4")}
    assert r.critical_path == ["1", "2", "3"] and not r.has_cycles
    dumped = r.model_dump(mode="json")
    assert dumped["graph"]["edges"][0] == {"from": "1", "to": "2"}


def test_graph_implicit_dependencies_only_when_asked() -> None:
    tasks: list[dict[str, Any]] = [{"id": "a", "files": ["x.py"]}, {"id": "b", "files": ["x.py"]}]
    assert [(d.from_, d.to) for d in create_dependency_graph(tasks).implicit_dependencies] == [("a", "b")]
    assert create_dependency_graph(tasks, detectImplicit=False).implicit_dependencies == []


def test_graph_reports_cycles_but_lists_every_edge() -> None:
    tasks: list[dict[str, Any]] = [{"id": "a", "dependsOn": ["b"]}, {"id": "b", "dependsOn": ["a"]}, {"id": "c"}]
    r = create_dependency_graph(tasks)
    assert r.has_cycles and r.cycles == [["a", "b", "a"]] and r.excluded_tasks == ["a", "b"]
    assert {(e.from_, e.to) for e in r.graph.edges} == {("b", "a"), ("a", "b")}
    assert r.critical_path == ["c"]


def test_implicit_dependencies_fed_back_as_edges_never_close_a_cycle() -> None:
    # Three mutually conflicting tasks plus explicit order c -> a: the implicit pairs are
    # oriented along a topological order, so adding them all as edges stays acyclic.
    tasks: list[dict[str, Any]] = [{"id": "a", "files": ["x.py"], "dependsOn": ["c"]}, {"id": "b", "files": ["x.py"]},
             {"id": "c", "files": ["y.py"]}, {"id": "d", "files": ["y.py", "x.py"]}]
    g = create_dependency_graph(tasks)
    edges = [*g.graph.edges, *({"from": d.from_, "to": d.to} for d in g.implicit_dependencies)]
    r = optimize_batch_distribution(tasks, 4, "minimize-time", DependencyGraph(edges=edges))
    assert sum(len(b) for b in batches(r)) == 4


# -- optimize_batch_distribution -----------------------------------------------------


def test_balance_load_reaches_the_optimum() -> None:
    r = optimize_batch_distribution(LOADS, 2, "balance-load")
    assert sorted(a.total_minutes for a in r.agent_assignments) == [50.0, 60.0]
    assert r.estimated_makespan == 60.0 and r.lower_bound == 60.0
    assert [a.agent_id for a in r.agent_assignments] == ["agent-1", "agent-2"]
    assigned = sorted(t for a in r.agent_assignments for t in a.tasks)
    assert assigned == ["a", "b", "c", "d"]


@pytest.mark.parametrize("goal", ["minimize-time", "minimize-conflicts", "balance-load"])
def test_tasks_naming_the_same_file_never_share_a_batch(goal: Goal) -> None:
    tasks: list[dict[str, Any]] = [{"id": "a", "files": ["src/app.py"]}, {"id": "b", "files": ["src/app.py"]},
             {"id": "c", "description": "fix src/app.py imports"}, {"id": "d", "files": ["README.md"]},
             {"id": "e", "files": ["src/*.py"]}, {"id": "f"}]
    r = optimize_batch_distribution(tasks, 3, goal)
    touching_app = {"a", "b", "c", "e"}
    for batch in batches(r):
        assert len(touching_app & set(batch)) <= 1, batch
    assert sorted(t for b in batches(r) for t in b) == ["a", "b", "c", "d", "e", "f"]


def test_minimize_conflicts_orders_conflicting_tasks_in_time() -> None:
    tasks: list[dict[str, Any]] = [{"id": "a", "files": ["x.py"], "estimatedMinutes": 10},
             {"id": "b", "files": ["x.py"], "estimatedMinutes": 10}]
    r = optimize_batch_distribution(tasks, 2, "minimize-conflicts")
    assert batches(r) in ([["a"], ["b"]], [["b"], ["a"]])
    assert r.estimated_makespan == 20.0


def test_dependency_graph_edges_add_dependencies() -> None:
    tasks: list[dict[str, Any]] = [{"id": "a"}, {"id": "b"}]
    assert batches(optimize_batch_distribution(tasks, 2, "minimize-time")) == [["a", "b"]]
    graph = {"nodes": [], "edges": [{"from": "b", "to": "a"}]}
    r = optimize_batch_distribution(tasks, 2, "minimize-time", graph)
    assert batches(r) == [["b"], ["a"]] and r.estimated_makespan == 60.0


def test_dependency_graph_edge_to_unknown_task_is_an_error() -> None:
    with pytest.raises(PlanningInputError, match="unknown task 'zz'"):
        optimize_batch_distribution([{"id": "a"}], 1, "minimize-time",
                                    DependencyGraph(edges=[{"from": "zz", "to": "a"}]))


def test_optimize_fails_on_a_cycle_naming_it() -> None:
    with pytest.raises(planner.CycleError, match="a -> b -> a"):
        optimize_batch_distribution([{"id": "a", "dependsOn": ["b"]}, {"id": "b", "dependsOn": ["a"]}],
                                    2, "minimize-time")


def test_idle_agents_are_listed_with_no_tasks() -> None:
    r = optimize_batch_distribution([{"id": "a"}], 3, "minimize-time")
    assert [(a.tasks, a.total_minutes) for a in r.agent_assignments] == [(["a"], 30.0), ([], 0.0), ([], 0.0)]


# -- aggregate_progress --------------------------------------------------------------

PROGRESS: list[dict[str, Any]] = [
    {"agentId": "ann", "currentTask": "a", "percentComplete": 50, "status": "running"},
    {"agentId": "bob", "currentTask": "b", "percentComplete": 100, "status": "completed"},
]
SIZED: list[dict[str, Any]] = [{"id": "a", "estimatedMinutes": 30}, {"id": "b", "estimatedMinutes": 10},
         {"id": "c", "estimatedMinutes": 60, "dependsOn": ["a"]}]


def test_progress_strategies_differ_as_defined() -> None:
    simple = aggregate_progress(PROGRESS, "simple", SIZED)
    weighted = aggregate_progress(PROGRESS, "weighted", SIZED)
    critical = aggregate_progress(PROGRESS, "critical-path", SIZED)
    assert simple.overall_progress == pytest.approx(100 * (0.5 + 1 + 0) / 3, abs=0.01)
    assert weighted.overall_progress == pytest.approx(100 * (15 + 10) / 100, abs=0.01)
    # Critical path a -> c is 90 min; 15 of it is done.
    assert critical.overall_progress == pytest.approx(100 * 15 / 90, abs=0.01)
    # Remaining: 15 (a) + 60 (c) in sequence = 75 > remaining work / 2 agents.
    assert simple.estimated_time_remaining == pytest.approx(75.0)
    assert simple.bottlenecks[0].task_id == "a" and simple.bottlenecks[0].agent_id == "ann"


def test_progress_without_tasks_counts_reported_tasks_equally() -> None:
    r = aggregate_progress(PROGRESS, "weighted")
    assert r.overall_progress == pytest.approx(75.0)
    assert r.estimated_time_remaining == pytest.approx(15.0)


def test_blocked_and_failed_agents_are_bottlenecks() -> None:
    reports: list[dict[str, Any]] = [{"agentId": "x", "currentTask": "a", "percentComplete": 20, "status": "blocked"},
               {"agentId": "y", "currentTask": "b", "percentComplete": 40, "status": "failed"},
               {"agentId": "z", "status": "idle"}]
    r = aggregate_progress(reports, "simple")
    by_task = {b.task_id: b for b in r.bottlenecks}
    assert "blocked" in by_task["a"].reason and by_task["a"].agent_id == "x"
    assert "failed" in by_task["b"].reason and by_task["b"].agent_id == "y"


@pytest.mark.parametrize("reports, tasks, reason", [
    ([], None, "agentProgresses is empty"),
    ([{"agentId": "x", "currentTask": "a"}, {"agentId": "x", "currentTask": "b"}], None,
     "agent 'x' is reported twice"),
    ([{"agentId": "x", "currentTask": "a"}, {"agentId": "y", "currentTask": "a"}], None,
     "task 'a' is reported by agents 'x' and 'y'"),
    ([{"agentId": "x", "currentTask": "zz"}], [{"id": "a"}], "not in tasks: zz"),
    ([{"agentId": "x", "percentComplete": 150}], None, "agentProgresses[0].percentComplete"),
])
def test_progress_bad_input_names_the_problem(reports: list[dict[str, Any]], tasks: Any, reason: str) -> None:
    with pytest.raises(PlanningInputError) as info:
        aggregate_progress(reports, "simple", tasks)
    assert reason in str(info.value)


# -- error reporting -----------------------------------------------------------------


def test_reporting_errors_turns_failures_into_one_line_tool_errors() -> None:
    tool = reporting_errors(analyze_task_parallelizability)
    with pytest.raises(ToolError, match=r"^subtasks is empty"):
        tool("x", [])

    def crash() -> None:
        raise IndexError("list index\nout of range")

    with pytest.raises(ToolError, match=r"^internal error: IndexError: list index out of range$"):
        reporting_errors(crash)()


def test_subtask_model_round_trips_camel_case() -> None:
    s = Subtask.model_validate({"id": "a", "dependsOn": ["b"], "estimatedMinutes": 5})
    assert s.to_task().depends_on == ["b"] and s.to_task().estimated_minutes == 5
    assert "estimated_minutes" not in Subtask(id="a").to_task().model_fields_set


