"""The plugin's hook implementations: the module its entry point names. Cheap to import."""

from __future__ import annotations

from collections.abc import Iterator

from dicomnode.plugins import InputSpec, OutputSpec, ServiceSpec, hookimpl


@hookimpl
def dicomnode_outputs() -> Iterator[OutputSpec]:
    yield OutputSpec("dicomweb", "dicomnode_dicomweb.output:DicomWebOutput",
                     "sends datasets by STOW-RS, in batches, retrying, with an outbox")


@hookimpl
def dicomnode_inputs() -> Iterator[InputSpec]:
    yield InputSpec("historic-dicomweb", "dicomnode_dicomweb.priors:DicomWebPriors",
                    "prior studies found by QIDO-RS and retrieved by WADO-RS")


@hookimpl
def dicomnode_services() -> Iterator[ServiceSpec]:
    yield ServiceSpec("stow", "dicomnode_dicomweb.receiver:StowService",
                      "an HTTP endpoint that receives instances by STOW-RS into the node")
