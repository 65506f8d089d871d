"""Fixtures of the attack suite (the harness is in ``harness.py``); the validation tests
use the merge tests' repository fixture."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.conftest import require
from tests.merge.conftest import repo  # noqa: F401
from tests.security.harness import Server


@pytest.fixture
def server() -> Iterator[Server]:
    """An HTTP server on the host's loopback that records who reached it."""
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.fixture
def curl() -> str:
    path = shutil.which("curl")
    require(path is not None, "curl")
    assert path is not None
    return path
