"""The validated configuration of a pipeline.

A pipeline is declared either as an :class:`~dicomnode.server.nodes.AbstractPipeline`
subclass whose class attributes are its settings, or as a TOML file; both
routes build the same frozen :class:`PipelineConfig`, whose validators give an
error that names the setting, the value and what is allowed::

    config = PipelineConfig.from_pipeline_class(MyNode)
    config = attrs.evolve(config, port=11113)      # an override, validated again
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import ssl
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from dicomnode.errors import ConfigurationError
from dicomnode.extension.grinders import resolve_tag
from dicomnode.extension.inputs import AbstractInput, ConfiguredInput
from dicomnode.extension.settings import class_attributes, near_setting
from dicomnode.net import Address, check_ae_title
from dicomnode.net.limits import DEFAULT_LIMITS, Limits
from dicomnode.net.tls import TlsSettings

__all__ = ["SETTINGS", "PipelineConfig"]

FSYNC = ("none", "association", "instance")
VALIDATE_OUTPUTS = ("off", "auto", "structural", "dciodvfy")
REJECTION = ("failure", "discard")
LATE_IMAGES = ("new_job", "ignore", "rerun")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
PATIENT_KEYS = ("plain", "pseudonym")
DEFAULT_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _fail(setting: str, value: object, allowed: str) -> ConfigurationError:
    return ConfigurationError(f"setting {setting!r} must be {allowed}, got {value!r}")


def _ae(_i: object, a: attrs.Attribute[Any], value: object) -> None:
    try:
        check_ae_title(value, a.name)
    except ValueError as error:
        raise ConfigurationError(f"setting {a.name!r}: {error}") from None


def _port(_i: object, a: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise _fail(a.name, value, "an integer from 1 to 65535 (0: any free port)")


def _ip(_i: object, a: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not value:
        raise _fail(a.name, value, "an IP address or host name such as '0.0.0.0' or '127.0.0.1'")


def _optional_port(_i: object, a: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        _port(_i, a, value)


def _token(value: object) -> str | None:
    """``admin_token``: the text, or ``env:NAME`` (read when the endpoint starts, see :meth:`PipelineConfig.admin_secret`)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _fail("admin_token", "(not shown)", "text of at least 16 characters, or 'env:NAME'")
    if value.startswith("env:"):
        if not value[4:]:
            raise _fail("admin_token", value, "'env:NAME' with the name of an environment variable")
        return value
    return _long_enough(value)


def _long_enough(token: str) -> str:
    if len(token) < 16:
        raise ConfigurationError("setting 'admin_token' must be at least 16 characters (make one with: "
                                 "python -c 'import secrets; print(secrets.token_urlsafe(24))')")
    return token


def _is_loopback(ip: str) -> bool:
    if ip == "localhost":
        return True
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


def _choice(choices: tuple[str, ...]) -> Callable[[object, attrs.Attribute[Any], object], None]:
    def check(_i: object, a: attrs.Attribute[Any], value: object) -> None:
        if value not in choices:
            raise _fail(a.name, value, "one of " + ", ".join(repr(c) for c in choices))
    return check


