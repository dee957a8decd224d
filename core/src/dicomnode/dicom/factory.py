"""Building datasets from blueprints of virtual elements.

A :class:`Blueprint` says, tag by tag, where each attribute of a new dataset
comes from: a fixed value, the parent image, the factory, a value computed once
per series, or one computed for every instance. A :class:`DicomFactory` turns a
blueprint and the parent series into a :class:`SeriesHeader` — everything the
instances share, already evaluated — and then asks the header for each instance,
so the work per slice is only what differs between slices::

    blueprint = Blueprint([
        StaticElement("Modality", "CS", "CT"),
        CopyElement("PatientID"),
        FunctionalElement("InstanceNumber", "IS", lambda env: env.instance_number),
    ])
    header = factory.build_series_header(parent_series, blueprint)
    datasets = [header.instantiate(InstanceEnvironment(n, header_dataset=header.dataset))
                for n in range(1, 301)]
"""

from __future__ import annotations

import abc
import copy
import enum
import inspect
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Union

import attrs
from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import BaseTag

from dicomnode.dicom.element_copies import fresh_elements, same_value
from dicomnode.dicom.uids import DEFAULT_UID_PREFIX, UidGenerator
from dicomnode.dicom.vr_rules import (
    TagLike,
    check_value,
    check_vr,
    describe,
    dictionary_vr,
    make_element,
    to_tag,
)
from dicomnode.errors import BlueprintError

__all__ = [
    "AttrElement",
    "Blueprint",
    "CopyElement",
    "DicomFactory",
    "DiscardElement",
    "FunctionalElement",
    "InstanceCopyElement",
    "InstanceEnvironment",
    "InstancedVirtualElement",
    "ParentTagPolicy",
    "SequenceElement",
    "SeriesContext",
    "SeriesElement",
    "SeriesHeader",
    "StaticElement",
    "TagLike",
    "VirtualElement",
]

logger = logging.getLogger("dicomnode.dicom.factory")

#: what evaluating a virtual element for a series gives
Evaluated = Union[DataElement, "InstancedVirtualElement", None]


# --------------------------------------------------------------------------- contexts


@attrs.frozen
class SeriesContext:
    """What a virtual element sees while the shared part of a series is built.

    ``parent`` is the first dataset of ``parent_series`` (None without
    parents); ``header_dataset`` holds the values evaluated so far, in the
    blueprint's order.
    """

    factory: DicomFactory
    parent: Dataset | None
    parent_series: Sequence[Dataset]
    kwargs: Mapping[str, Any]
    header_dataset: Dataset


@attrs.define
class InstanceEnvironment:
    """What a per-instance element sees when one instance of a series is made.

    ``instance_number`` is 1-based. ``image`` is the instance's pixel data as
    the factory holds it (a numpy slice, bytes, …), ``scaled_image`` the
    stored values after ``slope`` and ``intercept`` were applied, and
    ``header_dataset`` the values every instance shares.
    """

    instance_number: int
    kwargs: Mapping[str, Any] = attrs.field(factory=dict)
    header_dataset: Dataset = attrs.field(factory=Dataset)
    image: Any = None
    factory: DicomFactory | None = None
    intercept: float = 0.0
    slope: float = 1.0
    scaled_image: Any = None
    total_images: int = 1


# --------------------------------------------------------------------------- elements


class VirtualElement(abc.ABC):
    """An element of a blueprint: knows its tag, and how to get its value for a series.

    Subclasses implement :meth:`evaluate`, which returns the finished
    ``DataElement`` (shared by every instance), ``None`` (the dataset gets no
    such element), or an :class:`InstancedVirtualElement` whose value is made
    per instance.
    """

    tag: BaseTag

    @abc.abstractmethod
    def evaluate(self, context: SeriesContext) -> Evaluated:
        """The element's value for the series described by ``context``."""


