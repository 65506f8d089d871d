"""Hints added to a failed task's message when the cause is a known sandbox surprise."""

from __future__ import annotations

import shlex
from pathlib import Path


def private_tmp_hint(command: str) -> str:
    """Inside a sandbox ``/tmp`` is private: a script the command names under the host's
    ``/tmp`` exists out here but not in there, and the agent only says "can't open file".
    Returns a sentence naming such paths, or ""."""
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    hidden = []
    for word in words:
        for part in word.replace("=", " ").split():
            if part.startswith("/tmp/") and Path(part).exists():
                hidden.append(part)
    if not hidden:
        return ""
    return (f"{', '.join(sorted(set(hidden)))} exists on this host but not in the sandbox: "
            "its /tmp is private; put the script in the repository (or another directory "
            "outside /tmp)")
