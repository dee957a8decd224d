"""Pipelines declared in a TOML file instead of a Python class.

A TOML pipeline names its inputs, grinders and outputs by the names they are
registered under (``dicomnode plugins --all`` lists them), the processing
function as ``"module:function"``, and the node settings under ``[node]``::

    name = "store"                       # optional; the file name without .toml by default
    process = "my_module:process"        # my_module.py may sit beside this file
    type = "queued"                      # "pipeline" (default), "threaded" or "queued"

    [node]                               # every setting of docs/configuration.md
    ae_title = "STORE"
    port = 11112
    data_directory = "data"              # relative paths are relative to this file's folder

    [node.known_endpoints.PACS]
    ip = "127.0.0.1"
    port = 4242
    ae_title = "ORTHANC"

    [inputs.CT]
    type = "dicom"                       # a registered input; "dicom" by default
    required_values = { Modality = "CT" }
    required_tags = ["SeriesInstanceUID"]
    grinder = "list"                     # or { name = "tag", tags = ["InstanceNumber"] }
    images = 300                         # validate(): at least this many images

    [[outputs]]
    type = "file"
    directory = "results"

The file is parsed straight into the same validated
:class:`~dicomnode.server.config.PipelineConfig` a pipeline written in Python
gets (inputs become :class:`~dicomnode.extension.inputs.ConfiguredInput`
values of the registered input classes; no class is made at run time), and a
bad value is a :class:`~dicomnode.errors.ConfigurationError` that names the
setting, the value and what is allowed. :func:`load_pipeline` returns a
:class:`DeclaredPipeline`: call it (with overrides, as a class) to build the
node.

``process(input_container)`` may return outputs itself (one
:class:`~dicomnode.extension.outputs.PipelineOutput` or a list), or datasets (one
or a list), which every ``[[outputs]]`` entry then delivers. An output is
built from its table in one of three ways: its class's
``from_config(settings, datasets)`` classmethod when it has one; else, with
``directory = "..."`` as ``Output([(Path(directory), datasets)], **rest)``;
with ``destination = "PACS"`` (a known endpoint) or an inline
``{ ip, port, ae_title }`` table as ``Output([(Address, datasets)], **rest)``;
an output with neither is built as ``Output(**rest)``.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from pydicom import Dataset

from dicomnode.errors import ConfigurationError, PluginError
from dicomnode.extension.inputs import ConfiguredInput
from dicomnode.extension.series import SELECTIONS, contains
from dicomnode.net import Address

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

if TYPE_CHECKING:
    from dicomnode.extension.outputs import PipelineOutput
    from dicomnode.plugins import PluginRegistry
    from dicomnode.server.config import PipelineConfig
    from dicomnode.server.nodes import AbstractPipeline

__all__ = ["DeclaredPipeline", "load_pipeline", "load_pipeline_config", "parse_pipeline", "result_outputs"]

_PIPELINE_TYPES = ("pipeline", "threaded", "queued")
_TOP_LEVEL = ("name", "process", "type", "node", "inputs", "outputs")
_INPUT_KEYS = ("type", "required_values", "required_tags", "grinder", "images", "validate",
               "enforce_single_series", "series_selection", "completeness", "query_endpoint", "query_interval")
_PATH_SETTINGS = ("data_directory", "log_output", "tls_certificate", "tls_key", "tls_ca")
_IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
_HEX_TAG = re.compile(r"^(0x)?[0-9A-Fa-f]{8}$")


def _error(setting: str, value: object, allowed: str) -> ConfigurationError:
    return ConfigurationError(f"{setting} = {value!r}: {allowed}")


def _table(value: object, setting: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _error(setting, value, "must be a table")
    return value


def _check_keys(table: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigurationError(
                f"{where}: unknown setting {key!r}; allowed: {', '.join(allowed)}"
            )


def _import(reference: object, setting: str, base: Path) -> Any:
    """Import ``"module:attribute"``; modules beside the TOML file are found first."""
    if not isinstance(reference, str) or not _IMPORT_PATH.match(reference):
        raise _error(setting, reference, "must be 'module:function', for example 'my_module:process'")
    module_name, _, attribute = reference.partition(":")
    folder = str(base)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise _error(setting, reference, f"cannot import {module_name!r} ({error})") from error
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise _error(setting, reference, f"module {module_name!r} has no {attribute!r}") from None


def _tag(key: str, setting: str) -> str | int:
    if _HEX_TAG.match(key):
        return int(key, 16)
    return key


def _required_values(value: object, setting: str) -> dict[str | int, Any]:
    table = _table(value, setting)
    result: dict[str | int, Any] = {}
    for key, expected in table.items():
        if isinstance(expected, dict) and set(expected) == {"contains"} and isinstance(expected["contains"], str):
            result[_tag(key, setting)] = contains(expected["contains"])
        elif isinstance(expected, dict):
            if set(expected) != {"regex"} or not isinstance(expected["regex"], str):
                raise _error(f"{setting}.{key}", expected, "must be a value, a list of values, "
                             "{ regex = \"...\" } or { contains = \"...\" }")
            try:
                result[_tag(key, setting)] = re.compile(expected["regex"])
            except re.error as error:
                raise _error(f"{setting}.{key}.regex", expected["regex"],
                             f"must be a regular expression ({error})") from None
        else:
            result[_tag(key, setting)] = expected
    return result


def _grinder(value: object, setting: str, registry: PluginRegistry) -> Any:
    """A grinder from ``"name"`` or ``{ name = "...", option = ... }``; nested for ``many``."""
    if isinstance(value, str):
        name, options = value, {}
    elif isinstance(value, dict) and isinstance(value.get("name"), str):
        options = dict(value)
        name = options.pop("name")
    else:
        raise _error(setting, value, "must be a registered grinder name or { name = \"...\", ... }")
    try:
        cls = registry.grinder(name)
    except PluginError as error:
        raise ConfigurationError(f"{setting} = {name!r}: {error}") from None
    arguments: list[Any] = []
    if "grinders" in options:
        nested = options.pop("grinders")
        if not isinstance(nested, list):
            raise _error(f"{setting}.grinders", nested, "must be a list of grinders")
        arguments = [_grinder(item, f"{setting}.grinders[{i}]", registry) for i, item in enumerate(nested)]
    try:
        return cls(*arguments, **options)
    except (TypeError, ValueError) as error:
        raise ConfigurationError(f"{setting} = {value!r}: the grinder {name!r} refused it: {error}") from None


def _input(name: str, value: object, base: Path, registry: PluginRegistry) -> ConfiguredInput:
    """An ``[inputs.NAME]`` table as the registered input class with the table's settings."""
    where = f"[inputs.{name}]"
    table = _table(value, where)
    kind = table.get("type", "dicom")
    try:
        parent = registry.input(kind) if isinstance(kind, str) else None
    except PluginError as error:
        raise ConfigurationError(f"{where} type = {kind!r}: {error}") from None
    if parent is None:
        raise _error(f"{where} type", kind, "must be a registered input name such as 'dicom'")
    # an input class may take further keys (the historic input: its PACS address, …)
    extra = dict(parent.toml_settings)
    _check_keys(table, (*_INPUT_KEYS, *extra), where)
    settings: dict[str, Any] = {}
    for key, convert in extra.items():
        if key in table:
            try:
                settings[key] = convert(table[key])
            except (TypeError, ValueError) as error:
                raise ConfigurationError(f"{where} {key} = {table[key]!r}: {error}") from None
    if "required_values" in table:
        settings["required_values"] = _required_values(table["required_values"], f"{where} required_values")
    if "required_tags" in table:
        tags = table["required_tags"]
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise _error(f"{where} required_tags", tags, "must be a list of DICOM keywords")
        settings["required_tags"] = [_tag(t, where) for t in tags]
    if "grinder" in table:
        settings["image_grinder"] = _grinder(table["grinder"], f"{where} grinder", registry)
    if "enforce_single_series" in table:
        if not isinstance(table["enforce_single_series"], bool):
            raise _error(f"{where} enforce_single_series", table["enforce_single_series"], "must be true or false")
        settings["enforce_single_series"] = table["enforce_single_series"]
    if "series_selection" in table:
        settings["series_selection"] = _selection(table["series_selection"], f"{where} series_selection", base)
    for key in ("completeness", "query_endpoint"):
        if key in table:
            if not isinstance(table[key], str):
                raise _error(f"{where} {key}", table[key], "must be text")
            settings[key] = table[key]
    if "query_interval" in table:
        settings["query_interval"] = table["query_interval"]
    if "images" in table and "validate" in table:
        raise ConfigurationError(f"{where}: give either images or validate, not both")
    if "images" in table:
        count = table["images"]
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise _error(f"{where} images", count, "must be a whole number of images, at least 1")
        settings["minimum_images"] = count
    elif "validate" in table:
        check = _import(table["validate"], f"{where} validate", base)
        if not callable(check):
            raise _error(f"{where} validate", table["validate"], "must name a function check(input) -> bool")
        settings["validator"] = check
    try:
        return ConfiguredInput(parent, settings)
    except ValueError as error:  # ConfigurationError included: a bad keyword is reported at start
        raise ConfigurationError(f"{where}: {error}") from None


