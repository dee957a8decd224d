"""Inputs: the named collections of images a pipeline waits for.

An input class says which images it accepts (``required_tags``,
``required_values``), when it holds enough (``validate``) and how its images
become the value ``process`` receives (``image_grinder``)::

    class CT(AbstractInput):
        required_values = {"Modality": "CT"}
        required_tags = ["SeriesInstanceUID"]
        image_grinder = ListGrinder()

        def validate(self) -> bool:
            return self.images >= 300

A pipeline holds one instance of each input class per patient. A value in
``required_values`` is compared exactly (as text for strings, numbers and
multi-values), or is a compiled regular expression that must match the whole
value as text, or is a callable ``check(value) -> bool``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import attrs
from pydicom import Dataset
from pydicom.datadict import keyword_for_tag
from pydicom.tag import BaseTag

from dicomnode.errors import ConfigurationError, InvalidDatasetError
from dicomnode.extension.completeness import COMPLETENESS, UNKNOWN, Completion, announced
from dicomnode.extension.grinders import IdentityGrinder, resolve_tag
from dicomnode.extension.series import (
    InstanceFacts,
    SeriesSummary,
    check_series_selection,
    select_series,
    summarise,
)
from dicomnode.extension.settings import misspelt, near_setting
from dicomnode.net.address import Address

if TYPE_CHECKING:
    from dicomnode.extension.handles import NodeHandle

__all__ = ["AbstractInput", "ConfiguredInput", "DynamicInput"]

_SOP_INSTANCE_UID = resolve_tag("SOPInstanceUID")
_SERIES_INSTANCE_UID = resolve_tag("SeriesInstanceUID")


def _name(tag: BaseTag) -> str:
    return keyword_for_tag(tag) or f"({tag.group:04X},{tag.element:04X})"


def _as_text(value: Any) -> str:
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def _text_of(dataset: Dataset, tag: BaseTag) -> str:
    """The value of ``tag`` as text ('' when absent): ``get`` with a tag gives the element, not its value."""
    element = dataset.get(tag)
    return "" if element is None or element.value is None else str(element.value).strip()


#: value representations whose values may appear in a log line: codes, UIDs and numbers, never names,
#: dates, identifiers or free text (a rejection reason is logged and sent back as an ErrorComment)
_SHOWABLE_VRS = frozenset({"CS", "UI", "IS", "DS", "US", "SS", "UL", "SL", "FL", "FD", "AT", "UV", "SV"})


def _shown(vr: str | None, value: Any) -> str:
    if vr in _SHOWABLE_VRS:
        return repr(value)
    return f"another {vr or 'unknown'} value (not shown: it may identify the patient)"


def value_matches(actual: Any, expected: Any) -> bool:
    """Whether a dataset's value satisfies one ``required_values`` entry."""
    if isinstance(expected, re.Pattern):
        return expected.fullmatch(_as_text(actual)) is not None
    if callable(expected):
        return bool(expected(actual))
    if actual == expected:
        return True
    return _as_text(actual).strip() == _as_text(expected).strip()


