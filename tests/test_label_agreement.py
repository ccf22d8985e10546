"""Label agreement (evaluators/label_agreement.py): COCO mAP of auto-labelled boxes against the
generator's ground truth, columns told apart by provenance, classes matched by name."""

import numpy as np
import pytest

from synthloom.errors import DatasetError
from synthloom.evaluators.label_agreement import agreement_columns, label_agreement
from synthloom.features import BoundingBoxes, Features, Image

TRUTH = BoundingBoxes(("red", "green", "blue"))
PREDICTED = BoundingBoxes(("blue", "green", "red"))  # owlv2 sorts its class names: other indices
MANIFEST = {"labelers": [{"kind": "owlv2", "columns": ["auto"]}]}


def _table(predicted_rows, truth_rows, predicted=PREDICTED):
    features = Features({"image": Image(), "objects": TRUTH, "auto": predicted})
    image = np.zeros((30, 40, 3), np.uint8)
    rows = [{"image": image, "objects": t, "auto": p} for t, p in zip(truth_rows, predicted_rows)]
    return features.encode_table(rows), features


def _boxes(boxes, labels, scores=None):
    return {"boxes": np.array(boxes, np.float32).reshape(-1, 4), "labels": labels, "scores": scores}


TRUTH_ROWS = [_boxes([[2, 3, 10, 8], [20, 5, 12, 12]], [0, 2]), _boxes([[5, 5, 20, 20]], [1]), _boxes([], [])]


def _rename(rows):
    """The ground truth as the predictor would write it: its own class indices, with scores."""
    to_predicted = {0: 2, 1: 1, 2: 0}
    return [_boxes(r["boxes"], [to_predicted[l] for l in r["labels"]], [0.9] * len(r["labels"])) for r in rows]


def test_perfect_auto_labels_score_map_1_with_classes_matched_by_name():
    table, features = _table(_rename(TRUTH_ROWS), TRUTH_ROWS)
    assert agreement_columns(features, MANIFEST) == ("objects", "auto")
    result = label_agreement(table, features, "objects", "auto")
    assert result["label_map"] == pytest.approx(1.0) and result["label_map_50"] == pytest.approx(1.0)
    assert result["per_class_ap"] == {"red": pytest.approx(1.0), "green": pytest.approx(1.0),
                                      "blue": pytest.approx(1.0)}
    assert result["ground_truth_boxes"] == 3 and result["predicted_boxes"] == 3


def test_wrong_or_missing_auto_labels_score_lower():
    shifted = _rename(TRUTH_ROWS)
    shifted[1] = _boxes([[15, 15, 20, 20]], [1], [0.9])  # IoU 0.14 with its ground truth
    table, features = _table(shifted, TRUTH_ROWS)
    result = label_agreement(table, features, "objects", "auto")
    assert result["per_class_ap"]["green"] == 0.0 and result["label_map"] == pytest.approx(2 / 3)

    swapped = _rename(TRUTH_ROWS)
    swapped[0] = _boxes(swapped[0]["boxes"], [0, 2], [0.9, 0.9])  # red and blue exchanged
    table, features = _table(swapped, TRUTH_ROWS)
    assert label_agreement(table, features, "objects", "auto")["label_map"] == pytest.approx(1 / 3)

    table, features = _table([_boxes([], [])] * 3, TRUTH_ROWS)
    assert label_agreement(table, features, "objects", "auto")["label_map"] == 0.0


def test_predicted_classes_the_ground_truth_lacks_are_listed_and_columns_come_from_provenance():
    predicted = BoundingBoxes(("blue", "green", "red", "sneaker"))
    rows = _rename(TRUTH_ROWS)
    rows[2] = _boxes([[1, 1, 5, 5]], [3], [0.4])
    table, features = _table(rows, TRUTH_ROWS, predicted)
    result = label_agreement(table, features, "objects", "auto")
    assert result["unscored_predicted_classes"] == ["sneaker"] and result["label_map"] == pytest.approx(1.0)
    assert agreement_columns(features, {"labelers": []}) is None, "no labeler wrote boxes: nothing to compare"
    assert agreement_columns(features, {"labelers": [{"columns": ["auto", "objects"]}]}) is None
    with pytest.raises(DatasetError, match="no ground-truth boxes in column 'objects'"):
        label_agreement(*_table(rows, [_boxes([], [])] * 3, predicted), "objects", "auto")
