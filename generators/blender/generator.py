"""Generator `blender`: RGB, depth, normals, segmentation, boxes and cameras rendered from 3D scenes.

Scenes are built from a folder of meshes whose sub-folders are the classes (OBJ/PLY/STL/OFF/GLB), on
a ground plane with primitive distractors, and domain-randomised per frame (object pose, scale and
count, material colour/roughness/metalness, sun and point lights, background colour or HDRI, ground
colour, camera on a shell around the objects, focal length), every choice drawn from the sample seed
and stored in the row's `params`.

The rendering runs in the render environment (`.venv-render`, `make render-env`): bpy 4.2 needs
numpy<2 and cannot share synthloom's environment (see `generators/worker.py` for the whole reason).
This module is the main-process side: params, input checks, the request; `workers/render_blender.py`
renders; `WorkerGenerator` validates and hands the rows to the build flow.

Rows: `image` (PNG), `depth` (float32 z-depth along the camera axis, 0 = no surface), `normals`
(float32 world-space unit normals, 0 on the background), `segmentation` (uint16 instance ids: k is
`objects[k-1]`, 0 = background, ground, distractors and objects too hidden to label),
`class_segmentation` (uint16 class index + 1, 0 = none), `objects` (COCO xywh boxes of the visible
pixels, pixel-inclusive so never zero-area, + class), `visible_fraction` (per object, BOP's visib_fract:
visible pixels / pixels of the unoccluded silhouette in the image), `camera_K` (3x3 pixels) and
`camera_to_world` (4x4, OpenCV convention: x right, y down, z forward).
"""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from synthloom.errors import GeneratorError
from synthloom.features import Array, BoundingBoxes, Features, Image, Text, Value
from synthloom.provenance import sha256_file

from ..base import Asset, BuildContext, Prepared, ShardSpec, SkippedInput, input_fingerprint
from synthloom.meshes import load_mesh_file, mesh_class_folders
from ..worker import WorkerError, WorkerGenerator, WorkerParams

MESH_EXTENSIONS = ("obj", "ply", "stl", "off", "glb")
# The render worker's scripts: run by the render interpreter with this folder as their sys.path[0], and
# `worker.WORKERS_DIR` (the generic worker side, synthloom_worker.py) on PYTHONPATH, as for every worker generator.
BLENDER_WORKERS = Path(__file__).resolve().parent / "workers"
HDRI_EXTENSIONS = ("exr", "hdr")
Range = tuple[float, float]
IntRange = tuple[int, int]


# Ranges where zero makes no picture: an object of size 0, a 0 mm lens, a camera at the scene's centre.
POSITIVE_RANGES = ("scale", "focal_mm", "distance_factor")
# Principled BSDF factors, defined on [0, 1].
UNIT_RANGES = ("roughness", "metallic")