class AbstractInput:
    """Base class of pipeline inputs: one instance per patient collects that patient's images.

    Class attributes a subclass sets:

    ``required_tags``
        tags (keyword or int) an image must have to be accepted;
    ``required_values``
        tag -> exact value, compiled regex (full match) or ``callable(value) -> bool``;
    ``image_grinder``
        the grinder (any ``callable(datasets)``) that makes the value ``process`` gets;
    ``enforce_single_series``
        accept only images of the series of the first image;
    ``exclusive``
        an image this input accepts goes to it alone, not to the patient's
        other inputs, and its sender does not become the patient's calling AE
        title: for images the node fetches itself (prior studies from a PACS);
    ``minimum_images``
        with the default :meth:`validate`: the input is complete with at least
        this many images (None: one);
    ``validator``
        with the default :meth:`validate`: a function ``check(input) -> bool``
        that says when the input is complete;
    ``series_selection``
        accept every series (that passes the other settings) and grind only
        the one chosen when the job starts: ``"largest"``, ``"thinnest"``, a
        tag rule or a function over series summaries
        (:mod:`dicomnode.extension.series`); the others are dropped, logged
        once per series. None (the default): every accepted image is ground;
    ``completeness``
        how the node decides the input holds everything that will come:
        ``"validate"`` (the default: :meth:`validate`, after ``stable_time``
        when the node has one), ``"announced"`` (every series holds as many
        instances as its headers announce) or ``"query"`` (a C-FIND to
        ``query_endpoint`` says how many the PACS has); see
        :mod:`dicomnode.extension.completeness`;
    ``query_endpoint``
        with ``completeness = "query"``: the known endpoint (its AE title) or
        :class:`~dicomnode.net.Address` to ask; None (the default): the
        sender, when it is a known endpoint;
    ``query_interval``
        with ``completeness = "query"``: the fewest seconds between two
        questions about one study (default 5);
    ``toml_settings``
        the further settings of an input class a plugin contributes: key ->
        converter from a TOML value (raising ValueError or TypeError that
        says what is allowed).

    Each setting can also be given per pipeline without a subclass:
    ``AbstractInput.configured(required_values={"Modality": "CT"},
    minimum_images=300)``. A class attribute of a subclass that is almost a
    setting (``required_value``) is an error when the pipeline starts.

    Override :meth:`validate` to say when the input holds enough, and
    :meth:`patient_started` to act when a patient's first image arrives.
    """

    required_tags: ClassVar[Sequence[str | int]] = ()
    required_values: ClassVar[Mapping[str | int, Any]] = {}
    image_grinder: ClassVar[Callable[..., Any]] = IdentityGrinder()
    enforce_single_series: ClassVar[bool] = False
    exclusive: ClassVar[bool] = False
    minimum_images: ClassVar[int | None] = None
    validator: ClassVar[Callable[[Any], bool] | None] = None
    series_selection: ClassVar[Any] = None
    completeness: ClassVar[str] = "validate"
    query_endpoint: ClassVar[str | Address | None] = None
    query_interval: ClassVar[float] = 5.0
    toml_settings: ClassVar[Mapping[str, Callable[[Any], Any]]] = {}

    #: the settings every input has (a plugin's input adds its own in ``toml_settings``)
    BASE_SETTINGS: ClassVar[tuple[str, ...]] = (
        "required_tags", "required_values", "image_grinder", "enforce_single_series", "exclusive",
        "minimum_images", "validator", "series_selection", "completeness", "query_endpoint", "query_interval",
    )

    @classmethod
    def setting_names(cls) -> tuple[str, ...]:
        """Every setting of this input class: the base settings and its ``toml_settings``."""
        return (*cls.BASE_SETTINGS, *(name for name in cls.toml_settings if name not in cls.BASE_SETTINGS))

    @classmethod
    def configured(cls, **settings: Any) -> ConfiguredInput:
        """This input class with ``settings`` given per pipeline: ``CT.configured(minimum_images=300)``.

        The settings are checked now (an unknown name is a ConfigurationError
        that says which setting was meant).
        """
        return ConfiguredInput(cls, settings)

    def __init__(self, **settings: Any) -> None:
        cls = type(self)
        known = cls.setting_names()
        for name, value in settings.items():
            if name not in known:
                guess = near_setting(name, known)
                hint = f"; did you mean {guess!r}?" if guess else f"; its settings are {', '.join(known)}"
                raise ConfigurationError(f"{cls.__name__} has no setting {name!r}{hint}")
            setattr(self, name, value)
        if self.minimum_images is not None and (isinstance(self.minimum_images, bool) or
                                                not isinstance(self.minimum_images, int) or self.minimum_images < 1):
            raise ConfigurationError(f"{cls.__name__}.minimum_images must be a whole number of at least 1, "
                                     f"got {self.minimum_images!r}")
        validator = self.setting("validator")
        if validator is not None and not callable(validator):
            raise ConfigurationError(f"{cls.__name__}.validator must be a function check(input) -> bool, "
                                     f"got {validator!r}")
        self._check_traffic_settings()
        self._required_tags = [resolve_tag(t, f"{cls.__name__}.required_tags") for t in self.required_tags]
        self._required_values = [
            (resolve_tag(t, f"{cls.__name__}.required_values"), v) for t, v in self.required_values.items()
        ]
        selection = self.setting("series_selection")
        self._selection_rule = [(resolve_tag(t, f"{cls.__name__}.series_selection"), v)
                                for t, v in selection.items()] if isinstance(selection, Mapping) else []
        # keyed by SOPInstanceUID: an instance sent twice replaces itself instead of counting twice
        self._datasets: dict[str, Dataset] = {}
        self._paths: dict[str, Path] = {}
        self._series_uid: str | None = None
        # what each image says about its series, kept only when a setting needs it
        self._keeps_facts = selection is not None or self.completeness != "validate"
        self._facts: dict[str, InstanceFacts] = {}
        self._series_headers: dict[str, Dataset] = {}
        self._selected: tuple[int, str | None] | None = None  # (images held when chosen, series chosen)

    def _check_traffic_settings(self) -> None:
        name = type(self).__name__
        problem = check_series_selection(self.setting("series_selection"), name)
        if problem is not None:
            raise ConfigurationError(problem)
        if self.setting("series_selection") is not None and self.enforce_single_series:
            raise ConfigurationError(
                f"{name} sets both enforce_single_series (keep the first series, refuse the others) and "
                "series_selection (accept every series, grind the one chosen): give one")
        if self.completeness not in COMPLETENESS:
            raise ConfigurationError(f"{name}.completeness must be one of "
                                     f"{', '.join(repr(c) for c in COMPLETENESS)}, got {self.completeness!r}")
        endpoint = self.query_endpoint
        if endpoint is not None and not isinstance(endpoint, Address) and (
                not isinstance(endpoint, str) or not endpoint.strip()):
            raise ConfigurationError(f"{name}.query_endpoint must be the AE title of a known endpoint, an "
                                     f"Address, or None (the sender), got {endpoint!r}")
        interval = self.query_interval
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval <= 0:
            raise ConfigurationError(f"{name}.query_interval must be a positive number of seconds, "
                                     f"got {interval!r}")

    # --- what the input accepts -------------------------------------------

    def routing_tags(self) -> set[BaseTag]:
        """The tags this input looks at to accept or reject an image."""
        tags = {tag for tag in self._required_tags} | {tag for tag, _ in self._required_values}
        tags.add(_SOP_INSTANCE_UID)
        if self.enforce_single_series:
            tags.add(_SERIES_INSTANCE_UID)
        return tags

    def rejection(self, dataset: Dataset) -> str | None:
        """Why this input would not accept ``dataset``, or None when it would."""
        for tag in self._required_tags:
            if tag not in dataset:
                return f"{type(self).__name__} requires {_name(tag)}, which the image lacks"
        for tag, expected in self._required_values:
            if tag not in dataset:
                return f"{type(self).__name__} requires {_name(tag)}, which the image lacks"
            element = dataset[tag]
            if not value_matches(element.value, expected):
                return (f"{type(self).__name__} requires {_name(tag)} {expected!r}, the image has "
                        f"{_shown(element.VR, element.value)}")
        if self.enforce_single_series and self._series_uid is not None:
            series = _text_of(dataset, _SERIES_INSTANCE_UID)
            if series != self._series_uid:
                return f"{type(self).__name__} holds series {self._series_uid}, the image is of {series}"
        return None

    def accepts(self, dataset: Dataset) -> bool:
        """True when :meth:`add_image` would take ``dataset``."""
        return self.rejection(dataset) is None

    def add_image(self, dataset: Dataset, path: Path | None = None, *, header: Dataset | None = None,
                  checked: bool = False) -> int:
        """Add an image (and the file it is stored in, if any); return the number of images held.

        ``header``, when given, is what the decision looks at instead of
        ``dataset`` (the node passes the parsed header of an image it keeps as
        a not-yet-loaded LazyDataset). Raises
        :class:`~dicomnode.errors.InvalidDatasetError` saying why when the
        image is not accepted; ``checked=True`` (the node, which just asked
        :meth:`rejection` under the patient's lock) skips the check.
        """
        routed = dataset if header is None else header
        reason = None if checked else self.rejection(routed)
        if reason is not None:
            raise InvalidDatasetError(reason)
        uid = _text_of(routed, _SOP_INSTANCE_UID) or f"#{len(self._datasets)}"
        if self.enforce_single_series and self._series_uid is None:
            self._series_uid = _text_of(routed, _SERIES_INSTANCE_UID)
        self._datasets[uid] = dataset
        if path is not None:
            self._paths[uid] = path
        if self._keeps_facts:
            facts = InstanceFacts.from_header(routed, uid)
            self._facts[uid] = facts
            self._series_headers.setdefault(facts.series_uid, routed)
            self._selected = None
        return len(self._datasets)

    def patient_started(self, dataset: Dataset, patient_key: str, node: NodeHandle | None) -> None:
        """Called once per patient, with the first image a non-exclusive input of the patient accepted.

        ``node`` is a :class:`~dicomnode.extension.handles.NodeHandle` of the
        node that received it (its AE title and known endpoints, ``ingest``
        and ``check``), or None when datasets are replayed outside a running
        node (a quarantine retry). It runs on the association thread with the
        patient locked: return at once, and start a thread for slow work (as
        the historic input does to query a PACS). The default does nothing.
        """

    # --- what the input holds ---------------------------------------------
    #
    # With a series_selection, ``images``, ``datasets``, ``paths`` and ``get_data``
    # are of the chosen series; ``held_*`` are of everything the input holds.

    def _chosen_keys(self) -> list[str]:
        chosen = self.selected_series()
        if chosen is None:
            return []
        facts = self._facts
        return [uid for uid in self._datasets if facts[uid].series_uid == chosen]

    @property
    def images(self) -> int:
        """How many images the input holds (of the chosen series, with a ``series_selection``)."""
        if self.setting("series_selection") is None:
            return len(self._datasets)
        return len(self._chosen_keys())

    def __len__(self) -> int:
        return self.images

    def __iter__(self) -> Iterator[Dataset]:
        return iter(self.datasets)

    @property
    def datasets(self) -> list[Dataset]:
        """The images held, in arrival order (of the chosen series, with a ``series_selection``)."""
        if self.setting("series_selection") is None:
            return list(self._datasets.values())
        return [self._datasets[uid] for uid in self._chosen_keys()]

    @property
    def paths(self) -> list[Path]:
        """The files of :attr:`datasets` (empty without a data directory)."""
        if self.setting("series_selection") is None:
            return list(self._paths.values())
        return [self._paths[uid] for uid in self._chosen_keys() if uid in self._paths]

    @property
    def held_images(self) -> int:
        """How many images the input holds, of every series."""
        return len(self._datasets)

    @property
    def held_datasets(self) -> list[Dataset]:
        """Every image the input holds, of every series, in arrival order."""
        return list(self._datasets.values())

    def held_items(self) -> list[tuple[str, Dataset, Path | None]]:
        """(SOPInstanceUID, image, its file or None) for every image held, in arrival order."""
        return [(uid, dataset, self._paths.get(uid)) for uid, dataset in self._datasets.items()]

    # --- series: summaries, selection, completeness -------------------------

    def series(self) -> list[SeriesSummary]:
        """A summary of every series the input holds, in the order they arrived.

        Kept only when the input has a ``series_selection`` or a
        ``completeness`` other than ``"validate"`` (empty otherwise).
        """
        return summarise(self._facts.values(), self._series_headers)

    def selected_series(self) -> str | None:
        """The UID of the series ``series_selection`` chooses now (None: none, or no selection set)."""
        selection = self.setting("series_selection")
        if selection is None:
            return None
        held = len(self._datasets)
        if self._selected is None or self._selected[0] != held:
            self._selected = (held, select_series(self.series(), selection, self._selection_rule))
        return self._selected[1]

    def dropped_series(self) -> list[SeriesSummary]:
        """The series held that ``series_selection`` does not choose (empty without one)."""
        if self.setting("series_selection") is None:
            return []
        chosen = self.selected_series()
        return [summary for summary in self.series() if summary.uid != chosen]

    def studies(self) -> list[str]:
        """The StudyInstanceUIDs of the images held (kept as for :meth:`series`)."""
        return list(dict.fromkeys(fact.study_uid for fact in self._facts.values() if fact.study_uid))

    def completion(self) -> Completion:
        """Whether the images held are all that will come, as far as the input itself can tell.

        ``completeness = "announced"``: what the headers announce
        (:func:`~dicomnode.extension.completeness.announced`); otherwise
        unknown (``"query"`` is answered by the node, which asks the PACS).
        """
        if self.completeness == "announced":
            return announced(self._facts.values())
        return UNKNOWN

    def unmet(self) -> str:
        """Why :meth:`validate` is False, in a few words for the log."""
        selection = self.setting("series_selection")
        if selection is not None and self.selected_series() is None and self._datasets:
            return f"series_selection chooses none of the {len(self.series())} series held"
        if self.setting("validator") is not None:
            return f"the validator says no ({self.images} image(s))"
        if type(self).validate is not AbstractInput.validate:
            return f"validate() is False ({self.images} image(s))"
        return f"{self.images} of at least {self.minimum_images or 1} image(s)"

    def validate(self) -> bool:
        """True when the input holds everything the job needs.

        The default: the ``validator`` setting's answer when it is set, else
        at least ``minimum_images`` images (one when that is None). Override
        it, for example ``return self.images >= 300``.
        """
        validator = self.setting("validator")
        if validator is not None:
            return bool(validator(self))
        return self.images >= (self.minimum_images or 1)

    def setting(self, name: str) -> Any:
        """The value of a setting: given for this pipeline, else the class's — a function as it is.

        Reading a function-valued class attribute through ``self`` would bind
        it as a method (``image_grinder = my_function`` would get the input as
        its first argument); this does not.
        """
        if name in vars(self):
            return vars(self)[name]
        for klass in type(self).__mro__:
            if name in vars(klass):
                value = vars(klass)[name]
                return value.__func__ if isinstance(value, staticmethod) else value
        raise AttributeError(name)

    def get_data(self) -> Any:
        """The value ``process`` receives for this input: the grinder applied to the images."""
        return self.setting("image_grinder")(self.datasets)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} images={self.images}>"


