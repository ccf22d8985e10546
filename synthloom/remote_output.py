"""A build whose `output:` is an object-store URL (`s3://bucket/prefix`): the commit protocol on the store.

The build runs into a local build folder exactly as a local build does (staging, resume state, flock,
commit: dataset.py), under the cache (`storage.cache_dir()/builds/`). Then `publish` copies the committed
version to `<url>/<name>/<version>/`:

1. every shard is uploaded under the version prefix, each with its sha256 as object metadata; a shard
   already there with the same sha256 is not uploaded again (a rerun after a crash resumes here);
2. then the metadata files (croissant.json, README.md, preview.png, eval/);
3. `manifest.json` last: its presence is the commit on the store. Readers (storage.read_manifest) never
   read a version prefix without it, so the prefix before step 3 is the staging area;
4. then `<url>/<name>/latest`.

An object store has no rename, so the shards are uploaded once, to their final keys, rather than staged
elsewhere and copied (a copy would double the traffic for nothing: nothing reads the prefix until step 3).

One build per version: `<url>/<name>/.lock-<version>`, created with a conditional PUT (`If-None-Match: *`):
of two builds that race, the store lets exactly one create it, the other fails naming the holder. Unlike
flock, a build killed with SIGKILL leaves the lock object behind: the error says which object to delete
once that build is known to be dead. docs/DESIGN.md says which stores honour the condition.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import socket
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from . import dataset as ds
from . import storage
from .errors import DatasetError, StorageError
from .faults import crash_point


class RemoteOutput:
    """Where one version goes on a store."""

    def __init__(self, output_url: str, name: str, version: str):
        self.output_url = output_url.rstrip("/")
        self.name, self.version = name, version
        self.fs, root = storage.filesystem(self.output_url)
        self.dataset_root = storage.join(root, name)
        self.version_path = storage.join(self.dataset_root, version)
        self.url = f"{self.output_url}/{name}/{version}"
        self.lock_path = storage.join(self.dataset_root, f".lock-{version}")

    def local_build_dir(self) -> Path:
        """The local folder the build writes into (and resumes from) before publishing."""
        key = hashlib.sha256(self.output_url.encode()).hexdigest()[:16]
        return storage.cache_dir() / "builds" / key / self.name / self.version

    def _errors(self):
        return storage.storage_errors(self.url, self.fs)

    def check_reachable(self) -> None:
        """Fail in seconds, naming it, on an unreachable store, rejected credentials or a missing bucket."""
        storage.check_bucket(self.fs, self.dataset_root, self.url)
        with self._errors():
            self.fs.ls(self.dataset_root.split("/", 1)[0])

    def committed_manifest(self) -> dict[str, Any] | None:
        with self._errors():
            if not self.fs.exists(storage.join(self.version_path, ds.MANIFEST)):
                return None
        return storage.read_manifest(self.fs, self.version_path, self.url)

    def holder(self) -> str | None:
        with self._errors():
            try:
                return self.fs.cat_file(self.lock_path).decode(errors="replace").strip() or "another build"
            except FileNotFoundError:
                return None

    def check_not_locked(self) -> None:
        holder = self.holder()
        if holder is not None:
            raise StorageError(self._locked_message(holder))

    def _locked_message(self, holder: str) -> str:
        return (f"{self.url}: being built by {holder}; wait for it to finish (if that build is dead, delete "
                f"{self.output_url}/{self.name}/.lock-{self.version})")

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the version's lock object on the store for the whole build and publish."""
        since = datetime.now(timezone.utc).isoformat(timespec="seconds")
        line = f"process {os.getpid()} on host {socket.gethostname()} since {since}".encode()
        try:
            self.fs.pipe_file(self.lock_path, line, IfNoneMatch="*")
        except Exception as error:
            if storage.precondition_failed(error):
                raise StorageError(self._locked_message(self.holder() or "another build")) from None
            raise StorageError(storage.describe(self.url, error, self.fs)) from None
        try:
            yield
        finally:
            with self._errors():
                self.fs.rm_file(self.lock_path)

    def uncommit(self) -> None:
        """Before overwriting: remove the manifest first, so no reader takes the half-replaced version."""
        with self._errors():
            for name in (ds.MANIFEST, "latest"):
                path = storage.join(self.version_path if name == ds.MANIFEST else self.dataset_root, name)
                if name == "latest" and self.fs.exists(path) and self.fs.cat_file(path).decode().strip() != self.version:
                    continue
                if self.fs.exists(path):
                    self.fs.rm_file(path)

    def publish(self, local: Path, manifest: dict[str, Any], set_latest: bool) -> dict[str, int]:
        """Upload a committed local version; manifest.json last. Returns {uploaded, reused} shard counts."""
        hashes = {shard["file"]: shard["sha256"] for shard in manifest["shards"]}
        files = sorted(p.relative_to(local).as_posix() for p in local.rglob("*")
                       if p.is_file() and not p.relative_to(local).parts[0].startswith("."))
        counts = {"uploaded": 0, "reused": 0}
        with self._errors():
            if self.fs.exists(storage.join(self.version_path, ds.MANIFEST)):
                self.uncommit()  # an overwrite: the store's version is no longer committed from here on
            stale = set(self._remote_files()) - set(files)
            for relative in sorted(stale):  # shards of an overwritten version
                self.fs.rm_file(storage.join(self.version_path, relative))
            for relative in [f for f in files if f in hashes]:
                target = storage.join(self.version_path, relative)
                if self._remote_sha256(target) == hashes[relative]:
                    counts["reused"] += 1
                    continue
                self.fs.put_file(str(local / relative), target, Metadata={"sha256": hashes[relative]})
                counts["uploaded"] += 1
                crash_point("publish:shard-uploaded")
            for relative in [f for f in files if f not in hashes and f != ds.MANIFEST]:
                self.fs.put_file(str(local / relative), storage.join(self.version_path, relative))
            crash_point("publish:before-manifest")
            self.fs.put_file(str(local / ds.MANIFEST), storage.join(self.version_path, ds.MANIFEST))
            if set_latest:
                self.fs.pipe_file(storage.join(self.dataset_root, "latest"), (self.version + "\n").encode())
        return counts

    def _remote_files(self) -> list[str]:
        try:
            return [posixpath.relpath(p, self.version_path) for p in self.fs.find(self.version_path)]
        except FileNotFoundError:
            return []

    def _remote_sha256(self, path: str) -> str | None:
        try:
            return self.fs.getxattr(path, "sha256")
        except (FileNotFoundError, KeyError):
            return None


def remote_output_of(recipe) -> RemoteOutput | None:
    return RemoteOutput(recipe.output, recipe.name, recipe.version) if storage.is_url(recipe.output) else None


def conflict(url: str) -> DatasetError:
    return DatasetError(f"{url}: already exists with other rows (another recipe, seed or generator); "
                        "pass --overwrite or choose another version")
