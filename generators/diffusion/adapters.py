"""The diffusion generator's adapters: what the recipe asks for, how `prepare` trains or finds them (in
the model store, keyed by their inputs), and how `load` puts them on the pipeline.

    lora:                               # text-to-image LoRA on captioned folders, or ready files
      - {name: style, data: my-captioned-images/, steps: 300, rank: 8, scale: 0.8}
      - {name: other, weights: some/pytorch_lora_weights.safetensors}
    dreambooth:                         # LoRA-DreamBooth with prior preservation
      {instance_dir: my-dog/, instance_prompt: "a photo of sks dog"}
                                        # class_prompt (default "a photo of a {class}"): the base model's
                                        # images of each generator class not named in the instance prompt
                                        # (100 in all), so the other classes are not forgotten; or a list,
                                        # one prompt ("a photo of a dog"), or null
                                        # method: full -> every UNet weight is fine-tuned instead, into a
                                        # new pipeline directory that replaces the base model in `load`
    lora_scale: 1.0                     # multiplies every adapter's scale
    fuse_lora: false                    # fuse into the weights (faster generation; scales fixed)

A store entry holds `pytorch_lora_weights.safetensors` (diffusers LoRA format, base-model sha256 in
its metadata), `training.json` (losses, timings, data), `loss_curve.png` and `samples.png` (before
training on the top row, after on the bottom, same prompts and seeds).
"""

from __future__ import annotations

import base64
import copy
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from synthloom.errors import GeneratorError
from synthloom.provenance import sha256_file

from ..base import Asset, BuildContext
from .lora_training import LORA_FILE, Example, TrainConfig, TrainingParams, check_adapter_fits, image_grid, \
    native_resolution, plot_losses, read_captioned_folder, read_instance_folder, save_adapter, save_png, train_lora
from .prompts import CLASS_SLOT, template_slots

ADAPTER_CODE_VERSION = "1"
PREVIEWS = 4
PIPELINE_DIR = "pipeline"  # full DreamBooth's fine-tuned pipeline, inside its store entry
EVERY_CLASS = "a photo of a {class}"  # the default prior-preservation prompts: one per class of the generator
# LoRA-DreamBooth's default modules: the attention projections and the ResNet blocks' convolutions. On the
# Fashion-MNIST base model (3 seeds, benchmarks/RESULTS.md) the convolutions taught the new class better
# (0.93 vs 0.90) and kept the other classes better (0.947 vs 0.926; base model 0.954) for ~60 % more
# training time. Plain LoRA keeps peft's usual attention-only default.
DREAMBOOTH_UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2"]


def _pipeline_sha256(stored) -> str:
    """One sha256 over the fine-tuned pipeline's files (names + their sha256 from the store entry)."""
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(n for n in stored.files if n.startswith(PIPELINE_DIR + "/")):
        digest.update(f"{name}\0{stored.files[name]}\n".encode())
    return digest.hexdigest()


class LoraParams(TrainingParams):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    data: str | None = Field(default=None, description="Folder of images with captions to train on.")
    weights: str | None = Field(default=None, description="A ready LoRA safetensors file (or its folder).")
    allow_other_base: bool = False

    @model_validator(mode="after")
    def _one_source(self):
        if (self.data is None) == (self.weights is None):
            raise ValueError(f"adapter '{self.name}': give exactly one of data (to train) or weights (a file)")
        return self


