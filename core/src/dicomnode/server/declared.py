"""The pipeline classes of pipelines declared in TOML: one per kind, none made at run time.

:class:`~dicomnode.server.toml_config.DeclaredPipeline` builds one of these
with its configuration; ``process`` calls the file's process function and
turns what it returns into outputs (the file's ``[[outputs]]`` deliver
datasets it returns).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from dicomnode.errors import ConfigurationError
from dicomnode.extension.executors import PipelineIdentity
from dicomnode.server.nodes import (
    AbstractPipeline,
    AbstractQueuedPipeline,
    AbstractThreadedPipeline,
)

if TYPE_CHECKING:
    from dicomnode.extension.containers import InputContainer
    from dicomnode.extension.outputs import PipelineOutput
    from dicomnode.server.config import PipelineConfig
    from dicomnode.server.toml_config import DeclaredPipeline

__all__ = ["TomlPipeline", "TomlQueuedPipeline", "TomlThreadedPipeline", "pipeline_class"]


class _Declared:
    """What the three kinds share: the declaration, ``process`` from the file, the identity by file."""

    declared: DeclaredPipeline
    config: PipelineConfig
    _framework_class: ClassVar[bool] = True

    def process(self, input_container: InputContainer) -> list[PipelineOutput]:
        """The file's process function; datasets it returns go to the file's ``[[outputs]]``."""
        from dicomnode.server.toml_config import result_outputs

        declared = self.declared
        return result_outputs(declared.process(input_container), declared.outputs, self.config.ae_title)

    def identity(self) -> PipelineIdentity:
        """Another process reads the same file again."""
        source = self.declared.source
        if source is None:
            raise ConfigurationError(f"the pipeline {self.config.name!r} was declared from a mapping, not a file, "
                                     "so another process cannot build it; load it with load_pipeline(path)")
        return PipelineIdentity("dicomnode.server.toml_config:load_pipeline", self.config, str(source))


class TomlPipeline(_Declared, AbstractPipeline):
    """A pipeline declared in TOML with ``type = "pipeline"`` (the default)."""

    _framework_class: ClassVar[bool] = True

    def __init__(self, config: PipelineConfig | None = None, *, declared: DeclaredPipeline,
                 **overrides: Any) -> None:
        self.declared = declared
        super().__init__(config or declared.config, **overrides)


class TomlQueuedPipeline(_Declared, AbstractQueuedPipeline):
    """A pipeline declared in TOML with ``type = "queued"``."""

    _framework_class: ClassVar[bool] = True

    def __init__(self, config: PipelineConfig | None = None, *, declared: DeclaredPipeline,
                 **overrides: Any) -> None:
        self.declared = declared
        super().__init__(config or declared.config, **overrides)


class TomlThreadedPipeline(_Declared, AbstractThreadedPipeline):
    """A pipeline declared in TOML with ``type = "threaded"``."""

    _framework_class: ClassVar[bool] = True

    def __init__(self, config: PipelineConfig | None = None, *, declared: DeclaredPipeline,
                 **overrides: Any) -> None:
        self.declared = declared
        super().__init__(config or declared.config, **overrides)


_KINDS: dict[str, type[AbstractPipeline]] = {
    "pipeline": TomlPipeline, "queued": TomlQueuedPipeline, "threaded": TomlThreadedPipeline,
}


def pipeline_class(kind: str) -> type[AbstractPipeline]:
    """The class of a declared pipeline of ``kind`` (``"pipeline"``, ``"queued"``, ``"threaded"``)."""
    return _KINDS[kind]
