"""The real agent CLIs against the fake model server (tests/agents/fake_model.py).

``make test`` installs the pinned CLIs under /opt/forkyard-agents (scripts/agents.sh);
``FORKYARD_AGENTS_BIN`` points elsewhere.  A CLI that is missing skips locally and fails
under CI=true (tests/conftest.py ``require``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.presets import find_cli
from tests.agents.fake_model import FakeModel
from tests.conftest import require

AGENTS_BIN = os.environ.get("FORKYARD_AGENTS_BIN", "/opt/forkyard-agents/bin")
CLIS = ("claude", "codex", "gemini", "aider")


@pytest.fixture
def agents_path(monkeypatch: pytest.MonkeyPatch) -> str:
    """PATH with the pinned CLIs first (as a user's PATH would have them)."""
    path = f"{AGENTS_BIN}:{os.environ.get('PATH', '')}"
    monkeypatch.setenv("PATH", path)
    return path


def require_cli(preset: str) -> None:
    exe, _ = find_cli(preset)
    require(exe is not None, f"the {preset} CLI (scripts/agents.sh)")


@pytest.fixture
def fake_model() -> Iterator[FakeModel]:
    with FakeModel() as fm:
        yield fm


def agent_setup(preset: str, fm: FakeModel, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The task-file ``agent`` and ``env`` that point ``preset`` at the fake server, the
    way a user points a CLI at a proxy or a local model (docs/agents/<preset>.md).  The
    endpoint and key come from the caller's variables through ``${NAME}``."""
    monkeypatch.setenv("FAKE_MODEL_URL", fm.url)
    monkeypatch.setenv("FAKE_MODEL_KEY", "sk-fake")
    home = Path(os.environ["HOME"])
    if preset == "claude":
        return {"agent": {"preset": "claude"},
                "env": {"ANTHROPIC_BASE_URL": "${FAKE_MODEL_URL}",
                        "ANTHROPIC_API_KEY": "${FAKE_MODEL_KEY}", "ANTHROPIC_MODEL": "claude-fake"}}
    if preset == "codex":
        provider = (f'model_providers.fake={{name="fake",base_url="{fm.url}/v1",'
                    'env_key="FAKE_MODEL_KEY",wire_api="responses"}')
        return {"agent": {"preset": "codex", "args": [
                    "-c", 'model="fake-model"', "-c", 'model_provider="fake"', "-c", provider]},
                "env": {"FAKE_MODEL_KEY": "${FAKE_MODEL_KEY}"}}
    if preset == "gemini":
        return {"agent": {"preset": "gemini"},
                "env": {"GOOGLE_GEMINI_BASE_URL": "${FAKE_MODEL_URL}",
                        "GEMINI_API_KEY": "${FAKE_MODEL_KEY}"}}
    # aider: the user's model metadata (in their home) is copied into the agent's.
    (home / ".aider.model.metadata.json").write_text(json.dumps({"openai/fake-model": {
        "max_input_tokens": 128000, "max_output_tokens": 8192, "max_tokens": 8192,
        "input_cost_per_token": 0.0, "output_cost_per_token": 0.0,
        "litellm_provider": "openai", "mode": "chat"}}))
    return {"agent": {"preset": "aider", "args": ["--model", "openai/fake-model"]},
            "env": {"OPENAI_API_BASE": "${FAKE_MODEL_URL}/v1",
                    "OPENAI_API_KEY": "${FAKE_MODEL_KEY}"}}