class DreamBoothParams(TrainingParams):
    name: str = Field(default="dreambooth", pattern=r"^[A-Za-z0-9_-]+$")
    method: Literal["lora", "full"] = Field(
        default="lora", description="lora: a LoRA adapter; full: fine-tune every UNet weight (and the text "
        "encoder's with train_text_encoder) into a new pipeline directory (rank, alpha, unet_targets unused).")
    instance_dir: str
    instance_prompt: str = Field(min_length=1)
    class_prompt: str | list[str] | None = Field(
        default=EVERY_CLASS, description="Prior preservation on the base model's own images of: a template with a "
        "{class} slot, expanded over the generator's classes except those named in the instance prompt (the "
        "default: every other class the dataset will hold is kept; measured in benchmarks/RESULTS.md); a list of "
        "prompts; or one prompt. null: no prior preservation. num_class_images is split evenly between them.")
    num_class_images: int = Field(default=100, ge=1)
    prior_loss_weight: float = copy.deepcopy(TrainConfig.model_fields["prior_loss_weight"])  # declared once, there
    steps: int = 400
    unet_targets: list[str] | None = Field(
        default_factory=lambda: list(DREAMBOOTH_UNET_TARGETS), min_length=1,
        description="UNet module names LoRA adapts (peft target_modules). Default: the attention projections and "
        "the ResNet convolutions conv1, conv2 (they forgot less; benchmarks/RESULTS.md); null: attention only.")

    @model_validator(mode="after")
    def _class_prompts_given(self):
        if isinstance(self.class_prompt, list) and (not self.class_prompt or not all(p.strip() for p in self.class_prompt)):
            raise ValueError("dreambooth class_prompt: give at least one non-empty prompt")
        return self

    def class_prompts(self, class_phrases: list[str]) -> list[str]:
        """The prior-preservation prompts. Over the generator's classes by default: with one class prompt
        only ("a photo of a sneaker"), the classes not prompted drifted toward the new one (dress 1.00 ->
        0.39 on the Fashion-MNIST base model; benchmarks/RESULTS.md)."""
        if self.class_prompt is None:
            return []
        try:
            slots = [] if isinstance(self.class_prompt, list) else template_slots(self.class_prompt)
        except ValueError as error:
            raise GeneratorError(f"dreambooth class_prompt {self.class_prompt!r} is malformed ({error})") from None
        if isinstance(self.class_prompt, list):
            prompts = list(dict.fromkeys(self.class_prompt))
        elif CLASS_SLOT in slots:
            others = [s for s in slots if s != CLASS_SLOT]
            if others:
                raise GeneratorError(f"dreambooth class_prompt {self.class_prompt!r}: only the {{class}} slot can be "
                                     f"filled, not {others}")
            # A class named in the instance prompt is the one being taught ("sks dog", "ankle boot"): its
            # base-model images would pull the adapter back to what the base model draws for it.
            kept = [phrase for phrase in class_phrases
                    if not re.search(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])", self.instance_prompt)]
            prompts = list(dict.fromkeys(self.class_prompt.format(**{CLASS_SLOT: phrase}) for phrase in kept))
            if not prompts and "class_prompt" not in self.model_fields_set:
                return []  # the default, and the generator's only class is the instance's: nothing to keep
        else:
            prompts = [self.class_prompt]
        if not prompts:
            raise GeneratorError(f"dreambooth class_prompt {self.class_prompt!r}: no class prompt left (every class "
                                 f"is named in the instance prompt {self.instance_prompt!r})")
        if self.num_class_images < len(prompts):
            raise GeneratorError(f"dreambooth: num_class_images {self.num_class_images} is fewer than the "
                                 f"{len(prompts)} class prompts; give at least one image per prompt")
        return prompts

    def training_inputs(self) -> dict[str, Any]:
        inputs = super().training_inputs()
        if self.method == "lora":  # the keys of LoRA-DreamBooth entries made before `method` existed stay valid
            inputs.pop("method")
        return inputs


def _publish(name: str, entry: Path, summary: dict[str, Any]) -> None:
    """Loss curve and before/after samples as a Prefect artifact (data: URIs: the UI cannot load files)."""
    try:
        from prefect.artifacts import create_markdown_artifact
        from prefect.context import get_run_context

        get_run_context()
    except Exception:  # not inside a flow or task run: nothing to attach the artifact to
        return

    def embed(png: Path) -> str:
        return f"![{png.stem}](data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()})"

    losses = summary["losses"]
    markdown = (f"**Adapter `{name}`** ({summary['kind']}, {len(losses)} steps, {summary['seconds']:.1f} s"
                f"{', reused from the model store' if summary.get('reused') else ''})\n\n"
                f"loss: first {losses[0]:.4f}, last {losses[-1]:.4f}, mean of last 10% "
                f"{np.mean(losses[-max(1, len(losses) // 10):]):.4f}\n\n"
                f"{embed(entry / 'loss_curve.png')}\n\nSamples before (top) and after (bottom) fine-tuning, "
                f"same prompts and seeds:\n\n{embed(entry / 'samples.png')}")
    create_markdown_artifact(markdown=markdown, key=f"adapter-{name.lower().replace('_', '-')}",
                             description=f"Fine-tuning of adapter {name}")


