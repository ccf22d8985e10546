"""The model store: trained or downloaded weights, content-addressed by the inputs that made them.

A generator's `prepare` (DCGAN training, LoRA fine-tuning, ...) is expensive; its result depends only
on its inputs (reference data hash, params, base-model hash, code version). The store keys each entry by
the sha256 of those inputs, so a second build, or a new version of the same recipe, reuses the trained
model instead of training again:

    <root>/<key[:2]>/<key>/          a finished entry: the files, plus store.json (inputs, file sha256s)
    <root>/.building-<key>/          work in progress; kept after a crash so training can resume from
                                     its checkpoints, renamed into place (one rename) when complete

The root defaults to `$SYNTHLOOM_MODEL_STORE`, else `$XDG_CACHE_HOME/synthloom/models` (~/.cache/...).
It may be an fsspec URL (`s3://bucket/models`), for builds whose workers share no filesystem: the same
keys on the store, committed by a marker written last, and each machine loads from its own verified copy
(remote_models.py). A `Prepared` record names the remote entries it uses (`models`), and `localize` makes
a worker fetch them and read its copy.
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

from . import storage
from .errors import ModelError, ModelRejectedError
from .provenance import sha256_file
from .remote_models import RemoteEntries, model_cache_dir

STORE_FORMAT = "synthloom-model-store/1"
ENTRY_RECORD = "store.json"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def default_store_root() -> Path | str:
    """A folder, or an fsspec URL (a str: `Path` would fold `s3://` into `s3:/`)."""
    configured = os.environ.get("SYNTHLOOM_MODEL_STORE")
    if configured:
        return configured if storage.is_url(configured) else storage.local_path(configured)
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
    url: str | None = None  # the entry on a remote store; `path` is then this machine's copy

    @property
    def sha256(self) -> str:
        """One hash of the entry's content (its files and their hashes), for provenance."""
        return hashlib.sha256(json.dumps(sorted(self.files.items())).encode()).hexdigest()


    def ref(self, store: str) -> dict[str, str]:
        """What a worker needs to fetch this entry (lifecycle.ModelRef)."""
        return {"store": store, "key": self.key, "sha256": self.sha256, "path": str(self.path)}


