"""Speculative parallel validation: who broke a batch, found in few rounds.

The search logic is exercised with a validator that decides from the candidate alone
(pure scheduling logic); the transaction tests use real git and a real command.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from fixtures.repos import commit_files
from gitproc.git import Repo
from merge import validate
from merge.models import Validation
from merge.transaction import Transaction
from merge.validate import Candidate, ValidationPool, evenly, failure_summary, search


def _scenario(n: int, bad: set[int], slots: int) -> tuple[
        ValidationPool, list[Candidate], Callable[[int], Candidate], list[str]]:
    """Key "0,1,..,i": the target (0) and sources 1..i; a candidate fails when it holds
    a bad one (0 in ``bad``: the target itself is broken)."""
    seen: list[str] = []

    def validator(commit: str) -> Validation:
        seen.append(commit)
        held = {int(x) for x in commit.split(",")}
        return Validation(command="t", passed=not (held & bad), exit_code=0, log_tail="")

    def key(held: list[int]) -> Candidate:
        k = ",".join(map(str, [0, *held]))
        return Candidate(k, k)

    prefixes = [key(list(range(1, i + 1))) for i in range(n + 1)]
    without = lambda c: key([i for i in range(1, n + 1) if i != c])  # noqa: E731
    return ValidationPool(validator, slots), prefixes, without, seen


@pytest.mark.parametrize("bad", range(1, 10))
def test_one_bad_source_of_nine_costs_two_rounds_on_four_slots(bad: int) -> None:
    pool, prefixes, without, _ = _scenario(9, {bad}, 4)
    found = search(pool, prefixes, without)
    assert found.culprit == bad and not found.full.passed
    # Round one also validated the batch without its first and without its last source.
    assert pool.rounds == (1 if bad in (1, 9) else 2)
    # What lands without the culprit was validated in those rounds: no third one.
    landed = pool.known(without(bad).key)
    assert landed is not None and landed.passed


@pytest.mark.parametrize("slots", [2, 3, 4, 5])
def test_guessing_the_ends_never_costs_a_round(slots: int, monkeypatch: pytest.MonkeyPatch
                                               ) -> None:
    # Rounds until what lands is validated (one more when the search named the culprit
    # without validating the batch without it), with and without round one's guesses.
    def cost(n: int, bad: int) -> int:
        pool, prefixes, without, _ = _scenario(n, {bad}, slots)
        assert search(pool, prefixes, without).culprit == bad
        return pool.rounds + (pool.known(without(bad).key) is None)

    for n in range(1, 27):
        guessing = [cost(n, bad) for bad in range(1, n + 1)]
        with monkeypatch.context() as m:
            m.setattr(validate, "_opening", lambda n, slots: None)
            plain = [cost(n, bad) for bad in range(1, n + 1)]
        assert all(g <= p for g, p in zip(guessing, plain, strict=True)), (n, guessing, plain)
        if validate._opening(n, slots) is not None:
            assert guessing[-1] == 1  # the last source: its batch without it came first


@pytest.mark.parametrize("bad", [1, 4, 9])
def test_one_slot_is_a_binary_search(bad: int) -> None:
    pool, prefixes, without, seen = _scenario(9, {bad}, 1)
    assert search(pool, prefixes, without).culprit == bad
    assert len(seen) <= 1 + 4  # the full batch, then at most ceil(log2(10)) candidates


def test_two_bad_sources_blame_the_first() -> None:
    pool, prefixes, without, _ = _scenario(6, {2, 5}, 4)
    assert search(pool, prefixes, without).culprit == 2


@pytest.mark.parametrize("slots", [1, 2, 4])
def test_target_failing_alone_blames_nobody(slots: int) -> None:
    pool, prefixes, without, _ = _scenario(3, {0}, slots)
    found = search(pool, prefixes, without)
    assert found.culprit is None and not found.full.passed


def test_pool_runs_candidates_in_parallel_and_never_twice() -> None:
    active, peak = 0, 0
    mu = threading.Lock()

    def validator(commit: str) -> Validation:
        nonlocal active, peak
        with mu:
            active += 1
            peak = max(peak, active)
        time.sleep(0.2)
        with mu:
            active -= 1
        return Validation(command="t", passed=True, exit_code=0, log_tail=commit)

    pool = ValidationPool(validator, 3)
    pool.run([Candidate(k, k) for k in "abc"])
    pool.run([Candidate("a", "other commit, same tree")])
    assert peak == 3 and pool.rounds == 1 and pool.results["a"].log_tail == "a"


def test_evenly_spreads_picks() -> None:
    assert evenly(list(range(9)), 3) == [2, 4, 6]
    assert evenly([1, 2], 3) == [1, 2]
    assert evenly(list(range(10)), 1) == [5]


def test_failure_summary_keeps_the_failing_test_name() -> None:
    log = "\n".join(["x" * 80] * 50 + ["FAILED tests/test_basic.py::test_route - assert 1"]
                    + ["short summary"] + ["=" * 60 + " 1 failed in 0.3s " + "=" * 60])
    assert "FAILED tests/test_basic.py::test_route" in failure_summary(log)
    assert failure_summary("a\nb\nc") == "a\nb\nc"


def _nine(repo: Repo, bad: int) -> list[str]:
    names = []
    for i in range(1, 10):
        files = {f"f{i}.txt": f"{i}\n"}
        if i == bad:
            files["BROKEN"] = "x\n"
        names.append(f"s{i}")
        commit_files(repo, f"s{i}", files, f"source {i}", base="main")
    return names


@pytest.mark.parametrize("slots,rounds", [(4, 2), (1, 6)])
def test_bisect_with_slots_lands_eight_and_names_the_ninth(repo: Repo, slots: int,
                                                           rounds: int) -> None:
    names = _nine(repo, bad=6)
    tx = Transaction(repo, "main", names, mode="bisect", validate="test ! -f BROKEN",
                     validate_slots=slots)
    report = tx.run()
    assert report.outcome == "committed" and report.culprits == ["s6"]
    assert report.landed == [n for n in names if n != "s6"]
    assert "BROKEN" not in repo.out("ls-tree", "--name-only", "main").split()
    assert "s6" in report.blame and not report.blame["s6"].passed
    assert tx.validation_rounds <= rounds


def test_conservative_blames_the_source_failing_alone(repo: Repo) -> None:
    names = _nine(repo, bad=3)[:4]
    report = Transaction(repo, "main", names, validate="test ! -f BROKEN",
                         validate_slots=4).run()
    assert report.outcome == "rolled_back"
    assert report.culprits == ["s3"] and list(report.blame) == ["s3"]
    assert report.model_dump(mode="json")["blame"]["s3"]["passed"] is False


def test_validator_callable_decides_where_validation_runs(repo: Repo) -> None:
    names = _nine(repo, bad=0)[:2]
    seen: list[str] = []

    def validator(commit: str) -> Validation:
        seen.append(commit)
        return Validation(command="custom", passed=True, exit_code=0, log_tail="ran elsewhere")

    report = Transaction(repo, "main", names, validate="custom", validator=validator).run()
    assert report.outcome == "committed" and seen == [report.new_sha]
    assert report.validation is not None and report.validation.log_tail == "ran elsewhere"


class _Ahead:
    """A :class:`merge.validate.Speculative` validator deciding from the candidate alone
    (see ``_scenario``), recording what it was told."""

    def __init__(self, bad: set[int]) -> None:
        self.bad = bad
        self.expected: list[int] = []
        self.drained = 0

    def __call__(self, commit: str) -> Validation:
        held = {int(x) for x in commit.split(",")} if "," in commit else set()
        return Validation(command="t", passed=not (held & self.bad), exit_code=0, log_tail="")

    def expect(self, count: int, near: str) -> None:
        self.expected.append(count)

    def drain(self) -> None:
        self.drained += 1

    launched = 0

    def wait_launched(self, count: int, timeout: float) -> None:
        pass


def test_search_asks_for_the_next_rounds_sandboxes_until_the_last_round() -> None:
    _, prefixes, without, _ = _scenario(9, {5}, 4)
    ahead = _Ahead({5})
    pool = ValidationPool(ahead, 4)
    assert search(pool, prefixes, without).culprit == 5 and pool.rounds == 2
    # Round one (4 prefixes) asks for its own 4 and the next round's 4; round two
    # validates the batch without each suspect, which settles it: no more ahead.
    assert ahead.expected[0] == 8 and ahead.expected[-1] <= 4 and len(ahead.expected) == 2


def test_a_transaction_drains_its_validator_whatever_happens(repo: Repo) -> None:
    names = _nine(repo, bad=0)[:2]
    ahead = _Ahead(set())
    Transaction(repo, "main", names, validate="t", validator=ahead).run()
    assert ahead.drained == 1

    class Broken(_Ahead):
        def __call__(self, commit: str) -> Validation:
            raise RuntimeError("the sandbox could not be made")

    broken = Broken(set())
    with pytest.raises(RuntimeError):
        Transaction(repo, "main", names, validate="t", validator=broken).run()
    assert broken.drained == 1


def test_the_batches_without_each_source_are_merged_while_round_one_runs() -> None:
    """The next round's "batch without X" candidates are built on the caller's thread
    while round one's validations run, not after the round."""
    _, prefixes, without, _ = _scenario(9, {5}, 4)
    built: list[int] = []
    during_round_one: list[int] = []
    everyone = threading.Event()

    def counting(c: int) -> Candidate:
        built.append(c)
        if len(built) == 9:
            everyone.set()
        return without(c)

    def validator(commit: str) -> Validation:
        if pool.rounds == 1:
            everyone.wait(timeout=10)  # round one lasts until they are all built, or 10 s
            during_round_one[:] = built
        held = {int(x) for x in commit.split(",")}
        return Validation(command="t", passed=5 not in held, exit_code=0, log_tail="")

    pool = ValidationPool(validator, 4)
    assert search(pool, prefixes, counting).culprit == 5 and pool.rounds == 2
    assert sorted(during_round_one) == list(range(1, 10))
    assert sorted(built) == list(range(1, 10))  # none built twice
