"""The node most benchmarks receive with: one input that takes every image and never completes.

No job ever runs on it, so a benchmark times receiving, holding or serving
only. ``holding_node("AE", data_directory=...)`` gives an instance; keyword
arguments are the node's settings (``port`` defaults to 0: any free port).
"""

from __future__ import annotations

from typing import Any


def holding_node(ae_title: str, *, input_class: Any = None, **settings: Any) -> Any:
    """A node on 127.0.0.1 whose one input ``images`` holds everything (an ``input_class`` of the caller's instead)."""
    from dicomnode import AbstractInput, AbstractPipeline, NoOutput

    class Everything(AbstractInput):
        def validate(self) -> bool:
            return False  # never complete

    class HoldingNode(AbstractPipeline):
        ip = "127.0.0.1"
        port = 0
        input = {"images": input_class or Everything}
        maintenance_thread = False
        log_level = "WARNING"

        def process(self, input_container: object) -> NoOutput:
            return NoOutput()

    HoldingNode.ae_title = ae_title
    return HoldingNode(**settings)
