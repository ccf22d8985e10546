"""Shared by the diffusion tests: a tiny random SD pipeline saved to disk, recipe params, captioned images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from synthloom.generators.base import BuildContext
from synthloom.generators.diffusion import DiffusionGenerator


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from diffusion_configs import save_tiny_pipeline

    return save_tiny_pipeline(tmp_path_factory.mktemp("models") / "tiny-sd")


def params(model: Path, **overrides) -> dict:
    base = {"model": str(model), "classes": ["dog", "cat", "car"], "steps": 2, "batch_size": 2,
            "templates": ["a photo of a {colour} {class}, {background}"],
            "attributes": {"colour": ["red", "blue"], "background": ["on grass", "on a beach", "in a studio"]}}
    return {**base, **overrides}


def ready(model: Path, tmp_path: Path, ctx: BuildContext | None = None, **overrides) -> DiffusionGenerator:
    generator = DiffusionGenerator(params(model, **overrides))
    prepared = generator.prepare(ctx or BuildContext(cache_dir=tmp_path))
    generator.load(prepared, "cpu")
    return generator


def captioned_folder(folder: Path, count: int = 4, size: tuple[int, int] = (32, 32), caption: str = "a red square",
                     sidecars: bool = True) -> Path:
    """Flat red images with a caption each (a .txt beside each image, or metadata.jsonl)."""
    import json

    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(count):
        pixels = np.zeros((size[1], size[0], 3), np.uint8)
        pixels[..., 0] = 190 + 10 * i
        Image.fromarray(pixels).save(folder / f"{i:02d}.png")
        if sidecars:
            (folder / f"{i:02d}.txt").write_text(caption)
        else:
            lines.append(json.dumps({"file_name": f"{i:02d}.png", "text": caption}))
    if lines:
        (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return folder