def _selection(value: object, setting: str, base: Path) -> Any:
    """``"largest"``, ``"thinnest"``, ``"module:function"`` or a tag rule table."""
    if isinstance(value, str) and value in SELECTIONS:
        return value
    if isinstance(value, str) and _IMPORT_PATH.match(value):
        select = _import(value, setting, base)
        if not callable(select):
            raise _error(setting, value, "must name a function select(summaries) -> summary or UID")
        return select
    if isinstance(value, dict) and value:
        return _required_values(value, setting)
    raise _error(setting, value, "must be 'largest', 'thinnest', 'module:function' or a table of tag rules "
                                 "such as { SeriesDescription = { regex = \"AX.*\" } }")


def _endpoint(value: object, setting: str) -> Address:
    table = _table(value, setting)
    _check_keys(table, ("ip", "port", "ae_title"), setting)
    try:
        return Address(table.get("ip", "127.0.0.1"), table.get("port"), table.get("ae_title"))  # type: ignore[arg-type]
    except (TypeError, ValueError) as error:
        raise ConfigurationError(f"{setting}: {error}") from None


class _OutputRecipe:
    """One ``[[outputs]]`` entry: the registered output and how to build it for a result."""

    def __init__(self, number: int, table: dict[str, Any], endpoints: Mapping[str, Address],
                 base: Path, registry: PluginRegistry) -> None:
        where = f"[[outputs]] {number}"
        kind = table.get("type")
        if not isinstance(kind, str):
            raise _error(f"{where} type", kind, "must be a registered output name such as 'file' or 'dicom'")
        try:
            self.cls = registry.output(kind)
        except PluginError as error:
            raise ConfigurationError(f"{where} type = {kind!r}: {error}") from None
        self.where = f"{where} ({kind})"
        self.settings = {k: v for k, v in table.items() if k != "type"}
        self.target: Path | Address | None = None
        rest = dict(self.settings)
        if "directory" in rest:
            directory = rest.pop("directory")
            if not isinstance(directory, str) or not directory:
                raise _error(f"{self.where} directory", directory, "must be a folder path")
            self.target = base / directory
        elif "destination" in rest:
            destination = rest.pop("destination")
            if isinstance(destination, str):
                if destination not in endpoints:
                    raise _error(f"{self.where} destination", destination,
                                 f"must be one of [node.known_endpoints] ({', '.join(sorted(endpoints)) or 'none'}) "
                                 "or a table { ip, port, ae_title }")
                self.target = endpoints[destination]
            else:
                self.target = _endpoint(destination, f"{self.where} destination")
        self.options = rest
        if hasattr(self.cls, "from_config"):
            self._check_from_config()
        else:
            self._check_signature()

    def _check_from_config(self) -> None:
        """Build the output once without datasets, so wrong settings are refused when the file is loaded."""
        try:
            self.cls.from_config(self.settings, [])  # type: ignore[attr-defined]
        except (ConfigurationError, TypeError, ValueError) as error:
            raise ConfigurationError(f"{self.where}: {error}") from None

    def _check_signature(self) -> None:
        arguments: tuple[Any, ...] = ([(self.target, [])],) if self.target is not None else ()
        try:
            inspect.signature(self.cls).bind(*arguments, **self.options)
        except TypeError as error:
            raise ConfigurationError(f"{self.where}: the settings do not fit the output: {error}") from None
        except ValueError:
            pass  # no signature to check (a builtin): the output will say so when built

    def build(self, datasets: list[Dataset], ae_title: str | None = None) -> PipelineOutput:
        """The output that delivers ``datasets``.

        An output that takes an ``ae_title`` and was given none uses the node's
        (``ae_title``): a DICOM peer then sees the node calling, not a default.
        """
        from_config = getattr(self.cls, "from_config", None)
        if from_config is not None:
            output: PipelineOutput = from_config(self.settings, datasets)
            return output
        options = dict(self.options)
        if ae_title is not None and "ae_title" not in options and self._takes("ae_title"):
            options["ae_title"] = ae_title
        if self.target is not None:
            output = self.cls([(self.target, datasets)], **options)  # type: ignore[call-arg]
        else:
            output = self.cls(**options)
        return output

    def _takes(self, name: str) -> bool:
        try:
            return name in inspect.signature(self.cls).parameters
        except (TypeError, ValueError):
            return False


