"""The owlv2 and blip labelers on tiny random models (tests/tiny_hf_models.py) saved with save_pretrained
and loaded back with from_pretrained: box geometry against hand-computed cases and the real OWLv2
processor, per-class NMS, batched = one image at a time, provenance, and one-line errors."""

import time

import numpy as np
import pytest

from synthloom import dataset as ds
from synthloom.errors import LabelerError
from synthloom.features import Features, Image
from synthloom.generators.base import BuildContext, ShardSpec
from synthloom.labelers.base import apply_labeler
from synthloom.labelers.owlv2 import nms, padded_square_to_xywh
from synthloom.provenance import sha256_file
from synthloom.registry import make_labeler
from squares_generator import SquaresGenerator
from tiny_hf_models import tiny_blip, tiny_owlv2

ONTOLOGY = {"a red square": "red", "a blue square": "blue", "a crimson box": "red"}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {"owlv2": tiny_owlv2(root / "owlv2"), "blip": tiny_blip(root / "blip"),
            "blip-vqa": tiny_blip(root / "vqa", vqa=True)}


def squares_table(rows=8, height=24, width=20):
    generator = SquaresGenerator({"height": height, "width": width})
    generator.prepared = generator.prepare(BuildContext(cache_dir=None))
    shard = ShardSpec("train", 0, 1, 0, rows, 7)
    records = [{**row, "id": f"train-{i:08d}", "split": "train", "generator": "squares", "generation_sha256": "g"}
               for i, row in enumerate(generator.generate(shard))]
    return ds.rows_to_table(records, ds.dataset_schema(generator.features()))


def loaded(kind, models, tmp_path=None, **params):
    labeler = make_labeler(kind, {"model": str(models[kind]), **params})
    labeler.load(labeler.prepare(BuildContext(cache_dir=tmp_path)))
    return labeler


# -- geometry ----------------------------------------------------------------------------------
def test_padded_square_boxes_map_back_to_original_pixels_hand_computed():
    # A wide image, 100 x 50 (W x H): OWLv2 pads it to 100 x 100, so both axes scale by 100.
    xywh, ok = padded_square_to_xywh(np.array([[0.25, 0.25, 0.30, 0.10]]), height=50, width=100)
    np.testing.assert_allclose(xywh, [[10, 20, 30, 10]], atol=1e-4)
    assert ok.tolist() == [True]
    # Scaling y by the height (no padding assumed) would have put it at y = 0.25 * 50 - 2.5 = 10.
    # A tall image, 40 x 80: the square's side is 80.
    xywh, _ = padded_square_to_xywh(np.array([[0.25, 0.5, 0.25, 0.125]]), height=80, width=40)
    np.testing.assert_allclose(xywh, [[10, 35, 20, 10]], atol=1e-4)
    # Clipped at the right border; a box entirely in the bottom padding has no area and is dropped.
    xywh, ok = padded_square_to_xywh(np.array([[0.95, 0.2, 0.2, 0.1], [0.5, 0.8, 0.2, 0.1]]), height=50, width=100)
    np.testing.assert_allclose(xywh[0], [85, 15, 15, 10], atol=1e-4)
    assert ok.tolist() == [True, False]


def test_box_conversion_matches_what_the_owlv2_processor_does_to_a_non_square_image():
    """Draw a known box into a 64 x 40 image, find it in the processor's padded, resized square, and
    map that back: the original box again (so the padding side and scale are right)."""
    from transformers.models.owlv2.image_processing_pil_owlv2 import Owlv2ImageProcessorPil

    height, width, box = 40, 64, (8, 10, 16, 20)  # x, y, w, h
    image = np.full((height, width, 3), 128, np.uint8)
    image[box[1]:box[1] + box[3], box[0]:box[0] + box[2]] = 255
    processor = Owlv2ImageProcessorPil(size={"height": 128, "width": 128})
    pixels = processor(images=[image], return_tensors="np")["pixel_values"][0]  # (3, 128, 128), normalised
    red = pixels[0] * processor.image_std[0] + processor.image_mean[0]  # back to [0, 1]
    rows, cols = np.nonzero(red > 0.75)
    side = 128.0
    cx, cy = (cols.min() + cols.max() + 1) / 2 / side, (rows.min() + rows.max() + 1) / 2 / side
    w, h = (cols.max() - cols.min() + 1) / side, (rows.max() - rows.min() + 1) / side
    assert (red[100:, :] < 0.1).all(), "the bottom of the square is padding (black), not image"
    xywh, ok = padded_square_to_xywh(np.array([[cx, cy, w, h]]), height, width)
    assert ok[0]
    np.testing.assert_allclose(xywh[0], box, atol=1.0)


