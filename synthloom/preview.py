"""preview.png: a grid of samples with their labels, so a person can look before training."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw

from .errors import file_named
from .features import Array, BoundingBoxes, ClassLabel, Features, Points, Text, feature_of
from .features import Image as ImageFeature

TILE = 160


def render_cloud(points: np.ndarray, colors: np.ndarray | None) -> Image.Image:
    """Orthographic view from an oblique angle, near points drawn last and brighter."""
    tile = Image.new("RGB", (TILE, TILE), (250, 250, 250))
    if len(points) == 0:
        return tile
    yaw, pitch = math.radians(35), math.radians(25)
    rot_y = np.array([[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]])
    rot_x = np.array([[1, 0, 0], [0, math.cos(pitch), -math.sin(pitch)], [0, math.sin(pitch), math.cos(pitch)]])
    view = (points - points.mean(axis=0)) @ (rot_x @ rot_y).T
    extent = np.abs(view[:, :2]).max() or 1.0
    xy = (view[:, :2] / extent * 0.45 * TILE + TILE / 2).astype(int)
    depth = view[:, 2]
    shade = (depth - depth.min()) / (np.ptp(depth) or 1.0)  # 0 = far, 1 = near
    if colors is not None:
        rgb = colors.astype(np.float64) * (0.5 + 0.5 * shade[:, None])
    else:
        level = 40 + 160 * (1 - shade)
        rgb = np.stack([level, level, 255 - level / 2], axis=1)
    pixels = np.asarray(tile).copy()
    x = np.clip(xy[:, 0], 0, TILE - 2)
    y = np.clip(TILE - 1 - xy[:, 1], 0, TILE - 2)
    order = np.argsort(depth)  # far to near: numpy applies repeated-index writes in order, near ones last
    for dy in (0, 1):
        for dx in (0, 1):
            pixels[y[order] + dy, x[order] + dx] = rgb[order].astype(np.uint8)
    return Image.fromarray(pixels)


def grid(tiles: list[Image.Image], captions: list[str], path: Path, columns: int = 4) -> Path:
    rows = max(1, math.ceil(len(tiles) / columns))
    caption_h, gap = 16, 6  # the gap keeps dark images (digits on black) from running into each other
    canvas = Image.new("RGB", (columns * (TILE + gap) - gap, rows * (TILE + caption_h)), "white")
    draw = ImageDraw.Draw(canvas)
    for k, (tile, caption) in enumerate(zip(tiles, captions)):
        x, y = (k % columns) * (TILE + gap), (k // columns) * (TILE + caption_h)
        canvas.paste(tile.resize((TILE, TILE)), (x, y))
        draw.text((x + 4, y + TILE + 2), caption[:26], fill=(0, 0, 0))
    with file_named(path):
        canvas.save(path)  # optimize=True cost ~0.1 s per build for ~10 % fewer bytes
    return path


def point_cloud_grid(clouds: list[np.ndarray], colors: list[np.ndarray | None], captions: list[str],
                     path: Path) -> Path:
    return grid([render_cloud(p, c) for p, c in zip(clouds, colors)], captions, path)


def pick_rows(labels: list, count: int = 16) -> list[int]:
    """Up to `count` row indices, spread evenly over the labels present."""
    per_label = max(1, count // max(1, len(set(labels))))
    seen: dict = {}
    picks = []
    for i, label in enumerate(labels):
        if seen.get(label, 0) < per_label:
            seen[label] = seen.get(label, 0) + 1
            picks.append(i)
        if len(picks) == count:
            break
    return picks


def _fit(tile: Image.Image) -> tuple[Image.Image, float]:
    """The tile scaled to fit TILE x TILE keeping its aspect (nearest-neighbour, so small images
    stay crisp), and the scale."""
    scale = min(TILE / tile.width, TILE / tile.height)
    size = (max(1, round(tile.width * scale)), max(1, round(tile.height * scale)))
    return tile.convert("RGB").resize(size, Image.NEAREST), scale


def _centred(tile: Image.Image) -> Image.Image:
    canvas = Image.new("RGB", (TILE, TILE), (250, 250, 250))
    canvas.paste(tile, ((TILE - tile.width) // 2, (TILE - tile.height) // 2))
    return canvas


def write_preview(table: pa.Table, path: Path, features: Features | None = None) -> Path | None:
    """preview.png of a shard's rows, chosen by feature type: the first Image column (with its
    BoundingBoxes drawn on it), else the first float Points column (coloured by a uint8 Points
    column), else the first Array column; captions from the first ClassLabel (or Text) column.
    None when no column can be drawn."""
    features = features or Features.from_arrow_schema(table.schema)
    drawn = (feature_of(features, ImageFeature)
             or next((n for n in features.columns_of(Points) if features[n].dtype.startswith("float")), None)
             or feature_of(features, Array))
    if drawn is None or table.num_rows == 0:
        return None
    caption_column = feature_of(features, ClassLabel) or feature_of(features, Text)
    captions_all = ([str(v) for v in _captions(table, features, caption_column)] if caption_column
                    else [""] * table.num_rows)
    picks = pick_rows(captions_all)
    rows = table.take(picks)
    colors_column = next((n for n in features.columns_of(Points)
                          if features[n].dtype == "uint8" and isinstance(features[drawn], Points)), None)
    boxes_column = feature_of(features, BoundingBoxes) if isinstance(features[drawn], ImageFeature) else None
    decoded = {name: features[name].decode(rows.column(name))
               for name in (drawn, colors_column, boxes_column) if name is not None}
    tiles = []
    for i in range(len(picks)):
        value = decoded[drawn].numpy(i)
        if colors_column is not None:
            tile = features[drawn].preview_tile(value, colors=decoded[colors_column].numpy(i))
        else:
            tile = features[drawn].preview_tile(value)
        tile, scale = _fit(tile if tile is not None else Image.new("RGB", (TILE, TILE), (250, 250, 250)))
        if boxes_column is not None:
            features[boxes_column].overlay(tile, decoded[boxes_column].numpy(i), (scale, scale))
        tiles.append(_centred(tile))
    return grid(tiles, [captions_all[i] for i in picks], path)


def _captions(table: pa.Table, features: Features, column: str) -> list:
    values = table.column(column).to_pylist()
    feature = features[column]
    if isinstance(feature, ClassLabel):
        return [feature.names[v] if v is not None and 0 <= v < len(feature.names) else "" for v in values]
    return ["" if v is None else v for v in values]
