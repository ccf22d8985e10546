"""Finding, hashing and loading a diffusers text-to-image pipeline, offline first.

`resolve_model` turns the recipe's `model` (a local pipeline directory or a hub id) into a local
directory without touching the network unless the recipe allows downloads: a missing path, a folder
that is not a diffusers pipeline, or a hub id absent from the local cache fails at once with one line
naming it (never the hub's retry loop). `load_pipeline` then builds the pipeline with
`DiffusionPipeline.from_pretrained(local_dir, local_files_only=True)`, so SD 1.5, SDXL or any other
text-to-image pipeline loads by the same call.
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from synthloom.errors import GeneratorError
from synthloom.made_by import made_by, not_found
from synthloom.provenance import sha256_file

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

# Recipe scheduler names -> diffusers classes (the names diffusers' docs and A1111 users know).
SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "pndm": "PNDMScheduler",
    "lms": "LMSDiscreteScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler-ancestral": "EulerAncestralDiscreteScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
}

DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
          "bfloat16": "bfloat16", "bf16": "bfloat16"}


def local_model_path(model: str, base_dir: Path | None = None) -> Path:
    """Where a local `model` would be: as given (from the working directory), else relative to `base_dir`
    (the recipe's folder) when it exists only there. The path may not exist (a hub id, a missing folder)."""
    path = Path(model).expanduser()
    if not path.is_absolute() and base_dir is not None and not path.exists() and (base_dir / path).exists():
        path = base_dir / path
    return path


def resolve_model(model: str, base_dir: Path | None = None, allow_download: bool = False) -> Path:
    """A local pipeline directory for `model`, or GeneratorError naming it (fast: no network by default)."""
    path = local_model_path(model, base_dir)
    if path.exists():
        return check_pipeline_dir(path)
    if made_by(model) or path.is_symlink():  # a folder this repository makes (`make base-model`): not a hub id
        raise GeneratorError(f"model '{model}': {not_found(path, 'no such directory')}")
    if model.startswith((".", "/", "~")) or not HUB_ID.match(model):
        raise GeneratorError(f"model '{model}': no such directory (and not a hub id of the form owner/name)")
    return check_pipeline_dir(_hub_snapshot(model, allow_download))


def _hub_snapshot(repo_id: str, allow_download: bool) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=not allow_download))
    except Exception as error:  # LocalEntryNotFoundError, RepositoryNotFoundError, connection errors
        if allow_download:
            raise GeneratorError(f"model '{repo_id}': cannot download it ({type(error).__name__}: {error})") from None
        raise GeneratorError(f"model '{repo_id}': not in the local Hugging Face cache and downloads are off; "
                             f"give a local pipeline directory, or set allow_download: true on a machine "
                             f"that reaches the hub") from None


def check_pipeline_dir(path: Path) -> Path:
    if not path.is_dir():
        raise GeneratorError(f"model '{path}': not a directory (expected a diffusers pipeline folder)")
    index = path / "model_index.json"
    if not index.is_file():
        raise GeneratorError(f"model '{path}': not a diffusers pipeline (no model_index.json)")
    try:
        components = json.loads(index.read_text())
    except ValueError as error:
        raise GeneratorError(f"model '{path}': model_index.json is not valid JSON ({error})") from None
    if not isinstance(components, dict):
        raise GeneratorError(f"model '{path}': {index} is not a diffusers model index (a JSON "
                             f"{type(components).__name__}, not an object)")
    _check_components(path, components)
    return path


WEIGHT_SUFFIXES = (".safetensors", ".bin")


def _check_components(path: Path, components: dict[str, Any]) -> None:
    """Each component model_index.json names ([library, class], not [null, null]) has its folder, and a
    model folder (config.json) its weights: checked in milliseconds, where from_pretrained took ~13 s
    and printed a library warning before failing on a missing folder."""
    for name, entry in components.items():
        if name.startswith("_") or not (isinstance(entry, list) and len(entry) == 2 and all(entry)):
            continue
        folder = path / name
        if not folder.is_dir() or not any(folder.iterdir()):
            raise GeneratorError(f"model '{path}': model_index.json names the component '{name}' "
                                 f"({entry[1]}) but {folder} is missing or empty")
        if (folder / "config.json").is_file() and not any(p.name.endswith(WEIGHT_SUFFIXES) for p in folder.iterdir()):
            raise GeneratorError(f"model '{path}': component '{name}' has no weights in {folder} "
                                 f"(*.safetensors or *.bin)")


