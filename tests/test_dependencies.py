"""Every third-party package the code imports is declared in pyproject.toml (CI installs only from there).

benchmarks/streams.py imported psutil, which nothing declared: it worked only because ultralytics pulls it.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib

from tests.conftest import ROOT

PACKAGES = ("engines", "pipeline", "trainer", "benchmarks", "research")
INSTALLED = ("engines", "pipeline", "trainer")  # pyproject's [tool.setuptools.packages.find] include
# imported only behind an availability check, for hardware this machine lacks (declared as an extra or documented)
OPTIONAL = {"tensorrt", "pycuda", "openvino", "nncf", "psycopg2", "facenet_pytorch"}


def _imported_top_level(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Top-level module -> a file that imports it, over ``packages`` (folders of the repository)."""
    found: dict[str, str] = {}
    for package in packages:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"]) + [d for extra in project["optional-dependencies"].values() for d in extra]
    return {re.split(r"[<>=!~\[ ;]", s, maxsplit=1)[0].lower().replace("_", "-") for s in specs}


def test_every_third_party_import_is_declared():
    distributions = importlib.metadata.packages_distributions()
    ours = set(PACKAGES) | {"tests"}
    missing = []
    for module, where in sorted(_imported_top_level().items()):
        if module in ours or module in sys.stdlib_module_names or module in OPTIONAL:
            continue
        dists = {d.lower().replace("_", "-") for d in distributions.get(module, [])}
        if not dists & _declared():
            missing.append(f"{module} ({where}; distribution {sorted(dists) or 'not installed'})")
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_the_installed_packages_never_import_the_studies():
    """research/ holds studies that did not ship: it is not installed, and the service and trainer do not need it."""
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    assert sorted(include) == sorted(f"{p}*" for p in INSTALLED)
    where = _imported_top_level(INSTALLED).get("research")
    assert where is None, f"{where} imports research/"
