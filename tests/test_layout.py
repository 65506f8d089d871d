"""The shape of the code base: the layers hold (import-linter runs in ``make lint``), no
module imports itself through others, modules stay small, and the wheel installs only
forkyard's own packages."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import grimp
import networkx as nx

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("forkyard", "sandbox", "merge", "planner", "gitproc")
MAX_LINES = 500


def test_no_import_cycle_between_modules() -> None:
    # An import only for type checking never runs, so it cannot make a cycle.
    graph = grimp.build_graph(*PACKAGES, exclude_type_checking_imports=True)
    g = nx.DiGraph()
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            g.add_edge(module, imported)
    # A package's __init__ re-exporting its modules is not a cycle of logic.
    inits = set(PACKAGES)
    cycles = [c for c in nx.strongly_connected_components(g)
              if len(c) > 1 and not (c & inits)]
    assert cycles == []
    assert len(g) > 50  # the graph really was built


def test_no_module_over_500_lines() -> None:
    big = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            if "webapp" in path.parts:
                continue
            n = len(path.read_text().splitlines())
            if n > MAX_LINES:
                big[str(path.relative_to(ROOT))] = n
    assert big == {}


def test_the_wheel_installs_only_forkyards_packages(tmp_path: Path) -> None:
    # Built from a copy of what git tracks, so no build/ dir lands in the checkout.
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        if (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    out = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "-w", str(out), str(src)], check=True)
    (wheel,) = out.glob("forkyard-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == set(PACKAGES)
    # The demo's repository travels as package data.
    assert "forkyard/demo/webapp/src/models/user.py" in names
