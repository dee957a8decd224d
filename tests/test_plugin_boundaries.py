"""Plugins import only public surfaces: another plugin's package (what its ``__init__`` exports), if
declared as a dependency, and the core's extension surface and toolkit — never private modules.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent
#: the core's surface for plugins
CORE_SURFACE = ("dicomnode", "dicomnode.errors", "dicomnode.extension", "dicomnode.dicom", "dicomnode.net",
                "dicomnode.plugins")
#: plugins held to the rule here
PLUGINS = ["numpy", "nifti"]


def _imports(source: Path) -> list[tuple[str, int]]:
    found = []
    for node in ast.walk(ast.parse(source.read_text(), str(source))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, node.lineno))
    return found


def _package_and_dependencies(plugin: str) -> tuple[str, set[str]]:
    project = tomllib.loads((ROOT / "plugins" / plugin / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].strip().lower().replace("-", "_")
             for requirement in project["dependencies"]}
    return project["name"].replace("-", "_"), names


@pytest.mark.parametrize("plugin", PLUGINS)
def test_a_plugin_imports_other_plugins_only_by_their_package_and_only_if_it_depends_on_them(plugin: str) -> None:
    package, dependencies = _package_and_dependencies(plugin)
    wrong = []
    for source in sorted((ROOT / "plugins" / plugin / "src").rglob("*.py")):
        for module, line in _imports(source):
            top = module.split(".")[0]
            if not top.startswith("dicomnode_") or top == package:
                continue
            if module != top or top not in dependencies:
                wrong.append(f"{source.relative_to(ROOT)}:{line} imports {module}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("plugin", PLUGINS)
def test_a_plugin_imports_only_the_cores_surface(plugin: str) -> None:
    wrong = []
    for source in sorted((ROOT / "plugins" / plugin / "src").rglob("*.py")):
        for module, line in _imports(source):
            if module.split(".")[0] != "dicomnode":
                continue
            if not any(module == surface or module.startswith(surface + ".") for surface in CORE_SURFACE[1:]) \
                    and module != "dicomnode":
                wrong.append(f"{source.relative_to(ROOT)}:{line} imports {module}")
    assert not wrong, "\n".join(wrong)
