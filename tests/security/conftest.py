"""The security tests use the merge tests' repository fixture."""

from tests.merge.conftest import repo  # noqa: F401
