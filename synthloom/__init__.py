"""synthloom: build synthetic training datasets as Prefect flows, written as verified Parquet."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["load", "collate_fn", "__version__"]


def load(path, split="train", columns=None, image_format="uint8", verify=False):
    """Open a dataset as a torch `Dataset` (see `synthloom.reader.SynthDataset`): images as CHW
    tensors, uint8 or float in [0, 1] (`image_format="float"`).

    Shards are read without rehashing them (a missing or unreadable one is an error naming it);
    `verify=True` first rechecks every shard's sha256, rows and schema, as `synthloom verify` does."""
    from .reader import load as _load  # torch is imported only when a dataset is loaded

    if verify:
        from .dataset import verify as _verify

        _verify(path)
    return _load(path, split=split, columns=columns, image_format=image_format)


def collate_fn(batch):
    """`DataLoader(..., collate_fn=synthloom.collate_fn)`: stacks tensors of one shape, keeps lists
    for variable-size values such as bounding boxes (see `synthloom.reader.collate_fn`)."""
    from .reader import collate_fn as _collate_fn

    return _collate_fn(batch)
