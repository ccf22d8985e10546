"""Load a synthloom dataset for training: a torch `Dataset` over the Parquet shards.

Columns are decoded once into numpy arrays, so `__getitem__` is a slice, not a
Parquet read: training loops spend their time training.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import Dataset

from . import dataset as ds

POINT_COLUMNS = ("points", "point_normals", "point_colors")


class SynthDataset(Dataset):
    """Rows of one split of a synthloom dataset.

    `ds[i]` is a dict: `label` (int64 tensor), point columns as (N, 3) tensors,
    `image` as a float CHW tensor in [0, 1], other scalar columns as Python values.
    """

    def __init__(self, path: str | os.PathLike, split: str | None = "train", columns: list[str] | None = None):
        self.path = ds.resolve_version_dir(path)
        self.manifest = ds.read_manifest(self.path)
        self.split = split
        self.table = ds.read_table(self.path, self.manifest, split, columns)
        self.class_names: list[str] = list(self.manifest.get("classes", []))
        self._arrays: dict[str, Any] = {}
        for name in self.table.column_names:
            column = self.table.column(name)
            if name in POINT_COLUMNS:
                values, offsets = ds.fixed_list_to_numpy(column)
                # One writable copy at load, so every item can be a zero-copy torch view.
                self._arrays[name] = (np.array(values, copy=True), offsets)
            elif name == "image":
                self._arrays[name] = column.combine_chunks().field("bytes").to_pylist()
            elif pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
                self._arrays[name] = column.to_numpy()
            else:
                self._arrays[name] = column.to_pylist()

    def __len__(self) -> int:
        return self.table.num_rows

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} rows")
        item: dict[str, Any] = {}
        for name, array in self._arrays.items():
            if name in POINT_COLUMNS:
                values, offsets = array
                if offsets[index] == offsets[index + 1] and len(values) == 0:
                    item[name] = None
                    continue
                item[name] = torch.from_numpy(values[offsets[index]: offsets[index + 1]])
            elif name == "image":
                item[name] = decode_png(array[index])
            elif name == "label":
                item[name] = torch.tensor(int(array[index]), dtype=torch.int64)
            elif isinstance(array, np.ndarray):
                item[name] = array[index].item()
            else:
                item[name] = array[index]
        return item

    def to_pandas(self):
        return self.table.to_pandas()

    @property
    def params(self) -> list[dict[str, Any]]:
        return [json.loads(p) for p in self._arrays.get("params", [])]

    def __repr__(self) -> str:
        return (f"SynthDataset({str(self.path)!r}, split={self.split!r}, rows={len(self)}, "
                f"columns={self.table.column_names})")


def decode_png(data: bytes) -> torch.Tensor:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        array = np.asarray(image.convert("RGB") if image.mode not in ("L", "RGB") else image)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0


def load(path: str | os.PathLike, split: str | None = "train", columns: list[str] | None = None) -> SynthDataset:
    """Open a dataset version folder (or a dataset folder, resolving `latest`) as a torch Dataset."""
    return SynthDataset(Path(path), split=split, columns=columns)
