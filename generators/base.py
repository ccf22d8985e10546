"""What every generator implements, and the small records the build flow hands it.

A generator is constructed from its validated params, `prepare(ctx)` loads or
trains what it needs (returning a small, JSON-able record of what it used, for
provenance), and `generate(shard)` yields one row dict per sample, deterministic
given the shard's sample seeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from synthloom.errors import GeneratorError
from synthloom.features import Features


@dataclass(frozen=True)
class ShardSpec:
    """One Parquet shard: which split, which global sample indices, which seeds."""

    split: str
    index: int
    num_shards: int
    start: int  # index of the shard's first sample within its split
    size: int
    root_seed: int

    @property
    def filename(self) -> str:
        # The Hugging Face naming convention, so `datasets` maps files to splits.
        return f"{self.split}-{self.index:05d}-of-{self.num_shards:05d}.parquet"

    def sample_seed(self, offset: int) -> int:
        """A 63-bit seed for one sample, independent of shard size and order."""
        sample_index = self.start + offset
        split_key = int.from_bytes(self.split.encode()[:8].ljust(8, b"\0"), "little")
        seq = np.random.SeedSequence([self.root_seed, split_key, sample_index])
        return int(seq.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


@dataclass
class BuildContext:
    """What a generator may use while preparing: where to cache, what the recipe says."""

    cache_dir: Path
    on_error: str = "fail"
    reference: str | None = None
    recipe_dir: Path = field(default_factory=Path.cwd)


class GeneratorParams(BaseModel):
    """Base for each generator's params: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class Generator:
    """Base class. Subclasses set `name`, `Params`, `features` and implement the two steps."""

    name: ClassVar[str]
    Params: ClassVar[type[GeneratorParams]]

    def __init__(self, params: dict[str, Any] | GeneratorParams):
        if isinstance(params, GeneratorParams):
            self.params = params
        else:
            try:
                self.params = self.Params.model_validate(params)
            except ValidationError as error:
                problems = []
                for item in error.errors():
                    where = ".".join(str(p) for p in item["loc"])
                    if item["type"] == "extra_forbidden":
                        problems.append(f"unknown generator param '{where}'")
                    else:
                        problems.append(f"generator param '{where}': {item['msg']} (got {item.get('input')!r})")
                raise GeneratorError(f"{self.name}: " + "; ".join(problems)) from None
        self.prepared: dict[str, Any] | None = None

    def features(self) -> Features:
        """The generator's own typed columns (the writer adds id/split/provenance). May need
        `prepare` to have run (class names come from the assets)."""
        raise NotImplementedError

    def prepare(self, ctx: BuildContext) -> dict[str, Any]:
        """Load/train/cache what generation needs; return a JSON-able provenance record."""
        raise NotImplementedError

    def generate(self, shard: ShardSpec) -> Iterable[dict[str, Any]]:
        """Yield one row per sample of the shard, in order."""
        raise NotImplementedError

    def class_names(self) -> list[str]:
        return []
