#!/usr/bin/env bash
# Install the MCP Inspector (npm: @modelcontextprotocol/inspector), pinned, into the
# project-local prefix .tools/mcp-inspector (git-ignored): the tests drive `forkyard mcp`
# through its CLI mode as a second, independent MCP client.  Needs npm (scripts/system-deps.sh
# installs it as root).  Idempotent: nothing happens when the pinned version is there.
set -euo pipefail
VERSION=2.12.0
root="$(cd "$(dirname "$0")/.." && pwd)"
prefix="${MCP_INSPECTOR_PREFIX:-$root/.tools/mcp-inspector}"
bin="$prefix/node_modules/.bin/mcp-inspector"
if [ -x "$bin" ] && [ "$("$bin" --version 2>/dev/null)" = "$VERSION" ]; then
  exit 0
fi
if ! command -v npm >/dev/null; then
  echo "mcp-inspector: npm is missing (tests that need the Inspector skip; under CI=true they fail)" >&2
  exit 0
fi
echo "mcp-inspector: installing @modelcontextprotocol/inspector@$VERSION into $prefix" >&2
mkdir -p "$prefix"
npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error \
  "@modelcontextprotocol/inspector@$VERSION" >&2