def test_nms_is_per_class_and_keeps_the_best_first():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10], [50, 50, 5, 5]], dtype=np.float32)
    scores = np.array([0.5, 0.9, 0.7, 0.3])
    same = np.zeros(4, dtype=np.int64)
    assert nms(boxes, scores, same, iou=0.5).tolist() == [1, 3]  # 0 and 2 overlap box 1 (IoU 0.68, 0.68)
    classes = np.array([0, 0, 1, 0])
    assert nms(boxes, scores, classes, iou=0.5).tolist() == [1, 2, 3]  # box 2 is another class
    assert nms(boxes, scores, same, iou=1.0).tolist() == [1, 2, 0, 3]


# -- owlv2 -------------------------------------------------------------------------------------
def test_owlv2_fast_path_equals_the_models_forward(models):
    import torch

    labeler = loaded("owlv2", models, ontology=ONTOLOGY)
    images = [np.random.default_rng(i).integers(0, 255, (24 + 8 * i, 20, 3), dtype=np.uint8) for i in range(3)]
    logits, boxes = labeler.predict(images)
    inputs = labeler.processor(text=[list(ONTOLOGY)] * 3, images=images, return_tensors="pt", padding="max_length",
                               truncation=True, max_length=16)
    with torch.no_grad():
        reference = labeler.model(**inputs)
    np.testing.assert_allclose(logits, reference.logits.numpy(), atol=1e-4)
    np.testing.assert_allclose(boxes, reference.pred_boxes.numpy(), atol=1e-5)


def test_owlv2_labels_a_shard_in_batches_as_one_image_at_a_time_with_provenance(models, tmp_path):
    table = squares_table(rows=6)
    params = dict(ontology=ONTOLOGY, threshold=0.0, nms_iou=0.5, max_boxes=5, column="auto_objects")
    batched = apply_labeler(loaded("owlv2", models, batch_size=4, **params), table)
    single = apply_labeler(loaded("owlv2", models, batch_size=1, **params), table)
    features = ds.read_features(batched)
    assert features["auto_objects"].categories == ("blue", "red")
    assert batched.column_names[-3:] == ["auto_objects", "generator", "generation_sha256"]
    rows = features["auto_objects"].decode(batched.column("auto_objects"))
    again = features["auto_objects"].decode(single.column("auto_objects"))
    for i in range(table.num_rows):
        row = rows.numpy(i)
        assert 1 <= len(row["boxes"]) <= 5
        x, y, w, h = row["boxes"].T
        assert (w > 0).all() and (h > 0).all() and (x >= 0).all() and (y >= 0).all()
        assert (x + w <= 20 + 1e-4).all() and (y + h <= 24 + 1e-4).all(), "inside the 20 x 24 image"
        assert (np.diff(row["scores"]) <= 0).all() and set(row["labels"].tolist()) <= {0, 1}
        np.testing.assert_allclose(row["boxes"], again.numpy(i)["boxes"], atol=1e-3)
        np.testing.assert_array_equal(row["labels"], again.numpy(i)["labels"])
    # The ground truth is untouched beside the auto-labels.
    assert batched.column("objects").equals(table.column("objects"))

    prepared = make_labeler("owlv2", {"model": str(models["owlv2"]), **params}).prepare(BuildContext(cache_dir=None))
    weights = models["owlv2"] / "model.safetensors"
    assert prepared.info["weights_sha256"] == sha256_file(weights)
    assert [(a.path, a.role) for a in prepared.assets] == [(str(weights.resolve()), "weights")]
    assert prepared.info["threshold"] == 0.0 and prepared.info["max_boxes"] == 5 and prepared.info["nms_iou"] == 0.5
    other = make_labeler("owlv2", {"model": str(models["owlv2"]), **params, "batch_size": 3})
    assert other.prepare(BuildContext(cache_dir=None)).input_fingerprint == prepared.input_fingerprint, \
        "the batch size changes no label, so no cache key"


