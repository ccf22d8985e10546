"""Rendering speed at equal quality: generator `blender` (`quality: fast`) against plain BlenderProc,
both scored against one high-sample reference render of the same frames.

Every setting renders the same scenes (same sample seeds: same meshes, poses, materials, lights,
cameras; CGAL meshes of `make meshes`) at SIZE x SIZE px with every pass (RGB, depth, world normals,
instance segmentation), one worker process (one shard) per setting, Cycles on the CPU:
- reference: `quality: reference` at --reference-samples (default 1024) samples per pixel, no adaptive
  sampling, no denoiser, Blender's default light paths (12 bounces, 4 diffuse, 4 glossy, caustics),
  multiscatter GGX: the converged picture of the scene, biased towards neither side's shortcuts. It is
  two renders of half the samples with independent noise, averaged; their difference measures the
  reference's own noise;
- BlenderProc: `quality: blenderproc` (BlenderProc 2.8's defaults: noise threshold 0.01, its
  compositor OIDN denoiser, 3 bounces with no glossy bounce) at each of --baseline-samples;
- ours: `quality: fast` (adaptive sampling at 0.05, Cycles' integrated OIDN, 2 bounces,
  single-scatter GGX) at each of --samples.

Seconds per frame are measured inside the worker, per frame (scene building, render, pass loading,
labelling, writing arrays); the worker's start-up is printed apart. PSNR and SSIM (torchmetrics, 8-bit
RGB, data range 255) of each frame against the reference frame. Then, at equal PSNR:
1. over all frames: for each PSNR level, the median seconds per frame each side needs to reach that
   mean PSNR (interpolated between its settings, linear in log time), and the ratio BlenderProc / ours
   (> 1: ours is faster at that quality); the same at equal mean SSIM;
2. frame by frame: for each of our settings, BlenderProc's seconds to reach our PSNR on that frame
   (interpolated between its settings on that frame) over ours, median and range over the frames.

    python benchmarks/bench_render_psnr.py [--frames 12] [--size 256] [--threads 2] [--reference-samples 1024]
        [--baseline-samples 1,2,4,8,16,32,64] [--samples 1,2,4,8,16] [--save run.npz | --load run.npz]

--save keeps every setting's images and per-frame seconds; --load scores such a file again without
rendering. Needs the render environment (`make render-env`). Heavy (the reference dominates: ~45 CPU s
per frame per 512 samples): run it under `flock /tmp/synthloom-heavy.lock` on a shared machine.
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

SIDES = ("BlenderProc", "ours")


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


def measure(side: str, samples: int, params: dict, frames: int, seed: int) -> dict:
    """Render one setting in one worker: its images, per-frame seconds (wall, CPU of all threads), rows."""
    rows, stats, wall = render(params, frames, seed=seed)
    times = [s["seconds"] for s in stats if s["event"] == "frame"]
    startup = next(s["seconds"] for s in stats if s["event"] == "ready")
    print(f"rendered {side} {samples} spp: shard {wall:.0f} s, worker start-up {startup:.2f} s", flush=True)
    return {"side": side, "samples": samples, "rows": rows, "images": np.stack([r["image"] for r in rows]),
            "times": np.array(times), "cpu": np.array([s["cpu_seconds"] for s in stats if s["event"] == "frame"])}


def render_all(args) -> tuple[list[dict], list[dict]]:
    """(the two reference halves, the compared settings), rendered."""
    common = {"width": args.size, "height": args.size, "threads": args.threads}
    half = max(args.reference_samples // 2, 1)
    # render_seed 1 and 2: noise independent of each other and of the compared settings' (0)
    halves = [measure(f"reference #{k}", half, {**common, "quality": "reference", "samples": half, "render_seed": k},
                      args.frames, args.seed) for k in (1, 2)]
    settings = [measure("BlenderProc", n, {**common, "quality": "blenderproc", "samples": n}, args.frames, args.seed)
                for n in args.baseline_samples]
    settings += [measure("ours", n, {**common, "quality": "fast", "samples": n}, args.frames, args.seed)
                 for n in args.samples]
    first = halves[0]["rows"]
    for setting in [halves[1], *settings]:  # labels do not depend on sampling: any difference is another scene
        if any(a["params"] != b["params"] or not np.array_equal(a["segmentation"], b["segmentation"])
               for a, b in zip(setting["rows"], first)):
            raise SystemExit(f"{setting['side']} {setting['samples']} spp: not the reference's scenes "
                             "(params or instance masks differ); the comparison is void")
    print(f"same scenes and identical instance masks in all {len(settings) + 2} renders", flush=True)
    return halves, settings


def save(path: Path, halves: list[dict], settings: list[dict]) -> None:
    arrays = {}
    for k, setting in enumerate([*halves, *settings]):
        arrays[f"s{k}_images"], arrays[f"s{k}_times"], arrays[f"s{k}_cpu"] = (setting["images"], setting["times"],
                                                                            setting["cpu"])
    labels = [[s["side"], s["samples"]] for s in [*halves, *settings]]
    np.savez_compressed(path, labels=json.dumps(labels), **arrays)


def load(path: Path) -> tuple[list[dict], list[dict]]:
    if not path.is_file():
        raise SystemExit(f"{path}: no such file (write one with --save)")
    data = np.load(path)
    loaded = [{"side": side, "samples": samples, "images": data[f"s{k}_images"], "times": data[f"s{k}_times"],
               "cpu": data[f"s{k}_cpu"]} for k, (side, samples) in enumerate(json.loads(str(data["labels"])))]
    return loaded[:2], loaded[2:]


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


def spread(values) -> str:
    return f"median {np.median(values):.2f} [{np.min(values):.2f}-{np.max(values):.2f}]"


def analyse(halves: list[dict], settings: list[dict]) -> None:
    a, b = (h["images"].astype(np.float64) for h in halves)
    reference = (a + b) / 2
    # MSE(a, b) = 2 var(half): the average's own noise is MSE(a, b) / 4, so its PSNR against the converged
    # picture is PSNR(a, b) + 6.0 dB; it caps every score below (8-bit rounding aside).
    floor = [scores(x, y)[0] + 10 * math.log10(4) for x, y in zip(a, b)]
    print(f"\nreference: mean of two {halves[0]['samples']}-spp renders ({2 * halves[0]['samples']} spp), s/frame "
          f"{spread(np.concatenate([h['times'] for h in halves]))}, CPU s/frame "
          f"{spread(np.concatenate([h['cpu'] for h in halves]))}; its own noise: PSNR vs converged "
          f"{spread(floor)} dB")
    frames = len(reference)
    print(f"\nper setting, {frames} frames: s/frame (wall) and CPU s/frame (all threads): median [range]; PSNR vs "
          "reference: mean, 95 % CI over frames, min; SSIM mean")
    for setting in settings:
        pairs = [scores(image, ref) for image, ref in zip(setting["images"], reference)]
        setting["psnr"], setting["ssim"] = np.array([p for p, _ in pairs]), np.array([s for _, s in pairs])
        psnr = setting["psnr"]
        half_ci = 1.96 * psnr.std(ddof=1) / math.sqrt(frames) if frames > 1 else float("nan")
        print(f"  {setting['side']:11s} {setting['samples']:3d} spp | s/frame {spread(setting['times'])} | CPU "
              f"{spread(setting['cpu'])} | PSNR {psnr.mean():5.2f} +- {half_ci:.2f} dB (min {psnr.min():.2f}) | "
              f"SSIM {setting['ssim'].mean():.4f}")
        print(f"      s/frame: {' '.join(f'{t:.2f}' for t in setting['times'])}")
        print(f"      PSNR:    {' '.join(f'{p:.1f}' for p in psnr)}")
    by_side = {side: [s for s in settings if s["side"] == side] for side in SIDES}

    for metric, unit, step in (("psnr", "dB", 1.0), ("ssim", "", 0.002)):
        for clock, name in (("times", "s/frame (wall, median)"), ("cpu", "CPU s/frame (median)")):
            curves = {side: [(float(np.median(s[clock])), float(s[metric].mean())) for s in by_side[side]]
                      for side in SIDES}
            levels = [p for curve in curves.values() for _, p in curve]
            print(f"\nat equal mean {metric.upper()}, {name}: level | BlenderProc | ours | BlenderProc / ours "
                  "(<=: the cheapest setting measured already exceeds the level)")
            for k in range(math.floor(min(levels) / step), math.ceil(max(levels) / step) + 1):
                level = round(k * step, 6)
                (base, base_exact), (ours, ours_exact) = (seconds_at(curves[side], level) for side in SIDES)
                cells = [f"{'' if exact else '<='}{value:.2f}" if value is not None else "not reached"
                         for value, exact in ((base, base_exact), (ours, ours_exact))]
                ratio = "-"
                if base is not None and ours is not None and (base_exact or ours_exact):
                    # an upper bound on ours bounds the ratio from below, one on BlenderProc's from above
                    ratio = f"{'' if base_exact and ours_exact else '>=' if base_exact else '<='}{base / ours:.1f}"
                shown = f"{level:g} {unit}".strip()
                print(f"  {shown:>7s} | {cells[0]:>11s} | {cells[1]:>11s} | {ratio}")

    print("\nframe by frame: BlenderProc's seconds to reach our PSNR on that frame / ours (frames where it does; "
          "<=: even its cheapest setting exceeds ours on that frame)")
    for ours in by_side["ours"]:
        for clock, name in (("times", "wall"), ("cpu", "CPU ")):
            ratios, bounded, never = [], 0, 0
            for f in range(frames):
                curve = [(float(s[clock][f]), float(s["psnr"][f])) for s in by_side["BlenderProc"]]
                base, exact = seconds_at(curve, float(ours["psnr"][f]))
                if base is None:
                    never += 1
                    continue
                bounded += not exact
                ratios.append(base / float(ours[clock][f]))
            shown = spread(ratios) if ratios else "-"
            print(f"  ours {ours['samples']:3d} spp, {name}: BlenderProc / ours {shown} on {len(ratios)} frames "
                  f"({bounded} of them <=); BlenderProc never reaches our PSNR on {never} of {frames}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=2026, help="root seed of the shard (the scenes)")
    parser.add_argument("--reference-samples", type=int, default=1024)
    parser.add_argument("--baseline-samples", type=counts, default=[1, 2, 4, 8, 16, 32, 64],
                        help="BlenderProc's max samples, comma-separated")
    parser.add_argument("--samples", type=counts, default=[1, 2, 4, 8, 16], help="ours (quality fast), comma-separated")
    parser.add_argument("--save", type=Path, default=None, help="an .npz for every setting's images and seconds")
    parser.add_argument("--load", type=Path, default=None, help="score a --save file again instead of rendering")
    args = parser.parse_args()
    if args.frames < 1 or args.size < 16 or args.reference_samples < 2:
        raise SystemExit(f"--frames must be >= 1, --size >= 16 and --reference-samples >= 2, got {args.frames}, "
                         f"{args.size} and {args.reference_samples}")
    print(environment())
    started = time.perf_counter()
    if args.load:
        halves, settings = load(args.load)
        print(f"loaded {args.load}: {len(halves[0]['images'])} frames, {len(settings)} settings")
    else:
        print("render environment:",
              json.dumps(BlenderGenerator({"source": str(MESHES)}).worker_environment()["packages"]))
        print(f"{args.frames} frames (seed {args.seed}), {args.size}x{args.size} px, all passes, Cycles CPU, "
              f"{args.threads} threads, CGAL meshes", flush=True)
        halves, settings = render_all(args)
        if args.save:
            save(args.save, halves, settings)
    analyse(halves, settings)
    print(f"\nwhole run {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
