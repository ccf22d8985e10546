"""Train the small Fashion-MNIST text-to-image base model into the model store (bounded, resumable).

    python scripts/train_fashion_diffusion.py --max-minutes 20 [--link models/fashion-sd]
    # the low-data model of `make base-model-1pct`: 1 % of each class (600 images), all 10 classes
    python scripts/train_fashion_diffusion.py --real-fraction 0.01 --real-fraction-seed 0 \
        --unet-steps 800 --link models/fashion-sd-1pct

Each run trains for at most --max-minutes, checkpointing into the store's work folder; run it again to
continue. When training completes, the pipeline directory is `<store entry>/pipeline` (printed, and
linked at --link), ready for `generator: {kind: diffusion, params: {model: models/fashion-sd, ...}}`.

--real-fraction trains on `synthloom.references.per_class_subsample` of the train part, the function and
seed that the `augment` evaluator's and the `dcgan` generator's `real_fraction` use, so "0.01, seed 0" are
the same 600 images for all three. The pipeline folder records what it saw in `synthloom_training.json`
(reference, real_fraction, real_fraction_seed, held-out classes): the `diffusion` generator reads it and
the `augment` evaluator refuses a recipe whose real arm is another subsample.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_fashion_mnist import DATA_DIR, load_fashion_mnist  # noqa: E402
from fashion_base_model import CLASS_NAMES, CODE_VERSION, HELD_OUT_CLASSES, BaseModelConfig, TrainingPaused, \
    data_key, train_base_model  # noqa: E402  (beside this script)

from synthloom.generators.diffusion.training_record import write_training_record  # noqa: E402
from synthloom.models import ModelStore  # noqa: E402
from synthloom.references import per_class_subsample  # noqa: E402


def held_out_classes(value: str | None, real_fraction: float | None) -> tuple[int, ...]:
    """--held-out: class numbers ("9", "3,9") or "none". Default: ankle boot (9) for the whole train part (the
    class DreamBooth teaches later); none for a --real-fraction model, whose augment comparison adds
    synthetic samples to every class (a class the model never saw would add junk labelled as that class)."""
    if value is None:
        return HELD_OUT_CLASSES if real_fraction is None else ()
    if value.strip().lower() == "none":
        return ()
    try:
        classes = tuple(sorted({int(v) for v in value.split(",")}))
    except ValueError:
        raise ValueError(f"--held-out: expected class numbers 0-9 separated by commas, or none; got {value!r}") from None
    if not all(0 <= c < len(CLASS_NAMES) for c in classes):
        raise ValueError(f"--held-out: class numbers are 0-{len(CLASS_NAMES) - 1}; got {value!r}")
    return classes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-minutes", type=float, default=20.0)
    parser.add_argument("--link", default=str(REPO / "models" / "fashion-sd"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--real-fraction", type=float, default=None,
                        help="train on this fraction of each class of the train part (per_class_subsample)")
    parser.add_argument("--real-fraction-seed", type=int, default=0)
    parser.add_argument("--held-out", dest="held_out_arg", default=None, help="class numbers left out of training, or none "
                        "(default: 9, ankle boot, for the whole train part; none with --real-fraction)")
    for field in dataclasses.fields(BaseModelConfig):
        if field.type in ("int", "float"):
            parser.add_argument("--" + field.name.replace("_", "-"), type=eval(field.type), default=field.default)
    args = parser.parse_args(argv)
    if args.real_fraction is not None and not 0 < args.real_fraction <= 1:
        parser.error(f"--real-fraction must be in (0, 1], got {args.real_fraction}")
    try:
        held_out = held_out_classes(args.held_out_arg, args.real_fraction)
    except ValueError as error:
        parser.error(str(error))
    import torch

    torch.set_num_threads(args.threads)
    config = BaseModelConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(BaseModelConfig)
                                if hasattr(args, f.name)}, held_out=held_out)
    images, labels = load_fashion_mnist("train")
    if args.real_fraction is not None:
        keep = per_class_subsample(labels, args.real_fraction, args.real_fraction_seed)
        images, labels = images[keep], labels[keep]
        print(f"real_fraction {args.real_fraction:g} (seed {args.real_fraction_seed}): {len(keep)} train images")
    inputs = {"kind": "fashion-mnist-base-model", "code": CODE_VERSION, "data_sha256": data_key(images, labels),
              "config": dataclasses.asdict(config)}
    if args.real_fraction is not None:  # the whole-train-part model keeps the store key it always had
        inputs.update(real_fraction=args.real_fraction, real_fraction_seed=args.real_fraction_seed)

    def build(work: Path) -> None:
        train_base_model(images, labels, config, work, args.max_minutes)
        write_training_record(work / "pipeline", str(DATA_DIR), args.real_fraction, args.real_fraction_seed,
                              [CLASS_NAMES[c] for c in config.held_out], held_out_class_numbers=list(config.held_out),
                              train_images=int((~np.isin(labels, config.held_out)).sum()),
                              data_sha256=inputs["data_sha256"])

    try:
        entry = ModelStore().get_or_build(inputs, build)
    except TrainingPaused as paused:
        print(f"paused: {paused}")
        return 3
    pipeline = entry.path / "pipeline"
    link = Path(args.link)
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(pipeline, link)
    print(f"base model {'reused' if entry.reused else 'trained'}: {pipeline} (linked at {link}), sha256 {entry.sha256}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
