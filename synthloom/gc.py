"""`synthloom gc`: find, and with --delete remove, objects on an object store that no commit references.

A local build's leftovers are folders a user sees and removes; on an object store they are invisible to
every reader (a version prefix without `manifest.json` is not a dataset; a model-store content folder no
marker names is no entry) and cost storage until someone deletes them. Two kinds, each older than a grace
period (default 24 h, so a build or an upload still in progress is never touched):

Datasets (an output URL, `<url>/<name>/<version>/…`, remote_output.py's layout):
- an *uncommitted version*: a prefix without `manifest.json` that a build staged (its generation mark or
  its lock object is there: a prefix without either is not recognised as ours and left alone), whose
  lock is absent or stale. It is deleted under the version's own lock (a stale one is taken over, a live
  one makes gc skip the version), after checking again that no manifest appeared: a build cannot start
  on it meanwhile.
- *resume state* left inside a committed version (`.records/`, `.raw/`, `.generation_sha256`: a build
  killed between its manifest and its clean-up), deleted under the same lock;
- a *stale lock* with nothing staged under it: taken over and released (deleted).

Model store (`--models`, `SYNTHLOOM_MODEL_STORE`'s URL, remote_models.py's layout):
- a *content folder* `<k2>/<key>/<content>/` that its key's marker (`store.json`) does not name: the copy
  of a machine that lost the marker race and died before deleting it, or of an upload killed before its
  marker. The second kind is deleted only after checking again that the key still has no marker; an
  upload stalled for longer than the grace period and then resumed would write a marker naming deleted
  files (its entry then fails verification with one line, and deleting the key rebuilds it).

Ages are the objects' LastModified against this machine's clock: a skew of minutes is far below the grace
period. Written here because fsspec and the stores have no notion of our commit markers; lifecycle rules
of a bucket can only expire by age, which would delete committed versions too.
"""

from __future__ import annotations

import logging
import posixpath
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable

from . import dataset as ds
from . import storage
from .errors import StorageError

log = logging.getLogger(__name__)

DEFAULT_GRACE_HOURS = 24.0
RESUME_STATE = (".records/", ".raw/", ".generation_sha256")  # remote_output.py's staging state
HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class Garbage:
    """One prefix (or object) to delete, and why."""

    url: str
    why: str
    objects: int
    bytes: int
    age_hours: float

    def describe(self) -> str:
        age = f"{self.age_hours:.1f} h" if self.age_hours >= 1 else f"{self.age_hours * 60:.0f} min"
        return (f"{self.url} ({self.why}; {self.objects} object{'s' if self.objects != 1 else ''}, "
                f"{self.bytes:,} bytes, newest {age} old)")


def _age_hours(info: dict[str, Any], now: datetime) -> float:
    modified = info.get("LastModified") or info.get("mtime")
    if isinstance(modified, str):
        modified = datetime.fromisoformat(modified.replace("Z", "+00:00"))
    if not isinstance(modified, datetime):
        return 0.0  # unknown: treat as new, never delete it
    if modified.tzinfo is None:
        modified = modified.replace(tzinfo=timezone.utc)
    return max((now - modified).total_seconds() / 3600, 0.0)


def _listing(url: str) -> tuple[Any, str, dict[str, dict[str, Any]]]:
    """(fs, root, {path relative to root: info}) of every object under `url`."""
    if not storage.is_url(url):
        raise StorageError(f"{url}: gc works on object-store URLs (s3://…); a local output's leftovers are "
                           "folders to delete by hand")
    fs, root = storage.filesystem(url)
    root = root.rstrip("/")
    storage.check_bucket(fs, root, url)
    with storage.storage_errors(url, fs):
        fs.invalidate_cache(root)
        found = fs.find(root, detail=True, withdirs=False)
    return fs, root, {path[len(root) + 1:]: info for path, info in found.items() if path.startswith(root + "/")}


def _summary(url: str, why: str, items: Iterable[dict[str, Any]], now: datetime) -> Garbage:
    items = list(items)
    return Garbage(url, why, len(items), sum(int(i.get("size") or 0) for i in items),
                   min((_age_hours(i, now) for i in items), default=0.0))


# -- datasets -------------------------------------------------------------------------------------
def dataset_garbage(output_url: str, grace_hours: float = DEFAULT_GRACE_HOURS) -> list[Garbage]:
    """What `collect_datasets` would delete under an output URL (nothing is changed)."""
    return [g for g, _ in _dataset_candidates(output_url.rstrip("/"), grace_hours)]


