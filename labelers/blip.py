"""BLIP (Li et al. 2022) labelers.

- `blip`: image captions into a `Text` column (`caption`). Unconditional by default; with `prompt`
  (e.g. "a photograph of") the caption continues the prompt, which BLIP keeps at its start, as
  transformers' BLIP does.
- `blip-vqa`: attributes by visual question answering, one `Text` column per question
  (`{"attr_colour": "what colour is the object?"}`), from a BLIP VQA model.

Greedy decoding (or beam search with `num_beams`), so the same weights give the same text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import Field, field_validator

from synthloom.features import Features, Text
from synthloom.generators.base import BuildContext

from .base import Labeler, LabelerParams, Prepared, labeler_fingerprint
from .hf_models import check_architecture, check_output_column, image_column, load_pretrained, \
    require_transformers, resolve_model_dir, rgb_images, weight_assets, weights_sha256


class BlipParams(LabelerParams):
    model: str = Field(description="A local model directory (save_pretrained layout) or a hub id in the HF cache, "
                                   "e.g. Salesforce/blip-image-captioning-base.")
    prompt: str | None = Field(default=None, description="Conditional captioning: the caption's first words.")
    max_new_tokens: int = Field(default=30, ge=1, le=512)
    num_beams: int = Field(default=1, ge=1, le=16)
    batch_size: int = Field(default=8, ge=1, description="Images per generate() call.")
    image: str | None = Field(default=None, description="Image column to read (default: the first one).")
    column: str = Field(default="caption", description="Column the captions are written to.")
    overwrite: bool = Field(default=False, description="Replace an existing column of that name.")
    min_side: int = Field(default=16, ge=1, description="Refuse images whose shorter side is below this.")


class BlipLabeler(Labeler):
    name = "blip"
    Params = BlipParams
    params: BlipParams
    # A device slot only on a GPU (set in load): on CPU the Prefect concurrency lease cost ~1.7 s per
    # shard here and protects nothing.
    resources: dict[str, int] = {}
    code_version = "1"

    def __init__(self, params: dict[str, Any] | BlipParams | None = None):
        super().__init__(params)
        self.batch_size = self.params.batch_size

    def check_inputs(self, input_features: Features) -> None:
        image_column(self.name, input_features, self.params.image)
        check_output_column(self.name, input_features, self.params.column, self.params.overwrite)

    def features(self, input_features: Features) -> Features:
        return Features({self.params.column: Text()})

    def check_model(self, base: Path | None = None) -> Path:
        """The model folder, checked to hold the right architecture: cheap (reads config.json), so the
        `label` preflight runs it before any flow run. `base`: where relative paths may also be found."""
        folder = resolve_model_dir(self.name, self.params.model, base)
        check_architecture(self.name, folder, ("blip",), "a BLIP captioner (BlipForConditionalGeneration)",
                           "BlipForConditionalGeneration")
        return folder

    def prepare(self, ctx: BuildContext) -> Prepared:
        folder = self.check_model(ctx.recipe_dir)
        require_transformers(self.name)
        assets = weight_assets(self.name, folder)
        info = {"model": self.params.model, "model_dir": str(folder), "weights_sha256": weights_sha256(assets),
                "prompt": self.params.prompt, "max_new_tokens": self.params.max_new_tokens,
                "num_beams": self.params.num_beams}
        params = self.params.model_copy(update={"batch_size": 1})  # batching changes no caption
        return Prepared(labeler=self.name, assets=assets, info=info,
                        input_fingerprint=labeler_fingerprint(self.name, params, self.code_version, assets))

    def load(self, prepared: Prepared, device: str = "cpu") -> None:
        from transformers import BlipForConditionalGeneration, BlipProcessor

        super().load(prepared, device)
        self.resources = {"gpu": 1} if device.startswith("cuda") else {}
        self.processor, self.model = load_pretrained(self.name, Path(prepared.info["model_dir"]),
                                                     BlipForConditionalGeneration, BlipProcessor, device)

    def caption(self, images: list) -> list[str]:
        import torch

        prompt = self.params.prompt
        inputs = self.processor(images=images, text=[prompt] * len(images) if prompt else None, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        with torch.inference_mode():
            tokens = self.model.generate(**inputs, max_new_tokens=self.params.max_new_tokens,
                                         num_beams=self.params.num_beams, do_sample=False)
        return [text.strip() for text in self.processor.batch_decode(tokens, skip_special_tokens=True)]

    def label(self, batch: pa.Table, features: Features) -> dict[str, list]:
        column = image_column(self.name, features, self.params.image)
        images = rgb_images(self.name, batch, features, column, self.params.min_side)
        present = [i for i, image in enumerate(images) if image is not None]
        out: list[str | None] = [None] * len(images)
        for i, text in zip(present, self.caption([images[i] for i in present]) if present else []):
            out[i] = text
        return {self.params.column: out}


class BlipVqaParams(LabelerParams):
    model: str = Field(description="A BLIP VQA model directory or cached hub id, e.g. Salesforce/blip-vqa-base.")
    questions: dict[str, str] = Field(description="Column name -> question asked of every image.")
    max_new_tokens: int = Field(default=10, ge=1, le=128)
    num_beams: int = Field(default=1, ge=1, le=16)
    batch_size: int = Field(default=8, ge=1, description="Images per generate() call.")
    image: str | None = Field(default=None, description="Image column to read (default: the first one).")
    overwrite: bool = Field(default=False, description="Replace existing columns of those names.")
    min_side: int = Field(default=16, ge=1, description="Refuse images whose shorter side is below this.")

    @field_validator("questions")
    @classmethod
    def _questions(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("no questions: map at least one column name to a question, "
                             "e.g. {'attr_colour': 'what colour is the object?'}")
        blank = [column for column, question in value.items() if not column.strip() or not question.strip()]
        if blank:
            raise ValueError(f"blank column name or question for {blank}")
        return value


class BlipVqaLabeler(Labeler):
    name = "blip-vqa"
    Params = BlipVqaParams
    params: BlipVqaParams
    resources: dict[str, int] = {}  # a device slot only on a GPU, as `blip`
    code_version = "1"

    def __init__(self, params: dict[str, Any] | BlipVqaParams | None = None):
        super().__init__(params)
        self.batch_size = self.params.batch_size

    def check_inputs(self, input_features: Features) -> None:
        image_column(self.name, input_features, self.params.image)
        for column in self.params.questions:
            check_output_column(self.name, input_features, column, self.params.overwrite)

    def features(self, input_features: Features) -> Features:
        return Features({column: Text() for column in self.params.questions})

    def check_model(self, base: Path | None = None) -> Path:
        folder = resolve_model_dir(self.name, self.params.model, base)
        check_architecture(self.name, folder, ("blip",), "a BLIP VQA model (BlipForQuestionAnswering)",
                           "BlipForQuestionAnswering")
        return folder

    def prepare(self, ctx: BuildContext) -> Prepared:
        folder = self.check_model(ctx.recipe_dir)
        require_transformers(self.name)
        assets = weight_assets(self.name, folder)
        info = {"model": self.params.model, "model_dir": str(folder), "weights_sha256": weights_sha256(assets),
                "questions": self.params.questions, "max_new_tokens": self.params.max_new_tokens,
                "num_beams": self.params.num_beams}
        params = self.params.model_copy(update={"batch_size": 1})  # batching changes no answer
        return Prepared(labeler=self.name, assets=assets, info=info,
                        input_fingerprint=labeler_fingerprint(self.name, params, self.code_version, assets))

    def load(self, prepared: Prepared, device: str = "cpu") -> None:
        from transformers import BlipForQuestionAnswering, BlipProcessor

        super().load(prepared, device)
        self.resources = {"gpu": 1} if device.startswith("cuda") else {}
        self.processor, self.model = load_pretrained(self.name, Path(prepared.info["model_dir"]),
                                                     BlipForQuestionAnswering, BlipProcessor, device)

    def answer(self, images: list, question: str) -> list[str]:
        import torch

        inputs = self.processor(images=images, text=[question] * len(images), return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        with torch.inference_mode():
            tokens = self.model.generate(**inputs, max_new_tokens=self.params.max_new_tokens,
                                         num_beams=self.params.num_beams, do_sample=False)
        return [text.strip() for text in self.processor.batch_decode(tokens, skip_special_tokens=True)]

    def label(self, batch: pa.Table, features: Features) -> dict[str, list]:
        column = image_column(self.name, features, self.params.image)
        images = rgb_images(self.name, batch, features, column, self.params.min_side)
        present = [i for i, image in enumerate(images) if image is not None]
        out: dict[str, list] = {}
        for name, question in self.params.questions.items():
            answers: list[str | None] = [None] * len(images)
            for i, text in zip(present, self.answer([images[i] for i in present], question) if present else []):
                answers[i] = text
            out[name] = answers
        return out
