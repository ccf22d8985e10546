"""Export a dataset to other tools' formats.

- `ply`: point clouds (binary little-endian, with normals and colours when present: what MeshLab,
  CloudCompare, Open3D and trimesh read), `<out>/<split>/<class>/<id>.ply`.
- `coco`: detection boxes as COCO JSON (what pycocotools, detectron2, mmdetection read):
  `<out>/annotations/instances_<split>.json` and `<out>/images/<split>/<id>.png`.
- `yolo`: Ultralytics' layout: `<out>/images/<split>/<id>.png`, `<out>/labels/<split>/<id>.txt` with one
  `class cx cy w h` line per box, normalised to [0, 1], and `<out>/data.yaml`.
- `imagefolder`: torchvision's / HF `imagefolder` layout, `<out>/<split>/<class>/<id>.png`.

Columns are chosen by feature type (the first `BoundingBoxes`, `Image`, `ClassLabel`), or named with
`column=`. Images are written as the PNG bytes the dataset stores, never re-encoded. Every exporter
returns the number of files (images, or clouds) it wrote.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import dataset as ds
from .errors import DatasetError
from .features import BoundingBoxes, ClassLabel, Features, Image, Points, feature_of, open_image

FORMATS = ("ply", "coco", "yolo", "imagefolder")
# Ultralytics names the validation split `val` in data.yaml.
YOLO_SPLIT_KEYS = {"train": "train", "validation": "val", "val": "val", "test": "test"}


def write_ply(path: Path, points: np.ndarray, normals: np.ndarray | None = None,
              colors: np.ndarray | None = None) -> None:
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(points)}",
              "property float x", "property float y", "property float z"]
    if normals is not None:
        fields += [("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")]
        header += ["property float nx", "property float ny", "property float nz"]
    if colors is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
        header += ["property uchar red", "property uchar green", "property uchar blue"]
    header.append("end_header")
    record = np.empty(len(points), dtype=fields)
    record["x"], record["y"], record["z"] = points.T
    if normals is not None:
        record["nx"], record["ny"], record["nz"] = normals.T
    if colors is not None:
        record["red"], record["green"], record["blue"] = colors.T
    with open(path, "wb") as handle:
        handle.write(("\n".join(header) + "\n").encode("ascii"))
        handle.write(record.tobytes())


def ply_columns(features: Features) -> tuple[str, str | None, str | None]:
    """(xyz, normals, colours) columns of a dataset, by feature type: the first float `Points` column
    of width 3 holds the positions; a second one the normals; a uint8 `Points` column of width 3 or 4
    the colours."""
    floats = [n for n in features.columns_of(Points) if features[n].dtype.startswith("float") and features[n].width == 3]
    colors = [n for n in features.columns_of(Points) if features[n].dtype == "uint8" and features[n].width in (3, 4)]
    if not floats:
        raise DatasetError("has no Points column of 3-d positions; --format ply exports point clouds only")
    return floats[0], floats[1] if len(floats) > 1 else None, colors[0] if colors else None


def export_ply(dataset_path: str | Path, out_dir: str | Path, split: str | None = None,
               on_file=None) -> int:
    """Write `<out>/<split>/<class>/<id>.ply` for every row (class: the first ClassLabel column's name
    of the row, or `all`); returns the number of files."""
    version_dir = ds.resolve_version_dir(dataset_path)
    manifest = ds.read_manifest(version_dir)
    table = ds.read_table(version_dir, manifest, split)
    features = ds.read_features(table, manifest)
    try:
        xyz, normals, colors = ply_columns(features)
    except DatasetError as error:
        raise DatasetError(f"{version_dir}: {error}") from None
    out_dir = Path(out_dir)
    decoded = {name: features[name].decode(table.column(name)) for name in (xyz, normals, colors) if name}
    label = feature_of(features, ClassLabel)
    names = ([features[label].names[v] if v is not None and 0 <= v < len(features[label].names) else "unlabelled"
              for v in table.column(label).to_pylist()] if label else ["all"] * table.num_rows)
    ids = table.column("id").to_pylist() if "id" in table.column_names else [f"{i:08d}" for i in range(table.num_rows)]
    splits = table.column("split").to_pylist() if "split" in table.column_names else [split or "all"] * len(ids)
    written = 0
    for i, sample_id in enumerate(ids):
        points = decoded[xyz].numpy(i)
        if points is None:
            continue
        folder = out_dir / splits[i] / names[i]
        folder.mkdir(parents=True, exist_ok=True)
        extra = {role: decoded[name].numpy(i) if name else None for role, name in (("normals", normals),
                                                                                    ("colors", colors))}
        if extra["colors"] is not None:
            extra["colors"] = extra["colors"][:, :3]
        write_ply(folder / f"{sample_id}.ply", points, extra["normals"], extra["colors"])
        written += 1
        if on_file is not None:
            on_file()
    return written


# -- image datasets ----------------------------------------------------------------------------
def _column(features: Features, kind: type, chosen: str | None, version_dir: Path, purpose: str) -> str:
    if chosen is not None:
        if chosen not in features or not isinstance(features[chosen], kind):
            found = features[chosen].describe() if chosen in features else "absent"
            raise DatasetError(f"{version_dir}: column '{chosen}' is not a {kind.__name__} column ({found})")
        return chosen
    name = feature_of(features, kind)
    if name is None:
        raise DatasetError(f"{version_dir}: has no {kind.__name__} column; {purpose}")
    return name


def _splits(version_dir: Path, manifest: dict[str, Any], split: str | None) -> list[str]:
    splits = list(dict.fromkeys(s["split"] for s in manifest["shards"]))
    if split is not None:
        if split not in splits:
            raise DatasetError(f"{version_dir}: no split '{split}' (splits: {', '.join(splits)})")
        return [split]
    return splits


class _ImageWriter:
    """Writes a row's stored image bytes (or copies the file a row points to) as `<folder>/<id>.<ext>`."""

    def __init__(self, rows):
        self.rows = rows

    def write(self, index: int, folder: Path, stem: str) -> tuple[str, int, int] | None:
        """(file name, width, height), or None for a row without an image."""
        data = self.rows.data[index]
        if data is None and self.rows.paths[index]:
            data = Path(self.rows.paths[index]).read_bytes()
        if data is None:
            return None
        with open_image(data) as image:  # reads the header only
            width, height = image.size
            ext = (image.format or "png").lower().replace("jpeg", "jpg")
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{stem}.{ext}"
        (folder / name).write_bytes(data)
        return name, width, height


