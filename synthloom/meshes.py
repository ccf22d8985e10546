"""Meshes, read by whatever needs them: the generators (pointcloud, blender) and the point-cloud reference reader.

A mesh folder is `<source>/<class>/<mesh>.<ext>`: each sub-folder is a class. This module finds the
class folders, loads one mesh file with a one-line error naming the file, and samples a mesh's surface
uniformly (`MeshSurface`). Each generator keeps its own list of extensions it accepts (the render
worker's loaders and trimesh's differ) and its own policy for a file it cannot use. It is in the core
so that no generator imports another and the evaluators read reference meshes without a generator.

We write our own uniform sampler instead of calling `trimesh.sample.sample_surface` per cloud because
a dataset draws many clouds from the same mesh: `MeshSurface` precomputes the per-face origins, edges,
normals and the area CDF once, so each cloud costs O(points) instead of O(faces + points).
`benchmarks/bench_sampling.py` measures the difference against trimesh on the same meshes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh

from .errors import GeneratorError
from .made_by import not_found

# What trimesh reads here (the render worker's Blender loaders take another list).
TRIMESH_EXTENSIONS = ("obj", "ply", "stl", "off", "glb", "gltf")


def mesh_class_folders(root: Path, source: str) -> list[Path]:
    """The class sub-folders of the mesh folder `root` (one per class), or a one-line error naming
    `source`, the folder as the user wrote it."""
    if not root.is_dir():
        raise GeneratorError(f"{source}: mesh folder {not_found(source)}")
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


class MeshSurface:
    """Precomputed per-face data of one mesh, for drawing many uniform point clouds from it."""

    def __init__(self, mesh: trimesh.Trimesh):
        vertices = np.asarray(mesh.vertices, dtype=np.float64)
        faces = np.asarray(mesh.faces, dtype=np.int64)
        corners = vertices[faces]  # (F, 3, 3)
        self.origins = corners[:, 0]
        self.edge1 = corners[:, 1] - corners[:, 0]
        self.edge2 = corners[:, 2] - corners[:, 0]
        cross = np.cross(self.edge1, self.edge2)
        double_area = np.linalg.norm(cross, axis=1)
        self.area = float(double_area.sum() / 2.0)
        self.cdf = np.cumsum(double_area)
        with np.errstate(invalid="ignore", divide="ignore"):
            self.face_normals = np.where(double_area[:, None] > 0, cross / double_area[:, None], 0.0)
        self.corner_colors = _corner_colors(mesh, faces)
        # Bounding sphere used to normalise every cloud of this mesh the same way.
        lo, hi = vertices.min(axis=0), vertices.max(axis=0)
        self.center = (lo + hi) / 2.0
        self.radius = float(np.linalg.norm(vertices - self.center, axis=1).max()) or 1.0

    @property
    def has_colors(self) -> bool:
        return self.corner_colors is not None

    def sample_uniform(self, count: int, rng: np.random.Generator):
        """Area-weighted uniform samples: (points, normals, colors or None)."""
        face, u, v = self.draw_uniform(count, rng)
        return self.at(face, u, v)

    def draw_uniform(self, count: int, rng: np.random.Generator):
        """Where `count` area-weighted uniform samples lie: (face index, u, v), the point being
        origin + u * edge1 + v * edge2 of that face. Zero-area faces are never drawn."""
        picks = rng.random(count) * self.cdf[-1]
        face = np.minimum(np.searchsorted(self.cdf, picks, side="right"), len(self.cdf) - 1)
        u, v = rng.random((2, count))
        outside = u + v > 1.0  # fold the unit square onto the triangle
        u[outside], v[outside] = 1.0 - u[outside], 1.0 - v[outside]
        return face, u, v

    def at(self, face: np.ndarray, u: np.ndarray, v: np.ndarray):
        """(points, normals, colors or None) at barycentric (u, v) of each `face`."""
        points = self.origins[face] + u[:, None] * self.edge1[face] + v[:, None] * self.edge2[face]
        normals = self.face_normals[face]
        colors = None
        if self.corner_colors is not None:
            c = self.corner_colors[face]  # (n, 3, 3) per-corner RGB
            w = np.stack([1.0 - u - v, u, v], axis=1)[:, :, None]
            colors = np.clip(np.rint((c * w).sum(axis=1)), 0, 255).astype(np.uint8)
        return points, normals, colors

    def barycentric(self, face: np.ndarray, points: np.ndarray):
        """(u, v) of `points` lying on (positive-area) `face`s: the inverse of `at`."""
        e1, e2, rel = self.edge1[face], self.edge2[face], points - self.origins[face]
        d11, d12, d22 = (e1 * e1).sum(1), (e1 * e2).sum(1), (e2 * e2).sum(1)
        r1, r2 = (rel * e1).sum(1), (rel * e2).sum(1)
        det = d11 * d22 - d12 * d12
        u, v = (d22 * r1 - d12 * r2) / det, (d11 * r2 - d12 * r1) / det
        return np.clip(u, 0.0, 1.0), np.clip(v, 0.0, 1.0)


def _corner_colors(mesh: trimesh.Trimesh, faces: np.ndarray) -> np.ndarray | None:
    """Per-corner RGB (F, 3, 3) float where the mesh carries colours, else None."""
    visual = mesh.visual
    kind = getattr(visual, "kind", None)
    if kind == "vertex":
        rgb = np.asarray(visual.vertex_colors)[:, :3].astype(np.float64)
        return rgb[faces]
    if kind == "face":
        rgb = np.asarray(visual.face_colors)[:, :3].astype(np.float64)
        return np.repeat(rgb[:, None, :], 3, axis=1)
    return None
