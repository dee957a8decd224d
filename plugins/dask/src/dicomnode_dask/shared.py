"""Shared memory: a job's large buffers reach a worker on the node's own machine without crossing a socket.

The node pickles the travelling input container itself (protocol 5, as Dask
would) and collects every large out-of-band buffer the pickle offers: the
voxels of a numpy volume, the pixel data of the datasets (see
:mod:`dicomnode_dask.travel`). It writes them into one POSIX shared memory
segment per hand-over of the job and sends only a :class:`Parcel`: the
pickle without those buffers, the segment's name, and where each buffer is
in it. The worker maps the segment and unpickles the container over the
mapping: a numpy array's voxels are not copied (a dataset's pixel data
becomes ``bytes``, which pydicom needs, and is copied once).

Ownership, for a crashing node and a hostile neighbour alike:

- the node creates each segment (``O_EXCL``, mode 0600: the node's user
  only; a random name, so nobody can make it first), and unlinks it when
  the hand-over ends, however it ends (result, failure, resubmission,
  cancellation, close). A worker that still maps it keeps a valid mapping:
  POSIX frees the memory when the last mapping goes;
- a worker never unlinks: it maps the segment copy-on-write (its writes
  stay its own; the node's copy cannot change under a rerun), and closes
  the mapping before the task returns, or, while the job's outputs still
  view it, as soon as they are gone;
- segment names carry the node's pid (``dicomnode-<pid>-<random>``), so a
  node that starts after a crash removes its dead predecessors' segments,
  and only those: a segment whose pid is alive, or that another user owns,
  is left alone.

The segments are made with ``_posixshmem``, the primitives under
:mod:`multiprocessing.shared_memory`, not with its ``SharedMemory``: that
class maps every segment shared and writable, cannot write a buffer
without first faulting in every page of the mapping (0.2 s for a 157 MB
volume here, against 0.08 s for one ``pwritev``), and before Python 3.13
registers every segment it opens with the ``resource_tracker``, which an
embedded cluster's workers share with the node: a worker's registration
would unlink the node's segments at the worker's exit, or warn about them.
Neither side here ever involves the tracker.
"""

from __future__ import annotations

import logging
import mmap
import os
import pickle
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import attrs
import cloudpickle

from dicomnode.errors import ProcessingError
from dicomnode.extension.executors import failure_of

try:
    import _posixshmem
except ImportError:  # Windows: no POSIX shared memory
    _posixshmem = None

__all__ = ["AVAILABLE", "PREFIX", "Parcel", "Segments", "lingering", "remove_stale", "run_on"]

T = TypeVar("T")

logger = logging.getLogger("dicomnode.dask")

#: True where POSIX shared memory exists
AVAILABLE = _posixshmem is not None
#: every segment of a node is named ``dicomnode-<pid>-<random>``
PREFIX = "dicomnode-"
#: buffers smaller than this stay in the pickle
LARGE = 64 * 1024
#: each buffer starts at a multiple of this in its segment (numpy's and SIMD's alignment)
ALIGN = 64
#: where Linux lists the POSIX shared memory segments (no such list elsewhere: no clean-up after a crash)
LISTING = Path("/dev/shm")


@attrs.frozen
class Parcel:
    """What crosses to the worker instead of the input container: its pickle, and where its buffers wait."""

    pickled: bytes
    segment: str
    size: int
    buffers: tuple[tuple[int, int], ...]  # (offset, length) of each out-of-band buffer, in pickle order


class Segments:
    """The node's segments: it makes them, writes them once, and unlinks each when its hand-over ends."""

    def __init__(self) -> None:
        self._names: set[str] = set()
        self._lock = threading.Lock()

    def pack(self, value: Any) -> Parcel | None:
        """``value`` pickled with its large buffers in a new segment; None when it has none (send it as it is)."""
        assert _posixshmem is not None
        name = f"{PREFIX}{os.getpid()}-{secrets.token_hex(8)}"
        # O_EXCL: a name somebody made first is an error, never a segment of theirs that we would fill
        descriptor = _posixshmem.shm_open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
        with self._lock:
            self._names.add(name)
        try:
            parcel = _fill(descriptor, name, value)
        except BaseException:
            self.unlink(name)
            raise
        finally:
            os.close(descriptor)
        if parcel is None:
            self.unlink(name)
        return parcel

    def unlink(self, name: str) -> None:
        """Remove the segment ``name`` (a worker that maps it keeps its mapping until it closes it)."""
        with self._lock:
            self._names.discard(name)
        _unlink(name)

    def unlink_all(self) -> None:
        """Remove every segment still held (at close)."""
        with self._lock:
            names, self._names = self._names, set()
        for name in names:
            _unlink(name)

    def names(self) -> set[str]:
        """The segments this node holds now (made, not yet unlinked)."""
        with self._lock:
            return set(self._names)


