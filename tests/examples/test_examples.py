"""Every example in examples/ runs: a real node, real images from DCMTK storescu, the promised result.

Each example is loaded from its file as a user would run it; the test only
points its ports, folders and expected image counts at temporary places.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import shutil
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import free_port, require_peer
from dcmtk import storescp, storescu
from node import wait_until
from pydicom import dcmread

from dicomnode.dicom.synthetic import synthetic_series, write_series
from dicomnode.net import Address

EXAMPLES = Path(__file__).resolve().parent.parent.parent / "examples"


@pytest.fixture(autouse=True)
def _dcmtk() -> None:
    require_peer("dcmtk")


def _load(name: str) -> ModuleType:
    path = EXAMPLES / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _series(folder: Path, patient: str, slices: int, **options: Any) -> list[Path]:
    return write_series(synthetic_series(patient_id=patient, slices=slices, rows=32, columns=32, **options), folder)


def _send(port: int, called: str, *paths: Path) -> None:
    result = storescu(port, list(paths), called_aet=called)
    assert result.returncode == 0, result.stdout + result.stderr


def _node_options(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {"port": 0, "ip": "127.0.0.1", "data_directory": tmp_path / "data", "maintenance_thread": False,
            "log_level": "WARNING", **extra}


@pytest.mark.plugin("file-output")
def test_store_to_folder_stores_each_series_once_it_is_stable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    example = _load("store_to_folder")
    monkeypatch.setattr(example.StoreToFolder, "output_directory", str(tmp_path / "stored"))
    sent = _series(tmp_path / "in", "STORE1", 5)
    with example.StoreToFolder(**_node_options(tmp_path, stable_time=0.5)) as node:
        _send(node.port, "STORE", tmp_path / "in")
        assert wait_until(lambda: node.jobs_succeeded == 1, timeout=30)
    stored = sorted((tmp_path / "stored").rglob("*.dcm"))
    assert sorted(p.name for p in stored) == sorted(p.name for p in sent)
    assert all(p.relative_to(tmp_path / "stored").parts[0] == "STORE1" for p in stored)
    assert not list((tmp_path / "data").rglob("*.dcm")), "the node keeps no copy once the series is stored"


@pytest.mark.plugin("numpy", "dicom-output")
def test_plus_one_sends_the_input_plus_one_to_the_pacs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from dicomnode_numpy import NumpyGrinder

    example = _load("plus_one")
    monkeypatch.setattr(example.CT, "slices", 8)
    sent = _series(tmp_path / "in", "PLUS1", 8)
    pacs_port = free_port()
    with storescp(tmp_path / "pacs", pacs_port):
        endpoints = {"PACS": Address("127.0.0.1", pacs_port, "STORESCP")}
        with example.PlusOne(**_node_options(tmp_path, known_endpoints=endpoints)) as node:
            _send(node.port, "PLUSONE", tmp_path / "in")
            assert wait_until(lambda: len(list((tmp_path / "pacs").iterdir())) == 8, timeout=60)
            assert wait_until(lambda: node.jobs_succeeded == 1)
    received = [dcmread(p) for p in (tmp_path / "pacs").iterdir()]
    assert {ds.SeriesDescription for ds in received} == {"plus one"}
    before = NumpyGrinder()([dcmread(p) for p in sent]).array.astype(np.float64)
    after = NumpyGrinder()(received).array.astype(np.float64)
    assert np.allclose(after, before + 1)


@pytest.mark.plugin("numpy", "highdicom", "dicom-output")
def test_bone_seg_sends_a_seg_and_a_report_that_reference_the_images(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    example = _load("bone_seg")
    monkeypatch.setattr(example.CT, "slices", 8)
    sent = [dcmread(p) for p in _series(tmp_path / "in", "BONE1", 8)]
    pacs_port = free_port()
    with storescp(tmp_path / "pacs", pacs_port):
        endpoints = {"PACS": Address("127.0.0.1", pacs_port, "STORESCP")}
        with example.BoneSeg(**_node_options(tmp_path, known_endpoints=endpoints)) as node:
            _send(node.port, "BONESEG", tmp_path / "in")
            assert wait_until(lambda: len(list((tmp_path / "pacs").iterdir())) == 2, timeout=60)
            assert wait_until(lambda: node.jobs_succeeded == 1)
    received = {ds.Modality: ds for ds in (dcmread(p) for p in (tmp_path / "pacs").iterdir())}
    seg, report = received["SEG"], received["SR"]
    images = {str(ds.SOPInstanceUID) for ds in sent}
    referenced = {str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
                  for item in seg.PerFrameFunctionalGroupsSequence}
    assert referenced and referenced <= images
    assert seg.SegmentSequence[0].SegmentLabel == "bone"
    evidence = {str(item.ReferencedSOPInstanceUID)
                for study in report.CurrentRequestedProcedureEvidenceSequence
                for series in study.ReferencedSeriesSequence for item in series.ReferencedSOPSequence}
    assert evidence == images | {str(seg.SOPInstanceUID)}


@pytest.mark.plugin("dicom-output")
def test_the_anonymising_node_forwards_pseudonymised_studies_and_keeps_the_mapping(
        tmp_path: Path) -> None:
    example = _load("anonymising_node")
    sent = _series(tmp_path / "in", "REAL-PATIENT-7", 4, patient_name="Doe^Jane")
    research_port = free_port()
    with storescp(tmp_path / "research", research_port):
        endpoints = {"RESEARCH": Address("127.0.0.1", research_port, "STORESCP")}
        with example.Anonymiser(**_node_options(tmp_path, known_endpoints=endpoints, stable_time=0.5)) as node:
            _send(node.port, "ANONYMISER", tmp_path / "in")
            assert wait_until(lambda: len(list((tmp_path / "research").iterdir())) == 4, timeout=60)
            assert wait_until(lambda: node.jobs_succeeded == 1)
    received = [dcmread(p) for p in (tmp_path / "research").iterdir()]
    originals = {str(dcmread(p).SOPInstanceUID) for p in sent}
    assert {ds.PatientID for ds in received} == {"STUDY0001"}
    assert all(str(ds.PatientName) != "Doe^Jane" and ds.PatientIdentityRemoved == "YES" for ds in received)
    assert not originals & {str(ds.SOPInstanceUID) for ds in received}
    mapping = json.loads((tmp_path / "data" / "mapping.json").read_text(encoding="utf-8"))
    assert "REAL-PATIENT-7" in json.dumps(mapping)


def test_the_queued_node_runs_one_job_at_a_time_in_arrival_order(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    example = _load("queued_node")
    monkeypatch.setattr(example.CT, "slices", 4)
    monkeypatch.setattr(example.DensityNode, "report_directory", str(tmp_path / "reports"))
    patients = ["Q1", "Q2", "Q3"]
    for patient in patients:
        _series(tmp_path / patient, patient, 4)
    with example.DensityNode(**_node_options(tmp_path)) as node:
        senders = [threading.Thread(target=_send, args=(node.port, "DENSITY", tmp_path / p)) for p in patients]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        assert wait_until(lambda: node.jobs_succeeded == 3, timeout=60)
    reports = [json.loads((tmp_path / "reports" / f"{p}.json").read_text(encoding="utf-8")) for p in patients]
    assert all(r["images"] == 4 and 0 < r["dense_fraction"] < 1 for r in reports)
    intervals = sorted((r["started"], r["finished"]) for r in reports)
    assert all(earlier[1] <= later[0] for earlier, later in itertools.pairwise(intervals)), intervals


@pytest.mark.plugin("file-output")
def test_the_toml_pipeline_delivers_the_first_series_to_its_folder(tmp_path: Path) -> None:
    from dicomnode.server.toml_config import load_pipeline

    for name in ("pipeline.toml", "toml_store.py"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    sent = _series(tmp_path / "in", "TOML1", 20)
    pipeline = load_pipeline(tmp_path / "pipeline.toml")
    with pipeline(port=0, ip="127.0.0.1", maintenance_thread=False) as node:
        _send(node.port, "TOMLSTORE", tmp_path / "in")
        assert wait_until(lambda: node.jobs_succeeded == 1, timeout=60)
    stored = sorted((tmp_path / "toml-store-results").rglob("*.dcm"))
    assert sorted(p.name for p in stored) == sorted(p.name for p in sent)


def test_every_example_is_exercised_here() -> None:
    tested = {"store_to_folder", "plus_one", "bone_seg", "anonymising_node", "queued_node", "toml_store"}
    assert {p.stem for p in EXAMPLES.glob("*.py")} == tested
    assert [p.name for p in EXAMPLES.glob("*.toml")] == ["pipeline.toml"]
