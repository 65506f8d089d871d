"""Agent presets: how forkyard runs each agent CLI it knows, unattended, in its sandbox.

Each preset is the CLI's non-interactive invocation for an environment that is already
sandboxed from outside (forkyard's: bubblewrap, Landlock, cgroups), so the CLI's own
permission prompts and its own sandbox are off -- its sandbox cannot start inside ours
anyway (nested user namespaces are disabled), and a CLI whose edits are refused still
exits 0.  Where the CLI has a machine-readable event stream, the preset asks for it
(``sandbox/streams.py`` reads it).

A preset declares what its CLI needs from the outside: the caller's variables that hold
its key and endpoint (``pass_env``), the variables forkyard sets for it (``env``), the
network domains it talks to (``domains``, for an allowlisting network policy), and which
of the user's configuration files are copied into the agent's private home
(``home_files``).  The per-agent docs are ``docs/agents/<name>.md``.

Every default flag can be replaced from the task file (``agent: {preset: codex, flags:
[...]}``); ``args`` add to them.  The command line is
``<exe> <subcommand> <flags> <args> <prompt option> PROMPT``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from gitproc.process import run

Stream = Literal["claude", "codex", "gemini", "aider"]


@dataclass(frozen=True)
class Preset:
    """One agent CLI's invocation and needs."""

    name: str
    exe: str                                  # looked up on PATH
    subcommand: tuple[str, ...] = ()          # e.g. codex's ``exec``
    flags: tuple[str, ...] = ()               # default flags (task file: ``flags`` replaces)
    prompt_option: tuple[str, ...] = ()       # what precedes the prompt (``-p``)
    env: Mapping[str, str] = field(default_factory=dict)  # set by forkyard; ``{home}`` = the private home
    pass_env: tuple[str, ...] = ()            # the caller's variables the CLI may need
    key_env: tuple[str, ...] = ()             # any one of these configures the API key
    endpoint_env: tuple[str, ...] = ()        # a custom endpoint (proxy, local model)
    domains: tuple[str, ...] = ()             # hosts the CLI reaches: the ``auto`` network allowlist
    home_files: tuple[str, ...] = ()          # the user's config, relative to HOME
    stream: Stream | None = None              # how its output is read (sandbox/streams.py)
    package: str = ""                         # where the CLI comes from (for messages)

    @property
    def caller_vars(self) -> tuple[str, ...]:
        """The caller's variables passed to its agents by name (the environment is an
        allowlist, ``sandbox/secrets.py``): ``pass_env`` with the key and endpoint ones."""
        return tuple(dict.fromkeys([*self.pass_env, *self.key_env, *self.endpoint_env]))

    def argv(self, prompt: str, flags: tuple[str, ...] | None, args: tuple[str, ...]) -> list[str]:
        """The command line for ``prompt``; ``flags`` None: the preset's defaults."""
        chosen = self.flags if flags is None else flags
        return [self.exe, *self.subcommand, *chosen, *args, *self.prompt_option, prompt]


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset(
        "claude", "claude",
        # Print mode with the JSON event stream (which needs --verbose); permissions
        # bypassed: the sandbox is the boundary (refused as root unless IS_SANDBOX=1).
        flags=("--output-format", "stream-json", "--verbose", "--dangerously-skip-permissions"),
        prompt_option=("-p",),
        env={"IS_SANDBOX": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"},
        pass_env=("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL",
                  "ANTHROPIC_MODEL", "ANTHROPIC_SMALL_FAST_MODEL", "CLAUDE_CODE_OAUTH_TOKEN",
                  "CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX"),
        key_env=("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN"),
        endpoint_env=("ANTHROPIC_BASE_URL",),
        domains=("api.anthropic.com",),
        home_files=(".claude.json", ".claude/settings.json", ".claude/CLAUDE.md",
                    ".claude/.credentials.json"),
        stream="claude", package="npm @anthropic-ai/claude-code"),
    Preset(
        "codex", "codex", subcommand=("exec",),
        # --full-auto is gone; codex's own sandbox cannot start inside ours, and its
        # documented mode for an externally sandboxed environment is this bypass.
        flags=("--json", "--dangerously-bypass-approvals-and-sandbox", "--skip-git-repo-check",
               "-c", "analytics.enabled=false", "-c", "features.plugins=false",
               "-c", "features.remote_plugin=false"),
        pass_env=("OPENAI_API_KEY", "OPENAI_BASE_URL", "CODEX_API_KEY"),
        key_env=("OPENAI_API_KEY", "CODEX_API_KEY"),
        endpoint_env=("OPENAI_BASE_URL",),
        # chatgpt.com and auth.openai.com: a ChatGPT sign-in (~/.codex/auth.json).
        domains=("api.openai.com", "chatgpt.com", "auth.openai.com"),
        home_files=(".codex/config.toml", ".codex/auth.json", ".codex/AGENTS.md"),
        stream="codex", package="npm @openai/codex"),
    Preset(
        "gemini", "gemini",
        # Every sandbox is a new folder: trusted on purpose (else exit 55).
        flags=("-o", "stream-json", "--approval-mode", "yolo", "--skip-trust"),
        prompt_option=("-p",),
        pass_env=("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GEMINI_BASE_URL",
                  "GOOGLE_CLOUD_PROJECT", "GOOGLE_CLOUD_LOCATION", "GOOGLE_GENAI_USE_VERTEXAI"),
        key_env=("GEMINI_API_KEY", "GOOGLE_API_KEY"),
        endpoint_env=("GOOGLE_GEMINI_BASE_URL",),
        # cloudcode-pa and oauth2: a Google sign-in instead of an API key.
        domains=("generativelanguage.googleapis.com", "cloudcode-pa.googleapis.com",
                 "oauth2.googleapis.com"),
        home_files=(".gemini/settings.json", ".gemini/GEMINI.md"),
        stream="gemini", package="npm @google/gemini-cli"),
    Preset(
        "aider", "aider",
        # Edits applied without asking, never committed by aider (its git library reads
        # .git/objects directly and misses the sandbox's private objects; forkyard
        # commits), no update check, analytics, .gitignore edits or terminal UI.
        flags=("--yes-always", "--no-auto-commits", "--no-check-update",
               "--no-show-release-notes", "--analytics-disable", "--no-gitignore",
               "--no-pretty", "--no-fancy-input", "--no-show-model-warnings"),
        prompt_option=("--message",),
        env={"AIDER_CHAT_HISTORY_FILE": "{home}/.aider.chat.history.md",
             "AIDER_INPUT_HISTORY_FILE": "{home}/.aider.input.history",
             "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
        pass_env=("OPENAI_API_KEY", "OPENAI_API_BASE", "ANTHROPIC_API_KEY", "GEMINI_API_KEY",
                  "OPENROUTER_API_KEY", "DEEPSEEK_API_KEY", "AIDER_MODEL"),
        key_env=("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY",
                 "OPENROUTER_API_KEY", "DEEPSEEK_API_KEY"),
        endpoint_env=("OPENAI_API_BASE",),
        domains=("api.openai.com", "api.anthropic.com", "openrouter.ai",
                 "generativelanguage.googleapis.com", "api.deepseek.com"),
        home_files=(".aider.conf.yml", ".aider.model.settings.yml", ".aider.model.metadata.json",
                    ".env"),
        stream="aider", package="PyPI aider-chat"),
    Preset("shell", "bash", prompt_option=("-c",)),
)}

