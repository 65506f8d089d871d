"""Semantic conflicts: recall (each kind found) and precision (look-alikes not reported)."""

from __future__ import annotations

from collections.abc import Mapping

from fixtures.repos import commit_files
from merge import merge_sources
from merge.git import Repo
from merge.models import SemanticFinding
from merge.semantic import analyze

UTIL = '''\
import os

LIMIT = 10


def helper(x):
    return x + 1


def other():
    return 2


def greet(name, loud=False):
    return name.upper() if loud else name


class Base:
    def run(self):
        return 1
'''

APP = '''\
from pkg.util import helper


def main():
    return helper(1)
'''

BASE = {"pkg/__init__.py": "", "pkg/util.py": UTIL, "pkg/app.py": APP}


def findings(
    repo: Repo, ours: Mapping[str, str | None], theirs: Mapping[str, str | None]
) -> list[SemanticFinding]:
    base = commit_files(repo, "sem-base", BASE, "base", base="main")
    o = commit_files(repo, "sem-ours", ours, "ours", base=base)
    t = commit_files(repo, "sem-theirs", theirs, "theirs", base=base)
    return analyze(repo, base, o, t)


def kinds(fs: list[SemanticFinding]) -> list[tuple[str, str]]:
    return sorted((f.kind, f.symbol) for f in fs)


RENAMED = UTIL.replace("def helper(x)", "def helper2(x)")
RENAMED_APP = APP.replace("helper", "helper2")


def test_dangling_reference_to_renamed_function(repo: Repo) -> None:
    fs = findings(repo, {"pkg/util.py": RENAMED, "pkg/app.py": RENAMED_APP},
                  {"pkg/cli.py": "from pkg.util import helper\n\nprint(helper(2))\n"})
    assert kinds(fs) == [("dangling_reference", "pkg.util.helper")]
    f = fs[0]
    assert (f.path, f.line, f.severity) == ("pkg/cli.py", 1, "error")
    assert "pkg.util.helper2" in f.message


def test_rename_with_all_callers_updated_is_fine(repo: Repo) -> None:
    fs = findings(repo, {"pkg/util.py": RENAMED, "pkg/app.py": RENAMED_APP},
                  {"pkg/cli.py": "from pkg.util import other\n\nprint(other())\n"})
    assert fs == []


def test_removed_name_nobody_references_is_fine(repo: Repo) -> None:
    fs = findings(repo, {"pkg/util.py": UTIL.replace("def other():\n    return 2\n", "")},
                  {"pkg/app.py": APP + "\n\nX = helper(3)\n"})
    assert fs == []


def test_local_variable_shadowing_a_removed_name_is_fine(repo: Repo) -> None:
    fs = findings(
        repo, {"pkg/util.py": RENAMED, "pkg/app.py": RENAMED_APP},
        {"pkg/cli.py": "def run(helper):\n    return helper(1)\n\n\n"
                       "def go():\n    helper = len\n    return helper('x')\n\n\n"
                       "SQUARES = [helper * 2 for helper in range(3)]\n"},
    )
    assert fs == []


def test_reference_through_module_alias(repo: Repo) -> None:
    fs = findings(repo, {"pkg/util.py": RENAMED, "pkg/app.py": RENAMED_APP},
                  {"pkg/cli.py": "import pkg.util as u\n\nprint(u.helper(2))\n"})
    assert kinds(fs) == [("dangling_reference", "pkg.util.helper")]
    assert fs[0].line == 3


def test_subclassing_a_removed_class(repo: Repo) -> None:
    gone = UTIL[: UTIL.index("class Base")]
    fs = findings(repo, {"pkg/util.py": gone},
                  {"pkg/models.py": "from pkg import util\n\n\nclass Child(util.Base):\n    pass\n"})
    assert kinds(fs) == [("dangling_reference", "pkg.util.Base")]


def test_removed_constant_used_in_same_module(repo: Repo) -> None:
    fs = findings(repo, {"pkg/util.py": UTIL.replace("LIMIT = 10\n", "")},
                  {"pkg/util.py": UTIL + "\n\ndef capped(x):\n    return min(x, LIMIT)\n"})
    assert kinds(fs) == [("dangling_reference", "pkg.util.LIMIT")]


def test_moved_module(repo: Repo) -> None:
    fs = findings(repo, {"pkg/util.py": None, "pkg/tools.py": UTIL,
                         "pkg/app.py": APP.replace("pkg.util", "pkg.tools")},
                  {"pkg/cli.py": "from pkg.util import other\n"})
    assert kinds(fs) == [("dangling_reference", "pkg.util")]


def test_relative_import(repo: Repo) -> None:
    fs = findings(repo, {"pkg/util.py": RENAMED, "pkg/app.py": RENAMED_APP},
                  {"pkg/cli.py": "from .util import helper\n"})
    assert kinds(fs) == [("dangling_reference", "pkg.util.helper")]


def test_signature_new_required_parameter(repo: Repo) -> None:
    fs = findings(repo, {"pkg/util.py": UTIL.replace("def greet(name, loud=False)",
                                                     "def greet(name, greeting, loud=False)")},
                  {"pkg/cli.py": "from pkg.util import greet\n\ngreet('ann')\n"})
    assert kinds(fs) == [("signature_mismatch", "pkg.util.greet")]
    assert fs[0].line == 3


def test_signature_renamed_keyword(repo: Repo) -> None:
    fs = findings(repo, {"pkg/util.py": UTIL.replace("loud=False)", "shout=False)")
                  .replace("if loud", "if shout")},
                  {"pkg/cli.py": "from pkg import util\n\nutil.greet('ann', loud=True)\n"})
    assert kinds(fs) == [("signature_mismatch", "pkg.util.greet")]


