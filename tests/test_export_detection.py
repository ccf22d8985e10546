"""`synthloom export --format coco|yolo|imagefolder` on the squares image dataset (non-square images,
0-3 ground-truth boxes each): COCO read by pycocotools and scored against itself, YOLO read back to
the same pixel boxes, one folder per class; one-line errors."""

import json

import numpy as np
import pytest
from PIL import Image as PILImage

from conftest import write_recipe
from synthloom import dataset as ds
from synthloom.cli import main
from synthloom.errors import DatasetError
from synthloom.export import _clip_boxes, export_coco, export_imagefolder, export_yolo, read_yolo_labels
from synthloom.flows.build import build_dataset
from synthloom.recipe import load_recipe


@pytest.fixture(scope="module")
def squares(tmp_path_factory):
    from synthloom.registry import REGISTER_ENV, register

    folder = tmp_path_factory.mktemp("export")
    path = write_recipe(folder, name="squares", generator={"kind": "squares", "params": {"height": 24, "width": 40}},
                        count={"train": 12, "validation": 6}, shard_size=6)
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(REGISTER_ENV, raising=False)
        register("generators", "squares", "squares_generator:SquaresGenerator")
        build_dataset(str(path))
    return load_recipe(path).version_dir()


def _ground_truth(version_dir, split):
    table = ds.read_table(version_dir, ds.read_manifest(version_dir), split)
    features = ds.read_features(table)
    rows = features["objects"].decode(table.column("objects"))
    return table, [rows.numpy(i) for i in range(table.num_rows)]


def test_coco_export_loads_in_pycocotools_and_scores_map_1_against_itself(squares, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    assert export_coco(squares, tmp_path) == 18
    table, truth = _ground_truth(squares, "train")
    coco = COCO(str(tmp_path / "annotations" / "instances_train.json"))
    assert [c["id"] for c in coco.dataset["categories"]] == [1, 2, 3]
    assert [c["name"] for c in coco.dataset["categories"]] == ["red", "green", "blue"]
    assert len(coco.dataset["images"]) == 12 and len(coco.dataset["annotations"]) == sum(len(t["boxes"]) for t in truth)
    for entry, sample_id in zip(coco.dataset["images"], table.column("id").to_pylist()):
        assert entry["file_name"] == f"{sample_id}.png"
        with PILImage.open(tmp_path / "images" / "train" / entry["file_name"]) as image:
            assert (entry["width"], entry["height"]) == image.size == (40, 24), "width and height not swapped"
    for annotation in coco.dataset["annotations"]:
        x, y, w, h = annotation["bbox"]
        assert isinstance(annotation["area"], float) and annotation["area"] == pytest.approx(w * h) and w * h > 0
        assert annotation["iscrowd"] == 0 and "score" not in annotation, "ground truth has no score"
    first = next(i for i, t in enumerate(truth) if len(t["boxes"]))
    image_id = first + 1
    exported = [a for a in coco.dataset["annotations"] if a["image_id"] == image_id]
    np.testing.assert_allclose([a["bbox"] for a in exported], truth[first]["boxes"], atol=1e-3)
    assert [a["category_id"] for a in exported] == (truth[first]["labels"] + 1).tolist()

    def mean_ap(results):
        evaluator = COCOeval(coco, coco.loadRes(results), "bbox")
        evaluator.evaluate(), evaluator.accumulate(), evaluator.summarize()
        return evaluator.stats[0]

    itself = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
              for a in coco.dataset["annotations"]]
    assert mean_ap(itself) == pytest.approx(1.0)
    shifted = [{**r, "bbox": [r["bbox"][0] + r["bbox"][2] * 0.6, *r["bbox"][1:]]} for r in itself]
    assert mean_ap(shifted) < 0.5, "the check can fail: boxes shifted by 60% of their width do not match"
    assert json.loads((tmp_path / "annotations" / "instances_validation.json").read_text())["images"][0]["id"] == 1


def test_boxes_are_clipped_to_their_image_and_empty_ones_dropped():
    boxes = np.array([[-2, 3, 6, 4], [35, 20, 10, 10], [50, 0, 5, 5], [4, 4, 0, 3]], dtype=np.float32)
    clipped, keep = _clip_boxes(boxes, width=40, height=24)
    np.testing.assert_allclose(clipped[:2], [[0, 3, 4, 4], [35, 20, 5, 4]])
    assert keep.tolist() == [True, True, False, False]


