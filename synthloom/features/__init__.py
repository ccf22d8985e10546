"""Typed columns: what each column of a dataset holds, and how it is written, read and drawn.

Modelled on Hugging Face `datasets.features`. A generator (or labeler) declares a
`Features` mapping, column name -> `Feature`; the writer encodes whole columns at
once with it and stores two keys in every shard's Arrow schema metadata:

* `huggingface`: `{"info": {"features": {...}}}`, the JSON `datasets` reads, so plain
  `datasets.load_dataset("parquet", ...)` returns PIL images, class names and
  `Array2D` tensors without synthloom;
* `synthloom`: `{"features": {name: feature.to_json()}}`, our own record, read back
  by `Features.from_arrow_schema` (shards written before it existed are inferred
  from their Arrow types).

Reader, preview, card, Croissant, exports and evaluators dispatch on these types,
never on a column name.

Layout (as `datasets/features/`): `core` (Feature, Value, Text, ClassLabel, Arrow helpers), `image`
(Image, BoundingBoxes, the PNG codec), `arrays` (Points, Array), `schema` (Features, inference).
Everything is importable from `synthloom.features`.

Arrow layouts (chosen so that `datasets` accepts the declared feature: it keeps a
metadata feature only when its Arrow type equals the column's):

| feature | Arrow type | HF feature |
| --- | --- | --- |
| `Value(dtype)` | dtype | `Value` |
| `Text()` | string | `Value("string")` |
| `ClassLabel(names)` | int64 | `ClassLabel` |
| `Image()` | struct{bytes: binary, path: string} (PNG) | `Image` |
| `BoundingBoxes(categories)` | list<struct{bbox: fixed_size_list<float32, 4>, category: int64, score: float32}> | `List({...})` |
| `Points(width, dtype, size)` | list<list<dtype>> tagged as HF's Array2D extension | `Array2D((size, width))` |
| `Array(shape, dtype)` | shape-deep nested lists; tagged Array2D..5D when only the first dim may vary | `ArrayND` or nested `List` |

Points are written as HF's `Array2D` storage (nested variable lists) rather than
`list<fixed_size_list>`: `datasets` ignores an `Array2D` declaration on any other
layout and then reads clouds ~30x slower (77 vs 2,262 samples/s measured here, see
benchmarks/RESULTS.md). The extension is declared through Arrow field metadata, so
writing needs no `datasets` import; a process that imported `datasets` reads the
column back as its extension type, and `decode` accepts both.
"""

from .arrays import Array, Points, TensorRows
from .core import (FEATURE_TYPES, HF_KEY, SYNTHLOOM_KEY, ClassLabel, Feature, LabelRows, Rows, ScalarRows, Text,
                   Value, arrow_dtype)
from .image import BOX_TYPE, IMAGE_TYPE, BoundingBoxes, BoxRows, Image, ImageRows, decode_image, encode_png, open_image
from .schema import Features, feature_of, infer_feature, leaf_dtype

__all__ = ["Array", "BOX_TYPE", "BoundingBoxes", "BoxRows", "ClassLabel", "FEATURE_TYPES", "Feature", "Features",
           "HF_KEY", "IMAGE_TYPE", "Image", "ImageRows", "LabelRows", "Points", "Rows", "SYNTHLOOM_KEY", "ScalarRows",
           "TensorRows", "Text", "Value", "arrow_dtype", "decode_image", "encode_png", "feature_of", "infer_feature",
           "leaf_dtype", "open_image"]
