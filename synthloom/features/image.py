"""Image features: `Image` (PNG bytes in struct{bytes, path}) and `BoundingBoxes` (COCO xywh boxes), with
synthloom's one PNG decoder and encoder."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import FeatureError
from .core import Feature, Rows, _hf_value, _list_array, _numeric_values, _plain, _unnest


# -- images ------------------------------------------------------------------------------------
def decode_image(data: bytes, mode: str | None = None) -> np.ndarray:
    """The one PNG (or any PIL-readable image) decoder of synthloom: (H, W, C) uint8.

    `mode=None` keeps the stored channels: grayscale ("1", "L", 16-bit "I;16"/"I") -> 1
    channel, "RGB" -> 3, anything with alpha ("RGBA", "LA", "P" with transparency) -> 4,
    other modes -> 3. 16-bit values are scaled to 8 bits (PIL's own conversion clips them).
    `mode="L" | "RGB" | "RGBA"` converts to that mode.
    """

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
