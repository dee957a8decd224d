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
  only; a random name, so nobody can make it first), and takes it back when
  the hand-over ends, however it ends (result, failure, resubmission,
  cancellation). It keeps a segment it took back for the next hand-over
  for ``keep`` seconds, then unlinks it; at close it unlinks them all. A
  worker that still maps an unlinked segment keeps a valid mapping: POSIX
  frees the memory when the last mapping goes;
- a worker never unlinks: it maps the segment copy-on-write (its writes
  stay its own), and closes the mapping before the task returns, or, while
  the job's outputs still view it, as soon as they are gone;
- a segment is reused only once its hand-over has ended, but a task of that
  hand-over may still run somewhere (a worker the scheduler gave up on, a
  cancelled task that had started). Each hand-over writes a new random
  *stamp* into the segment's first page before anything else, and the
  worker compares it with its parcel's stamp after mapping the segment and
  again after ``process()`` returns: a task whose inputs were rewritten
  under it fails instead of returning outputs of mixed inputs (Dask drops
  such a task's result in any case; the stamp makes sure of it). The first
  page holds the stamp alone, so a worker's copy-on-write writes to its
  input arrays never hide a new stamp from it. A reused segment is never
  made smaller (a worker mapping its old length would fault past the end):
  one that is more than twice what a hand-over needed is unlinked instead
  of kept.

Reusing a segment is what makes shared memory faster than a socket: writing
157 MB into a new segment makes the kernel allocate and zero every page
first (0.075-0.12 s measured), and unlinking it frees them again (0.03 s);
into a kept segment it is a plain copy.
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

import errno
import logging
import mmap
import os
import pickle
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import attrs
import cloudpickle

from dicomnode.errors import ProcessingError
from dicomnode.extension.executors import failure_of
from dicomnode_dask.travel import collector_paused

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
#: the stamp's length; it is alone in the segment's first page, the buffers start at the second
STAMP = 16
HEADER = mmap.PAGESIZE
#: seconds a segment is kept for the next hand-over once its own has ended (executor_settings shared_memory_keep)
KEEP = 30.0
#: where Linux lists the POSIX shared memory segments (no such list elsewhere: no clean-up after a crash)
LISTING = Path("/dev/shm")


@attrs.frozen
class Parcel:
    """What crosses to the worker instead of the input container: its pickle, and where its buffers wait."""

    pickled: bytes
    segment: str
    size: int  # the bytes of the segment this hand-over uses (the segment may be longer)
    buffers: tuple[tuple[int, int], ...]  # (offset, length) of each out-of-band buffer, in pickle order
    stamp: bytes  # this hand-over's, in the segment's first bytes while the segment is its own


@attrs.define
class _Segment:
    name: str
    descriptor: int
    length: int = 0  # the segment's size now
    used: int = 0  # the bytes its current (or last) hand-over needed
    idle_since: float = 0.0


class Segments:
    """The node's segments: it makes them, fills one per hand-over, takes it back, keeps it a while, unlinks it.

    ``keep``: seconds a segment taken back waits for the next hand-over
    before it is unlinked (0: unlinked when its hand-over ends).
    """

    def __init__(self, keep: float = KEEP) -> None:
        self.keep = keep
        self._segments: dict[str, _Segment] = {}  # every segment held: in use or idle
        self._idle: list[_Segment] = []  # the most recently taken back last
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._closed = False
        self._short: int | None = None  # the room there was when a hand-over last found /dev/shm full

    def pack(self, value: Any) -> Parcel | None:
        """``value`` pickled with its large buffers in a segment; None when it has none (send it as it is).

        Raises OSError when /dev/shm has no room for them (then send it as it
        is); :meth:`has_room` says whether trying again is worth it.
        """
        segment = self._take()
        stamp = secrets.token_bytes(STAMP)
        try:
            # the stamp first: a task of the segment's last hand-over that still runs sees it change
            _write_all(segment.descriptor, memoryview(stamp), 0)
            parcel = _fill(segment.descriptor, segment.name, value, stamp)
        except BaseException as error:
            self.unlink(segment.name)
            if isinstance(error, OSError) and error.errno == errno.ENOSPC:
                self._short = self._room()  # with the segment gone, the room this hand-over had
            raise
        self._short = None
        if parcel is None:
            self._give_back(segment)
            return None
        segment.length = max(segment.length, parcel.size)
        segment.used = parcel.size
        return parcel

    def release(self, name: str) -> None:
        """The hand-over that used ``name`` has ended: keep the segment for the next one, or unlink it."""
        with self._lock:
            segment = self._segments.get(name)
        if segment is None:
            return
        if segment.length > 2 * max(segment.used, HEADER):  # never shrunk while in use elsewhere: dropped instead
            self.unlink(name)
        else:
            self._give_back(segment)

    def unlink(self, name: str) -> None:
        """Remove the segment ``name`` now (a worker that maps it keeps its mapping until it closes it)."""
        with self._lock:
            segment = self._segments.pop(name, None)
            if segment in self._idle:
                self._idle.remove(segment)
        if segment is not None:
            os.close(segment.descriptor)
        _unlink(name)

    def unlink_all(self) -> None:
        """Remove every segment held, in use or kept (at close); the segments are not kept from here on."""
        with self._lock:
            self._closed = True
            segments, self._segments, self._idle = list(self._segments.values()), {}, []
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        for segment in segments:
            os.close(segment.descriptor)
            _unlink(segment.name)

    def names(self) -> set[str]:
        """The segments this node holds now (in use or kept, not yet unlinked)."""
        with self._lock:
            return set(self._segments)

    def idle(self) -> set[str]:
        """The segments kept for the next hand-over."""
        with self._lock:
            return {segment.name for segment in self._idle}

    def has_room(self) -> bool:
        """False while /dev/shm has no more room than when a hand-over last found it full.

        A container's /dev/shm is often small (64 MiB unless it is given
        more): once a job's inputs did not fit, the next jobs do not write
        part of theirs in vain, until room is freed.
        """
        return self._short is None or self._room() > self._short

    def _room(self) -> int:
        """Bytes a hand-over can use: what /dev/shm has free, and the longest segment kept for reuse."""
        try:
            stats = os.statvfs(LISTING)
        except OSError:  # no /dev/shm to ask: the write says
            return 2**62
        with self._lock:
            kept = max((segment.length for segment in self._idle), default=0)
        return stats.f_bavail * stats.f_frsize + kept

    def _take(self) -> _Segment:
        with self._lock:
            if self._idle:
                return self._idle.pop()  # the most recent: its pages are the likeliest still in memory
        assert _posixshmem is not None
        name = f"{PREFIX}{os.getpid()}-{secrets.token_hex(8)}"
        # O_EXCL: a name somebody made first is an error, never a segment of theirs that we would fill
        segment = _Segment(name, _posixshmem.shm_open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600))
        with self._lock:
            self._segments[name] = segment
        return segment

    def _give_back(self, segment: _Segment) -> None:
        with self._lock:
            keep = self.keep > 0 and not self._closed and segment.name in self._segments
            if keep:
                segment.idle_since = time.monotonic()
                self._idle.append(segment)
                if self._timer is None:
                    self._schedule(self.keep)
        if not keep:
            self.unlink(segment.name)

    def _schedule(self, delay: float) -> None:  # with the lock held
        self._timer = threading.Timer(delay, self._expire)
        self._timer.daemon = True
        self._timer.name = "dicomnode-shared-memory-expiry"
        self._timer.start()

    def _expire(self) -> None:
        now = time.monotonic()
        with self._lock:
            self._timer = None
            expired = [segment for segment in self._idle if now - segment.idle_since >= self.keep]
            if self._idle and not self._closed and len(expired) < len(self._idle):
                oldest = min(segment.idle_since for segment in self._idle if segment not in expired)
                self._schedule(max(0.01, oldest + self.keep - now))
        for segment in expired:
            self.unlink(segment.name)
        if expired:
            logger.debug("unlinked %d shared memory segment(s) unused for %.0f s", len(expired), self.keep)


