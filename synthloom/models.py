"""The model store: trained or downloaded weights, content-addressed by the inputs that made them.

A generator's `prepare` (DCGAN training, LoRA fine-tuning, ...) is expensive; its result depends only
on its inputs (reference data hash, params, base-model hash, code version). The store keys each entry by
the sha256 of those inputs, so a second build, or a new version of the same recipe, reuses the trained
model instead of training again:

    <root>/<key[:2]>/<key>/          a finished entry: the files, plus store.json (inputs, file sha256s)
    <root>/.building-<key>/          work in progress; kept after a crash so training can resume from
                                     its checkpoints, renamed into place (one rename) when complete

The root defaults to `$SYNTHLOOM_MODEL_STORE`, else `$XDG_CACHE_HOME/synthloom/models` (~/.cache/...).
Weights are safetensors files with a config.json, the `save_pretrained`/`from_pretrained` layout of
diffusers and transformers, so the same entry can be opened by those libraries' loaders.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import ModelError, ModelRejectedError
from .provenance import sha256_file

STORE_FORMAT = "synthloom-model-store/1"
ENTRY_RECORD = "store.json"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def default_store_root() -> Path:
    if os.environ.get("SYNTHLOOM_MODEL_STORE"):
        return Path(os.environ["SYNTHLOOM_MODEL_STORE"]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "synthloom" / "models"


def inputs_key(inputs: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of everything that determines an entry's content."""
    canonical = json.dumps({"format": STORE_FORMAT, **inputs}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class StoredModel:
    """A finished store entry: where it is, what made it, and the sha256 of every file in it."""

    key: str
    path: Path
    inputs: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)
    reused: bool = False

    @property
    def sha256(self) -> str:
        """One hash of the entry's content (its files and their hashes), for provenance."""
        return hashlib.sha256(json.dumps(sorted(self.files.items())).encode()).hexdigest()


class ModelStore:
    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root).expanduser() if root is not None else default_store_root()

    def entry_dir(self, key: str) -> Path:
        return self.root / key[:2] / key

    def work_dir(self, key: str) -> Path:
        """Scratch space of an entry being built; survives a crash so a trainer can resume from it."""
        return self.root / f".building-{key}"

    def get(self, key: str) -> StoredModel | None:
        """The finished entry, its files rehashed; None if there is none. A damaged entry is an error."""
        folder = self.entry_dir(key)
        record_path = folder / ENTRY_RECORD
        if not record_path.is_file():
            return None
        record = json.loads(record_path.read_text())
        for name, digest in record["files"].items():
            file = folder / name
            if not file.is_file() or sha256_file(file) != digest:
                raise ModelError(f"{file}: model store entry is damaged (missing or changed file); "
                                 f"delete {folder} to rebuild it")
        return StoredModel(key, folder, record["inputs"], record["files"], reused=True)

    def get_or_build(self, inputs: dict[str, Any], build: Callable[[Path], None]) -> StoredModel:
        """The entry for `inputs`; if absent, `build(work_dir)` writes its files, then it is committed.

        A per-key file lock makes two processes that need the same model train it once: the second
        waits, then finds the finished entry."""
        key = inputs_key(inputs)
        found = self.get(key)
        if found is not None:
            return found
        with self._lock(key):
            found = self.get(key)  # built by another process while we waited
            if found is not None:
                return found
            work = self.work_dir(key)
            work.mkdir(parents=True, exist_ok=True)
            try:
                build(work)
            except ModelRejectedError:
                # A verdict on the model, not a crash: nothing of it is stored, and nothing is kept to resume
                # from (a crash or a kill keeps the work folder, so training resumes from its checkpoints).
                shutil.rmtree(work, ignore_errors=True)
                raise
            return self._commit(key, inputs, work)

    def _commit(self, key: str, inputs: dict[str, Any], work: Path) -> StoredModel:
        # Hidden files and folders (resume checkpoints: `.checkpoint/last.pt`) are not part of the entry.
        files = {str(p.relative_to(work)): sha256_file(p) for p in sorted(work.rglob("*"))
                 if p.is_file() and p.name != ENTRY_RECORD
                 and not any(part.startswith(".") for part in p.relative_to(work).parts)}
        if not files:
            raise ModelError(f"{work}: building the model wrote no files")
        for leftover in work.glob(".*"):  # resume checkpoints are not part of the entry
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        record = {"format": STORE_FORMAT, "key": key, "inputs": inputs, "files": files}
        (work / ENTRY_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
        final = self.entry_dir(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.rename(work, final)
        return StoredModel(key, final, inputs, files)

    @contextmanager
    def _lock(self, key: str) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f".lock-{key}", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


# -- save_pretrained / from_pretrained for small torch modules -----------------------------------
def save_pretrained(module, config: dict[str, Any], directory: str | os.PathLike) -> Path:
    """config.json + model.safetensors, the layout diffusers and transformers use."""
    from safetensors.torch import save_file

    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE))
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return folder


def load_pretrained_state(directory: str | os.PathLike, device: str = "cpu") -> tuple[dict[str, Any], dict]:
    """(config, state_dict) saved by `save_pretrained`; a missing or partial folder is named in one line."""
    folder = Path(directory)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise ModelError(f"{folder}: not a saved model (missing {path.name})")
    from safetensors.torch import load_file

    return json.loads(config_path.read_text()), load_file(str(weights_path), device=device)
