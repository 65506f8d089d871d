"""Reading task files: YAML, JSON, and spec-kit style markdown task lists.

:func:`load_tasks` picks the format from the extension (``.yaml``/``.yml``, ``.json``,
``.md``/``.markdown``; anything else is sniffed); :func:`parse_tasks` parses text.  A
YAML/JSON file is a :class:`~planner.tasks.TaskFile` mapping or a bare list of tasks.
Every failure is a :class:`~planner.errors.TaskFileError` with a one-line reason.

Markdown (spec-kit ``tasks.md``) rules, kept deliberately simple:

- A task is a list item with a checkbox: ``- [ ] T001 [P] [US1] Description``.  The id is
  the first word after the box; labels such as ``[US1]`` are dropped; ``[P]`` sets
  ``parallel``.  Items without an id get ``task-<n>``.  Checked items (``[x]``) are done:
  they are left out, and dependencies on them are dropped.
- ``depends on T001``, ``(depends on T001, T002)``, ``after T003``, ``requires T004``
  in the line add dependencies; so do lines of a "Dependencies" section such as
  ``T008 blocks T009, T015``, ``T004-T007 before T008`` or ``T010 depends on T009``.
- Paths in backticks, and path-like words (``src/models/user.py``, ``user.ts``) become the
  task's ``files``.  ``(20 min)``, ``(~1.5h)`` or ``[est: 20m]`` set ``estimated_minutes``.
- Phases: a heading containing "Phase" starts a new phase, and every task in a phase
  depends on the tasks of the phase before (phases run in order).  Inside a phase a task
  without ``[P]`` waits for the tasks listed before it; ``[P]`` tasks wait only for the
  earlier non-``[P]`` tasks, so consecutive ``[P]`` tasks run side by side.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from planner.errors import TaskFileError
from planner.graph import is_glob, mentioned_files, normalize_path
from planner.tasks import TaskFile

FORMATS = {".yaml": "yaml", ".yml": "yaml", ".json": "json", ".md": "markdown",
           ".markdown": "markdown"}


def load_tasks(path: str | Path) -> TaskFile:
    """Read and validate the task file at ``path``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TaskFileError(str(p), "no such file") from None
    except IsADirectoryError:
        raise TaskFileError(str(p), "is a directory, not a task file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TaskFileError(str(p), f"cannot read: {exc}") from None
    return parse_tasks(text, FORMATS.get(p.suffix.lower(), "auto"), source=str(p))


def parse_tasks(text: str, fmt: str = "auto", *, source: str = "<string>") -> TaskFile:
    """Parse task-file ``text`` in ``fmt`` (yaml, json, markdown/md, or auto)."""
    fmt = {"yml": "yaml", "md": "markdown"}.get(fmt, fmt)
    if fmt == "auto":
        fmt = "markdown" if _CHECKBOX.search(text) else "yaml"
    if fmt == "markdown":
        data: Any = parse_markdown(text, source=source)
    elif fmt == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TaskFileError(source, f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    elif fmt == "yaml":
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise TaskFileError(source, f"invalid YAML: {problem}{where}") from None
    else:
        raise TaskFileError(source, f"unknown task file format {fmt!r} (yaml, json or markdown)")
    if data is None:
        raise TaskFileError(source, "empty task file")
    if isinstance(data, list):
        data = {"tasks": data}
    if not isinstance(data, dict):
        raise TaskFileError(source, f"expected a mapping with 'tasks' or a list of tasks, got {type(data).__name__}")
    if "tasks" not in data:
        raise TaskFileError(source, "no 'tasks' list")
    try:
        return TaskFile.model_validate(data)
    except ValidationError as exc:
        raise TaskFileError(source, summarize(exc, data)) from None


def summarize(exc: ValidationError, data: Any) -> str:
    """One line for a pydantic error: the first problem with its field path and task id."""
    errors = exc.errors()
    first = errors[0]
    loc = first["loc"]
    parts: list[str] = []
    for k in loc:
        parts.append(f"[{k}]" if isinstance(k, int) else ("." if parts else "") + str(k))
    where = "".join(parts) or "file"
    # Name the task by id when the path goes through one: "tasks[1] (id 'api')".
    if len(loc) >= 2 and loc[0] == "tasks" and isinstance(loc[1], int):
        try:
            tid = data["tasks"][loc[1]].get("id")
        except (AttributeError, IndexError, KeyError, TypeError):
            tid = None
        if isinstance(tid, str):
            where += f" (task {tid!r})"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown field"
    return f"{where}: {msg}{more}"


# -- spec-kit markdown -----------------------------------------------------------------

_CHECKBOX = re.compile(r"^\s*[-*+]\s+\[( |x|X)\]\s+(.*)$", re.MULTILINE)
_ID = re.compile(r"^([A-Za-z][A-Za-z0-9_-]*\d[A-Za-z0-9._-]*|[A-Za-z]{1,4}-\d+)\b[:.]?\s*")
_LABEL = re.compile(r"^\[([^\]]+)\]\s*")
_HEADING = re.compile(r"^\s*#{1,6}\s+(.*)$")
_IDREF = r"[A-Za-z][A-Za-z0-9_-]*\d[A-Za-z0-9._-]*"
_IDLIST = rf"{_IDREF}(?:\s*(?:-|–|\.\.)\s*{_IDREF})?(?:\s*(?:,|and|&)\s*{_IDREF}(?:\s*(?:-|–|\.\.)\s*{_IDREF})?)*"
_DEPENDS = re.compile(rf"\(?\b(?:depends on|depend on|after|requires|blocked by)\s*:?\s*({_IDLIST})\)?",
                      re.IGNORECASE)
_RULE = re.compile(rf"({_IDLIST})[^A-Za-z0-9]*\s+(blocks|before|depends on|requires|after|blocked by)\s+({_IDLIST})",
                   re.IGNORECASE)
_ESTIMATE = re.compile(r"[(\[]\s*(?:est(?:imate)?\s*:?\s*)?~?\s*(\d+(?:\.\d+)?)\s*"
                       r"(h|hr|hrs|hours?|m|min|mins|minutes?)\s*[)\]]", re.IGNORECASE)
_BACKTICK = re.compile(r"`([^`]+)`")


def _expand(ids: str, known: list[str]) -> list[str]:
    """``T004-T007, T010`` -> the ids, ranges expanded over the ids in the file."""
    out: list[str] = []
    for part in re.split(r"\s*(?:,|\band\b|&)\s*", ids):
        m = re.fullmatch(rf"({_IDREF})\s*(?:-|–|\.\.)\s*({_IDREF})", part.strip())
        if m and m.group(1) in known and m.group(2) in known:
            a, b = known.index(m.group(1)), known.index(m.group(2))
            out.extend(known[min(a, b):max(a, b) + 1])
        elif part.strip():
            out.append(part.strip())
    return out


def _files_in(text: str) -> list[str]:
    files: list[str] = []
    for tok in _BACKTICK.findall(text):
        tok = tok.strip()
        if " " not in tok and ("/" in tok or is_glob(tok) or mentioned_files(tok)):
            if not tok.startswith("/") or is_glob(tok):  # "/api/users" is an endpoint
                files.append(normalize_path(tok))
    files.extend(m for m in mentioned_files(_BACKTICK.sub(" ", text)) if not m.startswith("/"))
    return list(dict.fromkeys(files))


def parse_markdown(text: str, *, source: str = "<string>") -> dict[str, Any]:
    """A spec-kit task list as task-file data (see the module docstring for the rules)."""
    tasks: list[dict[str, Any]] = []
    done: set[str] = set()
    phase_of: list[int] = []
    phase = 0
    seen_tasks_in_phase = False
    rules: list[tuple[str, str, str]] = []
    in_dependencies = False
    for line in text.splitlines():
        h = _HEADING.match(line)
        if h:
            title = h.group(1).lower()
            in_dependencies = "depend" in title
            if "phase" in title and seen_tasks_in_phase:
                phase += 1
                seen_tasks_in_phase = False
            continue
        box = _CHECKBOX.match(line)
        if not box:
            if in_dependencies:
                rules.extend((a, verb.lower(), b) for a, verb, b in _RULE.findall(line))
            continue
        checked, rest = box.group(1) != " ", box.group(2).strip()
        m = _ID.match(rest)
        tid = m.group(1) if m else f"task-{len(tasks) + len(done) + 1}"
        if m:
            rest = rest[m.end():]
        parallel = False
        while (lab := _LABEL.match(rest)) is not None:
            parallel |= lab.group(1).strip().upper() == "P"
            rest = rest[lab.end():]
        if checked:
            done.add(tid)
            continue
        deps: list[str] = []
        for dm in _DEPENDS.finditer(rest):
            deps.extend(_expand(dm.group(1), []))
        estimate = _ESTIMATE.search(rest)
        description = _DEPENDS.sub("", _ESTIMATE.sub("", rest))
        description = re.sub(r"\s+", " ", description).strip().rstrip(" ,;")
        task: dict[str, Any] = {"id": tid, "description": description,
                                "depends_on": deps, "files": _files_in(description),
                                "parallel": parallel}
        if estimate:
            value = float(estimate.group(1))
            task["estimated_minutes"] = value * 60 if estimate.group(2).lower().startswith("h") else value
        tasks.append(task)
        phase_of.append(phase)
        seen_tasks_in_phase = True
    if not tasks and not done:
        raise TaskFileError(source, "no tasks found (expected lines like '- [ ] T001 Description')")
    known = [t["id"] for t in tasks]
    for a, verb, b in rules:
        left, right = _expand(a, known), _expand(b, known)
        before, after = (left, right) if verb in ("blocks", "before") else (right, left)
        for t in tasks:
            if t["id"] in after:
                t["depends_on"].extend(x for x in before if x != t["id"])
    _add_order(tasks, phase_of)
    for t in tasks:
        t["depends_on"] = [d for d in dict.fromkeys(t["depends_on"]) if d not in done and d != t["id"]]
    return {"tasks": tasks}


def _add_order(tasks: list[dict[str, Any]], phase_of: list[int]) -> None:
    """Phase barriers and the in-phase order of non-[P] tasks (module docstring)."""
    prev_phase: list[str] = []  # the tasks of the previous phase that end it
    k = 0
    while k < len(tasks):
        j = k
        while j < len(tasks) and phase_of[j] == phase_of[k]:
            j += 1
        group = tasks[k:j]
        since_barrier: list[str] = []  # [P] tasks since the last non-[P] one
        barrier: list[str] = list(prev_phase)
        for t in group:
            t["depends_on"].extend(barrier)
            if t["parallel"]:
                since_barrier.append(t["id"])
            else:
                t["depends_on"].extend(since_barrier)
                barrier, since_barrier = [t["id"]], []
        # The tasks that end the phase: the trailing [P] run, else the last sequential task.
        prev_phase = since_barrier or barrier
        k = j
