"""Mesh folders, shared by the generators that read them (pointcloud, blender).

A mesh folder is `<source>/<class>/<mesh>.<ext>`: each sub-folder is a class. This module finds the
class folders and loads one mesh file with a one-line error naming the file; each generator keeps its
own list of extensions it accepts (the render worker's loaders and trimesh's differ) and its own
policy for a file it cannot use. It lives beside `base.py` so that no generator imports another.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh

from synthloom.errors import GeneratorError

from .base import BuildContext


def mesh_class_folders(ctx: BuildContext, source: str) -> list[Path]:
    """The class sub-folders of a mesh folder (one per class), or a one-line error naming the folder."""
    root = ctx.resolve_path(source)
    if not root.is_dir():
        raise GeneratorError(f"{source}: mesh folder not found")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir())
    if not class_dirs:
        raise GeneratorError(f"{root}: no class sub-folders (expected {root}/<class>/<mesh>.obj)")
    return class_dirs


def read_polygon_off(path: Path) -> trimesh.Trimesh:
    """OFF with polygon faces, fan-triangulated. trimesh 5.2's own OFF reader fails on
    polygons under numpy >= 2.3 (it multiplies string arrays), so we parse those ourselves."""
    tokens = [line.split("#", 1)[0].split() for line in path.read_text().splitlines()]
    tokens = [t for t in tokens if t]
    header = tokens[0]
    if not header[0].endswith("OFF"):
        raise ValueError("missing OFF header")
    counts = header[1:] if len(header) > 1 else tokens.pop(1)
    n_vertices, n_faces = int(counts[0]), int(counts[1])
    body = tokens[1:]
    vertices = np.array([[float(x) for x in row[:3]] for row in body[:n_vertices]])
    triangles = []
    for row in body[n_vertices: n_vertices + n_faces]:
        corners = [int(x) for x in row[1: 1 + int(row[0])]]
        triangles += [[corners[0], corners[k], corners[k + 1]] for k in range(1, len(corners) - 1)]
    if len(vertices) != n_vertices or not triangles:
        raise ValueError("truncated OFF file")
    return trimesh.Trimesh(vertices=vertices, faces=np.array(triangles), process=False)


def load_mesh_file(path: Path) -> trimesh.Trimesh:
    """Load one mesh, or raise GeneratorError naming the file and what is wrong with it."""
    try:
        try:
            mesh = trimesh.load(str(path), force="mesh", process=False)
        except TypeError:
            if path.suffix.lower() != ".off":
                raise
            mesh = read_polygon_off(path)
    except Exception as error:  # trimesh raises many types for bad files
        raise GeneratorError(f"{path}: cannot read mesh ({type(error).__name__}: {error})") from None
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise GeneratorError(f"{path}: mesh has no triangles")
    # Check the vertices as the file holds them: trimesh's processing drops the faces that touch
    # a NaN vertex, which would hide the corruption. Then process as trimesh.load does by default.
    bad = ~np.isfinite(mesh.vertices).all(axis=1)
    if bad.any():
        raise GeneratorError(f"{path}: mesh has non-finite vertex coordinates ({int(bad.sum())} of {len(bad)} vertices)")
    mesh.process()
    if mesh.area <= 0:
        raise GeneratorError(f"{path}: mesh has zero surface area")
    return mesh


__all__ = ["load_mesh_file", "mesh_class_folders", "read_polygon_off"]
