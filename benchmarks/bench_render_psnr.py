"""Rendering speed at equal quality: generator `blender` (`quality: fast`) against plain BlenderProc,
both scored against one high-sample reference render of the same frames.

Every setting renders the same scenes (same sample seeds: same meshes, poses, materials, lights,
cameras; CGAL meshes of `make meshes`) at SIZE x SIZE px with every pass (RGB, depth, world normals,
instance segmentation), one worker process (one shard) per setting, Cycles on the CPU:
- reference: `quality: reference` at --reference-samples (default 1024) samples per pixel (two
  renders of half as many with independent noise, averaged: their difference measures the
  reference's own noise), no adaptive sampling, no denoiser, Blender's default light paths (12 bounces, 4 diffuse, 4 glossy, caustics),
  multiscatter GGX: the converged picture of the scene, biased towards neither side's shortcuts;
- BlenderProc: `quality: blenderproc` (BlenderProc 2.8's defaults: noise threshold 0.01, its
  compositor OIDN denoiser, 3 bounces with no glossy bounce) at each of --baseline-samples;
- ours: `quality: fast` (adaptive sampling at 0.05, Cycles' integrated OIDN, 2 bounces,
  single-scatter GGX) at each of --samples.

Seconds per frame are measured inside the worker, per frame (scene building, render, pass loading,
labelling, writing arrays); the worker's start-up is printed apart. PSNR and SSIM (torchmetrics, 8-bit
RGB, data range 255) of each frame against the reference frame. Then, for each PSNR level both sides
reach, the seconds per frame each side needs (interpolated between its settings, linear in log time)
and the ratio BlenderProc / ours (> 1: ours is faster at that quality).

    python benchmarks/bench_render_psnr.py [--frames 12] [--size 256] [--threads 2]
        [--reference-samples 1024] [--baseline-samples 8,16,32,64] [--samples 2,4,8,16]

Needs the render environment (`make render-env`). Heavy (the reference dominates: ~1 min per frame
at 1024 samples on 2 cores): run it under `flock /tmp/synthloom-heavy.lock` on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

sys.path.insert(0, str(Path(__file__).parent))
from _common import environment  # noqa: E402
from bench_render import MESHES, render  # noqa: E402

from synthloom.generators.blender import BlenderGenerator  # noqa: E402


def counts(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated sample counts >= 1, got {text!r}")
    return values


def scores(image: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(PSNR dB, SSIM) of one 8-bit RGB frame against the reference frame."""
    a = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].double()
    b = torch.from_numpy(np.ascontiguousarray(reference)).permute(2, 0, 1)[None].double()
    return (float(peak_signal_noise_ratio(a, b, data_range=255.0)),
            float(structural_similarity_index_measure(a, b, data_range=255.0)))


def measure(label: str, params: dict, frames: int, seed: int, reference: list[dict] | None) -> dict:
    """Render one setting in one worker; its per-frame seconds and, given the reference rows, scores."""
    rows, stats, wall = render(params, frames, seed=seed)
    times = [s["seconds"] for s in stats if s["event"] == "frame"]
    cpu = [s["cpu_seconds"] for s in stats if s["event"] == "frame"]
    startup = next(s["seconds"] for s in stats if s["event"] == "ready")
    result = {"label": label, "rows": rows, "times": times, "cpu": cpu, "startup": startup, "wall": wall}
    line = (f"{label:22s} s/frame median {np.median(times):6.2f} (range {min(times):.2f}-{max(times):.2f}), "
            f"CPU s/frame median {np.median(cpu):6.2f}, start-up {startup:.2f} s, shard {wall:.0f} s")
    if reference is not None:
        if any(json.loads(a["params"]) != json.loads(b["params"]) for a, b in zip(rows, reference)):
            raise SystemExit(f"{label}: not the reference's scenes (params differ); the comparison is void")
        pairs = [scores(a["image"], b["image"]) for a, b in zip(rows, reference)]
        result["psnr"] = [p for p, _ in pairs]
        result["ssim"] = [s for _, s in pairs]
        masks = sum(np.array_equal(a["segmentation"], b["segmentation"]) for a, b in zip(rows, reference))
        line += (f" | PSNR mean {np.mean(result['psnr']):5.2f} dB (min {min(result['psnr']):.2f}), "
                 f"SSIM mean {np.mean(result['ssim']):.4f}, identical instance masks {masks}/{len(rows)}")
    print(line, flush=True)
    print("    s/frame: " + " ".join(f"{t:.2f}" for t in times), flush=True)
    if reference is not None:
        print("    PSNR:    " + " ".join(f"{p:.1f}" for p in result["psnr"]), flush=True)
    return result


