"""The DCGAN training loop: checkpointed every epoch (a killed run resumes where it stopped), watched for
mode collapse and NaN losses, with a loss curve and a sample grid per epoch.

Why our own loop, not a trainer library: the loop is ~40 lines, and what it needs (bit-exact resume
including the data-order RNG, a diversity audit on a fixed noise batch every epoch, stopping on a
non-finite loss while keeping the last good checkpoint) is exactly what generic trainers make awkward.

Techniques (each a `TrainConfig` field, measured in benchmarks/RESULTS.md): `loss` bce (the DCGAN
paper) or hinge (SN-GAN, BigGAN); `spectral_norm` in D; one-sided `label_smoothing` (bce); an EMA copy
of G (`ema`, used for generation); class-`balanced` batches; TTUR (`lr_d` != `lr_g`); `diffaugment`
(DiffAugment, diffaugment.py: the same random augmentation of real and fake images before D).
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator

from synthloom.errors import GeneratorError, ModelRejectedError
from synthloom.faults import crash_point, injected

from .diffaugment import diff_augment, parse_policy
from .nets import DCGANDiscriminator, DCGANGenerator
from .params import DCGANParams

CHECKPOINT = ".checkpoint/last.pt"  # hidden: the model store drops it when the entry is committed
HISTORY = "history.json"


def _param(name: str) -> Any:
    """DCGANParams' declaration of `name` (default, bounds, description): declared there, once."""
    return copy.deepcopy(DCGANParams.model_fields[name])


class TrainConfig(BaseModel):
    """One training run. The hyper-parameters are DCGANParams' fields (their defaults and bounds live
    there); `channels` and `num_classes` come from the reference, `seed` is `train_seed`."""

    model_config = ConfigDict(extra="forbid")

    resolution: Literal[8, 16, 28, 32, 64] = _param("resolution")
    channels: Literal[1, 3] = 1
    num_classes: int = Field(default=0, ge=0)
    nz: int = _param("nz")
    ngf: int = _param("ngf")
    ndf: int = _param("ndf")
    epochs: int = _param("epochs")
    batch_size: int = _param("batch_size")
    lr_g: float = _param("lr_g")
    lr_d: float = _param("lr_d")
    beta1: float = _param("beta1")
    beta2: float = _param("beta2")
    loss: Literal["bce", "hinge"] = _param("loss")  # bce | hinge
    spectral_norm: bool = _param("spectral_norm")
    label_smoothing: float = _param("label_smoothing")  # real target 1 - s (bce only; one-sided, Salimans et al. 2016)
    ema: float = _param("ema")  # decay of the EMA generator; 0 = off
    balanced: bool = _param("balanced")  # draw batches class-balanced
    diffaugment: str = _param("diffaugment")  # DiffAugment policy before every D pass; "" = off
    seed: int = _param("train_seed")
    collapse_ratio: float = _param("collapse_ratio")  # a class whose spread / real spread falls below this is collapsed
    monitor_per_class: int = Field(default=32, ge=1)

    @field_validator("diffaugment")
    @classmethod
    def _known_policy(cls, value: str) -> str:
        return ",".join(parse_policy(value))

    @classmethod
    def from_params(cls, params: DCGANParams, channels: int, num_classes: int) -> "TrainConfig":
        """The run a generator's params ask for, on a reference with `channels` and `num_classes`."""
        names = [name for name in cls.model_fields if name in DCGANParams.model_fields and name != "channels"]
        return cls(channels=channels, num_classes=num_classes, seed=params.train_seed,
                   **{name: getattr(params, name) for name in names})

    def nets(self) -> tuple[DCGANGenerator, DCGANDiscriminator]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            g = DCGANGenerator(self.nz, self.num_classes, self.channels, self.resolution, self.ngf)
            d = DCGANDiscriminator(self.num_classes, self.channels, self.resolution, self.ndf, self.spectral_norm)
        return g, d


