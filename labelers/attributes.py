"""The `attributes` labeler: per-sample measurements as flat float32 columns to filter and balance on.

It needs no weights. It measures with the attribute audit's own functions
(`evaluators.attributes.image_attributes`, `evaluators.cloud_features.cloud_attribute_values`), so a
column here and the audit's distribution of the same attribute are the same numbers.

Columns (`Value("float32")`, null where undefined):

* per image (the first `Image` column, or `image:`), pixels scaled to [0, 1]:
  `attr_brightness` (mean luminance), `attr_contrast` (std of luminance),
  `attr_background_r/g/b` (median colour of the border frame: the dominant background colour; a
  grayscale image gives r = g = b);
* where the dataset has a foreground: a segmentation mask (an integer 2-d `Array`, nonzero = object;
  preferred) or `BoundingBoxes` (the union of the boxes): `attr_object_area` (fraction of the image:
  the object's size), `attr_object_x`, `attr_object_y` (its centre in [0, 1] image coordinates; null
  without an object);
* per point cloud (the first `Points` column, or `points:`; its first three coordinates):
  `attr_extent_x/y/z` (bounding-box sides), `attr_centroid_x/y/z`, `attr_centroid_norm`, `attr_radius`
  (largest distance of a point from the centroid).

Columns are chosen by feature type, never by name.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import Field

from synthloom.errors import LabelerError
from synthloom.evaluators.attributes import image_attributes
from synthloom.evaluators.cloud_features import cloud_attribute_values
from synthloom.features import Array, BoundingBoxes, Features, Image, Points, Value

from .base import Labeler, LabelerParams, float_column

PREFIX = "attr_"
IMAGE_COLUMNS = ("brightness", "contrast", "background_r", "background_g", "background_b")
OBJECT_COLUMNS = ("object_area", "object_x", "object_y")
CLOUD_COLUMNS = ("extent_x", "extent_y", "extent_z", "centroid_x", "centroid_y", "centroid_z", "centroid_norm",
                 "radius")


class AttributesParams(LabelerParams):
    image: str | None = Field(default=None, description="Image column to measure (default: the first one).")
    points: str | None = Field(default=None, description="Points column to measure (default: the first one).")
    border: int | None = Field(default=None, gt=0, description="Border frame width in pixels for the "
                               "background colour (default: 5% of the shorter side, as the audit).")


def _is_mask(feature: Any) -> bool:
    return isinstance(feature, Array) and len(feature.shape) == 2 and feature.dtype[0] in "iu"


class AttributesLabeler(Labeler):
    name = "attributes"
    Params = AttributesParams
    params: AttributesParams

    # -- which columns it reads ----------------------------------------------------------------
    def _column(self, features: Features, kind: type, chosen: str | None, what: str) -> str | None:
        if chosen is None:
            return next(iter(features.columns_of(kind)), None)
        if chosen not in features:
            raise LabelerError(f"labeler attributes: {what} column '{chosen}' not found (columns: "
                               f"{', '.join(features)})")
        if not isinstance(features[chosen], kind):
            raise LabelerError(f"labeler attributes: column '{chosen}' is {features[chosen].describe()}, "
                               f"not a {kind.__name__}")
        return chosen

    def _inputs(self, features: Features) -> tuple[str | None, str | None, str | None, str | None]:
        """(image, mask, boxes, points) column names; mask and boxes only beside an image."""
        image = self._column(features, Image, self.params.image, "image")
        points = self._column(features, Points, self.params.points, "points")
        if points is not None and features[points].width < 3:
            raise LabelerError(f"labeler attributes: points column '{points}' has {features[points].width} "
                               "coordinates per point; needs 3 (x, y, z)")
        mask = next((n for n, f in features.items() if _is_mask(f)), None) if image else None
        boxes = next(iter(features.columns_of(BoundingBoxes)), None) if image else None
        return image, mask, boxes, points

    def check_inputs(self, input_features: Features) -> None:
        image, _, _, points = self._inputs(input_features)
        if image is None and points is None:
            raise LabelerError("labeler attributes: needs an Image or Points column (columns: "
                               + ", ".join(f"{n}: {f.describe()}" for n, f in input_features.items()) + ")")

    def features(self, input_features: Features) -> Features:
        image, mask, boxes, points = self._inputs(input_features)
        names = []
        if image:
            names += IMAGE_COLUMNS + (OBJECT_COLUMNS if mask or boxes else ())
        if points:
            names += CLOUD_COLUMNS
        return Features({PREFIX + n: Value("float32") for n in names})

    # -- labelling -----------------------------------------------------------------------------
    def label(self, batch: pa.Table, features: Features) -> dict[str, list]:
        image, mask, boxes, points = self._inputs(features)
        out: dict[str, list] = {}
        if image:
            out.update(self._image_columns(batch, features, image, mask, boxes))
        if points:
            out.update(self._cloud_columns(batch, features, points))
        return {PREFIX + name: values for name, values in out.items()}

    def _image_columns(self, batch, features, image, mask, boxes) -> dict[str, list]:
        images = features[image].decode(batch.column(image))
        masks = features[mask].decode(batch.column(mask)) if mask else None
        box_rows = features[boxes].decode(batch.column(boxes)) if boxes and not mask else None
        names = IMAGE_COLUMNS + (OBJECT_COLUMNS if mask or boxes else ())
        values = {name: np.full(batch.num_rows, np.nan) for name in names}
        for i in range(batch.num_rows):
            pixels = images.numpy(i)
            if pixels is None:
                continue
            foreground: dict[str, Any] = {}
            if masks is not None and masks.numpy(i) is not None:
                row_mask = masks.numpy(i)
                if row_mask.shape != pixels.shape[:2]:
                    row = batch.column("id")[i].as_py() if "id" in batch.column_names else i
                    raise LabelerError(f"labeler attributes: mask '{mask}' of row {row} has shape "
                                       f"{row_mask.shape}, its image {pixels.shape[:2]}")
                foreground["masks"] = row_mask[None] != 0
            elif box_rows is not None and box_rows.numpy(i) is not None:
                foreground["boxes"] = [box_rows.numpy(i)["boxes"]]
            # One image at a time: images of a dataset may differ in size.
            measured = image_attributes(pixels[None], value_range=(0, 255), border=self.params.border,
                                        background_colour=True, **foreground)
            values["brightness"][i] = measured["brightness"][0]
            values["contrast"][i] = measured["contrast"][0]
            gray = "background_gray" in measured
            for channel, colour in zip("rgb", ("red", "green", "blue")):
                values[f"background_{channel}"][i] = measured["background_gray" if gray else f"background_{colour}"][0]
            if foreground:
                values["object_area"][i] = measured["fg_area"][0]
                values["object_x"][i] = measured["fg_centroid_x"][0]
                values["object_y"][i] = measured["fg_centroid_y"][0]
        return {name: float_column(v) for name, v in values.items()}

    def _cloud_columns(self, batch, features, points) -> dict[str, list]:
        rows = features[points].decode(batch.column(points))
        values = {name: np.full(batch.num_rows, np.nan) for name in CLOUD_COLUMNS}
        sizes = {}
        for i in range(batch.num_rows):
            cloud = rows.numpy(i)
            if cloud is not None and len(cloud):
                sizes.setdefault(len(cloud), []).append(i)
        for size, indices in sizes.items():  # clouds of one size are measured together
            clouds = np.stack([rows.numpy(i)[:, :3] for i in indices])
            for name, measured in cloud_attribute_values(clouds).items():
                values[name][indices] = measured
        return {name: float_column(v) for name, v in values.items()}
