"""DICOMweb: a 300-slice 512x512 CT by STOW-RS against the same CT by C-STORE, both ways, side by side.

One Orthanc (with Debian's DICOMweb plugin, storage uncompressed,
``OverwriteInstances``) is both the destination and the sender:

send — our node's outputs deliver the CT (files) to Orthanc:
  (a) ``DicomOutput`` (C-STORE, one association);
  (b) ``DicomWebOutput`` (STOW-RS, 50 instances per request).

receive — Orthanc delivers the CT to a node (``data_directory``, every
instance stored before it is acknowledged), a fresh node each round:
  (c) Orthanc's C-STORE to the node (``POST /modalities/node/store``);
  (d) Orthanc's DICOMweb client to the node's ``stow`` service
      (``POST /dicom-web/servers/node/stow``; Orthanc's default chunks).

The contenders of a part run interleaved (a b a b …) after a warm-up round;
Orthanc is emptied (send) or the node replaced (receive) outside the timed
part. The figures are medians (with min–max) of the counted rounds, and the
ratios are taken round by round.

    python benchmarks/dicomweb.py --runs 5
    python benchmarks/dicomweb.py --slices 40 --runs 2     # a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ingest import free_port, study, wait_for_port

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
CONTENDERS = {
    "a": "DicomOutput (C-STORE) to Orthanc",
    "b": "DicomWebOutput (STOW-RS) to Orthanc",
    "c": "node receiving Orthanc's C-STORE",
    "d": "node receiving Orthanc's STOW-RS (stow service)",
}
NODE_AE = "BENCHNODE"


class Orthanc:
    """One Orthanc with DICOMweb, knowing the node as the modality and the DICOMweb server ``node``."""

    def __init__(self, work: Path, node_port: int, stow_port: int) -> None:
        self.http_port, self.dicom_port = free_port(), free_port()
        folder = work / "orthanc"
        folder.mkdir(parents=True, exist_ok=True)
        settings = {
            "Name": "dicomweb-bench", "StorageDirectory": str(folder / "storage"),
            "IndexDirectory": str(folder / "storage"), "Plugins": [DICOMWEB_PLUGIN],
            "HttpPort": self.http_port, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "DicomServerEnabled": True, "DicomAet": "ORTHANC", "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": False, "DicomAlwaysAllowStore": True, "DicomCheckModalityHost": False,
            "DicomAssociationCloseDelay": 0, "OverwriteInstances": True, "SaveJobs": False,
            "StorageCompression": False, "OrthancExplorerEnabled": False,
            "DicomModalities": {"node": [NODE_AE, "127.0.0.1", node_port]},
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/",
                         "Servers": {"node": {"Url": f"http://127.0.0.1:{stow_port}/"}}},
        }
        config = folder / "orthanc.json"
        config.write_text(json.dumps(settings, indent=2))
        self.log = open(work / "orthanc.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen([ORTHANC, str(config)], env={**os.environ, "TCP_NODELAY": "1"},
                                        stdout=self.log, stderr=subprocess.STDOUT)
        wait_for_port(self.dicom_port)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.rest("GET", "/system")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @property
    def dicomweb(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/dicom-web"

    def rest(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> Any:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=data, method=method)
        with urllib.request.urlopen(request, timeout=600) as response:
            payload = response.read()
        return json.loads(payload) if payload.strip() else None

    def clear(self) -> None:
        for patient in self.rest("GET", "/patients"):
            self.rest("DELETE", f"/patients/{patient}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)  # its storage is throw-away
            self.process.wait(30)
        self.log.close()


def _receiving_node(node_port: int, stow_port: int, data: Path, slices: int) -> Any:
    """A node that stores every CT slice and waits for more than it will get (no job runs)."""
    from dicomnode import AbstractInput, AbstractPipeline, ListGrinder, NoOutput

    class Everything(AbstractInput):
        required_values = {"Modality": "CT"}
        image_grinder = ListGrinder()

        def validate(self) -> bool:
            return self.images > slices  # never: the benchmark times the receiving only

    class Receiving(AbstractPipeline):
        ae_title = NODE_AE
        ip = "127.0.0.1"
        port = node_port
        input = {"CT": Everything}
        data_directory = data
        maintenance_thread = False
        log_level = "WARNING"
        services = {"stow": {"port": stow_port}}

        def process(self, input_container: Any) -> Any:
            return NoOutput()

    return Receiving()


def measure(files: list[Path], runs: int, log: Callable[[str], None] = print) -> dict[str, list[float]]:
    """Seconds per contender and round (the warm-up round left out)."""
    from dicomnode.net import Address
    from dicomnode_dicom_output import DicomOutput
    from dicomnode_dicomweb import DicomWebOutput

    WORK.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="dicomweb-", dir=WORK))
    node_port, stow_port = free_port(), free_port()
    orthanc = Orthanc(work, node_port, stow_port)
    times: dict[str, list[float]] = {kind: [] for kind in CONTENDERS}
    try:
        address = Address("127.0.0.1", orthanc.dicom_port, "ORTHANC")

        def send_c_store() -> None:
            output = DicomOutput([(address, files)], "BENCH", attempts=1)
            assert output.send() and output.report[0].ok, output.report

        def send_stow() -> None:
            output = DicomWebOutput(orthanc.dicomweb, files, attempts=1)
            assert output.send() and output.report is not None and output.report.ok, output.report

        for round_number in range(runs + 1):
            for kind, sender in (("a", send_c_store), ("b", send_stow)):
                orthanc.clear()
                start = time.perf_counter()
                sender()
                elapsed = time.perf_counter() - start
                assert orthanc.rest("GET", "/statistics")["CountInstances"] == len(files)
                if round_number:
                    times[kind].append(elapsed)
                log(f"    round {round_number} ({kind}) {elapsed:.2f} s")
        orthanc.clear()
        for path in files:
            orthanc.rest("POST", "/instances", raw=path.read_bytes())
        [study_id] = orthanc.rest("GET", "/studies")
        body = {"Resources": [study_id], "Synchronous": True}
        routes = {"c": "/modalities/node/store", "d": "/dicom-web/servers/node/stow"}
        for round_number in range(runs + 1):
            for kind in ("c", "d"):
                data = work / f"node-{kind}-{round_number}"
                node = _receiving_node(node_port, stow_port, data, len(files))
                with node:
                    start = time.perf_counter()
                    orthanc.rest("POST", routes[kind], body)
                    elapsed = time.perf_counter() - start
                    stored = len(node.tree[next(iter(node.tree.keys()))].inputs["CT"].datasets)
                assert stored == len(files), f"({kind}) the node holds {stored} of {len(files)} instances"
                shutil.rmtree(data, ignore_errors=True)
                if round_number:
                    times[kind].append(elapsed)
                log(f"    round {round_number} ({kind}) {elapsed:.2f} s")
    finally:
        orthanc.stop()
        shutil.rmtree(work, ignore_errors=True)
    return times


def ratios(times: dict[str, list[float]]) -> dict[str, list[float]]:
    """STOW-RS time / C-STORE time, round by round: ``send`` (b/a) and ``receive`` (d/c)."""
    return {"send": [b / a for a, b in zip(times["a"], times["b"])],
            "receive": [d / c for c, d in zip(times["c"], times["d"])]}


def report(times: dict[str, list[float]], slices: int) -> str:
    """The scenario's table (markdown)."""
    lines = [f"{slices}-slice 512x512 CT (files), Orthanc {_orthanc_version()} with its DICOMweb plugin, "
             "the node with a data_directory:", "",
             "| contender | median (s) | min–max (s) | STOW-RS time / C-STORE time, round by round |",
             "|---|---|---|---|"]
    by_round = ratios(times)
    for kind, label in CONTENDERS.items():
        values = times[kind]
        cell = ""
        if kind in ("b", "d"):
            part = by_round["send" if kind == "b" else "receive"]
            cell = f"{statistics.median(part):.2f}x ({min(part):.2f}–{max(part):.2f})"
        lines.append(f"| ({kind}) {label} | {statistics.median(values):.2f} | {min(values):.2f}–{max(values):.2f} "
                     f"| {cell} |")
    return "\n".join(lines)


def _orthanc_version() -> str:
    try:
        done = subprocess.run([ORTHANC, "--version"], capture_output=True, text=True, timeout=30)
        return done.stdout.split()[1] if done.stdout.split()[1:] else "?"
    except (OSError, subprocess.SubprocessError, IndexError):
        return "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    files = study(args.slices)
    times = measure(files, args.runs, log=lambda text: print(text, file=sys.stderr))
    print(report(times, len(files)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
