"""C-STORE, C-FIND, C-MOVE and C-GET against a real Orthanc PACS (started by the test peer helper)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port, require_peer
from dcmtk import storescp
from orthanc import OrthancServer, orthanc
from pydicom import Dataset, dcmread

from dicomnode.dicom.synthetic import synthetic_series
from dicomnode.errors import AssociationError
from dicomnode.net import Address, QueryLevel, echo, find, get, move, send_datasets

SLICES = 4


@pytest.fixture(scope="module")
def study() -> list[Dataset]:
    """Two series of one patient: a CT of SLICES slices and an MR of 2."""
    ct = synthetic_series(slices=SLICES, rows=16, columns=16, patient_id="ORTH001")
    mr = synthetic_series(slices=2, rows=16, columns=16, modality="MR", patient_id="ORTH001",
                          study_uid=ct[0].StudyInstanceUID, series_number=2)
    return ct + mr


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory, study: list[Dataset]) -> Iterator[OrthancServer]:
    """One Orthanc for the module, holding ``study`` (uploaded through REST)."""
    require_peer("orthanc")
    with orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        server.upload_datasets(study)
        yield server


def _query(**keys: str) -> Dataset:
    query = Dataset()
    for keyword, value in keys.items():
        setattr(query, keyword, value)
    return query


# -- the peer helper itself ----------------------------------------------------------------------


def test_orthanc_helper_reports_uploads_and_their_tags(pacs: OrthancServer, study: list[Dataset]) -> None:
    assert pacs.count_instances() == len(study)
    assert pacs.sop_instance_uids() == {ds.SOPInstanceUID for ds in study}
    [found] = [i for i in pacs.instances() if pacs.tags(i)["SOPInstanceUID"] == study[0].SOPInstanceUID]
    assert pacs.tags(found)["PatientID"] == "ORTH001"


# -- C-ECHO / C-STORE ------------------------------------------------------------------------------


def test_send_datasets_to_orthanc_stores_every_instance(tmp_path: Path) -> None:
    require_peer("orthanc")
    series = synthetic_series(slices=3, rows=16, columns=16)
    with orthanc(tmp_path) as server:
        assert echo(server.address) == 0x0000
        result = send_datasets(server.address, series)
        assert result.ok, result
        assert server.sop_instance_uids() == {ds.SOPInstanceUID for ds in series}


def test_orthanc_checking_the_called_ae_title_rejects_a_wrong_one(tmp_path: Path) -> None:
    require_peer("orthanc")
    with orthanc(tmp_path, config={"DicomCheckCalledAet": True}) as server:
        wrong = Address(server.host, server.dicom_port, "NOT-ORTHANC")
        with pytest.raises(AssociationError, match="Called AE title not recognised"):
            echo(wrong)
        assert echo(server.address) == 0x0000


def test_orthanc_refusing_unknown_calling_aes_stops_after_two_fruitless_associations(tmp_path: Path) -> None:
    require_peer("orthanc")
    series = synthetic_series(slices=4, rows=16, columns=16)
    config = {"DicomAlwaysAllowStore": False, "DicomAlwaysAllowEcho": False}
    with orthanc(tmp_path, modalities={"NODE": ("KNOWNNODE", "127.0.0.1", 104)}, config=config) as server:
        refused = send_datasets(server.address, series, ae_title="STRANGER")
        assert refused.accepted == () and not refused.ok
        assert "aborted the association" in (refused.error or "")
        assert len(refused.failed) == 2 and len(refused.not_sent) == 2
        assert server.count_instances() == 0
        allowed = send_datasets(server.address, series, ae_title="KNOWNNODE")
        assert allowed.ok, allowed
        assert server.count_instances() == 4


# -- C-FIND ----------------------------------------------------------------------------------------


def test_find_at_study_level_returns_the_study(pacs: OrthancServer, study: list[Dataset]) -> None:
    matches = find(pacs.address, _query(PatientID="ORTH001", StudyInstanceUID=""), level=QueryLevel.STUDY)
    assert [m.StudyInstanceUID for m in matches] == [study[0].StudyInstanceUID]


def test_find_at_series_level_returns_each_series(pacs: OrthancServer, study: list[Dataset]) -> None:
    query = _query(StudyInstanceUID=study[0].StudyInstanceUID, SeriesInstanceUID="", Modality="")
    matches = find(pacs.address, query, level="SERIES")
    assert sorted(m.Modality for m in matches) == ["CT", "MR"]


def test_find_at_image_level_returns_every_instance_of_a_series(pacs: OrthancServer, study: list[Dataset]) -> None:
    ct = study[:SLICES]
    query = _query(StudyInstanceUID=ct[0].StudyInstanceUID, SeriesInstanceUID=ct[0].SeriesInstanceUID,
                   SOPInstanceUID="")
    matches = find(pacs.address, query, level="IMAGE")
    assert {m.SOPInstanceUID for m in matches} == {ds.SOPInstanceUID for ds in ct}


def test_find_with_the_patient_root_model_returns_the_patient(pacs: OrthancServer) -> None:
    matches = find(pacs.address, _query(PatientID="ORTH*", PatientName=""), level="PATIENT", model="patient")
    assert [m.PatientID for m in matches] == ["ORTH001"]


def test_find_leaves_the_callers_query_unchanged(pacs: OrthancServer) -> None:
    query = _query(PatientID="ORTH001", StudyInstanceUID="")
    find(pacs.address, query)
    assert "QueryRetrieveLevel" not in query


def test_find_rejects_an_unknown_level_before_connecting(pacs: OrthancServer) -> None:
    with pytest.raises(ValueError, match="PATIENT, STUDY, SERIES, IMAGE"):
        find(pacs.address, _query(PatientID="ORTH001"), level="FRAME")


def test_find_at_patient_level_needs_the_patient_root_model(pacs: OrthancServer) -> None:
    with pytest.raises(ValueError, match="model='patient'"):
        find(pacs.address, _query(PatientID="ORTH001"), level="PATIENT")


# -- C-MOVE and C-GET ----------------------------------------------------------------------------


def test_move_sends_a_series_to_a_node_orthanc_knows(tmp_path: Path, study: list[Dataset]) -> None:
    require_peer("orthanc")
    require_peer("dcmtk")
    port = free_port()
    ct = study[:SLICES]
    with orthanc(tmp_path / "pacs", modalities={"SCP": ("STORESCP", "127.0.0.1", port)}) as server, \
            storescp(tmp_path / "received", port):
        server.upload_datasets(ct)
        query = _query(StudyInstanceUID=ct[0].StudyInstanceUID, SeriesInstanceUID=ct[0].SeriesInstanceUID)
        result = move(server.address, query, "STORESCP", level="SERIES")
    assert result.ok, result
    assert (result.completed, result.failed) == (SLICES, 0)
    received = {dcmread(p).SOPInstanceUID for p in (tmp_path / "received").iterdir()}
    assert received == {ds.SOPInstanceUID for ds in ct}


def test_move_to_a_destination_orthanc_does_not_know_fails_with_its_status(pacs: OrthancServer,
                                                                            study: list[Dataset]) -> None:
    result = move(pacs.address, _query(StudyInstanceUID=study[0].StudyInstanceUID), "NOBODY")
    assert not result.ok
    assert result.status is not None and result.status != 0x0000
    assert f"0x{result.status:04X}" in (result.error or "")


def test_move_to_a_peer_that_is_down_reports_the_error() -> None:
    result = move(Address("127.0.0.1", free_port(), "DOWN"), _query(StudyInstanceUID="1.2.3"), "ANY")
    assert not result.ok and "Connection refused" in (result.error or "")


def test_get_hands_every_instance_to_the_storage_handler(pacs: OrthancServer, study: list[Dataset]) -> None:
    received: list[Dataset] = []
    result = get(pacs.address, _query(StudyInstanceUID=study[0].StudyInstanceUID),
                 storage_handler=received.append)
    assert result.ok, result
    assert result.completed == len(study)
    by_uid = {ds.SOPInstanceUID: ds for ds in received}
    assert set(by_uid) == {ds.SOPInstanceUID for ds in study}
    assert by_uid[study[0].SOPInstanceUID].PixelData == study[0].PixelData
    assert "TransferSyntaxUID" in by_uid[study[0].SOPInstanceUID].file_meta


def test_get_counts_instances_the_handler_refuses_as_failed(pacs: OrthancServer, study: list[Dataset]) -> None:
    ct = study[:SLICES]
    refused = ct[0].SOPInstanceUID

    def handler(dataset: Dataset) -> int | None:
        if dataset.SOPInstanceUID == refused:
            raise OSError("disk full")
        return None

    query = _query(StudyInstanceUID=ct[0].StudyInstanceUID, SeriesInstanceUID=ct[0].SeriesInstanceUID)
    result = get(pacs.address, query, storage_handler=handler, level="SERIES")
    assert (result.completed, result.failed) == (SLICES - 1, 1)
    assert result.status == 0xB000  # sub-operations complete, one or more failed
    assert not result.ok
