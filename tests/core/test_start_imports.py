"""What a node imports to start answering: what it needs, and nothing more.

Most of the second a restarted node takes to answer C-ECHO is importing.
A node is started in a fresh interpreter, answers DCMTK ``echoscu``, and
then says which modules it had imported: nothing of the admin endpoint,
the metrics, the toolkit's builders and converters, the plugins' grinders
and outputs, or the libraries behind them, until they are used. The core
needs none of numpy, Pillow, GDCM and requests (pydicom imports each when
present): the node starts without them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import free_port, require_peer
from dcmtk import dcmtk_env, stop_process

pytestmark = pytest.mark.timeout(60)

#: modules a node's start must not import (a node imports them when a feature that needs them is used)
NOT_AT_START = (
    "http.server",
    "prometheus_client",
    "dicomnode.cli",
    "dicomnode.server.admin",
    "dicomnode.server.metrics",
    "dicomnode.server.status_page",
    "dicomnode.dicom.anonymization",
    "dicomnode.dicom.blueprints",
    "dicomnode.dicom.factory",
    "dicomnode.dicom.pdf",
    "dicomnode.dicom.synthetic",
    "dicomnode.testing",
    "highdicom",
    "dask",
    "distributed",
    "dicomweb_client",
    "nibabel",
)

#: what pydicom imports when it is there, and a core-only installation does not have
OPTIONAL_FOR_PYDICOM = ("numpy", "PIL", "gdcm", "requests")

_NODE = """
import importlib.abc, sys

BLOCKED = set(sys.argv[3].split(",")) - {""}

class Missing(importlib.abc.MetaPathFinder):
    # as if not installed: pydicom and everything else see ModuleNotFoundError
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Missing())

from dicomnode import AbstractInput, AbstractPipeline, NoOutput

class Never(AbstractInput):
    def validate(self):
        return False

class StartNode(AbstractPipeline):
    ae_title = "TESTNODE"
    ip = "127.0.0.1"
    port = int(sys.argv[1])
    data_directory = sys.argv[2]
    input = {"images": Never}
    maintenance_thread = False
    log_level = "WARNING"

    def process(self, input_container):
        return NoOutput()

node = StartNode()
node.open(blocking=False)
print("LISTENING", flush=True)
sys.stdin.readline()
imported = sorted(sys.modules)
node.close()
print("IMPORTED", " ".join(imported), flush=True)
"""


def _start_answer_and_list_imports(data: Path, blocked: tuple[str, ...]) -> set[str]:
    """Start a node in a fresh interpreter, require a DCMTK C-ECHO answered; the modules it had imported."""
    echoscu = Path(require_peer("dcmtk")).parent / "echoscu"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMNODE_")}
    node = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_NODE), str(port), str(data), ",".join(blocked)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert node.stdout is not None and node.stdin is not None
        first = node.stdout.readline().decode()
        assert first.strip() == "LISTENING", node.stderr.read().decode() if node.stderr else first
        echo = subprocess.run([str(echoscu), "-aet", "SCANNER", "-aec", "TESTNODE", "-to", "5", "127.0.0.1",
                               str(port)], env=dcmtk_env(), capture_output=True, text=True, timeout=20)
        assert echo.returncode == 0, echo.stdout + echo.stderr
        out, err = node.communicate(b"\n", timeout=30)
    finally:
        stop_process(node)
    lines = [line for line in out.decode().splitlines() if line.startswith("IMPORTED ")]
    assert node.returncode == 0 and lines, err.decode()
    return set(lines[0].split()[1:])


def _plugin_modules_beyond_their_hooks(imported: set[str]) -> list[str]:
    # a plugin's package and its hooks module are what discovery needs; the rest loads when used
    return sorted(name for name in imported if name.startswith("dicomnode_")
                  and name.count(".") and not name.endswith(".hooks"))


def test_a_starting_node_answers_without_importing_what_it_does_not_use_yet(tmp_path: Path) -> None:
    imported = _start_answer_and_list_imports(tmp_path / "data", blocked=())
    assert "pynetdicom" in imported and "dicomnode.server.restore" in imported  # it did start and restore
    assert sorted(imported & set(NOT_AT_START)) == []
    assert _plugin_modules_beyond_their_hooks(imported) == []


def test_a_node_starts_and_answers_without_numpy_pillow_gdcm_and_requests(tmp_path: Path) -> None:
    imported = _start_answer_and_list_imports(tmp_path / "data", blocked=OPTIONAL_FOR_PYDICOM)
    assert sorted(name for name in imported if name.partition(".")[0] in OPTIONAL_FOR_PYDICOM) == []
    assert sorted(imported & set(NOT_AT_START)) == []
