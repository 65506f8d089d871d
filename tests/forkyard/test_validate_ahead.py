"""Validation sandboxes made ahead and cleaned up behind (``SandboxValidator``): a
sandbox made while a round runs is used by the next validation, at that validation's
commit; timeouts still kill the whole tree; and once a transaction returned nothing of
its validations is left.  Real repositories, the real worktree backend, bubblewrap /
Landlock and cgroups as the host has them."""

from __future__ import annotations

import time
import uuid

from fixtures.repos import commit_files
from forkyard.run.validation import SandboxValidator, command_validator
from gitproc.git import Repo
from merge.transaction import Transaction
from sandbox import overlay, places
from tests.sandbox.conftest import processes_with_arg


def _wait_ready(validator: SandboxValidator, count: int) -> None:
    deadline = time.monotonic() + 60
    while validator.ready < count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert validator.ready == count, "the sandboxes made ahead never became ready"


def _nothing_left(repo: Repo, validator: SandboxValidator) -> None:
    assert [w for w in repo.worktrees() if "validate-" in w.get("worktree", "")] == []
    assert "validate-" not in repo.out("for-each-ref", "refs/heads/")
    run_dir = places.run_dir(repo.forkyard_dir, validator.run_id)
    assert not run_dir.exists() or list(run_dir.iterdir()) == []
    for root in places.mount_roots(repo.forkyard_dir):
        assert overlay.mounts_under(root / validator.run_id) == []
    assert not (repo.forkyard_dir / "bases" / validator.run_id).exists()


def test_a_sandbox_made_ahead_runs_the_next_validation_at_its_commit(webapp: Repo) -> None:
    tip = webapp.rev_parse("main")
    other = commit_files(webapp, "feature", {"only-here.txt": "x\n"}, "feature", base="main")
    validator = command_validator(
        webapp, 'test -f only-here.txt && test "$FORKYARD_VALIDATE_COMMIT" = "$(git rev-parse HEAD)"'
                ' && echo "at $FORKYARD_VALIDATE_COMMIT"')
    assert isinstance(validator, SandboxValidator)
    validator.expect(2, tip)  # made at the tip, which lacks the file
    _wait_ready(validator, 2)
    result = validator(other)
    assert validator.used_ahead == 1 and validator.ready == 1
    assert result.passed, result.log_tail
    assert f"at {other}" in result.log_tail
    # The same sandbox machinery: a made-ahead sandbox at the tip fails where the file is not.
    assert not validator(tip).passed and validator.used_ahead == 2
    validator.drain()
    _nothing_left(webapp, validator)


def test_a_timeout_in_a_sandbox_made_ahead_kills_its_whole_tree(webapp: Repo) -> None:
    pause = f"{uuid.uuid4().int % 1000}.{uuid.uuid4().int % 983 + 1}"
    validator = command_validator(webapp, f"sleep {pause} & sleep {pause}; wait", timeout_s=1.0)
    tip = webapp.rev_parse("main")
    validator.expect(1, tip)
    _wait_ready(validator, 1)
    result = validator(tip)
    assert validator.used_ahead == 1
    assert not result.passed and result.exit_code is None and "timeout" in result.log_tail
    assert processes_with_arg(pause) == []
    validator.drain()
    _nothing_left(webapp, validator)


def test_nothing_of_the_validations_is_left_once_the_transaction_returns(webapp: Repo) -> None:
    names = []
    for i in range(1, 7):
        files = {f"f{i}.txt": f"{i}\n", **({"BROKEN": "x\n"} if i == 5 else {})}
        commit_files(webapp, f"s{i}", files, f"source {i}", base="main")
        names.append(f"s{i}")
    validator = command_validator(webapp, "test ! -f BROKEN")
    tx = Transaction(webapp, "main", names, mode="bisect", validate="test ! -f BROKEN",
                     validator=validator, validate_slots=4)
    report = tx.run()
    assert report.outcome == "committed" and report.culprits == ["s5"]
    assert tx.validation_rounds == 2 and tx.landed_at is not None
    # Round two's sandboxes were asked for while round one ran; used or not, removed.
    _nothing_left(webapp, validator)
