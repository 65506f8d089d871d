"""A worktree sandbox's secrets, network and disk policies, as the backend applies them
(``sandbox/secrets.py``, ``sandbox/network/``, ``sandbox/disk.py`` hold the mechanisms;
the agent's environment is built in ``home.py``)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

from sandbox import disk, limits, secrets
from sandbox.backends.base import Sandbox, SandboxSpec, Status
from sandbox.confine import Confinement
from sandbox.errors import ConfinementError
from sandbox.network import NetworkPolicy, NetworkProxy, policy_for
from sandbox.places import Place


def network_of(spec: SandboxSpec) -> NetworkPolicy:
    """The sandbox's policy (``auto`` here, with no preset known, is ``none``)."""
    return policy_for(spec.limits.network)


def check_network(policy: NetworkPolicy, conf: Confinement) -> NetworkPolicy:
    """The policy as this confinement enforces it: refused where it cannot be (``allow``
    needs bubblewrap); ``full`` with no confinement at all (the explicit opt-out: no
    proxy variables pointing at a forwarder that is not there)."""
    if not conf.bwrap and not conf.landlock:
        return NetworkPolicy("full")
    if policy.kind == "allow" and not conf.bwrap:
        raise ConfinementError(
            "the 'allow' network policy needs bubblewrap (a network namespace); with "
            "Landlock alone use network 'none' or 'full'")
    return policy


def confinement_paths(sandbox: Sandbox, policy: NetworkPolicy, conf: Confinement,
                      net: RunProxies, forkyard_dir: Path) -> tuple[Path | None, tuple[Path, ...]]:
    """With bubblewrap: the directory of the sandbox's proxy socket (``allow``; opened
    now, closed by :func:`close_proxy`) and the paths hidden from it (the sandbox's own
    paths below them are mounted back by ``confine.bwrap_argv``)."""
    if not conf.bwrap:
        return None, ()
    spec = sandbox.spec
    proxy_dir = None
    if policy.kind == "allow":
        proxy_dir = net.open(spec.run_id, spec.task_id, policy)
        sandbox.state["proxy"] = spec.task_id
    return proxy_dir, secrets.denied_paths(forkyard_dir, spec.deny_read)


def close_proxy(sandbox: Sandbox, net: RunProxies) -> None:
    """Stop the sandbox's proxy listener, if it has one."""
    if sandbox.state.pop("proxy", None) is not None:
        net.close(sandbox.spec.run_id, sandbox.spec.task_id)


def release(sandbox: Sandbox, net: RunProxies) -> None:
    """The sandbox's policies undone at its clean-up: its disk unmounted and deleted,
    its proxy listener stopped."""
    drop_disk(sandbox.state)
    close_proxy(sandbox, net)


def drop_disk(state: dict[str, object]) -> None:
    """Unmount and delete the sandbox's disk (``state["disk"]``), if it has one."""
    space = state.pop("disk", None)
    if isinstance(space, disk.Disk):
        space.remove()


def status_of(rc: int | None, reason: str | None, enf: limits.Enforcement) -> Status:
    """A finished agent's status from its exit code, why it was stopped and its cgroup."""
    if reason == "cancelled":
        return "cancelled"
    if reason == "timed_out":
        return "timed_out"
    # OOM: the group's kernel counter, cross-checked with a failed exit (a kill signal
    # shows up as 137 through sh/bwrap, or -9 directly).
    if enf.cgroup is not None and rc not in (0, None) and enf.cgroup.oom_kills() > 0:
        return "oom_killed"
    return "succeeded" if rc == 0 else "failed"


class RunProxies:
    """One :class:`NetworkProxy` per run, made at its first ``allow`` sandbox and stopped
    when the run's last sandbox is released (a thread of this process: nothing outlives
    forkyard)."""

    def __init__(self, hosts: Mapping[str, str]) -> None:
        self._hosts = dict(hosts)
        self._proxies: dict[str, NetworkProxy] = {}
        self._lock = threading.Lock()

    def open(self, run_id: str, key: str, policy: NetworkPolicy) -> Path:
        with self._lock:
            proxy = self._proxies.get(run_id)
            if proxy is None:
                proxy = self._proxies[run_id] = NetworkProxy(hosts=self._hosts)
        return proxy.open(key, policy.hosts)

    def refused(self, run_id: str, key: str) -> list[str]:
        """What sandbox ``key``'s agent was refused, ``host:port (reason)``, once each."""
        proxy = self._proxies.get(run_id)
        if proxy is None:
            return []
        out = [f"{d.host}:{d.port} ({d.reason})" for d in list(proxy.decisions)
               if d.key == key and not d.allowed]
        return list(dict.fromkeys(out))

    def close(self, run_id: str, key: str) -> None:
        proxy = self._proxies.get(run_id)
        if proxy is not None:
            proxy.close(key)

    def stop(self, run_id: str) -> None:
        with self._lock:
            proxy = self._proxies.pop(run_id, None)
        if proxy is not None:
            proxy.stop()


def make_disk(own: Place, spec: SandboxSpec) -> disk.Disk | None:
    """The sandbox's size-limited file system in its place ``own``, when ``disk_mb`` is
    set and one can be made."""
    if not spec.limits.disk_mb:
        return None
    return disk.Disk.make(own, spec.limits.disk_mb)


def with_disk_fallback(enf: limits.Enforcement, spec: SandboxSpec, space: object) -> limits.Enforcement:
    """No file system of its own (no loop mount): no *file* larger than the limit."""
    if not spec.limits.disk_mb or isinstance(space, disk.Disk) or enf.name == "none":
        return enf
    return limits.Enforcement(enf.name, enf.cgroup,
                              (*enf.shim_args, *disk.fsize_args(spec.limits.disk_mb)))


def policy_notes(sandbox: Sandbox, net: RunProxies) -> list[str]:
    """What the agent ran into, for its result: the disk limit, hosts the proxy refused."""
    spec, notes = sandbox.spec, []
    space = sandbox.state.get("disk")
    if isinstance(space, disk.Disk) and space.full():
        notes.append(f"wrote up to the {spec.limits.disk_mb} MiB disk limit (ENOSPC)")
    elif spec.limits.disk_mb and space is None:
        notes.append("disk limit per file only (RLIMIT_FSIZE): no loop mount here")
    refused = net.refused(spec.run_id, spec.task_id)
    if refused:
        more = f" and {len(refused) - 5} more" if len(refused) > 5 else ""
        notes.append("network policy refused " + ", ".join(refused[:5]) + more)
    return notes
