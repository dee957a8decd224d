"""Storing real-valued pixels as 16-bit integers with RescaleSlope/RescaleIntercept."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydicom.valuerep import DSfloat

from dicomnode.errors import InvalidDatasetError
from dicomnode_numpy.encoding import Window, format_ds, plan_encoding, window_for

pytestmark = pytest.mark.plugin("numpy")


def _decoded(plan, volume):
    """What a reader gets back from the stored integers, using the DS texts of the file."""
    return np.stack([plan.decode_slice(i, plan.encode_slice(i, s)) for i, s in enumerate(volume)])


def _worst_error_in_steps(plan, volume):
    steps = np.array([plan.step(i) for i in range(len(volume))])[:, None, None]
    return float(np.max(np.abs(_decoded(plan, volume) - volume.astype(np.float64)) / steps))


# -- DS text ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [math.pi, -math.e * 1e7, 1 / 3 * 1e-5, 123456789.123456789, -1e-300,
                                   6.02214076e23, 0.1, -0.0, 1024.0, 2.0 ** -40])
def test_ds_text_is_at_most_16_characters_and_a_valid_ds(value):
    text = format_ds(value)
    assert len(text) <= 16
    DSfloat(text, validation_mode=2)  # pydicom raises on text that is not a DS


def test_ds_text_keeps_as_many_significant_digits_as_fit():
    assert format_ds(math.pi) == "3.14159265358979"
    assert format_ds(-math.pi) == "-3.1415926535898"
    assert abs(float(format_ds(123456789.123456789)) - 123456789.123456789) < 1e-6


def test_ds_text_of_short_numbers_is_short():
    assert [format_ds(v) for v in (0.1, -1024, 1.0, 0.0, -0.0, 1e15, 1e16)] == [
        "0.1", "-1024", "1", "0", "0", "1000000000000000", "1e16"]


@pytest.mark.parametrize("value", [math.pi, 1 / 3 * 1e-5, 123456789.123456789, -math.e * 1e-7, 1e300])
def test_ds_text_rounded_up_is_never_smaller_and_rounded_down_never_larger(value):
    assert float(format_ds(value, "up")) >= value
    assert float(format_ds(value, "down")) <= value
    assert float(format_ds(value, "down")) < float(format_ds(value, "up"))


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_ds_text_of_a_non_finite_number_is_refused(value):
    with pytest.raises(InvalidDatasetError, match="finite"):
        format_ds(value)


# -- choosing the encoding -----------------------------------------------------------------------

def test_float_volume_is_kept_within_half_a_quantisation_step():
    rng = np.random.default_rng(1)
    volume = (rng.normal(size=(6, 32, 32)) * 300 - 50).astype(np.float32)
    plan = plan_encoding(volume)
    assert _worst_error_in_steps(plan, volume) <= 0.5 + 1e-6


def test_quantisation_uses_the_whole_16_bit_range():
    volume = np.linspace(-3.7, 912.25, 4 * 16 * 16).reshape(4, 16, 16)
    plan = plan_encoding(volume)
    stored = np.stack([plan.encode_slice(i, s) for i, s in enumerate(volume)])
    assert stored.dtype == np.uint16
    assert stored.min() == 0 and stored.max() >= 65534


def test_values_with_a_large_offset_and_a_tiny_range_stay_within_half_a_step():
    volume = 1e6 + np.linspace(0, 1e-3, 3 * 8 * 8).reshape(3, 8, 8)
    plan = plan_encoding(volume)
    assert _worst_error_in_steps(plan, volume) <= 0.5 + 1e-6


def test_integer_data_that_fits_16_bits_is_stored_exactly_with_slope_one():
    volume = np.arange(-1024, -1024 + 2 * 40 * 50, dtype=np.int32).reshape(2, 40, 50)
    plan = plan_encoding(volume)
    assert plan.slopes == ("1", "1") and plan.intercepts == ("0", "0")
    assert plan.dtype == np.int16 and plan.pixel_representation == 1
    assert np.array_equal(_decoded(plan, volume), volume)


def test_whole_numbers_in_a_float_array_are_stored_exactly():
    labels = np.zeros((3, 8, 8), dtype=np.float32)
    labels[1, 2:5, 2:5] = 1
    labels[2, 4:, :] = 7
    plan = plan_encoding(labels)
    assert plan.exact and plan.dtype == np.uint16 and plan.pixel_representation == 0
    assert np.array_equal(_decoded(plan, labels), labels)


def test_whole_numbers_spanning_at_most_65535_are_stored_exactly_with_an_intercept():
    volume = np.arange(2 * 16 * 16, dtype=np.int64).reshape(2, 16, 16) * 100 + 100_000
    plan = plan_encoding(volume)
    assert plan.exact and plan.intercepts[0] == "100000"
    assert np.array_equal(_decoded(plan, volume), volume)


def test_a_constant_volume_is_stored_exactly():
    volume = np.full((2, 4, 4), 0.37, dtype=np.float64)
    plan = plan_encoding(volume)
    assert np.array_equal(_decoded(plan, volume), volume)


def test_per_slice_rescale_gives_each_slice_its_own_step():
    volume = np.stack([np.linspace(0, 10.0 ** k, 64).reshape(8, 8) for k in range(4)])
    plan = plan_encoding(volume, per_slice=True)
    steps = [plan.step(i) for i in range(4)]
    assert steps == sorted(steps) and steps[-1] / steps[0] > 500
    assert _worst_error_in_steps(plan, volume) <= 0.5 + 1e-6


def test_per_series_rescale_shares_one_slope_and_intercept():
    volume = np.stack([np.linspace(0, 10.0 ** k, 64).reshape(8, 8) for k in range(4)])
    plan = plan_encoding(volume)
    assert len(set(plan.slopes)) == 1 and len(set(plan.intercepts)) == 1


@pytest.mark.parametrize("per_slice", [False, True])
def test_zero_intercept_keeps_intercept_zero_and_chooses_signed_storage_for_negative_data(per_slice):
    volume = np.linspace(-2.5, 17.75, 3 * 10 * 10).reshape(3, 10, 10)
    plan = plan_encoding(volume, zero_intercept=True, per_slice=per_slice)
    assert set(plan.intercepts) == {"0"}
    assert plan.dtype == np.int16
    assert _worst_error_in_steps(plan, volume) <= 0.5 + 1e-6


@pytest.mark.parametrize("per_slice", [False, True])
def test_zero_intercept_with_positive_data_uses_unsigned_storage(per_slice):
    volume = np.linspace(0.0, 15000.5, 3 * 10 * 10).reshape(3, 10, 10)
    plan = plan_encoding(volume, zero_intercept=True, per_slice=per_slice)
    assert set(plan.intercepts) == {"0"} and plan.dtype == np.uint16
    assert _worst_error_in_steps(plan, volume) <= 0.5 + 1e-6


def test_slope_and_intercept_texts_are_valid_ds():
    volume = (np.random.default_rng(3).random((5, 8, 8)) * math.pi * 1e-4 - 1 / 7).astype(np.float32)
    plan = plan_encoding(volume, per_slice=True)
    for text in (*plan.slopes, *plan.intercepts):
        assert len(text) <= 16
        DSfloat(text, validation_mode=2)


def test_four_dimensional_volumes_have_one_encoding_entry_per_slice_of_every_volume():
    volume = np.random.default_rng(4).random((2, 3, 4, 4))
    plan = plan_encoding(volume, per_slice=True)
    assert len(plan.slopes) == 6


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_pixels_are_refused_with_advice(bad):
    volume = np.zeros((2, 4, 4))
    volume[1, 2, 2] = bad
    with pytest.raises(InvalidDatasetError, match="nan_to_num"):
        plan_encoding(volume)


def test_a_two_dimensional_array_is_refused_with_its_shape():
    with pytest.raises(InvalidDatasetError, match=r"\(4, 4\)"):
        plan_encoding(np.zeros((4, 4)))


def test_complex_pixels_are_refused():
    with pytest.raises(InvalidDatasetError, match="complex"):
        plan_encoding(np.zeros((1, 2, 2), dtype=np.complex64))


# -- window ---------------------------------------------------------------------------------------

def test_default_window_shows_the_whole_range():
    window = window_for(-1000.0, 3000.0)
    assert (window.center, window.width) == (1000.0, 4000.0)
    assert (window.center_text, window.width_text) == ("1000", "4000")


def test_window_of_a_constant_image_has_width_one():
    assert window_for(5.0, 5.0).width == 1.0


def test_a_window_narrower_than_one_is_refused():
    with pytest.raises(ValueError, match="width"):
        Window(center=0.0, width=0.5)