def _fill(descriptor: int, name: str, value: Any) -> Parcel | None:
    # each large buffer is written by a second thread as soon as the pickler meets it, while the pickler goes
    # on with the headers: writing to the segment (allocating its pages) and pickling overlap. One writer:
    # tmpfs takes no faster than one (measured); the thread ends with the pack, after its last write
    places: list[tuple[int, int]] = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dicomnode-shared-memory") as writer:
        writes: list[Future[None]] = []

        def out_of_band(buffer: pickle.PickleBuffer) -> bool:
            try:
                raw = buffer.raw()
            except BufferError:  # not contiguous: it stays in the pickle
                return True
            if raw.nbytes < LARGE:
                return True
            offset = places[-1][0] + -(-places[-1][1] // ALIGN) * ALIGN if places else 0
            places.append((offset, raw.nbytes))
            writes.append(writer.submit(_write_all, descriptor, raw, offset))
            return False

        try:
            pickled = pickle.dumps(value, protocol=5, buffer_callback=out_of_band)
        except Exception:  # what plain pickle cannot take (a lambda, a local class), as Dask falls back
            places.clear()
            pickled = cloudpickle.dumps(value, protocol=5, buffer_callback=out_of_band)
        for write in writes:
            write.result()  # an OSError (no space left in /dev/shm) is raised here
    if not places:
        return None
    size = places[-1][0] + places[-1][1]
    os.ftruncate(descriptor, size)
    return Parcel(pickled, name, size, tuple(places))


def _write_all(descriptor: int, buffer: memoryview, offset: int) -> None:
    view = buffer.cast("B") if buffer.format != "B" or buffer.ndim != 1 else buffer
    written = 0
    while written < len(view):
        written += os.pwrite(descriptor, view[written:], offset + written)


def _unlink(name: str) -> None:
    assert _posixshmem is not None
    try:
        _posixshmem.shm_unlink("/" + name)
    except FileNotFoundError:
        pass
    except OSError as error:  # it outlives us; the next start of the node removes it
        logger.warning("the shared memory segment %s could not be removed: %s", name, error)


def remove_stale() -> int:
    """Remove the segments of nodes whose process is gone (a crash); return how many.

    Only segments named by this module, owned by this user, whose pid is not
    a live process: a node running beside this one keeps its segments.
    """
    if not AVAILABLE or not LISTING.is_dir():
        return 0
    removed = 0
    for path in LISTING.glob(PREFIX + "*"):
        pid_text = path.name[len(PREFIX):].partition("-")[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        try:
            if path.lstat().st_uid != os.getuid() or _alive(int(pid_text)):
                continue
        except FileNotFoundError:
            continue
        _unlink(path.name)
        removed += 1
    if removed:
        logger.info("removed %d shared memory segment(s) left by node processes that are gone", removed)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


# --- on the worker ---------------------------------------------------------------------------------

#: mappings whose buffers were still in use when their task returned (outputs that view the inputs)
_lingering: list[mmap.mmap] = []
_lingering_lock = threading.Lock()


def run_on(parcel: Parcel, worker: str, call: Callable[[Any], T]) -> T:
    """``call(value)`` on the value a parcel carries, its buffers mapped from the node's segment.

    The mapping is closed when ``call`` returns, unless what it returns (or
    keeps) still views it: then at the next call once that is gone. Raises
    :class:`~dicomnode.errors.ProcessingError` when the segment cannot be
    opened (the worker is on another machine, or sees another ``/dev/shm``),
    or is not what the parcel says.
    """
    _close_lingering()
    mapping = _map(parcel, worker)
    try:
        view = memoryview(mapping)
        buffers = [view[offset:offset + length] for offset, length in parcel.buffers]
        failure: ProcessingError | None = None
        try:
            value = pickle.loads(parcel.pickled, buffers=buffers)
        except Exception as error:  # a class of the inputs that this worker cannot import, …
            failure = _on(worker, failure_of("unpacking the job's inputs on a worker", error))
        del buffers, view
        if failure is not None:
            raise failure  # outside the except: the failed unpickling's frames (and buffers) are gone
        # ``value`` is referenced from here alone: once ``call`` returns, nothing of it is left but its result
        return call(value)
    finally:
        value = None
        try:
            mapping.close()
        except BufferError:  # the result (or the pipeline) still views an input array
            with _lingering_lock:
                _lingering.append(mapping)


def lingering() -> int:
    """How many mappings of this process wait for their last view to go."""
    with _lingering_lock:
        return len(_lingering)


def _map(parcel: Parcel, worker: str) -> mmap.mmap:
    if _posixshmem is None:
        raise _unreachable(parcel, worker, "this worker's system has no POSIX shared memory")
    try:
        descriptor = _posixshmem.shm_open("/" + parcel.segment, os.O_RDONLY, mode=0o600)
    except OSError as error:
        raise _unreachable(parcel, worker, error.strerror or type(error).__name__) from None
    try:
        size = os.fstat(descriptor).st_size
        if size != parcel.size or any(offset < 0 or length < 0 or offset + length > size
                                      for offset, length in parcel.buffers):
            raise ProcessingError(f"the shared memory segment {parcel.segment} has {size} bytes on the Dask worker "
                                  f"{worker}, the job's inputs expect {parcel.size}: it is not the node's",
                                  stage="executor")
        # copy-on-write: process() may change its input arrays in place; the segment stays as the node wrote it
        return mmap.mmap(descriptor, size, access=mmap.ACCESS_COPY)
    finally:
        os.close(descriptor)


def _unreachable(parcel: Parcel, worker: str, why: str) -> ProcessingError:
    return ProcessingError(
        f"the Dask worker {worker} cannot open the job's shared memory segment {parcel.segment} ({why}): it does "
        "not run on the node's machine, or does not share its /dev/shm; set executor_settings shared_memory = "
        "false for workers elsewhere", stage="executor")


def _on(worker: str, error: ProcessingError) -> ProcessingError:
    return ProcessingError(f"{error.reason} (on the Dask worker {worker})", stage=error.stage,
                           traceback=error.traceback)


def _close_lingering() -> None:
    with _lingering_lock:
        still: list[mmap.mmap] = []
        for mapping in _lingering:
            try:
                mapping.close()
            except BufferError:
                still.append(mapping)
        _lingering[:] = still
