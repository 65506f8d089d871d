"""The Python analyser: four kinds of semantic conflict from base/ours/theirs blobs.

- dangling_reference: one side removes (or renames, or moves) a module, class, function
  or constant; the other side adds a reference to the old dotted name.  Code the other
  side adds inside a module that was moved goes where git's rename detection takes it,
  so its bare names are looked up in the new file, not under the old dotted name.
- signature_mismatch: one side changes a function's (or class constructor's) parameters;
  the other side adds a call that fitted the old signature and no longer fits.
- duplicate_definition: both sides add the same top-level or class-level name to a module.
- concurrent_entity_edit (warning): both sides changed the same function or class.

See :mod:`merge.semantic.pyfacts` for how names are resolved and why.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from functools import cached_property

from merge.models import SemanticFinding
from merge.semantic.base import FileVersions, MergeInput
from merge.semantic.pyfacts import Definition, ModuleFacts, Reference, facts, fits, module_name


class _Versions:
    """Facts for one merge's files, parsed on first use (most merges need few)."""

    def __init__(self, analyzer: PythonAnalyzer, merge: MergeInput) -> None:
        self.analyzer = analyzer
        self.merge = merge

    def get(self, path: str, which: str) -> ModuleFacts | None:
        oid = getattr(self.merge.files[path], which)
        return self.analyzer.facts_for(path, oid, self.merge.read)

    def all(self, paths: set[str], which: str) -> dict[str, ModuleFacts]:
        out = {}
        for p in sorted(paths):
            f = self.get(p, which)
            if f is not None:
                out[p] = f
        return out


class _Side:
    """One side's view of the files it changed: facts at base and on this side."""

    def __init__(self, label: str, which: str, paths: set[str], versions: _Versions) -> None:
        self.label = label
        self.which = which
        self.paths = paths
        self.versions = versions

    @property
    def existed(self) -> set[str]:
        """Changed paths that existed at the base (only these can lose definitions)."""
        return {p for p in self.paths if self.versions.merge.files[p].base is not None}

    def subset(self, paths: set[str]) -> _Side:
        return _Side(self.label, self.which, self.paths & paths, self.versions)

    def mentions(self, word: str) -> set[str]:
        """Changed paths whose version on this side contains ``word`` as text."""
        needle = word.encode()
        out = set()
        for p in self.paths:
            oid = getattr(self.versions.merge.files[p], self.which)
            if oid is not None and needle in self.versions.analyzer.text(oid, self.versions.merge.read):
                out.add(p)
        return out

    @cached_property
    def base(self) -> dict[str, ModuleFacts]:
        return self.versions.all(self.existed, "base")

    @cached_property
    def side(self) -> dict[str, ModuleFacts]:
        return self.versions.all(self.paths, self.which)


def _qualified(facts_by_path: Mapping[str, ModuleFacts]) -> dict[str, Definition]:
    out: dict[str, Definition] = {}
    for f in facts_by_path.values():
        for name, d in f.defs.items():
            out[f"{f.module}.{name}" if f.module else name] = d
    return out


def _modules(facts_by_path: Mapping[str, ModuleFacts]) -> set[str]:
    return {f.module for f in facts_by_path.values()}


def _added_refs(side: _Side) -> list[tuple[str, Reference]]:
    """References (with their path) this side added, counted across all its changed files."""
    before: Counter[str] = Counter(r.symbol for f in side.base.values() for r in f.refs)
    after: Counter[str] = Counter(r.symbol for f in side.side.values() for r in f.refs)
    grown = {s for s in after if after[s] > before[s]}
    out: list[tuple[str, Reference]] = []
    for path, f in side.side.items():
        old = Counter(r.symbol for r in side.base[path].refs) if path in side.base else Counter()
        seen: Counter[str] = Counter()
        for r in f.refs:
            if r.symbol not in grown:
                continue
            seen[r.symbol] += 1
            if seen[r.symbol] > old[r.symbol]:
                out.append((path, r))
    return out


def _successor(symbol: str, old: Definition | None, before: Mapping[str, Definition],
               after: Mapping[str, Definition]) -> str:
    """A hint where a removed definition went: same name elsewhere, or same body renamed."""
    leaf = symbol.rsplit(".", 1)[-1]
    for s, d in sorted(after.items()):
        if s in before:
            continue
        new_leaf = s.rsplit(".", 1)[-1]
        renamed = old is not None and d.kind == old.kind and d.body == old.body.replace(
            f"def {leaf}(", f"def {new_leaf}(", 1).replace(f"class {leaf}", f"class {new_leaf}", 1)
        if new_leaf == leaf or renamed:
            return f" (now {s}?)"
    return ""


_View = tuple[set[str], dict[str, Definition], dict[str, tuple[Definition, Definition]]]
"""Modules gone, definitions removed, signatures changed: what a reference is checked against."""


