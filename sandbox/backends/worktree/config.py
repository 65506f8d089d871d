"""The worktree backend's configuration and constants."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sandbox import confine, shim
from sandbox.ports import DEFAULT_RANGE

# How the exec shim (``sandbox/shim.py``) is run: its module imported (``-c``), not run
# as a script, so that the compiled form this process's own import of it left is used --
# a script is compiled again on every start, about 3 ms of each.  Its directory is
# appended to the path, so that the modules beside it never shadow the standard library's.
SHIM_ARGV = (sys.executable, "-I", "-S", "-c",
             f"import sys; sys.path.append({str(Path(shim.__file__).parent)!r}); import shim; "
             "sys.exit(shim.main(sys.argv[1:]))")
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
# Plumbing after `add` (write-tree, commit-tree, update-ref of what HEAD names): no
# second look at every file, no rewrite of the index.  The pathspecs `add` takes are
# appended (see WorktreeBackend: the top-level entries an overlay proves untouched).
_GIT = "git -c core.hooksPath=/dev/null -c gc.auto=0 -c maintenance.auto=false"
COMMIT_SH = (
    't=$(' + _GIT + ' write-tree) && p=$(' + _GIT + ' rev-parse -q --verify HEAD) && '
    '{ [ "$t" = "$(' + _GIT + ' rev-parse -q --verify HEAD^{tree})" ] || { '
    'c=$(GIT_AUTHOR_NAME=forkyard GIT_AUTHOR_EMAIL=forkyard@localhost '
    'GIT_COMMITTER_NAME=forkyard GIT_COMMITTER_EMAIL=forkyard@localhost '
    + _GIT + ' commit-tree "$t" -p "$p" -m "forkyard: $FORKYARD_TASK_ID" '
    '-m "${FORKYARD_DESCRIPTION:-Changes left by the agent.}") && '
    + _GIT + ' update-ref -m "commit: forkyard: $FORKYARD_TASK_ID" HEAD "$c" "$p"; }; }'
)


def commit_command(pathspecs: list[str], scratch: tuple[str, ...] = ()) -> str:
    """The confined commit step, ``git add -A`` limited to ``pathspecs`` (all: none).

    ``scratch``: top-level names the agent's CLI leaves that are not its work
    (``presets.SCRATCH``: aider's repo-map cache), removed first -- in the sandbox, as
    the agent (a link is removed as a link), so they are never committed."""
    import shlex

    spec = (" -- " + " ".join(map(shlex.quote, pathspecs))) if pathspecs else ""
    rm = ("rm -rf -- " + " ".join(shlex.quote(f"./{n}") for n in scratch) + "; "
          if scratch else "")
    return f"{rm}{_GIT} add -A{spec} && {COMMIT_SH}"


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
    """More paths agents may write (e.g. ``~/.cache``): bound read-write, allowed by Landlock
    (``--extra-rw``; a task file's ``extra_rw`` adds per task)."""
    extra_ro: tuple[Path, ...] = ()
    """More paths agents may read where the sandbox hides them (under ``/tmp``), bound
    read-only (``--extra-ro``; a task file's ``extra_ro`` adds per task)."""
    sandbox_dir: Path | None = None
    """Where sandboxes go (``<dir>/<repo>-<hash>/<run>/<task>``); default under
    ``$XDG_CACHE_HOME/forkyard/sandboxes`` (``sandbox/places.py``).  Never inside ``.git``."""
    commit_timeout_s: float = Field(300, gt=0)
    """Wall-clock limit of the confined step that commits what an agent left."""
    setup_timeout_s: float = Field(600, gt=0)
    """Wall-clock limit of the per-run setup command."""
    layers: Literal["auto", "overlay", "checkout"] = "auto"
    """How a sandbox's files are made.  overlay: a copy-on-write mount over one checkout
    per run (``sandbox/overlay.py``; needs root); checkout: a full checkout per sandbox;
    auto: overlay where this process can mount, else checkout."""
    proxy_hosts: dict[str, str] = Field(default_factory=dict)
    """Static name overrides for the network proxy, ``{"name": "ip:port"}`` (like
    ``/etc/hosts`` with a port): an internal API gateway, a test server.  Trusted as
    written: private addresses are allowed for these names."""
