# Two set-up commands for a newcomer: `make demo` and `make test`.  Each bootstraps
# itself on a fresh machine: a .venv with the package, and (for `make test`, as root)
# the system packages the tests exercise for real: git, bubblewrap, a Docker engine.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PACKAGES := forkyard sandbox merge planner gitproc

.PHONY: demo test system-deps docker-up mcp-inspector agents lint typecheck bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/forkyard demo

system-deps:
	@bash scripts/system-deps.sh

docker-up: system-deps
	@bash scripts/docker-up.sh
	@if docker info >/dev/null 2>&1; then bash scripts/test-image.sh; fi

mcp-inspector: system-deps
	@bash scripts/mcp-inspector.sh

# The pinned agent CLIs (Claude Code, Codex, Gemini CLI, aider) under /opt/forkyard-agents,
# driven for real by tests/agents; not root: the tests needing them skip (fail under CI).
agents: system-deps
	@if [ "$$(id -u)" -eq 0 ] || [ -w "$${FORKYARD_AGENTS_ROOT:-/opt/forkyard-agents}" ]; then \
		bash scripts/agents.sh; \
	else echo "agents: not root; the agent CLIs are not installed" >&2; fi

test: $(STAMP) system-deps docker-up mcp-inspector agents lint typecheck
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check $(PACKAGES) tests bench fixtures/repos/__init__.py
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache
