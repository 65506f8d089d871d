"""Errors of the merge package: ``MergeError`` and its bad-input branch.

Git's own errors (an unknown ref, a path that is no repository, a git too old) live with
the git wrapper in :mod:`gitproc.git`; the exit codes in :mod:`gitproc.errors`.
"""

from __future__ import annotations

from gitproc.errors import BadInputError as _BadInput
from gitproc.errors import ForkyardError


class MergeError(ForkyardError):
    """Root of the merge package's errors."""


class BadInputError(MergeError, _BadInput):
    """The caller asked for a merge that cannot be done; nothing was changed."""
