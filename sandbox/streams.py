"""Reading what an agent CLI says it is doing: its event stream, line by line.

Claude Code (``-p --output-format stream-json``), Codex (``exec --json``) and Gemini CLI
(``-o stream-json``) print one JSON event per line; aider prints plain text, of which two
kinds of lines matter (``Applied edit to <path>``, ``Tokens: N sent, M received.``).
:class:`StreamReader` turns each line into a short activity for the live display and
``status`` (the tool the agent runs, the file it edits) and keeps the agent's final
message and its token usage for the run JSON and the report.

Everything here is the agent's output: hostile input.  A line that does not parse, or
parses to something unexpected, is simply not an event; nothing in it is trusted beyond
being shown as text (cut short) or counted.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

_MAX_MESSAGE = 2000
_AIDER_TOKENS = re.compile(r"^Tokens:\s*([\d.,]+)([km]?)\s+sent,\s*([\d.,]+)([km]?)\s+received",
                           re.IGNORECASE)
_AIDER_EDIT = re.compile(r"^Applied edit to (.+)$")


@dataclass
class AgentReport:
    """What the agent said at the end: its final message and the tokens it used."""

    final_message: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    edits: list[str] = field(default_factory=list)
    tool_calls: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"final_message": self.final_message[-_MAX_MESSAGE:],
                "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "edits": self.edits[:200], "tool_calls": self.tool_calls}


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any, limit: int = 200) -> str:
    return value[:limit] if isinstance(value, str) else ""


class StreamReader:
    """Reads one agent's output in ``kind``'s format (a preset's ``stream``)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.report = AgentReport()
        self._gemini_text: list[str] = []
        self._aider_text: list[str] = []

    def feed(self, line: str) -> str | None:
        """Take one output line; the activity it shows (None: nothing to show)."""
        if self.kind == "aider":
            return self._aider(line.strip())
        if not line.startswith("{"):
            return None
        try:
            ev = json.loads(line)
        except ValueError:
            return None
        if not isinstance(ev, dict):
            return None
        handler = {"claude": self._claude, "codex": self._codex, "gemini": self._gemini}.get(self.kind)
        return handler(ev) if handler else None

    # -- per CLI ---------------------------------------------------------------------------

    def _tool(self, name: str, target: str) -> str:
        self.report.tool_calls += 1
        return f"{name} {target}".strip()

    def _edit(self, path: str) -> None:
        if path and path not in self.report.edits:
            self.report.edits.append(path)

    def _claude(self, ev: dict[str, Any]) -> str | None:
        kind = ev.get("type")
        if kind == "assistant":
            content = _dict(ev.get("message")).get("content")
            shown = None
            for block in content if isinstance(content, list) else []:
                if not isinstance(block, dict) or block.get("type") != "tool_use":
                    continue
                args = _dict(block.get("input"))
                target = _str(args.get("file_path")) or _str(args.get("command"), 120) \
                    or _str(args.get("pattern"))
                if block.get("name") in ("Write", "Edit", "MultiEdit", "NotebookEdit"):
                    self._edit(_str(args.get("file_path"), 1000))
                shown = self._tool(_str(block.get("name"), 40), target)
            return shown
        if kind == "result":
            self.report.final_message = _str(ev.get("result"), _MAX_MESSAGE)
            usage = _dict(ev.get("usage"))
            self.report.input_tokens = (_int(usage.get("input_tokens"))
                                        + _int(usage.get("cache_read_input_tokens"))
                                        + _int(usage.get("cache_creation_input_tokens")))
            self.report.output_tokens = _int(usage.get("output_tokens"))
            denied = ev.get("permission_denials")
            if isinstance(denied, list) and denied:
                return f"{len(denied)} tool call(s) denied"
            return "finished" if not ev.get("is_error") else "error: " + _str(ev.get("result"))
        return None

    def _codex(self, ev: dict[str, Any]) -> str | None:
        kind = ev.get("type")
        item = _dict(ev.get("item"))
        if kind == "item.started" and item.get("type") == "command_execution":
            return self._tool("shell", _str(item.get("command"), 120))
        if kind == "item.completed":
            if item.get("type") == "file_change":
                changes = item.get("changes")
                paths = [_str(c.get("path"), 1000) for c in
                         (changes if isinstance(changes, list) else []) if isinstance(c, dict)]
                for p in paths:
                    self._edit(p)
                return self._tool("patch", ", ".join(p[-120:] for p in paths))
            if item.get("type") == "agent_message":
                self.report.final_message = _str(item.get("text"), _MAX_MESSAGE)
        if kind == "turn.completed":
            usage = _dict(ev.get("usage"))
            self.report.input_tokens += _int(usage.get("input_tokens"))
            self.report.output_tokens += _int(usage.get("output_tokens"))
            return "finished"
        if kind == "turn.failed":
            err = _dict(ev.get("error"))
            return "error: " + _str(err.get("message"))
        return None

    def _gemini(self, ev: dict[str, Any]) -> str | None:
        kind = ev.get("type")
        if kind == "tool_use":
            args = _dict(ev.get("parameters"))
            name = _str(ev.get("tool_name"), 40)
            if name in ("write_file", "replace"):
                self._edit(_str(args.get("file_path"), 1000))
            return self._tool(name, _str(args.get("file_path")) or _str(args.get("command"), 120))
        if kind == "message" and ev.get("role") == "assistant":
            self._gemini_text.append(_str(ev.get("content"), _MAX_MESSAGE))
            self.report.final_message = "".join(self._gemini_text)[-_MAX_MESSAGE:]
        if kind == "result":
            stats = _dict(ev.get("stats"))
            self.report.input_tokens = _int(stats.get("input_tokens"))
            self.report.output_tokens = _int(stats.get("output_tokens"))
            return "finished" if ev.get("status") == "success" else "error"
        return None

    def _aider(self, line: str) -> str | None:
        m = _AIDER_EDIT.match(line)
        if m:
            self._edit(m.group(1)[:1000])
            return self._tool("edit", m.group(1)[:200])
        m = _AIDER_TOKENS.match(line)
        if m:
            self.report.input_tokens += _count(m.group(1), m.group(2))
            self.report.output_tokens += _count(m.group(3), m.group(4))
            # The model's reply is what aider printed since its banner or the last turn.
            reply = "\n".join(self._aider_text).strip()
            if reply:
                self.report.final_message = reply[-_MAX_MESSAGE:]
            self._aider_text = []
            return line[:200]
        if line.startswith(("Aider v", "Model:", "Git repo:", "Repo-map:", "Analytics ")):
            self._aider_text = []
        elif len(self._aider_text) < 400:
            self._aider_text.append(line[:500])
        return None


def _count(number: str, unit: str) -> int:
    """aider prints ``12k`` and ``1.2k`` for large counts."""
    try:
        value = float(number.replace(",", ""))
    except ValueError:
        return 0
    return int(value * {"": 1, "k": 1000, "m": 1000000}[unit.lower()])
