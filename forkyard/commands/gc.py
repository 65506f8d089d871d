"""``forkyard gc``: remove what crashed runs left (see :mod:`forkyard.gc` for the rules)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from forkyard.gc import gc
from gitproc.git import Repo


def gc_command(repo: Path, as_json: bool = False, prune_unmerged: bool = False) -> int:
    """Run gc on ``repo``; 0 when everything stale was removed, 1 when something failed."""
    report = gc(Repo(repo), prune_unmerged=prune_unmerged)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        err = sys.stderr
        removed = (("worktree", report.worktrees_removed), ("cgroup", report.cgroups_removed),
                   ("container", report.containers_removed))
        for what, names in removed:
            for name in names:
                print(f"removed {what} {name}", file=err)
        for b in report.branches_deleted:
            print(f"deleted branch {b['branch']} ({b['sha'][:12]}, {b['reason']})", file=err)
        for b in report.branches_kept:
            print(f"kept branch {b['branch']} ({b['sha'][:12]}): {b['reason']}", file=err)
        for run_id in report.live_runs:
            print(f"run {run_id} is live: left alone", file=err)
        for e in report.errors:
            print(f"error: {e}", file=err)
        if not any((report.worktrees_removed, report.cgroups_removed, report.branches_deleted,
                    report.tmp_removed, report.containers_removed, report.errors)):
            print("nothing to collect", file=err)
    return 1 if report.errors else 0
