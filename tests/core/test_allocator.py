"""The node's C allocator settings: malloc_arenas and release_idle_memory (glibc's mallopt, malloc_trim).

The allocator is process-wide, so what changes it runs in a fresh Python process.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dicomnode.dicom.synthetic import synthetic_series
from dicomnode.errors import ConfigurationError
from dicomnode.extension.containers import InputContainer
from dicomnode.extension.inputs import AbstractInput
from dicomnode.extension.outputs import NoOutput, PipelineOutput
from dicomnode.server.allocator import glibc, limit_arenas
from dicomnode.server.maintenance import MaintenanceThread
from dicomnode.server.nodes import AbstractPipeline
from dicomnode.server.toml_config import load_pipeline_config

needs_glibc = pytest.mark.skipif(glibc() is None, reason="mallopt and malloc_trim are glibc's")

# counts the malloc arenas (glibc's malloc_info writes one <heap nr=...> per arena)
_COUNT_ARENAS = """
import ctypes, os, tempfile, threading
def arenas():
    libc = ctypes.CDLL(None)
    libc.fdopen.restype = ctypes.c_void_p
    libc.malloc_info.argtypes = (ctypes.c_int, ctypes.c_void_p)
    libc.fclose.argtypes = (ctypes.c_void_p,)
    fd, name = tempfile.mkstemp()
    stream = libc.fdopen(fd, b"w")
    libc.malloc_info(0, stream)
    libc.fclose(stream)
    text = open(name).read()
    os.unlink(name)
    return text.count("<heap nr=")
