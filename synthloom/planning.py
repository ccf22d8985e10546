"""Split a recipe's counts into shards. Sample seeds depend only on (root seed, split, index),
so changing `shard_size` regroups samples without changing any of them."""

from __future__ import annotations

import math

from synthloom.generators.base import ShardSpec

from .recipe import Recipe


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
