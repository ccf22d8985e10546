"""`Features`: a dataset's columns (name -> Feature), read from and written into Arrow schema metadata, and
the inference of features for shards written before typed features."""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

import pyarrow as pa

from ..errors import FeatureError
from .core import ClassLabel, Feature, HF_KEY, Rows, SYNTHLOOM_KEY, Value, _ARROW_TO_DTYPE, _EXTENSION_METADATA, _NUMERIC
from .image import BOX_TYPE, BoundingBoxes, IMAGE_TYPE, Image
from .arrays import Array, Points


# -- a dataset's columns -----------------------------------------------------------------------
class Features(dict):
    """Column name -> Feature, in column order."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name, feature in self.items():
            if not isinstance(feature, Feature):
                raise FeatureError(f"column '{name}': {feature!r} is not a synthloom Feature")

    def __setitem__(self, name: str, feature: Feature) -> None:
        if not isinstance(feature, Feature):
            raise FeatureError(f"column '{name}': {feature!r} is not a synthloom Feature")
        super().__setitem__(name, feature)

    def columns_of(self, kind: type[Feature] | tuple[type[Feature], ...]) -> list[str]:
        """Names of the columns whose feature is a `kind`, in column order."""
        return [name for name, feature in self.items() if isinstance(feature, kind)]

    def to_json(self) -> dict[str, Any]:
        return {name: feature.to_json() for name, feature in self.items()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Features":
        return cls({name: Feature.from_json(record) for name, record in data.items()})

    def hf_metadata(self) -> dict[bytes, bytes]:
        hf = {"info": {"features": {name: feature.hf_json() for name, feature in self.items()}}}
        return {HF_KEY: json.dumps(hf).encode(), SYNTHLOOM_KEY: json.dumps({"features": self.to_json()}).encode()}

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([feature.arrow_field(name) for name, feature in self.items()], metadata=self.hf_metadata())

    def encode_table(self, rows: Sequence[Mapping[str, Any]]) -> pa.Table:
        """A table of `rows` (dicts; a missing key is a null), the metadata on its schema."""
        columns = []
        for name, feature in self.items():
            try:
                columns.append(feature.encode([row.get(name) for row in rows]))
            except FeatureError as error:
                raise FeatureError(f"column '{name}': {error}") from None
        return pa.Table.from_arrays(columns, schema=self.arrow_schema())

    def decode_table(self, table: pa.Table, **options) -> dict[str, Rows]:
        return {name: self[name].decode(table.column(name), **options) for name in table.column_names}

    @classmethod
    def from_arrow_schema(cls, schema: pa.Schema, class_names: Sequence[str] | None = None) -> "Features":
        """The features a shard's schema declares; columns without a record are inferred from their
        Arrow types (shards written before typed features), `label` as a ClassLabel of `class_names`."""
        metadata = schema.metadata or {}
        stored: dict[str, Any] = {}
        if SYNTHLOOM_KEY in metadata:
            try:
                stored = json.loads(metadata[SYNTHLOOM_KEY])["features"]
            except (ValueError, KeyError, TypeError) as error:
                raise FeatureError(f"unreadable synthloom features metadata ({error})") from None
        result = cls()
        for field in schema:
            if field.name in stored:
                feature = Feature.from_json(stored[field.name])
                if not _storage_type(field.type).equals(feature.arrow_type()):
                    raise FeatureError(f"column '{field.name}': stored as {field.type}, but its metadata declares "
                                       f"{feature.describe()} ({feature.arrow_type()})")
                result[field.name] = feature
            else:
                result[field.name] = infer_feature(field, class_names)
        return result


def _storage_type(arrow: pa.DataType) -> pa.DataType:
    return arrow.storage_type if isinstance(arrow, pa.ExtensionType) else arrow


def _nested_depth(arrow: pa.DataType) -> tuple[int, pa.DataType]:
    depth = 0
    while pa.types.is_list(arrow) or pa.types.is_large_list(arrow) or pa.types.is_fixed_size_list(arrow):
        depth, arrow = depth + 1, arrow.value_type
    return depth, arrow


def leaf_dtype(arrow: pa.DataType) -> str:
    """The dtype name of the values inside (possibly nested) lists of `arrow`."""
    leaf = _nested_depth(_storage_type(arrow))[1]
    if leaf not in _ARROW_TO_DTYPE:
        raise FeatureError(f"no dtype for Arrow type {leaf}")
    return _ARROW_TO_DTYPE[leaf]


def infer_feature(field: pa.Field, class_names: Sequence[str] | None = None) -> Feature:
    """The feature of a column that carries no synthloom record, from its Arrow type."""
    arrow = field.type
    extension = None
    if isinstance(arrow, pa.ExtensionType) and hasattr(arrow, "shape") and hasattr(arrow, "value_type"):
        extension = (tuple(arrow.shape), arrow.value_type)  # HF's ArrayND, `datasets` imported
        arrow = arrow.storage_type
    elif field.metadata and _EXTENSION_METADATA in field.metadata:
        shape, dtype = json.loads(field.metadata[_EXTENSION_METADATA])  # the same, read without `datasets`
        extension = (tuple(shape), dtype)
    if extension is not None and extension[1] in _NUMERIC:
        return Array(extension[0], extension[1])
    if arrow.equals(IMAGE_TYPE):
        return Image()
    if arrow.equals(pa.list_(BOX_TYPE)):
        return BoundingBoxes()
    if arrow in _ARROW_TO_DTYPE:
        if field.name == "label" and class_names and pa.types.is_integer(arrow):
            return ClassLabel(tuple(class_names))
        return Value(_ARROW_TO_DTYPE[arrow])
    depth, leaf = _nested_depth(arrow)
    if depth and leaf in _ARROW_TO_DTYPE and _ARROW_TO_DTYPE[leaf] in _NUMERIC:
        # list<fixed_size_list<T, k>>: the point columns of datasets written before typed features.
        if depth == 2 and pa.types.is_list(arrow) and pa.types.is_fixed_size_list(arrow.value_type):
            return Points(arrow.value_type.list_size, _ARROW_TO_DTYPE[leaf])
        return Array((None,) * depth, _ARROW_TO_DTYPE[leaf])
    raise FeatureError(f"column '{field.name}': no synthloom feature for Arrow type {field.type}")


def feature_of(features: Mapping[str, Feature], kinds: type[Feature] | tuple[type[Feature], ...]) -> str | None:
    """The first column whose feature is one of `kinds`, or None."""
    return next((name for name, feature in features.items() if isinstance(feature, kinds)), None)