def busy_threads(count):
    barrier = threading.Barrier(count)
    def work():
        barrier.wait()  # all at once, so glibc gives each its own arena when it may
        kept = [bytearray(200_000) for _ in range(20)]
        barrier.wait()
        del kept
    threads = [threading.Thread(target=work) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
"""


# the tests set the allocator's environment themselves
_NO_ALLOCATOR_VARIABLES = {key: value for key, value in os.environ.items()
                           if key not in ("MALLOC_ARENA_MAX", "GLIBC_TUNABLES")}


def _run(code: str) -> str:
    return _completed(code).stdout


def _completed(code: str, **environment: str) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run([sys.executable, "-c", _COUNT_ARENAS + textwrap.dedent(code)], capture_output=True,
                               text=True, timeout=120, env={**_NO_ALLOCATOR_VARIABLES, **environment})
    assert completed.returncode == 0, completed.stderr
    return completed


class One(AbstractInput):
    def validate(self) -> bool:
        return self.images >= 1


class Quick(AbstractPipeline):
    input = {"image": One}
    maintenance_thread = False

    def process(self, input_container: InputContainer) -> PipelineOutput:
        return NoOutput()


def test_arena_count_below_one_is_refused_with_the_value() -> None:
    for wrong in (-1, True, "2", 1.5):
        with pytest.raises(ConfigurationError, match=r"'malloc_arenas' must be an integer of at least 1.*got"):
            Quick(malloc_arenas=wrong)
    with pytest.raises(ValueError, match="at least 1, got 0"):
        limit_arenas(0)


def test_arena_count_zero_means_the_c_librarys_default_as_toml_has_no_none(tmp_path: Path) -> None:
    assert Quick(malloc_arenas=0).config.malloc_arenas is None
    assert Quick(malloc_arenas=None).config.malloc_arenas is None
    (tmp_path / "allocator_jobs.py").write_text("def nothing(input_container):\n    return None\n")
    path = tmp_path / "pipeline.toml"
    path.write_text('process = "allocator_jobs:nothing"\n[node]\nmalloc_arenas = 0\nrelease_idle_memory = false\n'
                    '[inputs.CT]\nrequired_values = { Modality = "CT" }\n')
    config = load_pipeline_config(path)
    assert config.malloc_arenas is None and config.release_idle_memory is False


@needs_glibc
def test_with_glibcs_defaults_busy_threads_get_arenas_of_their_own() -> None:
    # the baseline the setting changes: without a limit four busy threads make new arenas
    assert int(_run("busy_threads(4); print(arenas())")) > 2


@needs_glibc
def test_limited_arenas_are_shared_by_threads_started_afterwards() -> None:
    output = _run("""
        from dicomnode.server.allocator import limit_arenas
        assert limit_arenas(2)
        busy_threads(4)
        print(arenas())
    """)
    assert int(output) <= 2


@needs_glibc
def test_an_opened_node_limits_the_arenas_and_logs_it_once() -> None:
    completed = _completed("""
        from dicomnode.extension.inputs import AbstractInput
        from dicomnode.server.nodes import AbstractPipeline
        class Never(AbstractInput):
            pass
        class Node(AbstractPipeline):
            input = {"all": Never}
            ip = "127.0.0.1"
            maintenance_thread = False
            malloc_arenas = 1
            log_level = "INFO"
        for _ in range(2):
            with Node(port=0):
                pass
        busy_threads(4)
        print(arenas())
    """)
    assert int(completed.stdout) == 1
    assert completed.stderr.count("malloc arenas limited to 1 for this process") == 1, completed.stderr


@needs_glibc
def test_an_arena_limit_in_the_environment_is_kept_over_the_setting() -> None:
    completed = _completed("""
        from dicomnode.server.allocator import limit_arenas
        assert not limit_arenas(4)
        busy_threads(4)
        print(arenas())
    """, MALLOC_ARENA_MAX="1")
    assert int(completed.stdout) == 1


@needs_glibc
def test_released_memory_leaves_the_process() -> None:
    # 150 MB in small blocks freed in the middle of the heap (the last block stays): glibc
    # keeps it resident until malloc_trim hands the free pages back
    output = _run("""
        import re
        from dicomnode.server.allocator import release_free_memory
        def resident():
            return int(re.search(r"RssAnon:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) // 1024
        blocks = [bytearray(100_000) for _ in range(1500)]
        last = blocks.pop()
        before = resident()
        del blocks
        freed = resident()
        assert release_free_memory()
        print(before, freed, resident())
    """)
    before, freed, released = (int(value) for value in output.split())
    assert freed > before - 50, "glibc gave the memory back by itself: the test no longer shows anything"
    assert released < freed - 100


@needs_glibc
def test_maintenance_releases_memory_once_after_jobs_and_not_while_idle() -> None:
    pipeline = Quick()
    thread = MaintenanceThread(pipeline)
    assert not thread.release_idle_memory()  # no job ran yet
    pipeline.tree.add_image("P1", synthetic_series(patient_id="P1", slices=1, rows=4, columns=4)[0])
    assert pipeline.check_ready() == 1 and pipeline.jobs_succeeded == 1
    assert thread.release_idle_memory()
    assert not thread.release_idle_memory()  # nothing ran since


@needs_glibc
def test_the_chores_leave_the_allocator_alone_when_the_setting_is_off(tmp_path: Path) -> None:
    pipeline = Quick(release_idle_memory=False)
    pipeline.tree.add_image("P1", synthetic_series(patient_id="P1", slices=1, rows=4, columns=4)[0])
    pipeline.check_ready()
    thread = MaintenanceThread(pipeline)
    thread.run_chores()
    assert thread.release_idle_memory()  # the chores did not release: a job is still unreleased


def test_without_glibc_both_calls_do_nothing_and_say_so_in_the_debug_log(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from dicomnode.server import allocator

    # a fresh look-up on another platform (macOS), as the first call there would make
    monkeypatch.setattr(allocator, "_looked_up", False)
    monkeypatch.setattr(allocator, "_library", None)
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    with caplog.at_level(logging.DEBUG, logger="dicomnode.allocator"):
        assert allocator.limit_arenas(2) is False
        assert allocator.release_free_memory() is False
    assert "not glibc: malloc_arenas=2 is not applied" in caplog.text