def test_owlv2_that_finds_nothing_in_a_shard_fails_loudly(models):
    labeler = loaded("owlv2", models, ontology=ONTOLOGY, threshold=1.0, column="auto_objects")
    with pytest.raises(LabelerError, match=r"^labeler owlv2 on shard s.parquet: no labels for any of its 4 rows"):
        apply_labeler(labeler, squares_table(rows=4), shard="s.parquet")


def test_grayscale_images_are_labelled_as_their_rgb_version(models):
    table = squares_table(rows=3)
    images = Image().decode(table.column("image"))
    gray = [images.numpy(i)[:, :, :1] for i in range(3)]
    as_rgb = [np.repeat(g, 3, axis=2) for g in gray]
    labeler = loaded("owlv2", models, ontology=ONTOLOGY, threshold=0.0, column="auto_objects")

    def with_images(pictures):
        index = table.column_names.index("image")
        return table.set_column(index, table.schema.field("image"), Image().encode(pictures))

    one, two = (apply_labeler(labeler, with_images(p)).column("auto_objects").to_pylist() for p in (gray, as_rgb))
    assert one == two and len(one[0]) > 0


# -- blip --------------------------------------------------------------------------------------
def test_blip_captions_unconditional_and_prompted_batched_as_one_at_a_time(models):
    table = squares_table(rows=5)
    batched = apply_labeler(loaded("blip", models, batch_size=5, max_new_tokens=8, column="auto_caption"), table)
    single = apply_labeler(loaded("blip", models, batch_size=1, max_new_tokens=8, column="auto_caption"), table)
    captions = batched.column("auto_caption").to_pylist()
    assert captions == single.column("auto_caption").to_pylist()
    assert all(isinstance(c, str) and c for c in captions) and len(set(captions)) > 1, "captions depend on the image"
    assert ds.read_features(batched)["auto_caption"].describe().startswith("Text")
    assert batched.column("caption").equals(table.column("caption")), "the generator's caption is kept"

    prompted = apply_labeler(loaded("blip", models, prompt="a photo of", max_new_tokens=6, column="auto_caption"),
                             table).column("auto_caption").to_pylist()
    assert all(c.startswith("a photo of") and len(c) > len("a photo of") for c in prompted)

    prepared = make_labeler("blip", {"model": str(models["blip"]), "prompt": "a photo of"}).prepare(
        BuildContext(cache_dir=None))
    assert prepared.info["weights_sha256"] == sha256_file(models["blip"] / "model.safetensors")
    assert prepared.info["prompt"] == "a photo of" and prepared.info["max_new_tokens"] == 30


def test_blip_vqa_answers_one_column_per_question_batched_as_one_at_a_time(models):
    table = squares_table(rows=5)
    questions = {"attr_colour": "what color is the square?", "attr_count": "how many squares?"}
    batched = apply_labeler(loaded("blip-vqa", models, questions=questions, batch_size=5, max_new_tokens=4), table)
    single = apply_labeler(loaded("blip-vqa", models, questions=questions, batch_size=1, max_new_tokens=4), table)
    for column in questions:
        answers = batched.column(column).to_pylist()
        assert answers == single.column(column).to_pylist() and any(answers), column
    assert batched.column("attr_colour").to_pylist() != batched.column("attr_count").to_pylist(), \
        "each column answers its own question"
    prepared = make_labeler("blip-vqa", {"model": str(models["blip-vqa"]), "questions": questions}).prepare(
        BuildContext(cache_dir=None))
    assert prepared.info["questions"] == questions
    assert prepared.info["weights_sha256"] == sha256_file(models["blip-vqa"] / "model.safetensors")


