"""Every hook a dicomnode plugin can implement, in one place.

A plugin is a module named by an entry point in the group ``dicomnode.plugins``.
It implements some of the hooks below with functions decorated by
:data:`dicomnode.plugins.hookimpl`. Each contribution hook is called once, when
the registry is built at start-up (never at import time), and returns an
iterable of records; the order in which plugins are called does not matter.
"""

from __future__ import annotations

from collections.abc import Iterable

import pluggy

from dicomnode.plugins._specs import (
    CommandSpec,
    ExecutorSpec,
    GrinderSpec,
    InputSpec,
    OutputSpec,
    ServiceSpec,
    VirtualElementSpec,
)

PROJECT_NAME = "dicomnode.plugins"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# --- contributions: called once while the registry is built ------------------


@hookspec
def dicomnode_grinders() -> Iterable[GrinderSpec]:
    """Return the grinders this plugin provides.

    Called once at start-up. Each :class:`GrinderSpec` names a subclass of
    :class:`dicomnode.extension.grinders.Grinder` (or a lazy ``"module:Class"``
    string), so that TOML pipelines can choose a grinder by name.

    Example::

        @hookimpl
        def dicomnode_grinders():
            yield GrinderSpec("upper", "my_plugin.grinders:UpperGrinder", "upper-cases text values")
    """


@hookspec
def dicomnode_virtual_elements() -> Iterable[VirtualElementSpec]:
    """Return the kinds of virtual element this plugin adds to blueprints.

    Called once at start-up. Each :class:`VirtualElementSpec` names a subclass
    of :class:`dicomnode.dicom.factory.VirtualElement`.

    Example::

        @hookimpl
        def dicomnode_virtual_elements():
            yield VirtualElementSpec("today", "my_plugin.elements:TodayElement", "the current date")
    """


@hookspec
def dicomnode_outputs() -> Iterable[OutputSpec]:
    """Return the pipeline outputs this plugin provides.

    Called once at start-up. Each :class:`OutputSpec` names a subclass of
    :class:`dicomnode.extension.outputs.PipelineOutput`.

    Example::

        @hookimpl
        def dicomnode_outputs():
            yield OutputSpec("s3", "my_plugin.outputs:S3Output", "uploads results to a bucket")
    """


@hookspec
def dicomnode_inputs() -> Iterable[InputSpec]:
    """Return the kinds of pipeline input this plugin provides.

    Called once at start-up. Each :class:`InputSpec` names a subclass of
    :class:`dicomnode.extension.inputs.AbstractInput`.

    Example::

        @hookimpl
        def dicomnode_inputs():
            yield InputSpec("worklist", "my_plugin.inputs:WorklistInput", "waits for a worklist item")
    """


@hookspec
def dicomnode_executors() -> Iterable[ExecutorSpec]:
    """Return the executors this plugin provides: places where a job's ``process`` can run.

    Called once at start-up. Each :class:`ExecutorSpec` names a subclass of
    :class:`dicomnode.extension.executors.Executor`; a pipeline chooses one by
    name with the ``executor`` setting and configures it with
    ``executor_settings``. The executor gets the ground input container and
    the pipeline's importable identity and returns the outputs; the node
    sends them (see ``docs/plugins.md``).

    Example::

        @hookimpl
        def dicomnode_executors():
            yield ExecutorSpec("cluster", "my_plugin.cluster:ClusterExecutor", "runs jobs on our cluster")
    """


@hookspec
def dicomnode_services() -> Iterable[ServiceSpec]:
    """Return the services this plugin provides: servers that run alongside the node.

    Called once at start-up. Each :class:`ServiceSpec` names a subclass of
    :class:`dicomnode.extension.services.Service`. A pipeline switches a
    service on with the ``services`` setting (service name -> its settings
    table); the node builds it from those settings when the pipeline is
    made, starts it with a :class:`~dicomnode.extension.handles.NodeHandle`
    once the node listens, and stops it when the node closes.

    Example::

        @hookimpl
        def dicomnode_services():
            yield ServiceSpec("stow", "my_plugin.stow:StowService", "receives instances by STOW-RS")
    """


# --- command line -------------------------------------------------------------


@hookspec
def dicomnode_commands() -> Iterable[CommandSpec]:
    """Return subcommands this plugin adds to the ``dicomnode`` CLI.

    Called once when the CLI starts. A :class:`CommandSpec`'s target is a
    function ``configure(parser) -> handler``: it adds arguments to the
    ``argparse`` parser of the subcommand and returns
    ``handler(args) -> int``. Only the command being run is loaded.

    Example::

        @hookimpl
        def dicomnode_commands():
            yield CommandSpec("hello", "my_plugin.cli:configure_hello", "prints a greeting")
    """
