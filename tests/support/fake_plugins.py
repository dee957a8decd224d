"""Installable-looking plugin distributions made on the fly, for discovery tests.

A folder on ``PYTHONPATH`` holding ``NAME-VERSION.dist-info`` (METADATA and
entry_points.txt) and a module is a real distribution to
``importlib.metadata``: discovery finds it exactly as it finds one that pip
installed, without touching the test environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path


def make_plugin(
    site: Path,
    distribution: str,
    module: str,
    source: str,
    *,
    entry_name: str | None = None,
    version: str = "1.0",
    requires: tuple[str, ...] = ("dicomnode>=0.1,<1",),
) -> Path:
    """Write a distribution with one plugin module into ``site``; return ``site``."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{distribution.replace('-', '_')}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    lines = ["Metadata-Version: 2.1", f"Name: {distribution}", f"Version: {version}"]
    lines += [f"Requires-Dist: {requirement}" for requirement in requires]
    (info / "METADATA").write_text("\n".join(lines) + "\n")
    entry = entry_name or distribution.removeprefix("dicomnode-")
    (info / "entry_points.txt").write_text(f"[dicomnode.plugins]\n{entry} = {module}\n")
    return site


def run_cli(*args: str, site: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``python -m dicomnode ARGS`` with ``site`` on the path."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMNODE_")}
    if site is not None:
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), full_env.get("PYTHONPATH", "")]))
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "dicomnode", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout)


def run_python(code: str, *, site: Path | None = None, env: dict[str, str] | None = None,
               timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a snippet in a fresh interpreter with ``site`` on the path."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMNODE_")}
    if site is not None:
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), full_env.get("PYTHONPATH", "")]))
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=full_env, timeout=timeout)