def test_yolo_export_reads_back_to_the_same_pixel_boxes(squares, tmp_path):
    import yaml

    assert export_yolo(squares, tmp_path) == 18
    data = yaml.safe_load((tmp_path / "data.yaml").read_text())
    assert data["train"] == "images/train" and data["val"] == "images/validation"
    assert data["names"] == {0: "red", 1: "green", 2: "blue"} and data["nc"] == 3
    table, truth = _ground_truth(squares, "validation")
    for sample_id, row in zip(table.column("id").to_pylist(), truth):
        assert (tmp_path / "images" / "validation" / f"{sample_id}.png").exists()
        labels = read_yolo_labels(tmp_path / "labels" / "validation" / f"{sample_id}.txt", 3)
        assert len(labels) == len(row["boxes"])
        if len(labels):
            assert (labels[:, 1:] > 0).all() and (labels[:, 1:] <= 1).all()
            cx, cy, w, h = labels[:, 1:].T
            pixels = np.stack([(cx - w / 2) * 40, (cy - h / 2) * 24, w * 40, h * 24], axis=1)
            np.testing.assert_allclose(pixels, row["boxes"], atol=1e-3)
            np.testing.assert_array_equal(labels[:, 0], row["labels"])

    bad = tmp_path / "bad.txt"
    for line in ("3 0.5 0.5 0.1 0.1", "0 0.5 0.5 0 0.1", "0 0.95 0.5 0.2 0.1", "0 0.5 0.5 0.1"):
        bad.write_text("0 0.5 0.5 0.2 0.2\n" + line + "\n")
        with pytest.raises(DatasetError, match=rf"^{bad}:2: not a valid YOLO box line"):
            read_yolo_labels(bad, 3)


def test_imagefolder_export_writes_one_folder_per_class_with_the_stored_png(squares, tmp_path):
    assert export_imagefolder(squares, tmp_path, split="train") == 12
    table = ds.read_table(squares, ds.read_manifest(squares), "train")
    names = ["red", "green", "blue"]
    for sample_id, label, image in zip(table.column("id").to_pylist(), table.column("label").to_pylist(),
                                       table.column("image").to_pylist()):
        assert (tmp_path / "train" / names[label] / f"{sample_id}.png").read_bytes() == image["bytes"]
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == ["blue", "green", "red"]
    assert not (tmp_path / "validation").exists()


def test_export_command_and_its_one_line_errors(squares, tmp_path, capsys):
    assert main(["export", str(squares), "--format", "coco", "--out", str(tmp_path / "coco")]) == 0
    assert capsys.readouterr().out.strip() == f"{tmp_path / 'coco'}: wrote 18 images (coco)"
    assert main(["export", str(squares), "--format", "yolo", "--out", str(tmp_path / "y"), "--column", "caption"]) == 1
    assert capsys.readouterr().err.strip() == (f"synthloom: error: {squares}: column 'caption' is not a "
                                               "BoundingBoxes column (Text())")
    assert main(["export", str(squares), "--format", "ply", "--out", str(tmp_path / "p")]) == 1
    assert "has no Points column of 3-d positions" in capsys.readouterr().err
    assert main(["export", str(squares), "--format", "coco", "--out", str(tmp_path / "c"), "--split", "nope"]) == 1
    assert "no split 'nope' (splits: train, validation)" in capsys.readouterr().err


def test_a_refused_export_leaves_nothing_behind(squares, tmp_path, capsys):
    # A BoundingBoxes export of a column that holds no boxes is refused before anything is written:
    # coco used to leave an empty annotations/ folder behind.
    for fmt in ("coco", "yolo"):
        out = tmp_path / fmt
        assert main(["export", str(squares), "--format", fmt, "--out", str(out), "--column", "caption"]) == 1
        assert "is not a BoundingBoxes column" in capsys.readouterr().err
        assert not out.exists() or not any(out.rglob("*")), f"{fmt} left {sorted(out.rglob('*'))}"
