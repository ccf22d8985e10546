"""An evaluator from outside synthloom, as a user's package would ship it (registered by the tests through
`synthloom.registry.register`, the same lookup entry points go through)."""

from __future__ import annotations

from pydantic import Field

from synthloom.evaluators.base import Evaluator, EvaluatorParams, EvaluatorResult, Gate
from synthloom.features import Image


class BrightnessParams(EvaluatorParams):
    channel: int | None = Field(default=None, ge=0, description="one channel only (default: all)")


class MeanBrightness(Evaluator):
    """Mean pixel value of the synthetic images, streamed: `update` sees every row once."""

    name = "brightness"
    Params = BrightnessParams
    modalities = ("images",)
    needs_reference = False
    default = False
    gates = {"brightness_min": Gate("mean_brightness", ">=")}
    metrics = {"mean_brightness": "mean pixel value of the synthetic images in [0, 1]"}

    def reset(self):
        self.total, self.values, self.rows, self.batches = 0.0, 0, 0, 0

    def update(self, batch, data):
        column = data.column_of(Image)  # found by feature type, whatever the column is called
        images = data.decode_images(batch.select([column]))
        if self.params.channel is not None:
            images = images[:, self.params.channel]
        self.total += float(images.sum())
        self.values += images.numel()
        self.rows += batch.num_rows
        self.batches += 1

    def compute(self, data):
        return EvaluatorResult({"mean_brightness": self.total / self.values},
                               {"rows": self.rows, "batches": self.batches, "column": data.column_of(Image)})
