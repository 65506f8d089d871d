"""What of the caller's secrets reaches an agent: its environment by allowlist, the
well-known places credentials live made unreadable, and passed values masked in
everything forkyard records of the agent's output.

Environment: an agent gets :data:`BASE_VARS` (and ``LC_*``) from forkyard's environment
-- enough for shells and toolchains --, the variables its preset declares
(``Preset.caller_vars`` in ``sandbox/presets.py``: its API key and endpoint), the names
the task file lists in ``pass_env``, and the task file's ``env`` values, which may name
the caller's variables as ``${NAME}``; forkyard's own ``FORKYARD_*`` and the private
home's ``HOME``/``XDG_*`` go on top (``sandbox/backends/worktree/home.py`` builds it).
Nothing else: no cloud credentials, tokens or the variables of whatever shell started
forkyard.

Paths: :func:`denied_paths` -- ``~/.ssh``, cloud and cluster credentials, the other
sandboxes and forkyard's own state -- are hidden by bubblewrap (an empty read-only
tmpfs over a directory, ``/dev/null`` over a file).  Landlock cannot take a read right
back below ``/`` once granted, so confinement by Landlock alone leaves them readable;
``docs/security.md`` says so.

Masking: :class:`Masker` replaces the value of each passed variable (at least
:data:`MIN_SECRET` characters: masking ``true`` everywhere would hide nothing and
break everything) with ``***`` in each output line as it enters forkyard, so the log
tail, events, status, reports and JSON never hold it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from sandbox import places
from sandbox.errors import SandboxBadInputError

#: Passed from forkyard's environment to every agent.
BASE_VARS = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TERM",
             "COLORTERM", "NO_COLOR", "TZ", "TERMINFO", "PYTHONIOENCODING")
MIN_SECRET = 8
MASK = "***"
_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

#: Relative to the caller's home: where credentials usually are.
HOME_SECRETS = (".ssh", ".aws", ".azure", ".config/gcloud", ".docker", ".kube", ".netrc",
                ".git-credentials", ".gnupg", ".config/gh", ".pypirc", ".npmrc",
                ".cargo/credentials", ".cargo/credentials.toml", ".terraform.d",
                ".vault-token", ".password-store")


class EnvReferenceError(SandboxBadInputError):
    """A task file's ``env`` names a variable the caller does not have."""


def base_env(host: Mapping[str, str] | None = None) -> dict[str, str]:
    """The part of ``host`` (default: forkyard's environment) every agent gets."""
    host = os.environ if host is None else host
    return {k: v for k, v in host.items() if k in BASE_VARS or k.startswith("LC_")}


def expand(decl: Mapping[str, str], host: Mapping[str, str] | None = None) -> tuple[dict[str, str], tuple[str, ...]]:
    """A task's ``env`` with ``${NAME}`` replaced by the caller's ``NAME``; and the names
    whose value came from the caller (secrets: masked).  A missing variable is bad input."""
    host = os.environ if host is None else host
    out: dict[str, str] = {}
    secret: list[str] = []

    for name, value in decl.items():
        def sub(m: re.Match[str], name: str = name) -> str:
            if m.group(1) not in host:
                raise EnvReferenceError(f"env {name}: ${{{m.group(1)}}} is not set in "
                                        "forkyard's environment")
            return host[m.group(1)]

        out[name] = _REF.sub(sub, value)
        if _REF.search(value):
            secret.append(name)
    return out, tuple(secret)


def passed(names: Iterable[str], host: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's variables among ``names`` (those it does not have are left out)."""
    host = os.environ if host is None else host
    return {n: host[n] for n in names if n in host}


class Masker:
    """Replaces secret values in text (longest first, so no value is half-masked)."""

    def __init__(self, values: Iterable[str]) -> None:
        kept = sorted({v for v in values if len(v) >= MIN_SECRET}, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, kept))) if kept else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def __call__(self, text: str) -> str:
        return text if self._pattern is None else self._pattern.sub(MASK, text)


def denied_paths(forkyard_dir: Path, extra: Iterable[str] = (),
                 home: Path | None = None) -> tuple[Path, ...]:
    """The paths a sandbox may not read (resolved; only those that exist).

    The credential stores in the caller's real ``home`` (an agent's ``$HOME`` is a
    private one, ``sandbox/backends/worktree/home.py``, which is not among these);
    forkyard's state goes whole: ``.git/forkyard`` (other sandboxes' changes, temp dirs,
    objects and private homes, the run journals) and the sandbox root (the other
    sandboxes' files, ``sandbox/places.py``); the sandbox's own paths are mounted back on
    top by the caller.  ``extra``: the task file's ``deny_read`` (``~`` expanded).
    """
    home = Path(os.path.expanduser("~")) if home is None else home
    out: dict[Path, None] = {}
    for p in [*(home / s for s in HOME_SECRETS), forkyard_dir, places.sandbox_root(forkyard_dir),
              *(Path(os.path.expanduser(e)) for e in extra)]:
        try:
            real = p.resolve(strict=True)
        except (OSError, RuntimeError):
            continue
        if real != Path("/"):
            out[real] = None
    return tuple(out)
