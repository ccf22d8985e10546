"""The core feature types (Feature, Value, Text, ClassLabel), the Arrow helpers every feature shares, and the
decoded-column base `Rows`. `synthloom.features` (the package docstring) describes the whole format."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import FeatureError


SYNTHLOOM_KEY = b"synthloom"
HF_KEY = b"huggingface"
_EXTENSION_NAME = b"ARROW:extension:name"
_EXTENSION_METADATA = b"ARROW:extension:metadata"
_HF_ARRAY_EXTENSION = "datasets.features.features.Array{}DExtensionType"

# HF `Value` dtype names (what `datasets` writes) <-> Arrow types.
_DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
           "float16", "float32", "float64", "string", "large_string", "binary", "large_binary")
_NUMERIC = tuple(d for d in _DTYPES if d[0] in "iuf")
_ARROW_TO_DTYPE = {pa.type_for_alias(d): d for d in _DTYPES}


def arrow_dtype(dtype: str) -> pa.DataType:
    if dtype not in _DTYPES:
        raise FeatureError(f"unknown dtype {dtype!r} (known: {', '.join(_DTYPES)})")
    return pa.type_for_alias(dtype)


def _numeric_dtype(dtype: str, owner: str) -> str:
    if dtype not in _NUMERIC:
        raise FeatureError(f"{owner}: dtype {dtype!r} is not numeric (use one of {', '.join(_NUMERIC)})")
    return dtype


# -- Arrow helpers -----------------------------------------------------------------------------
def _plain(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One Arrow array, with HF's extension types unwrapped to their storage."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    chunks = [c.storage if isinstance(c, pa.ExtensionArray) else c for c in chunks]
    if not chunks:
        column_type = column.type.storage_type if isinstance(column.type, pa.ExtensionType) else column.type
        return pa.array([], type=column_type)
    return chunks[0] if len(chunks) == 1 else pa.concat_arrays(chunks)


def _list_array(lengths: np.ndarray, values: pa.Array, mask: np.ndarray | None = None) -> pa.ListArray:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] >= 2 ** 31:
        raise FeatureError(f"{offsets[-1]} values in one shard column: too many for one shard; lower shard_size")
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32), pa.int32()), values,
                                    mask=None if mask is None or not mask.any() else pa.array(mask))


def _unnest(array: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """(length of each list, 0 for nulls; the concatenated child values of exactly those lists)."""
    lengths = pc.list_value_length(array).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    return lengths, array.flatten()


def _numeric_values(array: pa.Array, dtype: str) -> np.ndarray:
    if array.null_count:
        raise FeatureError(f"null values inside an array of {dtype}")
    return array.to_numpy(zero_copy_only=False).astype(dtype, copy=False)


def _as_numpy(value: Any, dtype: str, owner: str) -> np.ndarray:
    """`value` as an array of `dtype`, refusing conversions that would change values silently."""
    array = np.asarray(value)
    target = np.dtype(dtype)
    if array.dtype == target:
        return array
    if array.dtype.kind not in "biuf":
        raise FeatureError(f"{owner}: expected numbers, got an array of {array.dtype}")
    if target.kind in "iu":
        if array.dtype.kind == "f":
            raise FeatureError(f"{owner}: float values cannot be stored as {dtype} without rounding; cast them first")
        info = np.iinfo(target)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise FeatureError(f"{owner}: values in [{array.min()}, {array.max()}] do not fit {dtype}")
    return array.astype(target)


# -- decoded columns ---------------------------------------------------------------------------
class Rows:
    """A decoded column: `rows[i]` is what `synthloom.load` returns for row i (torch where it can be),
    `rows.numpy(i)` the same as numpy / Python values (what preview and exports use)."""

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Any:
        return self.numpy(index)

    def numpy(self, index: int) -> Any:
        raise NotImplementedError


class ScalarRows(Rows):
    def __init__(self, values: np.ndarray | list):
        self.values = values

    def __len__(self) -> int:
        return len(self.values)

    def numpy(self, index: int) -> Any:
        value = self.values[index]
        return value.item() if isinstance(value, np.generic) else value


class LabelRows(Rows):
    """Class indices (-1 where null); `rows[i]` is a 0-d int64 tensor, `rows.names` the classes."""

    def __init__(self, values: np.ndarray, names: Sequence[str]):
        import torch

        self.values, self.names = values, list(names)
        self._tensor = torch.from_numpy(values)

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, index: int):
        return self._tensor[index]

    def numpy(self, index: int) -> int:
        return int(self.values[index])


# -- features ----------------------------------------------------------------------------------
FEATURE_TYPES: dict[str, type["Feature"]] = {}


@dataclass(frozen=True)
class Feature:
    """One column's type. Subclasses are small frozen dataclasses; see the module docstring."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        FEATURE_TYPES[cls.__name__] = cls

    def arrow_type(self) -> pa.DataType:
        raise NotImplementedError

    def field_metadata(self) -> dict[bytes, bytes] | None:
        """Arrow field metadata (HF's extension-type tag for fixed-shape arrays), or None."""
        return None

    def arrow_field(self, name: str) -> pa.Field:
        return pa.field(name, self.arrow_type(), metadata=self.field_metadata())

    def encode(self, values: list) -> pa.Array:
        """A whole column at once; None is a null row. Raises FeatureError on a bad value."""
        raise NotImplementedError

    def decode(self, column: pa.Array | pa.ChunkedArray, **options) -> Rows:
        """What the torch reader stores for the column: `rows[i]` is row i's value."""
        raise NotImplementedError

    def hf_json(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {"type": type(self).__name__}
        for item in fields(self):
            value = getattr(self, item.name)
            record[item.name] = list(value) if isinstance(value, tuple) else value
        return record

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> "Feature":
        kind = data.get("type")
        if kind not in FEATURE_TYPES or kind == "Feature":
            raise FeatureError(f"unknown feature type {kind!r} (known: {', '.join(sorted(FEATURE_TYPES))})")
        try:
            return FEATURE_TYPES[kind](**{k: v for k, v in data.items() if k != "type"})
        except TypeError as error:
            raise FeatureError(f"bad {kind} feature record {dict(data)}: {error}") from None

    def preview_tile(self, value: Any):
        """A PIL image drawing one row's value, or None when this column is not drawn (captions, ids)."""
        return None

    def describe(self) -> str:
        """One line for `inspect` and the dataset card."""
        args = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self))
        return f"{type(self).__name__}({args})"


