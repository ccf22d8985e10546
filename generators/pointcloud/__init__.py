"""Generator `pointcloud`: point clouds sampled from meshes (a class-per-folder mesh folder or built-in shapes).

- `generator.py`: `PointCloudGenerator` and its params (the entry point
  `synthloom.generators.pointcloud:PointCloudGenerator`).
- `sampling.py`: `MeshSampler`, the precomputed per-mesh sampler (Poisson-disk, partial scans) on top of the
  core's uniform `synthloom.meshes.MeshSurface`.

Reading mesh folders and files is shared with `blender` and the reference reader in `synthloom.meshes`.
"""

from synthloom.meshes import load_mesh_file, mesh_class_folders
from .generator import PROCEDURAL_SHAPES, PointCloudGenerator, PointCloudParams, mesh_sampler
from .sampling import MeshSampler, TooFewVisible, random_rotation

__all__ = ["MeshSampler", "PROCEDURAL_SHAPES", "PointCloudGenerator", "PointCloudParams", "TooFewVisible",
           "load_mesh_file", "mesh_class_folders", "mesh_sampler", "random_rotation"]