@dataclass
class TrainData:
    """Training images in [-1, 1] (N, C, H, W) at the training resolution, int labels, class names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str] = field(default_factory=list)


def d_loss(kind: str, real: torch.Tensor, fake: torch.Tensor, smoothing: float) -> torch.Tensor:
    if kind == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    return (F.binary_cross_entropy_with_logits(real, torch.full_like(real, 1.0 - smoothing))
            + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))


def g_loss(kind: str, fake: torch.Tensor) -> torch.Tensor:
    if kind == "hinge":
        return -fake.mean()
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))  # the non-saturating loss


def batch_order(labels: torch.Tensor, balanced: bool, generator: torch.Generator) -> torch.Tensor:
    """One epoch of sample indices: a permutation, or a class-balanced draw of the same length."""
    n = len(labels)
    if not balanced:
        return torch.randperm(n, generator=generator)
    counts = torch.bincount(labels).clamp(min=1).float()
    return torch.multinomial((1.0 / counts)[labels], n, replacement=True, generator=generator)


def train_step(g, d, opt_g, opt_d, real, labels, cfg: TrainConfig, noise_gen: torch.Generator,
               aug_gen: torch.Generator | None = None):
    """One D step and one G step; returns (loss_d, loss_g) as tensors (no host sync). With
    `cfg.diffaugment`, every image D sees (real and fake, in both steps) is augmented first, each pass its
    own draw from `aug_gen` (as the reference does)."""
    conditional = cfg.num_classes > 0
    y = labels if conditional else None
    policy = cfg.diffaugment.split(",") if cfg.diffaugment else []  # validated and normalised by TrainConfig
    aug = (lambda x: diff_augment(x, policy, aug_gen)) if policy else (lambda x: x)  # noqa: E731
    z = torch.randn(len(real), cfg.nz, generator=noise_gen).to(real.device)
    fake = g(z, y)
    opt_d.zero_grad(set_to_none=True)
    loss_d = d_loss(cfg.loss, d(aug(real), y), d(aug(fake.detach()), y), cfg.label_smoothing)
    loss_d.backward()
    opt_d.step()
    opt_g.zero_grad(set_to_none=True)
    loss_g = g_loss(cfg.loss, d(aug(fake), y))
    loss_g.backward()
    opt_g.step()
    return loss_d.detach(), loss_g.detach()


@torch.no_grad()
def ema_update(ema_g, g, decay: float) -> None:
    for p_ema, p in zip(ema_g.parameters(), g.parameters()):
        p_ema.lerp_(p, 1.0 - decay)
    for b_ema, b in zip(ema_g.buffers(), g.buffers()):
        b_ema.copy_(b)  # BatchNorm running statistics follow the live generator


def monitor_batch(cfg: TrainConfig, classes: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The fixed noise (and labels) the per-epoch grid and collapse check use."""
    per = cfg.monitor_per_class
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    if classes:
        labels = torch.arange(classes).repeat_interleave(per)
        return torch.randn(len(labels), cfg.nz, generator=gen), labels
    return torch.randn(per * 4, cfg.nz, generator=gen), None


@torch.no_grad()
def render(g, z: torch.Tensor, labels: torch.Tensor | None, device, batch: int = 256) -> torch.Tensor:
    """Images in [0, 1] from noise, in eval mode (BatchNorm running statistics: batch-independent)."""
    was = g.training
    g.eval()
    out = torch.cat([g(z[i:i + batch].to(device), None if labels is None else labels[i:i + batch].to(device)).cpu()
                     for i in range(0, len(z), batch)])
    g.train(was)
    return (out + 1) / 2


def collapse_check(fake01: torch.Tensor, fake_labels, real01: torch.Tensor, real_labels, collapse_ratio: float):
    """The diversity audit on pixels: per-class spread of generated vs real images."""
    from synthloom.evaluators.diversity import diversity_audit

    fl = None if fake_labels is None else fake_labels.numpy()
    rl = None if fake_labels is None else real_labels.numpy()
    audit = diversity_audit(fake01.flatten(1).numpy(), fl, real_feats=real01.flatten(1).numpy(), real_labels=rl,
                            collapse_ratio=collapse_ratio, feature_name="pixels")
    return {"min_spread_ratio": audit["min_spread_ratio"], "collapsed_classes": audit["mode_collapse"],
            "flag_mode_collapse": audit["flag_mode_collapse"], "near_duplicate_rate": audit["near_duplicate_rate"]}


