"""Network policy for sandboxes: ``none``, ``allow`` (an allowlist enforced by the run's
proxy) or ``full``.  ``policy.py`` resolves a task's policy, ``proxy.py`` is the proxy,
``allowlist.py`` matches host names; the forwarder inside a sandbox is the exec shim's
(``sandbox/shim.py``)."""

from __future__ import annotations

from sandbox.network.policy import (
    INSIDE_DIR,
    PROXY_PORT,
    NetworkPolicy,
    forwarder_args,
    policy_for,
    proxy_env,
    resolved_limits,
)
from sandbox.network.proxy import Decision, NetworkProxy

__all__ = ["INSIDE_DIR", "PROXY_PORT", "Decision", "NetworkPolicy",
           "NetworkProxy", "forwarder_args", "policy_for", "proxy_env", "resolved_limits"]
