"""Semantic conflicts: recall (each kind found) and precision (look-alikes not reported)."""

from __future__ import annotations

from collections.abc import Mapping

from fixtures.repos import commit_files
from gitproc.git import Repo
from merge import merge_sources
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


# -- precision: look-alikes of a reference that are not one ------------------------------

FIND_BY_EMAIL = '''

def find_by_email(email):
    email = normalize_email(email)
    return [u for u in USERS.values() if u.email == email]
'''


def _webapp_text(repo: Repo, path: str) -> str:
    return (repo.path / path).read_text()


def _webapp_find_by_email(repo: Repo) -> dict[str, str | None]:
    """One side's edit from the bug report: ``find_by_email`` added to src/api/users.py."""
    users = _webapp_text(repo, "src/api/users.py").replace(
        "import User, validate_email", "import User, normalize_email, validate_email")
    model = _webapp_text(repo, "src/models/user.py") + (
        "\n\ndef normalize_email(email):\n    return email.strip().lower()\n")
    return {"src/api/users.py": users + FIND_BY_EMAIL, "src/models/user.py": model}


def _semantic(repo: Repo, a: Mapping[str, str | None],
              b: Mapping[str, str | None]) -> list[list[tuple[str, str]]]:
    commit_files(repo, "a", a, "a", base="main")
    commit_files(repo, "b", b, "b", base="main")
    out = []
    for order in (["a", "b"], ["b", "a"]):
        report = merge_sources(repo, "main", order, dry_run=True)
        out.append(kinds(report.merges[1].semantic))
    return out


def test_code_added_to_a_module_the_other_side_renamed_is_fine(webapp: Repo) -> None:
    """The report: the added function's bare names (USERS) follow the file to its new
    name, as git carries the edit there; they are not references to ``api.users``."""
    users = _webapp_text(webapp, "src/api/users.py")
    rename = {"src/api/users.py": None, "src/api/accounts.py": users}
    commit_files(webapp, "a", _webapp_find_by_email(webapp), "a", base="main")
    commit_files(webapp, "b", rename, "b", base="main")
    report = merge_sources(webapp, "main", ["a", "b"], dry_run=True)
    assert [m.status for m in report.merges] == ["clean", "clean"]
    assert [m.semantic for m in report.merges] == [[], []]
    assert report.exit_code == 0
    report = merge_sources(webapp, "main", ["b", "a"], dry_run=True)
    assert [m.semantic for m in report.merges] == [[], []]


def test_renamed_module_still_dangles_for_names_the_move_dropped(webapp: Repo) -> None:
    users = _webapp_text(webapp, "src/api/users.py")
    rename = {"src/api/users.py": None,
              "src/api/accounts.py": users.replace("USERS", "ACCOUNTS")}
    assert _semantic(webapp, _webapp_find_by_email(webapp), rename) == [
        [("dangling_reference", "api.users.USERS")]] * 2


def test_import_of_a_renamed_module_still_dangles(webapp: Repo) -> None:
    users = _webapp_text(webapp, "src/api/users.py")
    rename = {"src/api/users.py": None, "src/api/accounts.py": users}
    admin = {"src/api/admin.py": "from src.api.users import get_user\n\nprint(get_user(1))\n"}
    assert _semantic(webapp, admin, rename) == [[("dangling_reference", "api.users")]] * 2


def test_import_through_a_src_package_is_checked(webapp: Repo) -> None:
    """webapp imports ``src.api.users`` (src is a package): the same module as api.users."""
    users = _webapp_text(webapp, "src/api/users.py")
    gone = {"src/api/users.py": users.replace("\n\ndef get_user(id):\n    return USERS[id]\n", "")}
    admin = {"src/api/admin.py": "import src.api.users\n\nprint(src.api.users.get_user(1))\n"}
    assert _semantic(webapp, gone, admin) == [[("dangling_reference", "api.users.get_user")]] * 2


