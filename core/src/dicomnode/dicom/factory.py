"""Building datasets from blueprints of virtual elements."""

from __future__ import annotations

from typing import Any

__all__ = ["StaticElement", "VirtualElement"]


class VirtualElement:
    """Base class of the elements of a blueprint."""


class StaticElement(VirtualElement):
    """An element whose value is fixed."""

    def __init__(self, tag: int | str, vr: str, value: Any) -> None:
        self.tag = tag
        self.vr = vr
        self.value = value
