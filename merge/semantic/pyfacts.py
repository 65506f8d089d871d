"""Facts about Python source for the semantic analyser, with the standard ``ast`` module.

Each changed file is parsed at base, ours and theirs into *definitions* (top-level and
class-level names with their signatures and bodies) and *references* (names resolved
through imports to dotted symbols, with call shapes).  A finding needs one side to
change an API and the other side to *add* a use of the old API: uses that existed at
the base were the changing side's job to update, and the textual merge already saw them.

Precision rules (why each exists):
- references are resolved through imports and module-level definitions only, with
  Python's scoping: a name bound in an enclosing function, lambda or comprehension
  (parameter, assignment, loop/with/except/match target, walrus, nested def, local
  import) or in the class body it is used in is a different object, so it is never a
  reference to the module-level one; class bodies do not enclose their methods, and
  ``global`` skips enclosing functions;
- only names are bound by assignment: ``x.attr = ...`` and ``x[k] = ...`` define nothing;
- a bare name resolved to the module's own definition is marked ``local``: it follows
  the code if the file is moved (see :mod:`merge.semantic.python`);
- ``src.pkg`` and ``pkg`` are one module (see :func:`canonical`);
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
    local: bool = False
    """Resolved through the module's own top-level definitions (a bare name), not an
    import: it names whatever module this code is in, so it follows the file."""


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


_LAYOUT_ROOTS = ("src", "lib")
"""Directories a module's dotted name is taken without: ``src/pkg`` is imported as
``pkg`` in a src layout, and as ``src.pkg`` when ``src`` is itself a package."""


def canonical(symbol: str) -> str:
    """``src.pkg.util.f`` -> ``pkg.util.f``: the name :func:`module_name` gives, so an
    import through the layout root and one without it mean the same module."""
    head, _, rest = symbol.partition(".")
    return rest if head in _LAYOUT_ROOTS and rest else symbol


def module_name(path: str) -> str:
    """``src/pkg/util.py`` -> ``pkg.util``; ``pkg/__init__.py`` -> ``pkg``."""
    parts = path[:-3].split("/")
    if parts and parts[0] in _LAYOUT_ROOTS and len(parts) > 1:
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


def _target_names(target: ast.expr) -> Iterator[str]:
    """Names an assignment target binds: ``a``, ``a, *b``, ``[a, (b, c)]`` -- not the
    names inside ``x.attr`` or ``x[key]``, which mutate an object bound elsewhere."""
    if isinstance(target, ast.Name):
        yield target.id
    elif isinstance(target, ast.Tuple | ast.List):
        for elt in target.elts:
            yield from _target_names(elt)
    elif isinstance(target, ast.Starred):
        yield from _target_names(target.value)


def _assigned_names(node: ast.stmt) -> list[str]:
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, ast.AnnAssign | ast.AugAssign):
        targets = [node.target]
    return [n for t in targets for n in _target_names(t)]


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


_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)
_GLOBAL = "<global>"
"""A scope's binding for a name declared ``global`` there: look it up at module level."""


class _Scope:
    """One function, lambda, class body or comprehension scope.

    ``names`` maps each name bound in it to ``None`` (a local: not a reference), to the
    dotted target of an import made in this scope (bound when the import is visited), or
    to :data:`_GLOBAL`.  Class bodies are not enclosing scopes: code nested in a class
    (methods, comprehensions) does not see its names, as in Python.
    """

    __slots__ = ("is_class", "names")

    def __init__(self, names: dict[str, str | None], is_class: bool = False) -> None:
        self.names = names
        self.is_class = is_class


