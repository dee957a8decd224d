"""Testing a node: helpers and a pytest plugin shipped with the core.

Installed with ``dicomnode``, the pytest plugin (entry point ``pytest11``)
gives every test suite fixtures for a running node on a free port, a
recording C-STORE SCP (a fake PACS), synthetic series, and :func:`replay`,
which feeds a recorded study through a pipeline offline and returns what it
would deliver. See ``docs/testing-a-node.md``.

:func:`output_context` binds an output outside a node, as the node would.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from dicomnode.extension.outputs import OutputContext
from dicomnode.net.address import Address

__all__ = ["output_context"]


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
