"""An output, imported only when the registry is asked for it."""

from __future__ import annotations

import logging

from dicomnode.extension.outputs import PipelineOutput


class LogOutput(PipelineOutput):
    """Logs one line and reports success."""

    def __init__(self, message: str = "done") -> None:
        self.message = message

    def send(self) -> bool:
        logging.getLogger("dicomnode_example").info("%s", self.message)
        return True
