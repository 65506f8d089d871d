"""The worktree backend's configuration and constants."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sandbox import confine, limits
from sandbox.ports import DEFAULT_RANGE

SHIM = str(Path(limits.__file__).with_name("shim.py"))
BWRAP_ATTEMPTS = 3
# Below this many objects an import is unpacked to loose objects, above it kept as a
# pack: what `git fetch` does (fetch.unpackLimit), so many small tasks add no packs.
UNPACK_LIMIT = 100
# The exec shim's cgroup part in sh: write our pid to each cgroup.procs file given before
# ``--`` (any failure: exit 125 like the shim, the command never ran), then exec the rest.
JOIN_SH = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'

# The confined last step after an agent: its leftovers staged and committed by git
# *inside* the sandbox (under its confinement and limits), with forkyard's identity and
# no hooks, so that no host git ever reads the agent's worktree, index, config or hooks.
_GIT = "git -c core.hooksPath=/dev/null -c commit.gpgSign=false -c gc.auto=0"
COMMIT_SH = (
    f"{_GIT} add -A && {{ {_GIT} diff --cached --quiet || "
    "GIT_AUTHOR_NAME=forkyard GIT_AUTHOR_EMAIL=forkyard@localhost "
    "GIT_COMMITTER_NAME=forkyard GIT_COMMITTER_EMAIL=forkyard@localhost "
    f'{_GIT} commit --quiet --no-verify -m "forkyard: $FORKYARD_TASK_ID" '
    '-m "${FORKYARD_DESCRIPTION:-Changes left by the agent.}"; }'
)


class WorktreeConfig(BaseModel):
    """Configuration of the worktree backend (the default)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    type: Literal["worktree"] = "worktree"
    """Backend discriminator."""
    confinement: confine.Mode = "auto"
    """auto (bwrap + Landlock where available), bwrap, landlock, bwrap+landlock, or none
    (the same explicit opt-out as a task's ``confine=False``)."""
    limits: Literal["auto", "cgroup", "rlimit", "none"] = "auto"
    """auto: cgroups where writable, else rlimits (recorded); cgroup: fail without them."""
    grace_s: float = Field(2.0, ge=0)
    """On timeout or cancel: seconds between SIGTERM and killing the whole group."""
    log_tail_lines: int = Field(200, ge=1)
    """How many trailing output lines a result keeps."""
    lease_ports: bool = True
    """Lease a distinct ``PORT``/``FORKYARD_PORT`` per agent when the spec has none."""
    port_range: tuple[int, int] = DEFAULT_RANGE
    """Leased ports come from ``[lo, hi)``."""
    extra_rw: tuple[Path, ...] = ()
    """More paths agents may write (e.g. ``~/.cache``): bound read-write, allowed by Landlock."""
    commit_timeout_s: float = Field(300, gt=0)
    """Wall-clock limit of the confined step that commits what an agent left."""
    setup_timeout_s: float = Field(600, gt=0)
    """Wall-clock limit of the per-run setup command."""
    layers: Literal["auto", "overlay", "checkout"] = "auto"
    """How a sandbox's files are made.  overlay: a copy-on-write mount over one checkout
    per run (``sandbox/overlay.py``; needs root); checkout: a full checkout per sandbox;
    auto: overlay where this process can mount, else checkout."""
