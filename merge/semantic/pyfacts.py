"""Facts about Python source for the semantic analyser, with the standard ``ast`` module.

Each changed file is parsed at base, ours and theirs into *definitions* (top-level and
class-level names with their signatures and bodies) and *references* (names resolved
through imports to dotted symbols, with call shapes).  A finding needs one side to
change an API and the other side to *add* a use of the old API: uses that existed at
the base were the changing side's job to update, and the textual merge already saw them.

Precision rules (why each exists):
- references are resolved through imports and module-level definitions only; a name
  bound locally in the enclosing function (parameter, assignment, loop target, nested
  def, comprehension) is a different object, so it is never a reference;
- "added" is counted over all files changed on a side, so moving code between files
  (a module rename) does not make every reference in it look new;
- a removed definition that still exists under the same dotted name anywhere on the
  removing side (moved within a package, re-exported by an import) is not removed.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Params:
    """The parts of a signature a call must fit."""

    positional: tuple[str, ...]
    posonly: int
    required_positional: int
    kwonly: tuple[str, ...]
    kwonly_required: frozenset[str]
    varargs: bool
    varkw: bool

    def describe(self) -> str:
        parts = list(self.positional) + (["*args"] if self.varargs else [])
        parts += list(self.kwonly) + (["**kwargs"] if self.varkw else [])
        return f"({', '.join(parts)})"


@dataclass(frozen=True)
class CallShape:
    positional: int
    keywords: tuple[str, ...]
    unpacked: bool
    """``*xs`` or ``**kw`` in the call: its fit cannot be decided statically."""


@dataclass(frozen=True)
class Definition:
    name: str
    """Dotted within the module: ``helper`` or ``Cls.method``."""
    kind: str
    """function | class | constant | import"""
    line: int
    body: str
    params: Params | None = None


@dataclass(frozen=True)
class Reference:
    symbol: str
    line: int
    call: CallShape | None = None


@dataclass
class ModuleFacts:
    """One file version's definitions; its references are resolved on first use (the
    changing side of a merge only ever needs definitions)."""

    module: str
    defs: dict[str, Definition] = field(default_factory=dict)
    tree: ast.Module | None = field(default=None, repr=False)
    is_package: bool = False
    _refs: list[Reference] | None = field(default=None, repr=False)

    @property
    def refs(self) -> list[Reference]:
        if self._refs is None:
            visitor = _References(self.module, self.is_package, self.defs)
            if self.tree is not None:
                visitor.visit(self.tree)
            self._refs = visitor.refs
            self.tree = None  # the AST is only kept until references are known
        return self._refs


def module_name(path: str) -> str:
    """``src/pkg/util.py`` -> ``pkg.util``; ``pkg/__init__.py`` -> ``pkg``."""
    parts = path[:-3].split("/")
    if parts and parts[0] in ("src", "lib") and len(parts) > 1:
        parts = parts[1:]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _params(args: ast.arguments, drop_first: bool = False) -> Params:
    pos = [a.arg for a in args.posonlyargs + args.args]
    posonly = len(args.posonlyargs)
    required = len(pos) - len(args.defaults)
    if drop_first and pos:
        pos, posonly, required = pos[1:], max(posonly - 1, 0), max(required - 1, 0)
    kw_required = frozenset(
        a.arg for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is None
    )
    return Params(tuple(pos), posonly, required, tuple(a.arg for a in args.kwonlyargs),
                  kw_required, args.vararg is not None, args.kwarg is not None)


def fits(params: Params, call: CallShape) -> bool:
    """Would ``call`` bind to ``params`` without a TypeError?"""
    if call.unpacked:
        return True
    if call.positional > len(params.positional) and not params.varargs:
        return False
    bound = set(params.positional[:call.positional])
    for kw in call.keywords:
        if kw in bound:
            return False
        if kw in params.positional[params.posonly:] or kw in params.kwonly:
            bound.add(kw)
        elif not params.varkw:
            return False
    required = set(params.positional[:params.required_positional]) | params.kwonly_required
    return required <= bound


def _top_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements at module level, looking into if/try blocks (conditional defs)."""
    for node in body:
        if isinstance(node, ast.If):
            yield from _top_level(node.body)
            yield from _top_level(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                yield from _top_level(block)
            for h in node.handlers:
                yield from _top_level(h.body)
        else:
            yield node


def _assigned_names(node: ast.stmt) -> list[str]:
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, ast.AnnAssign | ast.AugAssign):
        targets = [node.target]
    return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]


def _definitions(tree: ast.Module, lines: list[str]) -> dict[str, Definition]:
    def text(node: ast.stmt) -> str:
        # The definition's source, dedented: much cheaper than ast.dump and, unlike it,
        # independent of where in the file the definition sits.
        start = node.lineno - 1
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            start = min([d.lineno - 1 for d in node.decorator_list] + [start])
        chunk = lines[start:node.end_lineno]
        indent = len(chunk[0]) - len(chunk[0].lstrip()) if chunk else 0
        return "\n".join(line[indent:].rstrip() for line in chunk)

    defs: dict[str, Definition] = {}
    for node in _top_level(tree.body):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            defs[node.name] = Definition(node.name, "function", node.lineno, text(node),
                                         _params(node.args))
        elif isinstance(node, ast.ClassDef):
            init = None
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    name = f"{node.name}.{item.name}"
                    defs[name] = Definition(name, "function", item.lineno, text(item),
                                            _params(item.args))
                    if item.name == "__init__":
                        init = _params(item.args, drop_first=True)
                else:
                    for n in _assigned_names(item):
                        name = f"{node.name}.{n}"
                        defs[name] = Definition(name, "constant", item.lineno, text(item))
            if init is None and not node.bases and not node.keywords:
                # No __init__ and no base class: the constructor takes no arguments.
                init = Params((), 0, 0, (), frozenset(), False, False)
            defs[node.name] = Definition(node.name, "class", node.lineno, text(node), init)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                bound = alias.asname or alias.name.split(".")[0]
                defs.setdefault(bound, Definition(bound, "import", node.lineno, ""))
        else:
            for n in _assigned_names(node):
                defs[n] = Definition(n, "constant", node.lineno, text(node))
    return defs


