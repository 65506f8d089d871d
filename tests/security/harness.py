"""The secrets/network/disk attacks' harness: a task file run through the real worktree
backend (bubblewrap + Landlock + cgroups), and a host-side HTTP server that counts who
reached it."""

from __future__ import annotations

import http.server
import threading
from typing import Any

from forkyard.journal.models import RunResult
from forkyard.run.options import RunOptions
from forkyard.run.workflow import run_workflow
from gitproc.git import Repo
from planner import TaskFile
from sandbox import confine
from tests.conftest import require

LIMITS: dict[str, Any] = {"memory_mb": 256, "cpus": 1.0, "pids": 128, "timeout_s": 60}


def run_tasks(repo: Repo, *tasks: dict[str, Any], limits: dict[str, Any] | None = None,
              defaults: dict[str, Any] | None = None, confine_: bool = True,
              **backend: Any) -> RunResult:
    """``tasks`` run by ``run_workflow`` in ``repo``, side by side (an agent each);
    ``limits``/``defaults`` over the task file's defaults; ``confine_=False`` is the
    explicit opt-out (the controls); ``backend``: worktree backend options."""
    require(confine.bwrap_flags() is not None, "bubblewrap")
    require(confine.landlock_abi() >= 6, "Landlock ABI >= 6")
    tf = TaskFile.model_validate({"defaults": {"limits": {**LIMITS, **(limits or {})},
                                               **(defaults or {})}, "tasks": list(tasks)})
    return run_workflow(repo, tf, RunOptions(agents=len(tasks), use_history=False,
                                             confine=confine_, backend_options=backend))


class Server:
    """An HTTP server on the host's loopback; ``hits`` are the Host headers it saw."""

    def __init__(self) -> None:
        hits: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.headers.get("Host", ""))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"REACHED-HOST-SERVER\n")

            def log_message(self, *args: object) -> None:
                pass

        self.hits = hits
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def hosts(self, *names: str) -> dict[str, str]:
        """Proxy name overrides sending ``names`` to this server."""
        return {n: f"127.0.0.1:{self.port}" for n in names}
