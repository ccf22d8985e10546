"""Typed features: encode -> Parquet shard -> decode bit-exactly, the metadata HF `datasets` reads,
and inference for shards written before typed features."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image as PILImage

from synthloom import dataset as ds
from synthloom.errors import FeatureError
from synthloom.features import (Array, BoundingBoxes, ClassLabel, Feature, Features, Image, Points, Text, Value,
                                decode_image, encode_png)

RNG = np.random.default_rng(0)


def round_trip(tmp_path, features: Features, rows: list[dict], **options):
    """Write rows through the real shard writer, read the file back, decode every column."""
    record = ds.write_shard(ds.rows_to_table(rows, features), tmp_path / "data" / "train-00000-of-00001.parquet")
    table = pq.read_table(tmp_path / record["file"])
    read = Features.from_arrow_schema(table.schema)
    assert read == features  # the synthloom metadata travels with the shard
    return read.decode_table(table, **options)


def bits(array) -> np.ndarray:
    """Exact bit patterns (NaN-safe comparison)."""
    array = np.ascontiguousarray(np.asarray(array))
    return array.view(f"u{array.dtype.itemsize}")


def test_arrays_round_trip_bit_exactly(tmp_path):
    depth = [RNG.standard_normal((7, 5)).astype(np.float32) for _ in range(3)]
    depth[1][2, 3] = np.nan
    depth[2][0, 0] = np.float32(-0.0)
    normals = [RNG.standard_normal((n, 5, 3)).astype(np.float32) for n in (7, 2, 0)]  # 0 rows keep (5, 3)
    segmentation = [RNG.integers(0, 65535, size=shape, dtype=np.uint16, endpoint=True)
                    for shape in ((3, 11), (13, 1), (1, 4))]
    features = Features({"depth": Array((7, 5), "float32"), "normals": Array((None, 5, 3), "float32"),
                         "segmentation": Array((None, None), "uint16")})
    rows = [{"depth": d, "normals": n, "segmentation": s} for d, n, s in zip(depth, normals, segmentation)]
    rows.append({"depth": None, "normals": None, "segmentation": None})
    decoded = round_trip(tmp_path, features, rows)
    for i in range(3):
        assert decoded["depth"][i].dtype == __import__("torch").float32
        assert np.array_equal(bits(decoded["depth"][i]), bits(depth[i]))
        assert np.array_equal(bits(decoded["normals"][i]), bits(normals[i]))
        seg = decoded["segmentation"].numpy(i)
        assert seg.dtype == np.uint16 and seg.shape == segmentation[i].shape
        assert np.array_equal(seg, segmentation[i])
    assert decoded["depth"][3] is None and decoded["segmentation"][3] is None
    assert features["depth"].hf_json() == {"shape": [7, 5], "dtype": "float32", "_type": "Array2D"}
    assert features["normals"].hf_json()["_type"] == "Array3D"
    assert features["segmentation"].hf_json()["_type"] == "List"  # both dims vary: nested lists


def test_points_round_trip_and_stack(tmp_path):
    clouds = [RNG.standard_normal((64, 3)).astype(np.float32) for _ in range(4)]
    colors = [RNG.integers(0, 256, (64, 3), dtype=np.uint8) for _ in range(4)]
    features = Features({"points": Points(3, "float32", size=64), "point_colors": Points(3, "uint8", size=64)})
    rows = [{"points": c, "point_colors": k if i % 2 else None} for i, (c, k) in enumerate(zip(clouds, colors))]
    all_null = round_trip(tmp_path / "null", features, [{**row, "point_colors": None} for row in rows])
    assert all(all_null["point_colors"][i] is None for i in range(4))
    decoded = round_trip(tmp_path, features, rows)
    for i in range(4):
        assert np.array_equal(bits(decoded["points"][i]), bits(clouds[i]))
        assert (decoded["point_colors"][i] is None) == (i % 2 == 0)
    assert np.array_equal(decoded["point_colors"].numpy(1), colors[1])
    assert decoded["points"].stacked().shape == (4, 64, 3)
    values, offsets = ds.fixed_list_to_numpy(pq.read_table(tmp_path / "data").column("points"))
    assert values.shape == (256, 3) and list(offsets) == [0, 64, 128, 192, 256]


def test_boxes_with_and_without_scores_and_empty_lists(tmp_path):
    feature = BoundingBoxes(categories=("cat", "dog"))
    rows = [
        {"objects": [{"bbox": [1.5, 2.0, 10.0, 4.25], "category": "dog", "score": 0.875},
                     {"bbox": [0, 0, 3, 3], "category": 0, "score": None}]},
        {"objects": []},
        {"objects": {"boxes": np.array([[5, 6, 7, 8]], np.float32), "labels": np.array([1])}},
        {"objects": None},
    ]
    decoded = round_trip(tmp_path, Features({"objects": feature}), rows)["objects"]
    first = decoded[0]
    assert first["boxes"].tolist() == [[1.5, 2.0, 10.0, 4.25], [0, 0, 3, 3]]
    assert first["labels"].tolist() == [1, 0] and str(first["labels"].dtype) == "torch.int64"
    assert first["scores"][0].item() == 0.875 and np.isnan(first["scores"][1].item())
    assert decoded[1]["boxes"].shape == (0, 4) and decoded[1]["labels"].shape == (0,)
    assert decoded[2]["labels"].tolist() == [1] and np.isnan(decoded[2]["scores"].numpy()).all()
    assert decoded[3] is None
    raw = pq.read_table(tmp_path / "data").column("objects").to_pylist()
    assert raw[0][1]["score"] is None and raw[1] == [] and raw[3] is None  # null score stays null on disk


def test_images_labels_text_and_values_round_trip(tmp_path):
    gray = RNG.integers(0, 256, (9, 13), dtype=np.uint8)
    rgb = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    rgba = RNG.integers(0, 256, (4, 6, 4), dtype=np.uint8)
    pil = PILImage.fromarray(rgb)
    features = Features({"image": Image(), "label": ClassLabel(["a", "b", "c"]), "caption": Text(),
                         "score": Value("float32"), "flag": Value("bool")})
    rows = [{"image": gray, "label": "c", "caption": "gray", "score": 0.1, "flag": True},
            {"image": rgb, "label": 1, "caption": None, "score": 2.5, "flag": False},
            {"image": rgba, "label": 0, "caption": "rgba", "score": -1.0, "flag": True},
            {"image": pil, "label": None, "caption": "pil", "score": None, "flag": None}]
    decoded = round_trip(tmp_path, features, rows)
    assert decoded["image"][0].shape == (1, 9, 13) and np.array_equal(decoded["image"][0][0].numpy(), gray)
    assert np.array_equal(decoded["image"][1].permute(1, 2, 0).numpy(), rgb)
    assert np.array_equal(decoded["image"][2].permute(1, 2, 0).numpy(), rgba)
    assert np.array_equal(decoded["image"][3].permute(1, 2, 0).numpy(), rgb)
    as_float = round_trip(tmp_path / "f", features, rows, image_format="float")["image"][1]
    assert as_float.dtype.is_floating_point and np.allclose(as_float.permute(1, 2, 0).numpy() * 255, rgb, atol=1e-4)
    assert [int(decoded["label"][i]) for i in range(4)] == [2, 1, 0, -1]
    assert [decoded["caption"][i] for i in range(4)] == ["gray", None, "rgba", "pil"]
    assert decoded["score"][1] == 2.5 and decoded["flag"][2] is True and decoded["flag"][3] is None


def test_bad_values_name_the_column(tmp_path):
    features = Features({"segmentation": Array((None, None), "uint16")})
    with pytest.raises(FeatureError, match="column 'segmentation'.*do not fit uint16"):
        features.encode_table([{"segmentation": np.array([[70000]])}])
    with pytest.raises(FeatureError, match="column 'segmentation'.*without rounding"):
        features.encode_table([{"segmentation": np.array([[0.5]])}])
    with pytest.raises(FeatureError, match=r"column 'p'.*shape \(10, 3\), expected \(64, 3\)"):
        Features({"p": Points(3, size=64)}).encode_table([{"p": np.zeros((10, 3))}])
    with pytest.raises(FeatureError, match="column 'label'.*unknown class 'dog'"):
        Features({"label": ClassLabel(["cat"])}).encode_table([{"label": "dog"}])
    with pytest.raises(FeatureError, match="column 'image'.*must be uint8"):
        Features({"image": Image()}).encode_table([{"image": np.zeros((4, 4), np.float32)}])
    with pytest.raises(FeatureError, match="column 'image'.*not a readable image"):
        Features({"image": Image()}).encode_table([{"image": b"not a png"}])
    with pytest.raises(FeatureError, match="column 'o'.*width, height >= 0"):
        Features({"o": BoundingBoxes()}).encode_table([{"o": [{"bbox": [0, 0, -1, 2], "category": 0}]}])
    with pytest.raises(FeatureError, match="unknown dtype 'float'"):
        Value("float")
    with pytest.raises(FeatureError, match="reserved column"):
        ds.dataset_schema(Features({"id": Value("string")}))


def test_json_records_round_trip_and_unknown_types_are_named():
    for feature in (Value("int64"), Text(), ClassLabel(["x", "y"]), Image(), BoundingBoxes(["x"]),
                    Points(4, "float64", size=10), Points(), Array((None, 3), "uint8"), Array((2, 3, 4), "int32")):
        record = json.loads(json.dumps(feature.to_json()))
        assert Feature.from_json(record) == feature
    with pytest.raises(FeatureError, match="unknown feature type 'Audio'"):
        Feature.from_json({"type": "Audio"})


def test_shards_without_feature_records_are_inferred(tmp_path):
    """A shard as written before typed features: list<fixed_size_list> points, a bare int64 label."""
    points = pa.ListArray.from_arrays(pa.array([0, 2, 4], pa.int32()), pa.FixedSizeListArray.from_arrays(
        pa.array(np.arange(12, dtype=np.float32)), 3))
    image = pa.StructArray.from_arrays([pa.array([encode_png(np.zeros((2, 2), np.uint8))] * 2, pa.binary()),
                                        pa.array([None, None], pa.string())], names=["bytes", "path"])
    table = pa.table({"id": ["a", "b"], "label": pa.array([1, 0]), "points": points, "image": image})
    pq.write_table(table, tmp_path / "old.parquet")
    schema = pq.read_schema(tmp_path / "old.parquet")
    features = Features.from_arrow_schema(schema, class_names=["box", "ball"])
    assert features == Features({"id": Value("string"), "label": ClassLabel(["box", "ball"]),
                                 "points": Points(3, "float32"), "image": Image()})
    decoded = features.decode_table(pq.read_table(tmp_path / "old.parquet"))
    assert decoded["points"][1].tolist() == [[6, 7, 8], [9, 10, 11]]
    assert ds.schema_text(schema) == schema.remove_metadata().to_string(show_field_metadata=False)


def test_metadata_lying_about_a_column_is_refused():
    features = Features({"label": ClassLabel(["a"])})
    schema = pa.schema([pa.field("label", pa.string())], metadata=features.hf_metadata())
    with pytest.raises(FeatureError, match="column 'label': stored as string"):
        Features.from_arrow_schema(schema)


def test_decode_image_is_the_one_decoder():
    def png(array, mode=None):
        buffer = io.BytesIO()
        PILImage.fromarray(array, mode=mode).save(buffer, format="PNG")
        return buffer.getvalue()

    gray = RNG.integers(0, 256, (3, 4), dtype=np.uint8)
    assert decode_image(png(gray)).shape == (3, 4, 1)
    assert decode_image(png(gray), mode="RGB").shape == (3, 4, 3)
    wide = np.array([[0, 257, 65535]], dtype=np.uint16)
    assert decode_image(png(wide)).tolist() == [[[0], [1], [255]]]  # scaled, not clipped at 255
    palette = PILImage.fromarray(gray).convert("P")
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG")
    assert decode_image(buffer.getvalue()).shape == (3, 4, 3)
    with pytest.raises(FeatureError, match="not a readable image"):
        decode_image(b"\x89PNG broken")


def test_verify_catches_a_shard_whose_features_differ(tmp_path):
    """Same Arrow types, other class names: verify compares the feature records too."""
    rows = [{"label": 0}, {"label": 1}]
    version = tmp_path / "v"
    good = ds.write_shard(ds.rows_to_table(rows, Features({"label": ClassLabel(["a", "b"])})),
                          version / "data" / "train-00000-of-00001.parquet")
    schema = ds.schema_text(pq.read_schema(version / good["file"]))
    ds.write_json_atomic(version / "manifest.json", {"shards": [{**good, "split": "train"}], "schema": schema})
    assert ds.verify(version)["ok"]
    bad = ds.write_shard(ds.rows_to_table(rows, Features({"label": ClassLabel(["b", "a"])})),
                         version / "data" / "train-00000-of-00001.parquet")
    ds.write_json_atomic(version / "manifest.json", {"shards": [{**bad, "split": "train"}], "schema": schema})
    with pytest.raises(ds.DatasetError, match="schema differs"):
        ds.verify(version)


def test_hf_datasets_reads_every_feature_without_synthloom(tmp_path):
    """What `datasets` makes of a shard, with no synthloom code on the reading side."""
    import datasets

    features = Features({"image": Image(), "label": ClassLabel(["red", "green"]),
                         "objects": BoundingBoxes(["red", "green"]), "points": Points(3, "float32", size=8),
                         "depth": Array((4, 6), "float32"), "segmentation": Array((None, None), "uint16"),
                         "caption": Text(), "seed": Value("int64")})
    rows = [{"image": RNG.integers(0, 256, (4, 6, 3), dtype=np.uint8), "label": i % 2,
             "objects": [{"bbox": [1, 1, 2, 2], "category": i % 2, "score": None}] * i,
             "points": RNG.standard_normal((8, 3)).astype(np.float32),
             "depth": RNG.random((4, 6)).astype(np.float32),
             "segmentation": RNG.integers(0, 9, (4, 6), dtype=np.uint16), "caption": f"row {i}", "seed": i}
            for i in range(3)]
    ds.write_shard(ds.rows_to_table(rows, features), tmp_path / "data" / "train-00000-of-00001.parquet")
    hf = datasets.load_dataset("parquet", data_dir=str(tmp_path / "data"), split="train",
                               cache_dir=str(tmp_path / "hf"))
    assert isinstance(hf.features["image"], datasets.Image)
    assert hf.features["label"].names == ["red", "green"]
    assert hf.features["points"] == datasets.Array2D(shape=(8, 3), dtype="float32")
    assert hf.features["depth"] == datasets.Array2D(shape=(4, 6), dtype="float32")
    assert hf.features["objects"].feature["category"].names == ["red", "green"]
    first = hf[1]
    assert isinstance(first["image"], PILImage.Image) and np.array_equal(np.asarray(first["image"]), rows[1]["image"])
    assert first["objects"] == [{"bbox": [1.0, 1.0, 2.0, 2.0], "category": 1, "score": None}]
    torch_rows = hf.with_format("torch")
    assert torch_rows[2]["points"].shape == (8, 3)
    assert np.array_equal(torch_rows[2]["points"].numpy(), rows[2]["points"])
    assert np.array_equal(torch_rows[0]["segmentation"].numpy(), rows[0]["segmentation"])
    # A process that imported `datasets` reads the tagged columns back as HF's extension type.
    table = pq.read_table(tmp_path / "data")
    assert isinstance(table.schema.field("points").type, pa.ExtensionType)
    assert np.array_equal(Features.from_arrow_schema(table.schema).decode_table(table)["points"].numpy(2),
                          rows[2]["points"])
    assert ds.schema_text(table.schema) == ds.schema_text(ds.rows_to_table(rows, features).schema)


# -- an image dataset built through the real flow, read without and with synthloom ---------------
@pytest.fixture(scope="module")
def squares(tmp_path_factory):
    """The test generator `squares` (tests/squares_generator.py), registered in-process, built by
    `build_dataset` from a recipe."""
    from conftest import write_recipe
    from synthloom.flows.build import build_dataset
    from synthloom.recipe import load_recipe
    from synthloom.registry import REGISTER_ENV, register

    folder = tmp_path_factory.mktemp("squares")
    path = write_recipe(folder, name="squares", generator={"kind": "squares", "params": {}},
                        count={"train": 16, "test": 8}, shard_size=8)
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(REGISTER_ENV, raising=False)
        register("generators", "squares", "squares_generator:SquaresGenerator")
        result = build_dataset(str(path))
    assert result["status"] == "built" and result["rows"] == 24
    return load_recipe(path).version_dir()


def test_image_build_records_features_everywhere(squares):
    manifest = json.loads((squares / "manifest.json").read_text())
    assert manifest["features"]["image"] == {"type": "Image"}
    assert manifest["features"]["label"] == {"type": "ClassLabel", "names": ["red", "green", "blue"]}
    assert ds.verify(squares)["rows"] == 24
    card = (squares / "README.md").read_text()
    assert "## Features" in card and "| `objects` | BoundingBoxes(COCO xywh; categories: red, green, blue) |" in card
    assert "| `depth` | Array(24 x 20 float32) | Array2D(shape=(24, 20), dtype=float32) |" in card
    with PILImage.open(squares / "preview.png") as preview:
        # The first shard's 8 rows on a 4-column grid of 160-px tiles with captions, 6 px apart.
        assert preview.size == (4 * 160 + 3 * 6, 2 * (160 + 16))  # 4 x 2 tiles, 6 px gaps, captions
        pixels = np.asarray(preview.convert("RGB"))
    assert ((pixels[..., 0] > 200) & (pixels[..., 1] < 80)).any()  # red squares
    assert ((pixels[..., 0] == 255) & (pixels[..., 1] == 220) & (pixels[..., 2] == 0)).any()  # box outlines
    from synthloom.summary import summarize

    summary = summarize(squares)
    assert summary["labels"]["train"] == {"blue": 5, "green": 5, "red": 6}
    assert ("image", "Image(PNG)") in summary["columns"]
    from synthloom.export import export_ply

    with pytest.raises(ds.DatasetError, match="no Points column"):
        export_ply(squares, squares.parent / "ply")


def test_hf_datasets_reads_the_built_images_without_synthloom(squares):
    import datasets

    hf = datasets.load_dataset("parquet", data_dir=str(squares / "data"), cache_dir=str(squares.parent / ".hf"))
    train = hf["train"]
    assert train.features["label"].names == ["red", "green", "blue"]
    assert isinstance(train[0]["image"], PILImage.Image) and train[0]["image"].size == (20, 24)
    assert train.features["label"].int2str(train[4]["label"]) == "green"
    objects = train[3]["objects"]  # sample 3 has 3 squares
    assert len(objects) == 3 and all(o["score"] is None and o["category"] == 0 for o in objects)
    torch_rows = train.with_format("torch")
    assert torch_rows[1]["depth"].shape == (24, 20) and torch_rows[1]["segmentation"].shape == (24, 20)
    assert tuple(torch_rows[2]["image"].shape) == (3, 24, 20)  # datasets 5 formats images CHW for torch


def test_synthloom_load_gives_uint8_and_float_images_and_collates_boxes(squares):
    import torch

    import synthloom

    train = synthloom.load(squares, split="train")
    item = train[3]
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, 24, 20)
    assert item["objects"]["boxes"].shape == (3, 4) and item["objects"]["labels"].tolist() == [0, 0, 0]
    assert int(item["label"]) == 0 and train.class_names == ["red", "green", "blue"]
    as_float = synthloom.load(squares, split="train", image_format="float")[3]["image"]
    assert as_float.dtype == torch.float32 and torch.allclose(as_float * 255, item["image"].float())
    # A red square's pixels are the class colour in the decoded tensor, inside its box.
    x, y, w, h = item["objects"]["boxes"][0].int().tolist()
    assert item["image"][:, y + h // 2, x + w // 2].tolist() == [220, 40, 40]
    seg = item["segmentation"]
    assert seg.dtype == torch.uint16 and seg.shape == (24, 20) and int(seg[y + h // 2, x + w // 2]) >= 1
    loader = torch.utils.data.DataLoader(train, batch_size=4, collate_fn=synthloom.collate_fn)
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 3, 24, 20) and batch["label"].tolist() == [0, 1, 2, 0]
    assert batch["depth"].shape == (4, 24, 20) and batch["seed"].dtype == torch.int64
    assert [len(target["boxes"]) for target in batch["objects"]] == [0, 1, 2, 3]  # kept as a list
    assert batch["caption"] == ["0 red squares", "1 green squares", "2 blue squares", "3 red squares"]


def test_croissant_describes_images_boxes_and_arrays(squares):
    from test_build import croissant_records

    loaded = croissant_records(squares / "croissant.json")
    records = loaded["records"]
    assert len(records) == 24
    first = next(r for r in records if r["default/caption"] == "3 red squares")
    assert first["default/image"] == {"image": [20, 24, "RGB"]}
    assert first["default/depth"] == {"shape": [24, 20]}
    assert first["default/label"] == 0
    boxes = first["default/objects"]
    assert len(boxes) == 3 and all(b["default/objects/category"] == 0 for b in boxes)
    assert all(b["default/objects/bbox"] == {"shape": [4]} for b in boxes)


def test_pointcloud_generator_declares_its_features_after_prepare(tmp_path):
    from synthloom.errors import GeneratorError
    from synthloom.generators.base import BuildContext
    from synthloom.generators.pointcloud import PointCloudGenerator

    generator = PointCloudGenerator({"num_points": 32, "shapes": ["box", "torus"]})
    with pytest.raises(GeneratorError, match="features\\(\\) needs the class names, known only after prepare"):
        generator.features()
    generator.prepare(BuildContext(cache_dir=tmp_path))
    features = generator.features()
    assert features["label"] == ClassLabel(["box", "torus"])
    assert features["points"] == Points(3, "float32", size=32) and features["point_colors"] == Points(3, "uint8", 32)
    assert features["points"].hf_json() == {"shape": [32, 3], "dtype": "float32", "_type": "Array2D"}


@pytest.mark.parametrize("cut, expected", [(None, "no image format PIL knows (they start b'not a pn')"),
                                           (40, "a corrupt or truncated PNG (40 bytes)")])
def test_an_unreadable_image_is_described_in_words_not_by_a_buffer_object(cut, expected):
    png = encode_png(np.zeros((8, 8, 3), np.uint8))
    data = b"not a png, just text" if cut is None else png[:cut]
    with pytest.raises(FeatureError) as error:
        decode_image(data)
    assert expected in str(error.value)
    assert "BytesIO" not in str(error.value) and "0x" not in str(error.value)
