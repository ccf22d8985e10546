"""What every generator implements, and the small records the build flow hands it.

The lifecycle, in the order the build flow calls it:

1. `Generator(params)`: params validated by the generator's pydantic `Params` (unknown keys are errors).
2. `check_inputs(ctx)`: cheap checks of inputs (folders exist, files parse), run before any flow run,
   so a bad input fails in a second with one line.
3. `prepare(ctx) -> Prepared`: once per build; loads or trains what generation needs. Expensive results
   (trained weights) go into the model store (`ctx.models`, keyed by their inputs) and are reused by
   later builds. Returns a typed, JSON-able `Prepared` record: assets, classes, skipped inputs, the input
   fingerprint and the hashes of the weights it produced.
4. `load(prepared, device)`: once per worker process; the loaded generator serves every shard that
   process generates.
5. `generate(shard)`: yields one row dict per sample, deterministic given `shard.sample_seed(i)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Iterable

from pydantic import Field, ValidationError

from synthloom.errors import GeneratorError, describe_validation_error
from synthloom.features import Features
from synthloom.lifecycle import Asset, BuildContext, PreparedPart, ShardSpec, SkippedInput, input_fingerprint
from synthloom.params import PartParams

__all__ = ["Asset", "BuildContext", "Generator", "GeneratorParams", "Prepared", "ShardSpec", "SkippedInput",
           "input_fingerprint"]  # the shared records live in synthloom.lifecycle; importable from here too


class Prepared(PreparedPart):
    """What a generator's `prepare` returns (`synthloom.lifecycle.PreparedPart`): its name, the classes
    it generates and the inputs it skipped, besides the shared fields."""

    generator: str
    classes: list[str] = Field(default_factory=list)
    skipped: list[SkippedInput] = Field(default_factory=list)

    def assets_by_label(self) -> dict[str, list[Asset]]:
        grouped: dict[str, list[Asset]] = {name: [] for name in self.classes}
        for asset in self.assets:
            if asset.label is not None:
                grouped.setdefault(asset.label, []).append(asset)
        return grouped


class GeneratorParams(PartParams):
    """Base for each generator's params: unknown keys are errors, a bool is not a number (synthloom/params.py)."""


class Generator:
    """Base class. Subclasses set `name`, `Params`, `features()` and implement prepare/generate."""

    name: ClassVar[str]
    Params: ClassVar[type[GeneratorParams]]
    # Bump when the same inputs would now give different samples: it is part of every cache key.
    code_version: ClassVar[str] = "1"
    # What one generating task occupies, e.g. {"gpu": 1}: the flow runs at most one such task per device.
    resources: ClassVar[dict[str, int]] = {}

    def __init__(self, params: dict[str, Any] | GeneratorParams):
        if isinstance(params, GeneratorParams):
            self.params = params
        else:
            try:
                self.params = self.Params.model_validate(params)
            except ValidationError as error:
                problems = describe_validation_error(error, "generator param")
                raise GeneratorError(f"{self.name}: " + "; ".join(problems)) from None
        self.prepared: Prepared | None = None
        self.device = "cpu"

    def training_subset(self, recipe_dir: Path | None = None) -> dict[str, Any] | None:
        """Which part of the recipe's `reference` this generator trains on, for checks that compare it with
        an evaluator's (the `augment` evaluator's real_fraction): None when it does not train on the
        reference (the default); {"real_fraction": None, ...} for all of its train part;
        {"real_fraction": f, "real_fraction_seed": s} for `synthloom.references.per_class_subsample`.
        `recipe_dir` resolves relative input paths as `check_inputs` does (the recipe's folder)."""
        return None

    def check_inputs(self, ctx: BuildContext) -> None:
        """Cheap input checks run before the flow starts (default: none). Raise GeneratorError."""

    def load(self, prepared: Prepared, device: str = "cpu") -> None:
        """Make the generator ready to generate: called once per worker process. Subclasses that load
        models override it (and call super)."""
        self.prepared = prepared
        self.device = device

    def bytes_per_sample(self) -> int | None:
        """A rough size of one written sample, to refuse absurd builds up front (None: unknown). Called
        after `check_inputs`, so it may use what that found."""
        return None

    def features(self) -> Features:
        """The generator's own typed columns (the writer adds id/split/provenance). May need
        `prepare` to have run (class names come from the assets)."""
        raise NotImplementedError

    def prepare(self, ctx: BuildContext) -> Prepared:
        """Load/train/cache what generation needs; return the typed `Prepared` record."""
        raise NotImplementedError

    def generate(self, shard: ShardSpec) -> Iterable[dict[str, Any]]:
        """Yield one row per sample of the shard, in order."""
        raise NotImplementedError

    def shard_stats(self) -> dict[str, Any] | None:
        """JSON-able statistics of the shard `generate` last finished (e.g. a filter's acceptance per
        class), or None. The build flow stores them in the shard's record and the manifest."""
        return None

    @classmethod
    def merge_stats(cls, shard_stats: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The build's statistics from its shards' (`shard_stats`); default: none."""
        return None

    def class_names(self) -> list[str]:
        return list(self.prepared.classes) if self.prepared else []
