"""Images/s of the owlv2 and blip labelers, batched vs one image at a time, in the same run.

Random weights (speed does not depend on them) in realistic-ish small configs built from
transformers configs (tests/tiny_hf_models.py builders with bigger sizes), saved and reloaded
through the labelers' own `from_pretrained` path. Each labeler labels the same Arrow table of
640x480 and 480x640 PNG images through `apply_labeler` (PNG decode, preprocessing, model, boxes or
captions, encoding: the whole label-shard path), with `batch_size=1` and batched, alternating; best of
`--repeats` rounds each. Printed: images/s of both and the ratio batched / one-at-a-time.

    flock /work/wt/heavy.lock timeout 900 python benchmarks/bench_labelers.py        # ~5 min on 2 cores
    python benchmarks/bench_labelers.py --images 8 --repeats 1 --device cuda          # on a GPU
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _common import best_of, environment  # noqa: E402


def image_table(count: int, seed: int = 0):
    """`count` smooth random images (upscaled noise + rectangles: PNG sizes like photos'), two
    orientations, as a shard table with an Image column."""
    from PIL import Image as PILImage

    from synthloom import dataset as ds
    from synthloom.features import Features, Image

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        height, width = (480, 640) if i % 2 == 0 else (640, 480)
        small = rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
        image = np.array(PILImage.fromarray(small).resize((width, height), PILImage.BILINEAR))
        for _ in range(3):
            x, y = rng.integers(0, width - 100), rng.integers(0, height - 100)
            image[y:y + 80, x:x + 90] = rng.integers(0, 256, 3)
        rows.append({"id": f"train-{i:08d}", "split": "train", "image": image, "generator": "bench",
                     "generation_sha256": "bench"})
    return ds.rows_to_table(rows, ds.dataset_schema(Features({"image": Image()})))


def loaded(kind: str, folder: Path, params: dict, batch_size: int, device: str):
    from synthloom.generators.base import BuildContext
    from synthloom.registry import make_labeler

    labeler = make_labeler(kind, {"model": str(folder), **params, "batch_size": batch_size})
    labeler.load(labeler.prepare(BuildContext(cache_dir=None)), device)
    return labeler


def measure(labelers: dict, table, repeats: int) -> dict[str, float]:
    """Images/s of labelling `table` with each labeler; runs alternate between them (one round = each
    once) and the best of `repeats` rounds counts, so a burst of load elsewhere hits both alike."""
    import time

    from synthloom.labelers.base import apply_labeler

    best = {name: float("inf") for name in labelers}
    for labeler in labelers.values():
        apply_labeler(labeler, table.slice(0, min(2, table.num_rows)))  # warm-up
    for _ in range(repeats):
        for name, labeler in labelers.items():
            start = time.perf_counter()
            apply_labeler(labeler, table)
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: table.num_rows / seconds for name, seconds in best.items()}


def preprocessing_seconds(labeler, table, repeats: int) -> float:
    """Seconds per image of PNG decoding + the image processor alone (batching cannot speed it up)."""
    from synthloom.features import Image
    from synthloom.labelers.hf_models import rgb_images

    def run():
        images = rgb_images(labeler.name, table, {"image": Image()}, "image", 1)
        labeler.processor.image_processor(images=images, return_tensors="pt")

    return best_of(repeats, run) / table.num_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", choices=["owlv2", "blip"])
    args = parser.parse_args()

    import torch
    from tiny_hf_models import tiny_blip, tiny_owlv2

    print(environment())
    table = image_table(args.images)
    with tempfile.TemporaryDirectory() as tmp:
        # OWLv2 base is ViT-B/16 at 960 px (3,600 patches); this is a quarter-width ViT at 320 px (400 patches).
        models = {
            "owlv2": (lambda: tiny_owlv2(Path(tmp) / "owlv2", image_size=320, patch_size=16, hidden=256, layers=4),
                      {"ontology": {"a photo of a cat": "cat", "a photo of a dog": "dog", "a car": "car"},
                       "threshold": 0.1, "column": "auto_objects"},
                      "Owlv2 ViT 256-d x 4 layers, 320 px / 16 px patches, text 256-d x 4, 3 prompts"),
            # BLIP base is ViT-B/16 at 384 px; this is 256-d x 4 layers at 224 px, 20 new tokens greedy.
            "blip": (lambda: tiny_blip(Path(tmp) / "blip", image_size=224, patch_size=16, hidden=256, layers=4),
                     {"max_new_tokens": 20, "column": "auto_caption"},
                     "BLIP ViT 256-d x 4 layers, 224 px / 16 px patches, text decoder 256-d x 4, 20 tokens greedy"),
        }
        for kind, (build, params, description) in models.items():
            if args.only and kind != args.only:
                continue
            folder = build()
            labelers = {"one": loaded(kind, folder, params, 1, args.device),
                        "batched": loaded(kind, folder, params, args.batch_size, args.device)}
            speed = measure(labelers, table, args.repeats)
            one, batched = speed["one"], speed["batched"]
            preprocessing = preprocessing_seconds(labelers["batched"], table, args.repeats)
            print(f"{kind}: {description}; {args.images} images (640x480 / 480x640 PNG), device {args.device}, "
                  f"torch threads {torch.get_num_threads()}")
            print(f"  one at a time: {one:.2f} images/s   batched ({args.batch_size}): {batched:.2f} images/s   "
                  f"ratio batched / one: {batched / one:.2f}")
            print(f"  of which PNG decode + image processor: {preprocessing * 1000:.0f} ms/image "
                  f"({preprocessing * batched:.0%} of the batched time)")


if __name__ == "__main__":
    main()
