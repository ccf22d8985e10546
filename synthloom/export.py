"""Export a dataset to other tools' formats. PLY for point clouds (binary little-endian,
with normals and colours when present: what MeshLab, CloudCompare, Open3D and trimesh read)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import dataset as ds
from .errors import DatasetError
from .features import ClassLabel, Features, Points, feature_of

FORMATS = ("ply",)


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