class InstancedVirtualElement(VirtualElement):
    """Base class of elements whose value differs from instance to instance.

    Subclasses implement :meth:`produce`. :meth:`evaluate` returns the element
    itself, or a copy bound to what it needs from the parent series.
    """

    def evaluate(self, context: SeriesContext) -> Evaluated:
        """Per-instance elements are evaluated later, by :meth:`produce`."""
        return self

    @abc.abstractmethod
    def produce(self, env: InstanceEnvironment) -> DataElement | None:
        """The element for the instance described by ``env``, or None for no element."""


def _vr_validator(instance: Any, _attribute: attrs.Attribute[str], vr: str) -> None:
    check_vr(instance.tag, vr, type(instance).__name__)


@attrs.frozen
class StaticElement(VirtualElement):
    """A fixed value, checked against its VR when the element is made.

    >>> StaticElement("Modality", "CS", "OT").tag
    (0008,0060)
    """

    tag: BaseTag = attrs.field(converter=to_tag)
    vr: str = attrs.field(validator=_vr_validator)
    value: Any = None

    def __attrs_post_init__(self) -> None:
        check_value(self.tag, self.vr, self.value, "StaticElement")

    def evaluate(self, context: SeriesContext) -> Evaluated:
        """A new element with the fixed value."""
        return make_element(self.tag, self.vr, copy.deepcopy(self.value), "StaticElement")


@attrs.frozen
class CopyElement(VirtualElement):
    """The value of the same tag in the parent dataset.

    A missing tag is a :class:`~dicomnode.errors.BlueprintError` naming the
    tag, unless ``optional`` is true; then the new dataset goes without it.
    ``empty_if_missing`` gives an empty element instead, as DICOM wants for
    type 2 attributes (present, possibly empty), such as PatientName.
    """

    tag: BaseTag = attrs.field(converter=to_tag)
    optional: bool = False
    empty_if_missing: bool = attrs.field(default=False, kw_only=True)

    def evaluate(self, context: SeriesContext) -> Evaluated:
        """A copy of the parent's element."""
        parent = context.parent
        if parent is not None and self.tag in parent:
            return copy.deepcopy(parent[self.tag])
        if self.empty_if_missing:
            return DataElement(self.tag, dictionary_vr(self.tag), None)
        if self.optional:
            return None
        if parent is None:
            raise BlueprintError(
                f"CopyElement({describe(self.tag)}) has no parent dataset to copy from; "
                f"give the factory a parent or make the element optional=True"
            )
        raise BlueprintError(
            f"CopyElement({describe(self.tag)}): the parent dataset "
            f"(SOPInstanceUID {parent.get('SOPInstanceUID', 'unknown')}) has no such element; "
            f"make the element optional=True if it may be missing"
        )


@attrs.frozen
class AttrElement(VirtualElement):
    """The value of an attribute of the factory, e.g. ``AttrElement("Manufacturer", "LO", "manufacturer")``.

    A callable attribute is called without arguments. ``None`` gives no element.
    """

    tag: BaseTag = attrs.field(converter=to_tag)
    vr: str = attrs.field(validator=_vr_validator)
    attribute: str = ""

    def evaluate(self, context: SeriesContext) -> Evaluated:
        """The factory attribute's value."""
        try:
            value = getattr(context.factory, self.attribute)
        except AttributeError:
            raise BlueprintError(
                f"AttrElement({describe(self.tag)}): the factory {type(context.factory).__name__} "
                f"has no attribute {self.attribute!r}"
            ) from None
        if callable(value):
            value = value()
        if value is None:
            return None
        return make_element(self.tag, self.vr, value, "AttrElement")


@attrs.frozen
class DiscardElement(VirtualElement):
    """Leaves the tag out, even if another rule (copying the parent's tags) would add it."""

    tag: BaseTag = attrs.field(converter=to_tag)

    def evaluate(self, context: SeriesContext) -> Evaluated:
        """Nothing."""
        return None


