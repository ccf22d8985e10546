"""Generator `blender`: RGB, depth, normals, segmentation, boxes and cameras rendered by BlenderProc.

- `generator.py`: `BlenderGenerator` and its params, the main-process side (the entry point
  `synthloom.generators.blender:BlenderGenerator`).
- `workers/`: the scripts the render environment's interpreter runs (`render_blender.py`, with
  `bproc_inprocess.py` beside it); they import only the stdlib, numpy, the render packages and the
  generic worker-side helper `synthloom_worker` (in `generators/workers/`, on the worker's
  PYTHONPATH), never synthloom.
"""

from .generator import BLENDER_WORKERS, BlenderGenerator, BlenderParams, face_count

__all__ = ["BLENDER_WORKERS", "BlenderGenerator", "BlenderParams", "face_count"]
