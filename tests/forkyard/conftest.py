"""The app's tests use the merge tests' repository fixture (the CLI drives the engine)."""

from tests.merge.conftest import repo  # noqa: F401