def _bound_names(body: list[ast.AST], params: ast.arguments | None = None) -> dict[str, str | None]:
    """Names bound in one scope's own body: parameters, assignment, ``for``/``with``/
    ``except``/``match`` targets, ``del``, walrus (including inside a comprehension, whose
    own targets are its scope), nested ``def``/``class`` names; ``global``/``nonlocal``
    names are not local.  Imports are bound by the visitor when it reaches them."""
    names: set[str] = set()
    if params is not None:
        names = {x.arg for x in params.posonlyargs + params.args + params.kwonlyargs}
        names |= {x.arg for x in (params.vararg, params.kwarg) if x is not None}
    declared: dict[str, str | None] = {}
    stack: list[ast.AST] = list(body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
            # Decorators, defaults and bases run in this scope; the body is its own.
            stack.extend(node.decorator_list)
            if isinstance(node, ast.ClassDef):
                stack.extend(node.bases)
                stack.extend(k.value for k in node.keywords)
            else:
                stack.extend(node.args.defaults)
                stack.extend(d for d in node.args.kw_defaults if d is not None)
            continue
        if isinstance(node, ast.Lambda):
            stack.extend(node.args.defaults)
            stack.extend(d for d in node.args.kw_defaults if d is not None)
            continue
        if isinstance(node, _COMPREHENSIONS):
            # Its targets are its own; a walrus inside it still binds here.
            for g in node.generators:
                stack.append(g.iter)
                stack.extend(g.ifs)
            stack.extend(getattr(node, part) for part in ("elt", "key", "value") if hasattr(node, part))
            continue
        if isinstance(node, ast.Global):
            declared.update(dict.fromkeys(node.names, _GLOBAL))
        elif isinstance(node, ast.Nonlocal):
            declared.update(dict.fromkeys(node.names))
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            names.add(node.id)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        elif isinstance(node, ast.MatchAs | ast.MatchStar) and node.name:
            names.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            names.add(node.rest)
        stack.extend(ast.iter_child_nodes(node))
    out: dict[str, str | None] = dict.fromkeys(names - declared.keys())
    # ``nonlocal x`` is found in the enclosing function's scope; ``global x`` skips them.
    out.update({n: v for n, v in declared.items() if v is not None})
    return out


class _References(ast.NodeVisitor):
    """Collect references resolved to dotted symbols, honouring Python's scopes."""

    def __init__(self, module: str, is_package: bool, top: Mapping[str, Definition]) -> None:
        self.module = module
        self.is_package = is_package
        self.imports: dict[str, str] = {}
        """Module-level imports seen so far: bound name -> dotted target."""
        self.top = top
        self.scopes: list[_Scope] = []
        self.refs: list[Reference] = []

    def _lookup(self, name: str) -> tuple[str, bool] | None:
        """The dotted symbol ``name`` denotes here and whether it is the module's own
        definition (None: a local, or nothing this analysis tracks)."""
        innermost = len(self.scopes) - 1
        for i in range(innermost, -1, -1):
            scope = self.scopes[i]
            if scope.is_class and i != innermost:
                continue  # class bodies do not enclose the code nested in them
            if name in scope.names:
                target = scope.names[name]
                if target is None:
                    return None
                if target == _GLOBAL:
                    break
                return target, False
        if name in self.imports:
            return self.imports[name], False
        if name in self.top and self.top[name].kind != "import":
            return (f"{self.module}.{name}" if self.module else name), True
        return None

    def _resolve(self, expr: ast.expr) -> tuple[str, bool] | None:
        attrs: list[str] = []
        while isinstance(expr, ast.Attribute):
            attrs.append(expr.attr)
            expr = expr.value
        if not isinstance(expr, ast.Name):
            return None
        found = self._lookup(expr.id)
        if found is None:
            return None
        root, local = found
        return canonical(".".join([root, *reversed(attrs)])), local

    def _bind_import(self, name: str, target: str) -> None:
        if self.scopes:
            self.scopes[-1].names[name] = target
        else:
            self.imports[name] = target

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.asname:
                self._bind_import(alias.asname, alias.name)
            else:
                head = alias.name.split(".")[0]
                self._bind_import(head, head)
            self.refs.append(Reference(canonical(alias.name), node.lineno))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = _resolve_from(self.module, self.is_package, node)
        for alias in node.names:
            if alias.name == "*":
                continue
            full = f"{base}.{alias.name}" if base else alias.name
            self._bind_import(alias.asname or alias.name, full)
            self.refs.append(Reference(canonical(full), node.lineno))

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        # Decorators and defaults are evaluated in the enclosing scope.
        if not isinstance(node, ast.Lambda):
            for d in node.decorator_list:
                self.visit(d)
        for default in node.args.defaults + [d for d in node.args.kw_defaults if d]:
            self.visit(default)
        body = node.body if isinstance(node.body, list) else [node.body]
        self.scopes.append(_Scope(_bound_names(list(body), node.args)))
        for stmt in body:
            self.visit(stmt)
        self.scopes.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function  # type: ignore[assignment]

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for expr in [*node.decorator_list, *node.bases, *(k.value for k in node.keywords)]:
            self.visit(expr)
        self.scopes.append(_Scope(_bound_names(list(node.body)), is_class=True))
        for stmt in node.body:
            self.visit(stmt)
        self.scopes.pop()

    def _comprehension(self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp) -> None:
        names: dict[str, str | None] = {}
        for g in node.generators:
            names.update(dict.fromkeys(_target_names(g.target)))
        # The first iterable is evaluated in the enclosing scope, the rest in this one.
        self.visit(node.generators[0].iter)
        self.scopes.append(_Scope(names))
        for i, g in enumerate(node.generators):
            if i:
                self.visit(g.iter)
            for cond in g.ifs:
                self.visit(cond)
        for part in ("elt", "key", "value"):
            if hasattr(node, part):
                self.visit(getattr(node, part))
        self.scopes.pop()

    visit_ListComp = visit_SetComp = visit_GeneratorExp = visit_DictComp = _comprehension  # type: ignore[assignment]

    def visit_Call(self, node: ast.Call) -> None:
        found = self._resolve(node.func)
        if found is not None:
            unpacked = any(isinstance(a, ast.Starred) for a in node.args) or any(
                k.arg is None for k in node.keywords)
            shape = CallShape(len(node.args), tuple(k.arg for k in node.keywords if k.arg),
                              unpacked)
            self.refs.append(Reference(found[0], node.lineno, shape, found[1]))
        else:
            self.visit(node.func)
        for arg in node.args:
            self.visit(arg)
        for kw in node.keywords:
            self.visit(kw.value)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        found = self._resolve(node)
        if found is not None:
            self.refs.append(Reference(found[0], node.lineno, local=found[1]))
        else:
            self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            found = self._resolve(node)
            if found is not None:
                self.refs.append(Reference(found[0], node.lineno, local=found[1]))


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
