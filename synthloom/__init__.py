"""synthloom: build synthetic training datasets as Prefect flows, written as verified Parquet."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["load", "collate_fn", "__version__"]


def load(path, split="train", columns=None, image_format="uint8", verify=False, streaming=False,
         shuffle=True, buffer_size=1000, seed=0):
    """Open a dataset as a torch `Dataset` (see `synthloom.reader.SynthDataset`): images as CHW
    tensors, uint8 or float in [0, 1] (`image_format="float"`). `path` is a folder or an fsspec URL
    (`s3://bucket/prefix/name`, `file://…`).

    Shards are read without rehashing them (a missing or unreadable one is an error naming it);
    `verify=True` first rechecks every shard's sha256, rows and schema, as `synthloom verify` does.

    `streaming=True` returns a torch `IterableDataset` instead (`synthloom.streaming.StreamingDataset`)
    that reads row groups as it goes, straight from object storage for a URL, and splits them across
    DataLoader workers and `torch.distributed` ranks: each row once per epoch, order seeded by `seed`
    and `set_epoch(n)`, shuffled through a buffer of `buffer_size` rows per worker (`shuffle=False`:
    file order)."""
    if verify:
        from .dataset import verify as _verify

        _verify(path)
    if streaming:
        from .streaming import StreamingDataset

        return StreamingDataset(path, split=split, columns=columns, image_format=image_format, shuffle=shuffle,
                                buffer_size=buffer_size, seed=seed)
    from .reader import load as _load  # torch is imported only when a dataset is loaded

    return _load(path, split=split, columns=columns, image_format=image_format)


def collate_fn(batch):
    """`DataLoader(..., collate_fn=synthloom.collate_fn)`: stacks tensors of one shape, keeps lists
    for variable-size values such as bounding boxes (see `synthloom.reader.collate_fn`)."""
    from .reader import collate_fn as _collate_fn

    return _collate_fn(batch)
