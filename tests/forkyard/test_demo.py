"""``forkyard demo`` runs green: five tasks land, the planted conflict is rolled back."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_demo_runs_green_in_under_a_minute(tmp_path: Path) -> None:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "forkyard.cli", "demo"], cwd=tmp_path,
                          text=True, capture_output=True, timeout=90,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert time.monotonic() - start < 60
    err = proc.stderr
    assert "rolled back (debug-flag): debug-flag: conflict (content) in src/config.py with config" in err  # the live/plain line
    assert "landed: api-users, config, order-model, ui, user-model; rolled back: debug-flag" in err
    report = Path(err.split("report: ")[-1].split()[0])
    assert report.is_file() and "<svg" in report.read_text()
