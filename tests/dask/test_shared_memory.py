"""Inputs through shared memory: the same outputs as through Dask's socket, and no segment outlives its job.

The cluster is the shared one (a scheduler and two ``dask worker`` processes
on loopback, on this machine), given by address with ``shared_memory =
true``. The node runs in the test process, so its segments are
``/dev/shm/dicomnode-<this pid>-*``.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from dask_cluster import DaskCluster
from dask_pipelines import ECHOED, VolumeNode, events, release
from node import wait_until

from dicomnode.dicom.synthetic import synthetic_series
from dicomnode.errors import ConfigurationError, ProcessingError
from dicomnode_dask import shared

# numpy: the test pipeline grinds a volume (imported in the tests: a session without it does not collect them)
pytestmark = [pytest.mark.plugin("dask", "numpy"), pytest.mark.timeout(180),
              pytest.mark.skipif(not shared.LISTING.is_dir(), reason="POSIX shared memory is listed in /dev/shm "
                                                                     "on Linux only")]


def _patient(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8].upper()}"


def _segments() -> list[str]:
    """This process's (the node's) shared memory segments."""
    return sorted(path.name for path in shared.LISTING.glob(f"{shared.PREFIX}{os.getpid()}-*"))


def _node(cluster: DaskCluster, tmp_path: Path, **settings: object) -> VolumeNode:
    """A node whose segments are unlinked when their hand-over ends, unless ``shared_memory_keep`` says otherwise."""
    executor_settings = {"address": cluster.address, "connect_timeout": 5, "shared_memory": True,
                         "shared_memory_keep": 0, **settings}
    node = VolumeNode(data_directory=tmp_path / "data", executor_settings=executor_settings)
    node.open(blocking=False)
    return node


def _submit(node: VolumeNode, patient: str) -> list[object]:
    """A series of 256x256 images (each buffer large enough for shared memory), stored as received."""
    assert node.store is not None
    series = synthetic_series(patient_id=patient, slices=3, rows=256, columns=256)
    for image in series:
        node.tree.add_image(patient, image, node.store.write_dataset(patient, image), "SCANNER")
    assert node.check_ready([patient]) == 1
    return series  # type: ignore[return-value]


def test_outputs_are_the_same_with_and_without_shared_memory(cluster: DaskCluster, tmp_path: Path) -> None:
    import numpy

    results = {}
    for shared_memory in (True, False):
        patient = _patient("SAME")
        node = _node(cluster, tmp_path / str(shared_memory), shared_memory=shared_memory)
        try:
            series = _submit(node, patient)
            assert node.wait_for_jobs(60)
        finally:
            node.close()
        [run] = events(patient, "started")
        assert run["shared"] is shared_memory  # the volume was a view of the mapping, or the worker's own
        results[shared_memory] = ECHOED.pop(patient), series
    for echo, series in results.values():
        expected = numpy.stack([image.pixel_array for image in series]) + 1  # type: ignore[attr-defined]
        assert echo.volume.dtype == expected.dtype and numpy.array_equal(echo.volume, expected)
        assert [dataset.PixelData for dataset in echo.datasets] == [image.PixelData for image in series]  # type: ignore[attr-defined]
        assert echo.datasets == series
    on, off = results[True][0], results[False][0]
    assert on.volume.tobytes() == off.volume.tobytes()  # the two patients' synthetic images have the same pixels
    assert _segments() == []


def test_a_segment_lives_while_its_job_runs_and_is_gone_when_it_succeeds(cluster: DaskCluster,
                                                                        tmp_path: Path) -> None:
    patient = _patient("HOLD")
    node = _node(cluster, tmp_path)
    try:
        _submit(node, patient)
        assert wait_until(lambda: events(patient, "started"), timeout=60)
        [segment] = _segments()
        assert (shared.LISTING / segment).stat().st_mode & 0o777 == 0o600  # the node's user only
        release(patient)
        assert node.wait_for_jobs(60)
        assert node.jobs_succeeded == 1
        assert _segments() == []
    finally:
        node.close()


def test_a_segment_is_kept_for_the_next_job_and_unlinked_when_unused_for_keep_seconds(cluster: DaskCluster,
                                                                                        tmp_path: Path) -> None:
    node = _node(cluster, tmp_path, shared_memory_keep=1.5)
    try:
        first, second = _patient("KEEP"), _patient("KEEP")
        _submit(node, first)
        assert node.wait_for_jobs(60)
        [kept] = _segments()  # the job is done; its segment waits for the next
        _submit(node, second)
        assert node.wait_for_jobs(60)
        assert _segments() == [kept]  # the second job's inputs went into the same segment
        assert node.jobs_succeeded == 2
        assert [run["shared"] for run in events(first, "started") + events(second, "started")] == [True, True]
        assert numpy_equal(ECHOED.pop(first).volume, ECHOED.pop(second).volume)  # same synthetic pixels, + 1
        assert wait_until(lambda: _segments() == [], timeout=10)  # unused for 1.5 s: unlinked
    finally:
        node.close()


def numpy_equal(left: object, right: object) -> bool:
    import numpy

    return bool(numpy.array_equal(left, right))  # type: ignore[arg-type]


def test_no_segment_is_left_when_process_raises(cluster: DaskCluster, tmp_path: Path) -> None:
    patient = _patient("FAIL")
    node = _node(cluster, tmp_path)
    try:
        _submit(node, patient)
        assert node.wait_for_jobs(60)
        assert node.jobs_failed == 1
        assert _segments() == []
    finally:
        node.close()
    assert events(patient, "started")[0]["shared"] is True


def test_a_worker_killed_mid_job_reruns_it_from_a_new_segment_and_none_is_left(cluster: DaskCluster,
                                                                               tmp_path: Path) -> None:
    patient = _patient("HOLD")
    node = _node(cluster, tmp_path)
    try:
        _submit(node, patient)
        assert wait_until(lambda: events(patient, "started"), timeout=60)
        [first] = _segments()
        os.kill(int(events(patient, "started")[0]["pid"]), signal.SIGKILL)  # type: ignore[arg-type]
        assert wait_until(lambda: len(events(patient, "started")) == 2, timeout=60)
        [second] = _segments()  # the lost attempt's segment was removed when it was handed over again
        assert second != first
        release(patient)
        assert node.wait_for_jobs(90)
        assert node.jobs_succeeded == 1 and _segments() == []
    finally:
        node.close()
    assert all(run["shared"] is True for run in events(patient, "started"))


def test_closing_the_node_during_a_job_removes_its_segment(cluster: DaskCluster, tmp_path: Path) -> None:
    patient = _patient("HOLD")
    node = _node(cluster, tmp_path)
    try:
        _submit(node, patient)
        assert wait_until(lambda: events(patient, "started"), timeout=60)
        assert len(_segments()) == 1
    finally:
        node.close()
        release(patient)
    assert _segments() == []


def test_a_worker_that_cannot_open_the_segment_fails_the_job_and_says_to_turn_shared_memory_off(
        cluster: DaskCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pack = shared.Segments.pack

    def unlinked_at_once(segments: shared.Segments, value: object) -> shared.Parcel | None:
        parcel = pack(segments, value)  # as a worker on another machine sees it: no such segment
        assert parcel is not None
        segments.unlink(parcel.segment)
        return parcel

    monkeypatch.setattr(shared.Segments, "pack", unlinked_at_once)
    patient = _patient("GONE")
    node = _node(cluster, tmp_path)
    try:
        _submit(node, patient)
        assert node.wait_for_jobs(60)
    finally:
        node.close()
    assert events(patient, "started") == []  # process() never saw wrong data
    assert node.quarantine is not None
    [entry] = node.quarantine.list()
    assert "cannot open the job's shared memory segment dicomnode-" in entry.reason
    assert "No such file or directory" in entry.reason
    assert "set executor_settings shared_memory = false" in entry.reason


def test_a_dev_shm_without_room_sends_the_inputs_through_dask_with_a_warning_until_it_has_more(
        cluster: DaskCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    write_all = shared._write_all

    def full(descriptor: int, buffer: memoryview, offset: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(shared, "_write_all", full)
    caplog.set_level(logging.WARNING, "dicomnode.dask")
    patients = [_patient("FULL") for _ in range(3)]
    node = _node(cluster, tmp_path)
    try:
        for patient in patients[:2]:  # the first finds /dev/shm full; the second does not try while it is
            _submit(node, patient)
            assert node.wait_for_jobs(60)
            assert _segments() == []
        monkeypatch.setattr(shared, "_write_all", write_all)
        room = shared.Segments._room
        monkeypatch.setattr(shared.Segments, "_room", lambda segments: room(segments) + 2**30)  # room was freed
        _submit(node, patients[2])
        assert node.wait_for_jobs(60)
    finally:
        node.close()
    assert node.jobs_succeeded == 3
    assert [events(patient, "started")[0]["shared"] for patient in patients] == [False, False, True]
    warnings = [record.getMessage() for record in caplog.records if "cannot be put in shared memory" in
                record.getMessage()]
    assert len(warnings) == 1
    assert f"of patient {patients[0]}: its inputs cannot be put in shared memory ([Errno 28] No space left on " \
           "device); they cross through Dask, and so do the next jobs' until /dev/shm has more room" in warnings[0]


def _make_segment(pid: int) -> str:
    import _posixshmem

    name = f"{shared.PREFIX}{pid}-{uuid.uuid4().hex[:16]}"
    os.close(_posixshmem.shm_open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600))
    return name


def test_at_start_the_segments_of_a_dead_node_are_removed_and_those_of_a_live_one_kept(
        cluster: DaskCluster, tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(30)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead_segment, live_segment = _make_segment(gone.pid), _make_segment(alive.pid)
        try:
            node = _node(cluster, tmp_path)
            node.close()
            assert not (shared.LISTING / dead_segment).exists()
            assert (shared.LISTING / live_segment).exists()
        finally:
            shared._unlink(dead_segment)
            shared._unlink(live_segment)
    finally:
        alive.kill()
        alive.wait(10)


def test_a_process_that_maps_a_segment_neither_removes_it_nor_warns_when_it_exits(tmp_path: Path) -> None:
    import numpy

    segments = shared.Segments()
    parcel = segments.pack({"volume": numpy.arange(100_000, dtype=numpy.int32)})
    assert parcel is not None
    try:
        script = ("import pickle, sys\n"
                  "from dicomnode_dask.shared import lingering, run_on\n"
                  "parcel = pickle.loads(sys.stdin.buffer.read())\n"
                  "def use(value):\n"
                  "    assert int(value['volume'][-1]) == 99_999\n"
                  "    value['volume'][:] = 0\n"  # copy-on-write: the segment keeps what the node wrote
                  "run_on(parcel, 'here', use)\n"
                  "assert lingering() == 0\n")  # the mapping is closed
        import pickle

        done = subprocess.run([sys.executable, "-W", "always", "-c", script], input=pickle.dumps(parcel),
                              capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr.decode()
        assert done.stderr == b""  # no resource_tracker warning about leaked shared memory
        assert (shared.LISTING / parcel.segment).exists()
        assert shared.run_on(parcel, "here", lambda value: numpy.array_equal(
            value["volume"], numpy.arange(100_000, dtype=numpy.int32)))
        assert shared.lingering() == 0
        kept = shared.run_on(parcel, "here", lambda value: value["volume"])  # a result that views the mapping
        assert shared.lingering() == 1 and int(kept[-1]) == 99_999
        del kept
        shared.run_on(parcel, "here", lambda value: None)  # the next job closes it, its last view gone
        assert shared.lingering() == 0
    finally:
        segments.unlink_all()
    assert segments.names() == set()
    assert not (shared.LISTING / parcel.segment).exists()


def _pack(segments: shared.Segments, length: int, fill: int = 0) -> shared.Parcel:
    """A parcel of a volume of ``length`` voxels of ``fill``, in one of ``segments``."""
    import numpy

    parcel = segments.pack({"volume": numpy.full(length, fill, dtype=numpy.int32)})
    assert parcel is not None
    return parcel


def test_a_task_whose_segment_was_given_to_another_hand_over_fails_instead_of_reading_it() -> None:
    segments = shared.Segments(keep=60)
    try:
        old = _pack(segments, 100_000)
        segments.release(old.segment)
        new = _pack(segments, 100_000, 1)
        assert new.segment == old.segment and new.stamp != old.stamp
        # a task of the ended hand-over that starts only now (cancelled, or its worker given up on)
        with pytest.raises(ProcessingError, match=r"was given to another hand-over of the node before this task ran"):
            shared.run_on(old, "here", lambda value: pytest.fail("process() saw another hand-over's inputs"))

        def rewritten_meanwhile(value: dict[str, object]) -> object:
            # the hand-over ends while its task still runs, and the node fills the segment for the next
            segments.release(new.segment)
            _pack(segments, 100_000, 2)
            return value["volume"]

        with pytest.raises(ProcessingError, match=r"was given to another hand-over of the node while this task ran"):
            shared.run_on(new, "here", rewritten_meanwhile)
        assert shared.lingering() == 0
    finally:
        segments.unlink_all()
    assert segments.names() == set()


def test_a_kept_segment_much_longer_than_its_hand_over_needed_is_unlinked_not_shrunk() -> None:
    segments = shared.Segments(keep=60)
    try:
        large = _pack(segments, 1_000_000)
        segments.release(large.segment)
        small = _pack(segments, 100_000)
        assert small.segment == large.segment  # reused: it was long enough
        assert (shared.LISTING / small.segment).stat().st_size >= large.size  # never shrunk under a mapper
        segments.release(small.segment)
        assert segments.names() == set() and not (shared.LISTING / small.segment).exists()
    finally:
        segments.unlink_all()


def test_segments_are_kept_only_for_keep_seconds_and_not_after_close() -> None:
    segments = shared.Segments(keep=0.3)
    parcels = [_pack(segments, 100_000), _pack(segments, 100_000)]  # two hand-overs at once: two segments
    assert len(segments.names()) == 2
    for parcel in parcels:
        segments.release(parcel.segment)
    assert segments.idle() == segments.names()
    assert wait_until(lambda: segments.names() == set(), timeout=5)
    parcel = _pack(segments, 100_000)
    segments.unlink_all()
    segments.release(parcel.segment)  # a hand-over that ends after close keeps nothing
    assert segments.names() == set() and not (shared.LISTING / parcel.segment).exists()


@pytest.mark.parametrize(("settings", "expected"), [
    ({}, True),                                        # the embedded cluster's worker processes
    ({"shared_memory": False}, False),
    ({"shared_memory": "auto"}, True),                 # the embedded cluster's worker processes
    ({"shared_memory": "auto", "processes": False}, False),  # workers in the node's process: nothing crosses
    ({"shared_memory": True}, True),
    ({"address": "tcp://127.0.0.1:8786", "shared_memory": "auto"}, False),  # workers elsewhere
    ({"address": "tcp://127.0.0.1:8786", "shared_memory": True}, True),     # the user says they are here
])
def test_shared_memory_is_on_where_the_workers_are_on_the_nodes_machine(settings: dict[str, object],
                                                                       expected: bool) -> None:
    node = VolumeNode(executor_settings=settings)
    assert node.runner.executor.shared_memory is expected  # type: ignore[attr-defined]


def test_a_bad_shared_memory_setting_says_what_is_allowed() -> None:
    with pytest.raises(ConfigurationError, match=r"'shared_memory' .* must be true, false or \"auto\", got 'yes'"):
        VolumeNode(executor_settings={"shared_memory": "yes"})
    with pytest.raises(ConfigurationError, match=r"'shared_memory_keep' .* must be a number of seconds >= 0, got -1"):
        VolumeNode(executor_settings={"shared_memory": True, "shared_memory_keep": -1})
