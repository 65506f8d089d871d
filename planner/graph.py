"""The dependency graph of a task list, and the file conflicts between its tasks.

:func:`build_graph` validates the task list (duplicate ids, unknown dependencies,
cycles) and finds *implicit* conflicts: two tasks whose file globs overlap, or whose
descriptions name the same file.  Conflicts are locks (the two never run at the same
time), not orderings; which one goes first is the scheduler's choice.

The graph is held as integer-indexed adjacency tuples rather than a networkx graph:
planning 10,000 tasks must take well under two seconds and networkx's per-edge dicts
cost more than the whole scheduler.  :meth:`TaskGraph.to_networkx` gives the networkx
view for callers (and the cycle report) that want it.
"""

from __future__ import annotations

import functools
import posixpath
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import networkx as nx

from planner.errors import CycleError, DuplicateTaskError, UnknownDependencyError
from planner.tasks import Task

#: How many cycles a CycleError names at most; a tangled graph can have millions.
MAX_CYCLES = 10

_WILDCARDS = frozenset("*?[")

# Extensions that make a word in a description a file name ("Update user.ts model").
# A closed list, because prose is full of dotted words ("e.g.", "v1.5", "Node.js").
_EXTENSIONS = (
    "py pyi ts tsx js jsx mjs cjs go rs java kt kts scala rb php c h cc cpp cxx hpp hh cs "
    "swift m mm vue svelte html htm css scss sass less sql graphql gql proto json yaml yml "
    "toml ini cfg conf env md rst txt csv xml sh bash zsh ps1 dockerfile lock gradle tf "
    "ex exs erl hs ml clj dart lua r jl zig nim sol ipynb"
).split()
_MENTION = re.compile(
    r"(?<![\w./-])((?:[\w.-]+/)*[\w-][\w.-]*\.(?:" + "|".join(_EXTENSIONS) + r"))(?![\w/])",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Conflict:
    """Two tasks that must not run at the same time, and why (``a`` before ``b`` in file order)."""

    a: str
    b: str
    reason: str


@dataclass(frozen=True)
class TaskGraph:
    """A validated task DAG with integer indices (task ``i`` is ``ids[i]``, file order).

    ``preds[i]``/``succs[i]`` are dependency edges (``preds`` must finish before ``i``
    starts); ``conflicts`` maps index pairs ``(i, j)`` with ``i < j`` to a reason;
    ``conflict_adj[i]`` lists the tasks ``i`` conflicts with; ``resources`` maps each
    exact file name or glob to the tasks naming it (they all lock each other), and
    ``topo`` is a topological order.
    """

    ids: tuple[str, ...]
    index: dict[str, int]
    preds: tuple[tuple[int, ...], ...]
    succs: tuple[tuple[int, ...], ...]
    topo: tuple[int, ...]
    conflicts: dict[tuple[int, int], str] = field(default_factory=dict)
    conflict_adj: tuple[tuple[int, ...], ...] = ()
    resources: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def edge_count(self) -> int:
        return sum(len(p) for p in self.preds)

    def dependencies(self) -> dict[str, list[str]]:
        """Each task's direct dependencies, by id."""
        return {self.ids[i]: [self.ids[p] for p in ps] for i, ps in enumerate(self.preds)}

    def conflict_list(self) -> list[Conflict]:
        """The conflicting pairs, sorted by file order."""
        return [Conflict(self.ids[i], self.ids[j], r) for (i, j), r in sorted(self.conflicts.items())]

    def to_networkx(self) -> nx.DiGraph:
        """The dependency DAG as a networkx DiGraph (edges dependency -> dependent)."""
        g: nx.DiGraph = nx.DiGraph()
        g.add_nodes_from(self.ids)
        g.add_edges_from((self.ids[p], self.ids[i]) for i, ps in enumerate(self.preds) for p in ps)
        return g

    def with_edges(self, extra: Iterable[tuple[int, int]]) -> TaskGraph:
        """This graph plus dependency edges ``(before, after)`` (must keep it acyclic)."""
        preds = [set(p) for p in self.preds]
        for a, b in extra:
            preds[b].add(a)
        pred_t = tuple(tuple(sorted(p)) for p in preds)
        succs: list[list[int]] = [[] for _ in self.ids]
        for i, ps in enumerate(pred_t):
            for p in ps:
                succs[p].append(i)
        topo = _topological_order(pred_t, succs)
        if topo is None:  # pragma: no cover - callers orient edges along a feasible schedule
            raise CycleError(_find_cycles(self.ids, pred_t, set(range(len(self.ids)))))
        return TaskGraph(self.ids, self.index, pred_t, tuple(tuple(s) for s in succs), topo,
                         self.conflicts, self.conflict_adj, self.resources)


def build_graph(tasks: Sequence[Task]) -> TaskGraph:
    """Validate ``tasks`` and build their graph.

    Raises :class:`DuplicateTaskError`, :class:`UnknownDependencyError` or
    :class:`CycleError` (naming every cycle, up to :data:`MAX_CYCLES`, as a closed path).
    """
    index: dict[str, int] = {}
    for i, task in enumerate(tasks):
        if task.id in index:
            raise DuplicateTaskError(task.id)
        index[task.id] = i
    ids = tuple(t.id for t in tasks)
    preds: list[tuple[int, ...]] = []
    succs: list[list[int]] = [[] for _ in tasks]
    for i, task in enumerate(tasks):
        seen: dict[int, None] = {}  # ordered set: a repeated dependency is harmless
        for dep in task.depends_on:
            j = index.get(dep)
            if j is None:
                raise UnknownDependencyError(task.id, dep)
            seen[j] = None
        preds.append(tuple(seen))
        for j in seen:
            succs[j].append(i)
    pred_t = tuple(preds)
    topo = _topological_order(pred_t, succs)
    if topo is None:
        raise CycleError(_find_cycles(ids, pred_t, set(range(len(ids)))))
    conflicts, resources = find_conflicts(tasks)
    if conflicts:
        # Two tasks joined by a dependency path never overlap anyway; a lock between them
        # would only be noise in the report.  Ancestor sets as int bitsets keep this
        # cheap even for 10,000 tasks.
        anc = [0] * len(ids)
        for i in topo:
            bits = 0
            for p in pred_t[i]:
                bits |= anc[p] | (1 << p)
            anc[i] = bits
        for a, b in [k for k in conflicts if (anc[k[1]] >> k[0]) & 1 or (anc[k[0]] >> k[1]) & 1]:
            del conflicts[(a, b)]
    adj: list[list[int]] = [[] for _ in tasks]
    for a, b in conflicts:
        adj[a].append(b)
        adj[b].append(a)
    return TaskGraph(ids, index, pred_t, tuple(tuple(s) for s in succs), topo, conflicts,
                     tuple(tuple(sorted(a)) for a in adj), resources)


def _topological_order(preds: Sequence[Sequence[int]], succs: Sequence[Sequence[int]]) -> tuple[int, ...] | None:
    """Kahn's algorithm in file order; None when there is a cycle."""
    indeg = [len(p) for p in preds]
    order = [i for i, d in enumerate(indeg) if d == 0]
    k = 0
    while k < len(order):
        for s in succs[order[k]]:
            indeg[s] -= 1
            if indeg[s] == 0:
                order.append(s)
        k += 1
    return tuple(order) if len(order) == len(preds) else None


def _find_cycles(ids: Sequence[str], preds: Sequence[Sequence[int]], nodes: set[int]) -> list[list[str]]:
    # Edges point from a task to what it depends on, so "a -> c" reads "a depends on c".
    g: nx.DiGraph = nx.DiGraph()
    g.add_edges_from((i, p) for i in nodes for p in preds[i] if p in nodes)
    cycles: list[list[str]] = []
    for cycle in nx.simple_cycles(g):
        # Start each cycle at its task earliest in the file so reports are stable.
        k = cycle.index(min(cycle))
        cycle = cycle[k:] + cycle[:k]
        cycles.append([ids[i] for i in cycle] + [ids[cycle[0]]])
        if len(cycles) >= MAX_CYCLES:
            break
    return sorted(cycles, key=lambda c: (len(c), [ids.index(x) for x in c]))


# -- file conflicts --------------------------------------------------------------------


def normalize_path(path: str) -> str:
    """``./src/models/`` -> ``src/models/**``: a directory stands for everything under it."""
    p = path.strip().replace("\\", "/")
    while p.startswith("./"):
        p = p[2:]
    if p.endswith("/"):
        p = p.rstrip("/") + "/**"
    return p


def is_glob(path: str) -> bool:
    return any(c in _WILDCARDS for c in path)


def mentioned_files(text: str) -> list[str]:
    """File names a description mentions, e.g. ``user.ts`` in "Update user.ts model"."""
    return list(dict.fromkeys(normalize_path(m) for m in _MENTION.findall(text)))


@functools.lru_cache(maxsize=4096)
def glob_regex(glob: str) -> re.Pattern[str]:
    """Compile a path glob: ``*`` and ``?`` stay inside one directory, ``**`` crosses them."""
    out: list[str] = []
    i = 0
    while i < len(glob):
        c = glob[i]
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if glob.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = glob.find("]", i + 1)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = glob[i + 1:end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


def _literal_prefix(glob: str) -> str:
    for k, c in enumerate(glob):
        if c in _WILDCARDS:
            return glob[:k]
    return glob


def globs_overlap(a: str, b: str) -> bool:
    """Whether two path globs can match a common path (conservative for two wildcards).

    Same path; one glob matching the other's literal path; or, for two wildcard globs,
    literal prefixes that agree and either a ``**`` or segment-by-segment compatibility.
    """
    if a == b:
        return True
    ga, gb = is_glob(a), is_glob(b)
    if not ga and not gb:
        return False
    if not ga:
        return glob_regex(b).match(a) is not None
    if not gb:
        return glob_regex(a).match(b) is not None
    pa, pb = _literal_prefix(a), _literal_prefix(b)
    if not (pa.startswith(pb) or pb.startswith(pa)):
        return False
    if "**" in a or "**" in b:
        return True
    sa, sb = a.split("/"), b.split("/")
    if len(sa) != len(sb):
        return False
    for x, y in zip(sa, sb, strict=True):
        if x == y or (is_glob(x) and is_glob(y)):
            continue
        if is_glob(x) and glob_regex(x).match(y):
            continue
        if is_glob(y) and glob_regex(y).match(x):
            continue
        return False
    return True


def find_conflicts(tasks: Sequence[Task]) -> tuple[dict[tuple[int, int], str], dict[str, tuple[int, ...]]]:
    """Pairs of tasks that touch a common file, with a reason; and the file -> tasks index.

    Kept near-linear for the common case (literal paths): tasks are bucketed by path and
    only globs are compared with every distinct path.  A file named in a description
    (``user.ts``) also matches a listed path ending in ``/user.ts``.
    """
    literal: dict[str, list[int]] = defaultdict(list)  # path -> tasks (files and mentions)
    globs: dict[str, list[int]] = defaultdict(list)
    mentions: dict[str, list[int]] = defaultdict(list)
    for i, task in enumerate(tasks):
        listed = {normalize_path(f) for f in task.files if f.strip()}
        for f in sorted(listed):
            (globs if is_glob(f) else literal)[f].append(i)
        for m in mentioned_files(task.description):
            if m not in listed:
                literal[m].append(i)
                mentions[m].append(i)
    pairs: dict[tuple[int, int], str] = {}

    def add(xs: Iterable[int], ys: Iterable[int], reason: str) -> None:
        for x in xs:
            for y in ys:
                if x != y:
                    key = (x, y) if x < y else (y, x)
                    pairs.setdefault(key, reason)

    for path, owners in list(literal.items()) + list(globs.items()):
        if len(owners) > 1:
            add(owners, owners, f"both touch {path}")
    # A bare file name in prose ("user.ts") names the same file as "src/models/user.ts".
    by_base: dict[str, list[str]] = defaultdict(list)
    for path in literal:
        by_base[posixpath.basename(path)].append(path)
    for m, owners in mentions.items():
        for path in by_base[posixpath.basename(m)]:
            if path != m and (path.endswith("/" + m) or m.endswith("/" + path)):
                add(owners, literal[path], f"both touch {max(path, m, key=len)}")
    glob_list = list(globs)
    for k, g in enumerate(glob_list):
        rx = glob_regex(g)
        for path, owners in literal.items():
            if rx.match(path):
                add(globs[g], owners, f"{g} overlaps {path}")
        for h in glob_list[k + 1:]:
            if globs_overlap(g, h):
                add(globs[g], globs[h], f"{g} overlaps {h}")
    resources = {p: tuple(sorted(set(o))) for p, o in {**literal, **globs}.items()}
    return pairs, resources