def _dataset_candidates(output_url: str, grace_hours: float):
    from .remote_output import GENERATION_MARK, stale_seconds

    fs, root, objects = _listing(output_url)
    now = datetime.now(timezone.utc)
    stale_hours = stale_seconds() / 3600
    versions: dict[tuple[str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
    locks: dict[tuple[str, str], dict[str, Any]] = {}
    for relative, info in objects.items():
        parts = relative.split("/")
        if len(parts) == 2 and parts[1].startswith(".lock-"):
            locks[(parts[0], parts[1][len(".lock-"):])] = info
        elif len(parts) >= 3:
            versions[(parts[0], parts[1])]["/".join(parts[2:])] = info
    for key in sorted(set(versions) | set(locks)):
        name, version = key
        files, lock = versions.get(key, {}), locks.get(key)
        lock_age = _age_hours(lock, now) if lock is not None else None
        if lock is not None and lock_age <= stale_hours:
            continue  # a live build (or one dead for less than the stale timeout): never touched
        url = f"{output_url}/{name}/{version}"
        if not files:
            yield Garbage(f"{output_url}/{name}/.lock-{version}", "stale lock of a build that staged nothing",
                          1, int(lock.get("size") or 0), lock_age), (name, version, "lock")
            continue
        newest = min(_age_hours(i, now) for i in files.values())
        if newest < grace_hours:
            continue
        if ds.MANIFEST not in files:
            if GENERATION_MARK not in files and lock is None:
                continue  # no mark of ours: not a prefix a synthloom build staged
            why = "uncommitted version: no manifest.json" + (", its lock stale" if lock is not None else "")
            yield _summary(url + "/", why, files.values(), now), (name, version, "version")
        else:
            leftovers = {p: i for p, i in files.items() if p.startswith(RESUME_STATE)}
            if leftovers:
                names = ", ".join(sorted({p.split("/")[0] for p in leftovers}))
                yield _summary(f"{url}/", f"resume state left in a committed version: {names}", leftovers.values(),
                               now), (name, version, "resume")
            elif lock is not None:
                yield Garbage(f"{output_url}/{name}/.lock-{version}", "stale lock of a committed version", 1,
                              int(lock.get("size") or 0), lock_age), (name, version, "lock")


def collect_datasets(output_url: str, grace_hours: float = DEFAULT_GRACE_HOURS) -> list[Garbage]:
    """Delete what `dataset_garbage` lists, each under its version's lock; returns what was deleted (a
    version whose lock turns out to be live, or that got a manifest meanwhile, is skipped)."""
    from .remote_output import RemoteOutput

    output_url = output_url.rstrip("/")
    deleted = []
    for garbage, (name, version, kind) in list(_dataset_candidates(output_url, grace_hours)):
        target = RemoteOutput(output_url, name, version)
        try:
            with target.lock():  # takes a stale lock over; a live one raises StorageError
                with target._errors():
                    if kind == "version":
                        if target.fs.exists(storage.join(target.version_path, ds.MANIFEST)):
                            continue  # committed meanwhile
                        target.fs.rm(target.version_path, recursive=True)
                    elif kind == "resume":
                        for state in RESUME_STATE:
                            path = storage.join(target.version_path, state.rstrip("/"))
                            if target.fs.exists(path):
                                target.fs.rm(path, recursive=True)
                    target.fs.invalidate_cache(target.version_path)
        except StorageError as error:
            log.warning("skipped %s: %s", garbage.url, error)
            continue
        deleted.append(garbage)  # kind "lock": taking it over and releasing it deleted it
    return deleted


# -- the model store -----------------------------------------------------------------------------
def model_garbage(store_url: str, grace_hours: float = DEFAULT_GRACE_HOURS) -> list[Garbage]:
    """What `collect_models` would delete in a model store on an object store (nothing is changed)."""
    return [g for g, _ in _model_candidates(store_url.rstrip("/"), grace_hours)]


def _model_candidates(store_url: str, grace_hours: float):
    import json

    from .remote_models import ENTRY_RECORD

    fs, root, objects = _listing(store_url)
    now = datetime.now(timezone.utc)
    keys: dict[tuple[str, str], dict[str, dict[str, dict[str, Any]]]] = defaultdict(lambda: defaultdict(dict))
    markers: set[tuple[str, str]] = set()
    for relative, info in objects.items():
        parts = relative.split("/")
        if len(parts) < 3 or not HEX64.match(parts[1]) or parts[0] != parts[1][:2]:
            continue  # not an entry's object (a local store's layout differs; other data is left alone)
        if len(parts) == 3 and parts[2] == ENTRY_RECORD:
            markers.add((parts[0], parts[1]))
        elif len(parts) >= 4 and HEX64.match(parts[2]):
            keys[(parts[0], parts[1])][parts[2]]["/".join(parts[3:])] = info
    for (k2, key), contents in sorted(keys.items()):
        named = None
        if (k2, key) in markers:
            with storage.storage_errors(store_url, fs):
                named = json.loads(fs.cat_file(posixpath.join(root, k2, key, ENTRY_RECORD)))["content"]
        for content, files in sorted(contents.items()):
            if content == named:
                continue
            garbage = _summary(f"{store_url}/{k2}/{key}/{content}/",
                               "content its entry's marker does not name" if named else
                               "content of an upload that never wrote its marker", files.values(), now)
            if garbage.age_hours >= grace_hours:
                yield garbage, (posixpath.join(root, k2, key), content, named is not None)


def collect_models(store_url: str, grace_hours: float = DEFAULT_GRACE_HOURS) -> list[Garbage]:
    """Delete what `model_garbage` lists; an unmarked key's content only if the key still has no marker."""
    from .remote_models import ENTRY_RECORD

    fs, _ = storage.filesystem(store_url.rstrip("/"))
    deleted = []
    for garbage, (key_path, content, marked) in list(_model_candidates(store_url.rstrip("/"), grace_hours)):
        with storage.storage_errors(store_url, fs):
            marker = posixpath.join(key_path, ENTRY_RECORD)
            fs.invalidate_cache(key_path)
            if not marked and fs.exists(marker):
                continue  # its upload committed meanwhile: now it is the entry
            fs.rm(posixpath.join(key_path, content), recursive=True)
        deleted.append(garbage)
    return deleted
