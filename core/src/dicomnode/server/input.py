"""Inputs: the named collections of images a pipeline waits for."""

from __future__ import annotations

__all__ = ["AbstractInput"]


class AbstractInput:
    """Base class of pipeline inputs."""
