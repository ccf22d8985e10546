"""Images from a diffusers text-to-image pipeline, prompted at scale, optionally personalised.

    generator:
      kind: diffusion
      params:
        model: path/to/pipeline-dir        # or a hub id already in the local HF cache
        classes: [sneaker, sandal, bag]
        templates: ["a photo of a {colour} {class}, {background}"]
        steps: 25
        guidance_scale: 7.5
        batch_size: 8

The pipeline is loaded once per worker process (`load`) and generates a shard in batches; every image
has its own `torch.Generator` seeded from the sample's seed, recorded in the row, so an image depends
on its seed, not on its batch neighbours. Rows: `image`, `label` (ClassLabel), `prompt` (Text, the exact
prompt), `seed`, `attributes` (JSON of the attribute values the prompt used).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Literal

from pydantic import Field, model_validator

from synthloom.errors import GeneratorError
from synthloom.made_by import not_found
from synthloom.features import ClassLabel, Features, Image, Text, Value

from ..base import Asset, BuildContext, Generator, GeneratorParams, Prepared, ShardSpec, input_fingerprint
from .adapters import AdapterTrainer, DreamBoothParams, LoraParams, apply_adapters
from .pipeline import DTYPES, SCHEDULERS, load_pipeline, model_sha256, resolve_model, speed_up
from .prompts import DEFAULT_ATTRIBUTES, DEFAULT_TEMPLATES, PromptSampler
from .training_record import read_training_record, training_subset_of


class DiffusionParams(GeneratorParams):
    model: str = Field(description="A diffusers pipeline directory, or a hub id in the local HF cache.")
    allow_download: bool = Field(default=False, description="Let a hub id download (off: fail fast offline).")
    classes: list[str] | dict[str, str] = Field(
        description="Class names, or name -> the phrase the prompt uses for it.")
    templates: list[str] = Field(default_factory=lambda: list(DEFAULT_TEMPLATES))
    attributes: dict[str, list[str]] = Field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_ATTRIBUTES.items()})
    negative_prompt: str | None = None
    scheduler: Literal[tuple(SCHEDULERS)] | None = Field(default=None, description="None: the pipeline's own.")
    steps: int = Field(default=25, ge=1, le=1000)
    guidance_scale: float = Field(default=7.5, ge=0.0)
    height: int | None = Field(default=None, ge=8, description="None: the model's native size.")
    width: int | None = Field(default=None, ge=8)
    center_crop: int | None = Field(
        default=None, ge=1, description="Keep the central N x N pixels of each image: a model trained on padded "
        "images (the Fashion-MNIST base model pads 28 px to 32) then gives images the size of its data.")
    batch_size: int = Field(default=4, ge=1, le=256)
    dtype: Literal[tuple(DTYPES)] = "float32"
    attention: Literal["sdpa", "eager"] = "sdpa"
    channels_last: bool = Field(default=False, description="channels_last memory format for UNet and VAE (GPU).")
    fuse_qkv: bool = Field(default=False, description="Fuse the Q/K/V projections of attention into one matmul.")
    compile: bool = Field(default=False, description="torch.compile the denoiser (compiled on the first batch).")
    lora: list[LoraParams] = Field(default_factory=list, description="LoRA adapters to train or load.")
    dreambooth: DreamBoothParams | None = None
    lora_scale: float = Field(default=1.0, description="Multiplies every adapter's scale.")
    fuse_lora: bool = Field(default=False, description="Fuse the adapters into the weights after loading.")

    @model_validator(mode="after")
    def _sizes(self):
        for name in ("height", "width"):
            value = getattr(self, name)
            if value is not None and value % 8:
                raise ValueError(f"{name} must be a multiple of 8 (the VAE downsamples by 8), got {value}")
            if value is not None and self.center_crop is not None and self.center_crop > value:
                raise ValueError(f"center_crop {self.center_crop} is larger than the {name} {value}")
        return self


class DiffusionGenerator(Generator):
    name = "diffusion"
    Params = DiffusionParams
    params: DiffusionParams
    code_version = "1"
    resources = {"gpu": 1}

    def __init__(self, params):
        super().__init__(params)
        self.pipe = None

    # -- preflight and prepare -----------------------------------------------------------------
    def _prompts(self) -> PromptSampler:
        p = self.params
        return PromptSampler(p.classes, p.templates, p.attributes)

    def training_subset(self, recipe_dir: Path | None = None) -> dict[str, Any] | None:
        """The model folder's `synthloom_training.json` (training_record.py): which part of its reference it
        was trained on. None for a hub id or a folder without the record: nothing to compare."""
        return training_subset_of(self.params.model, recipe_dir)

    def check_inputs(self, ctx: BuildContext) -> None:
        self._prompts()
        model_dir = resolve_model(self.params.model, ctx.recipe_dir, self.params.allow_download)
        read_training_record(model_dir)  # a malformed record is refused here, not skipped by the augment check
        if DTYPES[self.params.dtype] != "float32" and ctx.device == "cpu":
            raise GeneratorError(f"diffusion: dtype '{self.params.dtype}' needs a GPU (device is cpu); "
                                 f"use dtype: float32")
        dreambooth = self.params.dreambooth
        if dreambooth and dreambooth.method == "full" and self.params.lora:
            raise GeneratorError("diffusion: full DreamBooth makes a new pipeline; LoRA adapters are checked against "
                                 "the base model, so combine them with dreambooth method: lora, or not at all")
        if self.params.fuse_qkv and (self.params.lora or self.params.dreambooth) and not self.params.fuse_lora:
            raise GeneratorError("diffusion: fuse_qkv with LoRA adapters needs fuse_lora: true (LoRA targets the "
                                 "separate Q/K/V projections)")
        names = [a.name for a in self.params.lora] + ([self.params.dreambooth.name] if self.params.dreambooth else [])
        if len(set(names)) != len(names):
            raise GeneratorError(f"diffusion: adapter names must differ (got {names})")
        for adapter in self.params.lora:
            source = ctx.resolve_path(adapter.data or adapter.weights)
            if not source.exists():
                raise GeneratorError(f"adapter '{adapter.name}': {source} {not_found(source)}")
        if self.params.dreambooth and not ctx.resolve_path(self.params.dreambooth.instance_dir).is_dir():
            folder = self.params.dreambooth.instance_dir
            raise GeneratorError(f"dreambooth: instance folder {folder} {not_found(folder)}")
        if self.params.dreambooth:
            self.params.dreambooth.class_prompts(list(self._prompts().phrases.values()))

    def prepare(self, ctx: BuildContext) -> Prepared:
        self.check_inputs(ctx)
        model_dir = resolve_model(self.params.model, ctx.recipe_dir, self.params.allow_download)
        base = Asset(path=str(model_dir), sha256=model_sha256(model_dir), role="base-model")
        adapters, inputs = self._prepare_adapters(model_dir, base, ctx)
        info = {"model": self.params.model, "model_dir": str(model_dir),
                "pipeline": json.loads((model_dir / "model_index.json").read_text()).get("_class_name"),
                "training": read_training_record(model_dir), "adapters": adapters}
        outputs = [Asset(path=a["path"], sha256=a["sha256"],
                         role="dreambooth-model" if a["kind"] == "dreambooth-full" else "lora-adapter")
                   for a in adapters]
        # Adapter *files* given by path are inputs: their hashes belong in the fingerprint; trained ones
        # are a function of the inputs already hashed (data, params, base model).
        given = [Asset(path=a["path"], sha256=a["sha256"], role="lora-file") for a in adapters if a["kind"] == "file"]
        assets = [base, *given, *inputs]
        self.prepared = Prepared(
            generator=self.name, classes=self._prompts().names, assets=assets, outputs=outputs, info=info,
            input_fingerprint=input_fingerprint(self.name, self.params, self.code_version, assets))
        return self.prepared

    def _prepare_adapters(self, model_dir: Path, base: Asset, ctx: BuildContext):
        p = self.params
        if not p.lora and p.dreambooth is None:
            return [], []
        trainer = AdapterTrainer(model_dir, base, ctx, p.steps, p.guidance_scale, p.batch_size)
        results = [trainer.lora(spec) for spec in p.lora]
        if p.dreambooth is not None:
            results.append(trainer.dreambooth(p.dreambooth, list(self._prompts().phrases.values())))
        return [record for record, _ in results], [asset for _, assets in results for asset in assets]

    def features(self) -> Features:
        if self.prepared is None:
            raise GeneratorError("diffusion: features() needs the class names, known only after prepare()")
        return Features({"image": Image(), "label": ClassLabel(names=self.prepared.classes), "prompt": Text(),
                         "seed": Value("int64"), "attributes": Value("string")})

    def bytes_per_sample(self) -> int | None:
        p = self.params
        if p.center_crop:
            return p.center_crop * p.center_crop * 3 + 300
        return p.height * p.width * 3 + 300 if p.height and p.width else None

    # -- per worker ------------------------------------------------------------------------------
    def load(self, prepared: Prepared, device: str = "cpu") -> None:
        super().load(prepared, device)
        p = self.params
        model_dir = Path(prepared.info["model_dir"])
        full = [a for a in prepared.info.get("adapters", []) if a["kind"] == "dreambooth-full"]
        if full:  # full DreamBooth: its fine-tuned pipeline replaces the base model
            model_dir = Path(full[0]["path"])
        self.pipe = load_pipeline(model_dir, p.dtype, device, p.scheduler, p.attention, p.channels_last)
        base_sha256 = next(a.sha256 for a in prepared.assets if a.role == "base-model")
        apply_adapters(self.pipe, prepared.info.get("adapters", []), base_sha256, p.lora_scale, p.fuse_lora)
        speed_up(self.pipe, device, p.fuse_qkv, p.compile)
        self.sampler = self._prompts()

    def generate(self, shard: ShardSpec) -> Iterable[dict[str, Any]]:
        if self.pipe is None:
            raise GeneratorError("diffusion: generate() before load()")
        choices = [self.sampler.choose(shard.start + i, shard.sample_seed(i)) for i in range(shard.size)]
        seeds = [shard.sample_seed(i) for i in range(shard.size)]
        for start in range(0, shard.size, self.params.batch_size):
            batch = slice(start, start + self.params.batch_size)
            images = self.images([c.prompt for c in choices[batch]], seeds[batch])
            for choice, seed, image in zip(choices[batch], seeds[batch], images):
                yield {"image": image, "label": choice.label, "prompt": choice.prompt, "seed": seed,
                       "attributes": json.dumps(choice.attributes, sort_keys=True)}

    def images(self, prompts: list[str], seeds: list[int]) -> list:
        """uint8 (H, W, 3) images, one pipeline call for the whole batch, one generator per image."""
        import numpy as np
        import torch

        p = self.params
        # CPU generators: the initial noise of a seed is the same on every device (diffusers' advice).
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
        negative = [p.negative_prompt] * len(prompts) if p.negative_prompt else None
        with torch.inference_mode():
            out = self.pipe(prompt=prompts, negative_prompt=negative, num_inference_steps=p.steps,
                            guidance_scale=p.guidance_scale, height=p.height, width=p.width, generator=generators,
                            output_type="np")
        images = (np.clip(out.images, 0.0, 1.0) * 255).round().astype(np.uint8)
        return list(self._crop(images))

    def _crop(self, images):
        """The central `center_crop` pixels of (N, H, W, 3) images (the pipeline's native size is only
        known once it has generated; a crop larger than the image is an error, not a silent no-op)."""
        size = self.params.center_crop
        if size is None:
            return images
        height, width = images.shape[1:3]
        if size > min(height, width):
            raise GeneratorError(f"diffusion: center_crop {size} is larger than the generated images "
                                 f"({width}x{height})")
        top, left = (height - size) // 2, (width - size) // 2
        return images[:, top:top + size, left:left + size]
