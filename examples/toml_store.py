"""The processing function of ``pipeline.toml``: keep only the images of the first series.

A TOML pipeline's ``process`` may return outputs, or datasets that every
``[[outputs]]`` entry of the file delivers.
"""

from __future__ import annotations


def first_series(input_container):
    """The datasets of the series that arrived first; the TOML file's outputs deliver them."""
    datasets = input_container.datasets["CT"]
    first = datasets[0].SeriesInstanceUID
    return [ds for ds in datasets if ds.SeriesInstanceUID == first]
