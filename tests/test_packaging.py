"""What a fresh install relies on: declared dependencies, one version, typed package,
the license, pinned lower bounds, and every document the code cites.

These read the installed metadata (importlib.metadata), so they check what pip actually
installed from setup.py, not what a file in the checkout says.
"""
from __future__ import annotations

import ast
import importlib.metadata as md
import importlib.resources
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import privit

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = ("parties", "protocols", "models", "launch")


def _requirements(extra: str | None = None) -> dict[str, Requirement]:
    """Requirements of the installed privit: the runtime ones, or one extra's."""
    out = {}
    for line in md.requires("privit") or []:
        req = Requirement(line)
        in_extra = req.marker is not None and "extra" in str(req.marker)
        if extra is None and not in_extra:
            out[_norm(req.name)] = req
        elif extra is not None and in_extra and req.marker is not None and req.marker.evaluate(
                {"extra": extra}):
            out[_norm(req.name)] = req
    return out


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _third_party_imports(folders: tuple[str, ...]) -> dict[str, str]:
    """Top-level module -> one file that imports it, for every non-stdlib, non-privit import."""
    found: dict[str, str] = {}
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top in sys.stdlib_module_names or top == "privit":
                        continue
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def _distributions_of(module: str) -> set[str]:
    return {_norm(d) for d in md.packages_distributions().get(module, [])}


def test_every_import_of_the_package_is_a_declared_dependency() -> None:
    declared = set(_requirements())
    missing = []
    for module, where in _third_party_imports(PACKAGE_DIRS).items():
        dists = _distributions_of(module)
        if not dists & declared:
            missing.append(f"{module} (imported in {where}; provided by {sorted(dists) or '?'})")
    assert not missing, f"imports not declared in setup.py's install_requires: {missing}"


def test_every_import_of_the_tests_is_declared() -> None:
    declared = set(_requirements()) | set(_requirements("test"))
    local = {p.stem for p in (ROOT / "tests").glob("*.py")}
    missing = []
    for module, where in _third_party_imports(("tests",)).items():
        if module in local:
            continue
        dists = _distributions_of(module)
        if not dists & declared:
            missing.append(f"{module} (imported in {where})")
    assert not missing, f"test imports not declared in the 'test' extra: {missing}"


def test_lowest_constraints_pin_every_lower_bound() -> None:
    """.ci/run's lowest pass installs exactly the lower bounds of setup.py."""
    pinned = {}
    for line in (ROOT / ".ci" / "lowest-constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pinned[_norm(name)] = version
    for name, req in {**_requirements(), **_requirements("test")}.items():
        lower = [s.version for s in req.specifier if s.operator == ">="]
        assert lower, f"{name} has no lower bound in setup.py"
        assert name in pinned, f"{name} is missing from .ci/lowest-constraints.txt"
        assert Version(pinned[name]) == Version(lower[0]), (
            f"{name}: setup.py says >= {lower[0]}, lowest-constraints pins {pinned[name]}")


def test_one_version_everywhere() -> None:
    assert privit.__version__ == md.version("privit")
    out = subprocess.run([sys.executable, "-m", "privit.launch.cli", "--version"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and privit.__version__ in out.stdout


def test_typed_licensed_and_described() -> None:
    assert importlib.resources.files("privit").joinpath("py.typed").is_file()
    meta = md.metadata("privit")
    assert meta["License"] == "MIT" or "MIT" in (meta.get("License-Expression") or "")
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert "Quick start" in (meta.get_payload() or meta.get("Description") or "")  # type: ignore[attr-defined]
    assert any(c.startswith("Programming Language :: Python :: 3") for c in meta.get_all("Classifier") or [])


def _cited_documents() -> dict[str, str]:
    """Every `*.md` path that the code, the tests' docstrings or the docs cite."""
    cited: dict[str, str] = {}
    sources = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]
    for folder in PACKAGE_DIRS:
        sources += sorted((ROOT / folder).rglob("*.py"))
    for path in sources:
        for match in re.finditer(r"(?<![\w/.])((?:docs/)?[A-Za-z_]+\.md)\b", path.read_text()):
            cited.setdefault(match.group(1), str(path.relative_to(ROOT)))
    return cited


# Names of files that commands write (not documents of this repository).
WRITTEN_BY_COMMANDS = {"results.md", "accuracy.md"}


def test_every_cited_document_exists() -> None:
    missing = []
    for name, where in _cited_documents().items():
        if name in WRITTEN_BY_COMMANDS:
            continue
        candidates = [ROOT / name, ROOT / "docs" / name]
        if not any(p.is_file() for p in candidates):
            missing.append(f"{name} (cited in {where})")
    assert not missing, f"documents cited but absent: {missing}"


@pytest.mark.parametrize("name", ["README.md", "LICENSE", "BENCHMARKS.md", "docs/design.md"])
def test_top_documents_exist(name: str) -> None:
    assert (ROOT / name).is_file()


def _module_graph() -> dict[str, set[str]]:
    """privit module -> the privit modules it imports, function-local imports included
    (a local import does not remove a cycle, it only hides it)."""
    modules: dict[str, Path] = {}
    for folder in PACKAGE_DIRS:
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(("privit", *parts))
            modules[name.removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules
                           else node.module for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def test_no_import_cycles() -> None:
    graph = _module_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module)
            assert cycle is None, "import cycle: " + " -> ".join(cycle)
