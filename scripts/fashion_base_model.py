"""A small text-to-image base model trained here, on Fashion-MNIST with captions ("a photo of a sneaker").

No pretrained diffusion weights exist on this machine, so the `diffusion` generator's offline quality
checks need a base model trained on real data. This trains, on 2 CPU cores in bounded time:

1. a small `AutoencoderKL` (32 px RGB <-> 4 x 16 x 16 latents; reconstruction MSE + a small KL term,
   SD's recipe at toy scale), its `scaling_factor` set to 1 / std of the training latents;
2. a text-conditioned `UNet2DConditionModel` on those latents, jointly with a small `CLIPTextModel`
   (epsilon prediction, SD's scaled-linear DDPM schedule, captions dropped 10% of the time so
   classifier-free guidance works, an EMA of the UNet's weights for sampling).

The result is saved as an ordinary `StableDiffusionPipeline` directory (DDIM scheduler, our CLIP BPE
tokenizer) in the model store, keyed by the data's hash and the hyper-parameters, so the `diffusion`
generator loads it like any other model. Each run is bounded (`max_minutes`); it checkpoints into the
store's work folder and raises `TrainingPaused`, and the next run resumes there.

Why it lives in `scripts/`, beside `train_fashion_diffusion.py` (`make base-model`), and not in the
installed package: no generator runs it. A build only loads its output, an ordinary pipeline folder,
through `synthloom.generators.diffusion`; this trainer is a development tool, as diffusers keeps its
training scripts in `examples/` outside the library. Tests and benchmarks import it with `scripts/` on
their path (pyproject's pytest `pythonpath`; the benchmarks insert it).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from synthloom.errors import SynthloomError

CLASS_NAMES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
# Left out of training on purpose: the class the base model never saw, for the DreamBooth measurement
# (benchmarks/bench_fashion_dreambooth.py teaches it from ~8 images and checks the others are kept).
HELD_OUT_CLASSES = (9,)
CODE_VERSION = "2"
MAX_TOKENS = 16


class TrainingPaused(SynthloomError):
    """The run hit its time bound; the checkpoint is saved and the next run resumes from it."""


@dataclass
class BaseModelConfig:
    # Sized for ~30 min on 2 shared CPU cores from a profile of one step (RESULTS.md, "offline base
    # model"): 8 x 8 x 8 latents (a 3-level VAE), a 2-level UNet with attention only at 4 x 4: 0.6 s
    # per UNet step at batch 64 (attention at 8 x 8 too: 1.3 s; 16 x 16 latents: 2.2 s).
    vae_steps: int = 300
    unet_steps: int = 2400
    batch_size: int = 64
    vae_lr: float = 2e-3
    unet_lr: float = 1e-3
    warmup_steps: int = 100
    vae_channels: tuple[int, ...] = (16, 32, 64)
    latent_channels: int = 8
    unet_channels: tuple[int, int] = (64, 128)
    text_hidden: int = 64
    caption_dropout: float = 0.1
    ema_decay: float = 0.998
    train_images: int = 60000
    held_out: tuple[int, ...] = HELD_OUT_CLASSES
    seed: int = 0


def caption(label: int) -> str:
    return f"a photo of a {CLASS_NAMES[label]}"


def to_rgb32(images: np.ndarray) -> np.ndarray:
    """(N, 28, 28) uint8 -> (N, 3, 32, 32) float32 in [-1, 1] (zero-padded to 32: VAE sizes halve evenly)."""
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2)))
    x = padded.astype(np.float32) / 127.5 - 1.0
    return np.repeat(x[:, None], 3, axis=1)


def data_key(images: np.ndarray, labels: np.ndarray) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(images).tobytes())
    digest.update(np.ascontiguousarray(labels).tobytes())
    return digest.hexdigest()


def build_modules(config: BaseModelConfig, work: Path):
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from diffusion_configs import BOS, EOS, clip_tokenizer

    torch.manual_seed(config.seed)
    tokenizer = clip_tokenizer(work / ".tokenizer-files", max_length=MAX_TOKENS)
    eos = tokenizer.convert_tokens_to_ids(EOS)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=config.text_hidden, intermediate_size=2 * config.text_hidden,
        num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=MAX_TOKENS,
        projection_dim=config.text_hidden, bos_token_id=tokenizer.convert_tokens_to_ids(BOS), eos_token_id=eos,
        pad_token_id=eos))
    levels = len(config.vae_channels)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=config.latent_channels,
                        block_out_channels=config.vae_channels, layers_per_block=1,
                        down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels,
                        norm_num_groups=8, sample_size=32)
    c1, c2 = config.unet_channels
    # Cross-attention only at the coarse level and in the mid block (4 x 4 tokens): the caption picks the
    # class, a global property of the image, and the transformer blocks at 8 x 8 doubled a step's time.
    side, lat = 32 // 2 ** (levels - 1), config.latent_channels
    unet = UNet2DConditionModel(sample_size=side, in_channels=lat, out_channels=lat, layers_per_block=1,
                                block_out_channels=(c1, c2), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=config.text_hidden,
                                attention_head_dim=32, norm_num_groups=16)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    return tokenizer, text_encoder, vae, unet, scheduler


def learning_rate_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10%: a large rate early, a settled model at the end."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train_base_model(images: np.ndarray, labels: np.ndarray, config: BaseModelConfig, work: Path,
                     max_minutes: float, log: Callable[[str], None] = print) -> None:
    """Train into `work` (resuming from `work/.state.pt`) and save the pipeline there when done; raise
    TrainingPaused when `max_minutes` run out first."""
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    deadline = time.monotonic() + 60 * max_minutes
    tokenizer, text_encoder, vae, unet, scheduler = build_modules(config, work)
    ema = copy.deepcopy(unet).requires_grad_(False)
    vae_opt = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr)
    unet_opt = torch.optim.AdamW(list(unet.parameters()) + list(text_encoder.parameters()), lr=config.unet_lr,
                                 weight_decay=0.0)
    generator = torch.Generator().manual_seed(config.seed)
    state_path = work / ".state.pt"
    state = {"vae_step": 0, "unet_step": 0, "vae_losses": [], "unet_losses": [], "seconds": 0.0}
    if state_path.is_file():
        saved = torch.load(state_path, weights_only=False)
        for module, key in ((vae, "vae"), (unet, "unet"), (ema, "ema"), (text_encoder, "text_encoder"),
                            (vae_opt, "vae_opt"), (unet_opt, "unet_opt")):
            module.load_state_dict(saved[key])
        generator.set_state(saved["generator"])
        state = saved["state"]
        log(f"resuming: VAE step {state['vae_step']}/{config.vae_steps}, UNet step {state['unet_step']}/{config.unet_steps}")
    started, seconds_before = time.monotonic(), state["seconds"]

    def checkpoint() -> None:
        state["seconds"] = seconds_before + time.monotonic() - started
        torch.save({"vae": vae.state_dict(), "unet": unet.state_dict(), "ema": ema.state_dict(),
                    "text_encoder": text_encoder.state_dict(), "vae_opt": vae_opt.state_dict(),
                    "unet_opt": unet_opt.state_dict(), "generator": generator.get_state(), "state": state},
                   state_path.with_suffix(".tmp"))
        state_path.with_suffix(".tmp").replace(state_path)

    keep = ~np.isin(labels[:config.train_images], config.held_out)  # the held-out classes are never seen
    pixels = torch.from_numpy(to_rgb32(images[:config.train_images][keep]))
    ids_of_class = tokenizer([caption(c) for c in range(len(CLASS_NAMES))] + [""], padding="max_length",
                             max_length=MAX_TOKENS, truncation=True, return_tensors="pt").input_ids
    labels_t = torch.from_numpy(labels[:config.train_images][keep].astype(np.int64))

    # -- stage 1: the autoencoder ------------------------------------------------------------------
    vae.train()
    while state["vae_step"] < config.vae_steps:
        rows = torch.randint(0, len(pixels), (config.batch_size,), generator=generator)
        x = pixels[rows]
        dist = vae.encode(x).latent_dist
        z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=generator)
        recon = vae.decode(z).sample
        loss = F.mse_loss(recon, x) + 1e-6 * dist.kl().mean()
        loss.backward()
        for group in vae_opt.param_groups:
            group["lr"] = config.vae_lr * learning_rate_factor(state["vae_step"], config.vae_steps, config.warmup_steps)
        vae_opt.step()
        vae_opt.zero_grad()
        state["vae_losses"].append(float(loss.detach()))
        state["vae_step"] += 1
        if state["vae_step"] % 100 == 0:
            log(f"vae step {state['vae_step']}: loss {np.mean(state['vae_losses'][-100:]):.4f}")
        if time.monotonic() > deadline:
            checkpoint()
            raise TrainingPaused(f"time bound reached at VAE step {state['vae_step']}; run again to resume")
    vae.eval().requires_grad_(False)

    # Latents of the whole set once (the VAE is frozen from here on).
    with torch.no_grad():
        parts = [vae.encode(pixels[i:i + 1000]).latent_dist for i in range(0, len(pixels), 1000)]
    mean, std = torch.cat([p.mean for p in parts]), torch.cat([p.std for p in parts])
    if "scaling_factor" not in state:
        state["scaling_factor"] = float(1.0 / mean.std())
    scaling = state["scaling_factor"]

    # -- stage 2: UNet + text encoder --------------------------------------------------------------
    noise_scheduler = DDPMScheduler.from_config(scheduler.config)
    unet.train()
    text_encoder.train()
    while state["unet_step"] < config.unet_steps:
        rows = torch.randint(0, len(mean), (config.batch_size,), generator=generator)
        latents = (mean[rows] + std[rows] * torch.randn(mean[rows].shape, generator=generator)) * scaling
        classes = labels_t[rows].clone()
        drop = torch.rand(len(rows), generator=generator) < config.caption_dropout
        classes[drop] = len(CLASS_NAMES)  # the empty caption: unconditional
        noise = torch.randn(latents.shape, generator=generator)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(rows),), generator=generator)
        hidden = text_encoder(ids_of_class[classes])[0]
        prediction = unet(noise_scheduler.add_noise(latents, noise, t), t, hidden).sample
        loss = F.mse_loss(prediction, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        for group in unet_opt.param_groups:
            group["lr"] = config.unet_lr * learning_rate_factor(state["unet_step"], config.unet_steps,
                                                                config.warmup_steps)
        unet_opt.step()
        unet_opt.zero_grad()
        with torch.no_grad():
            decay = min(config.ema_decay, (1 + state["unet_step"]) / (10 + state["unet_step"]))
            for e, p in zip(ema.parameters(), unet.parameters()):
                e.lerp_(p, 1 - decay)
        state["unet_losses"].append(float(loss.detach()))
        state["unet_step"] += 1
        if state["unet_step"] % 100 == 0:
            log(f"unet step {state['unet_step']}: loss {np.mean(state['unet_losses'][-100:]):.4f}")
        if state["unet_step"] % 250 == 0:
            checkpoint()
        if time.monotonic() > deadline and state["unet_step"] < config.unet_steps:
            checkpoint()
            raise TrainingPaused(f"time bound reached at UNet step {state['unet_step']}; run again to resume")

    vae.register_to_config(scaling_factor=scaling)
    text_encoder.eval()
    pipe = StableDiffusionPipeline(unet=ema.eval(), vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(work / "pipeline")
    state["seconds"] = seconds_before + time.monotonic() - started
    trained = [c for c in range(len(CLASS_NAMES)) if c not in config.held_out]
    (work / "training.json").write_text(json.dumps({"config": asdict(config), "classes": CLASS_NAMES,
                                                    "trained_classes": [CLASS_NAMES[c] for c in trained],
                                                    "held_out_classes": [CLASS_NAMES[c] for c in config.held_out],
                                                    "captions": [caption(c) for c in trained],
                                                    "train_images": int(keep.sum()), **state}, indent=1) + "\n")
    from synthloom.generators.diffusion.lora_training import plot_losses

    plot_losses(state["unet_losses"], work / "unet_loss_curve.png", "base model UNet")
    plot_losses(state["vae_losses"], work / "vae_loss_curve.png", "base model VAE")
