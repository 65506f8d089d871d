"""Errors as MCP tool results: every failure reaches the client as its one-line reason.

The SDK forwards a ``ToolError``'s message to the client but turns any other exception
into a bare "Error executing tool NAME", which tells an orchestrating agent nothing.
:func:`reporting_errors` wraps each tool so that forkyard's own errors (bad input,
conflicts, a moved ref) become a ``ToolError`` carrying the same line the CLI prints,
and :class:`OneLineServer` does the same for arguments the SDK rejects against a tool's
input schema (pydantic's text spans several lines and echoes the input).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.types import CallToolResult
from pydantic import ValidationError

from gitproc.errors import ForkyardError

logger = logging.getLogger("forkyard.mcp")


class ToolInputError(ForkyardError, ValueError):
    """A request a tool cannot answer as given; the message is the one-line reason."""

    exit_code = 2


def one_line(text: object) -> str:
    """``text`` with every run of whitespace, newlines included, collapsed to one space."""
    return " ".join(str(text).split())


def summarize_validation(exc: ValidationError, root: str = "") -> str:
    """The first problem of a pydantic error, where it is, and how many more there are.

    ``root`` names the validated value, so locations read ``subtasks[0].estimatedMinutes``.
    """
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    where = root + "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in first["loc"])
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    msg = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
    return one_line(f"{where.lstrip('.') or 'input'}: {msg}{more}")


def _as_tool_error(name: str, exc: Exception) -> ToolError:
    if isinstance(exc, ToolError):
        return exc
    if isinstance(exc, ValidationError):
        return ToolError(summarize_validation(exc))
    if isinstance(exc, ForkyardError | ValueError):
        return ToolError(one_line(exc))
    # A bug rather than bad input: the traceback goes to the server's log, and the client
    # still learns what broke instead of the SDK's bare "Error executing tool".
    logger.exception("tool %s crashed", name)
    return ToolError(f"internal error: {type(exc).__name__}: {one_line(exc)}")


def reporting_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (sync or async) raising every failure as a one-line ``ToolError``.

    ``functools.wraps`` keeps the signature the SDK builds the input schema from.
    """
    name = getattr(fn, "__name__", "tool")
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def awrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(*args, **kwargs)
            except Exception as exc:
                raise _as_tool_error(name, exc) from exc

        return awrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise _as_tool_error(name, exc) from exc

    return wrapper


class OneLineServer(MCPServer[Any]):
    """An ``MCPServer`` whose rejected-argument errors are one line, like the rest:
    ``subtasks[0].id: Field required`` rather than pydantic's multi-line report."""

    async def call_tool(self, name: str, arguments: dict[str, Any],
                        context: Any = None) -> Any:
        """Call a tool; argument-validation errors are summarized on one line."""
        try:
            result: CallToolResult | Any = await super().call_tool(name, arguments, context)
            return result
        except UnexpectedToolError:
            raise
        except ToolError as exc:
            if isinstance(exc.__cause__, ValidationError):
                raise ToolError(f"invalid arguments for {name}: "
                                f"{summarize_validation(exc.__cause__)}") from exc.__cause__
            raise
