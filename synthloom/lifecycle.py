"""The records every part's lifecycle shares (generators, labelers, the build flow): the shard a task
makes, the build context a part prepares in, the assets it used or produced, and the input fingerprint
that keys every cache. Core, so that `synthloom/` imports nothing from generators, labelers or flows.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .models import ModelStore


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
    models: ModelStore = field(default_factory=ModelStore)
    device: str = "cpu"

    def resolve_path(self, value: str) -> Path:
        """A user path from the recipe: absolute, relative to the working directory if it exists there,
        else relative to the recipe's folder."""
        path = Path(value).expanduser()
        if path.is_absolute() or path.exists():
            return path
        return self.recipe_dir / path


def with_model_refs(prepared: "PreparedPart", store: ModelStore) -> "PreparedPart":
    """`prepared` naming the remote model-store entries `store` handed out since the last call (the
    entries that part's `prepare` used), so that workers fetch them (models.localize)."""
    refs = [ModelRef(**ref) for ref in store.refs()]
    store.handed_out.clear()
    return prepared.model_copy(update={"models": refs}) if refs else prepared


class Asset(BaseModel):
    """A file (or procedural source) a generator used or produced, for provenance."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    sha256: str
    role: str = Field(default="input", description="input | reference | base-model | weights | ...")
    label: str | None = Field(default=None, description="The class this input belongs to, if any.")


class SkippedInput(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    reason: str


def fingerprint(value: Any) -> str:
    """sha256 of `value` as canonical JSON (sorted keys, no spaces, unknown types as str): the one hash
    behind every cache key (a part's inputs, a chain of labelers)."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def input_fingerprint(kind: str, params: BaseModel, code_version: str, assets: list[Asset],
                      **extra: Any) -> str:
    """The fingerprint of a part's inputs: kind, validated params, code version and input asset hashes."""
    return fingerprint({"generator": kind, "params": params.model_dump(mode="json"), "code": code_version,
                        "assets": [[a.path, a.sha256, a.role, a.label] for a in assets], **extra})


class ModelRef(BaseModel):
    """A model-store entry on a remote store that a prepared part uses (models.StoredModel.ref): a worker
    fetches it into its own cache and reads its copy instead of the driver's `path` (models.localize)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    store: str = Field(description="The store's URL.")
    key: str = Field(description="The entry's key (sha256 of its inputs).")
    sha256: str = Field(description="The entry's content hash (its files and their sha256s).")
    path: str = Field(description="The driver's copy of the entry, under which paths in the record point.")


class PreparedPart(BaseModel):
    """What a part's `prepare` returns, the fields every part shares: what its work needs and what
    provenance records. `generators.base.Prepared` and `labelers.base.Prepared` add their own.

    `input_fingerprint` hashes what determines the part's output (params, input and base-model hashes,
    code version); shard cache keys use it rather than output weight hashes, because GPU training is not
    bit-reproducible and a retrained model must not invalidate nothing-changed shards.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_fingerprint: str
    assets: list[Asset] = Field(default_factory=list)
    outputs: list[Asset] = Field(default_factory=list, description="What prepare produced (trained weights).")
    info: dict[str, Any] = Field(default_factory=dict, description="Part-specific JSON (training summary).")
    models: list[ModelRef] = Field(default_factory=list, description="Remote model-store entries it uses; set "
                                   "by the build flow from the store's hand-outs, not by the part.")