def pipeline_files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".") for part in
                                                                        p.relative_to(path).parts))


@lru_cache(maxsize=8)
def _hash_dir(path: str, stamp: tuple) -> str:
    digest = hashlib.sha256()
    for file in pipeline_files(Path(path)):
        digest.update(f"{file.relative_to(path)}\0{sha256_file(file)}\n".encode())
    return digest.hexdigest()


def model_sha256(path: Path) -> str:
    """One sha256 over every file of a pipeline directory (relative names + contents), for provenance
    and cache keys. Memoised per process by (name, size, mtime) of its files: SD weights are GBs."""
    stamp = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in pipeline_files(path))
    return _hash_dir(str(path.resolve()), stamp)


def torch_dtype(name: str, device: str):
    import torch

    dtype = DTYPES[name]
    if dtype != "float32" and device == "cpu":
        raise GeneratorError(f"dtype '{name}': half precision needs a GPU (device is cpu); use dtype: float32")
    return getattr(torch, dtype)


def load_pipeline(path: Path, dtype: str = "float32", device: str = "cpu", scheduler: str | None = None,
                  attention: str = "sdpa", channels_last: bool = False, fuse_qkv: bool = False,
                  compile: bool = False) -> Any:
    """The pipeline at `path` on `device`, with the recipe's scheduler, attention and speed options."""
    from diffusers import DiffusionPipeline

    torch_type = torch_dtype(dtype, device)
    try:
        pipe = DiffusionPipeline.from_pretrained(str(path), dtype=torch_type, local_files_only=True)
    except Exception as error:  # missing component folders, unreadable weights, unknown pipeline class
        raise GeneratorError(f"model '{path}': cannot load the pipeline ({type(error).__name__}: "
                             f"{str(error).splitlines()[0] if str(error) else ''})") from None
    return configure_pipeline(pipe, None, device, scheduler, attention, channels_last, fuse_qkv, compile)


def configure_pipeline(pipe, dtype: str | None = None, device: str = "cpu", scheduler: str | None = None,
                       attention: str = "sdpa", channels_last: bool = False, fuse_qkv: bool = False,
                       compile: bool = False) -> Any:
    """Apply the generation options to a loaded (or config-built) pipeline; used by `load_pipeline` and by
    the benchmark, which builds SD-1.5-sized pipelines in memory."""
    import diffusers
    import torch

    if dtype is not None:
        pipe.to(torch_dtype(dtype, device))
    if scheduler is not None:
        pipe.scheduler = getattr(diffusers, SCHEDULERS[scheduler]).from_config(pipe.scheduler.config)
    denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    if denoiser is not None and hasattr(denoiser, "set_attn_processor"):
        from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

        # SDPA (torch's fused attention kernels) is diffusers' default under torch 2; "eager" is the plain
        # softmax(QK^T)V, kept to compare against and for backends where SDPA misbehaves.
        denoiser.set_attn_processor(AttnProcessor2_0() if attention == "sdpa" else AttnProcessor())
    if channels_last:
        for module in (denoiser, getattr(pipe, "vae", None)):
            if module is not None:
                module.to(memory_format=torch.channels_last)
    pipe.set_progress_bar_config(disable=True)
    pipe = pipe.to(device)
    return speed_up(pipe, device, fuse_qkv, compile)


def speed_up(pipe, device: str, fuse_qkv: bool = False, compile: bool = False):
    """Fused QKV projections and torch.compile: last, after any LoRA adapters are on (and fused)."""
    import torch

    denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    if fuse_qkv and hasattr(pipe, "fuse_qkv_projections"):
        pipe.fuse_qkv_projections()  # one matmul for Q, K and V of self-attention
    if compile and denoiser is not None:
        # Compiled lazily on the first call (minutes for SD at 512 px): the first shard pays for it. The
        # default mode: max-autotune ran past 8 minutes for SD 1.5 on an H100 (issue 16).
        compiled = torch.compile(denoiser, fullgraph=True)
        if getattr(pipe, "unet", None) is denoiser:
            pipe.unet = compiled
        else:
            pipe.transformer = compiled
    return pipe
