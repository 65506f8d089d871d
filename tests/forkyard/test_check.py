"""``forkyard check``: the pairwise matrix, integration, validation; table, JSON, JUnit
(validated against the schema CI systems read), the step summary, exit codes; the
documented GitHub Actions step run as written on a clone of a fixture repository."""

from __future__ import annotations

import json
import os
import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import xmlschema
import yaml

from fixtures.repos import commit_files
from forkyard.cli import main
from forkyard.views.junit import schema_path
from gitproc.git import Repo, git
from gitproc.process import run
from merge.matrix import conflict_matrix
from tests.merge.conftest import merge_tree_answer

ROOT = Path(__file__).parents[2]
SCHEMA = xmlschema.XMLSchema(str(schema_path()))


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def refs(repo: Repo) -> str:
    return repo.out("for-each-ref", "--format=%(refname) %(objectname)")


def branches(repo: Repo) -> None:
    """feature/a: its own file; feature/b and feature/c: the same file differently;
    feature/d: deletes base.txt, which b and c modify; feature/e: the same as b."""
    commit_files(repo, "feature/a", {"a.txt": "a\n"}, base="main")
    commit_files(repo, "feature/b", {"base.txt": "b\n"}, base="main")
    commit_files(repo, "feature/c", {"base.txt": "c\n"}, base="main")
    commit_files(repo, "feature/d", {"base.txt": None, "d.txt": "d\n"}, base="main")
    commit_files(repo, "feature/e", {"base.txt": "b\n", "e.txt": "e\n"}, base="main")


def test_matrix_agrees_with_git_merge_tree_on_every_pair(repo: Repo) -> None:
    branches(repo)
    names = [f"feature/{x}" for x in "abcde"]
    matrix = conflict_matrix(repo, names, semantic=False)
    assert len(matrix.pairs) == 10
    for p in matrix.pairs:
        clean, _, paths = merge_tree_answer(repo, p.a, p.b)
        assert (p.status == "clean") == clean, (p.a, p.b)
        assert sorted({c.path for c in p.conflicts}) == paths, (p.a, p.b)
    conflicting = {(p.a, p.b) for p in matrix.conflicting}
    assert conflicting == {("feature/b", "feature/c"), ("feature/b", "feature/d"),
                           ("feature/c", "feature/d"), ("feature/c", "feature/e"),
                           ("feature/d", "feature/e")}


def test_matrix_finds_semantic_conflicts_between_clean_pairs(repo: Repo) -> None:
    base = commit_files(repo, "main", {
        "pkg/__init__.py": "", "pkg/util.py": "def helper(x):\n    return x\n",
        "pkg/app.py": "from pkg.util import helper\n\nprint(helper(1))\n"})
    commit_files(repo, "rename", {"pkg/util.py": "def helper2(x):\n    return x\n",
                                  "pkg/app.py": "from pkg.util import helper2\n\nprint(helper2(1))\n"},
                 base=base)
    commit_files(repo, "caller", {"pkg/cli.py": "from pkg.util import helper\n\nhelper(2)\n"},
                 base=base)
    p = conflict_matrix(repo, ["rename", "caller"]).pairs[0]
    assert p.status == "clean" and not p.ok
    assert [(f.kind, f.path) for f in p.semantic_errors] == [("dangling_reference", "pkg/cli.py")]
    assert conflict_matrix(repo, ["rename", "caller"], semantic=False).pairs[0].ok


