"""Point clouds sampled from meshes: one row per cloud, labelled by the mesh's class.

Inputs are either a folder whose sub-folders are classes (OBJ/PLY/STL/OFF/GLB,
read by trimesh) or built-in procedural shapes (`source: procedural`).
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Literal

import numpy as np
import trimesh
from pydantic import Field, field_validator

from synthloom.errors import GeneratorError
from synthloom.features import ClassLabel, Features, Points, Value
from synthloom.provenance import sha256_file

from ..base import Asset, BuildContext, Generator, GeneratorParams, Prepared, ShardSpec, SkippedInput, input_fingerprint
from synthloom.meshes import TRIMESH_EXTENSIONS, load_mesh_file, mesh_class_folders
from .sampling import MeshSampler, TooFewVisible, random_rotation

MESH_EXTENSIONS = TRIMESH_EXTENSIONS


def _procedural_mesh(shape: str) -> trimesh.Trimesh:
    makers = {
        "box": lambda: trimesh.creation.box(extents=(1.0, 0.6, 0.4)),
        "sphere": lambda: trimesh.creation.icosphere(subdivisions=3, radius=0.5),
        "cylinder": lambda: trimesh.creation.cylinder(radius=0.3, height=1.0, sections=48),
        "cone": lambda: trimesh.creation.cone(radius=0.4, height=1.0, sections=48),
        "capsule": lambda: trimesh.creation.capsule(height=0.8, radius=0.25, count=(24, 24)),
        "torus": lambda: trimesh.creation.torus(major_radius=0.45, minor_radius=0.15),
    }
    return makers[shape]()


PROCEDURAL_SHAPES = ("box", "sphere", "cylinder", "cone", "capsule", "torus")


class PointCloudParams(GeneratorParams):
    source: str = Field(
        default="procedural",
        description="'procedural' or a folder of meshes whose sub-folder names are the classes.",
    )
    shapes: list[str] = Field(default=list(PROCEDURAL_SHAPES), description="Classes for source=procedural.")
    num_points: int = Field(default=1024, gt=0, le=1_000_000)
    sampler: Literal["uniform", "poisson"] = "uniform"
    normals: bool = True
    colors: bool = Field(default=True, description="Keep per-point colours where the mesh has them.")
    normalize: bool = Field(default=True, description="Centre each mesh and scale it into the unit sphere.")
    rotation: Literal["none", "z", "so3"] = "none"
    scale: tuple[float, float] = Field(default=(1.0, 1.0), description="Per-axis random scale range (anisotropic).")
    jitter: float = Field(default=0.0, ge=0.0, description="Std of Gaussian noise added to each point.")
    jitter_clip: float = Field(default=0.05, gt=0.0)
    partial_scan: bool = Field(default=False, description="Keep only points visible from a random camera.")

    @field_validator("shapes")
    @classmethod
    def _known_shapes(cls, value: list[str]) -> list[str]:
        unknown = [s for s in value if s not in PROCEDURAL_SHAPES]
        if unknown:
            raise ValueError(f"unknown shape(s) {unknown}; choose from {list(PROCEDURAL_SHAPES)}")
        if not value:
            raise ValueError("needs at least one shape")
        return value

    @field_validator("scale")
    @classmethod
    def _ordered_scale(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1]:
            raise ValueError("must be [low, high] with 0 < low <= high")
        return value


@lru_cache(maxsize=64)
def mesh_sampler(path: str, sha256: str) -> MeshSampler:
    """Cached per process; keyed by content hash so an edited file is reloaded."""
    if path.startswith("procedural:"):
        return MeshSampler(_procedural_mesh(path.split(":", 1)[1]))
    mesh = load_mesh_file(Path(path))
    return MeshSampler(mesh)


def _mesh_sha256(mesh: trimesh.Trimesh) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(mesh.vertices, dtype=np.float64).tobytes())
    digest.update(np.ascontiguousarray(mesh.faces, dtype=np.int64).tobytes())
    return digest.hexdigest()


class PointCloudGenerator(Generator):
    name = "pointcloud"
    Params = PointCloudParams
    code_version = "3"  # 2: Poisson-disk = maximal disk set thinned by elimination; 3: then relaxed on the surface
    params: PointCloudParams

    def features(self) -> Features:
        if self.prepared is None:
            raise GeneratorError("pointcloud: features() needs the class names, known only after prepare()")
        size = self.params.num_points
        return Features({
            "label": ClassLabel(names=self.prepared.classes),
            "label_name": Value("string"),
            "points": Points(3, "float32", size=size),
            "point_normals": Points(3, "float32", size=size),
            "point_colors": Points(3, "uint8", size=size),
            "source": Value("string"),
            "source_sha256": Value("string"),
            "seed": Value("int64"),
            "params": Value("string"),
        })

    # -- prepare ---------------------------------------------------------------------------
    def bytes_per_sample(self) -> int:
        # points + normals (float32 x3) + colours (uint8 x3), plus ~200 bytes of ids and params
        return self.params.num_points * (12 + 12 + 3) + 200

    def check_inputs(self, ctx: BuildContext) -> None:
        if self.params.source != "procedural":
            assets, _ = self._scan_folder(ctx)
            if not assets:
                raise GeneratorError(f"{self.params.source}: no usable meshes")

    def prepare(self, ctx: BuildContext) -> Prepared:
        if self.params.source == "procedural":
            assets = [Asset(path=f"procedural:{shape}", sha256=_mesh_sha256(_procedural_mesh(shape)), label=shape)
                      for shape in self.params.shapes]
            skipped: list[SkippedInput] = []
        else:
            assets, skipped = self._scan_folder(ctx)
        if not assets:
            raise GeneratorError(f"{self.params.source}: no usable meshes ({len(skipped)} skipped)")
        self.prepared = Prepared(
            generator=self.name,
            input_fingerprint=input_fingerprint(self.name, self.params, self.code_version, assets),
            classes=list(dict.fromkeys(a.label for a in assets)),  # first-seen order
            assets=assets,
            skipped=skipped,
            info={"source": self.params.source},
        )
        return self.prepared

    def _scan_folder(self, ctx: BuildContext) -> tuple[list[Asset], list[SkippedInput]]:
        class_dirs = mesh_class_folders(ctx.resolve_path(self.params.source), self.params.source)
        assets, skipped = [], []
        for class_dir in class_dirs:
            files = sorted(
                p for p in class_dir.iterdir() if p.is_file() and p.suffix.lower().lstrip(".") in MESH_EXTENSIONS
            )
            if not files:  # a class with no meshes would vanish from `classes` without a word
                error = GeneratorError(f"{class_dir}: class folder has no mesh files "
                                       f"({', '.join('.' + e for e in MESH_EXTENSIONS)})")
                if ctx.on_error != "skip":
                    raise error
                skipped.append(SkippedInput(path=str(class_dir), reason=str(error)))
            for path in files:
                try:
                    load_mesh_file(path)
                except GeneratorError as error:
                    if ctx.on_error == "skip":
                        skipped.append(SkippedInput(path=str(path), reason=str(error)))
                        continue
                    raise
                assets.append(Asset(path=str(path.resolve()), sha256=sha256_file(path), label=class_dir.name))
        return assets, skipped

    # -- generate --------------------------------------------------------------------------
    def generate(self, shard: ShardSpec) -> Iterable[dict[str, Any]]:
        if self.prepared is None:
            raise GeneratorError("pointcloud: generate() called before load()")
        classes = self.prepared.classes
        by_class = self.prepared.assets_by_label()
        for offset in range(shard.size):
            label = (shard.start + offset) % len(classes)  # balanced classes, deterministic
            seed = shard.sample_seed(offset)
            yield self.sample_one(by_class[classes[label]], label, classes[label], seed)

    def sample_one(self, candidates: list[Asset], label: int, label_name: str, seed: int) -> dict[str, Any]:
        p = self.params
        rng = np.random.default_rng(seed)
        asset = candidates[int(rng.integers(len(candidates)))]
        sampler = mesh_sampler(asset.path, asset.sha256)
        extra: dict[str, Any] = {}
        if p.partial_scan:
            try:
                points, normals, colors, extra = sampler.sample_partial_scan(
                    p.num_points, rng, poisson=p.sampler == "poisson")
            except TooFewVisible as error:
                raise GeneratorError(f"{asset.path}: partial scan: {error}; lower num_points") from None
            extra["partial_scan"] = True
        elif p.sampler == "poisson":
            points, normals, colors = sampler.sample_poisson(p.num_points, rng)
        else:
            points, normals, colors = sampler.sample_uniform(p.num_points, rng)
        if p.normalize:
            points = (points - sampler.center) / sampler.radius
        rotation = random_rotation(rng, p.rotation)
        scale = rng.uniform(p.scale[0], p.scale[1], size=3) if p.scale != (1.0, 1.0) else np.ones(3)
        points = (points * scale) @ rotation.T
        # Normals transform by the inverse-transpose of the linear map R @ diag(scale).
        normals = (normals / scale) @ rotation.T
        normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
        if p.jitter > 0:
            points = points + np.clip(rng.normal(0.0, p.jitter, points.shape), -p.jitter_clip, p.jitter_clip)
        sample_params = {
            "sampler": p.sampler,
            "num_points": p.num_points,
            "rotation": [[round(float(x), 6) for x in row] for row in rotation],
            "scale": [round(float(x), 6) for x in scale],
            "jitter": p.jitter,
            "normalize": p.normalize,
            **extra,
        }
        return {
            "label": label,
            "label_name": label_name,
            "points": points.astype(np.float32),
            "point_normals": normals.astype(np.float32) if p.normals else None,
            "point_colors": colors if (p.colors and colors is not None) else None,
            "source": asset.path,
            "source_sha256": asset.sha256,
            "seed": seed,
            "params": json.dumps(sample_params, sort_keys=True),
        }
