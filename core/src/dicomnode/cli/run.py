"""``dicomnode run TARGET``: start a pipeline as a node and serve until told to stop.

TARGET is one of::

    my_node.py                 the one pipeline class defined in the file
    my_node.py:MyNode          a class in a file
    my_package.nodes:MyNode    a class in an importable module
    pipeline.toml              a pipeline declared in TOML (docs/configuration.md)

``--port``, ``--ae-title``, ``--ip``, ``--data-directory``, ``--admin-port``
and ``--log-level`` override the pipeline's own settings. SIGINT (Ctrl-C)
and SIGTERM stop the node cleanly: it stops accepting associations, and
finishes or safely stores the work in flight before the process exits.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import importlib.util
import logging
import re
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType, ModuleType
from typing import TYPE_CHECKING, Any

from dicomnode.errors import ConfigurationError

if TYPE_CHECKING:
    from dicomnode.server.config import PipelineConfig
    from dicomnode.server.nodes import AbstractPipeline

__all__ = ["PipelineFactory", "configure", "load_target", "settings_of"]

logger = logging.getLogger("dicomnode.cli.run")

_MODULE_TARGET = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(:[A-Za-z_]\w*)?$")
_TARGET_HELP = "file.py, file.py:ClassName, package.module:ClassName or pipeline.toml"


def configure(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """Add the arguments of ``dicomnode run`` and return its handler."""
    parser.add_argument("target", metavar="TARGET", help=f"the pipeline: {_TARGET_HELP}")
    parser.add_argument("--port", type=int, help="listen on this TCP port instead of the pipeline's")
    parser.add_argument("--ae-title", help="answer to this AE title instead of the pipeline's")
    parser.add_argument("--ip", help="listen on this address instead of the pipeline's")
    parser.add_argument("--data-directory", type=Path, help="store received images in this folder")
    parser.add_argument("--admin-port", type=int, metavar="PORT",
                        help="serve the status page, /status, /metrics and /healthz on this port (0: any free one)")
    return _run


def _is_pipeline(value: object) -> bool:
    from dicomnode.server import nodes

    abstract = (nodes.AbstractPipeline, nodes.AbstractThreadedPipeline, nodes.AbstractQueuedPipeline)
    return isinstance(value, type) and issubclass(value, nodes.AbstractPipeline) and value not in abstract


def _module_from_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise ConfigurationError(f"target {str(path)!r}: no such file")
    folder = str(path.resolve().parent)
    # the pipeline's own helper modules beside it import as they do under 'python my_node.py'
    if folder not in sys.path:
        sys.path.insert(0, folder)
    # under its own name when free, so a spawned processing process (processing_directory),
    # which gets our sys.path, can import the pipeline class again by module name
    name = path.stem if path.stem.isidentifier() and path.stem not in sys.modules else \
        f"dicomnode_target_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigurationError(f"target {str(path)!r}: cannot be loaded as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses, pickling and spawned workers look modules up here
    spec.loader.exec_module(module)
    return module


def _pick_class(module: ModuleType, class_name: str | None, target: str) -> type[AbstractPipeline]:
    if class_name is not None:
        value = getattr(module, class_name, None)
        if value is None:
            raise ConfigurationError(f"target {target!r}: {module.__name__} has no {class_name!r}")
        if not _is_pipeline(value):
            raise ConfigurationError(
                f"target {target!r}: {class_name} is not a subclass of AbstractPipeline "
                "(or is one of the abstract base classes)"
            )
        result: type[AbstractPipeline] = value
        return result
    found = [v for v in vars(module).values() if _is_pipeline(v) and v.__module__ == module.__name__]
    if len(found) == 1:
        only: type[AbstractPipeline] = found[0]
        return only
    if not found:
        raise ConfigurationError(f"target {target!r}: defines no subclass of AbstractPipeline")
    names = ", ".join(sorted(cls.__name__ for cls in found))
    raise ConfigurationError(
        f"target {target!r}: defines several pipelines ({names}); name one, e.g. {target}:{found[0].__name__}"
    )


#: what builds a node: a pipeline class, or a pipeline declared in TOML (both take the settings' overrides)
PipelineFactory = Callable[..., "AbstractPipeline"]


def load_target(target: str) -> PipelineFactory:
    """What a ``dicomnode run`` TARGET names: a pipeline class, or a declared TOML pipeline.

    Call the result with setting overrides to build the node.

    >>> load_target("my_node.py:MyNode")  # doctest: +SKIP
    <class 'dicomnode_target_my_node.MyNode'>
    """
    if target.endswith(".toml"):
        from dicomnode.server.toml_config import load_pipeline

        return load_pipeline(target)
    file_part, colon, class_part = target.rpartition(":")
    if not colon:
        file_part, class_part = target, ""
    if file_part.endswith(".py"):
        return _pick_class(_module_from_file(Path(file_part)), class_part or None, target)
    if not _MODULE_TARGET.match(target):
        raise ConfigurationError(f"target {target!r}: must be {_TARGET_HELP}")
    try:
        module = importlib.import_module(file_part)
    except ImportError as error:
        raise ConfigurationError(f"target {target!r}: cannot import {file_part!r} ({error})") from error
    return _pick_class(module, class_part or None, target)


def settings_of(factory: PipelineFactory) -> PipelineConfig:
    """The validated settings of what :func:`load_target` returned, without building a node."""
    from dicomnode.server.config import PipelineConfig
    from dicomnode.server.toml_config import DeclaredPipeline

    if isinstance(factory, DeclaredPipeline):
        return factory.config
    return PipelineConfig.from_pipeline_class(factory)  # type: ignore[arg-type]


class _StopSignal:
    """Turns SIGINT/SIGTERM into an event the main thread waits on."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, number: int, _frame: FrameType | None) -> None:
        self.received = signal.Signals(number).name
        self.event.set()

    def __enter__(self) -> _StopSignal:
        for number in (signal.SIGINT, signal.SIGTERM):
            self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *_exc: object) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)


