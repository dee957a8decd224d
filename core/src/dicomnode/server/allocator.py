"""The C allocator of the node's process: how many malloc arenas, and giving freed memory back.

A node receives images on association threads and grinds, builds and sends
on worker threads. With glibc's defaults every thread may get its own
malloc arena (up to eight per core), and memory freed in one arena is reused
only by the threads of that arena: the received pixel data freed by a worker
does not make room for the volume or the result the worker allocates next,
and the process keeps hundreds of MB between jobs.

Two calls, both on glibc only (a no-op with a debug log on macOS, Windows and
musl):

* :func:`limit_arenas` sets ``M_ARENA_MAX`` with ``mallopt``. It takes effect
  for arenas created afterwards, so the node calls it in ``open()`` before it
  starts its threads, never at import. A limit the operator set in the
  environment (``MALLOC_ARENA_MAX``, ``GLIBC_TUNABLES=glibc.malloc.arena_max``)
  is kept;
* :func:`release_free_memory` calls ``malloc_trim(0)``, which returns the
  free pages of every arena to the system; the node calls it once it has
  opened, and its maintenance thread after jobs, when none is running.

Both are process-wide: the user's program in the same process shares the
allocator.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading
from typing import Any

__all__ = ["glibc", "limit_arenas", "release_free_memory"]

logger = logging.getLogger("dicomnode.allocator")

#: mallopt's parameter number for the arena limit (glibc malloc.h: M_ARENA_MAX)
_M_ARENA_MAX = -8

_lock = threading.Lock()
_library: Any = None
_looked_up = False
_applied_arenas: int | None = None


def glibc() -> Any:
    """The process's glibc as a ``ctypes.CDLL``, or None when the C library is another one."""
    global _library, _looked_up
    with _lock:
        if not _looked_up:
            _looked_up = True
            _library = _find_glibc()
        return _library


def _find_glibc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        library = ctypes.CDLL(None)  # the symbols already loaded into this process
        version = library.gnu_get_libc_version  # only glibc defines it (musl does not)
        library.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        library.mallopt.restype = ctypes.c_int
        library.malloc_trim.argtypes = (ctypes.c_size_t,)
        library.malloc_trim.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    version.restype = ctypes.c_char_p
    logger.debug("C library: glibc %s", version().decode("ascii", "replace"))
    return library


def limit_arenas(count: int) -> bool:
    """Let the process's threads share at most ``count`` malloc arenas; False where glibc is absent.

    Arenas that exist already stay; call it before starting threads. glibc
    fixes its limit the first time it needs one (when a ninth arena would be
    made), so the first count applied early is the one that holds. Setting
    the same count again does nothing (and logs nothing). Example::

        limit_arenas(2)   # in a node's open(), before its threads start
    """
    global _applied_arenas
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"the malloc arena count must be an integer of at least 1, got {count!r}")
    library = glibc()
    if library is None:
        logger.debug("not glibc: malloc_arenas=%d is not applied", count)
        return False
    if _applied_arenas == count:
        return True
    chosen = _arena_limit_from_environment()
    if chosen is not None:
        # an operator's MALLOC_ARENA_MAX / GLIBC_TUNABLES is more specific than a default
        logger.info("malloc arenas: %s from the environment is kept; malloc_arenas=%d not applied", chosen, count)
        return False
    if library.mallopt(_M_ARENA_MAX, count) != 1:
        logger.warning("glibc refused mallopt(M_ARENA_MAX, %d); the allocator keeps its defaults", count)
        return False
    _applied_arenas = count
    logger.info("malloc arenas limited to %d for this process (setting malloc_arenas)", count)
    return True


def _arena_limit_from_environment() -> str | None:
    if "MALLOC_ARENA_MAX" in os.environ:
        return f"MALLOC_ARENA_MAX={os.environ['MALLOC_ARENA_MAX']}"
    for tunable in os.environ.get("GLIBC_TUNABLES", "").split(":"):
        if tunable.startswith("glibc.malloc.arena_max="):
            return f"GLIBC_TUNABLES {tunable}"
    return None


def release_free_memory() -> bool:
    """Give the free memory of every malloc arena back to the system; False where glibc is absent.

    Returns whether glibc called it; what it frees depends on how fragmented
    the arenas are. Takes a few milliseconds after a job of a few hundred MB.
    """
    library = glibc()
    if library is None:
        return False
    library.malloc_trim(0)
    return True
