"""Datasets on object storage: fsspec URLs (`s3://bucket/prefix`, `file://…`) for readers and outputs.

Local folders stay plain `Path`s everywhere (dataset.py's commit protocol relies on rename and flock).
A URL goes through fsspec (s3fs for `s3://`); credentials and the endpoint come from the store's own
settings (for S3: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_ENDPOINT_URL, ~/.aws, or
fsspec's config), never from synthloom. Extra filesystem options: `SYNTHLOOM_STORAGE_OPTIONS`, a JSON
object passed to the filesystem (`{"client_kwargs": {"endpoint_url": "http://…"}}`).

Batch readers (inspect, verify, export, evaluate, label, `load`) work on a local mirror of the version
(`materialize`): they read every byte anyway, and the local code path is the tested one. The streaming
reader (streaming.py) reads shards straight from the store.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .errors import DatasetError, StorageError

MANIFEST = "manifest.json"
PENDING_MANIFEST = ".manifest.pending.json"
LATEST = "latest"

# A wrong endpoint or a dead server must fail in seconds, not after botocore's default of 60 s
# connect timeout x 5 attempts; a slow but alive store still gets 2 attempts per request.
S3_DEFAULTS: dict[str, Any] = {"config_kwargs": {"connect_timeout": 3, "read_timeout": 60,
                                                 "retries": {"max_attempts": 2, "mode": "standard"}}}


def is_url(path: Any) -> bool:
    """A remote location (`s3://…`); `file://` URLs are plain local paths (see `local_path`)."""
    return isinstance(path, str) and "://" in path and not path.startswith("file://")


def local_path(path: str | os.PathLike) -> Path:
    """A local path, `file://` stripped."""
    text = os.fspath(path)
    return Path(text[len("file://"):] if text.startswith("file://") else text).expanduser()


def storage_options(protocol: str) -> dict[str, Any]:
    options: dict[str, Any] = json.loads(json.dumps(S3_DEFAULTS)) if protocol in ("s3", "s3a") else {}
    extra = os.environ.get("SYNTHLOOM_STORAGE_OPTIONS")
    if extra:
        try:
            user = json.loads(extra)
        except ValueError as error:
            raise StorageError(f"SYNTHLOOM_STORAGE_OPTIONS: not JSON ({error})") from None
        for key, value in user.items():
            options[key] = {**options.get(key, {}), **value} if isinstance(value, dict) else value
    return options


WRITABLE_PROTOCOLS = ("s3", "s3a")  # writers need S3's conditional PUT (docs/DESIGN.md, "Stores other than S3")


def check_writable_url(url: str, what: str = "output") -> None:
    """Writers (build/label/evaluate outputs, the model store) speak S3's API only: another protocol is one
    line here, not an error deep in a commit (readers go through any fsspec filesystem)."""
    protocol = url.split("://", 1)[0]
    if protocol not in WRITABLE_PROTOCOLS:
        raise StorageError(f"{url}: {what} on '{protocol}://' is not supported; synthloom writes to S3-compatible "
                           "stores (s3://…, any endpoint via AWS_ENDPOINT_URL) or local folders, because its "
                           "version lock needs S3's conditional PUT (docs/DESIGN.md, \"Stores other than S3\")")


def filesystem(url: str):
    """(fsspec filesystem, path inside it) for a URL, with synthloom's timeouts."""
    import fsspec

    protocol = url.split("://", 1)[0]
    try:
        return fsspec.core.url_to_fs(url, **storage_options(protocol))
    except (ImportError, ValueError) as error:
        raise StorageError(f"{url}: no filesystem for '{protocol}://' ({error})") from None


def endpoint_of(fs) -> str:
    """The server a filesystem talks to, for error lines."""
    client_kwargs = getattr(fs, "client_kwargs", None) or {}
    return (client_kwargs.get("endpoint_url") or getattr(fs, "endpoint_url", None)
            or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "the default endpoint")


@contextmanager
def storage_errors(url: str, fs=None) -> Iterator[None]:
    """One line naming the URL (and the endpoint) for what object stores raise: an unreachable
    endpoint, rejected credentials, a missing bucket."""
    try:
        yield
    except StorageError:
        raise
    except DatasetError:
        raise
    except Exception as error:  # botocore / aiohttp / s3fs errors have no common base but Exception
        raise StorageError(describe(url, error, fs)) from None


def describe(url: str, error: BaseException, fs=None) -> str:
    text = f"{type(error).__name__}: {error}"
    bucket = url.split("://", 1)[-1].split("/", 1)[0]
    endpoint = endpoint_of(fs) if fs is not None else "the object store"
    lowered = text.lower()
    if any(s in lowered for s in ("could not connect", "connecttimeout", "connect timeout", "cannot connect",
                                  "connection refused", "name or service not known", "endpointconnectionerror")):
        return f"{url}: cannot reach the object store at {endpoint} ({_first_line(error)})"
    if any(s in lowered for s in ("invalidaccesskeyid", "signaturedoesnotmatch", "access denied", "accessdenied",
                                  "forbidden", "invalid access key", "credentials")) or isinstance(error, PermissionError):
        return f"{url}: the object store at {endpoint} rejected the credentials ({_first_line(error)})"
    if "nosuchbucket" in lowered or "bucket does not exist" in lowered or "specified bucket does not exist" in lowered:
        return f"{url}: bucket '{bucket}' does not exist at {endpoint}"
    return f"{url}: object storage error ({_first_line(error)})"


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def precondition_failed(error: Exception) -> bool:
    """Whether a conditional write was refused. 412: the condition (If-None-Match / If-Match) did not
    hold. 409 ConditionalRequestConflict: AWS's answer to a conditional write racing another one in flight
    for the same key; either way another writer got there first."""
    text = str(error)
    return any(s in text for s in ("PreconditionFailed", "pre-conditions you specified did not hold", "412",
                                   "ConditionalRequestConflict", "409"))


