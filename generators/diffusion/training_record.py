"""Which real images a pipeline was trained on: `synthloom_training.json`, beside the diffusers files.

A pipeline trained here on a reference (`scripts/train_fashion_diffusion.py`) records the part of it that it
saw: the reference, `real_fraction` and `real_fraction_seed` (`synthloom.references.per_class_subsample`;
a null fraction is the whole train part) and the classes held out. The `diffusion` generator's
`training_subset()` returns that record, so the `augment` evaluator refuses a recipe whose real arm is
another subsample than the one the model was trained on (its synthetic arms would leak real images the
real arm never saw). A pipeline without the file (a hub model, one trained elsewhere, the base model of
an older `make base-model`) says nothing, and the check passes as before.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from synthloom.errors import GeneratorError

from .pipeline import local_model_path

TRAINING_FILE = "synthloom_training.json"


def write_training_record(pipeline_dir: Path, reference: str, real_fraction: float | None, real_fraction_seed: int,
                          held_out_classes: list[str], **extra: Any) -> Path:
    """Write the record into `pipeline_dir` (before the folder is sealed in the model store)."""
    record = {"reference": reference, "real_fraction": real_fraction,
              "real_fraction_seed": real_fraction_seed if real_fraction is not None else None,
              "held_out_classes": list(held_out_classes), **extra}
    path = Path(pipeline_dir) / TRAINING_FILE
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def read_training_record(model_dir: Path) -> dict[str, Any] | None:
    """The record of a local pipeline folder, None without the file; one GeneratorError line naming the
    file when it is not a record (a silent None would let a leaking comparison through)."""
    path = Path(model_dir) / TRAINING_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise GeneratorError(f"model '{model_dir}': {TRAINING_FILE} is not valid JSON ({error})") from None
    fraction = record.get("real_fraction", "missing") if isinstance(record, dict) else "missing"
    seed = record.get("real_fraction_seed") if isinstance(record, dict) else None
    valid_fraction = fraction is None or (isinstance(fraction, (int, float)) and not isinstance(fraction, bool)
                                          and 0 < fraction <= 1)
    if not valid_fraction or (fraction is not None and not (isinstance(seed, int) and not isinstance(seed, bool))):
        raise GeneratorError(f"model '{model_dir}': {path.name} needs real_fraction (null or a number in (0, 1]) "
                             f"and, with a fraction, an integer real_fraction_seed; got real_fraction {fraction!r}, "
                             f"real_fraction_seed {seed!r}")
    return record


def training_subset_of(model: str, recipe_dir: Path | None = None) -> dict[str, Any] | None:
    """The record of the recipe's `model` when it is a local folder, a relative path found as the build finds it
    (`pipeline.local_model_path`: the working directory, else the recipe's folder); None for a hub id, a missing
    folder (the preflight reports it) or no record."""
    path = local_model_path(model, recipe_dir)
    return read_training_record(path) if path.is_dir() else None
