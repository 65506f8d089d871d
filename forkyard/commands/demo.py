"""``forkyard demo``: six scripted agents on the webapp fixture (see forkyard/demo/demo.py)."""

from __future__ import annotations


def demo_command(*, keep: bool = False, as_json: bool = False) -> int:
    from forkyard.demo.demo import run_demo

    return run_demo(keep=keep, as_json=as_json)