class AdapterTrainer:
    """Trains (or finds in the store) every adapter a recipe asks for, on one fp32 copy of the base pipeline."""

    def __init__(self, model_dir: Path, base: Asset, ctx: BuildContext, steps: int, guidance_scale: float,
                 batch_size: int):
        self.model_dir, self.base, self.ctx = model_dir, base, ctx
        self.steps, self.guidance_scale, self.batch_size = steps, guidance_scale, batch_size
        self._pipe = None

    def pipe(self):
        from .pipeline import load_pipeline

        if self._pipe is None:
            self._pipe = load_pipeline(self.model_dir, "float32", self.ctx.device)
        elif getattr(self._pipe.unet, "peft_config", None):  # a previous adapter's layers: start clean
            self._pipe = load_pipeline(self.model_dir, "float32", self.ctx.device)
        return self._pipe

    def sample(self, pipe, prompts: list[str], seeds: list[int], resolution: int) -> list[np.ndarray]:
        import torch

        images = []
        for start in range(0, len(prompts), self.batch_size):
            gens = [torch.Generator("cpu").manual_seed(s) for s in seeds[start:start + self.batch_size]]
            with torch.inference_mode():
                out = pipe(prompts[start:start + self.batch_size], num_inference_steps=self.steps,
                           guidance_scale=self.guidance_scale, height=resolution, width=resolution,
                           generator=gens, output_type="np")
            images += list((np.clip(out.images, 0, 1) * 255).round().astype(np.uint8))
        return images

    # -- one adapter ----------------------------------------------------------------------------------
    def lora(self, spec: LoraParams) -> tuple[dict[str, Any], list[Asset]]:
        if spec.weights is not None:
            path = self.ctx.resolve_path(spec.weights)
            path = path / LORA_FILE if path.is_dir() else path
            if not path.is_file():
                raise GeneratorError(f"adapter '{spec.name}': weights file {path} not found")
            check_adapter_fits(self.pipe(), path, self.base.sha256, spec.allow_other_base)
            record = {"name": spec.name, "kind": "file", "path": str(path), "sha256": sha256_file(path),
                      "scale": spec.scale, "allow_other_base": spec.allow_other_base}
            return record, []
        examples = read_captioned_folder(self.ctx.resolve_path(spec.data))
        return self._train(spec, "lora", examples, class_prompts=None)

    def dreambooth(self, spec: DreamBoothParams, class_phrases: list[str]) -> tuple[dict[str, Any], list[Asset]]:
        examples = read_instance_folder(self.ctx.resolve_path(spec.instance_dir), spec.instance_prompt)
        return self._train(spec, f"dreambooth-{spec.method}", examples, spec.class_prompts(class_phrases))

    def _train(self, spec: TrainingParams, kind: str, examples: list[Example], class_prompts: list[str] | None):
        inputs = {"kind": kind, "code": ADAPTER_CODE_VERSION, "base_model_sha256": self.base.sha256,
                  "data": [[Path(e.path).name, e.sha256, e.caption] for e in examples],
                  "training": spec.training_inputs(), "preview": [self.steps, self.guidance_scale]}
        if isinstance(spec, DreamBoothParams):
            # One prompt stays a string: the keys of entries made before lists existed stay valid.
            class_prompt = class_prompts[0] if len(class_prompts) == 1 else (class_prompts or None)
            inputs["prior"] = {"class_prompt": class_prompt, "num_class_images": spec.num_class_images,
                               "prior_loss_weight": spec.prior_loss_weight, "class_image_steps": self.steps}
        stored = self.ctx.models.get_or_build(inputs, lambda work: self._build(spec, kind, examples, class_prompts, work))
        summary = json.loads((stored.path / "training.json").read_text())
        _publish(spec.name, stored.path, {**summary, "reused": stored.reused})
        # A LoRA file, or (full DreamBooth) the fine-tuned pipeline directory, hashed like a base model.
        weights, sha256 = (stored.path / PIPELINE_DIR, _pipeline_sha256(stored)) if kind == "dreambooth-full" \
            else (stored.path / LORA_FILE, stored.files[LORA_FILE])
        record = {"name": spec.name, "kind": kind, "path": str(weights), "sha256": sha256,
                  "scale": spec.scale, "store_key": stored.key, "reused": stored.reused,
                  "loss_first": summary["losses"][0], "loss_last": summary["losses"][-1],
                  "train_seconds": summary["seconds"], "loss_curve": str(stored.path / "loss_curve.png"),
                  "samples": str(stored.path / "samples.png")}
        role = "dreambooth-instance" if kind.startswith("dreambooth") else "lora-data"
        return record, [Asset(path=e.path, sha256=e.sha256, role=role) for e in examples]

    def _build(self, spec: TrainingParams, kind: str, examples: list[Example], class_prompts: list[str] | None,
               work: Path) -> None:
        pipe = self.pipe()
        resolution = spec.resolution or native_resolution(pipe)
        prompts = [examples[i % len(examples)].caption for i in range(PREVIEWS)]
        seeds = list(range(PREVIEWS))
        before = self.sample(pipe, prompts, seeds, resolution)
        class_examples = None
        extra: dict[str, Any] = {}
        if isinstance(spec, DreamBoothParams) and class_prompts:
            class_examples = self._class_images(pipe, spec, class_prompts, resolution, work)
            extra["prior_loss_weight"] = spec.prior_loss_weight
        full = kind == "dreambooth-full"
        config = spec.train_config(full=full, **extra)
        result = train_lora(pipe, examples, config, work, class_examples)
        after = self.sample(pipe, prompts, seeds, resolution)
        if full:
            pipe.save_pretrained(work / PIPELINE_DIR)
        else:
            save_adapter(pipe, work, self.base.sha256, spec.train_text_encoder)
        plot_losses(result.losses, work / "loss_curve.png", f"{kind} {spec.name}")
        save_png(image_grid(before + after, PREVIEWS), work / "samples.png")
        summary = {"kind": kind, "losses": result.losses, "seconds": result.seconds, "resumed_from": result.resumed_from,
                   "resolution": resolution, "preview_prompts": prompts, "preview_seeds": seeds,
                   "examples": [Path(e.path).name for e in examples],
                   "class_images": len(class_examples or []),
                   "class_images_per_prompt": dict(Counter(prompt for _, prompt in class_examples or []))}
        (work / "training.json").write_text(json.dumps(summary, indent=1) + "\n")
        self._pipe = None  # its UNet now carries this adapter's layers (or fine-tuned weights)

    def _class_images(self, pipe, spec: DreamBoothParams, prompts: list[str], resolution: int, work: Path):
        """The base model's own images of the class prompts, split evenly (image i is of prompt i mod the
        number of prompts, so the prior batches, drawn at random from all of them, mix every class). Kept in
        the work dir, so a resumed run reuses them."""
        from PIL import Image

        folder = work / ".class-images"
        folder.mkdir(parents=True, exist_ok=True)
        prompt_of = [prompts[i % len(prompts)] for i in range(spec.num_class_images)]
        have = sorted(folder.glob("*.png"))
        missing = list(range(len(have), spec.num_class_images))
        if missing:
            seeds = [1_000_003 * (spec.seed + 1) + i for i in missing]  # apart from the preview seeds
            images = self.sample(pipe, [prompt_of[i] for i in missing], seeds, resolution)
            for i, image in zip(missing, images):
                Image.fromarray(image).save(folder / f"{i:05d}.png")
        return [(np.asarray(Image.open(p).convert("RGB")), prompt_of[i])
                for i, p in enumerate(sorted(folder.glob("*.png")))]


def apply_adapters(pipe, adapters: list[dict[str, Any]], base_sha256: str, lora_scale: float, fuse: bool) -> None:
    """Load each adapter with `load_lora_weights` (after checking it fits this base model), combine them
    with their scales, and optionally fuse them into the weights."""
    adapters = [a for a in adapters if a["kind"] != "dreambooth-full"]  # a whole pipeline, loaded as the model
    if not adapters:
        return
    for adapter in adapters:
        path = Path(adapter["path"])
        check_adapter_fits(pipe, path, base_sha256, adapter.get("allow_other_base", False))
        pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=adapter["name"])
    names = [a["name"] for a in adapters]
    pipe.set_adapters(names, adapter_weights=[a["scale"] * lora_scale for a in adapters])
    if fuse:
        pipe.fuse_lora(adapter_names=names, lora_scale=1.0)  # scales were set by set_adapters

