"""The merge engine's boundary models: what ``forkyard merge --json`` prints.

``MergeReport.model_dump(mode="json")`` is exactly the shape in docs/architecture.md (plus the
``landed`` and ``culprits`` extras), so the CLI, the MCP server and the run loop all
serialise the same object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ConflictKind = Literal[
    "content", "add/add", "modify/delete", "rename/rename", "rename/delete",
    "directory_rename", "file/directory", "binary", "mode", "submodule",
]
SemanticKind = Literal[
    "dangling_reference", "signature_mismatch", "duplicate_definition", "concurrent_entity_edit",
]
Severity = Literal["error", "warning"]
Outcome = Literal["committed", "rolled_back", "dry_run"]
Mode = Literal["conservative", "bisect"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Conflict(_Frozen):
    """One textual conflict, classified from merge-ort's stable conflict-type string."""

    path: str
    """The path the conflict is reported at (in the merged tree)."""
    kind: ConflictKind
    paths: list[str]
    """Every path git names for this conflict (e.g. both sides of a rename)."""
    message: str
    """git's own message, verbatim (trailing newline stripped)."""


class SemanticFinding(_Frozen):
    """A merge that is clean as text but likely broken as a program."""

    kind: SemanticKind
    symbol: str
    """Dotted name of the entity, e.g. ``pkg.util.helper``."""
    path: str
    line: int
    severity: Severity
    message: str


class SourceMerge(_Frozen):
    """The result of merging one source onto the batch's running result."""

    source: str
    source_sha: str
    base_sha: str | None
    status: Literal["clean", "conflict"]
    tree: str | None
    conflicts: list[Conflict] = Field(default_factory=list)
    semantic: list[SemanticFinding] = Field(default_factory=list)

    @property
    def has_errors(self) -> bool:
        """A textual conflict or a semantic finding of severity error."""
        return self.status == "conflict" or any(f.severity == "error" for f in self.semantic)


class Overlap(_Frozen):
    """A path touched by more than one source of a batch (even when it merged cleanly)."""

    path: str
    sources: list[str]


class Validation(_Frozen):
    """The ``--validate`` command's outcome on the merged tree."""

    command: str
    passed: bool
    exit_code: int | None
    log_tail: str
    attributed_to: list[str] | None = Field(default=None, exclude=True)
    """Sources that fail the command on their own (None: not attributed). Not in the JSON."""


class MergeReport(_Frozen):
    """What one batch did; ``model_dump(mode="json")`` is the ``forkyard merge --json``."""

    target: str
    target_sha: str
    outcome: Outcome
    new_sha: str | None
    merges: list[SourceMerge]
    overlaps: list[Overlap] = Field(default_factory=list)
    validation: Validation | None = None
    landed: list[str] = Field(default_factory=list)
    """Sources whose work is now on the target (committed) or would be (dry run)."""
    culprits: list[str] = Field(default_factory=list)
    """Sources that broke the batch (conflict, semantic error or failed validation)."""
    blame: dict[str, Validation] = Field(default_factory=dict)
    """For each source blamed for a failed validation, the validation that blamed it
    (the first failing prefix in bisect mode; the source validated alone otherwise)."""

    @property
    def ok(self) -> bool:
        """No conflict, no semantic error, no failed validation: exit code 0."""
        if any(m.has_errors for m in self.merges):
            return False
        if self.validation is not None and not self.validation.passed:
            return False
        return not self.culprits

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1


@dataclass(frozen=True)
class Stage:
    """One conflicted index stage: 1 base, 2 ours, 3 theirs."""

    mode: str
    oid: str
    stage: int
    path: str


@dataclass(frozen=True)
class Message:
    """One informational message: the paths it names, its stable type string, its text."""

    paths: tuple[str, ...]
    type: str
    text: str
