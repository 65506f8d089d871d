"""JUnit XML for ``forkyard check --junit FILE``: the report CI systems parse.

The format is Ant's, as Jenkins, GitLab, GitHub Actions reporters and pytest read it
(``junit.xsd`` beside this module is its schema, shipped with the package)::

    <testsuites name tests failures errors skipped time>
      <testsuite name tests failures errors skipped time timestamp>
        <properties><property name value/></properties>
        <testcase classname name time>
          <failure message type>detail</failure> | <skipped message/>
          <system-out>text</system-out>
        </testcase>
      </testsuite>
    </testsuites>

A check gives one suite per step: ``branches`` (one case per branch, a failure when it
does not integrate), ``pairs`` (one case per conflicting pair) and ``validation`` (one
case, skipped when the merge never got that far).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Literal

from forkyard.views.check_report import CheckReport, pair_details, pair_files, plain

Outcome = Literal["passed", "failure", "error", "skipped"]

#: Classname prefix: CI pages group test cases by dotted classname.
CLASS_PREFIX = "forkyard.check"

# What XML 1.0 forbids anywhere in a document (ElementTree would write it verbatim and
# every parser would reject the file): lone surrogates, U+FFFE/U+FFFF.
_ILLEGAL = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def schema_path() -> Path:
    """The JUnit XML schema shipped with forkyard (what the tests validate against)."""
    return Path(str(resources.files("forkyard.views") / "junit.xsd"))


@dataclass(frozen=True)
class JUnitCase:
    """One test case: its suite, how it ended, and what to show."""

    name: str
    classname: str
    suite: str
    outcome: Outcome = "passed"
    time: float = 0.0
    message: str = ""
    """One line: the ``message`` attribute of failure/error/skipped."""
    type: str = ""
    """The ``type`` attribute of failure/error (a category such as MergeConflict)."""
    details: str = ""
    """The body of failure/error (several lines)."""
    stdout: str = ""


def xml_text(text: str) -> str:
    """``text`` safe for XML 1.0: terminal codes and control characters dropped, characters
    XML cannot hold replaced by U+FFFD."""
    return _ILLEGAL.sub("\ufffd", plain(text))


def _seconds(value: float) -> str:
    return f"{max(0.0, value):.3f}"


def _counts(cases: Sequence[JUnitCase]) -> dict[str, str]:
    n = {o: sum(1 for c in cases if c.outcome == o) for o in ("failure", "error", "skipped")}
    return {"tests": str(len(cases)), "failures": str(n["failure"]), "errors": str(n["error"]),
            "skipped": str(n["skipped"]), "time": _seconds(sum(c.time for c in cases))}


def _case_element(case: JUnitCase) -> ET.Element:
    el = ET.Element("testcase", {"classname": xml_text(case.classname),
                                 "name": xml_text(case.name), "time": _seconds(case.time)})
    if case.outcome != "passed":
        attrs = {"message": xml_text(" ".join(case.message.split()))}
        if case.type:
            attrs["type"] = xml_text(case.type)
        child = ET.SubElement(el, case.outcome, attrs)
        if case.details:
            child.text = xml_text(case.details)
    if case.stdout:
        ET.SubElement(el, "system-out").text = xml_text(case.stdout)
    return el


def build_junit(cases: Sequence[JUnitCase], *, name: str, timestamp: datetime | None = None,
                properties: Mapping[str, str] | None = None) -> bytes:
    """The UTF-8 document for ``cases``, one ``testsuite`` per suite in first-seen order.

    ``timestamp`` (default now) is written in UTC without a zone, as Ant does;
    ``properties`` go on every suite.
    """
    when = (timestamp or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None, microsecond=0)
    root = ET.Element("testsuites", {"name": xml_text(name), **_counts(cases)})
    suites: dict[str, list[JUnitCase]] = {}
    for c in cases:
        suites.setdefault(c.suite, []).append(c)
    for suite_name, members in suites.items():
        suite = ET.SubElement(root, "testsuite", {"name": xml_text(suite_name),
                                                  **_counts(members),
                                                  "timestamp": when.isoformat()})
        if properties:
            props = ET.SubElement(suite, "properties")
            for key, value in properties.items():
                ET.SubElement(props, "property", {"name": xml_text(key), "value": xml_text(value)})
        suite.extend(_case_element(c) for c in members)
    ET.indent(root)
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return document


def check_cases(report: CheckReport) -> list[JUnitCase]:
    """One case per branch, one per conflicting pair, one for validation."""
    cases: list[JUnitCase] = []
    for b in report.branches:
        case = JUnitCase(name=b.name, classname=f"{CLASS_PREFIX}.branches", suite="branches",
                         stdout=f"{b.name} ({b.sha[:12]}) merges into {report.target}")
        if b.status == "conflict":
            case = replace(case, outcome="failure", type="MergeConflict", stdout="",
                           message=f"{b.name} does not integrate into {report.target}: "
                                   f"{', '.join(b.files) or 'conflict'}",
                           details="\n".join(b.details))
        cases.append(case)
    for p in report.matrix.conflicting:
        files = pair_files(p)
        kind = "semantic conflict" if p.status == "clean" else "conflict"
        cases.append(JUnitCase(
            name=f"{p.a} + {p.b}", classname=f"{CLASS_PREFIX}.pairs", suite="pairs",
            outcome="failure", type="PairConflict" if p.status == "clean" else "PairwiseConflict",
            message=f"{p.a} and {p.b}: {kind} in {', '.join(files) or 'their histories'}",
            details="\n".join(pair_details(p))))
    v = report.validation
    if v is not None:
        case = JUnitCase(name=v.command, classname=f"{CLASS_PREFIX}.validation",
                         suite="validation", stdout=v.log_tail)
        if not v.passed:
            why = f"exited {v.exit_code}" if v.exit_code is not None else "did not finish"
            case = replace(case, outcome="failure", type="ValidationFailed", stdout="",
                           message=f"validation {why} on the integrated tree",
                           details=v.log_tail)
        cases.append(case)
    elif report.validate_command is not None and report.branches:
        cases.append(JUnitCase(name=report.validate_command, classname=f"{CLASS_PREFIX}.validation",
                               suite="validation", outcome="skipped",
                               message="not run: the branches do not integrate"))
    return cases


def check_junit(report: CheckReport, *, timestamp: datetime | None = None) -> bytes:
    """The JUnit document of a whole check (properties: the target and its commit)."""
    return build_junit(check_cases(report), name="forkyard check", timestamp=timestamp,
                       properties={"target": report.target, "target_sha": report.target_sha})


def write_junit(path: str | Path, document: bytes) -> Path:
    """Write ``document`` to ``path`` (parents made; replaced atomically, so a CI parser
    never reads half a file)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(document)
    tmp.replace(out)
    return out