def test_scope_lookalikes_in_the_reported_function_are_fine(webapp: Repo) -> None:
    """Parameter reassigned from a call, attribute of a comprehension variable, names like
    a module's last component (email, users, config): none is a reference to them.
    (A guard: these were already right; the report's finding came from the rename.)"""
    config = _webapp_text(webapp, "src/config.py")
    code = ("\n\ndef lookup(users, config):\n    config = dict(config)\n"
            "    return [email.users for email in users if email.config == config]\n")
    a = _webapp_find_by_email(webapp)
    a["src/api/users.py"] = (a["src/api/users.py"] or "") + code
    b = {"src/config.py": config.replace('DEBUG = False\n', ''),
         "src/models/user.py": _webapp_text(webapp, "src/models/user.py").replace(
             "\n\ndef validate_email(email):\n    return \"@\" in email\n", "")}
    # b removes validate_email, which users.py imports at the base: a did not add that.
    assert _semantic(webapp, {"src/api/users.py": a["src/api/users.py"]}, b) == [[], []]


GONE_OTHER = {"pkg/util.py": UTIL.replace("def other():\n    return 2\n", "")}


def _adds_to_util(code: str) -> dict[str, str | None]:
    return {"pkg/util.py": UTIL + "\n\n" + code}


def test_match_capture_shadowing_a_removed_name_is_fine(repo: Repo) -> None:
    code = ("def f(v):\n    match v:\n        case [other, *rest]:\n            return other(rest)\n"
            "        case {'k': 1, **other}:\n            return other()\n"
            "        case Base() as other:\n            return other.run()\n")
    assert findings(repo, GONE_OTHER, _adds_to_util(code)) == []


def test_class_attribute_shadowing_a_removed_name_in_its_body_is_fine(repo: Repo) -> None:
    code = "class Table:\n    other = staticmethod(len)\n    size = other('abc')\n"
    assert findings(repo, GONE_OTHER, _adds_to_util(code)) == []


def test_class_attribute_does_not_shadow_in_its_methods(repo: Repo) -> None:
    code = ("class Table:\n    other = 1\n\n    def m(self):\n        return other()\n\n"
            "    xs = [other() for _ in range(2)]\n")
    assert kinds(findings(repo, GONE_OTHER, _adds_to_util(code))) == [
        ("dangling_reference", "pkg.util.other")]


def test_comprehension_target_does_not_shadow_the_function(repo: Repo) -> None:
    code = "def f(xs):\n    ys = [other for other in xs]\n    return other(ys)\n"
    assert kinds(findings(repo, GONE_OTHER, _adds_to_util(code))) == [
        ("dangling_reference", "pkg.util.other")]


def test_function_level_import_beats_an_outer_local(repo: Repo) -> None:
    code = ("def outer():\n    util = 1\n\n    def inner():\n"
            "        from pkg import util\n        return util.helper(1)\n    return inner, util\n")
    fs = findings(repo, {"pkg/util.py": RENAMED, "pkg/app.py": RENAMED_APP},
                  {"pkg/cli.py": code})
    assert kinds(fs) == [("dangling_reference", "pkg.util.helper")]


def test_global_declaration_skips_enclosing_function_locals(repo: Repo) -> None:
    code = ("from pkg import util\n\n\ndef outer():\n    def inner():\n"
            "        global util\n        return util.helper\n    util = 1\n    return inner\n")
    fs = findings(repo, {"pkg/util.py": RENAMED, "pkg/app.py": RENAMED_APP},
                  {"pkg/cli.py": code})
    assert kinds(fs) == [("dangling_reference", "pkg.util.helper")]


def test_attribute_or_item_assignment_is_not_a_definition(repo: Repo) -> None:
    ours = UTIL + "\nimport logging\nlogging.root.level = 1\nTABLE = {}\nTABLE[LIMIT] = 1\n"
    theirs = UTIL + "\nimport logging\nlogging.root.name = 'x'\nTABLE = {}\nTABLE[LIMIT] = 2\n"
    assert findings(repo, {"pkg/util.py": ours}, {"pkg/util.py": theirs}) == []
    # A real second binding of the same name still is one.
    fs = findings(repo, {"pkg/util.py": UTIL + "\nA, *B = 1, 2\n"},
                  {"pkg/util.py": UTIL + "\n(C, [B]) = 1, [3]\n"})
    assert kinds(fs) == [("duplicate_definition", "pkg.util.B")]
