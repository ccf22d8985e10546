"""LoRA fine-tuning of a Stable-Diffusion-style pipeline: captioned folders (text-to-image LoRA) and
LoRA-DreamBooth with prior preservation.

The loop follows diffusers' `train_text_to_image_lora.py` and `train_dreambooth_lora.py` (peft
`LoraConfig` on the UNet's attention projections, optionally on the text encoder's; epsilon or
v-prediction targets from the noise scheduler's config; prior loss on class images chunked off the
batch), written compactly because those scripts are CLI programs around `accelerate`, not callable
functions. Differences, on purpose: VAE latents are encoded once (the data are a handful of images),
each step draws its batch, noise and timesteps from one seeded `torch.Generator` (so a run is
reproducible on CPU and resumable mid-way from `.checkpoint.pt`), and the adapter is written with the
pipeline's own `save_lora_weights`, so `load_lora_weights` reads it back, plus the base model's sha256
in the file's metadata.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from synthloom.errors import GeneratorError
from synthloom.provenance import sha256_file

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
LORA_FILE = "pytorch_lora_weights.safetensors"
BASE_KEY = "synthloom_base_model_sha256"
UNET_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
CHECKPOINT = ".checkpoint.pt"
# LoRA key infixes (peft and diffusers' older names) -> which side of the base layer their shape gives.
SIDES = {".lora_A.": "in", ".lora.down.": "in", ".lora_B.": "out", ".lora.up.": "out"}


# -- data ---------------------------------------------------------------------------------------------
@dataclass
class Example:
    path: str
    sha256: str
    caption: str


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def read_captioned_folder(folder: Path) -> list[Example]:
    """Images with captions: `metadata.jsonl` lines {"file_name", "text"} (the HF imagefolder layout) or
    a `<image stem>.txt` beside each image. An image without a caption is an error naming it."""
    if not folder.is_dir():
        raise GeneratorError(f"{folder}: LoRA training folder not found")
    images = image_files(folder)
    if not images:
        raise GeneratorError(f"{folder}: no images ({', '.join(IMAGE_EXTENSIONS)}) to fine-tune on")
    captions: dict[str, str] = {}
    metadata = folder / "metadata.jsonl"
    if metadata.is_file():
        for number, line in enumerate(metadata.read_text().splitlines(), 1):
            if line.strip():
                try:
                    record = json.loads(line)
                    captions[record["file_name"]] = str(record["text"])
                except (ValueError, KeyError, TypeError):
                    raise GeneratorError(f"{metadata}:{number}: expected {{\"file_name\": ..., \"text\": ...}}") from None
    examples = []
    for image in images:
        sidecar = image.with_suffix(".txt")
        caption = captions.get(image.name) or (sidecar.read_text().strip() if sidecar.is_file() else "")
        if not caption:
            raise GeneratorError(f"{image}: no caption (add {sidecar.name} or a metadata.jsonl line)")
        examples.append(Example(str(image), sha256_file(image), caption))
    return examples


def read_instance_folder(folder: Path, prompt: str) -> list[Example]:
    """DreamBooth instance images: all of one size (a mixed set is refused, naming two sizes)."""
    from PIL import Image

    if not folder.is_dir():
        raise GeneratorError(f"{folder}: DreamBooth instance folder not found")
    images = image_files(folder)
    if not images:
        raise GeneratorError(f"{folder}: no instance images")
    sizes: dict[tuple[int, int], Path] = {}
    for path in images:
        try:
            with Image.open(path) as image:
                sizes.setdefault(image.size, path)
        except OSError as error:
            raise GeneratorError(f"{path}: not a readable image ({error})") from None
    if len(sizes) > 1:
        (size_a, file_a), (size_b, file_b) = list(sizes.items())[:2]
        raise GeneratorError(f"{folder}: instance images have mixed sizes ({file_a.name} is {size_a[0]}x{size_a[1]}, "
                             f"{file_b.name} is {size_b[0]}x{size_b[1]}); give images of one size")
    return [Example(str(p), sha256_file(p), prompt) for p in images]


def load_image(path: str | Path, resolution: int) -> np.ndarray:
    """RGB uint8, shorter side resized to `resolution`, centre-cropped square (diffusers' default)."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        scale = resolution / min(image.size)
        image = image.resize((max(resolution, round(image.width * scale)), max(resolution, round(image.height * scale))),
                             Image.BICUBIC)
        left, top = (image.width - resolution) // 2, (image.height - resolution) // 2
        return np.asarray(image.crop((left, top, left + resolution, top + resolution)))


# -- training -----------------------------------------------------------------------------------------
class TrainingParams(BaseModel):
    """What an adapter's training run takes from the recipe (LoRA and DreamBooth params extend it): every
    default and bound is declared here, once; `TrainConfig` reuses these declarations."""

    model_config = ConfigDict(extra="forbid")

    rank: int = Field(default=4, ge=1, le=256)
    alpha: float | None = Field(default=None, gt=0, description="LoRA alpha; None: equal to rank.")
    steps: int = Field(default=200, ge=1)
    learning_rate: float = Field(default=1e-4, gt=0)
    batch_size: int = Field(default=1, ge=1)
    resolution: int | None = Field(default=None, ge=8, description="None: the model's native size.")
    train_text_encoder: bool = False
    seed: int = 0
    checkpoint_every: int = Field(default=50, ge=0, description="Steps between resume checkpoints (0: none).")
    scale: float = Field(default=1.0, description="This adapter's weight when several are combined.")
    unet_targets: list[str] | None = Field(
        default=None, min_length=1, description="UNet module names LoRA adapts (peft target_modules). None: the "
        "attention projections to_q, to_k, to_v, to_out.0; add conv1, conv2 to adapt the ResNet blocks too.")

    def train_config(self, **extra) -> "TrainConfig":
        fields = {name: getattr(self, name) for name in TrainConfig.model_fields if name in TrainingParams.model_fields}
        return TrainConfig(**{**fields, **extra})

    def training_inputs(self) -> dict[str, Any]:
        # Neither scale nor checkpointing changes the trained weights; unet_targets only when set (so the
        # keys of adapters trained before the option existed stay the same).
        return self.model_dump(exclude={"scale", "checkpoint_every"} | ({"unet_targets"} if self.unet_targets is None
                                                                          else set()))


def _param(name: str) -> Any:
    """TrainingParams' declaration of `name` (default, bounds, description): declared there, once."""
    return copy.deepcopy(TrainingParams.model_fields[name])


class TrainConfig(BaseModel):
    """One adapter (or full fine-tuning) run: TrainingParams' training fields, plus DreamBooth's prior loss
    weight and whether the whole UNet is trained."""

    model_config = ConfigDict(extra="forbid")

    rank: int = _param("rank")
    alpha: float | None = _param("alpha")
    steps: int = _param("steps")
    learning_rate: float = _param("learning_rate")
    batch_size: int = _param("batch_size")
    resolution: int | None = _param("resolution")
    train_text_encoder: bool = _param("train_text_encoder")
    seed: int = _param("seed")
    checkpoint_every: int = _param("checkpoint_every")
    prior_loss_weight: float = Field(default=1.0, ge=0)  # DreamBoothParams reuses this declaration
    unet_targets: list[str] | None = _param("unet_targets")  # None: UNET_TARGETS (the attention projections)
    full: bool = False  # full fine-tuning of the UNet (and text encoder): DreamBooth's original form


@dataclass
class TrainResult:
    losses: list[float]
    seconds: float
    resumed_from: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def native_resolution(pipe) -> int:
    return int(pipe.unet.config.sample_size * pipe.vae_scale_factor)


def require_sd_style(pipe) -> None:
    """LoRA training here covers UNet + one CLIP text encoder pipelines (SD 1.x/2.x); say so otherwise."""
    missing = [name for name in ("unet", "vae", "text_encoder", "tokenizer") if getattr(pipe, name, None) is None]
    if missing or getattr(pipe, "text_encoder_2", None) is not None:
        raise GeneratorError(f"LoRA training needs a Stable-Diffusion-1/2-style pipeline (UNet, VAE, one text "
                             f"encoder); {type(pipe).__name__} is not one. Generation with it works; train its "
                             f"adapter elsewhere and give it as `weights:`")


def _encode_latents(pipe, images: list[np.ndarray]):
    import torch

    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    with torch.no_grad():
        dist = pipe.vae.encode(pixels.to(pipe.device)).latent_dist
    return dist.mean, dist.std


def _tokens(pipe, captions: list[str]):
    return pipe.tokenizer(captions, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                          truncation=True, return_tensors="pt").input_ids.to(pipe.device)


def train_lora(pipe, examples: list[Example], config: TrainConfig, work: Path,
               class_examples: list[tuple[np.ndarray, str]] | None = None,
               log: Callable[[str], None] = print) -> TrainResult:
    """Add LoRA adapters to `pipe.unet` (and text encoder) and train them on `examples` (plus the class
    images' prior loss when given). The adapters stay on `pipe` for the after-training samples.
    With `config.full`, no adapters: every UNet (and text encoder) weight is trained in place."""
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler
    from peft import LoraConfig

    require_sd_style(pipe)
    resolution = config.resolution or native_resolution(pipe)
    alpha = config.alpha or config.rank
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    unet, text_encoder = pipe.unet, pipe.text_encoder
    for module in (unet, text_encoder, pipe.vae):
        module.requires_grad_(False)
    if config.full:
        unet.requires_grad_(True)
        text_encoder.requires_grad_(config.train_text_encoder)
    else:
        unet.add_adapter(LoraConfig(r=config.rank, lora_alpha=alpha, init_lora_weights="gaussian",
                                    target_modules=config.unet_targets or UNET_TARGETS))
        if config.train_text_encoder:
            text_encoder.add_adapter(LoraConfig(r=config.rank, lora_alpha=alpha, init_lora_weights="gaussian",
                                                target_modules=TEXT_TARGETS))
    trainable = [p for m in (unet, text_encoder) for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate)

    mean, std = _encode_latents(pipe, [load_image(e.path, resolution) for e in examples])
    ids = _tokens(pipe, [e.caption for e in examples])
    prior = None
    if class_examples:
        prior = (*_encode_latents(pipe, [image for image, _ in class_examples]),
                 _tokens(pipe, [caption for _, caption in class_examples]))
    scaling = pipe.vae.config.scaling_factor

    generator = torch.Generator("cpu").manual_seed(config.seed)
    losses: list[float] = []
    start_step = 0
    checkpoint = work / CHECKPOINT
    if checkpoint.is_file():  # resume a run that was interrupted
        state = torch.load(checkpoint, weights_only=False)
        _lora_params_load(unet, text_encoder, state["lora"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        losses, start_step = state["losses"], state["step"]
        log(f"resuming {'full' if config.full else 'LoRA'} training at step {start_step} of {config.steps}")

    unet.train()
    text_encoder.train(config.train_text_encoder)
    started = time.perf_counter()

    def draw(latent_mean, latent_std, token_ids):
        rows = torch.randint(0, len(latent_mean), (config.batch_size,), generator=generator)
        sample = latent_mean[rows] + latent_std[rows] * torch.randn(latent_mean[rows].shape, generator=generator)
        return sample * scaling, token_ids[rows]

    for step in range(start_step, config.steps):
        latents, token_ids = draw(mean, std, ids)
        if prior is not None:
            prior_latents, prior_ids = draw(*prior)
            latents, token_ids = torch.cat([latents, prior_latents]), torch.cat([token_ids, prior_ids])
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(latents),), generator=generator)
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        with torch.set_grad_enabled(config.train_text_encoder):
            hidden = text_encoder(token_ids)[0]
        prediction = unet(noisy, timesteps, hidden).sample
        target = noise if noise_scheduler.config.prediction_type == "epsilon" else \
            noise_scheduler.get_velocity(latents, noise, timesteps)
        if prior is not None:
            prediction, prediction_prior = prediction.chunk(2)
            target, target_prior = target.chunk(2)
            loss = F.mse_loss(prediction.float(), target.float()) + \
                config.prior_loss_weight * F.mse_loss(prediction_prior.float(), target_prior.float())
        else:
            loss = F.mse_loss(prediction.float(), target.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
        if config.checkpoint_every and (step + 1) % config.checkpoint_every == 0 and step + 1 < config.steps:
            torch.save({"lora": _lora_params(unet, text_encoder), "optimizer": optimizer.state_dict(),
                        "generator": generator.get_state(), "losses": losses, "step": step + 1}, checkpoint)
    unet.eval()
    text_encoder.eval()
    return TrainResult(losses, time.perf_counter() - started, start_step)


def _lora_params(unet, text_encoder) -> dict[str, Any]:
    return {f"{prefix}.{name}": p.detach().clone() for prefix, module in (("unet", unet), ("te", text_encoder))
            for name, p in module.named_parameters() if p.requires_grad}


def _lora_params_load(unet, text_encoder, state: dict[str, Any]) -> None:
    import torch

    with torch.no_grad():
        for prefix, module in (("unet", unet), ("te", text_encoder)):
            for name, p in module.named_parameters():
                if p.requires_grad:
                    p.copy_(state[f"{prefix}.{name}"])


def save_adapter(pipe, folder: Path, base_sha256: str, train_text_encoder: bool) -> Path:
    """The trained adapters as one diffusers LoRA safetensors file, with the base model's hash in its
    metadata so loading it onto another base model is caught."""
    from peft.utils import get_peft_model_state_dict
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    # peft's key format (lora_A/lora_B), which load_lora_weights reads as is. Not diffusers'
    # convert_state_dict_to_diffusers: it renames only attention keys (to lora.down/up) and leaves conv
    # keys in peft format, and the loader then reads the mixed file as peft and drops the attention ones.
    unet_layers = get_peft_model_state_dict(pipe.unet)
    text_layers = get_peft_model_state_dict(pipe.text_encoder) if train_text_encoder else None
    type(pipe).save_lora_weights(save_directory=str(folder), unet_lora_layers=unet_layers,
                                 text_encoder_lora_layers=text_layers, weight_name=LORA_FILE)
    path = folder / LORA_FILE
    with safe_open(str(path), "pt") as handle:
        metadata = dict(handle.metadata() or {})
    save_file(load_file(str(path)), str(path), metadata={**metadata, BASE_KEY: base_sha256})
    return path


# -- checking an adapter against a base model ---------------------------------------------------------
def check_adapter_fits(pipe, path: Path, base_sha256: str, allow_other_base: bool = False) -> None:
    """Refuse a LoRA file made for another base model: every peft-format key must name a module of this
    pipeline with matching in/out features, and a file we trained must name this base model's hash."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata() or {}
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except Exception as error:
        raise GeneratorError(f"{path}: not a readable safetensors LoRA file ({error})") from None
    modules = {"unet": dict(pipe.unet.named_modules()),
               "text_encoder": dict(pipe.text_encoder.named_modules()) if getattr(pipe, "text_encoder", None) else {}}
    checked = 0
    for key, shape in shapes.items():
        side = next((side for marker, side in SIDES.items() if marker in key), None)
        prefix, _, rest = key.partition(".")
        if side is None or prefix not in modules:
            continue
        name = rest.split(next(m for m in SIDES if m in key))[0]
        module = _unwrapped(modules[prefix], name)
        if module is None:
            raise GeneratorError(f"{path}: LoRA made for another base model: {prefix} has no module '{name}'")
        wanted = getattr(module, f"{side}_features", getattr(module, f"{side}_channels", None))
        got = shape[1] if side == "in" else shape[0]
        if wanted is not None and wanted != got:
            raise GeneratorError(f"{path}: LoRA made for another base model: {prefix}.{name} has "
                                 f"{side}_features {wanted}, the adapter {got}")
        checked += 1
    made_for = metadata.get(BASE_KEY)
    if not checked and not made_for:
        raise GeneratorError(f"{path}: no LoRA weights in diffusers/peft format (keys like unet.<module>.lora_A.weight)")
    if made_for and made_for != base_sha256 and not allow_other_base:
        raise GeneratorError(f"{path}: LoRA was trained on base model sha256 {made_for[:12]}…, but this pipeline is "
                             f"{base_sha256[:12]}… (another base model); set allow_other_base: true to load it anyway")


def _unwrapped(modules: dict, name: str):
    """The base layer `name`, also when peft has already wrapped it (name.base_layer)."""
    module = modules.get(name)
    base = modules.get(name + ".base_layer")
    return base if base is not None else module


# -- pictures of a run ---------------------------------------------------------------------------------
def image_grid(images: list[np.ndarray], columns: int) -> np.ndarray:
    rows = -(-len(images) // columns)
    h, w, c = images[0].shape
    grid = np.full((rows * h, columns * w, c), 255, dtype=np.uint8)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        grid[r * h:(r + 1) * h, col * w:(col + 1) * w] = image
    return grid


def save_png(array: np.ndarray, path: Path, min_side: int = 256) -> Path:
    from PIL import Image

    image = Image.fromarray(array)
    if min(image.size) < min_side:  # tiny test images: upscale so a person can see them
        factor = -(-min_side // min(image.size))
        image = image.resize((image.width * factor, image.height * factor), Image.NEAREST)
    image.save(path)
    return path


def plot_losses(losses: list[float], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    ax.plot(range(1, len(losses) + 1), losses, lw=0.8, alpha=0.5, label="step")
    if len(losses) >= 10:
        window = max(5, len(losses) // 20)
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(range(window, len(losses) + 1), smooth, lw=1.6, label=f"mean of {window}")
    ax.set_xlabel("step")
    ax.set_ylabel("MSE loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
