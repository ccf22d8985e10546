"""DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training"): the
same random, differentiable augmentation applied to real *and* generated images before every pass
through D, in the D step and in the G step, so D cannot memorise a few hundred real images and G's
gradient still flows through the augmentation.

Our own implementation of the reference's policy (mit-han-lab/data-efficient-gans, DiffAugment_pytorch.py)
rather than a dependency: the reference is one file in a research repository, not a package. Same
transforms and ranges as the reference, on images in [-1, 1] (N, C, H, W):

- `color`: brightness + U(-0.5, 0.5); saturation x U(0, 2) around the channel mean (a no-op on 1 channel);
  contrast x U(0.5, 1.5) around the image mean;
- `translation`: a shift of up to 1/8 of the side (rounded) in each direction, zero-filled;
- `cutout`: a square of half the side (rounded) set to 0, its centre anywhere in the image.

Each image gets its own draw. The draws come from `generator` (a CPU torch.Generator; the trainer keeps
one in its checkpoint, so a resumed run is bit-exact) or, without one, from torch's global RNG.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

POLICIES = ("color", "translation", "cutout")


def parse_policy(policy: str) -> list[str]:
    """`"color,translation"` -> ["color", "translation"]; "" -> []; unknown or repeated names raise ValueError."""
    names = [p.strip() for p in policy.split(",") if p.strip()]
    bad = [p for p in names if p not in POLICIES]
    if bad or len(set(names)) != len(names):
        raise ValueError(f"diffaugment must be a comma-separated subset of {','.join(POLICIES)} (or empty), "
                         f"got {policy!r}")
    return names


def _uniform(n: int, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, 1, 1, 1, generator=generator).to(like)


def _shifts(n: int, low: int, high: int, generator: torch.Generator | None, device) -> torch.Tensor:
    return torch.randint(low, high, (n, 1), generator=generator).to(device)


def color(x: torch.Tensor, generator=None) -> torch.Tensor:
    n = len(x)
    x = x + (_uniform(n, x, generator) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_uniform(n, x, generator) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_uniform(n, x, generator) + 0.5) + mean


def translation(x: torch.Tensor, generator=None, ratio: float = 0.125) -> torch.Tensor:
    n, c, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy, dx = _shifts(n, -sh, sh + 1, generator, x.device), _shifts(n, -sw, sw + 1, generator, x.device)
    # Output pixel (i, j) reads input (i + dy, j + dx); beyond the border it reads the zero padding.
    padded = F.pad(x, (1, 1, 1, 1))
    rows = (torch.arange(h, device=x.device) + dy + 1).clamp(0, h + 1)  # (n, h) indices into padded rows
    cols = (torch.arange(w, device=x.device) + dx + 1).clamp(0, w + 1)  # (n, w)
    out = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2))
    return out.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def cutout(x: torch.Tensor, generator=None, ratio: float = 0.5) -> torch.Tensor:
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = _shifts(n, 0, h + (1 - ch % 2), generator, x.device) - ch // 2  # (n, 1): first row of the square
    left = _shifts(n, 0, w + (1 - cw % 2), generator, x.device) - cw // 2
    r, k = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    inside = (((r >= top) & (r < top + ch))[:, :, None]) & (((k >= left) & (k < left + cw))[:, None, :])
    return x * (~inside).to(x.dtype)[:, None]


_FNS = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(x: torch.Tensor, policy: str | list[str], generator: torch.Generator | None = None) -> torch.Tensor:
    """`x` through the policy's transforms, in the policy's order; the identity for an empty policy."""
    for name in parse_policy(policy) if isinstance(policy, str) else policy:
        x = _FNS[name](x, generator)
    return x.contiguous()
