"""WHAT runs WHEN: task files, the dependency graph, schedules and progress.  Pure.

``plan(load_tasks("tasks.yaml"), agents=4)`` returns a :class:`Plan`;
:func:`check_schedule` verifies one; :func:`aggregate_progress` summarises a run.
"""

from __future__ import annotations

from planner.check import check_schedule
from planner.errors import (
    CycleError,
    DuplicateTaskError,
    PlannerError,
    TaskFileError,
    UnknownDependencyError,
)
from planner.graph import TaskGraph, build_graph
from planner.loaders import load_tasks, parse_tasks
from planner.optimal import OptionalDependencyError
from planner.plans import Assignment, BadPlanRequestError, Batch, ImplicitDependency, Plan, plan
from planner.progress import ProgressSummary, TaskProgress, aggregate_progress
from planner.tasks import Agent, Limits, Setup, Task, TaskFile

__all__ = [
    "Agent",
    "Assignment",
    "BadPlanRequestError",
    "Batch",
    "CycleError",
    "DuplicateTaskError",
    "ImplicitDependency",
    "Limits",
    "OptionalDependencyError",
    "Plan",
    "PlannerError",
    "ProgressSummary",
    "Setup",
    "Task",
    "TaskFile",
    "TaskGraph",
    "TaskFileError",
    "TaskProgress",
    "UnknownDependencyError",
    "aggregate_progress",
    "build_graph",
    "check_schedule",
    "load_tasks",
    "parse_tasks",
    "plan",
]
