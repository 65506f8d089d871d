"""``forkyard agents``: what each agent preset needs, and whether this machine has it."""

from __future__ import annotations

import json
import shlex
import sys
from typing import Any

from sandbox.presets import PRESETS, describe


def agents_report() -> list[dict[str, Any]]:
    """One entry per agent CLI preset (``shell`` is always there and left out)."""
    out = []
    for name, p in PRESETS.items():
        if name == "shell":
            continue
        d = describe(name)
        problem = None
        if d.path is None:
            problem = f"not installed ({p.package})"
        elif d.under_tmp:
            problem = f"{d.path} is under /tmp, which a sandbox hides: install it elsewhere"
        out.append({
            "preset": name, "cli": p.exe, "installed": d.path is not None and not d.under_tmp,
            "path": d.path, "version": d.version, "problem": problem,
            "key": d.key, "key_variables": list(p.key_env),
            "endpoint": d.endpoint, "endpoint_variables": list(p.endpoint_env),
            "flags": list(p.flags), "env": dict(p.env), "domains": list(p.domains),
            "stream": p.stream,
        })
    return out


def agents_command(*, as_json: bool = False) -> int:
    """Print the report; exit 0 (it describes, it does not judge)."""
    report = agents_report()
    if as_json:
        print(json.dumps(report, indent=1))
        return 0
    for a in report:
        where = a["problem"] or f"{a['path']} ({a['version'] or 'version unknown'})"
        key = a["key"] or f"not set ({' or '.join(a['key_variables'])}, or the CLI's own login)"
        endpoint = a["endpoint"] or "default"
        print(f"{a['preset']}: {where}", file=sys.stdout)
        print(f"  key: {key}; endpoint: {endpoint}")
        print(f"  flags: {shlex.join(a['flags'])}")
        print(f"  domains: {', '.join(a['domains'])}")
    return 0
