"""An agent's private home, and what its CLI leaves behind that is not its work.

Agent CLIs keep state, locks, caches and history in ``$HOME`` and fail, or retry a lock
forever, when it is read-only -- which the user's real home is inside a sandbox.  So each
sandbox gets a fresh, writable home of its own in its directory (``sandbox/places.py``),
seeded with the user's configuration for that CLI (``sandbox/presets.py``:
``seed_home``) and a git identity; nothing an agent writes there reaches the user's home or another agent, and
it is deleted with the sandbox.  Secret stores (``~/.ssh``, ``~/.aws`` ...) are never
copied: only the named config files of the task's own CLI are.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from gitproc.git import Repo, clean_env
from sandbox import limits, presets
from sandbox.backends.base import MINIMAL_ENV, LineCallback, Sandbox, SandboxSpec
from sandbox.backends.worktree.supervise import clip
from sandbox.streams import StreamReader


def identity(repo: Repo) -> tuple[str, str]:
    """The git identity agents commit with: the repository's user, else forkyard's."""
    name = repo.git("config", "user.name", check=False).out.strip()
    email = repo.git("config", "user.email", check=False).out.strip()
    return name or "forkyard agent", email or "agent@forkyard.invalid"


def make_home(spec: SandboxSpec, home: Path, ident: tuple[str, str]) -> Path:
    """A fresh private home for ``spec``'s agent at ``home`` (its place's, beside its temp
    dir, not in it: an agent emptying ``$TMPDIR`` keeps its CLI's state)."""
    shutil.rmtree(home, ignore_errors=True)  # a crashed run's
    home.mkdir()
    presets.seed_home(home, spec.preset, Path.home(), {**os.environ, **spec.env}, ident)
    return home


def sandbox_env(sandbox: Sandbox, tmpdir: Path, token: str, lease: int | None) -> dict[str, str]:
    """The agent's whole environment: the caller's (without leaked ``GIT_*``), forkyard's
    values, the private home's, the port, then the task's own ``env``."""
    spec = sandbox.spec
    env = clean_env()  # no leaked GIT_DIR & co pointing the agent at another repository
    if spec.env_policy == "minimal":  # no secrets: see SandboxSpec.env_policy
        env = {k: v for k, v in env.items() if k in MINIMAL_ENV or k.startswith("GIT_")}
    if "LC_ALL" in os.environ:
        env["LC_ALL"] = os.environ["LC_ALL"]
    else:
        env.pop("LC_ALL", None)
    env.update({
        "FORKYARD_TASK_ID": spec.task_id, "FORKYARD_RUN_ID": spec.run_id,
        "FORKYARD_BRANCH": spec.branch, "FORKYARD_BASE": spec.base,
        "FORKYARD_WORKTREE": str(sandbox.worktree), "FORKYARD_DESCRIPTION": spec.description,
        "TMPDIR": str(tmpdir), limits.TOKEN_VAR: token,
    })
    home = sandbox.state.get("home")
    if isinstance(home, Path):
        env.update(home_env(home, spec.preset))
    port = spec.port if spec.port is not None else lease
    if port is not None:
        env["PORT"] = env["FORKYARD_PORT"] = str(port)
    env.update(spec.env)
    return env


def home_env(home: Path, preset: str | None) -> dict[str, str]:
    """HOME and the XDG dirs inside the private home (a CLI honouring the caller's
    ``XDG_CONFIG_HOME`` would otherwise write the real one), and the preset's variables."""
    return {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_DATA_HOME": str(home / ".local" / "share"),
            "XDG_STATE_HOME": str(home / ".local" / "state"),
            **presets.preset_env(preset, home)}


def stream_reader(preset: str | None) -> StreamReader | None:
    """A reader of the preset's CLI output, if it has a format forkyard reads."""
    p = presets.PRESETS.get(preset or "")
    return StreamReader(p.stream) if p is not None and p.stream else None


def reader_callback(reader: StreamReader, on_line: LineCallback | None) -> LineCallback:
    """Each output line read by ``reader``; what reaches ``on_line`` (the live display,
    ``status``) is the activity it shows -- a JSON event line itself never is."""
    def feed(line: str) -> None:
        activity = reader.feed(line)
        if on_line is None:
            return
        if activity is not None:
            on_line(activity)
        elif not line.startswith("{"):
            on_line(clip(line))
    return feed


def scratch(preset: str | None) -> tuple[str, ...]:
    """What the preset's CLI leaves in the worktree that is not the agent's work (aider's
    repo-map cache): removed by the confined commit step before it stages anything
    (``config.commit_command``), so it is never committed."""
    return presets.SCRATCH.get(preset or "", ())