class BlenderParams(WorkerParams):
    source: str = Field(description="A folder of meshes whose sub-folder names are the classes.")
    width: int = Field(default=256, ge=16, le=4096)
    height: int = Field(default=256, ge=16, le=4096)
    objects: IntRange = Field(default=(1, 4), description="Objects per frame [min, max].")
    distractors: IntRange = Field(default=(0, 3), description="Primitive distractors per frame [min, max].")
    scale: Range = Field(default=(0.25, 0.6), description="Largest extent of an object, in scene units.")
    rotation: Literal["so3", "z"] = "so3"
    spread: float = Field(default=0.6, gt=0, description="Radius of the disc the objects are placed in.")
    roughness: Range = (0.1, 0.9)
    metallic: Range = (0.0, 0.6)
    sun_strength: Range = (1.0, 5.0)
    lights: IntRange = Field(default=(0, 2), description="Point lights per frame [min, max], besides the sun.")
    light_energy: Range = (50.0, 600.0)
    background_strength: Range = (0.2, 1.2)
    hdri_folder: str | None = Field(default=None, description="Folder of .exr/.hdr environments (e.g. Debian "
                                                              "blender-data's studio lights).")
    hdri_probability: float = Field(default=0.5, ge=0, le=1)
    hdri_strength: Range = Field(default=(0.5, 1.5), description="Strength of an HDRI environment (turned by a "
                                                                "random angle about z).")
    focal_mm: Range = Field(default=(28.0, 60.0), description="Focal length on a 36 mm sensor.")
    elevation_deg: Range = (15.0, 70.0)
    distance_factor: Range = Field(default=(1.0, 1.5), description="Camera distance / distance that fits the scene.")
    roll_deg: float = 10.0
    min_visible_pixels: int = Field(default=30, ge=1)
    max_camera_tries: int = Field(default=8, ge=1)
    decimate_faces: int = Field(default=200_000, ge=100, description="Meshes above this are decimated to it.")
    max_faces: int = Field(default=5_000_000, ge=100, description="Meshes above this are refused.")
    quality: Literal["fast", "blenderproc", "reference"] = Field(
        default="fast", description="fast: few samples + Cycles' OIDN, adaptive sampling, 2 bounces; blenderproc: "
        "BlenderProc 2.8's defaults (noise threshold 0.01, its compositor OIDN, 3 bounces, no glossy bounce); "
        "reference: ground truth for quality checks (no adaptive sampling, no denoiser, Blender's full light paths).")
    samples: int | None = Field(default=None, ge=1, description="Max Cycles samples; default per quality: fast 4 "
                                "(benchmarks/RESULTS.md), blenderproc 1024 (its default), reference 1024.")
    render_seed: int = Field(default=0, ge=0, description="Changes Cycles' sampling seed only: the same scenes "
                             "with another noise pattern (e.g. two renders of a reference, to measure its own noise).")
    noise_threshold: float = Field(default=0.05, gt=0, description="quality fast: adaptive sampling's threshold.")
    denoise: bool = Field(default=True, description="quality fast: Cycles' OIDN denoiser.")
    bounces: int = Field(default=2, ge=0, description="quality fast: max, diffuse and glossy bounces.")
    threads: int = Field(default=0, ge=0, description="Cycles CPU threads (0: all cores).")
    physics: bool = Field(default=False, description="Drop objects and distractors onto the ground with "
                                                     "BlenderProc's rigid-body simulation (stable resting poses).")
    drop_height: Range = Field(default=(0.05, 0.3), description="With physics: height above the resting pose.")
    settle_seconds: Range = Field(default=(4.0, 20.0), description="With physics: simulated seconds [min, max] "
                                                                   "(BlenderProc's minimum); stops when nothing moves.")
    friction: float = Field(default=0.5, ge=0)

    @model_validator(mode="after")
    def _ordered(self):
        for name in ("objects", "distractors", "scale", "roughness", "metallic", "sun_strength", "lights",
                     "light_energy", "background_strength", "hdri_strength", "focal_mm", "elevation_deg",
                     "distance_factor", "drop_height", "settle_seconds"):
            low, high = getattr(self, name)
            if not (math.isfinite(low) and math.isfinite(high)):  # NaN compares false with everything
                raise ValueError(f"{name} must be finite numbers, got [{low}, {high}]")
            if name in POSITIVE_RANGES and not 0 < low <= high:
                raise ValueError(f"{name} must be [low, high] with 0 < low <= high, got [{low}, {high}]")
            if low > high or low < 0:
                raise ValueError(f"{name} must be [low, high] with 0 <= low <= high, got [{low}, {high}]")
            if name in UNIT_RANGES and high > 1:
                raise ValueError(f"{name} must be [low, high] within [0, 1], got [{low}, {high}]")
        if not math.isfinite(self.roll_deg):
            raise ValueError(f"roll_deg must be a finite number, got {self.roll_deg}")
        if self.objects[0] < 1:
            raise ValueError("objects: at least 1 object per frame")
        if self.settle_seconds[0] >= self.settle_seconds[1]:
            raise ValueError("settle_seconds must be [min, max] with min < max")
        if self.decimate_faces > self.max_faces:
            raise ValueError("decimate_faces must not exceed max_faces")
        return self


