"""A version whose `output:` is an object-store URL (`s3://bucket/prefix`): the commit protocol on the store.

The version prefix `<url>/<name>/<version>/` is its own staging area: readers (storage.read_manifest)
never read a prefix without `manifest.json`, so everything before that PUT is uncommitted. An object
store has no rename, so shards go once, to their final keys (a staging copy would double the traffic).

- A build (`begin_staging`, `publish_staged`): its shard tasks write each shard there themselves, sha256
  as object metadata, then a record (synthloom/staging.py); the flow checks every shard object against
  the manifest, uploads the metadata files (croissant.json, README.md, preview.png), writes
  `manifest.json` last, then `<url>/<name>/latest`, then deletes the resume state (records, raw shards,
  the generation mark). A rerun after a crash reuses every staged shard of the same rows.
- `label` (`publish`) builds its version locally, then uploads it: shards (skipping those already there
  with the same sha256), metadata, `manifest.json` last, `latest`.

One build per version: `<url>/<name>/.lock-<version>`, created with a conditional PUT (`If-None-Match: *`):
of two builds that race, the store lets exactly one create it, the other fails naming the holder. The
lock records its holder (host, pid, start), a token unique to the acquisition, and a heartbeat: the
holder rewrites it every min(60 s, stale timeout / 4) with `If-Match: <its ETag>`. Unlike flock, a build
killed with SIGKILL leaves the object behind; its heartbeat then stops, and a later build that finds it
older than the stale timeout (`SYNTHLOOM_LOCK_STALE_SECONDS`, default 1 h; age = the store's Date minus
the object's LastModified, both read in one GET) takes it over, as does `--force-unlock` at any age.
Taking over is a PUT with `If-Match: <the ETag it read>`, so of two takers (or a taker and a holder that
was alive after all, heartbeating) exactly one wins. A holder whose heartbeat finds its ETag replaced has
lost the lock: it stops before writing the manifest and fails naming the new holder. docs/DESIGN.md says
what is guaranteed, why, and on which stores.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import socket
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Iterator

from fsspec.asyn import sync

from . import dataset as ds
from . import staging as stage
from . import storage
from .errors import DatasetError, StorageError
from .faults import crash_point

log = logging.getLogger(__name__)

GENERATION_MARK = ".generation_sha256"  # which rows the staged shards under a version prefix are of
STALE_SECONDS = 3600.0  # a lock whose heartbeat is older than this belongs to a dead build


def stale_seconds() -> float:
    value = os.environ.get("SYNTHLOOM_LOCK_STALE_SECONDS")
    try:
        seconds = STALE_SECONDS if value is None else float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise StorageError(f"SYNTHLOOM_LOCK_STALE_SECONDS={value!r} is not a positive number of seconds")
    return seconds


@dataclass(frozen=True)
class LockState:
    """A lock object as read in one GET: who holds it, the token of that acquisition, its ETag (for
    If-Match) and its age in seconds, all of the same version of the object."""

    holder: str
    token: str | None
    etag: str
    age: float


class RemoteOutput:
    """Where one version goes on a store."""

    def __init__(self, output_url: str, name: str, version: str, force_unlock: bool = False):
        self.output_url = output_url.rstrip("/")
        self.name, self.version = name, version
        storage.check_writable_url(self.output_url)
        self.fs, root = storage.filesystem(self.output_url)
        self.dataset_root = storage.join(root, name)
        self.version_path = storage.join(self.dataset_root, version)
        self.url = f"{self.output_url}/{name}/{version}"
        self.lock_path = storage.join(self.dataset_root, f".lock-{version}")
        self.lock_url = f"{self.output_url}/{name}/.lock-{version}"
        self.force_unlock = force_unlock  # take over a lock however fresh its heartbeat (--force-unlock)
        self.stale_seconds = stale_seconds()
        self._etag: str | None = None  # of the lock object while this process holds it
        self._token: str | None = None  # names this acquisition in the lock body (see _body)
        self._lost_to: str | None = None  # the holder that took the lock over from this process
        self._guard = threading.Lock()  # heartbeat vs. checks of the ETag

    def __getstate__(self) -> dict[str, Any]:
        # Picklable for Prefect, which hashes a task's inputs (the build plan holds this object).
        return {k: v for k, v in self.__dict__.items() if k != "_guard"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._guard = threading.Lock()

    def local_build_dir(self) -> Path:
        """The local folder a build writes its metadata files into before committing on the store (and
        `label` its whole version before publishing it)."""
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

    # -- the version's lock object ----------------------------------------------------------------
    def _bucket_key(self) -> tuple[str, str]:
        bucket, key, _ = self.fs.split_path(self.lock_path)
        return bucket, key

    def read_lock(self) -> LockState | None:
        """The lock object, None if there is none. One GET: body, ETag and LastModified come from the
        same version of the object. (A HEAD then a GET could pair the ETag of a lock with the body of the
        one that replaced it in between: the takeover conditioned on that ETag was refused, rightly, but
        the error named the new holder as the one taken over.) The age is the server's Date minus
        LastModified, both the store's clock: a client with a fast clock does not see live locks as stale."""
        bucket, key = self._bucket_key()
        with self._errors():
            self.fs.invalidate_cache(self.lock_path)
            try:
                response, data = sync(self.fs.loop, _get_object, self.fs, bucket, key)
            except FileNotFoundError:
                return None
        body = data.decode(errors="replace").strip()
        date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        now = parsedate_to_datetime(date) if date else datetime.now(timezone.utc)
        age = (now - response["LastModified"]).total_seconds()
        return LockState(_describe_holder(body), _token_of(body), response["ETag"], max(age, 0.0))

    def holder(self) -> str | None:
        state = self.read_lock()
        return state.holder if state is not None else None

    def check_not_locked(self) -> None:
        """The preflight: fail naming the holder of a live lock (a stale one, or --force-unlock, will be
        taken over by `lock`)."""
        state = self.read_lock()
        if state is not None and not self.force_unlock and state.age <= self.stale_seconds:
            raise StorageError(self._locked_message(state))

    def _locked_message(self, state: LockState) -> str:
        return (f"{self.url}: being built by {state.holder} (lock heartbeat {state.age:.0f} s ago); wait for it "
                f"to finish, or if that build is dead rerun with --force-unlock (a lock whose heartbeat is "
                f"older than {self.stale_seconds:.0f} s is taken over by the next build; {self.lock_url})")

    def _body(self, started: str) -> bytes:
        """The lock body. `token` is new for each acquisition: S3 ETags of single-part objects are the MD5
        of the body, so without it two acquisitions in one process in one second (two threads, or a
        force-unlock) would have the same ETag and If-Match could not tell their owners apart. It also
        lets a build recognise its own write whose response was lost (botocore and s3fs retry requests:
        the retry of a conditional PUT that had landed gets 412)."""
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started,
                           "heartbeat": now, "version": self.url, "token": self._token}).encode()

    def _put(self, body: bytes, **condition: str) -> str:
        """A conditional PUT of the lock object; returns its new ETag."""
        bucket, key = self._bucket_key()
        try:
            response = self.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=body, **condition)
        finally:
            self.fs.invalidate_cache(self.lock_path)
        return response["ETag"]

    def acquire(self, started: str) -> None:
        """Create the lock object, or take over a stale one (any one with --force-unlock), conditionally."""
        self._token = uuid.uuid4().hex
        body = self._body(started)
        for _ in range(3):  # a lock released between our create and our read: create again
            try:
                self._etag = self._put(body, IfNoneMatch="*")
                return
            except Exception as error:
                if not storage.precondition_failed(error):
                    raise StorageError(storage.describe(self.url, error, self.fs)) from None
            state = self.read_lock()
            if state is None:
                continue
            if state.token == self._token:  # our create landed; its response was lost and the retry refused
                self._etag = state.etag
                return
            if not self.force_unlock and state.age <= self.stale_seconds:
                raise StorageError(self._locked_message(state))
            why = "--force-unlock" if self.force_unlock and state.age <= self.stale_seconds else \
                f"its heartbeat is {state.age:.0f} s old, stale after {self.stale_seconds:.0f} s"
            try:
                self._etag = self._put(body, IfMatch=state.etag)
            except Exception as error:
                if not storage.precondition_failed(error):
                    raise StorageError(storage.describe(self.url, error, self.fs)) from None
                now = self.read_lock()
                if now is not None and now.token == self._token:  # our takeover landed (a retried request)
                    self._etag = now.etag
                    log.warning("%s: took over the lock of %s (%s)", self.url, state.holder, why)
                    return
                raise StorageError(f"{self.url}: another build took over the lock of {state.holder} first "
                                   f"(now held by {now.holder if now else 'nobody'}; {self.lock_url})") from None
            log.warning("%s: took over the lock of %s (%s)", self.url, state.holder, why)
            return
        raise StorageError(f"{self.url}: could not create {self.lock_url} (it kept appearing and vanishing)")

    def heartbeat_seconds(self) -> float:
        return max(0.2, min(60.0, self.stale_seconds / 4))

    def _heartbeat(self, started: str, stop: threading.Event) -> None:
        while not stop.wait(self.heartbeat_seconds()):
            with self._guard:
                try:
                    self._etag = self._put(self._body(started), IfMatch=self._etag)
                except Exception as error:
                    if storage.precondition_failed(error):
                        try:
                            state = self.read_lock()
                        except StorageError as read_error:  # cannot tell yet: try again at the next beat
                            log.warning("%s; retrying", read_error)
                            continue
                        if state is not None and state.token == self._token:  # our last beat landed after all
                            self._etag = state.etag
                            continue
                        self._lost_to = state.holder if state is not None else "nobody (the lock was deleted)"
                        log.error("%s: lost the version lock to %s", self.url, self._lost_to)
                        return
                    log.warning("%s: lock heartbeat failed (%s); retrying", self.url, storage.describe(
                        self.url, error, self.fs))

    def check_held(self) -> None:
        """Before a commit step: fail if another build took the lock over from this one (the lock's
        token is no longer this acquisition's)."""
        with self._guard:
            state = None if self._lost_to else self.read_lock()
            if self._lost_to or state is None or state.token != self._token:
                holder = self._lost_to or (state.holder if state else "nobody (the lock object was deleted)")
                raise StorageError(f"{self.url}: this build lost its lock to {holder}; nothing committed "
                                   f"(a takeover with --force-unlock or a stale heartbeat; {self.lock_url})")

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the version's lock object on the store for the whole build and publish, heartbeating."""
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self._lost_to = None
        self.acquire(started)
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(started, stop), daemon=True,
                                name=f"lock-heartbeat-{self.version}")
        beat.start()
        try:
            yield
        finally:
            stop.set()
            beat.join()
            self._release()

    def _release(self) -> None:
        """Delete the lock object if it is still ours (If-Match: a lock taken over stays with its taker)."""
        with self._guard:
            if self._lost_to:
                return
            bucket, key = self._bucket_key()
            with self._errors():
                try:
                    self.fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=self._etag)
                except Exception as error:
                    if storage.precondition_failed(error):
                        log.warning("%s: the lock was taken over; left to its new holder", self.url)
                    else:  # a store without conditional deletes: check, then delete (one request's window)
                        state = self.read_lock()
                        if state is not None and state.etag == self._etag:
                            self.fs.call_s3("delete_object", Bucket=bucket, Key=key)
                finally:
                    self.fs.invalidate_cache(self.lock_path)
            self._etag = None

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
            if self._etag is not None:
                self.check_held()  # a build whose lock was taken over commits nothing
            self.fs.put_file(str(local / ds.MANIFEST), storage.join(self.version_path, ds.MANIFEST))
            if set_latest:
                self.fs.pipe_file(storage.join(self.dataset_root, "latest"), (self.version + "\n").encode())
        return counts

    # -- a build whose shard tasks staged their shards on the store (synthloom/staging.py) -----------
    def begin_staging(self, generation: str) -> str:
        """Make the version prefix this build's staging area; returns the URL shard tasks write to. Under
        the lock. A committed version there is uncommitted first (the build got here only to overwrite it);
        what another generation staged (other rows, or an older layout) is deleted, so a rerun resumes only
        from shards of these rows."""
        mark = storage.join(self.version_path, GENERATION_MARK)
        with self._errors():
            if self.fs.exists(storage.join(self.version_path, ds.MANIFEST)):
                self.uncommit()
            try:
                staged = self.fs.cat_file(mark).decode().strip()
            except FileNotFoundError:
                staged = None
            if staged != generation:
                if self._remote_files():
                    self.fs.rm(self.version_path, recursive=True)
                self.fs.pipe_file(mark, (generation + "\n").encode())
        return self.url

    def publish_staged(self, local: Path, manifest: dict[str, Any], set_latest: bool) -> None:
        """Commit a version whose shards the tasks staged on the store: every shard object is checked
        against the manifest (its sha256 metadata and size), objects of an overwritten version that this one
        lacks are deleted, the metadata files in `local` are uploaded, `manifest.json` last, then `latest`;
        then the staging state (records, raw shards, generation mark) is deleted."""
        files = sorted(p.relative_to(local).as_posix() for p in local.rglob("*")
                       if p.is_file() and p.name != ds.MANIFEST)
        for shard in manifest["shards"]:
            if not stage.shard_matches(self.url, shard):
                raise StorageError(f"{self.url}/{shard['file']}: staged shard missing or changed on the store; "
                                   "nothing committed (run the build again)")
        keep = {shard["file"] for shard in manifest["shards"]} | set(files)
        with self._errors():
            self.fs.invalidate_cache(self.version_path)  # shard tasks of other processes wrote here
            for relative in self._remote_files():
                if relative not in keep and not storage._hidden(relative):
                    self.fs.rm_file(storage.join(self.version_path, relative))
            for relative in files:
                self.fs.put_file(str(local / relative), storage.join(self.version_path, relative))
            crash_point("publish:before-manifest")
            self.check_held()  # a build whose lock was taken over commits nothing
            self.fs.put_file(str(local / ds.MANIFEST), storage.join(self.version_path, ds.MANIFEST))
            if set_latest:
                self.fs.pipe_file(storage.join(self.dataset_root, "latest"), (self.version + "\n").encode())
        self.clear_staging()

    def clear_staging(self) -> None:
        """Delete the resume state of a committed version (idempotent: a rerun after a crash finishes it)."""
        with self._errors():
            self.fs.invalidate_cache(self.version_path)  # s3fs's listing cache predates the tasks' writes
            for name in (stage.RECORDS_DIR, ds.RAW_DIR, GENERATION_MARK):
                try:
                    self.fs.rm(storage.join(self.version_path, name), recursive=True)
                except FileNotFoundError:
                    pass

    def publish_results(self, local: Path, set_latest: bool) -> None:
        """After `evaluate` on a mirror: upload what it rewrote (eval/, README.md, the other metadata), then
        manifest.json last (one PUT replaces it), then `latest`. The shards must be the store's."""
        manifest = ds.read_manifest(local)
        on_store = self.committed_manifest()
        if on_store is None or [s["sha256"] for s in on_store["shards"]] != [s["sha256"] for s in manifest["shards"]]:
            raise StorageError(f"{self.url}: its shards changed on the store during the evaluation; nothing written")
        shards = {shard["file"] for shard in manifest["shards"]}
        files = sorted(p.relative_to(local).as_posix() for p in local.rglob("*")
                       if p.is_file() and not p.relative_to(local).parts[0].startswith("."))
        with self._errors():
            for relative in [f for f in files if f not in shards and f != ds.MANIFEST]:
                self.fs.put_file(str(local / relative), storage.join(self.version_path, relative))
            crash_point("publish:before-manifest")
            if self._etag is not None:
                self.check_held()
            self.fs.put_file(str(local / ds.MANIFEST), storage.join(self.version_path, ds.MANIFEST))
            if set_latest:
                self.fs.pipe_file(storage.join(self.dataset_root, "latest"), (self.version + "\n").encode())

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


