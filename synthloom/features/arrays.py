"""Array features: `Points` (an (n, width) cloud per row, stored as HF Array2D) and `Array` (depth, normals,
segmentation: fixed or ragged shapes), decoded into zero-copy `TensorRows`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import FeatureError
from .core import Feature, Rows, _EXTENSION_METADATA, _EXTENSION_NAME, _HF_ARRAY_EXTENSION, _as_numpy, _hf_value, _list_array, _numeric_dtype, _numeric_values, _plain, _unnest, arrow_dtype


class TensorRows(Rows):
    """Numeric arrays of possibly different shapes, kept in one flat buffer: `rows[i]` is a
    zero-copy tensor view, None for a null row."""

    def __init__(self, values: np.ndarray, starts: np.ndarray, shapes: np.ndarray, valid: np.ndarray):
        # One writable copy at load, so every item can be a zero-copy torch view.
        self.values = np.array(values.reshape(-1), copy=True)
        self.starts, self.shapes, self.valid = starts, shapes, valid

    def __len__(self) -> int:
        return len(self.valid)

    def numpy(self, index: int) -> np.ndarray | None:
        if not self.valid[index]:
            return None
        return self.values[self.starts[index]: self.starts[index + 1]].reshape(tuple(self.shapes[index]))

    def __getitem__(self, index: int):
        import torch

        array = self.numpy(index)
        return None if array is None else torch.from_numpy(array)

    def stacked(self) -> np.ndarray:
        """All rows as one (rows, *shape) array; an error if rows are null or differ in shape."""
        if len(self) == 0:
            return self.values.reshape(0)
        if not self.valid.all() or (self.shapes != self.shapes[0]).any():
            raise FeatureError("rows differ in shape (or some are null); they cannot be stacked")
        return self.values.reshape(len(self), *self.shapes[0])


def _array_extension_metadata(shape: tuple, dtype: str) -> dict[bytes, bytes] | None:
    """HF's ArrayND extension tag, valid when only the first dimension may vary (2 <= N <= 5)."""
    if not 2 <= len(shape) <= 5 or any(d is None for d in shape[1:]):
        return None
    return {_EXTENSION_NAME: _HF_ARRAY_EXTENSION.format(len(shape)).encode(),
            _EXTENSION_METADATA: json.dumps([list(shape), dtype]).encode()}


def _hf_nested(shape: tuple, dtype: str) -> dict[str, Any]:
    if _array_extension_metadata(shape, dtype) is not None:
        return {"shape": list(shape), "dtype": dtype, "_type": f"Array{len(shape)}D"}
    feature = _hf_value(dtype)
    for _ in shape:
        feature = {"feature": feature, "_type": "List"}
    return feature


def _nested_type(depth: int, dtype: str) -> pa.DataType:
    arrow = arrow_dtype(dtype)
    for _ in range(depth):
        arrow = pa.list_(arrow)
    return arrow


def _encode_checked_rows(values: list, name: str, depth: int, dtype: str, shape_error) -> pa.Array:
    """Points and Array: each row as a numpy array of `dtype`, its shape checked (`shape_error` says what
    was expected, or None), then nested lists of `depth`. None rows stay null."""
    arrays = []
    for value in values:
        if value is None:
            arrays.append(None)
            continue
        array = _as_numpy(value, dtype, name)
        problem = shape_error(array)
        if problem:
            raise FeatureError(f"{name}: a row has shape {array.shape}, {problem}")
        arrays.append(array)
    return _encode_nested(arrays, depth, dtype)


def _encode_nested(arrays: list[np.ndarray | None], depth: int, dtype: str) -> pa.Array:
    """Nested lists (one level per dimension) from numpy arrays, looping over rows, not values."""
    present = [a for a in arrays if a is not None]
    flat = np.concatenate([a.reshape(-1) for a in present]) if present else np.zeros(0, dtype)
    values: pa.Array = pa.array(flat, arrow_dtype(dtype))
    # Lengths of the lists at each level, innermost first: level k has prod(shape[:k]) lists of shape[k].
    for level in range(depth - 1, 0, -1):
        lengths = np.concatenate([np.full(int(np.prod(a.shape[:level])), a.shape[level], np.int64)
                                  for a in present]) if present else np.zeros(0, np.int64)
        values = _list_array(lengths, values)
    lengths = np.array([0 if a is None else a.shape[0] for a in arrays], dtype=np.int64)
    return _list_array(lengths, values, np.array([a is None for a in arrays], dtype=bool))


def _decode_nested(column, depth: int, dtype: str, declared: tuple) -> TensorRows:
    """TensorRows of a `depth`-deep nested list column (variable or fixed-size lists)."""
    array = _plain(column)
    valid = array.is_valid().to_numpy(zero_copy_only=False)
    rows = len(array)
    dims = np.zeros((rows, depth), dtype=np.int64)
    counts = np.ones(rows, dtype=np.int64)  # how many lists of the current level each row owns
    child: pa.Array = array
    for level in range(depth):
        if not (pa.types.is_list(child.type) or pa.types.is_fixed_size_list(child.type)
                or pa.types.is_large_list(child.type)):
            raise FeatureError(f"expected {depth} nested list levels, found {level} ({array.type})")
        lengths, child = _unnest(child)
        firsts = np.concatenate([[0], np.cumsum(counts)[:-1]]) if rows else np.zeros(0, np.int64)
        owned = counts > 0
        fallback = declared[level] if declared[level] is not None else 0
        dims[:, level] = np.where(owned, lengths[np.minimum(firsts, max(len(lengths) - 1, 0))] if len(lengths)
                                  else fallback, fallback)
        if not np.array_equal(np.repeat(dims[:, level], counts), lengths):
            raise FeatureError(f"ragged array: lists of different lengths at depth {level + 1}")
        counts = counts * dims[:, level]
    values = _numeric_values(child, dtype)
    starts = np.concatenate([[0], np.cumsum(counts)])
    return TensorRows(values, starts, dims, valid)


