"""Typed columns: what each column of a dataset holds, and how it is written, read and drawn.

Modelled on Hugging Face `datasets.features`. A generator (or labeler) declares a
`Features` mapping, column name -> `Feature`; the writer encodes whole columns at
once with it and stores two keys in every shard's Arrow schema metadata:

* `huggingface`: `{"info": {"features": {...}}}`, the JSON `datasets` reads, so plain
  `datasets.load_dataset("parquet", ...)` returns PIL images, class names and
  `Array2D` tensors without synthloom;
* `synthloom`: `{"features": {name: feature.to_json()}}`, our own record, read back
  by `Features.from_arrow_schema` (shards written before it existed are inferred
  from their Arrow types).

Reader, preview, card, Croissant, exports and evaluators dispatch on these types,
never on a column name.

Arrow layouts (chosen so that `datasets` accepts the declared feature: it keeps a
metadata feature only when its Arrow type equals the column's):

| feature | Arrow type | HF feature |
| --- | --- | --- |
| `Value(dtype)` | dtype | `Value` |
| `Text()` | string | `Value("string")` |
| `ClassLabel(names)` | int64 | `ClassLabel` |
| `Image()` | struct{bytes: binary, path: string} (PNG) | `Image` |
| `BoundingBoxes(categories)` | list<struct{bbox: fixed_size_list<float32, 4>, category: int64, score: float32}> | `List({...})` |
| `Points(width, dtype, size)` | list<list<dtype>> tagged as HF's Array2D extension | `Array2D((size, width))` |
| `Array(shape, dtype)` | shape-deep nested lists; tagged Array2D..5D when only the first dim may vary | `ArrayND` or nested `List` |

Points are written as HF's `Array2D` storage (nested variable lists) rather than
`list<fixed_size_list>`: `datasets` ignores an `Array2D` declaration on any other
layout and then reads clouds ~30x slower (77 vs 2,262 samples/s measured here, see
benchmarks/RESULTS.md). The extension is declared through Arrow field metadata, so
writing needs no `datasets` import; a process that imported `datasets` reads the
column back as its extension type, and `decode` accepts both.
"""

from __future__ import annotations

import io
import re
import json
from dataclasses import dataclass, fields
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import FeatureError

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


# -- images ------------------------------------------------------------------------------------
def decode_image(data: bytes, mode: str | None = None) -> np.ndarray:
    """The one PNG (or any PIL-readable image) decoder of synthloom: (H, W, C) uint8.

    `mode=None` keeps the stored channels: grayscale ("1", "L", 16-bit "I;16"/"I") -> 1
    channel, "RGB" -> 3, anything with alpha ("RGBA", "LA", "P" with transparency) -> 4,
    other modes -> 3. 16-bit values are scaled to 8 bits (PIL's own conversion clips them).
    `mode="L" | "RGB" | "RGBA"` converts to that mode.
    """
    from PIL import Image

    image = open_image(data, load=True)
    with image:
        if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N") and mode in (None, "L"):
            wide = np.array(image, dtype=np.int64)
            array = ((np.clip(wide, 0, 65535) + 128) // 257).astype(np.uint8)
        else:
            if mode is None:
                has_alpha = "A" in image.getbands() or (image.mode == "P" and "transparency" in image.info)
                mode = image.mode if image.mode in ("L", "RGB", "RGBA") else (
                    "L" if image.mode == "1" else "RGBA" if has_alpha else "RGB")
            array = np.array(image if image.mode == mode else image.convert(mode))
    return array[:, :, None] if array.ndim == 2 else array


_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF8": "GIF", b"BM": "BMP",
               b"RIFF": "WebP"}