def seconds_at(curve: list[tuple[float, float]], level: float) -> tuple[float | None, bool]:
    """(seconds per frame a side needs to reach `level` dB, exact): its settings as (seconds, PSNR);
    the cheapest setting reaching the level, interpolated linearly in log seconds from the best cheaper
    one. Not exact when even the cheapest setting exceeds the level: its seconds are then an upper
    bound (fewer samples were not measured). (None, False): no setting reaches the level."""
    previous = None
    for seconds, psnr in sorted(curve):
        if psnr >= level:
            if previous is None:
                return seconds, psnr == level
            t = (level - previous[1]) / (psnr - previous[1])
            return math.exp(math.log(previous[0]) + t * (math.log(seconds) - math.log(previous[0]))), True
        if previous is None or psnr > previous[1]:
            previous = (seconds, psnr)
    return None, False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=2026, help="root seed of the shard (the scenes)")
    parser.add_argument("--reference-samples", type=int, default=1024)
    parser.add_argument("--baseline-samples", type=counts, default=[8, 16, 32, 64],
                        help="BlenderProc's max samples, comma-separated")
    parser.add_argument("--samples", type=counts, default=[2, 4, 8, 16], help="ours (quality fast), comma-separated")
    parser.add_argument("--save", type=Path, default=None,
                        help="an .npz file for every setting's images and per-frame seconds (to re-score without rendering)")
    args = parser.parse_args()
    if args.frames < 1 or args.size < 16:
        raise SystemExit(f"--frames must be >= 1 and --size >= 16, got {args.frames} and {args.size}")
    common = {"width": args.size, "height": args.size, "threads": args.threads}
    print(environment())
    print("render environment:", json.dumps(BlenderGenerator({"source": str(MESHES)}).worker_environment()["packages"]))
    print(f"{args.frames} frames (seed {args.seed}), {args.size}x{args.size} px, all passes, Cycles CPU, "
          f"{args.threads} threads, CGAL meshes", flush=True)
    started = time.perf_counter()
    # The reference: two renders of half the samples each with independent noise (render_seed 1 and 2;
    # the compared settings use 0), averaged. Their difference measures the reference's own noise:
    # MSE(a, b) = 2 var(half), so the average's noise is MSE(a, b) / 4, i.e. its PSNR against the
    # converged picture is PSNR(a, b) + 6.0 dB; it caps every score below (8-bit rounding aside).
    half = max(args.reference_samples // 2, 1)
    halves = [measure(f"reference {half} spp #{k}", {**common, "quality": "reference", "samples": half,
                                                      "render_seed": k}, args.frames, args.seed, None)
              for k in (1, 2)]
    if any(a["params"] != b["params"] for a, b in zip(halves[0]["rows"], halves[1]["rows"])):
        raise SystemExit("the two reference renders differ in their scenes; the comparison is void")
    reference = [{**a, "image": (a["image"].astype(np.float64) + b["image"].astype(np.float64)) / 2}
                 for a, b in zip(halves[0]["rows"], halves[1]["rows"])]
    floor = [scores(a["image"], b["image"])[0] + 10 * math.log10(4)
             for a, b in zip(halves[0]["rows"], halves[1]["rows"])]
    print(f"reference = mean of the two ({2 * half} spp): its own noise, PSNR vs converged mean {np.mean(floor):.1f} dB "
          f"(per frame: {' '.join(f'{v:.1f}' for v in floor)})", flush=True)
    sides = {"BlenderProc": [], "ours": []}
    for samples in args.baseline_samples:
        sides["BlenderProc"].append(measure(f"BlenderProc {samples:4d} spp", {**common, "quality": "blenderproc",
                                                                             "samples": samples},
                                            args.frames, args.seed, reference))
    for samples in args.samples:
        sides["ours"].append(measure(f"ours fast {samples:4d} spp", {**common, "quality": "fast", "samples": samples},
                                     args.frames, args.seed, reference))

    # Equal quality: median seconds per frame (wall, and CPU over all threads) against mean PSNR.
    for clock in ("times", "cpu"):
        curves = {side: [(float(np.median(r[clock])), float(np.mean(r["psnr"]))) for r in results]
                  for side, results in sides.items()}
        low = math.floor(min(p for curve in curves.values() for _, p in curve))
        high = math.ceil(max(p for curve in curves.values() for _, p in curve))
        name = "s/frame (wall, median)" if clock == "times" else "CPU s/frame (median)"
        print(f"\nat equal PSNR, {name}:  level | BlenderProc | ours | BlenderProc / ours")
        for level in range(low, high + 1):
            (base, base_exact), (ours, ours_exact) = (seconds_at(curves[side], level) for side in ("BlenderProc", "ours"))
            cells = [f"{'<=' if not exact else '  '}{value:6.2f}" if value is not None else "  not reached"
                     for value, exact in ((base, base_exact), (ours, ours_exact))]
            ratio = "-"
            if base is not None and ours is not None and (base_exact or ours_exact):
                # an upper bound on ours bounds the ratio from below, one on BlenderProc's from above
                ratio = f"{'' if base_exact and ours_exact else '>=' if base_exact else '<='}{base / ours:.1f}"
            print(f"  {level:3d} dB | {cells[0]:>13s} | {cells[1]:>13s} | {ratio}")
    if args.save:
        saved = {"reference": np.stack([r["image"] for r in reference])}
        for result in [*halves, *sides["BlenderProc"], *sides["ours"]]:
            key = "_".join(result["label"].replace("#", "").split())
            saved[key] = np.stack([r["image"] for r in result["rows"]])
            saved[key + "_seconds"], saved[key + "_cpu"] = np.array(result["times"]), np.array(result["cpu"])
        np.savez_compressed(args.save, **saved)
    print(f"\nwhole run {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
