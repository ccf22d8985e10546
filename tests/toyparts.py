"""A small image generator and a small labeler for testing labelers as a flow step.

`ToyImageGenerator` draws one filled disc per image on a plain background, with its tight bounding
box and (optionally) its segmentation mask: the ground truth the `attributes` labeler's object size
and position must match. `ScoreLabeler` labels the toy generator's rows (score = value x scale) and
can leave rows blank, to test what a labeler that finds nothing does. Both log lifecycle events like
tests/toygen.py, so tests can count loads, generated shards and labelled batches.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import pyarrow as pa
from pydantic import Field

from synthloom.errors import LabelerError
from synthloom.features import Array, BoundingBoxes, Features, Image, Value
from synthloom.generators.base import BuildContext, Generator, GeneratorParams, Prepared, ShardSpec, \
    input_fingerprint
from synthloom.labelers.base import Labeler, LabelerParams
from toygen import log_event


class ToyImageParams(GeneratorParams):
    events: str | None = None
    size: int = Field(default=32, ge=16)
    mask: bool = False


class ToyImageGenerator(Generator):
    name = "toy-images"
    Params = ToyImageParams
    params: ToyImageParams

    def features(self) -> Features:
        columns = {"picture": Image(), "objects": BoundingBoxes(categories=("disc",))}
        if self.params.mask:
            columns["segmentation"] = Array((self.params.size, self.params.size), "uint8")
        return Features({**columns, "seed": Value("int64")})

    def prepare(self, ctx: BuildContext) -> Prepared:
        return Prepared(generator=self.name,
                        input_fingerprint=input_fingerprint(self.name, self.params.model_copy(update={"events": None}),
                                                            self.code_version, []))

    def generate(self, shard: ShardSpec) -> Iterable[dict[str, Any]]:
        if self.params.events:
            log_event(self.params.events, "start", shard=f"{shard.split}-{shard.index}")
        size = self.params.size
        for offset in range(shard.size):
            seed = shard.sample_seed(offset)
            rng = np.random.default_rng(seed)
            background = rng.integers(0, 256, 3)
            colour = (background + rng.integers(64, 192, 3)) % 256  # always differs from the background
            radius = int(rng.integers(2, size // 4))
            # Keep the disc off the border frame the background colour is measured on.
            cx, cy = (int(rng.integers(radius + 3, size - radius - 3)) for _ in range(2))
            rows, cols = np.mgrid[:size, :size]
            disc = (rows - cy) ** 2 + (cols - cx) ** 2 <= radius ** 2
            picture = np.empty((size, size, 3), np.uint8)
            picture[:] = background
            picture[disc] = colour
            ys, xs = np.nonzero(disc)
            box = [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            row = {"picture": picture, "objects": [{"bbox": box, "category": "disc"}], "seed": seed}
            if self.params.mask:
                row["segmentation"] = disc.astype(np.uint8)
            yield row


class ScoreParams(LabelerParams):
    events: str
    scale: float = 1.0
    blank_from: int | None = Field(default=None, description="Rows with sample index >= this get no score.")


class ScoreLabeler(Labeler):
    """score = value x scale, for the rows of tests/toygen.py's generator."""

    name = "toy-score"
    Params = ScoreParams
    params: ScoreParams
    batch_size = 4

    def _value_column(self, features: Features) -> str | None:
        return next((n for n, f in features.items() if isinstance(f, Value) and f.dtype.startswith("float")), None)

    def check_inputs(self, input_features: Features) -> None:
        if self._value_column(input_features) is None:
            raise LabelerError("labeler toy-score: needs a float Value column")

    def features(self, input_features: Features) -> Features:
        return Features({"score": Value("float64")})

    def load(self, prepared, device: str = "cpu") -> None:
        super().load(prepared, device)
        log_event(self.params.events, "label-load")

    def label(self, batch: pa.Table, features: Features) -> dict[str, list]:
        ids = batch.column("id").to_pylist()
        log_event(self.params.events, "label", first=ids[0], rows=len(ids))
        values = batch.column(self._value_column(features)).to_pylist()
        blank = self.params.blank_from
        return {"score": [None if blank is not None and int(i.rsplit("-", 1)[1]) >= blank else v * self.params.scale
                          for i, v in zip(ids, values)]}
