"""Sandbox backends behind one contract (:mod:`sandbox.backends.base`).

- ``worktree`` (default): git worktree + cgroups + bubblewrap/Landlock,
- ``docker``: a container with the worktree mounted at /work (imported only when chosen:
  it pulls in docker-py),
- ``dummy``: scripted outcomes for unit tests of the run loop.

Each backend's configuration is a pydantic model with a ``type`` literal;
:func:`get_backend` builds a backend from a name, a config model, or a config dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from sandbox.backends.base import Backend, ExecResult, Sandbox, SandboxSpec, branch_name
from sandbox.backends.dummy import DummyBackend, DummyConfig, DummyOutcome
from sandbox.backends.worktree import WorktreeBackend, WorktreeConfig
from sandbox.errors import SandboxBadInputError

if TYPE_CHECKING:
    from gitproc.git import Repo

BACKENDS = ("worktree", "docker", "dummy")

__all__ = [
    "BACKENDS", "Backend", "DummyBackend", "DummyConfig", "DummyOutcome", "ExecResult",
    "Sandbox", "SandboxSpec", "WorktreeBackend", "WorktreeConfig", "branch_name",
    "config_for", "get_backend",
]


def config_for(name_or_config: str | BaseModel | Mapping[str, Any], **options: Any) -> BaseModel:
    """The config model for a backend name (with ``options``), a dict with ``type``, or a model."""
    if isinstance(name_or_config, BaseModel):
        return name_or_config.model_copy(update=options) if options else name_or_config
    data: dict[str, Any] = (
        {"type": name_or_config} if isinstance(name_or_config, str) else dict(name_or_config)
    )
    data.update(options)
    kind = data.get("type", "worktree")
    if kind == "worktree":
        return WorktreeConfig.model_validate(data)
    if kind == "dummy":
        return DummyConfig.model_validate(data)
    if kind == "docker":
        from sandbox.backends.docker import DockerConfig  # lazy: docker-py is heavy

        return DockerConfig.model_validate(data)
    raise SandboxBadInputError(f"unknown backend {kind!r} (choose from {', '.join(BACKENDS)})")


def get_backend(
    name_or_config: str | BaseModel | Mapping[str, Any], repo: Repo | None, **options: Any
) -> Backend:
    """Build a backend: ``get_backend("worktree", repo, grace_s=1)``,
    ``get_backend(DockerConfig(image=...), repo)`` or ``get_backend({"type": "dummy"}, None)``.

    Invalid options are bad input (:class:`~sandbox.errors.SandboxBadInputError`).
    """
    from pydantic import ValidationError

    try:
        config = config_for(name_or_config, **options)
    except ValidationError as exc:
        raise SandboxBadInputError(f"bad backend options: {exc}") from None
    if isinstance(config, WorktreeConfig):
        if repo is None:
            raise SandboxBadInputError("the worktree backend needs a repository")
        return WorktreeBackend(repo, config)
    if isinstance(config, DummyConfig):
        return DummyBackend(repo, config)
    from sandbox.backends.docker import DockerBackend, DockerConfig

    if isinstance(config, DockerConfig):
        if repo is None:
            raise SandboxBadInputError("the docker backend needs a repository")
        return DockerBackend(repo, config)
    raise SandboxBadInputError(f"unknown backend config {type(config).__name__}")
