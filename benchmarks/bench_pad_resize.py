"""What the evaluators' resize costs a padded image set: why configs/diffusion-*.yaml set `center_crop: 28`.

    python benchmarks/bench_pad_resize.py [--seeds 0 1 2] [--images 5000]

The Fashion-MNIST base model (`make base-model`) is trained on 28 px images zero-padded to 32 and draws
them so. CAS resizes a synthetic set to the reference's size, so uncropped 32 px images reach the
classifier with their garments shrunk by 28/32 inside a border. This measures that shift alone, with no
generator: the same real train images, (a) padded to 32 as RGB then resized by `classification_accuracy_
score` (what an uncropped diffusion dataset gets) against (b) unmodified (what `center_crop: 28` gives:
the crop of a padded image is the image). Same small CNN and epochs as the recipes' `cas` evaluator,
tested on the 10,000 real test images; the ratio (a) / (b) per seed, and its mean with a 95 % CI.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import environment  # noqa: E402
from bench_fashion_mnist import load_fashion_mnist  # noqa: E402

from synthloom.evaluators.augment import t_interval  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--images", type=int, default=5000, help="real train images per run (a seeded subset)")
    parser.add_argument("--cnn-epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    from synthloom.evaluators.cas import classification_accuracy_score

    torch.set_num_threads(args.threads)
    print(environment())
    x, y = load_fashion_mnist("train")
    test_x, test_y = load_fashion_mnist("test")
    ratios = []
    for seed in args.seeds:
        pick = np.random.default_rng(seed).permutation(len(x))[:args.images]
        real = x[pick]
        padded = np.repeat(np.pad(real, ((0, 0), (2, 2), (2, 2)))[:, None], 3, axis=1)  # as the base model draws
        start = time.perf_counter()
        # "synthetic" = padded then resized by CAS; "real train" = the same images as they are (the baseline)
        result = classification_accuracy_score(torch.from_numpy(padded), y[pick], torch.from_numpy(real[:, None]),
                                               y[pick], torch.from_numpy(test_x[:, None]), test_y, num_classes=10,
                                               classifier="cnn", cnn_epochs=args.cnn_epochs, seed=seed)
        ratios.append(result["cas"] / result["trtr"])
        print(f"seed {seed}: padded + resized {result['cas']:.3f}, unmodified (baseline) {result['trtr']:.3f}, "
              f"ratio {ratios[-1]:.3f}; {time.perf_counter() - start:.0f} s", flush=True)
    ci = t_interval(ratios)
    mean, half = ci["mean"], (ci["ci_high"] - ci["mean"]) if ci["ci_high"] is not None else float("nan")
    print(f"ratio padded+resized / unmodified over {len(ratios)} seeds: mean {mean:.3f} +- {half:.3f} (95 % CI), "
          f"median {np.median(ratios):.3f}, range {min(ratios):.3f}-{max(ratios):.3f}")


if __name__ == "__main__":
    main()
