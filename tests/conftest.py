"""Test scaffolding shared by every package's tests.

Git is hermetic for every test: HOME is a temp dir, no system or global config, a fixed
identity and dates, ``init.defaultBranch=main``.  Components (git, Docker, cgroups,
bubblewrap) are real; when one is missing a test skips locally but *fails* under
``CI=true``, so a green CI run means the real thing was exercised.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures import repos as fixture_repos
from gitproc.git import Repo
from gitproc.process import run

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# A shell without job control starts a background job (`make test &`) with SIGINT
# ignored, and every process it starts inherits that: the Ctrl-C tests would then
# interrupt nothing.  Tests run with Python's own Ctrl-C handling (inherited by the
# processes they start as the default disposition).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

HERMETIC_CONFIG = {
    "init.defaultBranch": "main",
    "user.name": "Test User",
    "user.email": "test@example.com",
    "commit.gpgSign": "false",
    "protocol.file.allow": "always",
}


def require(available: bool, what: str) -> None:
    """Skip when ``what`` is missing locally; fail under CI=true (never a silent skip there)."""
    if not available:
        pytest.fail(f"{what} is required under CI=true") if IN_CI else pytest.skip(f"{what} not available")


@pytest.fixture(autouse=True)
def hermetic_git(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path_factory.mktemp("home")
    for key in list(os.environ):
        if key.startswith("GIT_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    monkeypatch.setenv("GIT_CONFIG_COUNT", str(len(HERMETIC_CONFIG)))
    for i, (key, value) in enumerate(HERMETIC_CONFIG.items()):
        monkeypatch.setenv(f"GIT_CONFIG_KEY_{i}", key)
        monkeypatch.setenv(f"GIT_CONFIG_VALUE_{i}", value)
    for var in ("GIT_AUTHOR_DATE", "GIT_COMMITTER_DATE"):
        monkeypatch.setenv(var, fixture_repos.FIXED_DATE)


@pytest.fixture(autouse=True)
def no_leftover_mounts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests that kill a run with SIGKILL on purpose (and never resume or gc it) leave
    its overlay mounts behind, as a real crash would: detach them after the test (under
    the test's temp dirs, and the sandboxes of its runs under the caller's cache), so
    that they do not slow every later sandbox (bubblewrap copies the host's mounts)."""
    from sandbox import overlay

    before = set(overlay.mounts_under(Path("/")))
    yield
    base = tmp_path_factory.getbasetemp()
    for point in sorted(set(overlay.mounts_under(Path("/"))) - before, reverse=True):
        if point.is_relative_to(base) or "/forkyard/sandboxes/" in str(point):
            with contextlib.suppress(OSError):
                overlay.unmount(point)


@pytest.fixture
def make_repo(tmp_path: Path) -> Iterator[object]:
    """``make_repo("webapp")`` builds a fixture repository in a fresh temp dir."""
    counter = iter(range(1000))

    def _make(name: str) -> Repo:
        return fixture_repos.build(name, tmp_path / f"{name}-{next(counter)}")

    yield _make


@pytest.fixture
def pylib(make_repo) -> Repo:  # type: ignore[no-untyped-def]
    return make_repo("pylib")


@pytest.fixture
def webapp(make_repo) -> Repo:  # type: ignore[no-untyped-def]
    return make_repo("webapp")


# -- Docker -----------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
TEST_IMAGE = os.environ.get("FORKYARD_TEST_IMAGE", "forkyard-test:latest")


@functools.cache
def docker_engine_available() -> bool:
    """True when a Docker engine answers (``make test`` starts one: scripts/docker-up.sh)."""
    try:
        import docker

        client = docker.from_env(version="auto", timeout=10)
        client.ping()
        client.close()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def docker_image() -> str:
    """The image docker-backend tests run in (``FORKYARD_TEST_IMAGE``, default
    ``forkyard-test:latest``), built from busybox-static by scripts/test-image.sh when
    missing; no registry is ever contacted."""
    require(docker_engine_available(), "a Docker engine")
    r = run(["bash", str(ROOT / "scripts" / "test-image.sh"), TEST_IMAGE], check=False, timeout=300)
    if r.returncode != 0:
        pytest.fail(f"scripts/test-image.sh could not build {TEST_IMAGE}: {r.err.strip()}")
    return TEST_IMAGE
