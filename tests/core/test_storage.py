"""Durable storage: received bytes written atomically under sanitised names, listed, removed."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import FileMetaDataset
from pynetdicom.dsutils import encode

from dicomnode.dicom.synthetic import synthetic_series
from dicomnode.errors import StorageError
from dicomnode.server.storage import InstanceStore


def _encoded() -> tuple[object, bytes]:
    dataset = synthetic_series(slices=1, rows=4, columns=4)[0]
    encoded = encode(dataset, False, True)  # explicit VR little endian, as a peer sends it
    assert encoded is not None
    return dataset, encoded


def test_received_bytes_are_stored_as_a_readable_dicom_file(tmp_path: Path) -> None:
    dataset, encoded = _encoded()
    store = InstanceStore(tmp_path)
    path = store.write_encoded("P1", dataset.SOPInstanceUID, dataset.file_meta, encoded)  # type: ignore[attr-defined]
    read = dcmread(path)
    assert read.SOPInstanceUID == dataset.SOPInstanceUID  # type: ignore[attr-defined]
    assert read.PixelData == dataset.PixelData  # type: ignore[attr-defined]
    assert path.read_bytes().endswith(encoded)  # the bytes as received, not re-encoded


def test_a_hostile_patient_id_stays_inside_the_data_directory(tmp_path: Path) -> None:
    dataset, encoded = _encoded()
    store = InstanceStore(tmp_path / "data")
    path = store.write_encoded("../../etc", "../passwd", dataset.file_meta, encoded)  # type: ignore[attr-defined]
    assert (tmp_path / "data" / "incoming") in path.parents
    assert ".." not in path.parts


@pytest.mark.parametrize("policy", ["none", "association", "instance"])
def test_every_fsync_policy_stores_the_file(tmp_path: Path, policy: str) -> None:
    dataset, encoded = _encoded()
    store = InstanceStore(tmp_path, policy)  # type: ignore[arg-type]
    path = store.write_encoded("P1", dataset.SOPInstanceUID, dataset.file_meta, encoded)  # type: ignore[attr-defined]
    store.sync([path])
    assert list(store.files()) == [path]


def test_an_unknown_fsync_policy_is_refused_with_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="none, association, instance"):
        InstanceStore(tmp_path, "always")  # type: ignore[arg-type]


def test_listing_deletes_partial_files_of_an_interrupted_write(tmp_path: Path) -> None:
    dataset, encoded = _encoded()
    store = InstanceStore(tmp_path)
    path = store.write_encoded("P1", dataset.SOPInstanceUID, dataset.file_meta, encoded)  # type: ignore[attr-defined]
    partial = path.parent / ".incoming-deadbeef"
    partial.write_bytes(b"half a file")
    assert list(store.files()) == [path]
    assert not partial.exists()


def test_remove_deletes_the_files_and_the_emptied_patient_folder(tmp_path: Path) -> None:
    dataset, encoded = _encoded()
    store = InstanceStore(tmp_path)
    path = store.write_encoded("P1", dataset.SOPInstanceUID, dataset.file_meta, encoded)  # type: ignore[attr-defined]
    store.remove([path])
    assert not path.parent.exists()
    assert list(store.files()) == []


def test_an_unwritable_directory_is_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StorageError, match="cannot create"):
        InstanceStore(blocker)


def test_the_file_meta_encoding_matches_pydicoms_byte_for_byte() -> None:
    from pydicom.dataset import FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info

    from dicomnode.server.storage import encode_file_meta

    meta = FileMetaDataset()
    meta.FileMetaInformationGroupLength = 0
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = "1.2.3.456"  # odd length: padded
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.9.3811.3.0.4"
    meta.ImplementationVersionName = "PYNETDICOM_304"
    meta.SourceApplicationEntityTitle = "SCANNER"
    reference = DicomBytesIO()
    write_file_meta_info(reference, meta, enforce_standard=True)
    assert encode_file_meta(meta) == reference.getvalue()


def test_the_file_meta_of_a_received_instance_is_encoded_from_its_raw_elements_as_pydicom_would() -> None:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info

    from dicomnode.net.receiving import received_file_meta
    from dicomnode.server.storage import encode_file_meta

    def meta() -> FileMetaDataset:
        return received_file_meta("1.2.840.10008.5.1.4.1.1.2", "1.2.3.456", "1.2.840.10008.1.2.1")

    raw = meta()
    encoded = encode_file_meta(raw)
    assert all(type(element).__name__ == "RawDataElement" for element in raw._dict.values())  # none converted
    reference = DicomBytesIO()
    write_file_meta_info(reference, meta(), enforce_standard=True)
    assert encoded == reference.getvalue()


def test_an_instance_received_twice_gets_two_files_so_neither_job_deletes_the_other(tmp_path: Path) -> None:
    dataset, encoded = _encoded()
    store = InstanceStore(tmp_path)
    uid = dataset.SOPInstanceUID  # type: ignore[attr-defined]
    first = store.write_encoded("P1", uid, dataset.file_meta, encoded)  # type: ignore[attr-defined]
    second = store.write_encoded("P1", uid, dataset.file_meta, encoded)  # type: ignore[attr-defined]
    assert first != second and first.name.startswith(uid)
    store.remove([first])
    assert list(store.files()) == [second]


def test_spare_files_left_by_a_killed_process_are_deleted_and_never_listed(tmp_path: Path) -> None:
    dataset, encoded = _encoded()
    crashed = InstanceStore(tmp_path)
    path = crashed.write_encoded("P1", dataset.SOPInstanceUID, dataset.file_meta, encoded)  # type: ignore[attr-defined]
    spare_folder = tmp_path / "incoming" / ".spare"
    assert wait_for_spares(spare_folder, 16)  # the filler is idle again: as good as dead
    restarted = InstanceStore(tmp_path)
    assert list(restarted.files()) == [path]
    assert list(spare_folder.iterdir()) == []
    crashed.close()


def wait_for_spares(folder: Path, count: int, timeout: float = 5.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if folder.is_dir() and len(list(folder.iterdir())) >= count:
            time.sleep(0.05)
            return True
        time.sleep(0.01)
    return False


def test_an_instance_written_aside_is_no_instance_until_placed_and_a_crash_leaves_nothing_behind(
        tmp_path: Path) -> None:
    dataset, encoded = _encoded()
    uid = dataset.SOPInstanceUID  # type: ignore[attr-defined]
    store = InstanceStore(tmp_path)
    temporary, path = store.write_aside("P1", uid, dataset.file_meta, encoded)  # type: ignore[attr-defined]
    assert temporary.exists() and not path.exists()
    assert list((tmp_path / "incoming").glob("*/*.dcm")) == []  # not an instance of the data directory yet
    store.close()
    # the process killed here: the next start lists nothing and deletes the temporary file
    assert list(InstanceStore(tmp_path).files()) == [] and not temporary.exists()
    store = InstanceStore(tmp_path)
    temporary, path = store.write_aside("P1", uid, dataset.file_meta, encoded)  # type: ignore[attr-defined]
    store.place(temporary, path, "P1", uid)
    assert not temporary.exists() and list((tmp_path / "incoming").glob("*/*.dcm")) == [path]
    assert dcmread(path).SOPInstanceUID == uid