#: What an agent CLI leaves in the worktree that is not the agent's work: removed before
#: the leftovers are committed (aider's repo-map cache).
SCRATCH: dict[str, tuple[str, ...]] = {"aider": (".aider.tags.cache.v4",)}


# -- the private home ---------------------------------------------------------------------

def seed_home(home: Path, preset: str | None, user_home: Path, env: Mapping[str, str],
              identity: tuple[str, str]) -> None:
    """Fill an agent's private home: the preset's config files copied from the user's home
    (regular files only, never through a link; secret stores such as ``~/.ssh`` are never
    among them), a git identity (agents that commit must not write one into the
    repository's read-only config), and what the CLI needs to run unattended."""
    for d in (".config", ".cache", ".local/share", ".local/state"):
        (home / d).mkdir(parents=True, exist_ok=True)
    name, email = identity
    (home / ".gitconfig").write_text(f"[user]\n\tname = {_git_quote(name)}\n"
                                     f"\temail = {_git_quote(email)}\n", encoding="utf-8")
    p = PRESETS.get(preset or "")
    if p is None:
        return
    for rel in p.home_files:
        _copy_regular(user_home / rel, home / rel)
    if p.name == "gemini":
        _gemini_settings(home / ".gemini" / "settings.json", env)


def _copy_regular(src: Path, dst: Path) -> None:
    try:
        fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return
        data = f.read()
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data)
    dst.chmod(0o600)


