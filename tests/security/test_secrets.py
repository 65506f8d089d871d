"""Secrets attacks: what an agent can learn of the caller's environment, credential
files, other sandboxes and forkyard's state -- each through the real worktree backend,
with the attack shown to work where nothing stops it."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from forkyard.journal.events import RunPaths
from gitproc.git import Repo
from planner import Agent, Limits, Task
from sandbox import places
from sandbox.agents import AgentContext
from sandbox.errors import SandboxBadInputError
from sandbox.policies import sandbox_fields
from sandbox.presets import PRESETS
from tests.security.harness import run_tasks

SECRET = "sk-test-7f3a9c1e5b2d4f60"


def committed(repo: Repo, path: str) -> str:
    return repo.out("show", f"main:{path}")


def test_caller_environment_does_not_reach_the_agent(pylib: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("GITHUB_TOKEN", SECRET + "gh")
    res = run_tasks(pylib, {"id": "a", "command": "env > env.txt"})
    assert res.result("a").status == "succeeded"
    env = committed(pylib, "env.txt")
    assert "FORKYARD_TASK_ID=a" in env and "PATH=" in env and "HOME=" in env  # it dumped its env
    assert SECRET not in env and "AWS_SECRET_ACCESS_KEY" not in env and "GITHUB_TOKEN" not in env


def test_pass_env_and_caller_references_reach_it_masked(pylib: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_TOKEN", SECRET)
    monkeypatch.setenv("UPSTREAM_KEY", SECRET + "up")
    task = {"id": "a", "pass_env": ["MY_TOKEN"],
            "env": {"API_KEY": "${UPSTREAM_KEY}", "MODE": "plain-value"},
            "command": 'echo "$MY_TOKEN" > t.txt; echo "$API_KEY" >> t.txt; '
                       'echo "token=$MY_TOKEN key=$API_KEY mode=$MODE"'}
    res = run_tasks(pylib, task)
    r = res.result("a")
    # The agent had the values (it wrote them into its work)...
    assert committed(pylib, "t.txt").split() == [SECRET, SECRET + "up"]
    # ...and printed them, but forkyard recorded them masked: the result, the events, the JSON.
    assert "token=*** key=*** mode=plain-value" in r.log_tail
    assert SECRET not in res.model_dump_json()
    events = RunPaths.of(pylib, res.run_id).events.read_text()
    assert "token=***" in events and SECRET not in events
    # run.json keeps the reference, never the value.
    manifest = json.loads(RunPaths.of(pylib, res.run_id).manifest.read_text())
    assert "${UPSTREAM_KEY}" in json.dumps(manifest) and SECRET not in json.dumps(manifest)


def test_missing_caller_variable_is_bad_input(pylib: Repo) -> None:
    with pytest.raises(SandboxBadInputError, match="NOT_SET_ANYWHERE"):
        run_tasks(pylib, {"id": "a", "command": "true", "env": {"K": "${NOT_SET_ANYWHERE}"}})


def test_presets_declare_their_api_variables() -> None:
    os.environ.setdefault("ANTHROPIC_API_KEY", SECRET)
    task = Task(id="a", description="do it")
    fields = sandbox_fields(Agent(preset="claude"), task, Limits(), AgentContext("a", "", "", "", "", ""))
    assert "ANTHROPIC_API_KEY" in fields["pass_env"] and fields["pass_env"] == PRESETS["claude"].caller_vars
    assert fields["limits"].network.allow == ("api.anthropic.com",)
    cmd = sandbox_fields(Agent(command="true"), task, Limits(), AgentContext("a", "", "", "", "", ""))
    assert cmd["pass_env"] == () and cmd["limits"].network == "none"


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Path]]:
    """Credentials where tools keep them, in the caller's home -- outside /tmp (which
    every sandbox gets a private one of, hiding a home there anyway)."""
    home = Path(tempfile.mkdtemp(prefix="forkyard-home-", dir="/var/tmp"))
    monkeypatch.setenv("HOME", str(home))
    files = {".ssh/id_ed25519": "PRIVATE-KEY", ".aws/credentials": "AWS-CREDS",
             ".netrc": "NETRC-PASSWORD", ".git-credentials": "GIT-CREDS",
             ".docker/config.json": "DOCKER-AUTH", ".kube/config": "KUBE-TOKEN",
             ".config/gcloud/credentials.db": "GCLOUD-CREDS", "notes/plan.txt": "JUST-NOTES"}
    out = {}
    for rel, text in files.items():
        p = home / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text + "\n")
        out[rel] = p
    yield out
    shutil.rmtree(home, ignore_errors=True)


def test_credential_files_are_unreadable(pylib: Repo, credentials: dict[str, Path]) -> None:
    cat = "; ".join(f"cat {p} 2>/dev/null || echo MISSING:{rel}" for rel, p in credentials.items())
    # Control: without confinement (the explicit opt-out) every file reads.
    ctl = run_tasks(pylib, {"id": "a", "command": cat}, confine_=False)
    assert all(t in ctl.result("a").log_tail for t in ("PRIVATE-KEY", "AWS-CREDS", "KUBE-TOKEN"))
    # The real home's ~/.ssh by its path: the agent's own $HOME is a private one.
    ssh = credentials[".ssh/id_ed25519"].parent
    res = run_tasks(pylib, {"id": "a", "command": cat + f"; echo LS:$(ls -A {ssh})"})
    tail = res.result("a").log_tail
    assert "JUST-NOTES" in tail  # the home is there: only the credentials are gone
    for secret in ("PRIVATE-KEY", "AWS-CREDS", "NETRC-PASSWORD", "GIT-CREDS", "DOCKER-AUTH",
                   "KUBE-TOKEN", "GCLOUD-CREDS"):
        assert secret not in tail, secret
    assert "LS:\n" in tail + "\n"  # an empty directory where the keys were


def test_deny_read_extends_the_list(pylib: Repo, credentials: dict[str, Path]) -> None:
    cmd = f"cat {credentials['notes/plan.txt']} || echo DENIED"
    res = run_tasks(pylib, {"id": "a", "command": cmd}, defaults={"deny_read": ["~/notes"]})
    tail = res.result("a").log_tail
    assert "JUST-NOTES" not in tail and "DENIED" in tail


def test_a_path_the_task_file_shows_is_not_hidden(pylib: Repo, credentials: dict[str, Path]) -> None:
    # extra_ro names ~/.aws on purpose: it is shown.  It names the whole home too: the
    # other credentials below it stay hidden.
    aws, ssh = credentials[".aws/credentials"], credentials[".ssh/id_ed25519"]
    home = aws.parent.parent
    cmd = f"cat {aws} || echo NO-AWS; cat {ssh} || echo NO-SSH; cat {home}/notes/plan.txt"
    res = run_tasks(pylib, {"id": "a", "command": cmd, "extra_ro": [str(home), str(aws.parent)]})
    tail = res.result("a").log_tail
    assert "AWS-CREDS" in tail and "NO-AWS" not in tail and "JUST-NOTES" in tail
    assert "PRIVATE-KEY" not in tail and "NO-SSH" in tail


def test_other_sandboxes_and_forkyard_state_are_unreadable(pylib: Repo) -> None:
    # "victim" leaves uncommitted work (in its worktree, temp dir and private home) and
    # stays; "spy" looks for it and for the journal.  Sandboxes live outside .git, one
    # directory each (sandbox/places.py): the spy finds the others beside its own.
    fy = pylib.forkyard_dir
    victim = ("echo VICTIM-WIP > wip.txt; echo VICTIM-TMP > $TMPDIR/t.txt; "
              "echo VICTIM-HOME > $HOME/h.txt; echo VHOME=$HOME; sleep 4")
    spy = ('sleep 1.5; w=$(dirname "$(dirname "$FORKYARD_WORKTREE")"); '
           'cat $w/victim/worktree/wip.txt || echo NO-WIP; '
           'cat $w/victim/tmp/t.txt || echo NO-TMP; '
           'cat $w/victim/home/h.txt || echo NO-HOME; '
           f'(cat {fy}/runs/$FORKYARD_RUN_ID/events.jsonl || echo NO-JOURNAL) | head -c 200; '
           'ls $w; cat $w/spy/worktree/README* >/dev/null && echo OWN-OK; '
           'echo OWN-HOME > $HOME/h.txt && cat $HOME/h.txt')
    res = run_tasks(pylib, {"id": "victim", "command": victim}, {"id": "spy", "command": spy})
    tail = res.result("spy").log_tail
    assert committed(pylib, "wip.txt") == "VICTIM-WIP"   # the work was there to steal
    # The victim's home is where the spy looked for it.
    assert f"VHOME={places.place(fy, res.run_id, 'victim').home}" in res.result("victim").log_tail
    assert "OWN-OK" in tail                             # the spy reads its own sandbox
    assert "OWN-HOME" in tail                           # ...and its own private home
    assert "VICTIM-HOME" not in tail and "NO-HOME" in tail
    assert "VICTIM-WIP" not in tail and "NO-WIP" in tail
    assert "VICTIM-TMP" not in tail and "NO-TMP" in tail
    assert "run_started" not in tail and "NO-JOURNAL" in tail
