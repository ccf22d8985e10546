"""The build's preflight: everything a build can refuse is checked here, in well under a second, before
the flow generates anything (`plan_build`), and what is already on disk is matched (`existing_version`).

Nothing here imports Prefect (~1 s): `synthloom build` runs this first, so a bad recipe or a missing
model fails before the flow machinery is even loaded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthloom import dataset as ds
from synthloom.devices import resolve_device
from synthloom.errors import DatasetError
from synthloom.generators.base import BuildContext, Generator
from synthloom.labelers.base import check_chain
from synthloom.models import ModelStore
from synthloom.planning import check_build_size
from synthloom.recipe import Recipe, load_recipe, parse_recipe
from synthloom.registry import make_generator, make_labeler
from synthloom.remote_output import RemoteOutput, conflict, remote_output_of

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
    # `output:` on an object store: `final` is then the local build folder, published after the commit
    remote: RemoteOutput | None = None
    remote_existing: dict[str, Any] | None = None  # the store's manifest of the same rows: nothing to build

    def context(self) -> BuildContext:
        return BuildContext(cache_dir=self.final.parent / ".cache", on_error=self.recipe.on_error,
                            reference=self.recipe.reference, recipe_dir=Path(self.recipe_path).resolve().parent,
                            device=self.device)


def plan_build(recipe_path: str, overwrite: bool = False, version: str | None = None, seed: int | None = None,
               device: str | None = None, runner: str | None = None, address: str | None = None,
               workers: int = 1, output: str | None = None, force_unlock: bool = False) -> BuildPlan:
    """The preflight: validate everything that can be checked in well under a second (a cluster address
    or an object store: a few seconds), change nothing on disk but the output folder itself."""
    recipe = load_recipe(recipe_path)
    overrides = {k: v for k, v in {"version": version, "seed": seed, "device": device, "output": output}.items()
                 if v is not None}
    if overrides:
        recipe = parse_recipe({**recipe.model_dump(mode="json"), **overrides}, recipe_path)
    spec = recipe.runner
    chosen = choose_runner(spec.kind if spec else None, spec.address if spec else None, runner, address, workers)
    check_runner(chosen)  # a missing package or an unreachable cluster: before anything is written
    ModelStore().check_reachable()  # SYNTHLOOM_MODEL_STORE on an object store: reachable, bucket exists
    remote = remote_output_of(recipe, force_unlock)
    final = remote.local_build_dir() if remote is not None else recipe.version_dir().resolve()
    plan = BuildPlan(recipe, recipe_path, final, recipe.generation_fingerprint(), None,
                     resolve_device(recipe.device), chosen, remote)
    if remote is not None:  # an unreachable store, bad credentials, a missing bucket: here, in seconds
        remote.check_reachable()
        remote.check_not_locked()
        plan.remote_existing = existing_remote_version(plan, overwrite)
        if plan.remote_existing is not None:
            return plan  # committed on the store from these rows: nothing to generate
    generator = make_generator(recipe.generator.kind, recipe.generator.params)  # params are validated here
    check_build_size(recipe, None, plan.final.parent)  # the shard count, before any input is read
    generator.check_inputs(plan.context())
    # After check_inputs: a sample's size may depend on the inputs (dcgan: the reference's channels). A
    # build onto a store keeps no shard on this disk (its tasks stage them on the store): no space check.
    check_build_size(recipe, generator.bytes_per_sample() if remote is None else None, plan.final.parent)
    check_labelers_preflight(recipe, generator, plan.context().recipe_dir)
    plan.existing = existing_version(plan, overwrite)
    if plan.existing is None:
        ds.check_writable(plan.final.parent)
    ds.check_not_locked(plan.final)
    return plan


def check_labelers_preflight(recipe: Recipe, generator: Generator, recipe_dir: Path) -> None:
    """Validate labeler params, model folders (labelers with `check_model`: owlv2, blip), and what they
    read when the generator can name its columns before `prepare` (one whose features need prepare,
    for class names, is checked right after it, by `prepare_labelers`)."""
    labelers = [make_labeler(spec.kind, spec.params) for spec in recipe.labelers]
    if not labelers:
        return
    for labeler in labelers:
        if hasattr(labeler, "check_model"):
            labeler.check_model(recipe_dir)
    try:
        features = ds.dataset_schema(generator.features())
    except Exception:  # features() may need prepare(); prepare_labelers checks again after it
        return
    check_chain(labelers, features)


def existing_remote_version(plan: BuildPlan, overwrite: bool) -> dict[str, Any] | None:
    """The store's manifest when it holds this version from the same rows; an error when it holds other
    rows (unless overwriting)."""
    manifest = plan.remote.committed_manifest()
    if manifest is None or overwrite:
        return None
    if plan.recipe.same_rows(manifest):
        return manifest
    raise conflict(plan.remote.url)


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
