"""CAS of the DCGAN and of the offline diffusion base model, like for like (issue 16).

The two Fashion-MNIST numbers recorded earlier differ in more than the generator: the DCGAN's CAS/TRTR
(0.875) trained its classifier on 60,000 synthetic images of 10 classes, the diffusion model's (0.757) on
900 images of the 9 classes it was trained on (ankle boot is held out of it). Here both generators make the
same number of images per class of those 9 classes, and one classifier recipe (the small CNN of
`evaluators/cas.py`, same epochs and seed) is trained on each set and on as many real train images, and
tested on the same 9,000 real test images. TRTR on all 54,000 real train images of the 9 classes is the
denominator of CAS/TRTR, as in the earlier rows.

    python benchmarks/bench_cas_like_for_like.py --dcgan /tmp/dcgan2-fashion --model models/fashion-sd \\
        --per-class 100,600 --out /tmp/diffusion3-bench
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))  # training-only builders (not installed)
from _common import environment  # noqa: E402
from bench_fashion_diffusion_cas import HELD_OUT, add_base_model_arguments, base_model_images  # noqa: E402
from bench_fashion_mnist import load_fashion_mnist  # noqa: E402
from fashion_base_model import CLASS_NAMES  # noqa: E402

from synthloom.evaluators.cas import _fit_predict  # noqa: E402  (as bench_dcgan.py: one fit per set)
from synthloom.evaluators.features import to_float_images  # noqa: E402
from synthloom.generators.base import BuildContext  # noqa: E402
from synthloom.generators.dcgan.training import CHECKPOINT, TrainConfig, render, to_uint8  # noqa: E402
from synthloom.models import ModelStore  # noqa: E402


def dcgan_images(work: Path, classes: np.ndarray, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`per_class` unfiltered images of each class from the EMA generator of a bench_dcgan.py checkpoint."""
    state = torch.load(work / CHECKPOINT, map_location="cpu", weights_only=False)
    cfg = TrainConfig(**state["config"])
    g, _ = cfg.nets()
    g.load_state_dict(state["ema_g"] if state["ema_g"] is not None else state["g"])
    gen = torch.Generator().manual_seed(seed)
    labels = torch.tensor(np.repeat(classes, per_class))
    with torch.no_grad():
        images = render(g, torch.randn(len(labels), cfg.nz, generator=gen), labels, "cpu", batch=1024)
    return to_uint8(images)[..., 0], labels.numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dcgan", required=True, help="the --work folder of a `bench_dcgan.py fashion` run")
    add_base_model_arguments(parser)
    parser.add_argument("--per-class", default="100,600", help="comma-separated images per class")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(environment())
    t0 = time.perf_counter()
    train_x, train_y = load_fashion_mnist("train")
    test_x, test_y = load_fashion_mnist("test")
    classes = np.array([c for c in range(len(CLASS_NAMES)) if c != HELD_OUT])
    keep_train, keep_test = np.isin(train_y, classes), np.isin(test_y, classes)
    real_x, real_y, test_x, test_y = train_x[keep_train], train_y[keep_train], test_x[keep_test], test_y[keep_test]
    ctx = BuildContext(cache_dir=out, models=ModelStore(out / "store"))
    params = {"model": args.model, "classes": CLASS_NAMES, "templates": ["a photo of a {class}"], "attributes": {},
              "steps": args.steps, "guidance_scale": args.guidance, "batch_size": 100}

    def accuracy(x: np.ndarray, y: np.ndarray) -> float:
        """The small CNN of evaluators/cas.py (what CAS trains) fitted on (x, y), scored on the real test images."""
        predicted = _fit_predict("cnn", to_float_images(x), y, to_float_images(test_x), len(CLASS_NAMES), args.seed,
                                 1.0, args.cnn_epochs)
        return float((predicted == test_y).mean())

    t = time.perf_counter()
    trtr = accuracy(real_x, real_y)
    print(f"TRTR on {len(real_y)} real train images: {trtr:.3f} ({time.perf_counter() - t:.0f} s)", flush=True)
    rows = []
    for per_class in [int(v) for v in args.per_class.split(",")]:
        t = time.perf_counter()
        diffusion_x, diffusion_y = base_model_images(params, per_class, args.seed, ctx, args.model)
        keep = np.isin(diffusion_y, classes)
        gan_x, gan_y = dcgan_images(Path(args.dcgan), classes, per_class, args.seed)
        rng = np.random.default_rng(args.seed)
        few = np.concatenate([rng.choice(np.flatnonzero(real_y == c), per_class, replace=False) for c in classes])
        for name, x, y in [("DCGAN", gan_x, gan_y), ("diffusion base model", diffusion_x[keep], diffusion_y[keep]),
                           ("real train images", real_x[few], real_y[few])]:
            cas = accuracy(x, y)
            rows.append((per_class, name, len(y), cas, cas / trtr))
            print(f"  {per_class} per class, {name}: {len(y)} images, CAS {cas:.3f}, CAS/TRTR {cas / trtr:.3f}",
                  flush=True)
        print(f"  ({time.perf_counter() - t:.0f} s)")
    print(f"\nTRTR small-cnn(epochs={args.cnn_epochs}, seed={args.seed}) on {len(real_y)} real train images of the "
          f"9 classes, tested on {len(test_y)} real test images: {trtr:.3f}")
    print("| images per class | trained on | images | CAS | CAS/TRTR |\n| --- | --- | --- | --- | --- |")
    for per_class, name, n, value, ratio in rows:
        print(f"| {per_class} | {name} | {n} | {value:.3f} | {ratio:.3f} |")
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