def _hf_value(dtype: str) -> dict[str, Any]:
    return {"dtype": dtype, "_type": "Value"}


@dataclass(frozen=True)
class Value(Feature):
    """A scalar: int64, float32, string, bool, ..."""

    dtype: str

    def __post_init__(self):
        arrow_dtype(self.dtype)

    def arrow_type(self) -> pa.DataType:
        return arrow_dtype(self.dtype)

    def encode(self, values: list) -> pa.Array:
        try:
            return pa.array(values, type=self.arrow_type())
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as error:
            raise FeatureError(f"Value({self.dtype!r}): {error}") from None

    def decode(self, column, **options) -> Rows:
        array = _plain(column)
        if array.null_count == 0 and (pa.types.is_integer(array.type) or pa.types.is_floating(array.type)):
            return ScalarRows(array.to_numpy(zero_copy_only=False))
        return ScalarRows(array.to_pylist())

    def hf_json(self) -> dict[str, Any]:
        return _hf_value(self.dtype)


@dataclass(frozen=True)
class Text(Feature):
    """Free text: captions, prompts."""

    def arrow_type(self) -> pa.DataType:
        return pa.string()

    def encode(self, values: list) -> pa.Array:
        bad = next((v for v in values if v is not None and not isinstance(v, str)), None)
        if bad is not None:
            raise FeatureError(f"Text: expected str, got {type(bad).__name__}")
        return pa.array(values, type=pa.string())

    def decode(self, column, **options) -> Rows:
        return ScalarRows(_plain(column).to_pylist())

    def hf_json(self) -> dict[str, Any]:
        return _hf_value("string")


@dataclass(frozen=True)
class ClassLabel(Feature):
    """A class index into `names` (int64; rows may give the index or the name)."""

    names: tuple[str, ...]

    def __post_init__(self):
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        if len(set(self.names)) != len(self.names):
            raise FeatureError(f"ClassLabel: duplicate class names in {list(self.names)}")

    def arrow_type(self) -> pa.DataType:
        return pa.int64()

    def index(self, value: Any) -> int:
        if isinstance(value, str):
            try:
                return self.names.index(value)
            except ValueError:
                raise FeatureError(f"ClassLabel: unknown class {value!r} (classes: {', '.join(self.names)})") from None
        index = int(value)
        if index != value or not 0 <= index < len(self.names):
            raise FeatureError(f"ClassLabel: class index {value!r} outside 0..{len(self.names) - 1}")
        return index

    def encode(self, values: list) -> pa.Array:
        mask = np.array([v is None for v in values], dtype=bool)
        indices = np.array([0 if v is None else self.index(v) for v in values], dtype=np.int64)
        return pa.array(indices, type=pa.int64(), mask=mask if mask.any() else None)

    def decode(self, column, **options) -> Rows:
        array = _plain(column)
        return LabelRows(array.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64), self.names)

    def hf_json(self) -> dict[str, Any]:
        return {"names": list(self.names), "_type": "ClassLabel"}

    def describe(self) -> str:
        return f"ClassLabel({len(self.names)} classes: {', '.join(self.names[:8])}{', ...' if len(self.names) > 8 else ''})"
