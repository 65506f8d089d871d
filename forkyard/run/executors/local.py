"""The local executor: sandboxes on this machine, made by the backend itself."""

from __future__ import annotations

from sandbox.backends.base import Backend


def local_executor(backend: Backend) -> Backend:
    """The backend as the run loop has always driven it."""
    return backend
