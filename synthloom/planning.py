"""Split a recipe's counts into shards. Sample seeds depend only on (root seed, split, index),
so changing `shard_size` regroups samples without changing any of them."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from .errors import RecipeError
from .lifecycle import ShardSpec
from .recipe import Recipe

# One Prefect task per shard: past this many, orchestration alone would take hours and the plan
# itself gigabytes of memory; a larger `shard_size` is the answer.
MAX_SHARDS = 100_000


def shard_count(recipe: Recipe) -> int:
    return sum(math.ceil(total / recipe.shard_size) for total in recipe.count.values())


def check_build_size(recipe: Recipe, bytes_per_sample: int | None, output: Path) -> None:
    """Refuse an absurd request up front, with the estimated size, before anything is planned."""
    shards = shard_count(recipe)
    if shards > MAX_SHARDS:
        raise RecipeError(f"count: {recipe.total_samples():,} samples in shards of {recipe.shard_size} make "
                          f"{shards:,} shards (at most {MAX_SHARDS:,}); raise `shard_size` or lower `count`")
    if bytes_per_sample is None:
        return
    estimate = recipe.total_samples() * bytes_per_sample
    folder = output
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if estimate > free:
        raise RecipeError(f"count: {recipe.total_samples():,} samples need about {_size(estimate)} "
                          f"(~{_size(bytes_per_sample)} each) but {folder} has {_size(free)} free")


def png_row_bytes(height: int, width: int, channels: int) -> int:
    """What a row with one PNG image costs in a zstd Parquet shard when its pixels do not compress (a
    GAN's noise): the raw scanlines with their filter byte, plus ~64 B of PNG framing and small columns
    (id, label, seed...). Measured at 8x8 grey: noise 117 B, real digits 96 B; estimate 136 B."""
    return height * (width * channels + 1) + 64


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n} B"


def plan_shards(recipe: Recipe, seed: int | None = None) -> list[ShardSpec]:
    root_seed = recipe.seed if seed is None else seed
    shards = []
    for split, total in recipe.count.items():
        num = math.ceil(total / recipe.shard_size)
        for index in range(num):
            start = index * recipe.shard_size
            size = min(recipe.shard_size, total - start)
            shards.append(ShardSpec(split, index, num, start, size, root_seed))
    return shards
