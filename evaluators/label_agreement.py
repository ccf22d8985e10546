"""Label agreement: how well auto-labels (boxes a labeler wrote, e.g. owlv2) match the ground truth a
generator emitted (boxes of a render, a drawn shape), as COCO mAP computed by pycocotools.

With real weights this tells a user how good their labeler is on their data before they trust it on
data without ground truth. Which column is which comes from provenance, not names: predictions are
the `BoundingBoxes` columns the manifest's labelers wrote, ground truth the `BoundingBoxes` columns
no labeler wrote. Classes are matched by name; predicted classes the ground truth lacks cannot be
scored (COCOeval averages over classes with ground truth) and are listed.

pycocotools, not torchmetrics: torchmetrics' `MeanAveragePrecision` is not importable without
torchvision, which cannot be installed beside this torch.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np
import pyarrow as pa

from synthloom.errors import DatasetError
from synthloom.features import BoundingBoxes, Features, Image, open_image


def agreement_columns(features: Features, manifest: dict[str, Any]) -> tuple[str, str] | None:
    """(ground-truth column, auto-label column), or None when the dataset lacks one of them."""
    written = {column for record in manifest.get("labelers") or [] for column in record.get("columns", [])}
    boxes = features.columns_of(BoundingBoxes)
    truth = [c for c in boxes if c not in written]
    predicted = [c for c in boxes if c in written]
    if not truth or not predicted:
        return None
    return truth[0], predicted[-1]  # the last labeler's boxes, if several labelers wrote boxes


def _image_sizes(table: pa.Table, features: Features) -> list[tuple[int, int] | None]:
    """(width, height) of each row's image from its PNG header, None without an image."""
    column = next(iter(features.columns_of(Image)), None)
    if column is None:
        return [None] * table.num_rows
    rows = features[column].decode(table.column(column))
    sizes = []
    for data in rows.data:
        if data is None:
            sizes.append(None)
            continue
        with open_image(data) as image:
            sizes.append(image.size)
    return sizes


def label_agreement(table: pa.Table, features: Features, truth: str, predicted: str) -> dict[str, Any]:
    """COCO box mAP of `predicted` against `truth` over every row of `table`."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise DatasetError("label agreement needs pycocotools; pip install 'synthloom[models]'") from None

    truth_feature, pred_feature = features[truth], features[predicted]
    truth_rows = truth_feature.decode(table.column(truth))
    pred_rows = pred_feature.decode(table.column(predicted))
    names = list(truth_feature.categories) or [str(k) for k in range(
        1 + max((int(l) for i in range(len(truth_rows)) if truth_rows.numpy(i) is not None
                 for l in truth_rows.numpy(i)["labels"]), default=-1))]
    pred_names = list(pred_feature.categories) or names
    unmatched = sorted(set(pred_names) - set(names))
    all_names = names + unmatched
    category = {name: k + 1 for k, name in enumerate(all_names)}
    sizes = _image_sizes(table, features)
    images, annotations, results = [], [], []
    for i in range(table.num_rows):
        width, height = sizes[i] or (0, 0)
        images.append({"id": i + 1, "width": width, "height": height})
        row = truth_rows.numpy(i)
        if row is not None:
            for box, label in zip(row["boxes"], row["labels"]):
                if box[2] > 0 and box[3] > 0:
                    annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "iscrowd": 0,
                                        "category_id": category[names[label]], "bbox": [float(v) for v in box],
                                        "area": float(box[2] * box[3])})
        row = pred_rows.numpy(i)
        if row is not None:
            for box, label, score in zip(row["boxes"], row["labels"], row["scores"]):
                results.append({"image_id": i + 1, "category_id": category[pred_names[label]],
                                "bbox": [float(v) for v in box], "score": float(score) if np.isfinite(score) else 1.0})
    if not annotations:
        raise DatasetError(f"label agreement: no ground-truth boxes in column '{truth}'")
    gt = COCO()
    gt.dataset = {"images": images, "annotations": annotations,
                  "categories": [{"id": k, "name": n} for n, k in category.items()]}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt.createIndex()
        if results:
            evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
    if results:
        stats = evaluator.stats
        precision = evaluator.eval["precision"]  # (iou, recall, class, area, max dets)
        per_class = {}
        for k, cat_id in enumerate(evaluator.params.catIds):
            values = precision[:, :, k, 0, -1]
            values = values[values > -1]
            if values.size:
                per_class[all_names[cat_id - 1]] = float(values.mean())
    else:  # no predictions at all: nothing matched
        stats, per_class = np.zeros(12), {n: 0.0 for n in names}
    return {"label_map": float(stats[0]), "label_map_50": float(stats[1]), "label_map_75": float(stats[2]),
            "label_recall_100": float(stats[8]), "per_class_ap": per_class, "ground_truth_column": truth,
            "predicted_column": predicted, "images": table.num_rows, "ground_truth_boxes": len(annotations),
            "predicted_boxes": len(results), "unscored_predicted_classes": unmatched, "library": "pycocotools"}
