"""Network policy for sandboxes: ``none``, ``allow`` (an allowlist enforced by the run's
proxy) or ``full``.  ``policy.py`` resolves a task's policy, ``proxy.py`` is the proxy,
``forward.py`` runs inside a sandbox, ``allowlist.py`` matches host names."""

from __future__ import annotations

from sandbox.network.policy import (
    INSIDE_DIR,
    PRESET_HOSTS,
    PROXY_PORT,
    NetworkPolicy,
    forwarder_argv,
    policy_for,
    proxy_env,
    resolved_limits,
)
from sandbox.network.proxy import Decision, NetworkProxy

__all__ = ["INSIDE_DIR", "PRESET_HOSTS", "PROXY_PORT", "Decision", "NetworkPolicy",
           "NetworkProxy", "forwarder_argv", "policy_for", "proxy_env", "resolved_limits"]
