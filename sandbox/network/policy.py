"""A task's network policy, resolved: ``none``, ``allow`` (hosts) or ``full``.

The task file says ``limits.network``: ``auto`` (the default), ``none``, ``full``,
``{allow: [hosts]}`` -- and ``true``/``false`` from older task files, read as ``full`` and
``none``.  ``auto`` is ``allow`` with the agent preset's own API hosts for a preset, and
``none`` for a plain command (a preset's hosts: ``Preset.domains`` in
``sandbox/presets.py``): an agent CLI cannot work without its model, and a command's
needs are known to whoever wrote it, who says ``allow`` or ``full``.  A preset's hosts
are always added to an ``allow`` list.

How each is enforced with bubblewrap (``sandbox/confine.py``):

- ``none``: a network namespace of its own (loopback only);
- ``allow``: the same namespace, plus the run's proxy (``sandbox/network/proxy.py``)
  reachable through a unix socket mounted read-only at :data:`INSIDE_DIR`, and a
  forwarder (started by the exec shim inside the sandbox, ``sandbox/shim.py``)
  listening on ``127.0.0.1:PROXY_PORT`` that the proxy variables (:func:`proxy_env`)
  point at.  A client that ignores them gets nowhere
  (no route, no DNS), so security never depends on the variables;
- ``full``: the host's network namespace.

Landlock alone has no network namespace, so ``allow`` cannot be enforced there and is
refused (:class:`~sandbox.errors.ConfinementError`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from planner.tasks import Limits, NetworkAllow
from sandbox.network.allowlist import Allowlist
from sandbox.presets import PRESETS

PROXY_PORT = 3128                        # squid's port: what tools expect of a proxy
INSIDE_DIR = "/run/forkyard-net"         # inside forkyard's tmpfs over /run


@dataclass(frozen=True)
class NetworkPolicy:
    """What one sandbox may reach."""

    kind: Literal["none", "allow", "full"]
    hosts: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"allow: {', '.join(self.hosts) or 'nothing'}" if self.kind == "allow" else self.kind


def policy_for(network: object, preset: str | None = None) -> NetworkPolicy:
    """The policy ``limits.network`` means for an agent with ``preset`` (None: a
    command).  Accepts what a :class:`~planner.tasks.Limits` may hold, booleans included
    (``model_copy`` does not validate)."""
    p = PRESETS.get(preset or "")
    preset_hosts = () if p is None else p.domains
    if network is True or network == "full":
        return NetworkPolicy("full")
    if network is False or network == "none":
        return NetworkPolicy("none")
    if network == "auto":
        return NetworkPolicy("allow", preset_hosts) if preset_hosts else NetworkPolicy("none")
    if isinstance(network, NetworkAllow):
        hosts = tuple(dict.fromkeys([*preset_hosts, *network.allow]))
        Allowlist(hosts)  # bad entries are bad input now, not at the first request
        return NetworkPolicy("allow", hosts)
    raise ValueError(f"unknown network policy {network!r}")


def resolved_limits(limits: Limits, preset: str | None) -> Limits:
    """``limits`` with ``network`` made concrete for ``preset`` (``auto`` resolved; an
    ``allow`` list completed with the preset's hosts)."""
    policy = policy_for(limits.network, preset)
    network: object = NetworkAllow(allow=policy.hosts) if policy.kind == "allow" else policy.kind
    return limits.model_copy(update={"network": network})


def proxy_env(port: int = PROXY_PORT) -> dict[str, str]:
    """Proxy variables for an agent whose forwarder listens on ``127.0.0.1:port``.

    Both cases: curl reads only the lower-case ``http_proxy``, others either.  ``ALL_PROXY``
    is ``http://`` (a ``socks`` URL makes httpx fail without an extra package).  Loopback
    stays direct (the agent's own servers, inside its namespace).  ``NODE_USE_ENV_PROXY``
    makes Node >= 22.21's ``fetch`` honour them.
    """
    url = f"http://127.0.0.1:{port}"
    env = {}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "GRPC_PROXY"):
        env[name] = env[name.lower()] = url
    env["NO_PROXY"] = env["no_proxy"] = "localhost,127.0.0.1,::1"
    env["NODE_USE_ENV_PROXY"] = "1"
    return env


#: The host's own proxy variables: passed under ``full`` only (under ``allow`` ours
#: replace them; under ``none`` there is nowhere to go).
HOST_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY",
                   "http_proxy", "https_proxy", "all_proxy", "no_proxy")


def forwarder_args(port: int = PROXY_PORT) -> list[str]:
    """The exec shim's option that starts the forwarder (``sandbox/shim.py``)."""
    return ["--forward", f"{INSIDE_DIR}/proxy.sock:{port}"]
