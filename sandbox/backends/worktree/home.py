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
from collections.abc import Mapping
from pathlib import Path

from gitproc.git import Repo
from sandbox import limits, presets, secrets
from sandbox.backends.base import MINIMAL_ENV, LineCallback, Sandbox, SandboxSpec
from sandbox.backends.worktree.supervise import clip
from sandbox.network import NetworkPolicy, proxy_env
from sandbox.network.policy import HOST_PROXY_VARS
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
    home.mkdir(exist_ok=os.path.ismount(home))  # (emptied: a bind mount of sandbox/disk.py's)
    presets.seed_home(home, spec.preset, Path.home(), {**os.environ, **spec.env}, ident)
    return home


def writable(sandbox: Sandbox, configured: tuple[Path, ...]) -> tuple[Path, ...]:
    """What the agent may write besides its worktree, temp dir and git paths: its private
    home, and the paths the backend's configuration and the task file add."""
    home = sandbox.state.get("home")
    own = (home,) if isinstance(home, Path) else ()
    return (*own, *configured, *(p for p in sandbox.spec.extra_rw if p.exists()))


def sandbox_env(sandbox: Sandbox, policy: NetworkPolicy, tmpdir: Path, token: str,
                lease: int | None, host: Mapping[str, str] | None = None) -> dict[str, str]:
    """The agent's whole environment but for git's object directories: the one place it
    is built.  By allowlist (``sandbox/secrets.py``) from the caller's (``host``): the
    basics, the preset's and the task file's ``pass_env`` variables, the host's proxy
    variables under the ``full`` network policy; then the proxy's under ``allow``,
    forkyard's values, the private home's ``HOME``/``XDG_*`` and the preset's variables,
    the port (the spec's, else the ``lease``), and last the task's own ``env``.  Under ``env_policy="minimal"`` (a
    validation: code nobody reviewed yet, which needs no secrets) only the
    :data:`MINIMAL_ENV` names come from the caller.  Never a leaked ``GIT_DIR`` & co
    pointing the agent at another repository."""
    spec = sandbox.spec
    host = os.environ if host is None else host
    if spec.env_policy == "minimal":  # no secrets: see SandboxSpec.env_policy
        env = {k: v for k, v in host.items() if k in MINIMAL_ENV}
    else:
        env = secrets.base_env(host)
        if policy.kind == "full":
            env.update(secrets.passed(HOST_PROXY_VARS, host))
        env.update(secrets.passed(spec.pass_env, host))
    if policy.kind == "allow":
        env.update(proxy_env())
    env["GIT_TERMINAL_PROMPT"] = "0"
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
