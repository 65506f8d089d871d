"""A scripted model server for the real agent CLIs (standard library only, 127.0.0.1).

It speaks the four wire protocols the presets' CLIs use -- Anthropic Messages (Claude
Code), OpenAI Responses (Codex), OpenAI Chat Completions (aider) and Gemini
generateContent (Gemini CLI) -- and plays one script for all of them: the first turn
asks the agent's file-writing tool to create a file, the turn after the tool's result
ends with a short text.  The prompt chooses the file: the last line of the form

    WRITE <path>: <content>

in the user's messages (``\\n`` in the content is a newline).  A prompt with ``NOOP`` and
no such line gets a text answer and no tool call: an agent that exits 0 having changed
nothing.  Side calls (titles, routers, schema-shaped checks) get schema-shaped JSON or
"OK".  Every request is recorded (:attr:`FakeModel.requests`) with its time, protocol
and kind, which the tests and the bench read.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import threading
import time
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

WRITE = re.compile(r"^\s*WRITE\s+(\S+?):\s?(.*)$", re.MULTILINE)
# How each CLI tells the model its working directory (Claude, Codex, Gemini CLI).
CWD = (re.compile(r"Primary working directory:\s*(\S+)"),
       re.compile(r"^CWD:\s*(/\S+)", re.MULTILINE),
       re.compile(r"<cwd>\s*([^<\n]+?)\s*</cwd>"),
       re.compile(r"Workspace Directories:\**\s*\n\s*-\s*(/\S+)"))
FALLBACK_FILE = "FAKE_MODEL.txt"


def strings(obj: Any) -> list[str]:
    """Every string in a JSON value, depth first."""
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, list):
        return [s for x in obj for s in strings(x)]
    if isinstance(obj, dict):
        return [s for x in obj.values() for s in strings(x)]
    return []


def find_cwd(*blobs: Any) -> str | None:
    for text in strings(list(blobs)):
        for pat in CWD:
            m = pat.search(text)
            if m:
                return m.group(1).rstrip(".,;")
    return None


class Script:
    """What to write for one request: the file (relative and absolute) and content."""

    def __init__(self, user_texts: list[str], cwd: str | None) -> None:
        self.rel, self.content, self.noop = FALLBACK_FILE, "written by the fake model\n", False
        for text in reversed(user_texts):
            found = WRITE.findall(text)
            if found:
                self.rel, content = found[-1]
                self.content = content.replace("\\n", "\n").rstrip("\n") + "\n"
                break
        else:
            self.noop = any("NOOP" in t for t in user_texts)
        self.abs = self.rel if os.path.isabs(self.rel) or not cwd else os.path.join(cwd, self.rel)

    def done(self) -> str:
        return "Nothing to do." if self.noop else f"Done: wrote {self.rel}."

    def patch(self) -> str:
        body = "".join(f"+{line}\n" for line in self.content.rstrip("\n").split("\n"))
        return f"*** Begin Patch\n*** Add File: {self.rel}\n{body}*** End Patch\n"


def schema_value(schema: dict[str, Any], name: str = "") -> Any:
    """A plausible value of a JSON schema (routers get score 1, speakers "user")."""
    if "enum" in schema:
        return "user" if "user" in schema["enum"] else schema["enum"][0]
    kind = str(schema.get("type") or "").lower()
    if kind == "object" or "properties" in schema:
        return {k: schema_value(v, k) for k, v in (schema.get("properties") or {}).items()}
    if kind == "array":
        return []
    if kind in ("integer", "number"):
        return 1
    if kind == "boolean":
        return False
    return {"title": "Fake task", "next_speaker": "user"}.get(name, "fake")


def new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


class FakeModel:
    """The server: ``with FakeModel() as fm: ... fm.url ... fm.requests``."""

    def __init__(self, port: int = 0) -> None:
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(_Handler):
            model = outer

        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeModel:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def record(self, rec: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(rec)

    def model_calls(self, protocol: str | None = None) -> list[dict[str, Any]]:
        """The requests that were model calls (not probes), of ``protocol`` if given."""
        with self._lock:
            return [r for r in self.requests if r.get("kind") not in (None, "probe")
                    and (protocol is None or r["protocol"] == protocol)]

    def written(self) -> list[str]:
        """The files the model asked agents to write (absolute where the CLI said its cwd)."""
        return [r["file"] for r in self.model_calls() if r.get("kind") == "tool_call"]


class _Handler(BaseHTTPRequestHandler):
    model: FakeModel
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    # -- transport ------------------------------------------------------------------
    def _body(self) -> Any:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while (size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)):
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            raw = b"".join(parts)
        else:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        enc = self.headers.get("Content-Encoding", "").lower()
        raw = gzip.decompress(raw) if enc == "gzip" else zlib.decompress(raw) if enc == "deflate" else raw
        try:
            return json.loads(raw) if raw else {}
        except ValueError:
            return {}

    def _json(self, obj: Any, status: int = 200) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, events: list[tuple[str | None, Any]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event, data in events:
            text = data if isinstance(data, str) else json.dumps(data)
            msg = ((f"event: {event}\n" if event else "") + f"data: {text}\n\n").encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(msg), msg))
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def do_HEAD(self) -> None:
        self.model.record({"t": time.time(), "protocol": "probe", "kind": "probe"})
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self.model.record({"t": time.time(), "protocol": "probe", "kind": "probe"})
        self._json({"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

    def do_POST(self) -> None:
        rec: dict[str, Any] = {"t": time.time(), "path": self.path, "protocol": "unknown"}
        body = self._body()
        path = urlsplit(self.path).path
        try:
            if path.endswith("/messages/count_tokens"):
                rec.update(protocol="anthropic", kind="count_tokens")
                self.model.record(rec)
                self._json({"input_tokens": 100})
            elif path.endswith("/messages"):
                self._anthropic(body, rec)
            elif path.endswith("/responses"):
                self._responses(body, rec)
            elif path.endswith("/chat/completions"):
                self._chat(body, rec)
            elif "/models/" in path and ":" in path.rsplit("/", 1)[-1]:
                self._gemini(path.rsplit(":", 1)[-1], body, rec)
            else:
                self.model.record(rec)
                self._json({"error": {"message": f"no POST {path}"}}, 404)
        except (BrokenPipeError, ConnectionResetError):
            pass

    # -- Anthropic Messages (Claude Code) ---------------------------------------------
    def _anthropic(self, body: dict[str, Any], rec: dict[str, Any]) -> None:
        rec["protocol"] = "anthropic"
        msgs = body.get("messages") or []
        users = [s for m in msgs if m.get("role") == "user" for s in _anthropic_texts(m)]
        last = msgs[-1].get("content") if msgs else None
        answered = isinstance(last, list) and any(b.get("type") == "tool_result" for b in last)
        tools = {t.get("name") for t in body.get("tools") or []}
        fmt = (body.get("output_config") or {}).get("format") or {}
        script = Script(users, find_cwd(body.get("system")))
        block: dict[str, Any]
        if fmt.get("type") == "json_schema" and not answered:
            rec["kind"], text = "side", json.dumps(schema_value(fmt.get("schema") or {}))
            block = {"type": "text", "text": text}
        elif not answered and not script.noop and tools & {"Write", "Edit"}:
            name = "Write" if "Write" in tools else "Edit"
            args = ({"file_path": script.abs, "content": script.content} if name == "Write" else
                    {"file_path": script.abs, "old_string": "", "new_string": script.content})
            rec.update(kind="tool_call", file=script.abs)
            block = {"type": "tool_use", "id": new_id("toolu_"), "name": name, "input": args}
        else:
            rec["kind"] = "final" if answered or tools else "side"
            block = {"type": "text", "text": script.done() if rec["kind"] == "final" else "OK"}
        self.model.record(rec)
        stop = "tool_use" if block["type"] == "tool_use" else "end_turn"
        usage = {"input_tokens": 1000, "output_tokens": 20, "cache_creation_input_tokens": 0,
                 "cache_read_input_tokens": 0}
        message = {"id": new_id("msg_"), "type": "message", "role": "assistant",
                   "model": body.get("model") or "fake", "stop_sequence": None}
        if not body.get("stream"):
            self._json({**message, "content": [block], "stop_reason": stop, "usage": usage})
            return
        if block["type"] == "tool_use":
            start, delta = {**block, "input": {}}, {"type": "input_json_delta",
                                                     "partial_json": json.dumps(block["input"])}
        else:
            start, delta = {"type": "text", "text": ""}, {"type": "text_delta", "text": block["text"]}
        self._stream([
            ("message_start", {"type": "message_start", "message": {
                **message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}}),
            ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": start}),
            ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop},
                               "usage": {"output_tokens": usage["output_tokens"]}}),
            ("message_stop", {"type": "message_stop"})])

    # -- OpenAI Responses (Codex) -------------------------------------------------------
    def _responses(self, body: dict[str, Any], rec: dict[str, Any]) -> None:
        rec["protocol"] = "openai-responses"
        items = body.get("input") or []
        if isinstance(items, str):
            items = [{"type": "message", "role": "user", "content": items}]
        is_user = [i.get("type", "message") == "message" and i.get("role") == "user" for i in items]
        last_user = max((n for n, u in enumerate(is_user) if u), default=-1)
        answered = any(str(i.get("type", "")).endswith("_output") for i in items[last_user + 1:])
        users = [s for i, u in zip(items, is_user, strict=True) if u for s in strings(i.get("content"))]
        tools = {t.get("name") or t.get("type"): t for t in body.get("tools") or []}
        script = Script(users, find_cwd(items, body.get("instructions")))
        call = new_id("call_")
        item: dict[str, Any]
        if not answered and not script.noop and "apply_patch" in tools \
                and tools["apply_patch"].get("type") == "custom":
            item = {"type": "custom_tool_call", "id": new_id("ctc_"), "call_id": call,
                    "name": "apply_patch", "input": script.patch(), "status": "completed"}
        elif not answered and not script.noop and "exec_command" in tools:
            cmd = f"apply_patch <<'EOF'\n{script.patch()}EOF\n"
            item = {"type": "function_call", "id": new_id("fc_"), "call_id": call,
                    "name": "exec_command", "arguments": json.dumps({"cmd": cmd}),
                    "status": "completed"}
        else:
            item = {"type": "message", "role": "assistant", "id": new_id("msg_"),
                    "status": "completed", "content": [
                        {"type": "output_text", "text": script.done(), "annotations": []}]}
        rec.update(kind="final" if item["type"] == "message" else "tool_call")
        if rec["kind"] == "tool_call":
            rec["file"] = script.abs
        self.model.record(rec)
        usage = {"input_tokens": 1000, "input_tokens_details": {"cached_tokens": 0},
                 "output_tokens": 20, "output_tokens_details": {"reasoning_tokens": 0},
                 "total_tokens": 1020}
        base = {"id": new_id("resp_"), "object": "response", "created_at": int(time.time()),
                "model": body.get("model") or "fake", "status": "in_progress", "output": []}
        done = {**base, "status": "completed", "output": [item], "usage": usage}
        if not body.get("stream"):
            self._json(done)
            return
        added = {**item, "status": "in_progress", **({"content": []} if item["type"] == "message" else {})}
        events: list[tuple[str | None, Any]] = [
            ("response.created", {"type": "response.created", "response": base}),
            ("response.output_item.added", {"type": "response.output_item.added",
                                            "output_index": 0, "item": added})]
        if item["type"] == "message":
            events.append(("response.output_text.delta", {
                "type": "response.output_text.delta", "item_id": item["id"], "output_index": 0,
                "content_index": 0, "delta": item["content"][0]["text"]}))
        events += [("response.output_item.done", {"type": "response.output_item.done",
                                                  "output_index": 0, "item": item}),
                   ("response.completed", {"type": "response.completed", "response": done})]
        self._stream(events)

    # -- OpenAI Chat Completions (aider) -------------------------------------------------
    def _chat(self, body: dict[str, Any], rec: dict[str, Any]) -> None:
        rec["protocol"] = "openai-chat"
        msgs = body.get("messages") or []
        system = " ".join(s for m in msgs if m.get("role") == "system" for s in strings(m.get("content")))
        users = [s for m in msgs if m.get("role") == "user" for s in strings(m.get("content"))]
        script = Script(users, None)  # aider sends paths relative to the repository
        if "commit message" in system.lower():
            rec["kind"], text = "side", "Add the file"
        elif script.noop:
            rec["kind"], text = "final", script.done()
        else:
            fence = "```"
            while fence in script.content:
                fence += "`"
            # aider's "whole" edit format: the path alone on a line, then the whole file.
            text = f"Creating {script.rel}.\n\n{script.rel}\n{fence}\n{script.content}{fence}\n"
            rec.update(kind="tool_call", file=script.rel)
        self.model.record(rec)
        usage = {"prompt_tokens": 1000, "completion_tokens": 20, "total_tokens": 1020}
        cid, created, model = new_id("chatcmpl-"), int(time.time()), body.get("model") or "fake"
        if not body.get("stream"):
            self._json({"id": cid, "object": "chat.completion", "created": created, "model": model,
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": text}}],
                        "usage": usage})
            return

        def chunk(delta: dict[str, Any], finish: str | None = None, **more: Any) -> tuple[None, Any]:
            return None, {"id": cid, "object": "chat.completion.chunk", "created": created,
                          "model": model, "choices": [{"index": 0, "delta": delta,
                                                       "finish_reason": finish}], **more}

        self._stream([chunk({"role": "assistant", "content": ""}),
                      *(chunk({"content": text[i:i + 64]}) for i in range(0, len(text), 64)),
                      chunk({}, "stop", usage=usage), (None, "[DONE]")])

    # -- Gemini generateContent (Gemini CLI) -----------------------------------------------
    def _gemini(self, method: str, body: dict[str, Any], rec: dict[str, Any]) -> None:
        rec["protocol"] = "gemini"
        if method == "countTokens":
            rec["kind"] = "count_tokens"
            self.model.record(rec)
            self._json({"totalTokens": 100})
            return
        contents = body.get("contents") or []
        users = [p["text"] for c in contents if c.get("role", "user") == "user"
                 for p in c.get("parts") or [] if "text" in p]
        last = (contents[-1].get("parts") or []) if contents else []
        answered = any("functionResponse" in p for p in last)
        config = body.get("generationConfig") or {}
        schema = config.get("responseJsonSchema") or config.get("responseSchema")
        functions = {f.get("name") for t in body.get("tools") or []
                     for f in t.get("functionDeclarations") or []}
        script = Script(users, find_cwd(body.get("systemInstruction"), contents))
        if schema or config.get("responseMimeType") == "application/json":
            rec["kind"], parts = "side", [{"text": json.dumps(schema_value(schema or {}))}]
        elif "write_file" in functions and not answered and not script.noop:
            rec.update(kind="tool_call", file=script.abs)
            parts = [{"functionCall": {"name": "write_file", "args": {
                "file_path": script.abs, "content": script.content}}}]
        else:
            rec["kind"], parts = "final", [{"text": script.done()}]
        self.model.record(rec)
        resp = {"candidates": [{"content": {"role": "model", "parts": parts},
                                "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": 1000, "candidatesTokenCount": 20,
                                  "totalTokenCount": 1020},
                "modelVersion": "gemini-fake", "responseId": new_id("")}
        if method == "streamGenerateContent":
            self._stream([(None, resp)])
        else:
            self._json(resp)


def _anthropic_texts(message: dict[str, Any]) -> list[str]:
    content = message.get("content")
    if isinstance(content, str):
        return [content]
    return [b.get("text", "") for b in content or [] if b.get("type") == "text"]
