"""Export a dataset to other tools' formats. PLY for point clouds (binary little-endian,
with normals and colours when present: what MeshLab, CloudCompare, Open3D and trimesh read)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import dataset as ds
from .errors import DatasetError

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


def export_ply(dataset_path: str | Path, out_dir: str | Path, split: str | None = None,
               on_file=None) -> int:
    """Write `<out>/<split>/<label_name>/<id>.ply` for every row; returns the number of files."""
    version_dir = ds.resolve_version_dir(dataset_path)
    manifest = ds.read_manifest(version_dir)
    table = ds.read_table(version_dir, manifest, split)
    if "points" not in table.column_names:
        raise DatasetError(f"{version_dir}: has no 'points' column; --format ply exports point clouds only")
    out_dir = Path(out_dir)
    points, offsets = ds.fixed_list_to_numpy(table.column("points"))
    optional = {}
    for name in ("point_normals", "point_colors"):
        if name in table.column_names and table.column(name).null_count < table.num_rows:
            optional[name] = ds.fixed_list_to_numpy(table.column(name))
    ids = table.column("id").to_pylist()
    splits = table.column("split").to_pylist()
    names = table.column("label_name").to_pylist() if "label_name" in table.column_names else ["all"] * len(ids)
    for i, sample_id in enumerate(ids):
        folder = out_dir / splits[i] / names[i]
        folder.mkdir(parents=True, exist_ok=True)
        cut = slice(offsets[i], offsets[i + 1])
        extra = {}
        for name, (values, offs) in optional.items():
            extra[name] = values[offs[i]: offs[i + 1]] if offs[i + 1] > offs[i] else None
        write_ply(folder / f"{sample_id}.ply", points[cut], extra.get("point_normals"), extra.get("point_colors"))
        if on_file is not None:
            on_file()
    return len(ids)
