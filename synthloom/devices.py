"""Which device a build runs on, and how many tasks may use it at once.

`device: auto | cpu | mps | cuda | cuda:N` in a recipe (or `--device`). A generator that declares
`resources = {"gpu": 1}` occupies one slot of a Prefect global concurrency limit named after its device
(`synthloom-device-cuda-0`, limit 1), so however many shard workers run, at most one such task uses a
device at a time, and the Prefect UI shows the limit and who holds it.
"""

from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext
from typing import Iterator

from .errors import SynthloomError


def _cuda_available() -> bool:
    # No NVIDIA driver, no CUDA: answer without importing torch (seconds on a cold start).
    if not os.path.exists("/proc/driver/nvidia/version") and not os.environ.get("CUDA_VISIBLE_DEVICES"):
        return False
    import torch

    return torch.cuda.is_available()


def resolve_device(requested: str) -> str:
    """`auto` becomes `cuda` or `cpu`; a CUDA device that is not there is an error naming it."""
    if requested == "auto":
        return "cuda" if _cuda_available() else "cpu"
    if requested.startswith("cuda") and not _cuda_available():
        raise SynthloomError(f"device '{requested}': no CUDA device is visible here; use `device: cpu` or auto")
    return requested


def limit_name(device: str) -> str:
    return "synthloom-device-" + device.replace(":", "-")


_CREATED: set[str] = set()


@contextmanager
def device_slots(resources: dict[str, int], device: str) -> Iterator[None]:
    """Hold the device's concurrency slots for a generator that declares `gpu` resources."""
    slots = int(resources.get("gpu", 0))
    if slots <= 0:
        with nullcontext():
            yield
        return
    from prefect.client.orchestration import get_client
    from prefect.concurrency.sync import concurrency

    name = limit_name(device)
    if name not in _CREATED:
        with get_client(sync_client=True) as client:
            try:
                client.upsert_global_concurrency_limit_by_name(name, limit=1)
            except Exception:  # another worker created it between our read and our create
                client.read_global_concurrency_limit_by_name(name)
        _CREATED.add(name)
    with concurrency(name, occupy=slots, strict=True):
        yield
