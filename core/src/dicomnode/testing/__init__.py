"""Testing a node: helpers, and a pytest plugin shipped with the core.

- :class:`FakePacs`: a C-STORE SCP on a free loopback port that records what
  it receives and answers with the statuses you choose;
- :func:`replay`: recorded images through a pipeline offline — what would it
  deliver?
- :func:`output_context`: bind an output outside a node, as the node would.

Installed with ``dicomnode``, the pytest plugin (:mod:`dicomnode.testing.plugin`,
entry point ``pytest11``) gives every test suite the fixtures
``dicomnode_node``, ``dicomnode_fake_pacs``, ``dicomnode_synthetic_ct`` and
``dicomnode_replay``. See ``docs/testing-a-node.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from dicomnode.extension.outputs import OutputContext
from dicomnode.net.address import Address
from dicomnode.testing.pacs import FakePacs, StatusRule, free_port
from dicomnode.testing.replay import Replay, ReplayedJob, replay

__all__ = ["FakePacs", "Replay", "ReplayedJob", "StatusRule", "free_port", "output_context", "replay"]


def output_context(data_directory: Path | str | None = None, *, patient_key: str = "PATIENT",
                   pipeline_name: str = "test", ae_title: str = "DICOMNODE",
                   known_endpoints: Mapping[str, Address] | None = None,
                   responding_address: Address | None = None, output_name: str = "",
                   job_id: str = "test-job") -> OutputContext:
    """The context a node would bind to an output; with ``data_directory``, deferring uses its outbox.

    >>> from dicomnode.extension.outputs import NoOutput
    >>> output = NoOutput()
    >>> output.bind(output_context(patient_key="P1"))
    >>> output.context.patient_key
    'P1'
    """
    from dicomnode.server.stores import DataDirectory

    data = DataDirectory(data_directory) if data_directory is not None else None
    outbox = None
    if data is not None:
        def outbox(name: str, settings: Mapping[str, object], datasets: object, reason: str) -> str:
            return data.defer(name, settings, datasets, reason, patient_key=patient_key,  # type: ignore[arg-type]
                              job_id=job_id)

    return OutputContext(
        pipeline_name=pipeline_name, ae_title=ae_title,
        data_directory=None if data_directory is None else Path(data_directory), patient_key=patient_key,
        known_endpoints=dict(known_endpoints or {}), logger=logging.getLogger("dicomnode.job"),
        responding_address=responding_address, output_name=output_name, job_id=job_id, outbox=outbox,
    )