def open_image(data: bytes, load: bool = False):
    """A PIL image of encoded bytes (`load`: decode the pixels too, not just the header), or a one-line
    FeatureError saying what is wrong in words (PIL's own message names an in-memory buffer object)."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
        if load:
            image.load()
        return image
    except UnidentifiedImageError:
        kind = next((name for magic, name in _SIGNATURES.items() if bytes(data[:len(magic)]) == magic), None)
        raise FeatureError(f"not a readable image: a corrupt or truncated {kind} ({len(data)} bytes)" if kind else
                           f"not a readable image: {len(data)} bytes in no image format PIL knows "
                           f"(they start {bytes(data[:8])!r})") from None
    except Exception as error:  # truncated or corrupt data: PIL raises OSError, SyntaxError, ValueError, ...
        reason = re.sub(r"<_io\.BytesIO object at 0x[0-9a-f]+>", "the image bytes", str(error))
        raise FeatureError(f"not a readable image ({type(error).__name__}: {reason})") from None


def encode_png(value: Any) -> bytes:
    """PNG bytes of a uint8 (H, W) / (H, W, 1|3|4) array or a PIL image."""
    from PIL import Image

    if isinstance(value, Image.Image):
        image = value
    else:
        array = np.asarray(value)
        if array.dtype != np.uint8:
            raise FeatureError(f"Image: arrays must be uint8, got {array.dtype} (scale and cast them first)")
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[:, :, 0]
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)) or 0 in array.shape:
            raise FeatureError(f"Image: expected an (H, W) or (H, W, 1|3|4) array, got shape {array.shape}")
        image = Image.fromarray(np.ascontiguousarray(array))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


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


class ImageRows(Rows):
    """Encoded images, decoded on access: `rows[i]` is a CHW tensor, uint8 or float in [0, 1]."""

    def __init__(self, data: list, paths: list, image_format: str = "uint8"):
        if image_format not in ("uint8", "float"):
            raise FeatureError(f"image_format must be 'uint8' or 'float', got {image_format!r}")
        self.data, self.paths, self.image_format = data, paths, image_format

    def __len__(self) -> int:
        return len(self.data)

    def numpy(self, index: int) -> np.ndarray | None:
        data = self.data[index]
        if data is None and self.paths[index]:
            with open(self.paths[index], "rb") as handle:
                data = handle.read()
        return None if data is None else decode_image(data)

    def __getitem__(self, index: int):
        import torch

        array = self.numpy(index)
        if array is None:
            return None
        tensor = torch.from_numpy(array).permute(2, 0, 1)
        return tensor.float().div_(255.0) if self.image_format == "float" else tensor.contiguous()


class BoxRows(Rows):
    """`rows[i]` = {"boxes": (n, 4) float32 COCO xywh in pixels, "labels": (n,) int64,
    "scores": (n,) float32, NaN where a box has no score}; None for a null row."""

    def __init__(self, boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray, offsets: np.ndarray,
                 valid: np.ndarray):
        # Writable copies, so every item can be a zero-copy torch view.
        self.boxes, self.labels, self.scores = (np.array(a, copy=True) for a in (boxes, labels, scores))
        self.offsets, self.valid = offsets, valid

    def __len__(self) -> int:
        return len(self.valid)

    def numpy(self, index: int) -> dict[str, np.ndarray] | None:
        if not self.valid[index]:
            return None
        cut = slice(self.offsets[index], self.offsets[index + 1])
        return {"boxes": self.boxes[cut], "labels": self.labels[cut], "scores": self.scores[cut]}

    def __getitem__(self, index: int):
        import torch

        row = self.numpy(index)
        return None if row is None else {k: torch.from_numpy(v) for k, v in row.items()}


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


IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


@dataclass(frozen=True)
class Image(Feature):
    """An image stored as PNG bytes in HF's struct{bytes, path}. Rows give uint8 (H, W) /
    (H, W, C) arrays, PIL images, or already encoded image bytes."""

    def arrow_type(self) -> pa.DataType:
        return IMAGE_TYPE

    def encode(self, values: list) -> pa.Array:
        data, paths = [], []
        for value in values:
            path = None
            if isinstance(value, dict):
                path = value.get("path")
                value = value.get("bytes")
                if value is None and path is not None:
                    with open(path, "rb") as handle:
                        value = handle.read()
            if value is None:
                data.append(None)
            elif isinstance(value, (bytes, bytearray, memoryview)):
                decode_image(bytes(value))  # refuse bytes that are not an image now, not at training time
                data.append(bytes(value))
            else:
                data.append(encode_png(value))
            paths.append(path)
        mask = pa.array([d is None for d in data])
        return pa.StructArray.from_arrays([pa.array(data, pa.binary()), pa.array(paths, pa.string())],
                                          fields=list(IMAGE_TYPE), mask=mask)

    def decode(self, column, image_format: str = "uint8", **options) -> Rows:
        array = _plain(column)
        data, paths = array.flatten()
        valid = array.is_valid().to_numpy(zero_copy_only=False)
        data = [d if ok else None for d, ok in zip(data.to_pylist(), valid)]
        return ImageRows(data, paths.to_pylist(), image_format)

    def hf_json(self) -> dict[str, Any]:
        return {"_type": "Image"}

    def preview_tile(self, value: Any):
        from PIL import Image as PILImage

        if value is None:
            return None
        if hasattr(value, "permute"):  # a CHW torch tensor from `decode`
            value = value.permute(1, 2, 0).numpy()
            value = (value * 255).round().astype(np.uint8) if value.dtype.kind == "f" else value
        array = np.asarray(value)
        return PILImage.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)

    def describe(self) -> str:
        return "Image(PNG)"


BOX_TYPE = pa.struct([("bbox", pa.list_(pa.float32(), 4)), ("category", pa.int64()), ("score", pa.float32())])


@dataclass(frozen=True)
class BoundingBoxes(Feature):
    """Objects in an image: COCO boxes [x, y, width, height] in pixels, a category index into
    `categories` and an optional score (null for ground truth). A row is a list of
    {"bbox", "category", "score"} dicts or {"boxes": (n, 4), "labels": (n,), "scores": (n,)}."""

    categories: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "categories", tuple(str(c) for c in self.categories))

    def arrow_type(self) -> pa.DataType:
        return pa.list_(BOX_TYPE)

    def _category(self, value: Any) -> int:
        if isinstance(value, str):
            if value not in self.categories:
                raise FeatureError(f"BoundingBoxes: unknown category {value!r} "
                                   f"(categories: {', '.join(self.categories) or 'none declared'})")
            return self.categories.index(value)
        index = int(value)
        if index != value or index < 0 or (self.categories and index >= len(self.categories)):
            raise FeatureError(f"BoundingBoxes: category {value!r} outside 0..{len(self.categories) - 1}")
        return index

    def _row(self, value: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if isinstance(value, dict):
            boxes = value.get("boxes", [])
            labels = list(np.asarray(value.get("labels", [])).tolist())
            scores = value.get("scores")
            scores = [None] * len(labels) if scores is None else list(np.asarray(scores, dtype=object))
        else:
            objects = list(value)
            boxes = [o["bbox"] for o in objects]
            labels = [o["category"] for o in objects]
            scores = [o.get("score") for o in objects]
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) if len(boxes) else np.zeros((0, 4), np.float32)
        if not (len(boxes) == len(labels) == len(scores)):
            raise FeatureError(f"BoundingBoxes: {len(boxes)} boxes, {len(labels)} labels, {len(scores)} scores")
        if not np.isfinite(boxes).all() or (boxes[:, 2:] < 0).any():
            raise FeatureError("BoundingBoxes: boxes must be finite [x, y, width, height] with width, height >= 0")
        score_array = np.array([np.nan if s is None else float(s) for s in scores], dtype=np.float32)
        return boxes, np.array([self._category(c) for c in labels], dtype=np.int64), score_array

    def encode(self, values: list) -> pa.Array:
        rows = [None if v is None else self._row(v) for v in values]
        present = [r for r in rows if r is not None]
        boxes = np.concatenate([r[0] for r in present]) if present else np.zeros((0, 4), np.float32)
        labels = np.concatenate([r[1] for r in present]) if present else np.zeros(0, np.int64)
        scores = np.concatenate([r[2] for r in present]) if present else np.zeros(0, np.float32)
        score_null = np.isnan(scores)
        objects = pa.StructArray.from_arrays(
            [pa.FixedSizeListArray.from_arrays(pa.array(boxes.reshape(-1), pa.float32()), 4),
             pa.array(labels, pa.int64()),
             pa.array(scores, pa.float32(), mask=score_null if score_null.any() else None)],
            fields=list(BOX_TYPE))
        lengths = np.array([0 if r is None else len(r[0]) for r in rows], dtype=np.int64)
        return _list_array(lengths, objects, np.array([r is None for r in rows], dtype=bool))

    def decode(self, column, **options) -> Rows:
        array = _plain(column)
        lengths, objects = _unnest(array)
        bbox, category, score = objects.flatten()
        boxes = _numeric_values(bbox.flatten(), "float32").reshape(-1, 4)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        scores = score.fill_null(np.nan).to_numpy(zero_copy_only=False).astype(np.float32)
        return BoxRows(boxes, category.to_numpy(zero_copy_only=False).astype(np.int64), scores, offsets,
                       array.is_valid().to_numpy(zero_copy_only=False))

    def hf_json(self) -> dict[str, Any]:
        category = ({"names": list(self.categories), "_type": "ClassLabel"} if self.categories
                    else _hf_value("int64"))
        return {"feature": {"bbox": {"feature": _hf_value("float32"), "length": 4, "_type": "List"},
                            "category": category, "score": _hf_value("float32")}, "_type": "List"}

    def overlay(self, tile, value: Any, scale: tuple[float, float] = (1.0, 1.0)):
        """Draw one row's boxes (and category names) onto a PIL image, scaled from pixels to the tile."""
        from PIL import ImageDraw

        if value is None:
            return tile
        draw = ImageDraw.Draw(tile)
        boxes, labels = np.asarray(value["boxes"]), np.asarray(value["labels"])
        for (x, y, w, h), label in zip(boxes, labels):
            corners = [x * scale[0], y * scale[1], (x + w) * scale[0], (y + h) * scale[1]]
            draw.rectangle(corners, outline=(255, 220, 0), width=2)
            name = self.categories[label] if 0 <= label < len(self.categories) else str(label)
            draw.text((corners[0] + 2, corners[1] + 1), name, fill=(255, 220, 0))
        return tile

    def describe(self) -> str:
        return f"BoundingBoxes(COCO xywh; categories: {', '.join(self.categories) or 'indices'})"


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
        from .preview import render_cloud

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