def face_count(path: Path) -> int | None:
    """Faces a mesh file declares, read from its header without loading it (PLY, binary STL), or None."""
    suffix = path.suffix.lower()
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError:
        return None
    if suffix == ".ply" and head.startswith(b"ply"):
        header = head.split(b"end_header", 1)[0].decode("ascii", "replace")
        for line in header.splitlines():
            parts = line.split()
            if parts[:2] == ["element", "face"] and len(parts) == 3 and parts[2].isdigit():
                return int(parts[2])
    if suffix == ".stl" and len(head) >= 84 and not head.lstrip().lower().startswith(b"solid"):
        (count,) = struct.unpack("<I", head[80:84])
        return count
    return None


class BlenderGenerator(WorkerGenerator):
    name = "blender"
    Params = BlenderParams
    params: BlenderParams
    code_version = "1"
    worker_script = BLENDER_WORKERS / "render_blender.py"
    worker_packages = ("bpy", "blenderproc", "opencv-contrib-python-headless", "trimesh")
    python_env_var = "SYNTHLOOM_RENDER_PYTHON"
    default_venv = ".venv-render"
    install_hint = ("bpy is needed for rendering: create the render environment with `make render-env` "
                    "(python3.11 -m venv .venv-render; .venv-render/bin/pip install -r requirements/render-lock.txt), "
                    "or set generator.params.python / $SYNTHLOOM_RENDER_PYTHON to its interpreter")

    @property
    def resources(self):  # one Cycles render uses a whole GPU
        return {"gpu": 1} if str(self.device).startswith("cuda") else {}

    def features(self) -> Features:
        if self.prepared is None:
            raise GeneratorError("blender: features() needs the class names, known only after prepare()")
        h, w, classes = self.params.height, self.params.width, tuple(self.prepared.classes)
        return Features({
            "image": Image(),
            "depth": Array((h, w), "float32"),
            "normals": Array((h, w, 3), "float32"),
            "segmentation": Array((h, w), "uint16"),
            "class_segmentation": Array((h, w), "uint16"),
            "objects": BoundingBoxes(classes),
            "visible_fraction": Array((None,), "float32"),
            "camera_K": Array((3, 3), "float64"),
            "camera_to_world": Array((4, 4), "float64"),
            "seed": Value("int64"),
            "params": Text(),
        })

    def value_ranges(self):
        return {"depth": (0.0, 1e4), "normals": (-1.0, 1.0), "visible_fraction": (0.0, 1.0),
                "class_segmentation": (0, len(self.prepared.classes))}

    def __init__(self, params):
        super().__init__(params)
        self._faces: dict[str, int] = {}  # mesh path -> face count, filled by the input scan

    def check_row(self, row, where: str) -> None:
        objects = row["objects"]
        if not objects:
            raise WorkerError(f"{where}: a frame with no visible object (the worker must re-sample it)")
        if len(row["visible_fraction"]) != len(objects) or int(row["segmentation"].max()) != len(objects):
            raise WorkerError(f"{where}: {len(objects)} objects, {len(row['visible_fraction'])} visible fractions, "
                              f"instance ids up to {int(row['segmentation'].max())}")

    def bytes_per_sample(self) -> int:
        # PNG ~1.5 B/px, depth 4, normals 12, two uint16 maps 4 (before zstd)
        return int(self.params.width * self.params.height * 21.5) + 2000

    # -- inputs -----------------------------------------------------------------------------------
    def check_inputs(self, ctx: BuildContext) -> None:
        assets, _ = self._scan(ctx)
        if not assets:
            raise GeneratorError(f"{self.params.source}: no usable meshes")
        self._hdris(ctx)
        self.worker_environment()  # bpy missing: one line saying how to install the render environment

    def _hdris(self, ctx: BuildContext) -> list[str]:
        if self.params.hdri_folder is None:
            return []
        folder = ctx.resolve_path(self.params.hdri_folder)
        files = sorted(str(p.resolve()) for p in folder.rglob("*") if p.suffix.lower().lstrip(".") in HDRI_EXTENSIONS) \
            if folder.is_dir() else []
        if not files:
            raise GeneratorError(f"{folder}: hdri_folder has no .exr/.hdr files (`make hdris` copies Blender's CC0 "
                                 "studio-light HDRIs to data/hdris)")
        return files

    def _scan(self, ctx: BuildContext) -> tuple[list[Asset], list[SkippedInput]]:
        class_dirs = mesh_class_folders(ctx.resolve_path(self.params.source), self.params.source)
        assets, skipped = [], []

        def refuse(path: Path, error: GeneratorError) -> None:
            if ctx.on_error != "skip":
                raise error
            skipped.append(SkippedInput(path=str(path), reason=str(error)))

        for class_dir in class_dirs:
            files = sorted(p for p in class_dir.iterdir()
                           if p.is_file() and p.suffix.lower().lstrip(".") in MESH_EXTENSIONS)
            if not files:
                refuse(class_dir, GeneratorError(f"{class_dir}: class folder has no mesh files "
                                                 f"({', '.join('.' + e for e in MESH_EXTENSIONS)})"))
            for path in files:
                try:
                    faces = self._checked_faces(path)
                except GeneratorError as error:
                    refuse(path, error)
                    continue
                assets.append(Asset(path=str(path.resolve()), sha256=sha256_file(path), label=class_dir.name))
                self._faces[assets[-1].path] = faces
        return assets, skipped

    def _checked_faces(self, path: Path) -> int:
        """The mesh's face count, after refusing an unreadable, empty or oversized mesh in one line.
        A size declared in the header is checked before loading: a 10-million-face file is refused in
        milliseconds, not after a minute of parsing."""
        declared = face_count(path)
        limit = self.params.max_faces
        if declared is not None and declared > limit:
            raise GeneratorError(f"{path}: {declared:,} faces, more than max_faces={limit:,}; decimate it first "
                                 f"(e.g. Blender's Decimate modifier) or raise max_faces")
        mesh = load_mesh_file(path)  # unreadable or empty: one line naming the file
        if len(mesh.faces) > limit:
            raise GeneratorError(f"{path}: {len(mesh.faces):,} faces, more than max_faces={limit:,}; decimate it "
                                 "first (e.g. Blender's Decimate modifier) or raise max_faces")
        return int(len(mesh.faces))

    def prepare(self, ctx: BuildContext) -> Prepared:
        assets, skipped = self._scan(ctx)
        if not assets:
            raise GeneratorError(f"{self.params.source}: no usable meshes ({len(skipped)} skipped)")
        worker = self.worker_provenance()
        hdris = [Asset(path=path, sha256=sha256_file(path), role="environment") for path in self._hdris(ctx)]
        self.prepared = Prepared(
            generator=self.name,
            # The worker's package versions are inputs: another bpy may render other pixels.
            input_fingerprint=input_fingerprint(self.name, self.params.model_copy(update={"python": None}),
                                                self.code_version, assets + hdris, worker=worker["packages"]),
            classes=list(dict.fromkeys(a.label for a in assets)),
            assets=assets + hdris,
            skipped=skipped,
            info={"worker": worker, "faces": {a.path: self._faces[a.path] for a in assets},
                  "source": self.params.source},
        )
        return self.prepared

    def worker_request(self, shard: ShardSpec) -> dict:
        faces = self.prepared.info.get("faces", {})
        meshes = [{"path": a.path, "label": a.label, "faces": faces.get(a.path)}
                  for a in self.prepared.assets if a.role == "input"]
        params = {"hdris": [a.path for a in self.prepared.assets if a.role == "environment"]}
        return {"meshes": meshes, "params": {**self.params.model_dump(mode="json"), **params}}
