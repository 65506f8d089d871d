"""Reading agent CLIs' output (sandbox/streams.py): the shapes each CLI prints, and
output that is not what it claims to be.  The real CLIs' streams are read end to end in
tests/agents/test_real_clis.py; these pin the details and the hostile cases."""

from __future__ import annotations

import json

from gitproc.git import Repo
from sandbox.backends.worktree import WorktreeBackend, WorktreeConfig
from sandbox.streams import StreamReader
from tests.sandbox.conftest import make_spec


def feed(kind: str, *events: object) -> tuple[StreamReader, list[str | None]]:
    reader = StreamReader(kind)
    shown = [reader.feed(e if isinstance(e, str) else json.dumps(e)) for e in events]
    return reader, shown


def test_claude_tool_calls_final_message_and_tokens() -> None:
    reader, shown = feed(
        "claude",
        {"type": "system", "subtype": "init", "cwd": "/w"},
        {"type": "assistant", "message": {"content": [
            {"type": "tool_use", "name": "Write", "input": {"file_path": "/w/a.py", "content": "x"}}],
            "usage": {"input_tokens": 5, "output_tokens": 1}}},
        {"type": "result", "is_error": False, "result": "Done.", "permission_denials": [],
         "usage": {"input_tokens": 100, "cache_read_input_tokens": 50, "output_tokens": 7}})
    assert shown == [None, "Write /w/a.py", "finished"]
    r = reader.report
    assert (r.final_message, r.input_tokens, r.output_tokens, r.edits) == ("Done.", 150, 7, ["/w/a.py"])


def test_claude_denials_are_shown() -> None:
    _, shown = feed("claude", {"type": "result", "result": "", "permission_denials": [{"tool_name": "Write"}]})
    assert shown == ["1 tool call(s) denied"]


def test_codex_file_changes_message_and_usage_over_turns() -> None:
    reader, shown = feed(
        "codex",
        {"type": "item.completed", "item": {"type": "file_change", "status": "completed",
                                            "changes": [{"path": "/w/x.txt", "kind": "add"}]}},
        {"type": "item.started", "item": {"type": "command_execution", "command": "pytest -q"}},
        {"type": "item.completed", "item": {"type": "agent_message", "text": "All done"}},
        {"type": "turn.completed", "usage": {"input_tokens": 10, "output_tokens": 2}},
        {"type": "turn.completed", "usage": {"input_tokens": 5, "output_tokens": 1}})
    assert shown[:2] == ["patch /w/x.txt", "shell pytest -q"]
    r = reader.report
    assert (r.final_message, r.input_tokens, r.output_tokens) == ("All done", 15, 3)


def test_gemini_tool_use_message_chunks_and_stats() -> None:
    reader, shown = feed(
        "gemini",
        {"type": "tool_use", "tool_name": "write_file", "parameters": {"file_path": "/w/g.txt"}},
        {"type": "message", "role": "assistant", "content": "Done: ", "delta": True},
        {"type": "message", "role": "assistant", "content": "wrote g.txt.", "delta": True},
        {"type": "result", "status": "success", "stats": {"input_tokens": 9, "output_tokens": 4}})
    assert shown == ["write_file /w/g.txt", None, None, "finished"]
    assert reader.report.final_message == "Done: wrote g.txt."
    assert (reader.report.input_tokens, reader.report.output_tokens) == (9, 4)


def test_aider_text_lines() -> None:
    reader, shown = feed("aider", "Aider v0.86.2", "Repo-map: using 4096 tokens",
                         "I will create out/a.txt.", "Tokens: 1.2k sent, 25 received.",
                         "Applied edit to out/a.txt")
    assert shown[-1] == "edit out/a.txt" and shown[-2].startswith("Tokens:")
    r = reader.report
    assert (r.input_tokens, r.output_tokens, r.edits) == (1200, 25, ["out/a.txt"])
    assert r.final_message == "I will create out/a.txt."


def test_output_that_is_not_an_event_is_only_text() -> None:
    # The agent's output is hostile: JSON of the wrong shape, wrong types, negative or
    # boolean counts, a huge message -- nothing breaks and nothing bogus is counted.
    reader, shown = feed(
        "claude", "[1, 2]", "{not json", "null", '"string"',
        {"type": "assistant", "message": "not a dict"},
        {"type": "assistant", "message": {"content": [{"type": "tool_use", "name": ["x"], "input": 3}]}},
        {"type": "result", "result": "y" * 100000,
         "usage": {"input_tokens": -5, "output_tokens": True, "cache_read_input_tokens": "9"}})
    assert shown[:5] == [None] * 5
    r = reader.report
    assert (r.input_tokens, r.output_tokens) == (0, 0)
    assert len(r.to_dict()["final_message"]) <= 2000


def test_an_event_longer_than_a_display_line_is_read_whole(pylib: Repo) -> None:
    # One JSON event can hold a whole file the agent wrote or a long final message; cut
    # at a display line's 16 KiB it is no longer JSON.  The reader gets it whole (up to
    # supervise.MAX_EVENT_BYTES); what is kept in the log tail is still cut.
    command = ("python3 -c 'import json; print(json.dumps({\"type\": \"result\", "
               "\"is_error\": False, \"result\": \"y\" * 40000, "
               "\"usage\": {\"input_tokens\": 10, \"output_tokens\": 20}}))'")
    backend = WorktreeBackend(pylib, WorktreeConfig(grace_s=0.3))
    r = backend.run(make_spec(pylib, command, preset="claude"))
    assert r.status == "succeeded", r.message
    report = r.agent_report or {}
    assert str(report.get("final_message", "")).startswith("yyy"), report
    assert (report.get("input_tokens"), report.get("output_tokens")) == (10, 20)
    assert "[line cut]" in r.log_tail and len(r.log_tail) < 20000