# -- bad input ---------------------------------------------------------------------------------
def _one_line(call) -> str:
    with pytest.raises(LabelerError) as error:
        call()
    message = str(error.value)
    assert "\n" not in message
    return message


def test_bad_models_ontologies_and_images_fail_in_one_line(models, tmp_path):
    ctx = BuildContext(cache_dir=tmp_path)
    wrong = _one_line(lambda: make_labeler("owlv2", {"model": str(models["blip"]), "ontology": ONTOLOGY}).prepare(ctx))
    assert f"{models['blip']} holds a 'blip' model (BlipForConditionalGeneration); owlv2 needs an OWLv2" in wrong
    wrong = _one_line(lambda: make_labeler("blip", {"model": str(models["owlv2"])}).prepare(ctx))
    assert "holds a 'owlv2' model" in wrong and "blip needs a BLIP captioner" in wrong

    # BLIP captioning and VQA share model_type 'blip': the architecture tells them apart.
    vqa_as_captioner = _one_line(lambda: make_labeler("blip", {"model": str(models["blip-vqa"])}).prepare(ctx))
    assert vqa_as_captioner == (f"labeler blip: {models['blip-vqa']} holds a BlipForQuestionAnswering; blip needs "
                                "a BLIP captioner (BlipForConditionalGeneration)")
    assert "needs a BLIP VQA model" in _one_line(lambda: make_labeler(
        "blip-vqa", {"model": str(models["blip"]), "questions": {"a": "b?"}}).prepare(ctx))
    assert "no questions" in _one_line(lambda: make_labeler("blip-vqa", {"model": "x", "questions": {}}))

    empty = _one_line(lambda: make_labeler("owlv2", {"model": str(models["owlv2"]), "ontology": {}}))
    assert empty.startswith("labeler owlv2: labeler param 'ontology': empty ontology")

    started = time.monotonic()
    missing = _one_line(lambda: make_labeler("blip", {"model": str(tmp_path / "nowhere")}).prepare(ctx))
    assert missing == f"labeler blip: model directory '{tmp_path / 'nowhere'}' does not exist"
    hub = _one_line(lambda: make_labeler("owlv2", {"model": "google/owlv2-base-patch16-ensemble",
                                                   "ontology": ONTOLOGY}).prepare(ctx))
    assert hub.startswith("labeler owlv2: model 'google/owlv2-base-patch16-ensemble' is no local directory (")
    assert "and not in the Hugging Face cache (offline); run `huggingface-cli download google/owlv2-base" in hub
    assert time.monotonic() - started < 4, "an absent model fails at once (no download retries)"

    no_config = tmp_path / "empty-model"
    no_config.mkdir()
    assert "has no config.json" in _one_line(lambda: make_labeler("blip", {"model": str(no_config)}).prepare(ctx))

    small = squares_table(rows=2, height=12, width=20)
    labeler = loaded("blip", models, column="auto_caption")
    assert _one_line(lambda: apply_labeler(labeler, small)) == (
        "labeler blip: image of row train-00000000 is 20x12 pixels, smaller than min_side=16; "
        "upscale the images or lower min_side")

    features = ds.read_features(squares_table(rows=1))
    taken = _one_line(lambda: make_labeler("blip", {"model": "x"}).check_inputs(features))
    assert taken.startswith("labeler blip: the dataset already has a column 'caption' (Text")
    no_image = Features({k: v for k, v in features.items() if k != "image"})
    assert "needs an Image column" in _one_line(
        lambda: make_labeler("owlv2", {"model": "x", "ontology": ONTOLOGY, "column": "o2"}).check_inputs(no_image))


def test_an_uncached_hub_id_names_each_place_looked_in_once(tmp_path, monkeypatch):
    from synthloom.errors import LabelerError
    from synthloom.labelers.hf_models import resolve_model_dir

    monkeypatch.chdir(tmp_path)
    with pytest.raises(LabelerError) as error:
        resolve_model_dir("owlv2", "nobody/no-such-owl", base=tmp_path)  # the recipe's folder is the cwd
    message = str(error.value)
    assert message.count(str(tmp_path / "nobody" / "no-such-owl")) == 1, message
    assert " or " not in message.split("(")[1].split(")")[0]
