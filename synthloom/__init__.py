"""synthloom: build synthetic training datasets as Prefect flows, written as verified Parquet."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["load", "__version__"]


def load(path, split="train", columns=None):
    """Open a dataset as a torch `Dataset` (see `synthloom.reader.SynthDataset`)."""
    from .reader import load as _load  # torch is imported only when a dataset is loaded

    return _load(path, split=split, columns=columns)