def test_check_reports_table_json_junit_and_summary_and_moves_nothing(
    repo: Repo, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    commit_files(repo, "feature/a", {"a.txt": "a\n"}, base="main")
    commit_files(repo, "feature/b", {"base.txt": "b\n"}, base="main")
    commit_files(repo, "feature/c", {"base.txt": "c\n"}, base="main")
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    junit = tmp_path / "out" / "junit.xml"
    before = refs(repo)
    code, out, _ = cli(capsys, "check", "feature/*", "--into", "main", "--json",
                       "--junit", str(junit), "--repo", str(repo.path))
    assert code == 1
    doc = json.loads(out)
    assert doc["ok"] is False
    assert [b["name"] for b in doc["branches"]] == ["feature/a", "feature/b", "feature/c"]
    assert [b["status"] for b in doc["branches"]] == ["clean", "clean", "conflict"]
    bad = [(p["a"], p["b"]) for p in doc["matrix"]["pairs"] if p["status"] != "clean"]
    assert bad == [("feature/b", "feature/c")]
    assert refs(repo) == before  # never moves a ref

    SCHEMA.validate(str(junit))
    root = ET.parse(junit).getroot()
    cases = root.findall(".//testcase")
    assert [(c.get("classname"), c.get("name")) for c in cases] == [
        ("forkyard.check.branches", "feature/a"), ("forkyard.check.branches", "feature/b"),
        ("forkyard.check.branches", "feature/c"),
        ("forkyard.check.pairs", "feature/b + feature/c")]
    assert root.get("tests") == "4" and root.get("failures") == "2"
    assert "base.txt" in (cases[3].find("failure").get("message") or "")  # type: ignore[union-attr]

    text = summary.read_text()
    assert text.startswith("earlier step\n\n## forkyard check into `main`: ✗")
    assert "### Pairwise matrix" in text and "`feature/b` ✗ `feature/c`: `base.txt`" in text

    code, _, err = cli(capsys, "check", "feature/*", "--into", "main", "--repo", str(repo.path))
    assert code == 1 and "pair feature/b x feature/c: base.txt" in err


def test_check_validation_passes_and_fails(
    repo: Repo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    commit_files(repo, "feature/a", {"a.txt": "a\n"}, base="main")
    commit_files(repo, "feature/b", {"b.txt": "b\n"}, base="main")
    junit = tmp_path / "j.xml"
    code, out, _ = cli(capsys, "check", "feature/a", "feature/b", "--into", "main",
                       "--validate", "test -f a.txt && test -f b.txt", "--json",
                       "--junit", str(junit), "--repo", str(repo.path))
    assert code == 0 and json.loads(out)["validation"]["passed"]
    SCHEMA.validate(str(junit))
    code, out, _ = cli(capsys, "check", "feature/a", "feature/b", "--into", "main",
                       "--validate", "echo broken; exit 3", "--json",
                       "--junit", str(junit), "--repo", str(repo.path))
    assert code == 1 and json.loads(out)["validation"]["exit_code"] == 3
    SCHEMA.validate(str(junit))
    failure = ET.parse(junit).getroot().find(".//testcase[@classname='forkyard.check.validation']/failure")
    assert failure is not None and "exited 3" in (failure.get("message") or "")
    assert "broken" in (failure.text or "")


def test_check_bad_input_exits_2_and_writes_nothing(
    repo: Repo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junit = tmp_path / "j.xml"
    for args in (["nomatch/*"], ["no-such-branch"], ["main", "--into", "no-such-target"]):
        code, _, err = cli(capsys, "check", *args, "--junit", str(junit), "--repo", str(repo.path))
        assert code == 2, args
        assert len(err.strip().splitlines()) == 1 and "error:" in err
        assert not junit.exists()


def test_junit_schema_rejects_what_ci_parsers_would_misread(tmp_path: Path) -> None:
    # The schema can fail: a test case without a name, a count that is not a number.
    assert SCHEMA.is_valid('<testsuites><testsuite name="s" tests="1"><testcase name="x"/>'
                           '</testsuite></testsuites>')
    assert not SCHEMA.is_valid('<testsuites><testsuite name="s" tests="1"><testcase/>'
                               '</testsuite></testsuites>')
    assert not SCHEMA.is_valid('<testsuites><testsuite name="s" tests="many"/></testsuites>')


def test_the_documented_github_actions_step_runs_as_written(
    webapp: Repo, tmp_path: Path
) -> None:
    workflow = yaml.safe_load((ROOT / "docs/ci/github-actions.yml").read_text())
    job = workflow["jobs"]["check"]
    steps = {s.get("name"): s for s in job["steps"]}
    assert job["steps"][0]["with"]["fetch-depth"] == 0
    upload = steps["Upload the JUnit report"]
    assert upload["with"]["path"] == job["env"]["JUNIT"]
    # Branches on the remote, as CI sees them: one clean, two in conflict.
    commit_files(webapp, "forkyard/r1/notes", {"NOTES.md": "notes\n"}, base="main")
    commit_files(webapp, "feature/left", {"src/config.py": "LEFT = 1\n"}, base="main")
    commit_files(webapp, "feature/right", {"src/config.py": "RIGHT = 1\n"}, base="main")
    checkout = tmp_path / "checkout"
    git("clone", "-q", "--no-local", str(webapp.path), str(checkout), cwd=tmp_path)
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, **{k: str(v) for k, v in job["env"].items()},
           "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md")}
    assert shutil.which("forkyard", path=env["PATH"])
    script = steps["forkyard check"]["run"]
    r = run(["bash", "-e", "-c", script], cwd=checkout, env=env, check=False)
    assert r.returncode == 1, r.err  # the two feature branches conflict
    report = checkout / job["env"]["JUNIT"]
    SCHEMA.validate(str(report))
    names = [c.get("name") for c in ET.parse(report).getroot().findall(".//testcase")]
    assert names == ["origin/forkyard/r1/notes", "origin/feature/left", "origin/feature/right",
                     "origin/feature/left + origin/feature/right", job["env"]["VALIDATE"]]
    skipped = ET.parse(report).getroot().find(".//testcase[@classname='forkyard.check.validation']/skipped")
    assert skipped is not None and "do not integrate" in (skipped.get("message") or "")
    assert "Pairwise matrix" in (tmp_path / "summary.md").read_text()

    # Without the conflicting branch, the same step passes, the fixture's tests included.
    git("push", "-q", "origin", ":feature/right", cwd=checkout)
    git("fetch", "-q", "--prune", cwd=checkout)
    r = run(["bash", "-e", "-c", script], cwd=checkout, env=env, check=False)
    assert r.returncode == 0, r.err + r.out
    SCHEMA.validate(str(report))
    validation = ET.parse(report).getroot().find(".//testcase[@classname='forkyard.check.validation']")
    assert validation is not None and validation.find("failure") is None


def test_hostile_logs_and_names_stay_valid_junit_and_markdown(
    repo: Repo, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    commit_files(repo, "feat|x`y", {"a.txt": "a\n"}, base="main")
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    junit = tmp_path / "j.xml"
    nasty = r"printf '\033[31mred\033[0m \001 ```\n</details>\n'; exit 1"
    code, _, _ = cli(capsys, "check", "feat|x`y", "--into", "main", "--validate", nasty,
                     "--junit", str(junit), "--repo", str(repo.path))
    assert code == 1
    SCHEMA.validate(str(junit))  # the control character and the escape codes are gone
    failure = ET.parse(junit).getroot().find(".//failure")
    assert failure is not None and "red" in (failure.text or "")
    assert "\x1b" not in (failure.text or "")
    text = summary.read_text()
    assert "| ``feat\\|x`y`` | ✓ yes |" in text  # a pipe cannot end the cell
    assert "````text\nred  ```\n</details>\n````" in text  # the log cannot close its fence