# -- a dataset's columns -----------------------------------------------------------------------
class Features(dict):
    """Column name -> Feature, in column order."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name, feature in self.items():
            if not isinstance(feature, Feature):
                raise FeatureError(f"column '{name}': {feature!r} is not a synthloom Feature")

    def __setitem__(self, name: str, feature: Feature) -> None:
        if not isinstance(feature, Feature):
            raise FeatureError(f"column '{name}': {feature!r} is not a synthloom Feature")
        super().__setitem__(name, feature)

    def columns_of(self, kind: type[Feature] | tuple[type[Feature], ...]) -> list[str]:
        """Names of the columns whose feature is a `kind`, in column order."""
        return [name for name, feature in self.items() if isinstance(feature, kind)]

    def to_json(self) -> dict[str, Any]:
        return {name: feature.to_json() for name, feature in self.items()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Features":
        return cls({name: Feature.from_json(record) for name, record in data.items()})

    def hf_metadata(self) -> dict[bytes, bytes]:
        hf = {"info": {"features": {name: feature.hf_json() for name, feature in self.items()}}}
        return {HF_KEY: json.dumps(hf).encode(), SYNTHLOOM_KEY: json.dumps({"features": self.to_json()}).encode()}

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([feature.arrow_field(name) for name, feature in self.items()], metadata=self.hf_metadata())

    def encode_table(self, rows: Sequence[Mapping[str, Any]]) -> pa.Table:
        """A table of `rows` (dicts; a missing key is a null), the metadata on its schema."""
        columns = []
        for name, feature in self.items():
            try:
                columns.append(feature.encode([row.get(name) for row in rows]))
            except FeatureError as error:
                raise FeatureError(f"column '{name}': {error}") from None
        return pa.Table.from_arrays(columns, schema=self.arrow_schema())

    def decode_table(self, table: pa.Table, **options) -> dict[str, Rows]:
        return {name: self[name].decode(table.column(name), **options) for name in table.column_names}

    @classmethod
    def from_arrow_schema(cls, schema: pa.Schema, class_names: Sequence[str] | None = None) -> "Features":
        """The features a shard's schema declares; columns without a record are inferred from their
        Arrow types (shards written before typed features), `label` as a ClassLabel of `class_names`."""
        metadata = schema.metadata or {}
        stored: dict[str, Any] = {}
        if SYNTHLOOM_KEY in metadata:
            try:
                stored = json.loads(metadata[SYNTHLOOM_KEY])["features"]
            except (ValueError, KeyError, TypeError) as error:
                raise FeatureError(f"unreadable synthloom features metadata ({error})") from None
        result = cls()
        for field in schema:
            if field.name in stored:
                feature = Feature.from_json(stored[field.name])
                if not _storage_type(field.type).equals(feature.arrow_type()):
                    raise FeatureError(f"column '{field.name}': stored as {field.type}, but its metadata declares "
                                       f"{feature.describe()} ({feature.arrow_type()})")
                result[field.name] = feature
            else:
                result[field.name] = infer_feature(field, class_names)
        return result


def _storage_type(arrow: pa.DataType) -> pa.DataType:
    return arrow.storage_type if isinstance(arrow, pa.ExtensionType) else arrow


def _nested_depth(arrow: pa.DataType) -> tuple[int, pa.DataType]:
    depth = 0
    while pa.types.is_list(arrow) or pa.types.is_large_list(arrow) or pa.types.is_fixed_size_list(arrow):
        depth, arrow = depth + 1, arrow.value_type
    return depth, arrow


def leaf_dtype(arrow: pa.DataType) -> str:
    """The dtype name of the values inside (possibly nested) lists of `arrow`."""
    leaf = _nested_depth(_storage_type(arrow))[1]
    if leaf not in _ARROW_TO_DTYPE:
        raise FeatureError(f"no dtype for Arrow type {leaf}")
    return _ARROW_TO_DTYPE[leaf]


def infer_feature(field: pa.Field, class_names: Sequence[str] | None = None) -> Feature:
    """The feature of a column that carries no synthloom record, from its Arrow type."""
    arrow = field.type
    extension = None
    if isinstance(arrow, pa.ExtensionType) and hasattr(arrow, "shape") and hasattr(arrow, "value_type"):
        extension = (tuple(arrow.shape), arrow.value_type)  # HF's ArrayND, `datasets` imported
        arrow = arrow.storage_type
    elif field.metadata and _EXTENSION_METADATA in field.metadata:
        shape, dtype = json.loads(field.metadata[_EXTENSION_METADATA])  # the same, read without `datasets`
        extension = (tuple(shape), dtype)
    if extension is not None and extension[1] in _NUMERIC:
        return Array(extension[0], extension[1])
    if arrow.equals(IMAGE_TYPE):
        return Image()
    if arrow.equals(pa.list_(BOX_TYPE)):
        return BoundingBoxes()
    if arrow in _ARROW_TO_DTYPE:
        if field.name == "label" and class_names and pa.types.is_integer(arrow):
            return ClassLabel(tuple(class_names))
        return Value(_ARROW_TO_DTYPE[arrow])
    depth, leaf = _nested_depth(arrow)
    if depth and leaf in _ARROW_TO_DTYPE and _ARROW_TO_DTYPE[leaf] in _NUMERIC:
        # list<fixed_size_list<T, k>>: the point columns of datasets written before typed features.
        if depth == 2 and pa.types.is_list(arrow) and pa.types.is_fixed_size_list(arrow.value_type):
            return Points(arrow.value_type.list_size, _ARROW_TO_DTYPE[leaf])
        return Array((None,) * depth, _ARROW_TO_DTYPE[leaf])
    raise FeatureError(f"column '{field.name}': no synthloom feature for Arrow type {field.type}")


def feature_of(features: Mapping[str, Feature], kinds: type[Feature] | tuple[type[Feature], ...]) -> str | None:
    """The first column whose feature is one of `kinds`, or None."""
    return next((name for name, feature in features.items() if isinstance(feature, kinds)), None)


__all__ = ["Array", "BoundingBoxes", "ClassLabel", "Feature", "Features", "Image", "Points", "Rows", "Text",
           "Value", "decode_image", "encode_png", "infer_feature", "feature_of"]
