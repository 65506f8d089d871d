"""Units of the security policies: allowlist matching, policy resolution, masking, the
task-file schema (the attacks themselves are in tests/security/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from planner import Limits, TaskFile
from planner.tasks import NetworkAllow
from sandbox.backends.base import Sandbox, SandboxSpec
from sandbox.backends.worktree.home import sandbox_env
from sandbox.network import NetworkPolicy, policy_for
from sandbox.network.allowlist import Allowlist
from sandbox.presets import PRESETS
from sandbox.secrets import Masker, base_env, expand


def test_allowlist_matching() -> None:
    a = Allowlist(["api.example.com", "*.cdn.example.org", "10.0.0.5:8080", "[fd00::1]"])
    assert a.allows("API.Example.COM.", 443) and a.allows("x.y.cdn.example.org", 80)
    assert not a.allows("cdn.example.org", 80)          # a wildcard is not its apex
    assert not a.allows("api.example.com.evil.net", 443)
    assert a.allows("10.0.0.5", 8080) and not a.allows("10.0.0.5", 80)
    assert a.allows("fd00::1", 1) and not a.allows("2130706433", 80)


@pytest.mark.parametrize("entry", ["*", "https://x.com/a", "a.*.com", "*.com", "user@x.com", "x.com:0"])
def test_bad_allowlist_entries(entry: str) -> None:
    with pytest.raises(ValueError):
        Allowlist([entry])


def test_policy_resolution() -> None:
    assert policy_for("auto", "claude").hosts == ("api.anthropic.com",)
    assert policy_for("auto", None).kind == "none" and policy_for(True).kind == "full"
    p = policy_for(NetworkAllow(allow=("pypi.org",)), "codex")
    assert p.kind == "allow" and p.hosts[0] == "api.openai.com" and "pypi.org" in p.hosts
    assert Limits(network=["a.com"]).network == NetworkAllow(allow=("a.com",))
    assert Limits().merged({"network": False}).network == "none"


def test_task_file_env_defaults_and_task() -> None:
    tf = TaskFile.model_validate({
        "defaults": {"env": {"A": "1", "B": "2"}, "pass_env": ["X"], "deny_read": ["~/a"]},
        "tasks": [{"id": "t", "env": {"B": "3"}, "pass_env": ["Y"], "deny_read": ["/b"]}]})
    t = tf.with_defaults(tf.tasks[0])
    assert t.env == {"A": "1", "B": "3"} and t.pass_env == ["X", "Y"] and t.deny_read == ["~/a", "/b"]
    with pytest.raises(ValueError):
        TaskFile.model_validate({"tasks": [{"id": "t", "env": {"1BAD": "x"}}]})


def test_expand_and_mask() -> None:
    values, secret = expand({"K": "${S}", "U": "https://${H}/v1", "P": "plain"},
                            {"S": "abcdefgh1234", "H": "host.example"})
    assert values == {"K": "abcdefgh1234", "U": "https://host.example/v1", "P": "plain"}
    assert secret == ("K", "U")
    m = Masker(["abcdefgh1234", "abcdefgh", "short"])
    assert m("x abcdefgh1234 y abcdefgh short") == "x *** y *** short"
    assert not Masker([]) and Masker([])("text") == "text"


def test_base_env_is_an_allowlist() -> None:
    env = base_env({"PATH": "/bin", "LC_TIME": "C", "AWS_SECRET_ACCESS_KEY": "k", "HOME": "/h"})
    assert env == {"PATH": "/bin", "LC_TIME": "C", "HOME": "/h"}


def _sandbox(**spec: object) -> Sandbox:
    s = SandboxSpec(run_id="r", task_id="t", base="b" * 40, command="true", **spec)  # type: ignore[arg-type]
    return Sandbox(s, Path("/w/t"), s.branch, {"home": Path("/h")})


def test_agent_environment_is_one_allowlist() -> None:
    host = {"PATH": "/bin", "HOME": "/real", "LANG": "C.UTF-8", "ANTHROPIC_API_KEY": "k" * 12,
            "MY_TOKEN": "t" * 12, "AWS_SECRET_ACCESS_KEY": "s", "GIT_DIR": "/elsewhere",
            "HTTPS_PROXY": "http://corp:8080", "VIRTUAL_ENV": "/venv"}
    fields = {"preset": "claude", "env": {"A": "1"},
              "pass_env": (*PRESETS["claude"].caller_vars, "MY_TOKEN")}
    env = sandbox_env(_sandbox(**fields), NetworkPolicy("none"), Path("/t"), "tok", 4000, host)
    assert env["ANTHROPIC_API_KEY"] == "k" * 12 and env["MY_TOKEN"] == "t" * 12
    assert env["A"] == "1" and env["PATH"] == "/bin" and env["PORT"] == "4000"
    # The private home replaces the caller's, with its XDG dirs and the preset's variables.
    assert env["HOME"] == "/h" and env["XDG_CONFIG_HOME"] == "/h/.config" and env["IS_SANDBOX"] == "1"
    for name in ("AWS_SECRET_ACCESS_KEY", "GIT_DIR", "HTTPS_PROXY", "VIRTUAL_ENV"):
        assert name not in env, name
    full = sandbox_env(_sandbox(**fields), NetworkPolicy("full"), Path("/t"), "tok", None, host)
    assert full["HTTPS_PROXY"] == "http://corp:8080" and "PORT" not in full
    allow = sandbox_env(_sandbox(**fields), NetworkPolicy("allow", ("api.anthropic.com",)),
                        Path("/t"), "tok", None, host)
    assert allow["HTTPS_PROXY"] == "http://127.0.0.1:3128"
    # A validation: the minimal names only, no key even when one is named.
    minimal = sandbox_env(_sandbox(env_policy="minimal", **fields), NetworkPolicy("none"),
                          Path("/t"), "tok", None, host)
    assert "ANTHROPIC_API_KEY" not in minimal and "MY_TOKEN" not in minimal
    assert minimal["VIRTUAL_ENV"] == "/venv" and minimal["A"] == "1" and minimal["HOME"] == "/h"


def test_task_file_paths_fold_with_the_env() -> None:
    tf = TaskFile.model_validate({
        "defaults": {"extra_rw": "~/.cache/pip", "extra_ro": ["/opt/a"]},
        "tasks": [{"id": "t", "extra_ro": ["/opt/b", "/opt/a"], "pass_env": "X"}]})
    t = tf.with_defaults(tf.tasks[0])
    assert t.extra_rw == ["~/.cache/pip"] and t.extra_ro == ["/opt/a", "/opt/b"]
    assert t.pass_env == ["X"]
