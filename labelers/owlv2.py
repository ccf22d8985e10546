"""The `owlv2` labeler: open-vocabulary boxes from OWLv2 (Minderer et al. 2023), following autodistill's
base model -> ontology -> target dataset pattern.

An ontology maps text prompts to class names (`{"a photo of a sneaker": "sneaker", "a shoe":
"sneaker"}`); each detected box takes the prompt it scores highest on, and the class that prompt maps
to. Boxes above `threshold` go through per-class non-maximum suppression (several prompts of one class
compete as one class), then the `max_boxes` best are kept, written as `BoundingBoxes` (COCO xywh in
the original image's pixels, category = class name, score). Categories are the class names, sorted.

Geometry: OWLv2's processor pads every image at the bottom and right to a square of side
max(height, width), then resizes it to the model's input size; predicted boxes are (cx, cy, w, h)
relative to that padded square. `padded_square_to_xywh` maps them back: both axes scale by the
square's side (not by width and height: that would stretch boxes of non-square images), then boxes
are clipped to the image and those left without area (entirely in the padding) are dropped.

Speed: the ontology's text embeddings are computed once at `load`, not for every image as
`Owlv2ForObjectDetection.forward` does (it encodes images x prompts every call); each batch then runs
the vision tower and the class and box heads only, the same computation as forward's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator
from scipy.special import expit

from synthloom.features import BoundingBoxes, Features

from .base import LabelerParams, Prepared
from .hf_models import PretrainedLabeler, check_output_column, image_column, rgb_images


class Owlv2Params(LabelerParams):
    model: str = Field(description="A local model directory (save_pretrained layout) or a hub id in the HF cache, "
                                   "e.g. google/owlv2-base-patch16-ensemble.")
    ontology: dict[str, str] = Field(description="Text prompt -> class name; several prompts may name one class.")
    threshold: float = Field(default=0.1, ge=0.0, le=1.0, description="Keep boxes scoring above this.")
    nms_iou: float = Field(default=0.3, gt=0.0, le=1.0,
                           description="Per-class NMS: a box overlapping a better one of its class by more "
                                       "than this IoU is dropped (1.0 keeps all).")
    max_boxes: int = Field(default=100, ge=1, description="Most boxes per image, best first.")
    batch_size: int = Field(default=8, ge=1, description="Images per forward pass.")
    image: str | None = Field(default=None, description="Image column to read (default: the first one).")
    column: str = Field(default="objects", description="Column the boxes are written to.")
    overwrite: bool = Field(default=False, description="Replace an existing column of that name.")
    min_side: int = Field(default=16, ge=1, description="Refuse images whose shorter side is below this.")

    @field_validator("ontology")
    @classmethod
    def _ontology(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("empty ontology: map at least one text prompt to a class name, "
                             "e.g. {'a photo of a sneaker': 'sneaker'}")
        blank = [prompt for prompt, name in value.items() if not prompt.strip() or not name.strip()]
        if blank:
            raise ValueError(f"blank prompt or class name for prompt(s) {blank}")
        return value


def padded_square_to_xywh(boxes: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """OWLv2 boxes (n, 4) (cx, cy, w, h) relative to the bottom/right-padded square of side
    max(height, width) -> (COCO [x, y, w, h] in the original image's pixels, clipped to it; a mask of
    the boxes that keep a positive area)."""
    side = float(max(height, width))
    cx, cy, w, h = (np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * side).T
    x0, x1 = np.clip(cx - w / 2, 0, width), np.clip(cx + w / 2, 0, width)
    y0, y1 = np.clip(cy - h / 2, 0, height), np.clip(cy + h / 2, 0, height)
    xywh = np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)
    return xywh.astype(np.float32), (xywh[:, 2] > 0) & (xywh[:, 3] > 0)


def nms(boxes_xywh: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float) -> np.ndarray:
    """Indices of the boxes greedy per-class NMS keeps, best score first. Our own ~20 lines because
    torchvision.ops (the usual one) cannot be installed beside this torch."""
    order = np.argsort(-scores, kind="stable")
    if iou >= 1.0 or len(order) <= 1:
        return order
    x0, y0 = boxes_xywh[:, 0], boxes_xywh[:, 1]
    x1, y1 = x0 + boxes_xywh[:, 2], y0 + boxes_xywh[:, 3]
    area = boxes_xywh[:, 2] * boxes_xywh[:, 3]
    suppressed = np.zeros(len(scores), dtype=bool)
    keep = []
    for i in order:
        if suppressed[i]:
            continue
        keep.append(i)
        w = np.clip(np.minimum(x1[i], x1) - np.maximum(x0[i], x0), 0, None)
        h = np.clip(np.minimum(y1[i], y1) - np.maximum(y0[i], y0), 0, None)
        inter = w * h
        overlap = inter / np.maximum(area[i] + area - inter, 1e-12)
        suppressed |= (overlap > iou) & (classes == classes[i])
    return np.array(keep, dtype=np.int64)


class Owlv2Labeler(PretrainedLabeler):
    name = "owlv2"
    Params = Owlv2Params
    params: Owlv2Params
    MODEL_TYPES = ("owlv2",)
    MODEL_CLASS, PROCESSOR_CLASS = "Owlv2ForObjectDetection", "Owlv2Processor"
    NEEDS = "an OWLv2 detector (Owlv2ForObjectDetection)"
    INFO_PARAMS = ("threshold", "nms_iou", "max_boxes", "ontology")

    def __init__(self, params: dict[str, Any] | Owlv2Params | None = None):
        super().__init__(params)
        prompts = list(self.params.ontology)
        # Sorted, so category indices do not depend on the order of the ontology's keys (YAML dumps sort them).
        self.classes = sorted(set(self.params.ontology.values()))
        # prompt index -> class index
        self.prompt_class = np.array([self.classes.index(self.params.ontology[p]) for p in prompts], dtype=np.int64)
        self.prompts = prompts

    # -- columns -------------------------------------------------------------------------------
    def check_inputs(self, input_features: Features) -> None:
        image_column(self.name, input_features, self.params.image)
        check_output_column(self.name, input_features, self.params.column, self.params.overwrite)

    def features(self, input_features: Features) -> Features:
        return Features({self.params.column: BoundingBoxes(categories=tuple(self.classes))})

    # -- model ---------------------------------------------------------------------------------
    def load(self, prepared: Prepared, device: str = "cpu") -> None:
        import torch

        super().load(prepared, device)  # processor and model
        # Prompts padded to the text model's length, as OWLv2's processor does (16 tokens; longer ones are cut).
        text = self.processor.tokenizer(self.prompts, padding="max_length", truncation=True, return_tensors="pt",
                                        max_length=self.model.config.text_config.max_position_embeddings)
        input_ids = text["input_ids"].to(device)
        with torch.inference_mode():
            embeds = self.model.owlv2.get_text_features(input_ids=input_ids,
                                                        attention_mask=text["attention_mask"].to(device)).pooler_output
        # As Owlv2Model.forward: unit-norm text embeddings; a query whose first token is 0 is padding.
        self.query_embeds = embeds / torch.linalg.norm(embeds, ord=2, dim=-1, keepdim=True)
        self.query_mask = input_ids[:, 0] > 0

    def predict(self, images: list[np.ndarray]):
        """(logits (n, patches, prompts), boxes (n, patches, 4) cx cy w h of the padded square) as numpy."""
        import torch

        pixel_values = self.processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            feature_map = self.model.image_embedder(pixel_values=pixel_values.to(self.device))[0]
            n, rows, cols, dim = feature_map.shape
            image_feats = feature_map.reshape(n, rows * cols, dim)
            queries = self.query_embeds.unsqueeze(0).expand(n, -1, -1)
            logits, _ = self.model.class_predictor(image_feats, queries, self.query_mask.unsqueeze(0).expand(n, -1))
            boxes = self.model.box_predictor(image_feats, feature_map)
        return logits.float().cpu().numpy(), boxes.float().cpu().numpy()

    def detections(self, logits: np.ndarray, boxes: np.ndarray, height: int, width: int) -> dict[str, np.ndarray]:
        """One image's boxes: best prompt per box, threshold, clip to the image, per-class NMS, max_boxes."""
        best = logits.argmax(axis=1)
        scores = expit(logits[np.arange(len(best)), best])  # sigmoid, without overflow at large |logit|
        classes = self.prompt_class[best]
        xywh, has_area = padded_square_to_xywh(boxes, height, width)
        keep = np.nonzero((scores > self.params.threshold) & has_area)[0]
        keep = keep[nms(xywh[keep], scores[keep], classes[keep], self.params.nms_iou)][: self.params.max_boxes]
        return {"boxes": xywh[keep], "labels": classes[keep], "scores": scores[keep].astype(np.float32)}

    def label(self, batch: pa.Table, features: Features) -> dict[str, list]:
        column = image_column(self.name, features, self.params.image)
        images = rgb_images(self.name, batch, features, column, self.params.min_side)
        present = [i for i, image in enumerate(images) if image is not None]
        out: list[dict[str, np.ndarray] | None] = [None] * len(images)
        if present:
            logits, boxes = self.predict([images[i] for i in present])
            for k, i in enumerate(present):
                height, width = images[i].shape[:2]
                out[i] = self.detections(logits[k], boxes[k], height, width)
        return {self.params.column: out}