class DynamicInput(AbstractInput):
    """An input that holds several series, keyed by a tag, and grinds to a dict.

    ``key_tag`` (default SeriesInstanceUID) splits the images into groups; the
    grinder is applied to each group and ``get_data()`` returns
    ``{key value: ground value}``::

        class AllSeries(DynamicInput):
            required_values = {"Modality": "MR"}
            image_grinder = ListGrinder()
    """

    key_tag: ClassVar[str | int] = "SeriesInstanceUID"
    toml_settings: ClassVar[Mapping[str, Callable[[Any], Any]]] = {"key_tag": lambda value: _tag_setting(value)}

    def routing_tags(self) -> set[BaseTag]:
        """The tags this input looks at, including the key tag."""
        return super().routing_tags() | {resolve_tag(self.key_tag)}

    def rejection(self, dataset: Dataset) -> str | None:
        """Why the image is not accepted: as :class:`AbstractInput`, plus a missing key tag."""
        key = resolve_tag(self.key_tag, f"{type(self).__name__}.key_tag")
        if key not in dataset:
            return f"{type(self).__name__} groups images by {_name(key)}, which the image lacks"
        return super().rejection(dataset)

    def groups(self) -> dict[str, list[Dataset]]:
        """The images grouped by the value of the key tag, in arrival order."""
        key = resolve_tag(self.key_tag)
        result: dict[str, list[Dataset]] = {}
        for dataset in self.datasets:
            result.setdefault(_as_text(dataset[key].value), []).append(dataset)
        return result

    def get_data(self) -> dict[str, Any]:
        """``{key value: grinder(images of that group)}``."""
        grinder = self.setting("image_grinder")
        return {key: grinder(datasets) for key, datasets in self.groups().items()}



