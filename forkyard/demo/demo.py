"""``forkyard demo``: the whole loop in under a minute, needing nothing but this install.

Builds the ``webapp`` fixture in a temp dir and runs six scripted agents (small Python
edit scripts, so no agent CLI or API key is needed) with limits on, confined when
bubblewrap is here.  Five tasks are clean; two of them (``config`` and ``debug-flag``) both
rewrite the same line without declaring it, a conflict the planner cannot foresee.  The
run uses the aggressive strategy: the batch holding the second of those is bisected, the
conflicting task is rolled back and the rest of its batch lands.  Then it writes the HTML
report and says where it is.
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

# The scripted agent: apply (path, old, new, seconds) edits one by one, reporting progress.
AGENT = """\
import json, pathlib, sys, time
steps = json.loads(sys.argv[1])
for i, (path, old, new, wait) in enumerate(steps, 1):
    print(f"step {i}/{len(steps)}: editing {path}", flush=True)
    time.sleep(wait)
    p = pathlib.Path(path)
    text = p.read_text() if p.exists() else ""
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text.replace(old, new) if old else text + new)
print("done", flush=True)
"""

Step = tuple[str, str, str, float]


def say(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def agent_command(steps: list[Step]) -> str:
    return shlex.join([sys.executable, "-c", AGENT, json.dumps(steps)])


def demo_tasks() -> dict[str, Any]:
    """The demo's task file (a dict; ``docs/examples/demo-tasks.yaml`` is the same shape)."""
    def task(id: str, description: str, steps: list[Step], **kw: Any) -> dict[str, Any]:
        return {"id": id, "description": description, "command": agent_command(steps),
                "estimated_minutes": round(sum(s[3] for s in steps) / 60, 3), **kw}

    return {
        "defaults": {"limits": {"memory_mb": 512, "cpus": 1.0, "pids": 256, "timeout_s": 60,
                                "network": False}},
        "tasks": [
            task("config", "Release 0.2.0: bump the version", [
                ("src/config.py", 'VERSION = "0.1.0"', 'VERSION = "0.2.0"', 1.0),
            ], files=["src/config.py"]),
            task("user-model", "Add email normalisation to the user model", [
                ("src/models/user.py", "", '\n\ndef normalize_email(email):\n'
                 '    return email.strip().lower()\n', 0.8),
                ("src/models/user.py", 'return "@" in email', 'return "@" in email.strip()', 0.6),
            ], files=["src/models/user.py"]),
            task("order-model", "Count the items of an order", [
                ("src/models/order.py", "", "\n    def count(self):\n"
                 "        return len(self.items)\n", 1.2),
            ], files=["src/models/order.py"]),
            task("api-users", "Look users up by email (needs the normalisation)", [
                ("src/api/users.py", "from src.models.user import User, validate_email",
                 "from src.models.user import User, normalize_email, validate_email", 0.5),
                ("src/api/users.py", "", "\n\ndef find_by_email(address):\n"
                 "    wanted = normalize_email(address)\n"
                 "    return [user for user in USERS.values() if user.email == wanted]\n", 0.5),
            ], depends_on=["user-model"], files=["src/api/users.py"]),
            task("ui", "Greet users by display name in the UI", [
                ("src/ui/app.js", "${user.name}", "${user.displayName}", 1.5),
                ("src/ui/styles.css", "", ".greeting { font-weight: bold; }\n", 1.0),
            ], files=["src/ui/**"]),
            # The planted conflict: it edits config.py's version line too, but says it only
            # touches the README, so the planner lets it run beside `config`.
            task("debug-flag", "Mark development builds", [
                ("README.md", "", "\nDevelopment builds carry a -dev version.\n", 1.0),
                ("src/config.py", 'VERSION = "0.1.0"', 'VERSION = "0.1.0-dev"', 1.5),
            ], files=["README.md"]),
        ],
    }


def run_demo(*, keep: bool = False, as_json: bool = False) -> int:
    """Run the demo; 0 when it went as designed (five tasks landed, one rolled back)."""
    import yaml

    from forkyard.commands.run import make_display, print_summary
    from forkyard.demo.repo import build_webapp
    from forkyard.run.options import RunOptions
    from forkyard.run.workflow import run_workflow
    from forkyard.views.report import write_report
    from planner import parse_tasks

    tmp = Path(tempfile.mkdtemp(prefix="forkyard-demo-"))
    try:
        repo = build_webapp(tmp / "webapp")
        text = yaml.safe_dump(demo_tasks(), sort_keys=False, width=1000)
        (tmp / "tasks.yaml").write_text(text)
        taskfile = parse_tasks(text, "yaml", source=str(tmp / "tasks.yaml"))
        confine = shutil.which("bwrap") is not None
        say(f"forkyard demo: webapp fixture at {repo.path}")
        say("  6 scripted agents in parallel, limits on (512 MiB, 1 cpu, 256 pids, 60 s, no "
            "network), " + ("confined with bubblewrap" if confine else
                            "UNCONFINED: bubblewrap (bwrap) is not installed here"))
        say("  strategy aggressive: a batch that conflicts is bisected, the culprit rolled back")
        display = make_display(6, repo=repo)
        display.start()
        try:
            options = RunOptions(
                agents=6, strategy="aggressive", confine=confine, use_history=False,
                validate_command=shlex.join([sys.executable, "tools/check.py"]))
            result = run_workflow(repo, taskfile, options, listeners=(display,))
        finally:
            display.stop()
        report = write_report(repo, result.run_id, tmp / "report.html")
        if as_json:
            print(json.dumps(result.model_dump(mode="json"), indent=1))
        else:
            print_summary(result)
            say(repo.out("log", "--oneline", "--graph", "-n", "14", "main"))
        landed = sorted(r.task for r in result.results if r.integrated)
        rolled = sorted(r.task for r in result.results if not r.integrated)
        say(f"\nlanded: {', '.join(landed)}; rolled back: {', '.join(rolled) or 'nothing'}")
        say(f"report: {report}")
        if not keep:
            say("(the demo repository is removed, the report stays; --keep keeps both)")
        ok = len(landed) == 5 and len(rolled) == 1
        return 0 if ok else 1
    finally:
        if not keep:
            # The report (next to it, in the same temp dir) stays for the user to open.
            shutil.rmtree(tmp / "webapp", ignore_errors=True)
