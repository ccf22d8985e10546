"""Does adding the 1 % diffusion model's images to the same 1 % of real Fashion-MNIST train a better classifier?
(issue 27; the diffusion side of bench_augment.py, which trains a DCGAN on the subsample itself)

The model is the pipeline folder of `make base-model-1pct` (trained on `per_class_subsample` of the train
part, 1 %, seed 0; its `synthloom_training.json` says so and is checked against --fraction/--subsample-seed:
a model trained on other real images would leak them into the synthetic arms). Images come from the
`diffusion` generator's own code path with configs/diffusion-fashion-1pct.yaml's params (classes and
prompts, DDIM 20 steps, guidance 3, center_crop 28, the recipe's seed and shards), --per-class of each
class, cached in --work by the model's hash. Then the `augment` evaluator's comparison
(`synthloom.evaluators.augment.augmentation_comparison`, CAS's small CNN, equal gradient steps per arm)
on the 10,000 test images, --seeds runs per arm; the baseline is the real arm, trained in the same run
with the same seeds and step budget.

    OMP_NUM_THREADS=2 flock /tmp/synthloom-heavy.lock python benchmarks/bench_augment_diffusion.py
    # at 10 %: the model of `make base-model-10pct`, 2,400 images a class (4:1 of 600 real), 2 classifier epochs
    OMP_NUM_THREADS=2 flock /tmp/synthloom-heavy.lock python benchmarks/bench_augment_diffusion.py \
        --model models/fashion-sd-10pct --fraction 0.1 --per-class 2400 --epochs 2
    # a smoke run: few images, 2 seeds, short classifier training
    python benchmarks/bench_augment_diffusion.py --per-class 8 --seeds 2 --ratios 0.25,1 --epochs 1 --min-steps 20
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (AUGMENT_TABLE_HEADER, FASHION, augment_data, augment_setting,  # noqa: E402
                     augment_table_row, environment)

from synthloom.evaluators.augment import _cnn, augmentation_comparison, ratio_label, subset_mismatch  # noqa: E402
from synthloom.generators.base import BuildContext  # noqa: E402
from synthloom.planning import plan_shards  # noqa: E402
from synthloom.recipe import parse_recipe  # noqa: E402
from synthloom.registry import make_generator  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "configs" / "diffusion-fashion-1pct.yaml"
NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def generate(recipe, model: str, per_class: int, work: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """(uint8 (N, 28, 28, 3) images, class indices, info) from the recipe's generator with `model`: the
    build's shards of a `per_class` x 10 count (classes cycle with the sample index), cached by model hash."""
    params = {**recipe.generator.params, "model": model}
    generator = make_generator("diffusion", params)
    prepared = generator.prepare(BuildContext(cache_dir=work, recipe_dir=RECIPE.parent))
    base = next(a.sha256 for a in prepared.assets if a.role == "base-model")
    p = generator.params
    cache = work / f"images-{base[:16]}-{per_class}-s{p.steps}-g{p.guidance_scale:g}-c{p.center_crop}-seed{recipe.seed}.npz"
    if cache.is_file():
        saved = np.load(cache)
        print(f"  images: {len(saved['y'])} from the cache {cache}", flush=True)
        return saved["x"], saved["y"], {"sha256": base, "seconds": float(saved["seconds"]), "cached": True}
    generator.load(prepared, "cpu")
    spec = parse_recipe({**recipe.model_dump(), "count": {"train": 10 * per_class}}, "bench")
    t = time.perf_counter()
    images, labels = [], []
    for shard in plan_shards(spec):
        for row in generator.generate(shard):
            images.append(row["image"])
            labels.append(int(row["label"]))
    seconds = time.perf_counter() - t
    x, y = np.stack(images), np.array(labels, dtype=np.int64)
    work.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(cache, x=x, y=y, seconds=seconds)
    print(f"  images: {len(y)} generated in {seconds:.0f}s ({len(y) / seconds:.1f} images/s), cached in {cache}",
          flush=True)
    return x, y, {"sha256": base, "seconds": seconds, "cached": False}


def _prep_test(images) -> torch.Tensor:
    from synthloom.evaluators.features import to_float_images

    return to_float_images(images)


