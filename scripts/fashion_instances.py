"""A few real Fashion-MNIST train images of one class, as DreamBooth instance images (`make ankle-boots`).

    python scripts/fashion_instances.py --class "ankle boot" --count 8 --out data/fashion-ankle-boots

The images are written as the base model of `make base-model` was trained on them: 28 px zero-padded to
32, grey repeated into RGB, PNG. The pick is seeded: `np.random.default_rng(seed).choice` over the train
images of the class, the same 8 ankle boots that benchmarks/bench_fashion_diffusion_cas.py teaches at
seed 0, so configs/diffusion-fashion-dreambooth.yaml trains the adapter that benchmarks/RESULTS.md
measured. Written into a temporary folder, renamed into place, `.complete` last.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_fashion_mnist import load_fashion_mnist  # noqa: E402
from fashion_base_model import CLASS_NAMES  # noqa: E402  (beside this script)


def instance_images(images: np.ndarray) -> np.ndarray:
    """(N, 28, 28) uint8 -> (N, 32, 32, 3) uint8: padded and grey as RGB, as the base model saw them."""
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2)))
    return np.repeat(padded[..., None], 3, axis=3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--class", dest="name", default="ankle boot", choices=CLASS_NAMES)
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "data" / "fashion-ankle-boots"))
    args = parser.parse_args()
    from PIL import Image

    images, labels = load_fashion_mnist("train")
    of_class = np.flatnonzero(labels == CLASS_NAMES.index(args.name))
    picked = np.random.default_rng(args.seed).choice(of_class, args.count, replace=False)
    out = Path(args.out)
    work = out.with_name(out.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for i, image in enumerate(instance_images(images[picked])):
        Image.fromarray(image).save(work / f"{i:02d}.png")
    shutil.rmtree(out, ignore_errors=True)
    work.rename(out)
    (out / ".complete").write_text(f"train images {sorted(picked.tolist())} of class {args.name!r}\n")
    print(f"{out}: {args.count} {args.name} images (train indices {sorted(picked.tolist())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
