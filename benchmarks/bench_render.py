"""Rendering speed and memory of generator `blender`, against BlenderProc's own defaults in the same run.

The speed part's baseline, BlenderProc at its default 1024 samples, is no user's setting for training
data: the comparison at equal quality (both sides at several sample counts, scored against a
high-sample reference) is `bench_render_psnr.py`. This part stays for the per-phase times.

1. Speed: the same scenes (same sample seeds, hence the same objects, materials, lights and cameras;
   CGAL meshes of `make meshes`), WIDTH x WIDTH px with every pass (RGB, depth, normals, instance
   segmentation), rendered by our `quality: fast` settings (few samples + adaptive sampling + OIDN
   denoising, short light paths, persistent data) and by BlenderProc 2.8's defaults (`quality:
   blenderproc`: 1024 samples, noise threshold 0.01, OIDN, 3 bounces). Seconds per frame are measured
   inside the worker, per frame (scene building, render, pass loading, labelling, writing arrays); the
   worker's start-up (importing bpy, BlenderProc init) is printed apart, with the whole shard's wall
   time. Prints the ratio baseline / ours (> 1: ours is faster) and the PSNR of our frames against the
   baseline's (the same scenes at BlenderProc's quality).
2. Memory: one worker renders --rss-frames frames; prints its resident memory along the way and the
   slope (MB per 100 frames) fitted after the first 10 frames. One worker process per shard is what
   keeps a build flat whatever the slope: every shard starts from a fresh process.

    python benchmarks/bench_render.py [--frames 8] [--baseline-frames 3] [--size 256] [--threads 2] [--samples 4,8,16]
                                      [--rss-frames 200] [--rss-size 128]

Needs the render environment (`make render-env`). Heavy: run it under `flock /work/wt/heavy.lock` on
a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import environment  # noqa: E402

from synthloom.generators.base import BuildContext, ShardSpec  # noqa: E402
from synthloom.generators.blender import BlenderGenerator  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
MESHES = REPO / "data" / "cgal-meshes"


def render(params: dict, frames: int, seed: int = 2026, stats: bool = True) -> tuple[list[dict], list[dict], float]:
    """(rows, per-frame stats from the worker, shard wall seconds) of one shard in one worker."""
    generator = BlenderGenerator({"source": str(MESHES), **params})
    work = Path(tempfile.mkdtemp(prefix="bench-render-"))
    generator.load(generator.prepare(BuildContext(cache_dir=work)))
    stats_file = work / "stats.jsonl"
    if stats:
        os.environ["SYNTHLOOM_RENDER_STATS"] = str(stats_file)
    try:
        started = time.perf_counter()
        rows = list(generator.generate(ShardSpec("train", 0, 1, 0, frames, seed)))
        wall = time.perf_counter() - started
    finally:
        os.environ.pop("SYNTHLOOM_RENDER_STATS", None)
    return rows, [json.loads(line) for line in stats_file.read_text().splitlines()] if stats else [], wall


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def per_frame(stats: list[dict]) -> tuple[float, float, float]:
    """(startup s, first frame s, mean s of the later frames: meshes are loaded on first use)."""
    ready = next(s["seconds"] for s in stats if s["event"] == "ready")
    frames = [s["seconds"] for s in stats if s["event"] == "frame"]
    return ready, frames[0], float(np.mean(frames[1:])) if len(frames) > 1 else frames[0]


def phases(stats: list[dict]) -> str:
    """Mean seconds per phase over the frames after the first: scene (objects, lights, physics),
    render (Cycles + BlenderProc loading the passes), write (the row's .npy files); the rest of a
    frame is camera sampling and labelling."""
    frames = [s for s in stats if s["event"] == "frame"][1:] or [s for s in stats if s["event"] == "frame"]
    keys = frames[0].get("phases", {}).keys()
    return ", ".join(f"{key} {np.mean([f['phases'][key] for f in frames]):.3f}" for key in keys)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--baseline-frames", type=int, default=3)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--samples", type=lambda text: text.split(","), default=["16"],
                        help="comma-separated sample counts of our side, each optionally :bounces, e.g. 2,4,4:3")
    parser.add_argument("--rss-frames", type=int, default=200)
    parser.add_argument("--rss-size", type=int, default=128)
    parser.add_argument("--workers-frames", type=int, default=6, help="frames per shard in the workers test")
    parser.add_argument("--physics-frames", type=int, default=6)
    parser.add_argument("--only", default=None,
                        help="one part; or a comma-separated list, e.g. physics,rss")
    args = parser.parse_args()
    parts = set(args.only.split(",")) if args.only else {"speed", "rss", "workers", "physics"}
    common = {"width": args.size, "height": args.size, "threads": args.threads}
    print(environment())
    generator = BlenderGenerator({"source": str(MESHES)})
    print("render environment:", json.dumps(generator.worker_environment()["packages"]))

    if "speed" in parts:
        print(f"\n{args.size}x{args.size} px, all passes, Cycles CPU, {args.threads} threads, CGAL meshes")
        base, base_stats, base_wall = render({**common, "quality": "blenderproc"}, args.baseline_frames)
        base_times = [s["seconds"] for s in base_stats if s["event"] == "frame"]
        base_cpu = [s["cpu_seconds"] for s in base_stats if s["event"] == "frame"]
        print(f"BlenderProc defaults: {np.mean(base_times):.2f} s/frame ({', '.join(f'{t:.2f}' for t in base_times)}), "
              f"{np.mean(base_cpu):.2f} CPU s/frame, worker start-up {per_frame(base_stats)[0]:.2f} s")
        for spec in args.samples:
            samples, _, bounces = spec.partition(":")
            samples = int(samples)
            extra = {"bounces": int(bounces)} if bounces else {}
            ours, our_stats, our_wall = render({**common, "quality": "fast", "samples": samples, **extra}, args.frames)
            startup, first, later = per_frame(our_stats)
            times = [s["seconds"] for s in our_stats if s["event"] == "frame"]
            cpu = [s["cpu_seconds"] for s in our_stats if s["event"] == "frame"]
            # The ratio compares the same frames (same scenes) on both sides, mesh loading included on both.
            same_frames = min(args.frames, args.baseline_frames)
            ratio = sum(base_times[:same_frames]) / sum(times[:same_frames])
            scores = [psnr(a["image"], b["image"]) for a, b in zip(ours, base)]
            same = all(json.loads(a["params"]) == json.loads(b["params"]) for a, b in zip(ours, base))
            masks = sum(np.array_equal(a["segmentation"], b["segmentation"]) for a, b in zip(ours, base))
            print(f"ours fast, {samples:3d} samples{f', {bounces} bounces' if bounces else ''}: {np.mean(times):.2f} s/frame over {len(times)} frames "
                  f"(first {first:.2f}, later {later:.2f}), {np.mean(cpu):.2f} CPU s/frame, start-up {startup:.2f} s, "
                  f"shard {our_wall:.1f} s | same {same_frames} frames: ratio BlenderProc/ours {ratio:.1f}, "
                  f"PSNR vs BlenderProc {np.mean(scores):.1f} dB ({', '.join(f'{v:.1f}' for v in scores)}), "
                  f"same scenes {same}, identical instance masks {masks}/{len(scores)}")
            print(f"    seconds per frame by phase (frames 2..): {phases(our_stats)}")

    if "physics" in parts:
        # The cost of settling: the same seeds with physics off and on (physics draws drop heights, so
        # the scenes differ after the objects' placement; both sides render the same number of frames).
        print(f"\nphysics settling: {args.physics_frames} frames at {args.size} px, quality fast")
        for physics in (False, True):
            _, stats, wall = render({**common, "quality": "fast", "physics": physics}, args.physics_frames, seed=31)
            frames = [s for s in stats if s["event"] == "frame"]
            print(f"physics {str(physics):5s}: {np.mean([f['seconds'] for f in frames]):.2f} s/frame, "
                  f"{np.mean([f['cpu_seconds'] for f in frames]):.2f} CPU s/frame; by phase (frames 2..): "
                  f"{phases(stats)}")

    if "workers" in parts:
        # Throughput with shard workers: one worker with all threads vs one worker per core, same frames.
        from concurrent.futures import ThreadPoolExecutor

        n = args.workers_frames
        print(f"\nshard workers: {2 * n} frames at {args.size} px, quality fast")
        started = time.perf_counter()
        render({**common, "quality": "fast"}, 2 * n, seed=99, stats=False)
        one = time.perf_counter() - started
        with ThreadPoolExecutor(2) as pool:  # each call runs its own worker process
            started = time.perf_counter()
            list(pool.map(lambda seed: render({**common, "threads": 1, "quality": "fast"}, n, seed=seed,
                                                  stats=False), (99, 100)))
            two = time.perf_counter() - started
        print(f"1 worker x {args.threads} threads: {2 * n / one:.2f} frames/s; 2 workers x 1 thread: "
              f"{2 * n / two:.2f} frames/s (ratio {one / two:.2f})")

    if "rss" in parts:
        print(f"\nmemory: one worker, {args.rss_frames} frames at {args.rss_size} px, quality fast")
        _, stats, wall = render({"width": args.rss_size, "height": args.rss_size, "threads": args.threads,
                                 "quality": "fast"}, args.rss_frames, seed=7)
        frames = [s for s in stats if s["event"] == "frame"]
        ready = next(s for s in stats if s["event"] == "ready")
        marks = sorted({0, 9, len(frames) // 4, len(frames) // 2, 3 * len(frames) // 4, len(frames) - 1})
        print(f"after start-up: {ready['rss'] / 2**20:.0f} MB; " + ", ".join(
            f"frame {m + 1}: {frames[m]['rss'] / 2**20:.0f} MB" for m in marks))
        later = frames[10:]
        if len(later) > 2:
            slope = np.polyfit([s["frame"] for s in later], [s["rss"] / 2**20 for s in later], 1)[0] * 100
            print(f"slope after frame 10: {slope:+.1f} MB per 100 frames; {len(frames)} frames in {wall:.0f} s")


if __name__ == "__main__":
    main()
