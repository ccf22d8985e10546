"""The model store on an object store (`SYNTHLOOM_MODEL_STORE=s3://bucket/models`), so that prepared
artifacts (trained weights, adapters) reach cluster workers that share no filesystem with the driver.

Entries stay content-addressed by their inputs' key (models.inputs_key), as in a local store:

    <url>/<key[:2]>/<key>/store.json                the commit marker, written last (If-None-Match: *)
    <url>/<key[:2]>/<key>/<content>/<file>          the entry's files; <content> = sha256 of their hashes

The files are uploaded under the content prefix first (each with its sha256 as object metadata, so an
upload killed midway resumes with the files still missing); the marker is written last, so a
half-uploaded entry is never used: without its marker the key has no entry. Two machines that train the
same key at once each upload under their own content prefix (GPU training is not bit-reproducible) and
race for the marker with a conditional create: one entry wins, the other machine uses it. So the store
needs no lock; on a store that ignores `If-None-Match`, the last marker wins, and it still names a
complete set of files.

Every machine keeps a local copy of the entries it uses, keyed by content, and loads from it:

    <cache>/entries/<content[:2]>/<content>/        a verified copy (files + store.json), renamed into place
    <cache>/.building-<key>/                        training in progress (kept after a crash, to resume)

`<cache>` is `$SYNTHLOOM_MODEL_CACHE`, else `model-cache/` beside the dataset mirrors. A per-content file
lock makes the worker processes of one machine download an entry once.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from . import storage
from .errors import ModelError, StorageError
from .faults import crash_point
from .provenance import sha256_file

ENTRY_RECORD = "store.json"  # the same name as a local entry's record (models.py)


def model_cache_dir() -> Path:
    if os.environ.get("SYNTHLOOM_MODEL_CACHE"):
        return Path(os.environ["SYNTHLOOM_MODEL_CACHE"]).expanduser()
    return storage.cache_dir().parent / "model-cache"


class RemoteEntries:
    """The entries of a model store at an fsspec URL, and this machine's verified copies of them."""

    def __init__(self, url: str, cache: Path):
        self.url = url.rstrip("/")
        storage.check_writable_url(self.url, "a model store")
        self.fs, self.root = storage.filesystem(self.url)
        self.root = self.root.rstrip("/")
        self.cache = cache

    def _errors(self):
        return storage.storage_errors(f"model store {self.url}", self.fs)

    def check_reachable(self) -> None:
        """Fail in seconds, naming the store, on a missing bucket, rejected credentials or no server."""
        storage.check_bucket(self.fs, self.root, f"model store {self.url}")
        with self._errors():
            self.fs.ls(self.root.split("/", 1)[0])

    def entry_url(self, key: str) -> str:
        return f"{self.url}/{key[:2]}/{key}"

    def _marker(self, key: str) -> str:
        return storage.join(self.root, key[:2], key, ENTRY_RECORD)

    def _content(self, key: str, content: str) -> str:
        return storage.join(self.root, key[:2], key, content)

    def local_dir(self, content: str) -> Path:
        return self.cache / "entries" / content[:2] / content

    def record(self, key: str) -> dict[str, Any] | None:
        """The committed record of `key` (its marker), None without one: a partial upload is no entry."""
        with self._errors():
            # s3fs sizes a file from its cached listing first: a listing cached before the marker existed
            # (in this process) would make it look absent.
            self.fs.invalidate_cache(self._marker(key))
            try:
                data = self.fs.cat_file(self._marker(key))
            except FileNotFoundError:
                return None
        try:
            record = json.loads(data)
            record["files"], record["content"]  # noqa: B018 - the fields every reader needs
        except (ValueError, KeyError, TypeError):
            raise ModelError(f"{self.entry_url(key)}/{ENTRY_RECORD}: corrupt model store record; delete "
                             f"{self.entry_url(key)} to rebuild the entry") from None
        return record

    def fetch(self, key: str, record: dict[str, Any]) -> Path:
        """This machine's verified copy of a committed entry, downloaded if it has none."""
        content = record["content"]
        local = self.local_dir(content)
        if (local / ENTRY_RECORD).is_file():
            return local
        with self._flock(f".lock-fetch-{content}"):
            if (local / ENTRY_RECORD).is_file():  # another process of this machine fetched it meanwhile
                return local
            partial = self.cache / f".fetching-{content}"
            shutil.rmtree(partial, ignore_errors=True)
            with self._errors():
                for name, digest in sorted(record["files"].items()):
                    target = partial / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    self.fs.get_file(storage.join(self._content(key, content), name), str(target))
                    if sha256_file(target) != digest:
                        raise ModelError(f"{self.entry_url(key)}/{content}/{name}: sha256 differs from the entry's "
                                         f"record (damaged on the store); delete {self.entry_url(key)} to rebuild it")
            (partial / ENTRY_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
            local.parent.mkdir(parents=True, exist_ok=True)
            os.rename(partial, local)  # complete and verified, or absent
        return local

    def upload(self, key: str, record: dict[str, Any], work: Path) -> dict[str, Any]:
        """Upload a sealed work folder's files, then the marker; return the committed record: ours, or
        that of a machine that committed the same key first."""
        prefix = self._content(key, record["content"])
        with self._errors():
            for name, digest in sorted(record["files"].items()):
                target = storage.join(prefix, name)
                if self._remote_sha256(target) == digest:
                    continue  # uploaded before a kill
                self.fs.put_file(str(work / name), target, Metadata={"sha256": digest})
                crash_point("models:file-uploaded")
            crash_point("models:before-marker")
            body = (json.dumps(record, indent=2, sort_keys=True, default=str) + "\n").encode()
            try:
                self.fs.pipe_file(self._marker(key), body, IfNoneMatch="*")
                return record
            except Exception as error:
                if not storage.precondition_failed(error):
                    raise
        winner = self.record(key)  # committed by another machine between our check and our marker
        if winner is None:
            raise StorageError(f"model store {self.url}: {self.entry_url(key)} refused its marker but has none")
        if winner["content"] != record["content"]:
            with self._errors():
                self.fs.rm(prefix, recursive=True)  # our copy is unreferenced now
        return winner

    def _remote_sha256(self, path: str) -> str | None:
        try:
            return self.fs.getxattr(path, "sha256")
        except (FileNotFoundError, KeyError):
            return None

    @contextmanager
    def _flock(self, name: str) -> Iterator[None]:
        self.cache.mkdir(parents=True, exist_ok=True)
        with open(self.cache / name, "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