def result_outputs(result: object, recipes: Sequence[_OutputRecipe],
                    ae_title: str | None = None) -> list[PipelineOutput]:
    """What a TOML pipeline's process returned, as the outputs to dispatch."""
    from dicomnode.extension.outputs import NoOutput, PipelineOutput

    if isinstance(result, PipelineOutput):
        return [result]
    if isinstance(result, (list, tuple)) and result and all(isinstance(r, PipelineOutput) for r in result):
        return list(result)
    if result is None:
        return [NoOutput()]
    if isinstance(result, Dataset):
        datasets = [result]
    elif isinstance(result, Iterable) and not isinstance(result, (str, bytes, Mapping)):
        datasets = list(result)
        if not all(isinstance(d, Dataset) for d in datasets):
            raise TypeError("process must return outputs, datasets, a list of datasets or None")
    else:
        raise TypeError(
            f"process must return outputs, datasets, a list of datasets or None, got {type(result).__name__}"
        )
    if not recipes:
        raise TypeError("process returned datasets but the pipeline declares no [[outputs]] to deliver them")
    return [recipe.build(datasets, ae_title) for recipe in recipes]


def _read(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            document: dict[str, Any] = tomllib.load(handle)
            return document
    except FileNotFoundError:
        raise ConfigurationError(f"pipeline file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigurationError(f"pipeline file {str(path)!r} is not valid TOML: {error}") from None


@attrs.frozen(hash=False)
class DeclaredPipeline:
    """A pipeline declared in TOML: its validated configuration, its kind, its process and outputs.

    Call it as you would a pipeline class — ``declared()`` or
    ``declared(port=0)`` — to build the node; ``source`` is the file it was
    read from (another process, a spawned job or a cluster worker, reads it
    again from there).
    """

    config: PipelineConfig
    kind: str
    process: Callable[[Any], Any]
    outputs: tuple[_OutputRecipe, ...]
    source: Path | None = None

    @property
    def name(self) -> str:
        """The pipeline's name."""
        return self.config.name

    def __call__(self, config: PipelineConfig | None = None, **overrides: Any) -> AbstractPipeline:
        """The node: a pipeline of this declaration's kind with its configuration (and ``overrides``)."""
        from dicomnode.server.declared import pipeline_class

        return pipeline_class(self.kind)(config or self.config, declared=self, **overrides)


def parse_pipeline(document: Mapping[str, Any], base: Path | str = ".", *, name: str = "pipeline",
                   registry: PluginRegistry | None = None, source: Path | str | None = None,
                   ) -> DeclaredPipeline:
    """The pipeline a parsed TOML document declares.

    ``base`` is the folder relative paths and process modules are found in;
    ``source`` the file the document was read from, if any (a pipeline read
    from a file can run its jobs in other processes).
    """
    from dicomnode.plugins import get_registry
    from dicomnode.server.config import PipelineConfig

    registry = registry or get_registry()
    folder = Path(base).resolve()
    _check_keys(document, _TOP_LEVEL, "the pipeline file")
    kind = document.get("type", "pipeline")
    if kind not in _PIPELINE_TYPES:
        raise _error("type", kind, f"must be one of {', '.join(_PIPELINE_TYPES)}")
    pipeline_name = document.get("name", name)
    if not isinstance(pipeline_name, str) or not pipeline_name.strip():
        raise _error("name", pipeline_name, "must be a non-empty text")
    node = dict(_table(document.get("node", {}), "[node]"))
    _check_keys(node, _node_settings(), "[node]")
    for setting in _PATH_SETTINGS:
        value = node.get(setting)
        if isinstance(value, str) and value:
            node[setting] = str(folder / value)
    endpoints: dict[str, Address] = {}
    if "known_endpoints" in node:
        for endpoint, value in _table(node["known_endpoints"], "[node.known_endpoints]").items():
            endpoints[endpoint] = _endpoint(value, f"[node.known_endpoints.{endpoint}]")
        node["known_endpoints"] = endpoints
    inputs = {input_name: _input(input_name, value, folder, registry)
              for input_name, value in _table(document.get("inputs", {}), "[inputs]").items()}
    outputs = document.get("outputs", [])
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise _error("outputs", outputs, "must be an array of tables: [[outputs]]")
    recipes = tuple(_OutputRecipe(number, table, endpoints, folder, registry)
                    for number, table in enumerate(outputs, start=1))
    if "process" not in document:
        raise ConfigurationError("the pipeline file must name its process function: process = 'module:function'")
    function = _import(document["process"], "process", folder)
    if not callable(function):
        raise _error("process", document["process"], "must name a function process(input_container)")
    node.setdefault("name", pipeline_name)
    try:
        config = PipelineConfig(inputs=inputs, **node)
    except ConfigurationError as error:
        raise ConfigurationError(f"[node] {error}") from None
    except TypeError as error:  # a required setting is missing
        raise ConfigurationError(f"[node] {error}") from None
    return DeclaredPipeline(config, kind, function, recipes, None if source is None else Path(source).resolve())


def _node_settings() -> tuple[str, ...]:
    """The settings a ``[node]`` table may set: the fields of PipelineConfig but the inputs."""
    from dicomnode.server.config import SETTINGS

    return tuple(name for name in SETTINGS if name != "inputs")


def load_pipeline(path: Path | str, *, registry: PluginRegistry | None = None) -> DeclaredPipeline:
    """The pipeline declared by the TOML file at ``path``.

    Run it like a pipeline class: ``load_pipeline("store.toml")().open()``,
    or ``dicomnode run store.toml``.
    """
    file = Path(path)
    return parse_pipeline(_read(file), file.resolve().parent, name=file.stem, registry=registry, source=file)


def load_pipeline_config(path: Path | str, *, registry: PluginRegistry | None = None) -> PipelineConfig:
    """The validated :class:`~dicomnode.server.config.PipelineConfig` of the TOML file at ``path``."""
    return load_pipeline(path, registry=registry).config
