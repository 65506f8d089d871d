"""Attack: an agent's ``conftest.py`` runs during ``--validate``.

Validation runs the merged tree's code, which agents wrote.  The payload below writes a
marker inside the sandbox (proof it ran), tries to write outside the repository and
reads a secret from the caller's environment.  Under forkyard's sandboxed validator the
marker is there and both the outside write and the secret read fail; the same payload
through the unconfined host validator succeeds at both, so the attack is real.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.repos import commit_files
from gitproc.git import Repo
from gitproc.process import run
from merge.transaction import Transaction
from merge.validate import host_validator
from sandbox import confine
from tests.conftest import require

SECRET = "AKIA-forkyard-test-" + uuid.uuid4().hex[:8]

PAYLOAD = """
import os, pathlib
secret = os.environ.get("AWS_SECRET_ACCESS_KEY", "MISSING")
try:
    pathlib.Path({outside!r}).write_text("pwned")
    outside = "WRITTEN"
except OSError as exc:
    outside = "DENIED " + type(exc).__name__
pathlib.Path("payload-marker.txt").write_text(f"payload ran; secret={{secret}}; outside={{outside}}")
"""


def _attack(repo: Repo, outside: Path) -> None:
    commit_files(repo, "agent-work", {
        "conftest.py": PAYLOAD.format(outside=str(outside)),
        "test_ok.py": "def test_ok():\n    assert True\n",
    }, "agent adds tests", base="main")


def _command() -> str:
    return (f"{sys.executable} -m pytest -q -p no:cacheprovider test_ok.py; rc=$?; "
            "cat payload-marker.txt; exit $rc")


@pytest.fixture
def outside() -> Iterator[Path]:
    # Outside the repository and outside /tmp (private in the sandbox anyway).
    path = Path("/var/tmp") / f"forkyard-attack-{uuid.uuid4().hex[:8]}"
    yield path
    path.unlink(missing_ok=True)


def test_conftest_payload_is_contained_by_the_sandboxed_validator(
        repo: Repo, outside: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require(confine.resolve("auto", True).name != "none", "bubblewrap or Landlock")
    _attack(repo, outside)
    env = {**os.environ, "AWS_SECRET_ACCESS_KEY": SECRET}
    r = run([sys.executable, "-m", "forkyard", "merge", "--into", "main", "agent-work",
             "--validate", _command(), "--json", "--repo", str(repo.path)],
            cwd=repo.path, env=env, check=False, timeout=300)
    doc = json.loads(r.stdout)
    log = doc["validation"]["log_tail"]
    assert "payload ran" in log, log                       # the payload executed
    assert "secret=MISSING" in log and SECRET not in log    # the secret did not reach it
    assert "outside=DENIED" in log                         # the outside write failed
    assert not outside.exists()
    assert doc["validation"]["passed"] and doc["outcome"] == "committed"
    # Nothing of the validation stays: no sandbox worktree, no throwaway branch.
    assert [w for w in repo.worktrees() if "validate-" in w.get("worktree", "")] == []
    assert repo.out("for-each-ref", "refs/heads/forkyard/") == ""


def test_the_same_payload_succeeds_without_the_sandbox(
        repo: Repo, outside: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The control: the library's unconfined host validator lets the attack through."""
    _attack(repo, outside)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    report = Transaction(repo, "main", ["agent-work"], dry_run=True, validate=_command(),
                         validator=host_validator(repo, _command())).run()
    assert report.validation is not None
    log = report.validation.log_tail
    assert f"secret={SECRET}" in log and "outside=WRITTEN" in log
    assert outside.read_text() == "pwned"


def test_the_mcp_merge_tool_validates_in_the_sandbox_too(
        repo: Repo, outside: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import anyio
    from mcp import Client

    from forkyard.mcp.server import create_server

    require(confine.resolve("auto", True).name != "none", "bubblewrap or Landlock")
    _attack(repo, outside)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)

    async def go() -> dict[str, object]:
        async with Client(create_server(repo.path)) as client:
            result = await client.call_tool("merge", {
                "into": "main", "sources": ["agent-work"], "dry_run": True,
                "validate": _command()})
            return dict(result.structured_content or json.loads(result.content[0].text))

    doc = anyio.run(go)
    log = doc["validation"]["log_tail"]  # type: ignore[index]
    assert "payload ran" in log and "secret=MISSING" in log and "outside=DENIED" in log
    assert not outside.exists()
