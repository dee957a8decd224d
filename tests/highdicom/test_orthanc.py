"""The results delivered with C-STORE to a real Orthanc, which stores them; a re-run replaces, not duplicates.

One Orthanc for the module. The SEG, the measurement report and the
secondary captures of one job go out with ``send_datasets``; Orthanc's REST
API says what it holds. The same job run again gives the same SOPInstanceUIDs,
so Orthanc still holds one copy of each.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from conftest import require_peer
from orthanc import OrthancServer, orthanc
from pydicom import Dataset
from result_checks import blob_mask, source_and_volume

from dicomnode.net import send_datasets
from dicomnode_highdicom import (
    Measurement,
    MeasurementReportFactory,
    SecondaryCaptureFactory,
    SegFactory,
)

pytestmark = pytest.mark.plugin("highdicom")

NAME = {"algorithm_name": "bone-threshold", "algorithm_version": "1.0"}


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    require_peer("orthanc")
    with orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


def results(case: str) -> tuple[list[Dataset], list[Dataset]]:
    sources, volume = source_and_volume(case)
    mask = attrs.evolve(volume, array=blob_mask(volume.array.shape))
    seg = SegFactory(**NAME).build(mask, sources, segments=["bone"])
    report = MeasurementReportFactory(**NAME).build(seg, sources,
                                                    measurements=[Measurement(1, "volume", 3.5, "ml")])
    captures = SecondaryCaptureFactory(**NAME).build(mask, sources, segments=["bone"])
    return sources, [seg, report, *captures]


@pytest.mark.parametrize("case", ["axial-ct", "sagittal-mr"])
def test_orthanc_stores_the_seg_the_report_and_the_captures(pacs: OrthancServer, case: str) -> None:
    pacs.clear()
    sources, objects = results(case)
    assert send_datasets(pacs.address, sources, ae_title="SCANNER").ok
    result = send_datasets(pacs.address, objects, ae_title="DICOMNODE")
    assert result.ok, result
    stored = {item["MainDicomTags"]["SOPInstanceUID"]: item for item in pacs.rest("GET", "/instances?expand")}
    assert {str(ds.SOPInstanceUID) for ds in objects} <= set(stored)
    modalities = {pacs.tags(stored[str(ds.SOPInstanceUID)]["ID"])["Modality"] for ds in objects}
    assert modalities == {"SEG", "SR", "OT"}
    seg_tags = pacs.tags(stored[str(objects[0].SOPInstanceUID)]["ID"])
    assert seg_tags["SOPClassUID"] == "1.2.840.10008.5.1.4.1.1.66.4"
    assert seg_tags["StudyInstanceUID"] == sources[0].StudyInstanceUID  # filed with the images' study


def test_the_same_job_again_replaces_its_results(pacs: OrthancServer, tmp_path: Path) -> None:
    pacs.clear()
    sources, first = results("oblique-ct")
    assert send_datasets(pacs.address, [*sources, *first], ae_title="DICOMNODE").ok
    held = pacs.count_instances()
    _, second = results("oblique-ct")
    assert [ds.SOPInstanceUID for ds in second] == [ds.SOPInstanceUID for ds in first]
    assert send_datasets(pacs.address, second, ae_title="DICOMNODE").ok
    assert pacs.count_instances() == held == len(sources) + len(first)