def _gemini_settings(path: Path, env: Mapping[str, str]) -> None:
    """The user's settings, plus what headless use needs: an API-key auth type when a key
    is given and none is chosen (else 0.61 picks one that fails headless), and no usage
    statistics or auto-update."""
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(settings, dict):
            settings = {}
    except (OSError, ValueError):
        settings = {}
    auth = settings.setdefault("security", {}).setdefault("auth", {})
    if "selectedType" not in auth and (env.get("GEMINI_API_KEY") or env.get("GOOGLE_API_KEY")):
        auth["selectedType"] = "gemini-api-key"
    settings.setdefault("privacy", {}).setdefault("usageStatisticsEnabled", False)
    general = settings.setdefault("general", {})
    general.setdefault("enableAutoUpdate", False)
    general.setdefault("enableAutoUpdateNotification", False)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2), encoding="utf-8")


def _git_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'


def preset_env(preset: str | None, home: Path) -> dict[str, str]:
    """The variables forkyard sets for ``preset``'s CLI, ``{home}`` filled in."""
    p = PRESETS.get(preset or "")
    return {} if p is None else {k: v.replace("{home}", str(home)) for k, v in p.env.items()}


# -- is it installed? -----------------------------------------------------------------------

@dataclass(frozen=True)
class Installed:
    """What ``forkyard agents`` says about one preset's CLI."""

    preset: str
    path: str | None
    version: str | None
    under_tmp: bool
    key: str | None             # the variable that configures the key, if any is set
    endpoint: str | None        # the custom endpoint, if one is set


def find_cli(preset: str, path_var: str | None = None) -> tuple[str | None, bool]:
    """Where ``preset``'s CLI is on ``PATH`` (real path), and whether that is under
    ``/tmp`` -- which a sandbox replaces by its own temp dir, so the CLI is not there."""
    exe = shutil.which(PRESETS[preset].exe, path=path_var or os.environ.get("PATH"))
    if exe is None:
        return None, False
    real = os.path.realpath(exe)
    under = any(Path(p).is_relative_to("/tmp") for p in (exe, real))
    return exe, under


_VERSION = re.compile(r"\d+\.\d+(?:\.\d+)?")


def describe(preset: str, env: Mapping[str, str] | None = None) -> Installed:
    """``preset``'s CLI: where, which version (``--version``), key and endpoint set?"""
    env = os.environ if env is None else env
    p = PRESETS[preset]
    exe, under = find_cli(preset, env.get("PATH"))
    version = None
    if exe is not None:
        # In a throw-away home: some CLIs write their state at any start.
        with tempfile.TemporaryDirectory(prefix="forkyard-version-") as home:
            try:
                r = run([exe, "--version"], check=False, timeout=60,
                        env={**env, "HOME": home, "IS_SANDBOX": "1"})
                m = _VERSION.search(r.out + r.err)
                version = m.group(0) if m else None
            except OSError:
                pass
    key = next((k for k in p.key_env if env.get(k)), None)
    endpoint = next((env[k] for k in p.endpoint_env if env.get(k)), None)
    return Installed(preset, exe, version, under, key, endpoint)
