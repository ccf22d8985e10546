"""Images/s of the `diffusion` generator against a naive one-image-at-a-time diffusers loop, same run.

Both sides load the same pipeline directory (random weights from configs), generate the same prompts
with the same per-image seeds and classifier-free guidance on; neither encodes PNGs (the dataset writer
does that after). The naive side is what a user writes first:

    pipe = DiffusionPipeline.from_pretrained(dir)            # fp32
    for prompt, seed in ...: pipe(prompt, generator=torch.Generator().manual_seed(seed)).images[0]

Ours is `DiffusionGenerator.load()` then `generate(shard)` with the variant's options. The first batch
of every side is a warm-up and is not timed (for `compile` its time is printed as the compile time).

CPU (what this machine has): a small SD-style pipeline (UNet 32/64/64, 64 px), the default below.
GPU: `--arch sd15 --device cuda --size 512 --steps 25` builds Stable Diffusion 1.5's architecture from
its configs; variants are dtype:batch[:channels_last][:fuse_qkv][:compile], e.g.

    python benchmarks/bench_diffusion.py --arch sd15 --device cuda --size 512 --steps 25 --images 64 \\
        --variants fp16:8 bf16:16 bf16:16:channels_last bf16:16:channels_last:fuse_qkv bf16:16:compile
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))  # training-only builders (not installed)
from _common import environment  # noqa: E402
from diffusion_configs import _pipeline, sd15_pipeline  # noqa: E402

from synthloom.generators.base import BuildContext, ShardSpec  # noqa: E402
from synthloom.generators.diffusion import DiffusionGenerator  # noqa: E402

CLASSES = ["dog", "cat", "car", "bird"]


def small_pipeline(work: Path):
    """Between the tests' tiny pipeline and SD: enough compute per image for batching to matter on a CPU."""
    unet = dict(block_out_channels=(32, 64, 64), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                cross_attention_dim=64, norm_num_groups=8, attention_head_dim=8)
    vae = dict(block_out_channels=(32, 64, 64), in_channels=3, out_channels=3, layers_per_block=1, latent_channels=4,
               down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
               norm_num_groups=8, sample_size=64)
    text = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_hidden_layers=2, projection_dim=64)
    return _pipeline(unet, vae, text, work, seed=0, max_length=77)


def parse_variant(text: str) -> dict:
    parts = text.split(":")
    flags = set(parts[2:])
    unknown = flags - {"channels_last", "fuse_qkv", "compile"}
    if unknown:
        raise SystemExit(f"unknown variant flag(s) {sorted(unknown)} in {text!r}")
    return {"dtype": parts[0], "batch_size": int(parts[1]), "channels_last": "channels_last" in flags,
            "fuse_qkv": "fuse_qkv" in flags, "compile": "compile" in flags, "name": text}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_gib(device: str) -> str:
    if not device.startswith("cuda"):
        return ""
    return f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def naive(model: Path, prompts: list[str], seeds: list[int], args) -> tuple[float, list[np.ndarray]]:
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(model), local_files_only=True).to(args.device)
    pipe.set_progress_bar_config(disable=True)

    def one(prompt, seed):
        return pipe(prompt, num_inference_steps=args.steps, guidance_scale=7.5, height=args.size, width=args.size,
                    generator=torch.Generator().manual_seed(seed)).images[0]

    one(prompts[0], seeds[0])  # warm-up
    reset_peak(args.device)
    sync(args.device)
    start = time.perf_counter()
    images = [np.asarray(one(p, s)) for p, s in zip(prompts, seeds)]
    sync(args.device)
    elapsed = time.perf_counter() - start
    print(f"naive diffusers loop (fp32, one image per call): {len(images) / elapsed:.3f} images/s "
          f"({elapsed:.1f} s for {len(images)}){peak_gib(args.device)}", flush=True)
    del pipe
    return len(images) / elapsed, images


def ours(model: Path, variant: dict, args, root: Path) -> tuple[float, list[dict]]:
    params = {"model": str(model), "classes": CLASSES, "steps": args.steps, "guidance_scale": 7.5,
              "height": args.size, "width": args.size, **{k: v for k, v in variant.items() if k != "name"}}
    generator = DiffusionGenerator(params)
    prepared = generator.prepare(BuildContext(cache_dir=root, device=args.device))
    generator.load(prepared, args.device)
    warm = ShardSpec("warmup", 0, 1, 0, variant["batch_size"], root_seed=args.seed)
    sync(args.device)
    start = time.perf_counter()
    list(generator.generate(warm))
    sync(args.device)
    first = time.perf_counter() - start
    reset_peak(args.device)
    shard = ShardSpec("train", 0, 1, 0, args.images, root_seed=args.seed)
    start = time.perf_counter()
    rows = list(generator.generate(shard))
    sync(args.device)
    elapsed = time.perf_counter() - start
    rate = len(rows) / elapsed
    extra = f", first batch (compile) {first:.1f} s" if variant["compile"] else ""
    print(f"synthloom diffusion [{variant['name']}]: {rate:.3f} images/s ({elapsed:.1f} s for {len(rows)})"
          f"{peak_gib(args.device)}{extra}", flush=True)
    del generator
    return rate, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", choices=["small", "sd15"], default="small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", nargs="+", default=["fp32:8"])
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's own)")
    parser.add_argument("--model-dir", help="reuse (or write) the random pipeline here instead of a temp dir")
    args = parser.parse_args()
    variants = [parse_variant(v) for v in args.variants]
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="bench-diffusion-") as tmp:
        root = Path(tmp)
        model = Path(args.model_dir) if args.model_dir else root / "model"
        if not (model / "model_index.json").is_file():
            start = time.perf_counter()
            pipe = (sd15_pipeline if args.arch == "sd15" else small_pipeline)(root / "build")
            pipe.save_pretrained(model)
            del pipe
            print(f"built and saved the {args.arch} pipeline from configs in {time.perf_counter() - start:.0f} s")
        print(environment())
        device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
        print(f"{args.arch} pipeline, {args.size} px, {args.steps} steps, guidance 7.5 (CFG on), {args.images} images, "
              f"device {device_name}")
        shard = ShardSpec("train", 0, 1, 0, args.images, root_seed=args.seed)
        rates = {}
        results = {}
        for variant in variants:
            rates[variant["name"]], results[variant["name"]] = ours(model, variant, args, root)
        prompts = [row["prompt"] for row in next(iter(results.values()))]
        seeds = [shard.sample_seed(i) for i in range(args.images)]
        baseline, images = naive(model, prompts, seeds, args)
        for name, rate in rates.items():
            rows = results[name]
            diff = max(np.abs(r["image"].astype(int) - im.astype(int)).max() for r, im in zip(rows, images))
            print(f"ratio ours [{name}] / naive: {rate / baseline:.2f}  (max pixel difference to the naive "
                  f"images, same prompts and seeds: {diff})")


if __name__ == "__main__":
    main()
