"""Quality of the small Fashion-MNIST base model (`make base-model`): are its images of each class
recognised by a classifier trained on real images, and does a classifier trained on them work on real
ones (CAS, against TRTR, the same classifier trained on real images)?

Images come from the `diffusion` generator itself (prompt "a photo of a {class}", class-balanced,
per-image seeds), are centre-cropped from 32 to 28 px and turned grey, then scored with
`synthloom.evaluators.cas` (multinomial logistic regression on standardised pixels: deterministic).

    python benchmarks/bench_fashion_diffusion_cas.py --model models/fashion-sd [--per-class 100] [--steps 25]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import environment  # noqa: E402
from bench_fashion_mnist import load_fashion_mnist  # noqa: E402

from synthloom.evaluators.cas import classification_accuracy_score  # noqa: E402
from synthloom.generators.base import BuildContext, ShardSpec  # noqa: E402
from synthloom.generators.diffusion import DiffusionGenerator  # noqa: E402
from synthloom.generators.fashion_base_model import CLASS_NAMES  # noqa: E402


def generate(model: str, per_class: int, steps: int, guidance: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    generator = DiffusionGenerator({"model": model, "classes": CLASS_NAMES, "templates": ["a photo of a {class}"],
                                    "attributes": {}, "steps": steps, "guidance_scale": guidance, "batch_size": 100})
    with tempfile.TemporaryDirectory() as tmp:
        generator.load(generator.prepare(BuildContext(cache_dir=Path(tmp))))
    rows = list(generator.generate(ShardSpec("train", 0, 1, 0, per_class * len(CLASS_NAMES), root_seed=seed)))
    images = np.stack([r["image"][2:30, 2:30].mean(axis=-1) for r in rows]).round().astype(np.uint8)
    return images, np.array([r["label"] for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(Path(__file__).resolve().parent.parent / "models" / "fashion-sd"))
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--real-train", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(environment())
    start = time.perf_counter()
    fake, fake_labels = generate(args.model, args.per_class, args.steps, args.guidance, args.seed)
    print(f"generated {len(fake)} images ({args.per_class} per class, DDIM {args.steps} steps, guidance "
          f"{args.guidance}) in {time.perf_counter() - start:.0f} s")
    train_x, train_y = load_fashion_mnist("train")
    test_x, test_y = load_fashion_mnist("test")
    pick = np.random.default_rng(args.seed).permutation(len(train_x))[:args.real_train]
    train_x, train_y = train_x[pick], train_y[pick]

    # Recognition: a classifier trained on real images, asked to classify the generated ones.
    # Same classifier as CAS's default (multinomial logistic regression, standardised pixels, C=1).
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    flat = lambda x: x.reshape(len(x), -1).astype(np.float64) / 255.0  # noqa: E731
    scaler = StandardScaler().fit(flat(train_x))
    classifier = LogisticRegression(max_iter=2000, random_state=args.seed).fit(scaler.transform(flat(train_x)), train_y)
    real_acc = float((classifier.predict(scaler.transform(flat(test_x))) == test_y).mean())
    predicted = classifier.predict(scaler.transform(flat(fake)))
    print(f"real-trained classifier: accuracy {(predicted == fake_labels).mean():.3f} on the generated images "
          f"(chance 0.100; {real_acc:.3f} on real test images)")
    print("  per class: " + ", ".join(f"{name} {(predicted[fake_labels == c] == c).mean():.2f}"
                                      for c, name in enumerate(CLASS_NAMES)))
    # CAS: train on generated, test on real; TRTR: train on real, test on real (the ceiling).
    cas = classification_accuracy_score(fake, fake_labels, train_x, train_y, test_x, test_y, num_classes=10)
    print(f"CAS (train on {len(fake)} generated, test on {len(test_x)} real): {cas['cas']:.3f}; "
          f"TRTR (train on {len(train_x)} real): {cas['trtr']:.3f}; CAS/TRTR {cas['cas_ratio']:.3f}; "
          f"classifier {cas['classifier']}")


if __name__ == "__main__":
    main()
