"""Loading task files: YAML, JSON, spec-kit markdown, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from planner import TaskFileError, load_tasks, parse_tasks

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


def test_yaml_and_json_examples_load_the_same_tasks() -> None:
    y = load_tasks(EXAMPLES / "tasks.yaml")
    j = load_tasks(EXAMPLES / "tasks.json")
    assert y == j
    api = next(t for t in y.tasks if t.id == "api")
    assert api.depends_on == ["model"]
    assert api.files == ["src/api/**"]


def test_bare_list_of_tasks_is_accepted() -> None:
    tf = parse_tasks("- id: a\n- id: b\n  depends_on: a\n", "yaml")
    assert [t.id for t in tf.tasks] == ["a", "b"]
    assert tf.tasks[1].depends_on == ["a"]
    assert tf.tasks[0].estimated_minutes == 30


def test_unknown_field_is_one_line_with_field_path_and_task_id() -> None:
    with pytest.raises(TaskFileError) as err:
        parse_tasks("tasks:\n  - id: a\n  - id: b\n    estimate: 5\n", "yaml", source="t.yaml")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("t.yaml: tasks[1].estimate (task 'b'): unknown field")


def test_bad_value_names_the_field() -> None:
    with pytest.raises(TaskFileError, match=r"tasks\[0\]\.estimated_minutes \(task 'a'\): Input should be greater than 0"):
        parse_tasks('{"tasks": [{"id": "a", "estimated_minutes": -1}]}', "json")


@pytest.mark.parametrize(("text", "fmt", "reason"), [
    ("tasks: [", "yaml", "invalid YAML"),
    ('{"tasks": ', "json", "invalid JSON"),
    ("", "yaml", "empty task file"),
    ("defaults: {}\n", "yaml", "no 'tasks' list"),
    ("42", "json", "expected a mapping"),
    ("just prose\n", "markdown", "no tasks found"),
])
def test_malformed_files_raise_task_file_error(text: str, fmt: str, reason: str) -> None:
    with pytest.raises(TaskFileError) as err:
        parse_tasks(text, fmt)
    assert reason in str(err.value)
    assert "\n" not in str(err.value)
    assert err.value.exit_code == 2


def test_missing_file_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(TaskFileError, match="no such file"):
        load_tasks(tmp_path / "nope.yaml")


MD = """\
# Tasks

## Phase 1: Setup
- [ ] T001 Create project structure in `src/` (10 min)
- [ ] T002 [P] Configure linting in `pyproject.toml`
- [ ] T003 [P] [US1] Add CI in .github/workflows/ci.yml (~1.5h)

## Phase 2: Core
- [ ] T004 [P] User model in src/models/user.py (depends on T001)
- [x] T005 Already done
- [ ] T006 [P] Service in src/services/user_service.py (depends on T004, T005)
- [ ] T007 Endpoint in src/api/users.py
- [ ] T008 [P] Docs for user.py

## Dependencies
- T004 blocks T008
"""


def test_markdown_ids_markers_files_and_estimates() -> None:
    tf = parse_tasks(MD, "markdown")
    tasks = {t.id: t for t in tf.tasks}
    assert list(tasks) == ["T001", "T002", "T003", "T004", "T006", "T007", "T008"]
    assert tasks["T001"].files == ["src/**"]
    assert tasks["T001"].estimated_minutes == 10
    assert tasks["T003"].estimated_minutes == 90
    assert tasks["T003"].files == [".github/workflows/ci.yml"]
    assert tasks["T003"].description == "Add CI in .github/workflows/ci.yml"
    assert tasks["T002"].parallel and not tasks["T001"].parallel
    assert tasks["T004"].files == ["src/models/user.py"]
    assert tasks["T008"].files == ["user.py"]


def test_markdown_dependencies_phases_and_done_tasks() -> None:
    tasks = {t.id: t for t in parse_tasks(MD, "markdown").tasks}
    # [P] tasks in phase 1 wait only for the sequential T001 before them.
    assert tasks["T002"].depends_on == ["T001"]
    assert tasks["T003"].depends_on == ["T001"]
    # Phase 2 starts after the tasks that end phase 1 (the trailing [P] run).
    assert set(tasks["T004"].depends_on) == {"T001", "T002", "T003"}
    # The done task T005 is dropped from the dependencies.
    assert set(tasks["T006"].depends_on) == {"T004", "T002", "T003"}
    # A sequential task waits for every task before it in its phase.
    assert {"T004", "T006"} <= set(tasks["T007"].depends_on)
    # "T004 blocks T008" from the Dependencies section.
    assert "T004" in tasks["T008"].depends_on
    assert "T007" in tasks["T008"].depends_on


def test_markdown_example_file_loads() -> None:
    tf = load_tasks(EXAMPLES / "tasks.md")
    assert len(tf.tasks) == 13
    assert "T008" in next(t for t in tf.tasks if t.id == "T009").depends_on


def test_auto_format_sniffs_markdown(tmp_path: Path) -> None:
    f = tmp_path / "TODO.txt"
    f.write_text("- [ ] T1 First\n- [ ] T2 Second (depends on T1)\n")
    tasks = load_tasks(f).tasks
    assert [t.depends_on for t in tasks] == [[], ["T1"]]