def test_signature_absorbed_by_default_or_kwargs(repo: Repo) -> None:
    ours = UTIL.replace("def greet(name, loud=False)",
                        "def greet(name, greeting='hi', shout=False, **kwargs)")
    fs = findings(repo, {"pkg/util.py": ours},
                  {"pkg/cli.py": "from pkg.util import greet\n\ngreet('a')\ngreet('b', loud=True)\n"
                                 "args = ['c']\ngreet(*args)\n"})
    assert fs == []


def test_signature_of_constructor(repo: Repo) -> None:
    ours = UTIL.replace("class Base:\n", "class Base:\n    def __init__(self, size):\n"
                        "        self.size = size\n\n")
    fs = findings(repo, {"pkg/util.py": ours},
                  {"pkg/cli.py": "from pkg.util import Base\n\nb = Base()\n"})
    assert kinds(fs) == [("signature_mismatch", "pkg.util.Base")]


def test_duplicate_definition(repo: Repo) -> None:
    fs = findings(repo, {"pkg/util.py": "def shiny():\n    return 1\n\n\n" + UTIL},
                  {"pkg/util.py": UTIL + "\n\ndef shiny():\n    return 2\n"})
    assert kinds(fs) == [("duplicate_definition", "pkg.util.shiny")]


def test_duplicate_method(repo: Repo) -> None:
    fs = findings(repo,
                  {"pkg/util.py": UTIL.replace("class Base:\n", "class Base:\n    def x(self):\n        return 1\n\n")},
                  {"pkg/util.py": UTIL + "\n    def x(self):\n        return 2\n"})
    assert ("duplicate_definition", "pkg.util.Base.x") in kinds(fs)


def test_concurrent_entity_edit_is_a_warning(repo: Repo) -> None:
    body = "def helper(x):\n    a = 1\n    b = 2\n    c = 3\n    d = 4\n    return x + 1\n"
    base_util = UTIL.replace("def helper(x):\n    return x + 1\n", body)
    base = commit_files(repo, "cee-base", {**BASE, "pkg/util.py": base_util}, "b", base="main")
    o = commit_files(repo, "cee-o", {"pkg/util.py": base_util.replace("a = 1", "a = 10")}, "o", base=base)
    t = commit_files(repo, "cee-t", {"pkg/util.py": base_util.replace("d = 4", "d = 40")}, "t", base=base)
    fs = analyze(repo, base, o, t)
    assert [(f.kind, f.symbol, f.severity) for f in fs] == [
        ("concurrent_entity_edit", "pkg.util.helper", "warning")]


def test_findings_reach_the_report_without_changing_status(repo: Repo) -> None:
    base = commit_files(repo, "main", BASE, "base")
    commit_files(repo, "rename", {"pkg/util.py": RENAMED, "pkg/app.py": RENAMED_APP}, base=base)
    commit_files(repo, "use", {"pkg/cli.py": "from pkg.util import helper\n"}, base=base)
    report = merge_sources(repo, "main", ["rename", "use"], dry_run=True)
    assert [m.status for m in report.merges] == ["clean", "clean"]
    assert [f.kind for f in report.merges[1].semantic] == ["dangling_reference"]
    assert report.exit_code == 1
    assert merge_sources(repo, "main", ["rename", "use"], dry_run=True,
                         semantic=False).exit_code == 0


def test_function_level_import_call_is_checked(repo: Repo) -> None:
    fs = findings(repo, {"pkg/util.py": UTIL.replace("def greet(name, loud=False)",
                                                     "def greet(name, greeting, loud=False)")},
                  {"pkg/cli.py": "def run():\n    from pkg.util import greet\n    return greet('a')\n"})
    assert kinds(fs) == [("signature_mismatch", "pkg.util.greet")]


def test_use_in_same_module_is_dangling(repo: Repo) -> None:
    gone = UTIL.replace("def other():\n    return 2\n", "")
    fs = findings(repo, {"pkg/util.py": gone},
                  {"pkg/util.py": UTIL + "\n\ndef more():\n    return other() + 1\n",
                   "pkg/extra.py": "def other():\n    return 3\n"})
    # theirs adds a use of pkg.util.other, which ours removes: still dangling
    assert kinds(fs) == [("dangling_reference", "pkg.util.other")]


def test_moved_but_reexported_is_fine(repo: Repo) -> None:
    body = "def helper(x):\n    return x + 1\n"
    ours_util = UTIL.replace(body, "").replace("import os\n", "import os\n\nfrom pkg.helpers import helper\n")
    fs = findings(repo, {"pkg/util.py": ours_util, "pkg/helpers.py": body},
                  {"pkg/cli.py": "from pkg.util import helper\n\nhelper(1)\n"})
    assert fs == []


def test_batch_sees_unchanged_files_as_unchanged(repo: Repo) -> None:
    """In a batch, a file only an earlier source changed is unchanged on the later one."""
    base = commit_files(repo, "main", BASE, "base")
    commit_files(repo, "edit-util", {"pkg/util.py": UTIL + "\n\ndef extra():\n    return 3\n",
                                     "pkg/app.py": APP + "\n\nY = helper(5)\n"}, base=base)
    commit_files(repo, "edit-app", {"pkg/other.py": "from pkg.util import other\n"}, base=base)
    commit_files(repo, "third", {"pkg/third.py": "from pkg import util\n\nutil.greet('x')\n"},
                 base=base)
    report = merge_sources(repo, "main", ["edit-util", "edit-app", "third"], dry_run=True)
    assert [m.semantic for m in report.merges] == [[], [], []]
