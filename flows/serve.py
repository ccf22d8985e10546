"""Scheduled builds: each recipe becomes a Prefect deployment served by this process.

Every scheduled run writes a new version, `<recipe version>-<UTC time of the run>`,
with a seed derived from the recipe seed and that time (recorded in its manifest),
so a refreshed dataset holds new samples and old versions stay untouched.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow, serve

from synthloom.errors import RecipeError
from synthloom.recipe import load_recipe

from .build import build_dataset


def scheduled_version(base_version: str, when: datetime) -> str:
    return f"{base_version}-{when.astimezone(timezone.utc):%Y%m%dT%H%M%SZ}"


def scheduled_seed(base_seed: int, when: datetime) -> int:
    seq = np.random.SeedSequence([base_seed, int(when.timestamp())])
    return int(seq.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


@flow(name="scheduled-build")
def scheduled_build(recipe_path: str) -> dict[str, Any]:
    from prefect.runtime import flow_run

    when = flow_run.scheduled_start_time or datetime.now(timezone.utc)
    recipe = load_recipe(recipe_path)
    return build_dataset(recipe_path, version=scheduled_version(recipe.version, when),
                         seed=scheduled_seed(recipe.seed, when))


def serve_recipes(recipe_paths: list[str], cron: str | None = None, interval: float | None = None,
                  limit: int | None = None) -> None:
    """Register one deployment per recipe and run them on schedule until interrupted."""
    deployments = []
    for path in recipe_paths:
        recipe = load_recipe(path)
        schedule_cron = cron or (None if interval else recipe.schedule)
        if not schedule_cron and not interval:
            raise RecipeError(f"{path}: no schedule: pass --cron or --interval, or set `schedule:` in the recipe")
        deployments.append(
            scheduled_build.to_deployment(
                name=recipe.name,
                cron=schedule_cron,
                interval=interval,
                parameters={"recipe_path": str(Path(path).resolve())},
                description=f"Scheduled builds of {recipe.name} ({path})",
                tags=["synthloom"],
            )
        )
    serve(*deployments, limit=limit)
