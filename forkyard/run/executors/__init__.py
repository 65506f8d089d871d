"""Executors: where the run loop's sandboxes are made.

- ``local`` (the default): on this machine, by the backend itself (today's behaviour);
- ``ray``: on the workers of a Ray cluster (:mod:`forkyard.run.executors.ray`, imported
  only when chosen: it needs the ``ray`` extra), each sandbox made from a git bundle of
  its base by the same backend code.

An executor is a :class:`~sandbox.backends.base.Backend`, so the run loop drives either
without knowing which it has.
"""

from __future__ import annotations

from forkyard.run.executors.local import local_executor
from forkyard.run.options import RunOptions
from gitproc.git import Repo
from sandbox.backends.base import Backend

EXECUTORS = ("local", "ray")

__all__ = ["EXECUTORS", "close_executor", "local_backend", "make_executor"]


def make_executor(repo: Repo, options: RunOptions, backend: Backend) -> Backend:
    """``backend`` as the executor ``options.executor`` names runs it."""
    if options.executor == "local":
        return local_executor(backend)
    if backend.name == "dummy":
        from sandbox.errors import SandboxBadInputError

        raise SandboxBadInputError("the dummy backend runs only with the local executor")
    from forkyard.run.executors.ray import RayExecutor

    config = getattr(backend, "config", None)
    if config is None:  # pragma: no cover - every real backend has its config model
        raise TypeError(f"backend {backend.name} has no configuration to send to workers")
    return RayExecutor(repo, config, address=options.ray_address, agents=options.agents,
                       resources=options.ray_resources, local=backend)


def local_backend(backend: Backend) -> Backend:
    """The backend that runs sandboxes on this machine behind ``backend`` (itself for the
    local executor).  What must run where the repository is -- a run's ``--validate`` of
    the merged commit -- uses it, never the executor's workers."""
    local = getattr(backend, "local", None)
    return local if isinstance(local, Backend) else backend


def close_executor(backend: Backend) -> None:
    """Release what an executor holds for the run (a local Ray instance it started)."""
    close = getattr(backend, "close", None)
    if callable(close):
        close()