class ModelStore:
    """A local folder, or an fsspec URL with a local cache of the entries used here (`cache`)."""

    def __init__(self, root: str | os.PathLike | None = None, cache: str | os.PathLike | None = None):
        root = default_store_root() if root is None else root
        self.url: str | None = None
        self.remote: RemoteEntries | None = None
        if storage.is_url(root):
            self.url = str(root).rstrip("/")
            self.root = Path(cache).expanduser() if cache is not None else model_cache_dir()
            self.remote = RemoteEntries(self.url, self.root)
        else:
            self.root = storage.local_path(root)
        self.handed_out: dict[str, StoredModel] = {}  # remote entries this store returned, by key

    def check_reachable(self) -> None:
        """A remote store: fail in seconds naming it (missing bucket, credentials, no server)."""
        if self.remote is not None:
            self.remote.check_reachable()

    def refs(self) -> list[dict[str, str]]:
        """The remote entries handed out so far, for `Prepared.models` (empty for a local store)."""
        return [stored.ref(self.url) for stored in self.handed_out.values()]

    def entry_dir(self, key: str) -> Path:
        return self.root / key[:2] / key

    def work_dir(self, key: str) -> Path:
        """Scratch space of an entry being built; survives a crash so a trainer can resume from it."""
        return self.root / f".building-{key}"

    def get(self, key: str) -> StoredModel | None:
        """The finished entry, its files rehashed; None if there is none. A damaged entry is an error."""
        if self.remote is not None:
            return self._get_remote(key)
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
            record = self._sealed(work) if self.remote is not None else None  # killed while uploading
            if record is None:
                work.mkdir(parents=True, exist_ok=True)
                try:
                    build(work)
                except ModelRejectedError:
                    # A verdict on the model, not a crash: nothing of it is stored, and nothing is kept to resume
                    # from (a crash or a kill keeps the work folder, so training resumes from its checkpoints).
                    shutil.rmtree(work, ignore_errors=True)
                    raise
                record = self._seal(key, inputs, work)
            if self.remote is not None:
                return self._commit_remote(key, record, work)
            final = self.entry_dir(key)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.rename(work, final)
            return StoredModel(key, final, inputs, record["files"])

    # -- a remote store ---------------------------------------------------------------------------
    def _get_remote(self, key: str) -> StoredModel | None:
        record = self.remote.record(key)
        if record is None:
            return None
        copied = self.remote.local_dir(record["content"])
        if (copied / ENTRY_RECORD).is_file() and _damaged(copied, record["files"]) is not None:
            shutil.rmtree(copied)  # a local copy is a cache: a changed one is fetched again
        folder = self.remote.fetch(key, record)  # verified while downloading
        return self._hand_out(StoredModel(key, folder, record["inputs"], record["files"], reused=True,
                                          url=self.remote.entry_url(key)))

    def _commit_remote(self, key: str, record: dict[str, Any], work: Path) -> StoredModel:
        committed = self.remote.upload(key, record, work)
        local = self.remote.local_dir(committed["content"])
        if committed["content"] == record["content"] and not local.exists():
            local.parent.mkdir(parents=True, exist_ok=True)
            os.rename(work, local)  # what we uploaded is this machine's copy
        else:  # already here, or another machine's entry won the marker
            shutil.rmtree(work)
            local = self.remote.fetch(key, committed)
        return self._hand_out(StoredModel(key, local, committed["inputs"], committed["files"],
                                          url=self.remote.entry_url(key)))

    def _hand_out(self, stored: StoredModel) -> StoredModel:
        self.handed_out[stored.key] = stored
        return stored

    @staticmethod
    def _sealed(work: Path) -> dict[str, Any] | None:
        """The record of a work folder sealed by an earlier run whose upload was killed, if intact."""
        record_path = work / ENTRY_RECORD
        if not record_path.is_file():
            return None
        record = json.loads(record_path.read_text())
        return record if _damaged(work, record["files"]) is None else None

    def _seal(self, key: str, inputs: dict[str, Any], work: Path) -> dict[str, Any]:
        """Hash the built files into the entry's record (store.json, written into the work folder)."""
        # Hidden files and folders (resume checkpoints: `.checkpoint/last.pt`) are not part of the entry.
        files = {str(p.relative_to(work)): sha256_file(p) for p in sorted(work.rglob("*"))
                 if p.is_file() and p.name != ENTRY_RECORD
                 and not any(part.startswith(".") for part in p.relative_to(work).parts)}
        if not files:
            raise ModelError(f"{work}: building the model wrote no files")
        for leftover in work.glob(".*"):  # resume checkpoints are not part of the entry
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        content = StoredModel(key, work, inputs, files).sha256
        record = {"format": STORE_FORMAT, "key": key, "inputs": inputs, "files": files, "content": content}
        (work / ENTRY_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
        return record

    @contextmanager
    def _lock(self, key: str) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f".lock-{key}", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _damaged(folder: Path, files: dict[str, str]) -> Path | None:
    """The first file of an entry that is missing or whose sha256 differs from its record, else None."""
    for name, digest in files.items():
        file = folder / name
        if not file.is_file() or sha256_file(file) != digest:
            return file
    return None


# -- workers: the remote entries a prepared record uses ------------------------------------------
_FETCHED: dict[tuple[str, str, str], Path] = {}  # (store, key, content) -> this machine's copy, per process


def localize(prepared):
    """`prepared` as this process can load it: each remote model-store entry it names (`models`) fetched
    into this machine's cache (once per process; once per machine, under a file lock), and every path
    inside the driver's copy of it pointed at this machine's copy. Unchanged when it names none."""
    refs = getattr(prepared, "models", None) or []
    data, changed = None, False
    for ref in refs:
        ident = (ref.store, ref.key, ref.sha256)
        if ident not in _FETCHED:
            _FETCHED[ident] = _fetch(ref)
        local = str(_FETCHED[ident])
        if local != ref.path:
            data = _replace_prefix(data if data is not None else prepared.model_dump(mode="json"), ref.path, local)
            changed = True
    return type(prepared).model_validate(data) if changed else prepared


def _fetch(ref) -> Path:
    store = ModelStore(ref.store)
    local = store.remote.local_dir(ref.sha256)
    if (local / ENTRY_RECORD).is_file():
        return local  # fetched by an earlier process of this machine
    record = store.remote.record(ref.key)
    if record is None or record["content"] != ref.sha256:
        raise ModelError(f"{store.remote.entry_url(ref.key)}: the model store entry prepared for this build is "
                         f"{'gone' if record is None else 'replaced by another'}; rerun the build")
    return store.remote.fetch(ref.key, record)


def _replace_prefix(value, old: str, new: str):
    if isinstance(value, str):
        return new + value[len(old):] if value == old or value.startswith(old + "/") else value
    if isinstance(value, dict):
        return {k: _replace_prefix(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_prefix(v, old, new) for v in value]
    return value


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
