"""Train the small Fashion-MNIST text-to-image base model into the model store (bounded, resumable).

    python scripts/train_fashion_diffusion.py --max-minutes 20 [--link models/fashion-sd]

Each run trains for at most --max-minutes, checkpointing into the store's work folder; run it again to
continue. When training completes, the pipeline directory is `<store entry>/pipeline` (printed, and
linked at --link), ready for `generator: {kind: diffusion, params: {model: models/fashion-sd, ...}}`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_fashion_mnist import load_fashion_mnist  # noqa: E402
from fashion_base_model import CODE_VERSION, BaseModelConfig, TrainingPaused, data_key, \
    train_base_model  # noqa: E402  (beside this script)

from synthloom.models import ModelStore  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-minutes", type=float, default=20.0)
    parser.add_argument("--link", default=str(REPO / "models" / "fashion-sd"))
    parser.add_argument("--threads", type=int, default=2)
    for field in dataclasses.fields(BaseModelConfig):
        if field.type in ("int", "float"):
            parser.add_argument("--" + field.name.replace("_", "-"), type=eval(field.type), default=field.default)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    config = BaseModelConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(BaseModelConfig)
                                if hasattr(args, f.name)})
    images, labels = load_fashion_mnist("train")
    inputs = {"kind": "fashion-mnist-base-model", "code": CODE_VERSION, "data_sha256": data_key(images, labels),
              "config": dataclasses.asdict(config)}
    try:
        entry = ModelStore().get_or_build(inputs, lambda work: train_base_model(images, labels, config, work,
                                                                               args.max_minutes))
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
