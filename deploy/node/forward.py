"""The processing function of the deployment kit's pipeline.toml: forward the first series of each patient."""

from __future__ import annotations


def first_series(input_container):
    """The datasets of the series that arrived first; the pipeline's outputs deliver them."""
    datasets = input_container.datasets["CT"]
    first = datasets[0].SeriesInstanceUID
    return [dataset for dataset in datasets if dataset.SeriesInstanceUID == first]