def _tag_setting(value: object) -> str | int:
    """A tag setting from TOML: a keyword, or eight hex digits (``"00100020"``, ``"0x00100020"``)."""
    text = str(value)
    digits = text[2:] if text.lower().startswith("0x") else text
    if len(digits) == 8 and all(c in "0123456789abcdefABCDEF" for c in digits):
        return int(digits, 16)
    resolve_tag(text, "key_tag")
    return text


def _is_framework_input(cls: type) -> bool:
    """A class whose attributes are settings and their defaults: dicomnode's, or a plugin's (it declares
    ``toml_settings`` itself)."""
    return cls is AbstractInput or "toml_settings" in vars(cls)


@attrs.frozen(hash=False)
class ConfiguredInput:
    """An input of a pipeline: its class, and the settings given for this pipeline (on top of the class's).

    A pipeline's ``input = {"CT": CT}`` becomes ``ConfiguredInput(CT, {})``;
    ``CT.configured(minimum_images=300)`` or a TOML ``[inputs.CT]`` table gives
    settings. Making one checks it: the class's attributes for near-misses of
    a setting, its grinder, and the settings themselves (by building an
    instance).
    """

    cls: type[AbstractInput]
    settings: Mapping[str, Any] = attrs.field(factory=dict, converter=dict)

    def __attrs_post_init__(self) -> None:
        cls = self.cls
        if not (isinstance(cls, type) and issubclass(cls, AbstractInput)):
            raise ConfigurationError(f"an input must be a subclass of dicomnode.AbstractInput, got {cls!r}")
        problem = misspelt(cls, cls.setting_names(), _is_framework_input, "an input")
        if problem is not None:
            raise ConfigurationError(problem)
        _check_grinder(cls, self.settings.get("image_grinder", cls.image_grinder))
        self.create()

    @property
    def name(self) -> str:
        """The input class's name."""
        return self.cls.__name__

    def create(self) -> AbstractInput:
        """A new instance for one patient."""
        return self.cls(**self.settings)


def _check_grinder(cls: type, grinder: object) -> None:
    if callable(grinder):
        return
    if isinstance(grinder, str):
        raise ConfigurationError(f"{cls.__name__}.image_grinder = {grinder!r} is text, not a grinder: give a "
                                 "grinder object such as ListGrinder() (names are for TOML pipelines)")
    raise ConfigurationError(f"{cls.__name__}.image_grinder must be a grinder (a callable taking the "
                             f"datasets), got {type(grinder).__name__}")
