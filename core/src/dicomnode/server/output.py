"""Outputs: what a pipeline delivers after ``process``."""

from __future__ import annotations

__all__ = ["NoOutput", "PipelineOutput"]


class PipelineOutput:
    """Base class of outputs: ``send()`` delivers and returns True on success."""

    def send(self) -> bool:
        raise NotImplementedError  # abstract: every output defines its delivery


class NoOutput(PipelineOutput):
    """An output that delivers nothing, successfully."""

    def send(self) -> bool:
        return True