def _listen_error(error: OSError, ip: str, port: int) -> Exception:
    """Why the node cannot listen, with the address and what to do."""
    if error.errno == errno.EADDRINUSE:
        return ConfigurationError(f"cannot listen on {ip}:{port}: the address is already in use (another node or "
                                  "program listens there); choose a free port with --port, or stop the other one")
    if error.errno == errno.EACCES:
        return ConfigurationError(f"cannot listen on {ip}:{port}: permission denied (ports below 1024 need "
                                  "privileges); choose a port from 1024 up with --port")
    if error.errno == errno.EADDRNOTAVAIL:
        return ConfigurationError(f"cannot listen on {ip}:{port}: this machine has no such address; choose one "
                                  "of its addresses (or 0.0.0.0 for all) with --ip")
    return error


def _run(args: argparse.Namespace) -> int:
    # installed first: a stop asked for while the pipeline loads is honoured right after it opens
    with _StopSignal() as stop:
        cls = load_target(args.target)
        overrides = {"port": args.port, "ae_title": args.ae_title, "ip": args.ip,
                     "data_directory": args.data_directory, "admin_port": args.admin_port,
                     "log_level": getattr(args, "log_level", None)}
        # validated like the pipeline's own settings: a bad --port names the setting and the allowed values
        node = cls(**{name: value for name, value in overrides.items() if value is not None})
        # the node's own log settings (level, format, stream or file) decide where its lines go;
        # without this the CLI's root handler would print every line a second time
        logging.getLogger("dicomnode").propagate = False
        try:
            node.open(blocking=False)
        except OSError as error:
            raise _listen_error(error, node.config.ip, node.config.port) from error
        admin = node.operations.admin_port
        print(f"dicomnode: {node.config.name} serving as {node.config.ae_title} on "
              f"{node.config.ip}:{node.port}" + (f", admin endpoint on port {admin}" if admin is not None else "")
              + "; Ctrl-C or SIGTERM stops it", file=sys.stderr, flush=True)
        try:
            # a timed wait lets the signal handler run promptly on every platform
            while not stop.event.wait(0.5):
                pass
        finally:
            logger.info("stopping on %s: finishing or storing the work in flight", stop.received)
            node.close()
    print(f"dicomnode: {node.config.name} stopped ({stop.received})", file=sys.stderr, flush=True)
    return 0
