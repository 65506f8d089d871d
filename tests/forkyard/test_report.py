"""``forkyard report``: a self-contained HTML report."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from forkyard.run.options import RunOptions
from forkyard.run.workflow import run_workflow
from forkyard.views.report import write_report
from gitproc.git import Repo
from planner import TaskFile


def test_report_has_gantt_results_and_rollbacks(webapp: Repo, tmp_path: Path) -> None:
    edit = "sed -i 's/^APP_NAME = .*/APP_NAME = \"{v}\"/' src/config.py"
    tf = TaskFile.model_validate({"tasks": [
        {"id": "rename", "command": edit.format(v="shop")},
        {"id": "rebrand", "command": "sleep 0.4; " + edit.format(v="store")},
        {"id": "docs", "command": "echo '# docs' > DOCS.md"},
    ]})
    res = run_workflow(webapp, tf, RunOptions(agents=3, strategy="aggressive", use_history=False))
    path = write_report(webapp, res.run_id, tmp_path / "r.html")
    html = path.read_text()
    assert html.startswith("<!doctype html>") and html.count("<svg") == 2
    for word in ("Planned schedule", "Actual schedule", "rename", "rebrand", "docs",
                 "rolled_back", "src/config.py", "DOCS.md"):
        assert word in html, word
    assert "<script" not in html and "http://" not in html.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")  # self-contained: nothing to fetch

    proc = subprocess.run([sys.executable, "-m", "forkyard.cli", "report", res.run_id[:13]],
                          cwd=webapp.path, text=True, capture_output=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()).is_file()


def test_report_shows_the_tip_the_run_left_not_a_later_one(webapp: Repo, tmp_path: Path) -> None:
    from fixtures.repos import commit_all

    tf = TaskFile.model_validate({"tasks": [{"id": "docs", "command": "echo hi > DOCS.md"}]})
    res = run_workflow(webapp, tf, RunOptions(agents=1, use_history=False))
    assert res.target_sha_after != res.target_sha_before
    (webapp.path / "LATER.md").write_text("someone else's work\n")
    later = commit_all(webapp, "a later commit on main")
    html = write_report(webapp, res.run_id, tmp_path / "r.html").read_text()
    assert res.target_sha_after[:12] in html
    assert later[:12] not in html


def test_report_draws_every_attempt_and_titles_a_dead_run_by_its_state(
        webapp: Repo, tmp_path: Path) -> None:
    from forkyard.journal.events import RunPaths

    cmd = 'echo "$FORKYARD_ATTEMPT" > a.txt; [ "$FORKYARD_ATTEMPT" = 1 ] && sleep 30; true'
    tf = TaskFile.model_validate({
        "defaults": {"limits": {"timeout_s": 2, "memory_mb": 256}},
        "tasks": [{"id": "flaky", "command": cmd, "retries": 1},
                  {"id": "bad", "command": "echo 'FAILED tests/test_x.py::test_y'; exit 1"}]})
    res = run_workflow(webapp, tf, RunOptions(agents=2, use_history=False, retry_backoff_s=0))
    page = write_report(webapp, res.run_id, tmp_path / "r.html").read_text()
    assert "flaky #1" in page and "flaky #2" in page  # the retried attempt is drawn too
    assert "timed_out" in page
    # Cut the journal's last word: a run with no process and no end is "crashed".
    events = RunPaths.of(webapp, res.run_id).events
    lines = events.read_text().splitlines(keepends=True)
    events.write_text("".join(ln for ln in lines if '"run_finished"' not in ln))
    page = write_report(webapp, res.run_id, tmp_path / "r2.html").read_text()
    assert "crashed</span></h1>" in page and "partial</span></h1>" not in page