def _fill(descriptor: int, name: str, value: Any, stamp: bytes) -> Parcel | None:
    # each large buffer is written by a second thread as soon as the pickler meets it, while the pickler goes
    # on with the headers: writing to the segment and pickling overlap. One writer: tmpfs takes no faster than
    # one (measured); the thread ends with the pack, after its last write
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
            offset = places[-1][0] + -(-places[-1][1] // ALIGN) * ALIGN if places else HEADER
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
    return Parcel(pickled, name, places[-1][0] + places[-1][1], tuple(places), stamp)


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
        if not _stamped(mapping, parcel):
            raise _given_away(parcel, worker, "before")
        view = memoryview(mapping)
        buffers = [view[offset:offset + length] for offset, length in parcel.buffers]
        failure: ProcessingError | None = None
        try:
            with collector_paused():
                value = pickle.loads(parcel.pickled, buffers=buffers)
        except Exception as error:  # a class of the inputs that this worker cannot import, …
            failure = _on(worker, failure_of("unpacking the job's inputs on a worker", error))
        del buffers, view
        if failure is not None:
            raise failure  # outside the except: the failed unpickling's frames (and buffers) are gone
        # ``value`` is referenced from here alone: once ``call`` returns, nothing of it is left but its result
        result = call(value)
        if not _stamped(mapping, parcel):
            del result  # it may view the mapping: let the mapping close
            raise _given_away(parcel, worker, "while")
        return result
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
        if size < parcel.size or parcel.size < HEADER or any(
                offset < HEADER or length < 0 or offset + length > parcel.size for offset, length in parcel.buffers):
            raise ProcessingError(f"the shared memory segment {parcel.segment} has {size} bytes on the Dask worker "
                                  f"{worker}, the job's inputs expect {parcel.size}: it is not the node's",
                                  stage="executor")
        # copy-on-write: process() may change its input arrays in place; the segment stays as the node wrote it
        return mmap.mmap(descriptor, parcel.size, access=mmap.ACCESS_COPY)
    finally:
        os.close(descriptor)


def _stamped(mapping: mmap.mmap, parcel: Parcel) -> bool:
    """Whether the segment still belongs to the parcel's hand-over (its stamp is still the parcel's)."""
    return mapping[:STAMP] == parcel.stamp


def _given_away(parcel: Parcel, worker: str, when: str) -> ProcessingError:
    return ProcessingError(
        f"the shared memory segment {parcel.segment} was given to another hand-over of the node {when} this task "
        f"ran on the Dask worker {worker}: the node had ended this one (it handed the job over again, or it "
        "was cancelled); its outputs are not used", stage="executor")


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
