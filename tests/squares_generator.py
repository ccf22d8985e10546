"""A tiny image generator for the tests: coloured squares on dark noise, with a class label, one box
per square, a caption, a depth map and a segmentation mask. It goes through the real build flow,
so the tests cover the generator -> features -> writer -> readers path for images."""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from synthloom.features import Array, BoundingBoxes, ClassLabel, Features, Image, Text, Value
from synthloom.generators.base import BuildContext, Generator, GeneratorParams, Prepared, ShardSpec, \
    input_fingerprint

COLORS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 230)}


class SquaresParams(GeneratorParams):
    height: int = 24
    width: int = 20
    classes: list[str] = list(COLORS)
    max_objects: int = 3


class SquaresGenerator(Generator):
    name = "squares"
    Params = SquaresParams
    params: SquaresParams

    def prepare(self, ctx: BuildContext) -> Prepared:
        self.prepared = Prepared(generator=self.name, classes=list(self.params.classes),
                                 input_fingerprint=input_fingerprint(self.name, self.params, self.code_version, []))
        return self.prepared

    def features(self) -> Features:
        classes = self.prepared.classes
        return Features({"image": Image(), "label": ClassLabel(classes), "objects": BoundingBoxes(classes),
                         "caption": Text(), "depth": Array((self.params.height, self.params.width), "float32"),
                         "segmentation": Array((None, None), "uint16"), "seed": Value("int64")})

    def generate(self, shard: ShardSpec) -> Iterable[dict[str, Any]]:
        classes, h, w = self.prepared.classes, self.params.height, self.params.width
        for offset in range(shard.size):
            index = shard.start + offset
            seed = shard.sample_seed(offset)
            rng = np.random.default_rng(seed)
            label = index % len(classes)
            image = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
            segmentation = np.zeros((h, w), dtype=np.uint16)
            objects = []
            count = index % (self.params.max_objects + 1)  # 0..max boxes: batches see different counts
            for k in range(count):
                side = int(rng.integers(3, min(h, w) // 2))
                x, y = int(rng.integers(0, w - side)), int(rng.integers(0, h - side))
                image[y:y + side, x:x + side] = COLORS[classes[label]]
                segmentation[y:y + side, x:x + side] = k + 1
                objects.append({"bbox": [x, y, side, side], "category": label, "score": None})
            depth = (np.linspace(1.0, 2.0, h, dtype=np.float32)[:, None] + rng.random((h, w), dtype=np.float32))
            yield {"image": image, "label": label, "objects": objects, "depth": depth, "segmentation": segmentation,
                   "caption": f"{count} {classes[label]} squares", "seed": seed}