def join(*parts: str) -> str:
    return posixpath.join(*[p.rstrip("/") for p in parts])


# -- reading a version on a store --------------------------------------------------------------
def resolve_version(url: str) -> tuple[Any, str, str]:
    """(filesystem, version path, version URL) for a version URL, or a dataset URL whose `latest`
    names the version (or which holds exactly one committed version)."""
    fs, root = filesystem(url)
    base = url.rstrip("/")
    with storage_errors(url, fs):
        if fs.exists(join(root, MANIFEST)) or fs.exists(join(root, PENDING_MANIFEST)):
            return fs, root.rstrip("/"), base
        if fs.exists(join(root, LATEST)):
            version = fs.cat_file(join(root, LATEST)).decode().strip()
            return fs, join(root, version), f"{base}/{version}"
        if _bucket_missing(fs, root):
            bucket = root.split("/", 1)[0]
            raise StorageError(f"{url}: bucket '{bucket}' does not exist at {endpoint_of(fs)}")
        versions = sorted(p for p in _subfolders(fs, root) if fs.exists(join(p, MANIFEST)))
        if len(versions) == 1:
            name = posixpath.basename(versions[0])
            return fs, versions[0], f"{base}/{name}"
        if versions:
            names = ", ".join(posixpath.basename(p) for p in versions)
            raise DatasetError(f"{url}: several versions ({names}) and no 'latest'; name one")
    return fs, root.rstrip("/"), base  # read_manifest says what is wrong with it


def _bucket_missing(fs, root: str) -> bool:
    """s3fs answers `exists` False for a missing bucket; tell that apart from a missing prefix."""
    if "s3" in (fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)):
        try:
            fs.call_s3("head_bucket", Bucket=root.split("/", 1)[0])
        except FileNotFoundError:
            return True
    return False


def check_bucket(fs, root: str, url: str) -> None:
    """Fail naming it when the bucket is missing or the credentials are rejected (s3fs's `exists`
    answers False for both)."""
    with storage_errors(url, fs):
        if _bucket_missing(fs, root):
            raise StorageError(f"{url}: bucket '{root.split('/', 1)[0]}' does not exist at {endpoint_of(fs)}")


def _subfolders(fs, root: str) -> list[str]:
    try:
        return [entry["name"].rstrip("/") for entry in fs.ls(root, detail=True) if entry["type"] == "directory"]
    except FileNotFoundError:
        return []


def read_manifest(fs, version: str, url: str) -> dict[str, Any]:
    """The committed manifest of a version on a store: a version without one is never read."""
    from . import dataset as ds

    with storage_errors(url, fs):
        try:
            data = fs.cat_file(join(version, MANIFEST))
        except FileNotFoundError:
            if fs.exists(join(version, PENDING_MANIFEST)) or fs.exists(join(version, "data")):
                raise DatasetError(f"{url}: not a complete synthloom dataset (no {MANIFEST})") from None
            raise DatasetError(f"{url}: dataset not found") from None
    return ds.parse_manifest(data, f"{url}/{MANIFEST}")


def materialize(url: str, fresh: bool = False) -> Path:
    """A local mirror of a committed version on a store, for the batch readers; returns its folder.

    Every file of the version is copied (the mirror has what the store has, so `verify` sees an
    unlisted shard too). A shard whose mirrored copy has the manifest's sha256 is not fetched again
    unless `fresh` (verify always refetches: it checks the store's bytes, not an older copy). The
    manifest is written last, so a mirror interrupted mid-copy is never read as a dataset."""
    from .provenance import sha256_file

    fs, version, version_url = resolve_version(url)
    manifest = read_manifest(fs, version, version_url)
    target = cache_dir() / hashlib.sha256(version_url.encode()).hexdigest()[:16] / posixpath.basename(version)
    hashes = {shard["file"]: shard["sha256"] for shard in manifest["shards"]}
    with storage_errors(version_url, fs):
        remote = [p for p in fs.find(version) if not _hidden(posixpath.relpath(p, version))]
        (target / MANIFEST).unlink(missing_ok=True)
        for path in remote:
            relative = posixpath.relpath(path, version)
            if relative == MANIFEST:
                continue
            local = target / relative
            if not fresh and relative in hashes and local.is_file() and sha256_file(local) == hashes[relative]:
                continue
            local.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(path, str(local) + ".part")
            os.replace(str(local) + ".part", local)
        wanted = {posixpath.relpath(p, version) for p in remote}
        for stale in [p for p in target.rglob("*") if p.is_file() and p.relative_to(target).as_posix() not in wanted]:
            stale.unlink()
        (target / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return target


def _hidden(relative: str) -> bool:
    return relative.split("/", 1)[0].startswith(".")


def cache_dir() -> Path:
    root = os.environ.get("SYNTHLOOM_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "synthloom")
    return Path(root) / "remote"

