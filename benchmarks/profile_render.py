"""Where a rendered frame's time goes: the same scenes of generator `blender` rendered under several
Cycles settings, in one render-environment process (`render_variants.py`).

    python benchmarks/profile_render.py [--frames 4] [--size 256] [--threads 2] [--quality fast] VARIANT [VARIANT ...]

Each VARIANT is a JSON object of settings over the --quality's (samples, bounces, denoise,
compositor_denoise, distribution, world_sampling, render_seed (another noise pattern), or any Cycles scene property by name, e.g.
glossy_bounces, use_adaptive_sampling); the first is the reference of the
PSNR column, e.g. '{"samples": 64, "bounces": 3, "distribution": "MULTI_GGX"}' '{"samples": 4}'.
Prints the render call's mean wall and CPU seconds per frame over frames 2.. (CPU counts every thread,
so it holds up better than wall on a shared machine). Heavy with many variants: run it under
`flock /work/wt/heavy.lock` on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_render import MESHES  # noqa: E402

from synthloom.generators.base import BuildContext, ShardSpec  # noqa: E402
from synthloom.generators.blender import BLENDER_WORKERS, BlenderGenerator  # noqa: E402
from synthloom.generators.worker import PROTOCOL, WORKERS_DIR, _worker_env  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quality", default="fast", choices=("fast", "blenderproc", "reference"),
                        help="the worker's settings the variants change")
    parser.add_argument("variants", nargs="+", type=json.loads)
    args = parser.parse_args()
    generator = BlenderGenerator({"source": str(MESHES), "width": args.size, "height": args.size,
                                  "threads": args.threads, "quality": args.quality})
    work = Path(tempfile.mkdtemp(prefix="profile-render-"))
    generator.load(generator.prepare(BuildContext(cache_dir=work)))
    shard = ShardSpec("train", 0, 1, 0, args.frames, 2026)
    request = {"protocol": PROTOCOL, "generator": "blender", "params": generator.params.model_dump(mode="json"),
               "prepared": {"classes": generator.prepared.classes, "info": generator.prepared.info,
                            "assets": [a.model_dump() for a in generator.prepared.assets]},
               "shard": {"split": "train", "index": 0, "num_shards": 1, "start": 0, "size": args.frames,
                         "root_seed": 2026},
               "seeds": [shard.sample_seed(offset) for offset in range(args.frames)], "out_dir": str(work),
               "features": generator.features().to_json(), "device": "cpu", **generator.worker_request(shard)}
    (work / "request.json").write_text(json.dumps(request))
    (work / "variants.json").write_text(json.dumps(args.variants))
    print(f"{args.frames} frames (CGAL meshes, same scenes for every variant), {args.size} px, {args.threads} threads")
    done = subprocess.run([str(generator.interpreter()), str(Path(__file__).parent / "render_variants.py"),
                           str(work / "request.json"), str(work / "variants.json")],
                          env=_worker_env({"PYTHONPATH": f"{BLENDER_WORKERS}{os.pathsep}{WORKERS_DIR}"}),
                          capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if " PSNR vs first " in line]
    print("\n".join(lines) if lines else done.stdout[-2000:] + done.stderr[-2000:])


if __name__ == "__main__":
    main()
