"""preview.png: a grid of samples with their labels, so a person can look before training."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw

TILE = 160


def _render_cloud(points: np.ndarray, colors: np.ndarray | None) -> Image.Image:
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
    caption_h = 16
    canvas = Image.new("RGB", (columns * TILE, rows * (TILE + caption_h)), "white")
    draw = ImageDraw.Draw(canvas)
    for k, (tile, caption) in enumerate(zip(tiles, captions)):
        x, y = (k % columns) * TILE, (k // columns) * (TILE + caption_h)
        canvas.paste(tile.resize((TILE, TILE)), (x, y))
        draw.text((x + 4, y + TILE + 2), caption[:26], fill=(0, 0, 0))
    canvas.save(path, optimize=True)
    return path


def point_cloud_grid(clouds: list[np.ndarray], colors: list[np.ndarray | None], captions: list[str],
                     path: Path) -> Path:
    return grid([_render_cloud(p, c) for p, c in zip(clouds, colors)], captions, path)


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


def write_preview(table: pa.Table, path: Path) -> Path | None:
    """preview.png of a shard's rows; None when no column can be drawn yet."""
    if "points" not in table.column_names:
        return None
    from .dataset import fixed_list_to_numpy

    labels = table.column("label_name").to_pylist() if "label_name" in table.column_names else [""] * len(table)
    rows = table.take(pick_rows(labels))
    values, offsets = fixed_list_to_numpy(rows.column("points"))
    clouds = [values[offsets[i]: offsets[i + 1]] for i in range(len(rows))]
    colors: list = [None] * len(rows)
    if "point_colors" in rows.column_names and rows.column("point_colors").null_count == 0:
        color_values, color_offsets = fixed_list_to_numpy(rows.column("point_colors"))
        colors = [color_values[color_offsets[i]: color_offsets[i + 1]] for i in range(len(rows))]
    captions = [str(v) for v in rows.column("label_name").to_pylist()] if "label_name" in rows.column_names \
        else [""] * len(rows)
    return point_cloud_grid(clouds, colors, captions, path)
