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


def deploy_recipes(recipe_paths: list[str], pool: str, cron: str | None = None, interval: float | None = None,
                   working_dir: str | None = None) -> list[tuple[str, str]]:
    """Register one deployment per recipe on the process work pool `pool` (created if missing) and return
    [(deployment name, id)]. Unlike `serve_recipes`, nothing runs here: a `prefect worker start --pool POOL`
    (any machine with synthloom installed that reaches the same Prefect server) picks the scheduled runs up
    and runs each in a fresh process. The flow is found by module path (synthloom.flows.serve), not by a
    file of this checkout, and a relative `output:` resolves against `working_dir` (default: here), as it
    does for `synthloom build` run from here."""
    from prefect.types.entrypoint import EntrypointType

    plans = []
    for path in recipe_paths:  # every recipe valid and scheduled before anything is registered
        recipe = load_recipe(path)
        schedule_cron = cron or (None if interval else recipe.schedule)
        if not schedule_cron and not interval:
            raise RecipeError(f"{path}: no schedule: pass --cron or --interval, or set `schedule:` in the recipe")
        plans.append((path, recipe, schedule_cron))
    pool_type = ensure_process_pool(pool)
    if pool_type != "process":
        raise RecipeError(f"work pool '{pool}' is of type '{pool_type}', not 'process'; pass another --pool")
    made = []
    for path, recipe, schedule_cron in plans:
        deployment = scheduled_build.to_deployment(
            name=recipe.name, cron=schedule_cron, interval=interval,
            parameters={"recipe_path": str(Path(path).resolve())},
            description=f"Scheduled builds of {recipe.name} ({path}), run by a worker of pool {pool}",
            tags=["synthloom"], work_pool_name=pool,
            job_variables={"working_dir": str(Path(working_dir or ".").resolve())},
            entrypoint_type=EntrypointType.MODULE_PATH,
        )
        made.append((f"scheduled-build/{recipe.name}", str(deployment.apply())))
    return made


def ensure_process_pool(pool: str) -> str:
    """The type of work pool `pool`, after creating it as a process pool if it did not exist (what
    `prefect work-pool create POOL --type process` does)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            return client.read_work_pool(pool).type
        except ObjectNotFound:
            return client.create_work_pool(WorkPoolCreate(name=pool, type="process")).type