def _api_changes(before: Mapping[str, Definition], after: Mapping[str, Definition]) -> tuple[
        dict[str, Definition], dict[str, tuple[Definition, Definition]]]:
    """Definitions removed from ``before`` to ``after``, and those whose signature changed."""
    removed = {s: d for s, d in before.items() if s not in after and d.kind != "import"}
    changed = {
        s: (d, after[s]) for s, d in before.items()
        if s in after and d.params is not None and after[s].params is not None
        and d.params != after[s].params and d.kind in ("function", "class")
    }
    return removed, changed


def _similarity(old: bytes, new: bytes) -> float:
    """Share of the larger text made of lines the other also has (git's rename score,
    by lines)."""
    a, b = Counter(old.splitlines()), Counter(new.splitlines())
    common = sum((len(line) + 1) * n for line, n in (a & b).items())
    size = max(len(old), len(new))
    return common / size if size else 1.0


def _matches(symbol: str, removed: str) -> bool:
    return symbol == removed or symbol.startswith(removed + ".")


class PythonAnalyzer:
    """Semantic conflicts in ``*.py`` files (standard-library ``ast``, no imports run)."""

    name = "python"

    def __init__(self) -> None:
        # Parsed facts by (path, blob id): a batch sees the same blobs source after source.
        self._cache: dict[tuple[str, str], ModuleFacts | None] = {}
        self._texts: dict[str, bytes] = {}

    def facts_for(self, path: str, oid: str | None, read: Callable[[str], bytes]) -> ModuleFacts | None:
        if oid is None:
            return None
        key = (path, oid)
        if key not in self._cache:
            if len(self._cache) > 8192:
                self._cache.clear()
            self._cache[key] = facts(path, self.text(oid, read))
        return self._cache[key]

    def text(self, oid: str, read: Callable[[str], bytes]) -> bytes:
        if oid not in self._texts:
            if len(self._texts) > 8192:
                self._texts.clear()
            self._texts[oid] = read(oid)
        return self._texts[oid]

    def handles(self, path: str) -> bool:
        return path.endswith(".py")

    def _moved_to(self, side: _Side, paths: set[str]) -> str | None:
        """Where ``side`` moved the (deleted) files ``paths``: the file it added that is
        most similar to one of them, at least half the same, as git's rename detection
        would pair them (None: deleted, not moved)."""
        files, read = side.versions.merge.files, side.versions.merge.read
        olds = [self.text(oid, read) for p in sorted(paths) if (oid := files[p].base) is not None]
        best, score = None, 0.5
        for p in sorted(side.paths):
            oid = getattr(files[p], side.which)
            if files[p].base is not None or oid is None or not self.handles(p):
                continue
            new = self.text(oid, read)
            s = max((_similarity(old, new) for old in olds), default=0.0)
            if s > score or (best is None and s == score):
                best, score = p, s
        return best

    def analyze(self, merge: MergeInput) -> list[SemanticFinding]:
        versions = _Versions(self, merge)
        changed_ours = {p for p, fv in merge.files.items() if fv.ours_changed}
        changed_theirs = {p for p, fv in merge.files.items() if fv.theirs_changed}
        a = _Side(merge.ours_label, "ours", changed_ours, versions)
        b = _Side(merge.theirs_label, "theirs", changed_theirs, versions)
        findings: list[SemanticFinding] = []
        for changer, user in ((a, b), (b, a)):
            findings += self._dangling_and_signatures(changer, user)
        both = changed_ours & changed_theirs
        if both:
            base = versions.all(both, "base")
            ours = versions.all(both, "ours")
            theirs = versions.all(both, "theirs")
            findings += self._duplicates(merge.files, base, ours, theirs, a.label, b.label)
            findings += self._concurrent_edits(merge.files, base, ours, theirs)
        return findings

    def _dangling_and_signatures(self, changer: _Side, user: _Side) -> list[SemanticFinding]:
        if not changer.existed:
            return []  # the changing side only added files: it removed or changed nothing
        # Cheap gate before any parsing: a reference to anything in module ``a.b`` can only
        # be written in a file whose text says ``b`` (import, attribute chain) or in the
        # module itself.  Only changer files some user file could refer to are parsed,
        # and only user files that mention one of them.
        leaves = {p: module_name(p).rsplit(".", 1)[-1] for p in changer.existed}
        mentions = {leaf: user.mentions(leaf) for leaf in set(leaves.values()) if leaf}
        relevant = {p for p, leaf in leaves.items()
                    if not leaf or p in user.paths or mentions.get(leaf)}
        if not relevant:
            return []
        readers = set().union(*(mentions.get(leaves[p], set()) for p in relevant)) | (
            relevant & user.paths)
        if any(not leaves[p] for p in relevant):
            readers = user.paths
        user = user.subset(readers)
        versions = changer.versions
        before = _qualified(versions.all(relevant, "base"))
        # A definition only keeps its dotted name in a file of the same module (say
        # util.py -> util/__init__.py), so only those are parsed on the changing side.
        wanted = {module_name(p) for p in relevant}
        present = {p for p in changer.paths
                   if getattr(versions.merge.files[p], changer.which) is not None}
        after = _qualified(versions.all({p for p in present if module_name(p) in wanted},
                                        changer.which))
        # A module that the changing side deleted (or moved) is removed as a whole.
        gone_modules = wanted - {module_name(p) for p in present}
        removed, changed_sigs = _api_changes(before, after)
        added = _added_refs(user)
        if not added:
            return []
        # Names the referring side itself newly defines will exist after the merge.
        user_before = _qualified(user.base)
        user_defs = {s for s, d in _qualified(user.side).items()
                     if d.kind != "import" and s not in user_before}
        # A bare name in a module's own code names a definition of whatever module that
        # code ends up in.  When the changing side moved the file (git's rename detection
        # then carries the other side's edits into the new file), such names are looked
        # up in the new file; imports of the old dotted name still dangle.
        moved: dict[str, _View | None] = {}

        def follow(module: str) -> _View | None:
            if module not in gone_modules:
                return None
            if module not in moved:
                target = self._moved_to(changer, {p for p in relevant if module_name(p) == module})
                new = versions.get(target, changer.which) if target is not None else None
                moved[module] = None if new is None else (gone_modules - {module}, *_api_changes(
                    before, {**after, **{f"{module}.{n}" if module else n: d
                                         for n, d in new.defs.items()}}))
            return moved[module]

        out: list[SemanticFinding] = []
        reported: set[tuple[str, str]] = set()
        for path, ref in added:
            gone, rem, sigs = gone_modules, removed, changed_sigs
            if ref.local and (view := follow(module_name(path))) is not None:
                gone, rem, sigs = view
            hit = next((m for m in gone if m and _matches(ref.symbol, m)), None)
            what = "module"
            if hit is None:
                hit = next((s for s in rem if _matches(ref.symbol, s)), None)
                what = rem[hit].kind if hit else ""
            if hit is not None and hit in user_defs:
                hit = None  # the referring side (re)defines it: the merge will have it
            if hit is not None and (path, hit) not in reported:
                reported.add((path, hit))
                leaf = hit.rsplit(".", 1)[-1]
                hint = _successor(hit, rem.get(hit), before, _qualified(
                    versions.all(changer.mentions(leaf) & present, changer.which)))
                out.append(SemanticFinding(
                    kind="dangling_reference", symbol=hit, path=path, line=ref.line,
                    severity="error",
                    message=f"{user.label} adds a reference to {what} {hit}, which "
                            f"{changer.label} removes{hint}"))
                continue
            if ref.call is None or ref.symbol not in sigs:
                continue
            old, new = sigs[ref.symbol]
            assert old.params is not None and new.params is not None
            if fits(old.params, ref.call) and not fits(new.params, ref.call):
                out.append(SemanticFinding(
                    kind="signature_mismatch", symbol=ref.symbol, path=path, line=ref.line,
                    severity="error",
                    message=f"{user.label} adds a call to {ref.symbol} that does not fit the "
                            f"signature {changer.label} gives it: {old.params.describe()} -> "
                            f"{new.params.describe()}"))
        return out

    def _duplicates(
        self, files: Mapping[str, FileVersions], base: Mapping[str, ModuleFacts],
        ours: Mapping[str, ModuleFacts], theirs: Mapping[str, ModuleFacts],
        ours_label: str, theirs_label: str,
    ) -> list[SemanticFinding]:
        out: list[SemanticFinding] = []
        for path, fv in sorted(files.items()):
            if not (fv.ours_changed and fv.theirs_changed) or path not in ours or path not in theirs:
                continue
            old = base[path].defs if path in base else {}
            mine = {n: d for n, d in ours[path].defs.items() if n not in old and d.kind != "import"}
            other = theirs[path].defs
            for name in sorted(mine.keys() & {n for n in other if n not in old}):
                if other[name].kind == "import" or mine[name].body == other[name].body:
                    continue  # the same code added twice merges into one copy
                module = ours[path].module
                out.append(SemanticFinding(
                    kind="duplicate_definition", symbol=f"{module}.{name}" if module else name,
                    path=path, line=other[name].line, severity="error",
                    message=f"both {ours_label} and {theirs_label} add {name} to {path}"))
        return out

    def _concurrent_edits(
        self, files: Mapping[str, FileVersions], base: Mapping[str, ModuleFacts],
        ours: Mapping[str, ModuleFacts], theirs: Mapping[str, ModuleFacts],
    ) -> list[SemanticFinding]:
        out: list[SemanticFinding] = []
        for path, fv in sorted(files.items()):
            if not (fv.ours_changed and fv.theirs_changed):
                continue
            if path not in base or path not in ours or path not in theirs:
                continue
            b, o, t = base[path].defs, ours[path].defs, theirs[path].defs
            both = [
                n for n, d in b.items() if d.kind in ("function", "class")
                and n in o and n in t and o[n].body != d.body and t[n].body != d.body
            ]
            # Report the innermost entity: a class only when no method of it is reported.
            methods = {n.split(".")[0] for n in both if "." in n}
            module = base[path].module
            for name in sorted(both):
                if b[name].kind == "class" and name in methods:
                    continue
                out.append(SemanticFinding(
                    kind="concurrent_entity_edit", symbol=f"{module}.{name}" if module else name,
                    path=path, line=t[name].line, severity="warning",
                    message=f"both sides changed {name} in {path}"))
        return out
