"""Priors: retrieving a patient's earlier study from Orthanc, the node vs DCMTK, side by side.

Orthanc holds one prior study (``--slices`` CT slices of 512x512) of the
patient. Retrievers, interleaved a b c d a b c d … after a warm-up round:

(a) the node (HistoricAbstractInput, C-MOVE to itself, data directory, fsync
    none): from sending today's one-slice study to the start of ``process``
    with today's slice and every prior — C-FIND, C-MOVE, storing, routing;
(b) the same with ``retrieve_mode = "get"`` (C-GET through the node's receive path);
(c) DCMTK ``findscu`` (the same study-level query) then ``movescu`` receiving
    the C-MOVE itself and writing the files (``TCP_NODELAY=1``);
(d) DCMTK ``findscu`` then ``getscu`` writing the files;
(e) the Python floor for (a): ``dimse.find`` then ``dimse.move`` to a bare
    pynetdicom SCP (maximum PDU 0, TCP_NODELAY, its C-STORE handler keeps
    nothing);
(f) the Python floor for (b): ``dimse.find`` then ``dimse.get`` with a
    storage handler that keeps nothing.

Medians (min–max) of the counted rounds; ratios against (c) and, for the
node, against its Python floor.

    python benchmarks/priors.py --runs 5
    python benchmarks/priors.py --quick        # 40 slices, 3 runs: a smoke test
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ingest import free_port

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
sys.path.insert(0, str(HERE.parent / "tests" / "support"))

RETRIEVERS = {
    "a": "node, C-MOVE (HistoricAbstractInput)",
    "b": "node, C-GET (HistoricAbstractInput)",
    "c": "DCMTK findscu + movescu",
    "d": "DCMTK findscu + getscu",
    "e": "dimse find + move into a bare pynetdicom SCP",
    "f": "dimse find + get, handler keeps nothing",
}
FLOOR = {"a": "e", "b": "f"}
PATIENT = "BENCHPRIOR"


def _dcmtk(*arguments: str) -> None:
    result = subprocess.run(arguments, env={**os.environ, "TCP_NODELAY": "1"}, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{arguments[0]} failed: {result.stderr[-2000:]}")


def _node(pacs: Any, port: int, data: Path) -> Any:
    from dicomnode import AbstractInput, AbstractPipeline, NoOutput
    from dicomnode_historic_input import HistoricAbstractInput

    class Today(AbstractInput):
        required_values = {"StudyDate": "20260101"}

    class History(HistoricAbstractInput):
        address = pacs.address
        timeout = 60.0

    class Bench(AbstractPipeline):
        ae_title = "BENCHNODE"
        ip = "127.0.0.1"
        input = {"today": Today, "history": History}
        data_directory = data
        maintenance_thread = False
        log_level = "WARNING"

        def post_init(self) -> None:
            self.done = threading.Event()
            self.priors = 0

        def process(self, input_container: Any) -> Any:
            self.priors = len(input_container.datasets["history"])
            self.done.set()
            return NoOutput()

    Bench.port = port
    return Bench(), History


def measure(slices: int, runs: int) -> dict[str, list[float]]:
    from orthanc import orthanc
    from pydicom import Dataset

    from dicomnode.dicom.synthetic import synthetic_series
    from dicomnode.net import find, get, move, send_datasets

    WORK.mkdir(exist_ok=True)
    times: dict[str, list[float]] = {kind: [] for kind in RETRIEVERS}
    with tempfile.TemporaryDirectory(dir=WORK) as scratch:
        root = Path(scratch)
        node_port, move_port, bare_port = free_port(), free_port(), free_port()
        modalities = {"NODE": ("BENCHNODE", "127.0.0.1", node_port), "MOVESCU": ("MOVESCU", "127.0.0.1", move_port),
                      "BARE": ("BARESCP", "127.0.0.1", bare_port)}
        with orthanc(root, modalities=modalities) as pacs:
            prior = synthetic_series(patient_id=PATIENT, study_date="20250101", slices=slices, rows=512, columns=512)
            pacs.upload_datasets(prior)
            study_uid = str(prior[0].StudyInstanceUID)
            del prior
            node, history = _node(pacs, node_port, root / "data")
            host, port = "127.0.0.1", str(pacs.dicom_port)
            find_command = ["/usr/bin/findscu", "-S", "-aet", "MOVESCU", "-aec", pacs.aet, "-k", "QueryRetrieveLevel=STUDY",
                    "-k", f"PatientID={PATIENT}", "-k", "StudyInstanceUID", "-k", "StudyDate", host, port]
            received = root / "received"

            def by_node(mode: str) -> float:
                history.retrieve_mode = mode
                node.done.clear()
                today = synthetic_series(patient_id=PATIENT, study_date="20260101", slices=1, rows=16, columns=16)
                started = time.perf_counter()
                assert send_datasets(node.address, today).ok
                if not node.done.wait(300):
                    raise RuntimeError("the node's job did not start")
                elapsed = time.perf_counter() - started
                if node.priors != slices:
                    raise RuntimeError(f"the node got {node.priors} priors, expected {slices}")
                node.wait_for_jobs(60)
                return elapsed

            def by_dcmtk(tool: str) -> float:
                shutil.rmtree(received, ignore_errors=True)
                received.mkdir()
                started = time.perf_counter()
                _dcmtk(*find_command)
                if tool == "movescu":
                    _dcmtk("/usr/bin/movescu", "-S", "-aet", "MOVESCU", "-aem", "MOVESCU", "-aec", pacs.aet,
                           "+P", str(move_port), "-od", str(received), "-k", "QueryRetrieveLevel=STUDY",
                           "-k", f"StudyInstanceUID={study_uid}", host, port)
                else:
                    _dcmtk("/usr/bin/getscu", "-S", "-aet", "MOVESCU", "-aec", pacs.aet, "-od", str(received),
                           "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}", host, port)
                elapsed = time.perf_counter() - started
                count = len(list(received.iterdir()))
                if count != slices:
                    raise RuntimeError(f"{tool} wrote {count} files, expected {slices}")
                return elapsed

            def by_pynetdicom(operation: str) -> float:
                query = Dataset()
                query.PatientID, query.StudyInstanceUID, query.StudyDate = PATIENT, "", ""
                target = Dataset()
                target.StudyInstanceUID = study_uid
                started = time.perf_counter()
                find(pacs.address, query, level="STUDY", ae_title="BARESCP")
                if operation == "move":
                    result = move(pacs.address, target, "BARESCP", ae_title="BARESCP")
                else:
                    result = get(pacs.address, target, storage_handler=lambda _ds: 0, ae_title="BARESCP")
                elapsed = time.perf_counter() - started
                if result.completed != slices:
                    raise RuntimeError(f"the bare {operation} completed {result.completed}, expected {slices}")
                return elapsed

            actions = {"a": lambda: by_node("move"), "b": lambda: by_node("get"),
                       "c": lambda: by_dcmtk("movescu"), "d": lambda: by_dcmtk("getscu"),
                       "e": lambda: by_pynetdicom("move"), "f": lambda: by_pynetdicom("get")}
            bare = _bare_scp(bare_port)
            try:
                with node:
                    rounds(actions, runs, times)
            finally:
                bare.shutdown()
    return times


def _bare_scp(port: int) -> Any:
    from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

    from dicomnode.net.transport import NODELAY_HANDLERS

    ae = AE(ae_title="BARESCP")
    ae.maximum_pdu_size = 0
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    handlers = [(evt.EVT_C_STORE, lambda _event: 0x0000), *NODELAY_HANDLERS]
    return ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)


def rounds(actions: dict[str, Any], runs: int, times: dict[str, list[float]]) -> None:
    """Run the actions interleaved, a warm-up round first; append the counted times."""
    for round_number in range(runs + 1):  # round 0 warms up
        for kind, action in actions.items():
            elapsed = action()
            print(f"  round {round_number} {kind}: {elapsed:.2f} s", file=sys.stderr)
            if round_number:
                times[kind].append(elapsed)


def report(times: dict[str, list[float]], slices: int) -> str:
    reference = statistics.median(times["c"])
    lines = [f"Retrieving a prior CT study of {slices} slices of 512x512 from Orthanc "
             f"(median of {len(times['a'])} interleaved runs after a warm-up):", "",
             "| retriever | median s | min–max s | vs movescu | vs its Python floor |", "|---|---|---|---|---|"]
    for kind, label in RETRIEVERS.items():
        values = times[kind]
        median = statistics.median(values)
        floor = f"{median / statistics.median(times[FLOOR[kind]]):.2f}x" if kind in FLOOR else ""
        lines.append(f"| ({kind}) {label} | {median:.2f} | {min(values):.2f}–{max(values):.2f} | "
                     f"{median / reference:.2f}x | {floor} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="40 slices, 3 runs")
    arguments = parser.parse_args()
    slices, runs = (40, 3) if arguments.quick else (arguments.slices, arguments.runs)
    print(report(measure(slices, runs), slices))


if __name__ == "__main__":
    main()
