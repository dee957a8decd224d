"""Services: servers a plugin runs alongside the node, such as a STOW-RS endpoint.

A service is registered through the ``dicomnode_services`` hook with a
:class:`~dicomnode.plugins.ServiceSpec` and switched on by the node setting
``services``, a table of service name -> that service's own settings::

    class MyNode(AbstractPipeline):
        services = {"stow": {"port": 8080, "token": "..."}}

The node builds each listed service from its settings when the pipeline is
made (so a bad setting is an error before anything listens), calls
:meth:`Service.start` with a :class:`~dicomnode.extension.handles.NodeHandle`
once it listens itself, and :meth:`Service.stop` when it closes. What a
service receives goes to the node through ``handle.ingest`` (the same checks
a C-STORE gets), ``handle.sync`` (durable as an association's end makes it)
and ``handle.check`` (is the patient complete now?)::

    class EchoService(Service):
        def __init__(self, settings):
            super().__init__(settings)
            self.reject_unknown(settings, ["greeting"])
            self.greeting = self.take(settings, "greeting", str, "hello")

        def start(self, handle):
            handle.logger.info("%s from %s", self.greeting, handle.ae_title)

        def stop(self, timeout):
            pass
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from dicomnode.errors import ConfigurationError
from dicomnode.extension.settings import table_value

if TYPE_CHECKING:
    from dicomnode.extension.handles import NodeHandle

__all__ = ["Service"]

T = TypeVar("T")


class Service:
    """Base class of services: built from its settings table, started and stopped by the node.

    Subclasses read and check their settings in ``__init__`` (with
    :meth:`take` and :meth:`reject_unknown`, whose errors name the setting),
    and implement :meth:`start` (return once serving; raise when it cannot
    serve, and the node does not open) and :meth:`stop` (bounded by
    ``timeout``). :attr:`name` is the name the node chose the service by.
    """

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.settings = dict(settings)
        #: the registered name the node chose the service by (for log lines and errors)
        self.name = ""

    # --- settings ------------------------------------------------------------

    def take(self, settings: Mapping[str, Any], key: str, kind: type[T] | tuple[type, ...],
             default: T, *, check: Callable[[Any], bool] | None = None, allowed: str = "") -> T:
        """One setting of the service's table: its value, checked, or ``default`` when absent."""
        value = settings.get(key)
        result: T = table_value(settings, key, kind, default, check, allowed, lambda expected: ConfigurationError(
            f"{type(self).__name__} setting {key!r} must be {expected}, got {_shown(key, value)}"))
        return result

    def reject_unknown(self, settings: Mapping[str, Any], known: Sequence[str]) -> None:
        """Raise ConfigurationError for keys of ``settings`` the service does not know."""
        unknown = sorted(set(settings) - set(known))
        if unknown:
            raise ConfigurationError(f"{type(self).__name__}: unknown setting(s) {unknown}; "
                                     f"known: {', '.join(known) or 'none'}")

    # --- life cycle --------------------------------------------------------------

    def start(self, handle: NodeHandle) -> None:
        """Start serving for the node behind ``handle``; return once serving (raise if it cannot)."""
        raise NotImplementedError(f"{type(self).__name__} must define start(handle)")

    def stop(self, timeout: float) -> None:
        """Stop serving and release what :meth:`start` took, within ``timeout`` seconds."""
        raise NotImplementedError(f"{type(self).__name__} must define stop(timeout)")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name or '?'}>"


def _shown(key: str, value: object) -> str:
    """A value for an error message; secrets (tokens, passwords) are never shown."""
    if any(word in key.lower() for word in ("token", "password", "secret")):
        return f"a {type(value).__name__}"
    return repr(value)