@dataclass(frozen=True)
class Points(Feature):
    """A point cloud: (n, width) values per row, e.g. xyz, normals, uint8 colours. With a fixed
    `size` every row has exactly that many points (declared to HF as Array2D((size, width)))."""

    width: int = 3
    dtype: str = "float32"
    size: int | None = None

    def __post_init__(self):
        _numeric_dtype(self.dtype, "Points")
        if self.width < 1 or (self.size is not None and self.size < 0):
            raise FeatureError(f"Points: bad width {self.width} or size {self.size}")

    @property
    def shape(self) -> tuple:
        return (self.size, self.width)

    def arrow_type(self) -> pa.DataType:
        return _nested_type(2, self.dtype)

    def field_metadata(self) -> dict[bytes, bytes] | None:
        return _array_extension_metadata(self.shape, self.dtype)

    def encode(self, values: list) -> pa.Array:
        def shape_error(array: np.ndarray) -> str | None:
            if array.ndim != 2 or array.shape[1] != self.width or (self.size is not None and len(array) != self.size):
                return f"expected ({self.size if self.size is not None else 'n'}, {self.width})"
            return None

        return _encode_checked_rows(values, "Points", 2, self.dtype, shape_error)

    def decode(self, column, **options) -> TensorRows:
        return _decode_nested(column, 2, self.dtype, self.shape)

    def hf_json(self) -> dict[str, Any]:
        return _hf_nested(self.shape, self.dtype)

    def preview_tile(self, value: Any, colors: Any = None):
        from ..preview import render_cloud  # drawing lives in synthloom.preview (no cycle)

        if value is None:
            return None
        points = np.asarray(value, dtype=np.float64)
        if points.shape[1] < 3:
            points = np.pad(points, ((0, 0), (0, 3 - points.shape[1])))
        return render_cloud(points[:, :3], None if colors is None else np.asarray(colors)[:, :3])

    def describe(self) -> str:
        return f"Points({self.size if self.size is not None else 'n'} x {self.width} {self.dtype})"


@dataclass(frozen=True)
class Array(Feature):
    """An n-d numeric array per row: depth (H, W) float32, normals (H, W, 3), segmentation uint16.
    `None` dimensions may vary from row to row. Stored as nested lists, so a row with a zero-sized
    dimension cannot keep the sizes after it: they read back as the declared ones, or 0 if `None`."""

    shape: tuple
    dtype: str = "float32"

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(None if d is None else int(d) for d in self.shape))
        _numeric_dtype(self.dtype, "Array")
        if not self.shape or any(d is not None and d < 0 for d in self.shape):
            raise FeatureError(f"Array: bad shape {self.shape}")

    def arrow_type(self) -> pa.DataType:
        return _nested_type(len(self.shape), self.dtype)

    def field_metadata(self) -> dict[bytes, bytes] | None:
        return _array_extension_metadata(self.shape, self.dtype)

    def encode(self, values: list) -> pa.Array:
        def shape_error(array: np.ndarray) -> str | None:
            if array.ndim != len(self.shape) or any(d is not None and d != s for d, s in zip(self.shape, array.shape)):
                return f"declared {self.shape}"
            return None

        return _encode_checked_rows(values, "Array", len(self.shape), self.dtype, shape_error)

    def decode(self, column, **options) -> TensorRows:
        return _decode_nested(column, len(self.shape), self.dtype, self.shape)

    def hf_json(self) -> dict[str, Any]:
        return _hf_nested(self.shape, self.dtype)

    def preview_tile(self, value: Any):
        """Integer maps (segmentation) in a fixed palette, float maps (depth, normals) min-max scaled."""
        from PIL import Image as PILImage

        if value is None:
            return None
        array = np.asarray(value)
        if array.ndim == 3 and array.shape[2] in (1, 3):
            array = array[:, :, 0] if array.shape[2] == 1 else array
        elif array.ndim != 2:
            return None
        if array.dtype.kind in "iub" and array.ndim == 2:
            palette = np.random.default_rng(0).integers(40, 256, size=(256, 3), dtype=np.uint8)
            palette[0] = 0
            return PILImage.fromarray(palette[array.astype(np.int64) % 256])
        finite = np.isfinite(array)
        low, high = (array[finite].min(), array[finite].max()) if finite.any() else (0.0, 1.0)
        scaled = np.where(finite, (array - low) / ((high - low) or 1.0), 0.0)
        return PILImage.fromarray((scaled * 255).round().astype(np.uint8))

    def describe(self) -> str:
        dims = " x ".join("n" if d is None else str(d) for d in self.shape)
        return f"Array({dims} {self.dtype})"