def monitor_real(data: TrainData, per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to `per_class` real training images of each class in [0, 1]: the collapse check's yardstick."""
    rng = np.random.default_rng(seed)
    labels = data.labels.numpy()
    keep = np.concatenate([np.sort(rng.permutation(np.flatnonzero(labels == c))[:per_class])
                           for c in np.unique(labels)])
    return (data.images[keep] + 1) / 2, data.labels[keep]


class Trainer:
    """Train (or resume) a DCGAN in `work`; writes weights, history, loss curve and per-epoch grids."""

    def __init__(self, cfg: TrainConfig, data: TrainData, work: Path, device: str = "cpu",
                 on_epoch: Callable[[dict[str, Any], Path], None] | None = None):
        self.cfg, self.data, self.work, self.device = cfg, data, Path(work), torch.device(device)
        self.on_epoch = on_epoch

    def run(self, progress: Callable[[int, int, dict], None] | None = None,
            time_limit_s: float | None = None) -> dict[str, Any]:
        """Train to `cfg.epochs`, or stop after the epoch that passes `time_limit_s` (benchmarks)."""
        cfg, work = self.cfg, self.work
        (work / "samples").mkdir(parents=True, exist_ok=True)
        g, d = cfg.nets()
        g, d = g.to(self.device), d.to(self.device)
        ema_g = copy.deepcopy(g) if cfg.ema else None
        opt_g = torch.optim.Adam(g.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
        opt_d = torch.optim.Adam(d.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
        data_gen = torch.Generator().manual_seed(cfg.seed + 2)
        noise_gen = torch.Generator().manual_seed(cfg.seed + 3)
        aug_gen = torch.Generator().manual_seed(cfg.seed + 5)  # DiffAugment's draws (unused when off)
        history: list[dict[str, Any]] = []
        start_epoch, resumed_from = 0, None
        checkpoint = work / CHECKPOINT
        if checkpoint.exists():
            state = torch.load(checkpoint, map_location=self.device, weights_only=False)
            g.load_state_dict(state["g"])
            d.load_state_dict(state["d"])
            opt_g.load_state_dict(state["opt_g"])
            opt_d.load_state_dict(state["opt_d"])
            if ema_g is not None:
                ema_g.load_state_dict(state["ema_g"])
            data_gen.set_state(state["data_gen"])
            noise_gen.set_state(state["noise_gen"])
            if state.get("aug_gen") is not None:  # checkpoints from before DiffAugment have none
                aug_gen.set_state(state["aug_gen"])
            history, start_epoch = state["history"], state["epoch"]
            resumed_from = start_epoch
        images, labels = self.data.images.to(self.device), self.data.labels.to(self.device)
        mon_z, mon_y = monitor_batch(cfg, cfg.num_classes)
        real_mon, real_mon_y = monitor_real(self.data, cfg.monitor_per_class, cfg.seed)
        run_started = time.perf_counter()
        for epoch in range(start_epoch, cfg.epochs):
            if time_limit_s is not None and time.perf_counter() - run_started > time_limit_s:
                break
            started = time.perf_counter()
            order = batch_order(self.data.labels, cfg.balanced, data_gen).to(self.device)
            sums = torch.zeros(2, device=self.device)
            steps = 0
            g.train(), d.train()
            for i in range(0, len(order) - cfg.batch_size + 1, cfg.batch_size):  # drop the last partial batch
                idx = order[i:i + cfg.batch_size]
                loss_d, loss_g = train_step(g, d, opt_g, opt_d, images[idx], labels[idx], cfg, noise_gen, aug_gen)
                if ema_g is not None:
                    ema_update(ema_g, g, cfg.ema)
                sums += torch.stack([loss_d, loss_g])
                steps += 1
            seconds = time.perf_counter() - started
            if injected(f"dcgan:nan-loss-epoch-{epoch + 1}"):
                sums = sums * float("nan")
            loss_d, loss_g = (sums / max(steps, 1)).tolist()
            if not (math.isfinite(loss_d) and math.isfinite(loss_g)):
                kept = (f"the last good checkpoint (epoch {epoch}) is kept in {checkpoint}" if epoch
                        else "no checkpoint yet (the first epoch diverged)")
                # Diverged before any checkpoint: nothing to resume from, so the store removes the work folder.
                error = GeneratorError if epoch else ModelRejectedError
                raise error(
                    f"dcgan training diverged: non-finite loss in epoch {epoch + 1} (loss_d {loss_d}, loss_g {loss_g}); "
                    f"{kept}; lower lr_d/lr_g or set spectral_norm: true")
            final_g = ema_g if ema_g is not None else g
            fake = render(final_g, mon_z, mon_y, self.device)
            collapse = collapse_check(fake, mon_y, real_mon, real_mon_y, cfg.collapse_ratio)
            record = {"epoch": epoch + 1, "loss_d": loss_d, "loss_g": loss_g, "seconds": seconds,
                      "images_per_s": steps * cfg.batch_size / seconds if seconds else None, **collapse}
            history.append(record)
            grid = work / "samples" / f"epoch-{epoch + 1:03d}.png"
            save_grid(fake, mon_y, cfg.num_classes, grid)
            plot_losses(history, work / "loss.png")
            (work / HISTORY).write_text(json.dumps({"resumed_from_epoch": resumed_from, "epochs": history}, indent=1))
            self._save_checkpoint(g, d, ema_g, opt_g, opt_d, data_gen, noise_gen, aug_gen, history, epoch + 1)
            if self.on_epoch is not None:
                self.on_epoch(record, grid)
            if progress is not None:
                progress(epoch + 1, cfg.epochs, record)
            crash_point(f"dcgan:after-epoch-{epoch + 1}")
        final_g = ema_g if ema_g is not None else g
        return {"generator": final_g, "discriminator": d, "history": history, "resumed_from_epoch": resumed_from,
                "monitor_real": (real_mon, real_mon_y)}

    def _save_checkpoint(self, g, d, ema_g, opt_g, opt_d, data_gen, noise_gen, aug_gen, history, epoch: int) -> None:
        path = self.work / CHECKPOINT
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {"g": g.state_dict(), "d": d.state_dict(), "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                 "ema_g": ema_g.state_dict() if ema_g is not None else None, "data_gen": data_gen.get_state(),
                 "noise_gen": noise_gen.get_state(), "aug_gen": aug_gen.get_state(), "history": history, "epoch": epoch, "config": self.cfg.model_dump()}
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)  # a kill mid-save leaves the previous epoch's checkpoint intact


def to_uint8(images01: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) floats in [0, 1] -> (N, H, W, C) uint8."""
    return (images01.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def save_grid(images01: torch.Tensor, labels, num_classes: int, path: Path, columns: int = 8) -> None:
    """One row per class (first `columns` samples of each), or rows of `columns` samples."""
    from PIL import Image

    if labels is not None and num_classes:
        rows = [images01[labels == c][:columns] for c in range(num_classes)]
    else:
        rows = [images01[i:i + columns] for i in range(0, min(len(images01), columns * 4), columns)]
    pixels = to_uint8(torch.cat(rows))
    n, h, w, c = pixels.shape
    grid = np.zeros((len(rows) * (h + 1), columns * (w + 1), c), np.uint8)
    k = 0
    for r, row in enumerate(rows):
        for j in range(len(row)):
            grid[r * (h + 1):r * (h + 1) + h, j * (w + 1):j * (w + 1) + w] = pixels[k]
            k += 1
    scale = max(1, 256 // grid.shape[1])
    image = Image.fromarray(grid[:, :, 0] if c == 1 else grid)
    image.resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST).save(path)


def plot_losses(history: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(8, 3))
    ax.plot(epochs, [h["loss_d"] for h in history], label="D")
    ax.plot(epochs, [h["loss_g"] for h in history], label="G")
    ax.set_xlabel("epoch"), ax.set_ylabel("loss"), ax.legend()
    ax2.plot(epochs, [np.nan if h["min_spread_ratio"] is None else h["min_spread_ratio"] for h in history], color="C2")
    ax2.set_xlabel("epoch"), ax2.set_ylabel("min class spread / real")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
