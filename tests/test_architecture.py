"""The layering stays true (docs/architecture.md).

- The core's packages import only downwards: cli and testing > server >
  plugins > extension > net > dicom > errors (an import-linter contract in
  the root ``pyproject.toml``, checked here with import-linter itself).
- A plugin imports only public surfaces: another plugin's package (what its
  ``__init__`` exports), if declared as a dependency, and the core's surface
  for plugins — never the server, nor a private module.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
#: the core's surface for plugins: these modules, and every module of the packages ending in ".*"
CORE_SURFACE = ("dicomnode", "dicomnode.errors", "dicomnode.extension.*", "dicomnode.dicom.*", "dicomnode.net",
                "dicomnode.plugins")
#: every plugin of the repository (and the example third-party plugin of the tests)
PLUGIN_SOURCES = {folder.name: folder / "src" for folder in sorted((ROOT / "plugins").iterdir())
                  if (folder / "pyproject.toml").is_file()}
PLUGIN_SOURCES["example"] = ROOT / "tests" / "example-plugin" / "src"
PLUGINS = sorted(PLUGIN_SOURCES)


def _on_surface(module: str) -> bool:
    for surface in CORE_SURFACE:
        if surface.endswith(".*"):
            package = surface[:-2]
            if module == package or module.startswith(package + "."):
                return True
        elif module == surface:
            return True
    return False


def test_the_core_imports_only_down_its_layers() -> None:
    program = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert program is not None, "import-linter is a test requirement: pip install import-linter"
    # --config, not a positional path: the import-linter releases that still support Python 3.10 take only that
    done = subprocess.run([program, "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 kept, 0 broken" in done.stdout


def _imports(source: Path) -> list[tuple[str, int]]:
    found = []
    for node in ast.walk(ast.parse(source.read_text(), str(source))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, node.lineno))
    return found


def _package_and_dependencies(plugin: str) -> tuple[str, set[str]]:
    project = tomllib.loads((PLUGIN_SOURCES[plugin].parent / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].strip().lower().replace("-", "_")
             for requirement in project["dependencies"]}
    return project["name"].replace("-", "_"), names


@pytest.mark.parametrize("plugin", PLUGINS)
def test_a_plugin_imports_other_plugins_only_by_their_package_and_only_if_it_depends_on_them(plugin: str) -> None:
    package, dependencies = _package_and_dependencies(plugin)
    wrong = []
    for source in sorted(PLUGIN_SOURCES[plugin].rglob("*.py")):
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
    for source in sorted(PLUGIN_SOURCES[plugin].rglob("*.py")):
        for module, line in _imports(source):
            if module.split(".")[0] == "dicomnode" and not _on_surface(module):
                wrong.append(f"{source.relative_to(ROOT)}:{line} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_the_core_never_imports_a_plugin_by_name() -> None:
    wrong = []
    for source in sorted((ROOT / "core" / "src" / "dicomnode").rglob("*.py")):
        for module, line in _imports(source):
            if module.split(".")[0].startswith("dicomnode_"):
                wrong.append(f"{source.relative_to(ROOT)}:{line} imports {module} (ask the registry instead)")
    assert not wrong, "\n".join(wrong)