def _producer_arity(producer: Callable[..., Any]) -> int:
    try:
        parameters = inspect.signature(producer).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature take none
        return 0
    required = [
        p for p in parameters
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    return len(required)


@attrs.frozen
class SeriesElement(VirtualElement):
    """A value made once per series and shared by all its instances (e.g. SeriesInstanceUID).

    ``producer`` takes no arguments, or one: the :class:`SeriesContext`.
    It may return None for no element.
    """

    tag: BaseTag = attrs.field(converter=to_tag)
    vr: str = attrs.field(validator=_vr_validator)
    producer: Callable[..., Any] = attrs.field(default=None)

    @producer.validator
    def _check_producer(self, _attribute: attrs.Attribute[Any], producer: Any) -> None:
        if not callable(producer) or _producer_arity(producer) > 1:
            raise BlueprintError(
                f"SeriesElement({describe(self.tag)}): producer must be a function of no arguments "
                f"or of one (the SeriesContext), got {producer!r}"
            )

    def evaluate(self, context: SeriesContext) -> Evaluated:
        """The producer's value."""
        value = self.producer(context) if _producer_arity(self.producer) else self.producer()
        if value is None:
            return None
        return make_element(self.tag, self.vr, value, "SeriesElement")


@attrs.frozen
class FunctionalElement(InstancedVirtualElement):
    """A value computed for every instance: ``func(env: InstanceEnvironment) -> value`` (None: no element)."""

    tag: BaseTag = attrs.field(converter=to_tag)
    vr: str = attrs.field(validator=_vr_validator)
    func: Callable[[InstanceEnvironment], Any] = attrs.field(default=None)

    @func.validator
    def _check_func(self, _attribute: attrs.Attribute[Any], func: Any) -> None:
        if not callable(func):
            raise BlueprintError(
                f"FunctionalElement({describe(self.tag)}): func must be callable, got {func!r}"
            )

    def produce(self, env: InstanceEnvironment) -> DataElement | None:
        """The function's value for this instance."""
        value = self.func(env)
        if value is None:
            return None
        return make_element(self.tag, self.vr, value, "FunctionalElement")


@attrs.frozen
class InstanceCopyElement(InstancedVirtualElement):
    """The value from the parent instance with the same InstanceNumber.

    Every parent needs an InstanceNumber; a parent without one, or a new
    instance whose number no parent has, is a
    :class:`~dicomnode.errors.BlueprintError`. A parent without the tag gives
    an error too, unless ``optional``.
    """

    tag: BaseTag = attrs.field(converter=to_tag)
    vr: str = attrs.field(validator=_vr_validator)
    optional: bool = False

    def evaluate(self, context: SeriesContext) -> Evaluated:
        """This element bound to the values of the parent series, by InstanceNumber."""
        values: dict[int, Any] = {}
        owners: dict[int, str] = {}
        for parent in context.parent_series:
            number = parent.get("InstanceNumber")
            uid = str(parent.get("SOPInstanceUID", "unknown"))
            if number is None or number == "":
                raise BlueprintError(
                    f"InstanceCopyElement({describe(self.tag)}) matches instances by InstanceNumber "
                    f"(0020,0013), but the parent with SOPInstanceUID {uid} has none"
                )
            if int(number) in owners:
                raise BlueprintError(
                    f"InstanceCopyElement({describe(self.tag)}) matches instances by InstanceNumber, "
                    f"but two parents have InstanceNumber {number} (SOPInstanceUIDs "
                    f"{owners[int(number)]} and {uid}); it needs one parent per number"
                )
            owners[int(number)] = uid
            if self.tag in parent:
                values[int(number)] = parent[self.tag].value
            elif not self.optional:
                raise BlueprintError(
                    f"InstanceCopyElement({describe(self.tag)}): the parent with InstanceNumber "
                    f"{number} has no such element; make the element optional=True if it may be missing"
                )
        return _BoundInstanceCopy(self.tag, self.vr, self.optional, values)

    def produce(self, env: InstanceEnvironment) -> DataElement | None:
        """Unbound, there is no parent series to copy from."""
        raise BlueprintError(
            f"InstanceCopyElement({describe(self.tag)}) was used outside a series header; "
            f"build the header with DicomFactory.build_series_header"
        )


@attrs.frozen
class _BoundInstanceCopy(InstancedVirtualElement):
    tag: BaseTag
    vr: str
    optional: bool
    values: dict[int, Any]

    def produce(self, env: InstanceEnvironment) -> DataElement | None:
        if env.instance_number in self.values:
            value = self.values[env.instance_number]
            if value is None:
                return None
            if isinstance(value, DicomSequence):
                value = copy.deepcopy(value)
            elif isinstance(value, MultiValue):
                value = list(value)  # the new element makes its own MultiValue of it
            return make_element(self.tag, self.vr, value, "InstanceCopyElement")
        if self.optional:
            return None
        known = sorted(self.values)
        span = f"{known[0]}..{known[-1]}" if known else "none"
        raise BlueprintError(
            f"InstanceCopyElement({describe(self.tag)}): no parent instance has InstanceNumber "
            f"{env.instance_number} (the parents' numbers with the element: {span})"
        )


@attrs.frozen
class SequenceElement(VirtualElement):
    """A sequence with one item per blueprint; each item is built from the same parent.

    Items may hold per-instance elements; then the sequence is made per instance.
    """

    tag: BaseTag = attrs.field(converter=to_tag)
    blueprints: Sequence[Blueprint] = attrs.field(default=(), converter=tuple)

    @blueprints.validator
    def _check_blueprints(self, _attribute: attrs.Attribute[Any], blueprints: Sequence[Any]) -> None:
        check_vr(self.tag, "SQ", "SequenceElement")
        for item in blueprints:
            if not isinstance(item, Blueprint):
                raise BlueprintError(
                    f"SequenceElement({describe(self.tag)}): every item must be a Blueprint, got {item!r}"
                )

    def evaluate(self, context: SeriesContext) -> Evaluated:
        """The sequence, shared when no item has per-instance elements."""
        headers = [
            context.factory._evaluate_blueprint(blueprint, attrs.evolve(context, header_dataset=Dataset()))
            for blueprint in self.blueprints
        ]
        if any(header.instance_elements for header in headers):
            return _InstancedSequence(self.tag, tuple(headers))
        return DataElement(self.tag, "SQ", DicomSequence([header.dataset for header in headers]))


@attrs.frozen
class _InstancedSequence(InstancedVirtualElement):
    tag: BaseTag
    headers: tuple[SeriesHeader, ...]

    def produce(self, env: InstanceEnvironment) -> DataElement | None:
        return DataElement(self.tag, "SQ", DicomSequence([h.instantiate(env) for h in self.headers]))


# --------------------------------------------------------------------------- blueprint


class Blueprint:
    """An ordered collection of virtual elements, one per tag.

    ``blueprint + other`` is a new blueprint where ``other`` wins on a tag
    both have; ``tag in blueprint`` takes an int, a keyword or a Tag.

    >>> bp = Blueprint([StaticElement("Modality", "CS", "OT")])
    >>> "Modality" in bp, 0x00080060 in bp, len(bp)
    (True, True, 1)
    """

    def __init__(self, elements: Iterable[VirtualElement] = ()) -> None:
        self._elements: dict[BaseTag, VirtualElement] = {}
        for element in elements:
            self.add_virtual_element(element)

    def add_virtual_element(self, element: VirtualElement) -> None:
        """Add ``element``, replacing the element of the same tag if there is one."""
        if not isinstance(element, VirtualElement):
            raise BlueprintError(
                f"a blueprint holds virtual elements (StaticElement, CopyElement, …), got {element!r}"
            )
        self._elements[element.tag] = element

    def __add__(self, other: Blueprint) -> Blueprint:
        if not isinstance(other, Blueprint):
            return NotImplemented
        combined = Blueprint()
        combined._elements = {**self._elements, **other._elements}
        return combined

    def __iter__(self) -> Iterator[VirtualElement]:
        return iter(list(self._elements.values()))

    def __len__(self) -> int:
        return len(self._elements)

    def __contains__(self, tag: object) -> bool:
        try:
            return to_tag(tag) in self._elements  # type: ignore[arg-type]
        except BlueprintError:
            return False

    def __getitem__(self, tag: TagLike) -> VirtualElement:
        resolved = to_tag(tag)
        try:
            return self._elements[resolved]
        except KeyError:
            raise KeyError(f"the blueprint has no element for {describe(resolved)}") from None

    def __repr__(self) -> str:
        names = ", ".join(f"{type(e).__name__}({describe(e.tag)})" for e in self)
        return f"Blueprint([{names}])"


# --------------------------------------------------------------------------- series header


@attrs.define
class SeriesHeader:
    """A series partly built: the values every instance shares, and the per-instance elements left.

    :meth:`instantiate` makes one instance: new element objects for the shared
    values (no deep copy of a whole dataset per slice) plus the evaluated
    per-instance elements.
    """

    dataset: Dataset
    instance_elements: list[InstancedVirtualElement] = attrs.field(factory=list)
    parent_series: Sequence[Dataset] = attrs.field(factory=list)

    def instantiate(self, env: InstanceEnvironment) -> Dataset:
        """A new dataset for the instance described by ``env``.

        ``build_series`` implementations pass ``header_dataset=header.dataset``
        and ``factory=self`` in ``env``: per-instance elements read them (the
        default SOPInstanceUID is derived from the header's SeriesInstanceUID
        and the factory's UID policy).
        """
        elements = fresh_elements(self.dataset)
        for virtual in self.instance_elements:
            element = virtual.produce(env)
            if element is not None:
                elements[element.tag] = element
        dataset = Dataset(elements)
        if hasattr(self.dataset, "file_meta"):
            dataset.file_meta = copy.deepcopy(self.dataset.file_meta)
        return dataset


# --------------------------------------------------------------------------- factory


class ParentTagPolicy(enum.Enum):
    """What happens to the parent's tags that a blueprint does not mention."""

    #: leave them out (the default: only what the blueprint says)
    DISCARD = "discard"
    #: copy them (for a series, those with the same value in every parent)
    COPY = "copy"


def _to_policy(value: ParentTagPolicy | str) -> ParentTagPolicy:
    try:
        return ParentTagPolicy(value)
    except ValueError:
        allowed = ", ".join(repr(p.value) for p in ParentTagPolicy)
        raise BlueprintError(f"unmentioned_parent_tags must be one of {allowed}, got {value!r}") from None


# never carried over from a parent by the copy policy: file meta, pixel data and
# the image presentation group (size, bit depth, rescale, window), which a new
# image replaces
_NEVER_COPIED_GROUPS = (0x0002, 0x0028, 0x7FE0)


class DicomFactory(abc.ABC):
    """Builds datasets from a blueprint and parent datasets; pixel-type plugins add the images.

    ``pipeline_name``
        Set it to make UIDs deterministic (see :mod:`dicomnode.dicom.uids`).
    ``uid_prefix``
        The root of new UIDs.
    ``unmentioned_parent_tags``
        ``"discard"`` (default) or ``"copy"``: the policy for parent tags the
        blueprint does not mention. With ``"copy"``, a series header gets the
        tags whose value is the same in every parent; per-slice values need an
        :class:`InstanceCopyElement`. File meta and pixel data are never copied.

    Attributes ``manufacturer``, ``software_versions``, ``institution_name``
    and ``station_name`` are read by the default equipment blueprint through
    :class:`AttrElement`; override them in a subclass or pass them here.
    """

    manufacturer: str | None = "dicomnode"
    software_versions: str | None = None
    institution_name: str | None = None
    station_name: str | None = None

    def __init__(
        self,
        *,
        pipeline_name: str | None = None,
        uid_prefix: str = DEFAULT_UID_PREFIX,
        unmentioned_parent_tags: ParentTagPolicy | str = ParentTagPolicy.DISCARD,
        manufacturer: str | None = None,
        software_versions: str | None = None,
        institution_name: str | None = None,
        station_name: str | None = None,
    ) -> None:
        self.uids = UidGenerator(pipeline_name=pipeline_name, prefix=uid_prefix)
        self.unmentioned_parent_tags = _to_policy(unmentioned_parent_tags)
        if manufacturer is not None:
            self.manufacturer = manufacturer
        if software_versions is not None:
            self.software_versions = software_versions
        elif self.software_versions is None:
            from dicomnode.__about__ import __version__

            self.software_versions = f"dicomnode {__version__}"
        if institution_name is not None:
            self.institution_name = institution_name
        if station_name is not None:
            self.station_name = station_name

    @property
    def pipeline_name(self) -> str | None:
        """The pipeline name UIDs are derived from (None: random UIDs)."""
        return self.uids.pipeline_name

    def build_instance(
        self, parent: Dataset | None, blueprint: Blueprint, kwargs: Mapping[str, Any] | None = None
    ) -> Dataset:
        """A single dataset (a report, a message) built from ``parent`` — instance number 1 of 1."""
        header = self.build_series_header([] if parent is None else [parent], blueprint, kwargs)
        env = InstanceEnvironment(
            1, kwargs=kwargs or {}, header_dataset=header.dataset, factory=self, total_images=1
        )
        return header.instantiate(env)

    def build_series_header(
        self,
        parent_series: Sequence[Dataset] | None,
        blueprint: Blueprint,
        kwargs: Mapping[str, Any] | None = None,
    ) -> SeriesHeader:
        """Evaluate everything of ``blueprint`` that the instances of a series share."""
        parents = list(parent_series or [])
        dataset = Dataset()
        if self.unmentioned_parent_tags is ParentTagPolicy.COPY and parents:
            self._copy_shared_parent_tags(parents, blueprint, dataset)
        context = SeriesContext(self, parents[0] if parents else None, parents, kwargs or {}, dataset)
        header = self._evaluate_blueprint(blueprint, context)
        header.parent_series = parents
        logger.debug("series header from %d parents: %d shared elements, %d per instance",
                     len(parents), len(header.dataset), len(header.instance_elements))
        return header

    @abc.abstractmethod
    def build_series(
        self,
        image: Any,
        header: SeriesHeader,
        parent_series: Sequence[Dataset] | None = None,
        kwargs: Mapping[str, Any] | None = None,
    ) -> list[Dataset]:
        """One dataset per slice of ``image``, from ``header`` (implemented per pixel type)."""

    def _evaluate_blueprint(self, blueprint: Blueprint, context: SeriesContext) -> SeriesHeader:
        dataset = context.header_dataset
        instance_elements: list[InstancedVirtualElement] = []
        for virtual in blueprint:
            result = virtual.evaluate(context)
            if isinstance(result, InstancedVirtualElement):
                instance_elements.append(result)
                dataset.pop(virtual.tag, None)
            elif result is None:
                dataset.pop(virtual.tag, None)
            else:
                dataset[virtual.tag] = result
        return SeriesHeader(dataset, instance_elements, context.parent_series)

    def _copy_shared_parent_tags(
        self, parents: Sequence[Dataset], blueprint: Blueprint, dataset: Dataset
    ) -> None:
        first, rest = parents[0], parents[1:]
        for tag in list(first.keys()):
            if tag.group in _NEVER_COPIED_GROUPS or tag in blueprint:
                continue
            if all(same_value(first, other, tag) for other in rest):
                dataset[tag] = copy.deepcopy(first[tag])
            else:
                logger.debug("not copying %s: it differs between the parent instances", describe(tag))