def _optional_positive(_i: object, a: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise _fail(a.name, value, "a positive number or None")


def _positive(_i: object, a: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise _fail(a.name, value, "a positive number")


def _workers(_i: object, a: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail(a.name, value, "an integer of at least 1")


def _arenas(value: object) -> object:
    return None if value == 0 and not isinstance(value, bool) else value  # 0: TOML has no None


def _optional_count(_i: object, a: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail(a.name, value, "an integer of at least 1, or None (0 in TOML): the C library's default")


#: more receiving processes than this is a typo, not a machine
MAXIMUM_RECEIVING_PROCESSES = 64


def _receiving_processes(_i: object, a: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAXIMUM_RECEIVING_PROCESSES:
        raise ConfigurationError(f"setting {a.name!r} must be a whole number from 0 to {MAXIMUM_RECEIVING_PROCESSES} "
                                 f"(0: receive in the node's own process), got {value!r}")


def _limit(_i: object, a: attrs.Attribute[Any], value: object) -> None:
    """A limit of the network edge: what :class:`~dicomnode.net.limits.Limits` allows for it."""
    try:
        Limits(**{a.name: value})  # type: ignore[arg-type]
    except ValueError as error:
        raise ConfigurationError(f"setting {error}") from None


def _configured_inputs(value: object) -> dict[str, ConfiguredInput]:
    """``{name: AbstractInput subclass or ConfiguredInput}`` as ConfiguredInputs, each checked."""
    if not isinstance(value, Mapping) or not value:
        raise _fail("inputs", value, "a non-empty mapping of input name to AbstractInput subclass")
    result = {}
    for name, item in value.items():
        if not isinstance(name, str) or not name:
            raise _fail("inputs key", name, "a non-empty string")
        if isinstance(item, ConfiguredInput):
            result[name] = item
            continue
        if not (isinstance(item, type) and issubclass(item, AbstractInput)):
            raise _fail(f"inputs[{name!r}]", item, "a subclass of dicomnode.AbstractInput, or "
                                                   "AbstractInput.configured(...)")
        _refuse_grinder_name(item)
        try:
            result[name] = ConfiguredInput(item)
        except (ConfigurationError, ValueError) as error:
            raise ConfigurationError(f"setting inputs[{name!r}]: {error}") from None
    return result


def _refuse_grinder_name(cls: type[AbstractInput]) -> None:
    """A grinder given by its registered name: say which object to give, and from which distribution."""
    grinder = vars(cls).get("image_grinder")
    if not isinstance(grinder, str):
        return
    from dicomnode.plugins import get_registry

    provided = get_registry().contributions("grinder").get(grinder)
    if provided is None:
        return  # not a registered name: the input's own check says what is wrong
    target = provided.spec.target
    class_name = target.rpartition(":")[2] if isinstance(target, str) else getattr(target, "__name__", "")
    raise ConfigurationError(
        f"{cls.__name__}.image_grinder = {grinder!r} is the name of a grinder, not a grinder: give {class_name}() "
        f"(distribution {provided.distribution}); names are for TOML pipelines")


def _executor(_i: object, a: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not value:
        raise _fail(a.name, value, "the name of a registered executor such as 'threads' or 'process' "
                                   "('dicomnode plugins --all' lists them)")


def _table(_i: object, a: attrs.Attribute[Any], value: object) -> None:
    if not all(isinstance(key, str) for key in value):  # type: ignore[attr-defined]
        raise _fail(a.name, value, "a table (mapping) of setting names to values")


def _services(value: object) -> dict[str, dict[str, Any]]:
    """``{service name: its settings table}``, each name a registered service's (checked when the node is made)."""
    if not isinstance(value, Mapping):
        raise _fail("services", type(value).__name__, "a table of service name -> that service's settings table, "
                                       "such as {'stow': {'port': 8080}}")
    result = {}
    for name, settings in value.items():
        if not isinstance(name, str) or not name:
            raise _fail("services key", name, "the name of a registered service such as 'stow'")
        if not isinstance(settings, Mapping) or not all(isinstance(key, str) for key in settings):
            raise _fail(f"services[{name!r}]", type(settings).__name__,
                        "a table of that service's settings (empty for its defaults)")
        result[name] = dict(settings)
    return result


def _endpoints(_i: object, a: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, Mapping):
        raise _fail(a.name, value, "a mapping of AE title to dicomnode.net.Address")
    for title, address in value.items():
        if not isinstance(address, Address):
            raise _fail(f"{a.name}[{title!r}]", address, "an Address(ip, port, ae_title)")


def _calling(_i: object, a: attrs.Attribute[Any], value: object) -> None:
    for title in value:  # type: ignore[attr-defined]
        try:
            check_ae_title(title, a.name)
        except ValueError as error:
            raise ConfigurationError(f"setting {a.name!r}: {error}") from None


def _tag(value: object) -> int:
    try:
        return int(resolve_tag(value, "patient_identifier_tag"))  # type: ignore[arg-type]
    except ValueError as error:
        raise ConfigurationError(f"setting {error}") from None


def _path(value: object) -> Path | None:
    return None if value is None or value == "" else Path(value)  # type: ignore[arg-type]


def _log_level(value: object) -> str:
    text = logging.getLevelName(value) if isinstance(value, int) else str(value).upper()
    if text not in LOG_LEVELS:
        raise _fail("log_level", value, "one of " + ", ".join(LOG_LEVELS))
    return text


def _contexts(value: object) -> tuple[str, ...]:
    """SOP class UIDs, from strings or pynetdicom presentation contexts; empty: all storage classes."""
    result = []
    for item in value or ():  # type: ignore[attr-defined]
        uid = getattr(item, "abstract_syntax", item)
        if not isinstance(uid, str) or not uid:
            raise _fail("supported_contexts", item, "SOP class UIDs or pynetdicom presentation contexts")
        result.append(str(uid))
    return tuple(result)


@attrs.frozen
class PipelineConfig:
    """Every setting of a pipeline, validated; see ``docs/configuration.md`` for each one."""

    inputs: Mapping[str, ConfiguredInput] = attrs.field(converter=_configured_inputs)
    name: str = "dicomnode"
    ae_title: str = attrs.field(default="DICOMNODE", validator=_ae)
    ip: str = attrs.field(default="0.0.0.0", validator=_ip)
    port: int = attrs.field(default=11112, validator=_port)
    supported_contexts: tuple[str, ...] = attrs.field(default=(), converter=_contexts)
    require_called_aet: bool = attrs.field(default=False, converter=bool)
    require_calling_aet: tuple[str, ...] = attrs.field(default=(), converter=tuple, validator=_calling)
    known_endpoints: Mapping[str, Address] = attrs.field(factory=dict, converter=dict, validator=_endpoints)
    patient_identifier_tag: int = attrs.field(default=0x00100020, converter=_tag)
    data_directory: Path | None = attrs.field(default=None, converter=_path)
    lazy_storage: bool = attrs.field(default=False, converter=bool)
    executor: str = attrs.field(default="threads", validator=_executor)
    executor_settings: Mapping[str, Any] = attrs.field(factory=dict, converter=dict, validator=_table)
    processing_workers: int = attrs.field(default=2, validator=_workers)
    study_expiration_days: float | None = attrs.field(default=14.0, validator=_optional_positive)
    stable_time: float | None = attrs.field(default=None, validator=_optional_positive)
    fsync: str = attrs.field(default="none", validator=_choice(FSYNC))
    rejection_policy: str = attrs.field(default="discard", validator=_choice(REJECTION))
    late_images: str = attrs.field(default="new_job", validator=_choice(LATE_IMAGES))
    late_images_window: float = attrs.field(default=3600.0, validator=_positive)
    maximum_inflated_size: int = attrs.field(default=32 * 1024 * 1024, validator=_workers)
    validate_outputs: str = attrs.field(default="off", validator=_choice(VALIDATE_OUTPUTS))
    maximum_associations: int = attrs.field(default=32, validator=_workers)
    receiving_processes: int = attrs.field(default=0, validator=_receiving_processes)
    services: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict, converter=_services)
    malloc_arenas: int | None = attrs.field(default=2, converter=_arenas, validator=_optional_count)
    release_idle_memory: bool = attrs.field(default=True, converter=bool)
    maintenance_thread: bool = attrs.field(default=True, converter=bool)
    maintenance_interval: float = attrs.field(default=60.0, validator=_positive)
    quarantine_retention_days: float | None = attrs.field(default=90.0, validator=_optional_positive)
    outbox_retry_delay: float = attrs.field(default=60.0, validator=_positive)
    outbox_max_delay: float = attrs.field(default=3600.0, validator=_positive)
    tls_certificate: Path | None = attrs.field(default=None, converter=_path)
    tls_key: Path | None = attrs.field(default=None, converter=_path)
    tls_ca: Path | None = attrs.field(default=None, converter=_path)
    history_retention_days: float | None = attrs.field(default=90.0, validator=_optional_positive)
    admin_port: int | None = attrs.field(default=None, validator=_optional_port)
    admin_ip: str = attrs.field(default="127.0.0.1", validator=_ip)
    admin_token: str | None = attrs.field(default=None, converter=_token, repr=False)
    log_level: str = attrs.field(default="INFO", converter=_log_level)
    log_format: str = DEFAULT_LOG_FORMAT
    log_json: bool = attrs.field(default=False, converter=bool)
    log_patient_keys: str = attrs.field(default="plain", validator=_choice(PATIENT_KEYS))
    log_output: Path | None = attrs.field(default=None, converter=_path)
    log_max_bytes: int = attrs.field(default=10_000_000, validator=_workers)
    log_backup_count: int = attrs.field(default=5, validator=_workers)
    # --- the network edge's limits: dicomnode.net.limits.Limits validates them (docs/security-and-limits.md)
    maximum_pdu_size: int = attrs.field(default=DEFAULT_LIMITS.maximum_pdu_size, validator=_limit)
    maximum_dataset_size: int = attrs.field(default=DEFAULT_LIMITS.maximum_dataset_size, validator=_limit)
    connection_timeout: float = attrs.field(default=DEFAULT_LIMITS.connection_timeout, validator=_limit)
    pdu_timeout: float = attrs.field(default=DEFAULT_LIMITS.pdu_timeout, validator=_limit)
    idle_timeout: float = attrs.field(default=DEFAULT_LIMITS.idle_timeout, validator=_limit)
    maximum_associations_per_address: int = attrs.field(
        default=DEFAULT_LIMITS.maximum_associations_per_address, validator=_limit)
    maximum_pending_connections: int = attrs.field(default=DEFAULT_LIMITS.maximum_pending_connections,
                                                   validator=_limit)
    close_receive_timeout: float = attrs.field(default=DEFAULT_LIMITS.close_receive_timeout, validator=_limit)
    # --- end of the network edge's limits
    #: seconds closing waits for the jobs running (they run again at the next start when they did not end)
    close_timeout: float = attrs.field(default=30.0, validator=_positive)

    def limits(self) -> Limits:
        """The network edge's limits, from the settings of the same names."""
        return Limits(**{field.name: getattr(self, field.name) for field in attrs.fields(Limits)})

    def tls(self) -> TlsSettings | None:
        """The server's TLS settings, or None when ``tls_certificate`` is not set."""
        if self.tls_certificate is None:
            return None
        try:
            return TlsSettings(self.tls_certificate, self.tls_key, self.tls_ca)
        except ConfigurationError as error:
            raise ConfigurationError(f"setting {error}") from None

    def __attrs_post_init__(self) -> None:
        if self.lazy_storage and self.data_directory is None:
            raise ConfigurationError(
                "setting 'lazy_storage' needs 'data_directory': lazy datasets are read back from "
                "the stored files"
            )
        if self.receiving_processes and not hasattr(socket, "send_fds"):
            raise ConfigurationError("setting 'receiving_processes' needs a system that passes sockets between "
                                     "processes (Linux, macOS, other Unix); set it to 0 here")
        if self.receiving_processes and (self.data_directory is None or not self.lazy_storage):
            raise ConfigurationError(
                f"setting 'receiving_processes' = {self.receiving_processes} needs 'data_directory' and "
                "'lazy_storage' = true: the receiving processes write each instance to the data directory and "
                "the node holds its header"
            )
        if self.fsync != "none" and self.data_directory is None:
            raise ConfigurationError(f"setting 'fsync' = {self.fsync!r} needs 'data_directory'")
        if (self.tls_key is not None or self.tls_ca is not None) and self.tls_certificate is None:
            raise ConfigurationError("settings 'tls_key' and 'tls_ca' need 'tls_certificate' (the node's "
                                     "certificate, PEM)")
        for name, spec in self.inputs.items():
            endpoint = spec.create().query_endpoint
            if isinstance(endpoint, str) and endpoint not in self.known_endpoints:
                known = ", ".join(repr(title) for title in self.known_endpoints) or "none"
                raise ConfigurationError(f"setting inputs[{name!r}]: query_endpoint {endpoint!r} is not a known "
                                         f"endpoint (known_endpoints: {known})")
        if self.admin_port is not None and self.admin_token is None and not _is_loopback(self.admin_ip):
            raise ConfigurationError(
                f"setting 'admin_ip' = {self.admin_ip!r} serves the admin endpoint beyond this machine, which "
                "needs 'admin_token' (at least 16 characters, or 'env:NAME'); or keep admin_ip = '127.0.0.1'")
        for setting in ("tls_certificate", "tls_key", "tls_ca"):
            path = getattr(self, setting)
            if path is not None and not path.is_file():
                raise ConfigurationError(f"setting {setting!r} must name a readable PEM file, got {str(path)!r}")

    def admin_secret(self) -> str | None:
        """The admin token itself: ``admin_token``, or the environment variable ``env:NAME`` names.

        Read when the admin endpoint starts, so that a command that only reads
        the pipeline's settings (``dicomnode history -p``) needs no secret.
        """
        token = self.admin_token
        if token is None or not token.startswith("env:"):
            return token
        name = token[4:]
        found = os.environ.get(name)
        if not found:
            raise ConfigurationError(f"setting 'admin_token' = 'env:{name}': the environment variable {name} is "
                                     "not set or empty")
        return _long_enough(found)

    def ssl_context(self) -> ssl.SSLContext | None:
        """The server-side TLS context, or None when ``tls_certificate`` is not set.

        With ``tls_ca`` the node also requires a client certificate signed by it.
        """
        tls = self.tls()
        return None if tls is None else tls.server_context()

    @classmethod
    def from_pipeline_class(cls, pipeline: type[Any], **overrides: Any) -> PipelineConfig:
        """Read the settings from an ``AbstractPipeline`` subclass's attributes, then ``overrides``.

        Only the attributes the user's classes set count (the nearest class
        wins); a setting none of them sets has its default here. An attribute
        that is almost a setting (``ae_tile``, ``data_dir``) or a setting that
        was renamed is a ConfigurationError naming the setting meant.
        """
        names = (set(SETTINGS) - {"inputs"}) | {"input"}  # the class attribute is ``input``
        values: dict[str, Any] = {}
        for klass, name, value in class_attributes(pipeline, _is_framework_pipeline):
            if name in names:
                values.setdefault("inputs" if name == "input" else name, value)
                continue
            _refuse_near_miss(f"{klass.__name__}.{name}", name, names)
        values.setdefault("name", getattr(pipeline, "__name__", "dicomnode"))
        if "input" in overrides:  # the class attribute's name, which users know
            overrides = {**overrides, "inputs": overrides["input"]}
            del overrides["input"]
        for name in overrides:
            if name not in SETTINGS:
                _refuse_near_miss(f"keyword argument {name}", name, set(SETTINGS))
                raise ConfigurationError(f"unknown setting {name!r}; known: {', '.join(SETTINGS)}")
        values.update(overrides)
        return cls(**values)


#: every setting's name, in declaration order
SETTINGS: tuple[str, ...] = tuple(field.name for field in attrs.fields(PipelineConfig))

#: settings that were renamed or replaced, and what to write instead
RENAMED = {
    "processing_directory": "executor = \"process\" with executor_settings = {\"directory\": ...}",
}


def _is_framework_pipeline(cls: type) -> bool:
    """dicomnode's own pipeline classes (they say so in their body), whose attributes are not a user's settings."""
    return bool(vars(cls).get("_framework_class", False))


def _refuse_near_miss(where: str, name: str, names: set[str]) -> None:
    if name in RENAMED:
        raise ConfigurationError(f"{where}: the setting {name!r} is gone; write {RENAMED[name]}")
    guess = near_setting(name, names)
    if guess is not None:
        raise ConfigurationError(f"{where} is not a setting; did you mean {guess!r}? (an attribute of your "
                                 "own with that name can start with an underscore)")
