"""DCGAN networks (Radford et al. 2016), class-conditional or not, for 8 to 64 pixel images.

The generator is the DCGAN stack of transposed convolutions (BatchNorm + ReLU, tanh output); the
discriminator the strided-convolution stack (LeakyReLU 0.2). Conditioning: the generator reads the
noise concatenated with a learned class embedding; the discriminator is a projection discriminator
(Miyato & Koyama 2018): logit = w·h + <embed(y), h> over the pooled features h, which trained better
than concatenating labels in the conditional GAN literature (and is what BigGAN uses).
`spectral_norm=True` wraps every discriminator layer in spectral normalisation and drops its
BatchNorm (SN-GAN). Sizes: 28 px starts at 7x7 (MNIST-style), others at 4x4 and double up to size.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _sn

RESOLUTIONS = (8, 16, 28, 32, 64)


def _layout(resolution: int) -> tuple[int, int]:
    """(start size, number of doublings) of a resolution."""
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {RESOLUTIONS}, got {resolution}")
    start = 7 if resolution == 28 else 4
    return start, int(round(math.log2(resolution // start)))


class DCGANGenerator(nn.Module):
    def __init__(self, nz: int = 100, num_classes: int = 0, channels: int = 1, resolution: int = 32,
                 ngf: int = 64):
        super().__init__()
        start, ups = _layout(resolution)
        self.nz, self.num_classes = nz, num_classes
        self.embed = nn.Embedding(num_classes, nz) if num_classes else None
        width = ngf * 2 ** (ups - 1)
        layers: list[nn.Module] = [nn.ConvTranspose2d(nz * (2 if num_classes else 1), width, start, 1, 0, bias=False),
                                   nn.BatchNorm2d(width), nn.ReLU(True)]
        for _ in range(ups - 1):
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width // 2),
                       nn.ReLU(True)]
            width //= 2
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        self.apply(_dcgan_init)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(labels)], dim=1)
        return self.main(z[:, :, None, None])


class DCGANDiscriminator(nn.Module):
    def __init__(self, num_classes: int = 0, channels: int = 1, resolution: int = 32, ndf: int = 64,
                 spectral_norm: bool = False):
        super().__init__()
        start, downs = _layout(resolution)
        wrap = _sn if spectral_norm else (lambda m: m)
        layers: list[nn.Module] = [wrap(nn.Conv2d(channels, ndf, 4, 2, 1, bias=spectral_norm)), nn.LeakyReLU(0.2, True)]
        width = ndf
        for _ in range(downs - 1):
            layers.append(wrap(nn.Conv2d(width, width * 2, 4, 2, 1, bias=spectral_norm)))
            if not spectral_norm:  # SN-GAN drops BatchNorm from D
                layers.append(nn.BatchNorm2d(width * 2))
            layers.append(nn.LeakyReLU(0.2, True))
            width *= 2
        self.main = nn.Sequential(*layers)
        # The classic head: a convolution over the whole start x start map to one value per image.
        self.features = wrap(nn.Conv2d(width, width, start, 1, 0, bias=True))
        self.act = nn.LeakyReLU(0.2, True)
        self.out = wrap(nn.Linear(width, 1))
        self.embed = wrap(nn.Embedding(num_classes, width)) if num_classes else None
        self.apply(_dcgan_init)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.act(self.features(self.main(images))).flatten(1)
        logit = self.out(h).squeeze(1)
        if self.embed is not None:
            logit = logit + (self.embed(labels) * h).sum(1)
        return logit


def _dcgan_init(module: nn.Module) -> None:
    """N(0, 0.02) convolutions, N(1, 0.02) BatchNorm scales: the DCGAN paper's initialisation."""
    name = type(module).__name__
    weight = getattr(module, "parametrizations", None)
    weight = weight.weight.original if weight is not None and hasattr(weight, "weight") else getattr(module, "weight", None)
    if weight is None:
        return
    if "Conv" in name or name in ("Linear", "Embedding"):
        nn.init.normal_(weight, 0.0, 0.02)
    elif "BatchNorm" in name:
        nn.init.normal_(weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
