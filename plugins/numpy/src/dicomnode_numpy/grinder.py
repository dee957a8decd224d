"""NumpyGrinder: a series of DICOM images becomes one :class:`~dicomnode_numpy.volume.Volume`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np
from pydicom import Dataset

from dicomnode.errors import ConfigurationError
from dicomnode.extension.grinders import Grinder

from .frames import frames_of
from .geometry import StackLayout, arrange
from .mosaic import split_mosaics

if TYPE_CHECKING:
    from .factory import NumpyFactory
from .pixels import choose_dtype, fill, unloaded_datasets
from .volume import Volume

__all__ = ["NumpyGrinder"]


def _check_dtype(instance: NumpyGrinder, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is None:
        return
    try:
        np.dtype(value)
    except TypeError as exc:
        raise ConfigurationError(
            f"NumpyGrinder dtype {value!r} is not a numpy type; use e.g. 'float32', 'int16' or None"
        ) from exc


def _check_fraction(instance: NumpyGrinder, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ConfigurationError(
            f"NumpyGrinder {attribute.name} is {value!r}; it is a fraction of the slice spacing, 0 <= x < 1"
        )


@attrs.frozen
class NumpyGrinder(Grinder):
    """Grind a series into a :class:`~dicomnode_numpy.volume.Volume` (voxels and geometry).

    Slices are sorted by their position along the slice normal. Multi-frame
    (enhanced) objects are split into frames, series that repeat positions
    become 4D ``(volumes, slices, rows, columns)`` ordered by
    TemporalPositionIdentifier / AcquisitionNumber / TriggerTime /
    AcquisitionTime, and compressed transfer syntaxes are decoded by
    pydicom's installed pixel handlers. Siemens mosaics are cut into their
    slices, placed with their private CSA header.

    Parameters
    ----------
    rescale:
        apply RescaleSlope / RescaleIntercept. The result is an integer array
        when every slope and intercept is integral, float32 otherwise. With
        ``False`` the stored values are returned.
    dtype:
        force the output type (e.g. ``"float32"``); None chooses as above.
    spacing_tolerance:
        how far (fraction of the slice spacing) a gap between two slices may
        differ from the mean spacing before the series counts as having a
        missing slice.
    accept_gantry_tilt:
        keep CT slices that shift in-plane from slice to slice; the volume's
        slice direction is then the actual slice-to-slice direction (a sheared
        affine) rather than the normal. Refused by default.

    Example
    -------
    >>> volume = NumpyGrinder()(datasets)
    >>> volume.array.shape, volume.affine
    """

    rescale: bool = True
    dtype: str | None = attrs.field(default=None, validator=_check_dtype)
    spacing_tolerance: float = attrs.field(default=0.05, validator=_check_fraction)
    accept_gantry_tilt: bool = False

    def layout(self, datasets: Iterable[Dataset]) -> StackLayout:
        """The images of ``datasets`` in array order with the volume's geometry."""
        return arrange(
            split_mosaics(frames_of(datasets)),
            spacing_tolerance=self.spacing_tolerance,
            accept_gantry_tilt=self.accept_gantry_tilt,
        )

    @staticmethod
    def series_factory(**options: Any) -> NumpyFactory:
        """The factory that turns what this grinder makes back into a DICOM series.

        ``options`` are :class:`~dicomnode_numpy.factory.NumpyFactory`'s. For
        code that finds the grinder by its registered name (``"numpy"``) and
        must not import this plugin.
        """
        from .factory import NumpyFactory

        return NumpyFactory(**options)

    def __call__(self, datasets: Iterable[Dataset]) -> Volume:
        """Grind ``datasets`` (one series) into a :class:`Volume`.

        Raises :class:`~dicomnode.errors.GrindingError` when the images do not
        form one volume (empty input, mixed sizes or orientations, missing
        slices, gantry tilt, undecodable pixel data).
        """
        datasets = list(datasets)
        forget = unloaded_datasets(datasets)
        # the layout reads only the headers of lazy datasets; they stay for the
        # factory, and fill reads (and forgets) the pixel data one file at a time
        layout = self.layout(datasets)
        if self.dtype is not None:
            dtype = widest = np.dtype(self.dtype)
        else:
            dtype, widest = choose_dtype(layout, rescale=self.rescale)
        array = fill(layout, dtype, rescale=self.rescale, widest=widest, forget=forget)
        return Volume(
            array=array,
            origin=layout.origin,
            spacing=layout.spacing,
            direction=layout.direction,
            frame_of_reference_uid=layout.frames[0].frame_of_reference_uid,
            source_uids=tuple(frame.sop_instance_uid for frame in layout.frames),
        )