def _clip_boxes(boxes: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """COCO xywh boxes clipped to the image, and the mask of those keeping a positive area."""
    x0 = np.clip(boxes[:, 0], 0, width)
    y0 = np.clip(boxes[:, 1], 0, height)
    x1 = np.clip(boxes[:, 0] + boxes[:, 2], 0, width)
    y1 = np.clip(boxes[:, 1] + boxes[:, 3], 0, height)
    clipped = np.stack([x0, y0, x1 - x0, y1 - y0], axis=1).astype(np.float64)
    return clipped, (clipped[:, 2] > 0) & (clipped[:, 3] > 0)


def _category_names(feature: BoundingBoxes, rows, count: int) -> list[str]:
    if feature.categories:
        return list(feature.categories)
    labels = [int(l) for i in range(count) if rows.numpy(i) is not None for l in rows.numpy(i)["labels"]]
    return [str(k) for k in range(max(labels, default=-1) + 1)]


def _version(dataset_path, split: str | None) -> tuple[Path, dict[str, Any], list[str]]:
    """(version folder, manifest, the splits to export)."""
    version_dir = ds.resolve_version_dir(dataset_path)
    manifest = ds.read_manifest(version_dir)
    splits = _splits(version_dir, manifest, split)
    return version_dir, manifest, splits


def _image_splits(version_dir: Path, manifest: dict[str, Any], splits: list[str], fmt: str, kind: type,
                  column: str | None, purpose: str):
    """Per split: (name, table, features, image writer, the chosen `kind` column) — what every image
    exporter opens before doing its own work."""
    for name in splits:
        table = ds.read_table(version_dir, manifest, name)
        features = ds.read_features(table, manifest)
        image = _column(features, Image, None, version_dir, f"--format {fmt} exports images")
        chosen = _column(features, kind, column, version_dir, f"--format {fmt} {purpose}")
        yield name, table, features, _ImageWriter(features[image].decode(table.column(image))), chosen


def export_coco(dataset_path: str | Path, out_dir: str | Path, split: str | None = None, on_file=None,
                column: str | None = None) -> int:
    """COCO detection JSON per split. Image ids and annotation ids count from 1, category ids are
    the BoundingBoxes categories' indices + 1 (COCO's 0 is no class), `area` is the box's w x h in
    pixels, boxes are clipped to their image and boxes left without area are dropped (counted in
    `info.dropped_boxes`). A box's score, when it has one (auto-labels), is kept as `score`."""
    version_dir, manifest, splits = _version(dataset_path, split)
    out_dir = Path(out_dir)
    written = 0
    for name, table, features, images, boxes_column in _image_splits(version_dir, manifest, splits, "coco",
                                                                     BoundingBoxes, column, "exports boxes"):
        boxes = features[boxes_column].decode(table.column(boxes_column))
        categories = _category_names(features[boxes_column], boxes, table.num_rows)
        ids = table.column("id").to_pylist()
        coco: dict[str, Any] = {
            "info": {"description": f"{manifest['recipe']['name']} {manifest['version']} ({name})",
                     "version": str(manifest["version"]), "date_created": manifest.get("created_at"),
                     "contributor": "synthloom", "boxes_column": boxes_column, "dropped_boxes": 0},
            "licenses": [],
            "images": [], "annotations": [],
            "categories": [{"id": k + 1, "name": c, "supercategory": "none"} for k, c in enumerate(categories)],
        }
        for i, sample_id in enumerate(ids):
            found = images.write(i, out_dir / "images" / name, sample_id)
            if found is None:
                continue
            file_name, width, height = found
            image_id = len(coco["images"]) + 1
            coco["images"].append({"id": image_id, "file_name": file_name, "width": width, "height": height})
            row = boxes.numpy(i)
            if row is not None and len(row["boxes"]):
                clipped, keep = _clip_boxes(row["boxes"], width, height)
                coco["info"]["dropped_boxes"] += int((~keep).sum())
                for box, label, score in zip(clipped[keep], row["labels"][keep], row["scores"][keep]):
                    annotation = {"id": len(coco["annotations"]) + 1, "image_id": image_id,
                                  "category_id": int(label) + 1, "bbox": [round(float(v), 3) for v in box],
                                  "area": round(float(box[2] * box[3]), 3), "iscrowd": 0}
                    if np.isfinite(score):
                        annotation["score"] = float(score)
                    coco["annotations"].append(annotation)
            written += 1
            if on_file is not None:
                on_file()
        path = out_dir / "annotations" / f"instances_{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)  # only now: a refused export leaves no empty folder
        path.write_text(json.dumps(coco, indent=1) + "\n")
    return written


def export_yolo(dataset_path: str | Path, out_dir: str | Path, split: str | None = None, on_file=None,
                column: str | None = None) -> int:
    """Ultralytics YOLO detection layout; every label file is read back and checked after writing."""
    version_dir, manifest, splits = _version(dataset_path, split)
    out_dir = Path(out_dir)
    written, names = 0, None
    for name, table, features, images, boxes_column in _image_splits(version_dir, manifest, splits, "yolo",
                                                                     BoundingBoxes, column, "exports boxes"):
        boxes = features[boxes_column].decode(table.column(boxes_column))
        names = names or _category_names(features[boxes_column], boxes, table.num_rows)
        labels_dir = out_dir / "labels" / name
        labels_dir.mkdir(parents=True, exist_ok=True)
        for i, sample_id in enumerate(table.column("id").to_pylist()):
            found = images.write(i, out_dir / "images" / name, sample_id)
            if found is None:
                continue
            _, width, height = found
            row = boxes.numpy(i)
            lines = []
            if row is not None and len(row["boxes"]):
                clipped, keep = _clip_boxes(row["boxes"], width, height)
                for (x, y, w, h), label in zip(clipped[keep], row["labels"][keep]):
                    lines.append(f"{int(label)} {(x + w / 2) / width:.6f} {(y + h / 2) / height:.6f} "
                                 f"{w / width:.6f} {h / height:.6f}")
            label_file = labels_dir / f"{sample_id}.txt"
            label_file.write_text("".join(line + "\n" for line in lines))
            read_yolo_labels(label_file, len(names))  # validated by reading back
            written += 1
            if on_file is not None:
                on_file()
    data = {"path": str(out_dir.resolve()), **{YOLO_SPLIT_KEYS.get(s, s): f"images/{s}" for s in splits},
            "nc": len(names or []), "names": {k: n for k, n in enumerate(names or [])}}
    import yaml

    (out_dir / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return written


def read_yolo_labels(path: Path, classes: int) -> np.ndarray:
    """(n, 5) array [class, cx, cy, w, h] of a YOLO label file; DatasetError naming the file and line
    when a line is not `class cx cy w h` with a known class and a box inside [0, 1]."""
    rows = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        fields = line.split()
        try:
            values = [float(v) for v in fields]
        except ValueError:
            values = []
        ok = len(values) == 5 and values[0] == int(values[0]) and 0 <= values[0] < classes
        if ok:
            _, cx, cy, w, h = values
            ok = 0 < w <= 1 and 0 < h <= 1 and -1e-6 <= cx - w / 2 and cx + w / 2 <= 1 + 1e-6 \
                and -1e-6 <= cy - h / 2 and cy + h / 2 <= 1 + 1e-6
        if not ok:
            raise DatasetError(f"{path}:{number}: not a valid YOLO box line ({line!r}; {classes} classes)")
        rows.append(values)
    return np.array(rows, dtype=np.float64).reshape(-1, 5)


def export_imagefolder(dataset_path: str | Path, out_dir: str | Path, split: str | None = None, on_file=None,
                       column: str | None = None) -> int:
    """One folder per class (the first ClassLabel column, or `column`): `<out>/<split>/<class>/<id>.png`."""
    version_dir, manifest, splits = _version(dataset_path, split)
    out_dir = Path(out_dir)
    written = 0
    for name, table, features, images, label in _image_splits(version_dir, manifest, splits, "imagefolder",
                                                              ClassLabel, column, "needs a class per image"):
        classes = features[label].names
        for i, (sample_id, value) in enumerate(zip(table.column("id").to_pylist(), table.column(label).to_pylist())):
            folder = classes[value] if value is not None and 0 <= value < len(classes) else "unlabelled"
            if images.write(i, out_dir / name / folder, sample_id) is not None:
                written += 1
                if on_file is not None:
                    on_file()
    return written


EXPORTERS: dict[str, Callable[..., int]] = {"ply": export_ply, "coco": export_coco, "yolo": export_yolo,
                                            "imagefolder": export_imagefolder}
