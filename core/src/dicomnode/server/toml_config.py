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

The file becomes an :class:`~dicomnode.server.nodes.AbstractPipeline`
subclass with exactly these class attributes, so it is validated by the same
:class:`~dicomnode.server.config.PipelineConfig` as a pipeline written in
Python, and a bad value is a :class:`~dicomnode.errors.ConfigurationError`
that names the setting, the value and what is allowed.

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

import copyreg
import importlib
import inspect
import re
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom import Dataset

from dicomnode.errors import ConfigurationError, PluginError
from dicomnode.net import Address

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

if TYPE_CHECKING:
    from dicomnode.extension.inputs import AbstractInput
    from dicomnode.extension.outputs import PipelineOutput
    from dicomnode.plugins import PluginRegistry
    from dicomnode.server.config import PipelineConfig
    from dicomnode.server.nodes import AbstractPipeline

__all__ = ["load_pipeline", "load_pipeline_config", "parse_pipeline"]

_PIPELINE_TYPES = ("pipeline", "threaded", "queued")
_TOP_LEVEL = ("name", "process", "type", "node", "inputs", "outputs")
_INPUT_KEYS = ("type", "required_values", "required_tags", "grinder", "images", "validate",
               "enforce_single_series", "key_tag")
_PATH_SETTINGS = ("data_directory", "processing_directory", "log_output", "tls_certificate", "tls_key", "tls_ca")
_IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
_HEX_TAG = re.compile(r"^(0x)?[0-9A-Fa-f]{8}$")


class _Declared(type):
    """Metaclass of the classes a TOML file declares.

    They pickle as "load that file again", so a pipeline declared in TOML can
    run ``process`` in a spawned process (``processing_directory``), which
    gets the pipeline class and its inputs by pickling.
    """

    _toml_file: str | None = None
    _toml_input: str | None = None


_METACLASSES: dict[type, type] = {type: _Declared}
_LOADED: dict[str, type[Any]] = {}
_LOADED_LOCK = threading.Lock()


def _metaclass_for(parent: type) -> type:
    meta = type(parent)
    if meta not in _METACLASSES:
        # a plugin's input may have its own metaclass (abc.ABCMeta): combine, and register it too
        _METACLASSES[meta] = type(f"_Declared{meta.__name__}", (_Declared, meta), {})
        copyreg.pickle(_METACLASSES[meta], _reduce_declared)
    return _METACLASSES[meta]


def _declared_class(file: str, input_name: str | None) -> type[Any]:
    """The class a TOML file declares, loaded once per process (the target of unpickling)."""
    with _LOADED_LOCK:
        pipeline = _LOADED.get(file)
    if pipeline is None:
        pipeline = load_pipeline(file)
    return pipeline if input_name is None else pipeline.input[input_name]


def _reduce_declared(cls: _Declared) -> tuple[Any, tuple[str, str | None]]:
    if cls._toml_file is None:
        raise TypeError(f"{cls.__name__} was declared from a mapping, not a file, so it cannot be sent "
                        "to another process; load it with load_pipeline(path) to use processing_directory")
    return _declared_class, (cls._toml_file, cls._toml_input)


copyreg.pickle(_Declared, _reduce_declared)


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
        if isinstance(expected, dict):
            if set(expected) != {"regex"} or not isinstance(expected["regex"], str):
                raise _error(f"{setting}.{key}", expected,
                             "must be a value, a list of values, or { regex = \"...\" }")
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


def _input_class(name: str, value: object, base: Path, registry: PluginRegistry,
                 source: str | None) -> type[AbstractInput]:
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
    extra = dict(getattr(parent, "toml_settings", {}))
    _check_keys(table, (*_INPUT_KEYS, *extra), where)
    attributes: dict[str, Any] = {"__module__": __name__, "__qualname__": name}
    for key, convert in extra.items():
        if key in table:
            try:
                attributes[key] = convert(table[key])
            except (TypeError, ValueError) as error:
                raise ConfigurationError(f"{where} {key} = {table[key]!r}: {error}") from None
    if "required_values" in table:
        attributes["required_values"] = _required_values(table["required_values"], f"{where} required_values")
    if "required_tags" in table:
        tags = table["required_tags"]
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise _error(f"{where} required_tags", tags, "must be a list of DICOM keywords")
        attributes["required_tags"] = [_tag(t, where) for t in tags]
    if "grinder" in table:
        attributes["image_grinder"] = _grinder(table["grinder"], f"{where} grinder", registry)
    if "enforce_single_series" in table:
        if not isinstance(table["enforce_single_series"], bool):
            raise _error(f"{where} enforce_single_series", table["enforce_single_series"], "must be true or false")
        attributes["enforce_single_series"] = table["enforce_single_series"]
    if "key_tag" in table:
        if not hasattr(parent, "key_tag"):
            raise _error(f"{where} key_tag", table["key_tag"],
                         f"only inputs that group by a tag take it (type = 'dynamic'), not {kind!r}")
        attributes["key_tag"] = _tag(str(table["key_tag"]), where)
    if "images" in table and "validate" in table:
        raise ConfigurationError(f"{where}: give either images or validate, not both")
    if "images" in table:
        attributes["validate"] = _at_least(table["images"], f"{where} images")
    elif "validate" in table:
        check = _import(table["validate"], f"{where} validate", base)
        if not callable(check):
            raise _error(f"{where} validate", table["validate"], "must name a function check(input) -> bool")
        attributes["validate"] = lambda self: bool(check(self))
    try:
        attributes.update(_toml_file=source, _toml_input=name)
        cls: type[AbstractInput] = _metaclass_for(parent)(name, (parent,), attributes)
        cls()  # resolves the tags now, so a bad keyword is reported at start, not at the first image
    except ValueError as error:
        raise ConfigurationError(f"{where}: {error}") from None
    return cls


