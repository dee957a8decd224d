"""The pytest plugin of ``dicomnode.testing`` (entry point ``pytest11``): fixtures for testing a node.

Every fixture is named ``dicomnode_*``:

``dicomnode_node``
    a factory: ``dicomnode_node(MyNode, **settings)`` opens the pipeline on a
    free loopback port with a data directory in the test's temporary folder
    and closes it after the test;
``dicomnode_fake_pacs``
    a :class:`~dicomnode.testing.FakePacs` listening on a free loopback port;
``dicomnode_synthetic_ct``
    a factory of synthetic CT series (``dicomnode_synthetic_ct(slices=20)``);
``dicomnode_replay``
    :func:`~dicomnode.testing.replay`.

This module imports nothing heavy until a fixture is used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def dicomnode_node(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Open pipelines on free loopback ports for the test; each is closed afterwards."""
    opened: list[Any] = []

    def open_node(pipeline: Callable[..., Any], **settings: Any) -> Any:
        settings.setdefault("ip", "127.0.0.1")
        settings.setdefault("port", 0)
        settings.setdefault("data_directory", tmp_path / f"data-{len(opened)}")
        node = pipeline(**settings)
        node.open(blocking=False)
        opened.append(node)
        return node

    yield open_node
    for node in reversed(opened):
        node.close()


@pytest.fixture
def dicomnode_fake_pacs() -> Iterator[Any]:
    """A fake PACS (a recording C-STORE SCP) on a free loopback port."""
    from dicomnode.testing.pacs import FakePacs

    with FakePacs() as pacs:
        yield pacs


@pytest.fixture
def dicomnode_synthetic_ct() -> Callable[..., Any]:
    """``make(patient_id="P1", slices=20, rows=64, columns=64, ...)``: a synthetic CT series (datasets)."""
    from dicomnode.dicom.synthetic import synthetic_series

    def make(**options: Any) -> Any:
        options.setdefault("rows", 64)
        options.setdefault("columns", 64)
        return synthetic_series(**options)

    return make


@pytest.fixture
def dicomnode_replay() -> Callable[..., Any]:
    """:func:`dicomnode.testing.replay`: recorded images through a pipeline offline."""
    from dicomnode.testing.replay import replay

    return replay
