"""The layers hold: read every module's imports and check the rules of CONTRIBUTING.md.

- a service imports neither Flask (nor werkzeug) nor the views (`appliance.api`,
  `appliance.web`);
- a driver imports neither the models nor the services (nor Flask);
- the JSON API and the dashboard do not import each other;
- no module uses a private name (`_name`) of another module, by import or by attribute;
- an import inside a function says why, in a comment on its line or just above it (a
  run of such imports shares one comment).

The checks read the source (ast), so they see function-level imports too. The tests of
the test plant each kind of violation in a copy of a module and expect it found.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "appliance"

FORBIDDEN = {
    "appliance.services": ("flask", "werkzeug", "htmx_flask", "appliance.api", "appliance.web"),
    "appliance.drivers": ("flask", "werkzeug", "appliance.models", "appliance.services",
                          "appliance.api", "appliance.web"),
    "appliance.api": ("appliance.web",),
    "appliance.web": ("appliance.api",),
}


def module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _imported(node: ast.Import | ast.ImportFrom, module: str) -> list[str]:
    """The absolute names an import statement brings in (modules and module.attr)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        parent = module.split(".")[: -node.level] if node.level else []
        base = ".".join([*parent, base] if base else parent)
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def _function_level(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    top = {id(node) for node in tree.body}
    inside = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in top:
            if isinstance(node, ast.ImportFrom) and node.module == "__future__":
                continue
            inside.append(node)
    # imports under `if TYPE_CHECKING:` at the top are not run: they need no reason
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in ast.walk(node):
                if child in inside:
                    inside.remove(child)
    return inside


def violations(package: Path = PACKAGE) -> list[str]:  # noqa: PLR0912 - one pass, many rules
    found = []
    modules = {module_name(path, package): path for path in package.rglob("*.py")}
    for module, path in sorted(modules.items()):
        source = path.read_text()
        lines = source.splitlines()
        tree = ast.parse(source)
        where = f"{path.relative_to(package.parent)}"
        bound: dict[str, str] = {}  # local name -> appliance module it is bound to
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            names = _imported(node, module)
            for layer, banned in FORBIDDEN.items():
                if _within(module, layer):
                    for name in names:
                        for bad in banned:
                            if _within(name, bad):
                                found.append(f"{where}:{node.lineno}: {layer} must not import "
                                             f"{bad} ({name})")
                                break
            if isinstance(node, ast.ImportFrom):
                source_module = names[0]
                for alias in node.names:
                    if (alias.name.startswith("_") and not alias.name.startswith("__")
                            and source_module != module):
                        found.append(f"{where}:{node.lineno}: imports the private name "
                                     f"{alias.name} of {source_module}")
                    full = f"{source_module}.{alias.name}"
                    if full in modules:
                        bound[alias.asname or alias.name] = full
            for alias in node.names if isinstance(node, ast.Import) else []:
                if any(part.startswith("_") and not part.startswith("__")
                       for part in alias.name.split(".")):
                    found.append(f"{where}:{node.lineno}: imports the private module "
                                 f"{alias.name}")
            if isinstance(node, ast.ImportFrom):
                private = [part for part in names[0].split(".")
                           if part.startswith("_") and not part.startswith("__")]
                if private:
                    found.append(f"{where}:{node.lineno}: imports from the private module "
                                 f"{names[0]}")
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in bound and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                found.append(f"{where}:{node.lineno}: uses the private name {node.attr} of "
                             f"{bound[node.value.id]}")
        previous_import_line = None
        for node in sorted(_function_level(tree), key=lambda n: n.lineno):
            line = lines[node.lineno - 1]
            above = lines[node.lineno - 2].strip() if node.lineno > 1 else ""
            follows_one = previous_import_line is not None and all(
                not between.strip() for between in lines[previous_import_line:node.lineno - 1])
            explained = "#" in line or above.startswith("#") or follows_one
            if not explained:
                found.append(f"{where}:{node.lineno}: an import inside a function needs a "
                             "comment saying why it is not at the top")
            previous_import_line = node.end_lineno
    return found


def test_the_layers_hold():
    assert violations() == []


@pytest.fixture
def copy_of_the_package(tmp_path: Path) -> Path:
    target = tmp_path / "appliance"
    shutil.copytree(PACKAGE, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def _plant(package: Path, relative: str, code: str) -> None:
    path = package / relative
    path.write_text(path.read_text() + "\n" + code + "\n")


@pytest.mark.parametrize(("relative", "code", "expected"), [
    ("services/money.py", "import flask", "appliance.services must not import flask"),
    ("services/billing/ledger.py", "from appliance.web import session",
     "appliance.services must not import appliance.web"),
    ("services/projects.py", "def f():\n    # needs a reason\n    from appliance.api import schema",
     "appliance.services must not import appliance.api"),
    ("drivers/fake.py", "from appliance.models import Instance",
     "appliance.drivers must not import appliance.models"),
    ("drivers/docker/names.py", "from appliance.services import clock",
     "appliance.drivers must not import appliance.services"),
    ("web/pages.py", "from appliance.api import schema",
     "appliance.web must not import appliance.api"),
    ("api/system.py", "from appliance.web import pages",
     "appliance.api must not import appliance.web"),
    ("services/audit.py", "from appliance.services.clock import _frozen",
     "imports the private name _frozen"),
    ("services/audit.py", "def f():\n    return clock._frozen", "uses the private name _frozen"),
    ("services/ids.py", "def f():\n    from appliance.services import clock\n    return clock",
     "an import inside a function needs a comment"),
])
def test_the_check_finds_a_planted_violation(copy_of_the_package, relative, code, expected):
    assert violations(copy_of_the_package) == []
    _plant(copy_of_the_package, relative, code)
    found = violations(copy_of_the_package)
    assert any(expected in line for line in found), found
