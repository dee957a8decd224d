"""The records a plugin contributes: one small frozen attrs class per extension point."""

from __future__ import annotations

import importlib
import re
from typing import Any, ClassVar

import attrs

from dicomnode.errors import PluginError

__all__ = [
    "CommandSpec",
    "Contribution",
    "ExecutorSpec",
    "GrinderSpec",
    "InputSpec",
    "OutputSpec",
    "ServiceSpec",
    "VirtualElementSpec",
]

_SLUG = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
_LAZY_TARGET = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


def _check_name(_instance: object, attribute: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str) or not _SLUG.match(value):
        raise ValueError(
            f"{attribute.name} must be a lowercase slug such as 'numpy' or 'instance-copy' "
            f"(letters, digits and single hyphens, starting with a letter), got {value!r}"
        )


def _check_target(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, str):
        if not _LAZY_TARGET.match(value):
            raise ValueError(
                f"a lazy target must look like 'package.module:Name', got {value!r}"
            )
    elif not callable(value):
        raise ValueError(f"target must be a class, a function or a 'package.module:Name' string, got {value!r}")


def _check_summary(_instance: object, attribute: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str) or "\n" in value:
        raise ValueError(f"summary must be a single line of text, got {value!r}")


@attrs.frozen
class Contribution:
    """What a plugin adds to one extension point.

    ``target`` is the class itself, or a lazy ``"package.module:Name"`` string
    that is imported the first time the name is used, so that heavy
    dependencies stay out of start-up.
    """

    name: str = attrs.field(validator=_check_name)
    target: Any = attrs.field(validator=_check_target)
    summary: str = attrs.field(default="", validator=_check_summary)

    #: the extension point, in the words used by error messages and the CLI
    kind: ClassVar[str] = "contribution"
    #: ``"module:Class"`` every resolved target must subclass; empty for callables
    base: ClassVar[str] = ""

    @property
    def is_lazy(self) -> bool:
        """True while the target is still a ``"package.module:Name"`` string."""
        return isinstance(self.target, str)

    def load(self, distribution: str = "?") -> Any:
        """Import the target if it is lazy and check that it is what the extension point needs."""
        target = _import_target(self.target, self, distribution) if self.is_lazy else self.target
        if self.base:
            base = _import_target(self.base, self, "dicomnode")
            if not (isinstance(target, type) and issubclass(target, base)):
                raise PluginError(
                    f"{self.kind} {self.name!r} from {distribution}: target {self.target!r} "
                    f"is not a subclass of {base.__module__}.{base.__qualname__}",
                    distribution=distribution,
                )
        elif not callable(target):
            raise PluginError(
                f"{self.kind} {self.name!r} from {distribution}: target {self.target!r} is not callable",
                distribution=distribution,
            )
        return target


def _import_target(path: str, spec: Contribution, distribution: str) -> Any:
    module_name, _, attribute_path = path.partition(":")
    try:
        value: Any = importlib.import_module(module_name)
        for part in attribute_path.split("."):
            value = getattr(value, part)
    except Exception as error:  # an import of third-party code can raise anything
        raise PluginError(
            f"{spec.kind} {spec.name!r} from {distribution}: cannot load {path!r}: "
            f"{type(error).__name__}: {error}",
            distribution=distribution,
        ) from error
    return value


@attrs.frozen
class GrinderSpec(Contribution):
    """A grinder: turns a list of datasets into what ``process`` wants (subclass of ``Grinder``)."""

    kind: ClassVar[str] = "grinder"
    base: ClassVar[str] = "dicomnode.extension.grinders:Grinder"


@attrs.frozen
class VirtualElementSpec(Contribution):
    """A kind of virtual element for blueprints (subclass of ``VirtualElement``)."""

    kind: ClassVar[str] = "virtual element"
    base: ClassVar[str] = "dicomnode.dicom.factory:VirtualElement"


@attrs.frozen
class OutputSpec(Contribution):
    """A pipeline output such as DICOM or file delivery (subclass of ``PipelineOutput``)."""

    kind: ClassVar[str] = "output"
    base: ClassVar[str] = "dicomnode.extension.outputs:PipelineOutput"


@attrs.frozen
class InputSpec(Contribution):
    """A kind of pipeline input (subclass of ``AbstractInput``)."""

    kind: ClassVar[str] = "input"
    base: ClassVar[str] = "dicomnode.extension.inputs:AbstractInput"


@attrs.frozen
class ExecutorSpec(Contribution):
    """Where jobs run: worker threads, a spawned process, a cluster (subclass of ``Executor``)."""

    kind: ClassVar[str] = "executor"
    base: ClassVar[str] = "dicomnode.extension.executors:Executor"


@attrs.frozen
class ServiceSpec(Contribution):
    """A server run alongside the node, such as a STOW-RS endpoint (subclass of ``Service``).

    A pipeline switches it on with the ``services`` setting, which gives the
    service its own settings table.
    """

    kind: ClassVar[str] = "service"
    base: ClassVar[str] = "dicomnode.extension.services:Service"


@attrs.frozen
class CommandSpec(Contribution):
    """A subcommand of the ``dicomnode`` CLI.

    The target is a function ``configure(parser: argparse.ArgumentParser)``
    that adds the command's arguments and returns the handler
    ``handler(args: argparse.Namespace) -> int`` (the exit status). It is
    loaded only when the command is run, so listing commands stays cheap.
    """

    kind: ClassVar[str] = "command"
