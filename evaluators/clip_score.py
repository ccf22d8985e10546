"""CLIP score (Hessel et al. 2021) of a dataset's images against their prompts: prompt faithfulness.

torchmetrics' `CLIPScore` does the computation (100 x cosine of CLIP image and text embeddings, floored
at 0, averaged); we give it a CLIP model from any *local* directory (`CLIPModel` + `CLIPProcessor`
`save_pretrained` layout) instead of its list of hub ids, loaded with `local_files_only=True` so a
missing model fails at once naming the folder. Scores are comparable only between runs with the same
CLIP model; each result names it (folder and config) for that reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from synthloom.errors import EvaluatorError, ModelError


def load_clip(clip_dir: str | Path):
    """(CLIPModel, CLIPProcessor) from a local folder, or ModelError naming it."""
    folder = Path(clip_dir)
    if not (folder / "config.json").is_file():
        raise ModelError(f"{folder}: not a CLIP model folder (no config.json); give a CLIPModel save_pretrained folder")
    from transformers import CLIPModel, CLIPProcessor

    try:
        model = CLIPModel.from_pretrained(str(folder), local_files_only=True)
        processor = CLIPProcessor.from_pretrained(str(folder), local_files_only=True)
    except Exception as error:
        raise ModelError(f"{folder}: cannot load a CLIP model and processor ({type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''})") from None
    return model.eval(), processor


class _EmbeddingsAsTensors:
    """torchmetrics 1.9 expects `get_*_features` to return tensors; transformers 5 returns an output
    object whose `pooler_output` holds the projected embeddings. This adapter gives it the tensors."""

    def __init__(self, model):
        self.model, self.config = model, model.config

    def to(self, device):
        self.model.to(device)
        return self

    def eval(self):
        self.model.eval()
        return self

    @staticmethod
    def _tensor(out):
        import torch

        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def get_image_features(self, pixel_values):
        return self._tensor(self.model.get_image_features(pixel_values=pixel_values))

    def get_text_features(self, input_ids, attention_mask=None):
        return self._tensor(self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask))


def clip_score(images: list[np.ndarray] | np.ndarray, prompts: list[str], clip_dir: str | Path,
               batch_size: int = 32) -> dict[str, Any]:
    """Mean CLIP score of uint8 (H, W, 3) images against their prompts, plus its spread."""
    import torch
    from torchmetrics.multimodal.clip_score import CLIPScore

    if len(images) != len(prompts):
        raise EvaluatorError(f"{len(images)} images but {len(prompts)} prompts")
    if not len(images):
        raise EvaluatorError("no images to score")
    model, processor = load_clip(clip_dir)
    wrapped = _EmbeddingsAsTensors(model)
    metric = CLIPScore(model_name_or_path=lambda: (wrapped, processor))
    per_image = []
    for start in range(0, len(images), batch_size):
        batch = torch.stack([torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1)
                             for im in images[start:start + batch_size]])
        text = list(prompts[start:start + batch_size])
        metric.update(batch, text)
        # Per-image scores for the spread: the same formula, one image at a time through the same metric type.
        single = CLIPScore(model_name_or_path=lambda: (wrapped, processor))
        for image, prompt in zip(batch, text):
            single.update(image[None], [prompt])
            per_image.append(float(single.compute()))
            single.reset()
    return {"clip_score": float(metric.compute()), "clip_score_std": float(np.std(per_image)),
            "clip_score_per_image": per_image, "num_images": len(per_image),
            "clip_model": str(Path(clip_dir).resolve()), "clip_config": model.config.name_or_path or str(clip_dir)}


def clip_score_of_dataset(version_dir: str | Path, clip_dir: str | Path, split: str = "train",
                          limit: int | None = None, batch_size: int = 32) -> dict[str, Any]:
    """CLIP score of a built dataset: its Image column against its Text column (found by feature type)."""
    from synthloom import dataset as ds
    from synthloom.features import Features, Image, Text
    from synthloom.reader import load

    features = Features.from_json(ds.read_manifest(Path(version_dir))["features"])
    image_col = next(iter(features.columns_of(Image)), None)
    text_col = next(iter(features.columns_of(Text)), None)
    if image_col is None or text_col is None:
        raise ModelError(f"{version_dir}: CLIP score needs an Image and a Text column")
    data = load(version_dir, split=split, columns=[image_col, text_col], image_format="uint8")
    count = len(data) if limit is None else min(limit, len(data))
    rows = [data[i] for i in range(count)]
    images = [np.asarray(r[image_col]) for r in rows]
    images = [im.transpose(1, 2, 0) if im.ndim == 3 and im.shape[0] in (1, 3) and im.shape[-1] not in (1, 3) else im
              for im in images]
    return {**clip_score(images, [r[text_col] for r in rows], clip_dir, batch_size), "image_column": image_col,
            "text_column": text_col, "split": split}
