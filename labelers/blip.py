"""BLIP (Li et al. 2022) labelers.

- `blip`: image captions into a `Text` column (`caption`). Unconditional by default; with `prompt`
  (e.g. "a photograph of") the caption continues the prompt, which BLIP keeps at its start, as
  transformers' BLIP does.
- `blip-vqa`: attributes by visual question answering, one `Text` column per question
  (`{"attr_colour": "what colour is the object?"}`), from a BLIP VQA model.

Greedy decoding (or beam search with `num_beams`), so the same weights give the same text.
"""

from __future__ import annotations

import pyarrow as pa
from pydantic import Field, field_validator

from synthloom.features import Features, Text

from .base import LabelerParams
from .hf_models import PretrainedLabeler, check_output_column, image_column, rgb_images


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


class BlipLabeler(PretrainedLabeler):
    name = "blip"
    Params = BlipParams
    params: BlipParams
    MODEL_TYPES = ("blip",)
    MODEL_CLASS, PROCESSOR_CLASS = "BlipForConditionalGeneration", "BlipProcessor"
    NEEDS = "a BLIP captioner (BlipForConditionalGeneration)"
    ARCHITECTURE = "BlipForConditionalGeneration"
    INFO_PARAMS = ("prompt", "max_new_tokens", "num_beams")

    def check_inputs(self, input_features: Features) -> None:
        image_column(self.name, input_features, self.params.image)
        check_output_column(self.name, input_features, self.params.column, self.params.overwrite)

    def features(self, input_features: Features) -> Features:
        return Features({self.params.column: Text()})

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


class BlipVqaLabeler(PretrainedLabeler):
    name = "blip-vqa"
    Params = BlipVqaParams
    params: BlipVqaParams
    MODEL_TYPES = ("blip",)
    MODEL_CLASS, PROCESSOR_CLASS = "BlipForQuestionAnswering", "BlipProcessor"
    NEEDS = "a BLIP VQA model (BlipForQuestionAnswering)"
    ARCHITECTURE = "BlipForQuestionAnswering"
    INFO_PARAMS = ("questions", "max_new_tokens", "num_beams")

    def check_inputs(self, input_features: Features) -> None:
        image_column(self.name, input_features, self.params.image)
        for column in self.params.questions:
            check_output_column(self.name, input_features, column, self.params.overwrite)

    def features(self, input_features: Features) -> Features:
        return Features({column: Text() for column in self.params.questions})

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