def _resolve_from(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".") if module else []
    if not is_package:
        parts = parts[:-1]
    if node.level > 1:
        parts = parts[: len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def _local_names(fn: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> set[str]:
    """Names bound in a function's own scope (so they shadow module-level names).

    Function-level imports are not in this set: the reference visitor resolves them
    through its import map, which it restores when it leaves the function."""
    a = fn.args
    names = {x.arg for x in a.posonlyargs + a.args + a.kwonlyargs}
    names |= {x.arg for x in (a.vararg, a.kwarg) if x is not None}
    declared_global: set[str] = set()
    stack: list[ast.AST] = list(fn.body) if isinstance(fn.body, list) else [fn.body]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
            stack.extend(node.decorator_list)
            continue  # its body is its own scope
        if isinstance(node, ast.Lambda):
            continue
        if isinstance(node, ast.Global | ast.Nonlocal):
            declared_global.update(node.names)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            names.add(node.id)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        stack.extend(ast.iter_child_nodes(node))
    return names - declared_global


class _References(ast.NodeVisitor):
    """Collect references resolved to dotted symbols, honouring local shadowing."""

    def __init__(self, module: str, is_package: bool, top: Mapping[str, Definition]) -> None:
        self.module = module
        self.is_package = is_package
        self.imports: dict[str, str] = {}
        self.top = top
        self.scopes: list[set[str]] = []
        self.refs: list[Reference] = []

    def _shadowed(self, name: str) -> bool:
        return any(name in s for s in self.scopes)

    def _symbol(self, expr: ast.expr) -> str | None:
        attrs: list[str] = []
        while isinstance(expr, ast.Attribute):
            attrs.append(expr.attr)
            expr = expr.value
        if not isinstance(expr, ast.Name) or self._shadowed(expr.id):
            return None
        if expr.id in self.imports:
            root = self.imports[expr.id]
        elif expr.id in self.top and self.top[expr.id].kind != "import":
            root = f"{self.module}.{expr.id}" if self.module else expr.id
        else:
            return None
        return ".".join([root, *reversed(attrs)])

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.asname:
                self.imports[alias.asname] = alias.name
            else:
                head = alias.name.split(".")[0]
                self.imports[head] = head
            self.refs.append(Reference(alias.name, node.lineno))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = _resolve_from(self.module, self.is_package, node)
        for alias in node.names:
            if alias.name == "*":
                continue
            full = f"{base}.{alias.name}" if base else alias.name
            self.imports[alias.asname or alias.name] = full
            self.refs.append(Reference(full, node.lineno))

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        if not isinstance(node, ast.Lambda):
            for d in node.decorator_list:
                self.visit(d)
        for default in node.args.defaults + [d for d in node.args.kw_defaults if d]:
            self.visit(default)
        saved = dict(self.imports)
        self.scopes.append(_local_names(node))
        for stmt in (node.body if isinstance(node.body, list) else [node.body]):
            self.visit(stmt)
        self.scopes.pop()
        self.imports = saved  # function-local imports do not leak out

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function  # type: ignore[assignment]

    def _comprehension(self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp) -> None:
        names = {n.id for g in node.generators for n in ast.walk(g.target) if isinstance(n, ast.Name)}
        self.visit(node.generators[0].iter)
        self.scopes.append(names)
        for g in node.generators:
            for cond in g.ifs:
                self.visit(cond)
        for g in node.generators[1:]:
            self.visit(g.iter)
        for part in ("elt", "key", "value"):
            if hasattr(node, part):
                self.visit(getattr(node, part))
        self.scopes.pop()

    visit_ListComp = visit_SetComp = visit_GeneratorExp = visit_DictComp = _comprehension  # type: ignore[assignment]

    def visit_Call(self, node: ast.Call) -> None:
        symbol = self._symbol(node.func)
        if symbol is not None:
            unpacked = any(isinstance(a, ast.Starred) for a in node.args) or any(
                k.arg is None for k in node.keywords)
            shape = CallShape(len(node.args), tuple(k.arg for k in node.keywords if k.arg),
                              unpacked)
            self.refs.append(Reference(symbol, node.lineno, shape))
        else:
            self.visit(node.func)
        for arg in node.args:
            self.visit(arg)
        for kw in node.keywords:
            self.visit(kw.value)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        symbol = self._symbol(node)
        if symbol is not None:
            self.refs.append(Reference(symbol, node.lineno))
        else:
            self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            symbol = self._symbol(node)
            if symbol is not None:
                self.refs.append(Reference(symbol, node.lineno))


def facts(path: str, source: bytes | None) -> ModuleFacts | None:
    """Definitions and references of one file version (None: absent or unparsable)."""
    if source is None:
        return None
    try:
        tree = ast.parse(source, filename=path)
    except (SyntaxError, ValueError):
        return None  # not ours to judge: a syntax error is the validator's job
    module = module_name(path)
    defs = _definitions(tree, source.decode("utf-8", "replace").splitlines())
    return ModuleFacts(module, defs, tree, path.endswith("__init__.py"))
