"""The worktree backend (the default): a git worktree per task, cgroup limits, bwrap/Landlock.

Creating a sandbox is one ``git worktree add`` (plus copying configured ignored files
and taking a port lease); everything costly -- cgroups, confinement, the temp dir -- is
deferred to :meth:`WorktreeBackend.execute`, so creating and destroying sandboxes costs
about what plain worktrees cost (``bench/sandbox_overhead.py``).

The agent is started as ``shim [cgroups, rlimits] -> bwrap -> shim [Landlock] -> sh -c``:
the outer shim joins the cgroups before anything else runs; bubblewrap confines; the
inner shim layers Landlock.  For a sandbox prepared ahead of its turn the chain is
started early and waits in the inner shim for its command (:meth:`WorktreeBackend.warm`).
After the agent's command, whatever it left running is killed (its slot then takes the
next task), its uncommitted changes are committed with forkyard's identity *inside the
sandbox* (a confined phase launched like the agent's), and the host reads the branch
head as data only; the result records that commit and the files changed.  Every
path of a sandbox (worktree, private home, temp, object, layer and private ref dirs) is
in its own directory, built in ``sandbox/places.py``.

The shared object store (``.git/objects``: every branch's history) is read-only to the
agent.  Its git writes new objects to a private object directory
(``GIT_OBJECT_DIRECTORY``, with the shared store as ``GIT_ALTERNATE_OBJECT_DIRECTORIES``);
afterwards the objects the branch needs are copied into the shared store through
``pack-objects | unpack-objects/index-pack``, which re-hashes every object, and the
branch is checked to be complete there before anyone reads it.

The modules: ``config`` (:class:`WorktreeConfig` and the constants) and ``backend``
(:class:`WorktreeBackend`: prepare, warm, execute, cleanup), which uses ``layout`` (the
sandbox's files on disk: an overlay or a checkout, and their removal), ``supervise``
(the agent's process tree: start, wait, stop, kill), ``home`` (the agent's private
home and environment) and ``harvest`` (what the agent left: its leftovers committed in
the sandbox, its head read as data, its objects imported and verified).
"""

from sandbox.backends.worktree.backend import WorktreeBackend
from sandbox.backends.worktree.config import SHIM_ARGV, WorktreeConfig
from sandbox.backends.worktree.harvest import odb_env

__all__ = ["SHIM_ARGV", "WorktreeBackend", "WorktreeConfig", "odb_env"]