def _at_least(count: object, setting: str) -> Callable[[Any], bool]:
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise _error(setting, count, "must be a whole number of images, at least 1")

    def validate(self: Any) -> bool:
        return bool(self.images >= count)

    return validate


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
        if not hasattr(self.cls, "from_config"):
            self._check_signature()

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


def _result_outputs(result: object, recipes: Sequence[_OutputRecipe],
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


def parse_pipeline(document: Mapping[str, Any], base: Path | str = ".", *, name: str = "pipeline",
                   registry: PluginRegistry | None = None, source: Path | str | None = None,
                   ) -> type[AbstractPipeline]:
    """Build the pipeline class a parsed TOML document declares.

    ``base`` is the folder relative paths and process modules are found in;
    ``source`` the file the document was read from, if any (a class declared
    from a file can be sent to a spawned processing process).
    """
    file = str(Path(source).resolve()) if source is not None else None
    from dicomnode.plugins import get_registry
    from dicomnode.server import nodes

    registry = registry or get_registry()
    folder = Path(base).resolve()
    _check_keys(document, _TOP_LEVEL, "the pipeline file")
    kind = document.get("type", "pipeline")
    bases = {"pipeline": nodes.AbstractPipeline, "threaded": nodes.AbstractThreadedPipeline,
             "queued": nodes.AbstractQueuedPipeline}
    if kind not in bases:
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
    inputs = {input_name: _input_class(input_name, value, folder, registry, file)
              for input_name, value in _table(document.get("inputs", {}), "[inputs]").items()}
    outputs = document.get("outputs", [])
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise _error("outputs", outputs, "must be an array of tables: [[outputs]]")
    recipes = [_OutputRecipe(number, table, endpoints, folder, registry)
               for number, table in enumerate(outputs, start=1)]
    if "process" not in document:
        raise ConfigurationError("the pipeline file must name its process function: process = 'module:function'")
    function = _import(document["process"], "process", folder)
    if not callable(function):
        raise _error("process", document["process"], "must name a function process(input_container)")

    def process(self: Any, input_container: Any) -> list[PipelineOutput]:
        return _result_outputs(function(input_container), recipes, self.config.ae_title)

    attributes: dict[str, Any] = {**node, "input": inputs, "process": process, "__module__": __name__,
                                  "__qualname__": pipeline_name, "toml_outputs": tuple(recipes)}
    attributes.setdefault("name", pipeline_name)
    attributes.update(_toml_file=file, _toml_input=None)
    cls: type[AbstractPipeline] = _Declared(_class_name(pipeline_name), (bases[kind],), attributes)  # type: ignore[assignment]
    _validate(cls)
    if file is not None:
        with _LOADED_LOCK:
            _LOADED[file] = cls
    return cls


def _class_name(name: str) -> str:
    words = re.split(r"[^A-Za-z0-9]+", name)
    text = "".join(word[:1].upper() + word[1:] for word in words if word)
    return text if text[:1].isalpha() else f"Pipeline{text}"


def _node_settings() -> tuple[str, ...]:
    """The settings a ``[node]`` table may set: the fields of PipelineConfig but the inputs."""
    from dicomnode.server.config import SETTINGS

    return tuple(name for name in SETTINGS if name != "inputs")


def _validate(cls: type[AbstractPipeline]) -> PipelineConfig:
    from dicomnode.server.config import PipelineConfig

    try:
        return PipelineConfig.from_pipeline_class(cls)
    except ConfigurationError as error:
        raise ConfigurationError(f"[node] {error}") from None


def load_pipeline(path: Path | str, *, registry: PluginRegistry | None = None) -> type[AbstractPipeline]:
    """The pipeline class declared by the TOML file at ``path``.

    Run it like any pipeline: ``load_pipeline("store.toml")().open()``, or
    ``dicomnode run store.toml``.
    """
    file = Path(path)
    return parse_pipeline(_read(file), file.resolve().parent, name=file.stem, registry=registry, source=file)


def load_pipeline_config(path: Path | str, *, registry: PluginRegistry | None = None) -> PipelineConfig:
    """The validated :class:`~dicomnode.server.config.PipelineConfig` of the TOML file at ``path``."""
    return _validate(load_pipeline(path, registry=registry))
