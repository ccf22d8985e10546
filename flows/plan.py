"""The build's preflight: everything a build can refuse is checked here, in well under a second, before
the flow generates anything (`plan_build`), and what is already on disk is matched (`existing_version`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthloom import dataset as ds
from synthloom.devices import resolve_device
from synthloom.errors import DatasetError
from synthloom.generators.base import BuildContext
from synthloom.planning import check_build_size
from synthloom.recipe import Recipe, load_recipe, parse_recipe
from synthloom.registry import make_generator

from .labelling import check_labelers_preflight
from .runners import Runner, check_runner, choose_runner


@dataclass
class BuildPlan:
    """What the preflight decided: the recipe, where it goes, and what exists there already."""

    recipe: Recipe
    recipe_path: str
    final: Path
    generation: str  # the generation fingerprint
    existing: dict[str, Any] | None  # manifest of a committed version with the same generation
    device: str
    runner: Runner = Runner()

    def context(self) -> BuildContext:
        return BuildContext(cache_dir=self.final.parent / ".cache", on_error=self.recipe.on_error,
                            reference=self.recipe.reference, recipe_dir=Path(self.recipe_path).resolve().parent,
                            device=self.device)


def plan_build(recipe_path: str, overwrite: bool = False, version: str | None = None, seed: int | None = None,
               device: str | None = None, runner: str | None = None, address: str | None = None,
               workers: int = 1) -> BuildPlan:
    """The preflight: validate everything that can be checked in well under a second (a cluster address:
    a few seconds), change nothing on disk but the output folder itself."""
    recipe = load_recipe(recipe_path)
    overrides = {k: v for k, v in {"version": version, "seed": seed, "device": device}.items() if v is not None}
    if overrides:
        recipe = parse_recipe({**recipe.model_dump(mode="json"), **overrides}, recipe_path)
    spec = recipe.runner
    chosen = choose_runner(spec.kind if spec else None, spec.address if spec else None, runner, address, workers)
    check_runner(chosen)  # a missing package or an unreachable cluster: before anything is written
    plan = BuildPlan(recipe, recipe_path, recipe.version_dir().resolve(), recipe.generation_fingerprint(), None,
                     resolve_device(recipe.device), chosen)
    generator = make_generator(recipe.generator.kind, recipe.generator.params)  # params are validated here
    check_build_size(recipe, None, plan.final.parent)  # the shard count, before any input is read
    generator.check_inputs(plan.context())
    # After check_inputs: a sample's size may depend on the inputs (dcgan: the reference's channels).
    check_build_size(recipe, generator.bytes_per_sample(), plan.final.parent)
    check_labelers_preflight(recipe, generator, plan.context().recipe_dir)
    plan.existing = existing_version(plan, overwrite)
    if plan.existing is None:
        ds.check_writable(plan.final.parent)
    ds.check_not_locked(plan.final)
    return plan


def existing_version(plan: BuildPlan, overwrite: bool) -> dict[str, Any] | None:
    """The manifest of a committed version with the same generation fingerprint, None to build, or an
    error on conflict. Read-only: an interrupted commit is finished later, under the version lock."""
    final = plan.final
    if not final.exists():
        return None
    pending = final / ds.PENDING_MANIFEST
    source = final / ds.MANIFEST if (final / ds.MANIFEST).exists() else pending
    try:
        manifest = ds.read_json_object(source, "manifest")
    except (OSError, DatasetError):
        if overwrite:
            return None
        raise DatasetError(f"{final}: exists but is not a complete dataset; remove it or pass --overwrite") from None
    if overwrite:
        return None
    if plan.recipe.same_rows(manifest):
        return manifest
    if "generation_sha256" not in manifest:
        raise DatasetError(f"{final}: built by an older synthloom whose manifest has no generation fingerprint, "
                           "so its rows cannot be matched to this recipe; bump `version` or pass --overwrite")
    raise DatasetError(
        f"{final}: already built from a different recipe (sha256 {manifest.get('recipe_sha256', '?')[:12]}…); "
        "bump `version` in the recipe or pass --overwrite"
    )