async def _get_object(fs, bucket: str, key: str) -> tuple[dict[str, Any], bytes]:
    """One GET of an object: (the response, its body)."""
    response = await fs._call_s3("get_object", Bucket=bucket, Key=key)
    try:
        return response, await response["Body"].read()
    finally:
        response["Body"].close()


def _token_of(body: str) -> str | None:
    try:
        return json.loads(body).get("token")
    except (ValueError, AttributeError):
        return None


def _describe_holder(body: str) -> str:
    """`process N on host H since T` from a lock object's JSON (older locks hold that line as text)."""
    try:
        record = json.loads(body)
        return f"process {record['pid']} on host {record['host']} since {record['started']}"
    except (ValueError, KeyError, TypeError):
        return body or "another build"


def version_output(url: str) -> RemoteOutput:
    """The RemoteOutput of the committed version a URL names (a version, or a dataset with `latest`)."""
    _, _, version_url = storage.resolve_version(url)
    dataset_url, version = version_url.rsplit("/", 1)
    output_url, name = dataset_url.rsplit("/", 1)
    return RemoteOutput(output_url, name, version)


def remote_output_of(recipe, force_unlock: bool = False) -> RemoteOutput | None:
    return RemoteOutput(recipe.output, recipe.name, recipe.version, force_unlock) if storage.is_url(recipe.output) \
        else None


def conflict(url: str) -> DatasetError:
    return DatasetError(f"{url}: already exists with other rows (another recipe, seed or generator); "
                        "pass --overwrite or choose another version")
