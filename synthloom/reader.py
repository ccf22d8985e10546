"""Load a synthloom dataset for training: a torch `Dataset` over the Parquet shards.

Every column is decoded by its feature type (read from the shards' metadata), once, into
numpy buffers, so `__getitem__` slices instead of reading Parquet: training loops spend
their time training. Images stay encoded until an item is asked for.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch
from torch.utils.data import Dataset

from . import dataset as ds
from .features import ClassLabel, Features, feature_of


class SynthDataset(Dataset):
    """Rows of one split of a synthloom dataset.

    `ds[i]` is a dict, one entry per column, by feature type:

    - `Image`: a CHW tensor, uint8 (`image_format="uint8"`) or float32 in [0, 1] (`"float"`);
    - `Points`: an (N, k) tensor; `Array`: a tensor of the row's shape (None for a null row);
    - `ClassLabel`: a 0-d int64 tensor (-1 where null); `self.class_names` are its names;
    - `BoundingBoxes`: {"boxes": (n, 4) float32 COCO xywh pixels, "labels": (n,) int64,
      "scores": (n,) float32, NaN where a box has no score};
    - `Value`/`Text`: Python values.

    Batch items with `synthloom.collate_fn`.
    """

    def __init__(self, path: str | os.PathLike, split: str | None = "train", columns: list[str] | None = None,
                 image_format: str = "uint8"):
        self.path = ds.resolve_version_dir(path)
        self.manifest = ds.read_manifest(self.path)
        self.split = split
        self.table = ds.read_table(self.path, self.manifest, split, columns)
        self.features: Features = ds.read_features(self.table, self.manifest)
        self._rows = self.features.decode_table(self.table, image_format=image_format)
        label = feature_of(self.features, ClassLabel)
        self.class_names: list[str] = (list(self.features[label].names) if label
                                       else list(self.manifest.get("classes", [])))

    def __len__(self) -> int:
        return self.table.num_rows

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} rows")
        return {name: rows[index] for name, rows in self._rows.items()}

    def to_pandas(self):
        # Plain storage types: pandas cannot compare the dtype `datasets` registers for its Array2D
        # extension (huggingface/datasets#8375), which a process that imported `datasets` would get.
        columns = [pa.chunked_array([chunk.storage for chunk in c.chunks], c.type.storage_type)
                   if isinstance(c.type, pa.ExtensionType) else c for c in self.table.columns]
        return pa.table(columns, names=self.table.column_names).to_pandas()

    @property
    def params(self) -> list[dict[str, Any]]:
        return [json.loads(p) for p in self.table.column("params").to_pylist()] \
            if "params" in self.table.column_names else []

    def __repr__(self) -> str:
        return (f"SynthDataset({str(self.path)!r}, split={self.split!r}, rows={len(self)}, "
                f"columns={self.table.column_names})")


def collate_fn(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch `SynthDataset` items for a `DataLoader`: tensors of one shape are stacked (images,
    fixed-size clouds, labels), numbers become a tensor, and everything else stays a list of
    length batch: variable-size tensors, box dicts (detection targets), strings, None."""
    return {key: _collate([item[key] for item in batch]) for key in batch[0]}


def _collate(values: list) -> Any:
    first = values[0]
    if isinstance(first, torch.Tensor) and all(
            isinstance(v, torch.Tensor) and v.shape == first.shape and v.dtype == first.dtype for v in values):
        return torch.stack(values)
    if all(isinstance(v, (bool, int, float)) for v in values):
        return torch.tensor(values)
    return list(values)


def load(path: str | os.PathLike, split: str | None = "train", columns: list[str] | None = None,
         image_format: str = "uint8") -> SynthDataset:
    """Open a dataset version folder (or a dataset folder, resolving `latest`; or a URL, mirrored
    locally) as a torch Dataset."""
    return SynthDataset(path, split=split, columns=columns, image_format=image_format)