def copy_check(synth: torch.Tensor, real: torch.Tensor, test: torch.Tensor) -> None:
    """Does the model copy its 600 training images? Each generated image's pixel distance to its nearest
    training image, against the same for real test images (never trained on): the baseline of a non-copy."""
    def nearest(x):
        return torch.cdist(x.flatten(1), real.flatten(1)).min(dim=1).values

    generated, unseen = nearest(synth), nearest(test[:2000])
    floor = torch.quantile(unseen, 0.01)
    print(f"  copy check (pixels, nearest of the {len(real)} training images): median distance generated "
          f"{generated.median():.2f} vs real test images {unseen.median():.2f}; generated closer than the 1st "
          f"percentile of the test images ({floor:.2f}): {(generated < floor).float().mean():.3f} (test: 0.010)",
          flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(REPO / "models" / "fashion-sd-1pct"), help="the 1 %% pipeline folder")
    ap.add_argument("--fraction", type=float, default=0.01, help="real_fraction of each class of the train part")
    ap.add_argument("--subsample-seed", type=int, default=0)
    ap.add_argument("--per-class", type=int, default=240, help="generated images per class (4:1 of 60 real: 240)")
    ap.add_argument("--seeds", type=int, default=3, help="classifier runs per arm")
    ap.add_argument("--ratios", default="0.25,0.5,1,4", help="synthetic:real ratios")
    ap.add_argument("--epochs", type=int, default=20, help="classifier epochs over the largest training set")
    ap.add_argument("--min-steps", type=int, default=500)
    ap.add_argument("--work", default="/tmp/bench-augment-diffusion")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    ratios = [float(v) for v in args.ratios.split(",")]
    recipe = parse_recipe(yaml.safe_load(RECIPE.read_text()), str(RECIPE))
    record = make_generator("diffusion", {**recipe.generator.params, "model": args.model}).training_subset()
    problem = subset_mismatch(args.fraction, args.subsample_seed, record, "diffusion", FASHION)
    if problem:
        sys.exit(f"bench_augment_diffusion: {problem}")
    ref, sub, classes, y_real, y_test = augment_data(args.fraction, args.subsample_seed)
    data, arms = augment_setting(args, ref, sub, ratios)
    print(f"{environment()}\naugment bench (diffusion): {data}; model {args.model} (training record: {record}); "
          f"{arms}, {args.threads} threads", flush=True)
    x_syn, y_syn, info = generate(recipe, args.model, args.per_class, Path(args.work))
    print(f"  model sha256 {info['sha256'][:12]}; per class {np.bincount(y_syn, minlength=10).tolist()}", flush=True)

    params = SimpleNamespace(batch_size=32)
    # NCHW, as the evaluator decodes a dataset's images; _cnn averages RGB to the reference's one channel.
    nchw = np.ascontiguousarray(x_syn.transpose(0, 3, 1, 2))
    fit_predict, concat, name, synth, real_x = _cnn(nchw, sub.train_images, ref.test_images, 10, params)
    copy_check(synth, real_x, _prep_test(ref.test_images))
    t = time.perf_counter()
    result = augmentation_comparison(fit_predict, concat, real_x, y_real, synth, y_syn, ref.test_images, y_test,
                                     classes, ratios, args.seeds, args.epochs, 32, min_steps=args.min_steps)
    print("\n" + AUGMENT_TABLE_HEADER)
    for arm, a in result["arms"].items():
        gain = result["gains"].get(ratio_label(a["ratio"])) if "ratio" in a else None
        print(augment_table_row("diffusion", arm, a, gain), flush=True)
    best = result["gains"][ratio_label(result["best_ratio"])]
    print(f"  (comparison {time.perf_counter() - t:.0f}s; best ratio {ratio_label(result['best_ratio'])}: gain "
          f"{best['mean']:+.4f}, per seed {[round(v, 4) for v in best['per_seed']]} (median "
          f"{np.median(best['per_seed']):+.4f}, range {min(best['per_seed']):+.4f} to {max(best['per_seed']):+.4f}); "
          f"epochs per arm { {k: v['epochs'] for k, v in result['arms'].items()} }; steps "
          f"{result['gradient_steps_per_arm']})", flush=True)
    short = {g: round(v["achieved_ratio"], 3) for g, v in result["gains"].items() if v["achieved_ratio"] < 0.99 * v["ratio"]}
    if short:
        print(f"  too few generated images for ratio(s) {list(short)}: achieved {list(short.values())} (raise --per-class)")
    per = result["gain_per_class"]
    label = ratio_label(1.0) if 1.0 in ratios else ratio_label(result["best_ratio"])
    print(f"\nper-class gain at {label} (mean over seeds): "
          + ", ".join(f"{NAMES[int(c)]} {per[c][label]:+.3f}" for c in per if label in per[c]))
    print(f"total {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
