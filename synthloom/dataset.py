"""The on-disk dataset: the only code that reads or writes its format.

<output>/<name>/<version>/
    data/<split>-00000-of-00004.parquet   zstd Parquet shards (HF naming)
    manifest.json                         written last; its presence means "complete"
    croissant.json, README.md, preview.png

Commit protocol (every instant is resumable; docs/DESIGN.md states each step's invariant):

1. shards are written into `<output>/<name>/.staging-<version>/data/` (temp name, fsync, rename), beside
   the build's resume state (`.generation_sha256`, the Prefect result cache `.results/`, and with
   labelers the generated shards they read, `.raw/`);
2. the metadata files and `.manifest.pending.json` are written into the staging folder;
3. the staging folder becomes the version folder by one rename (resume state travels with it);
4. the pending manifest is renamed to `manifest.json`: from here the version is complete;
5. the resume state is deleted, then `latest` / evaluation follow in the build flow.

A crash before 3 leaves the staging folder with its resume state: the rerun reuses every finished shard.
Between 3 and 4 the rerun finishes the rename; after 4 it finishes the steps after the commit. A folder
without `manifest.json` is never read as a dataset.

One build per version at a time: `version_lock` holds an OS file lock on `<output>/<name>/.lock-<version>`.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import socket
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import DatasetError, FeatureError, file_named
from .faults import crash_point
from .features import SYNTHLOOM_KEY, Array, Features, Value, leaf_dtype
from .provenance import sha256_file

MANIFEST = "manifest.json"
PENDING_MANIFEST = ".manifest.pending.json"
LATEST = "latest"
DATA_DIR = "data"
# Generated shards waiting for their labelers: build state (hidden), never part of the dataset.
RAW_DIR = ".raw"
TARGET_ROW_GROUP_BYTES = 128 * 1024 * 1024

COMMON_HEAD = ("id", "split")
COMMON_TAIL = ("generator", "generation_sha256")


def dataset_schema(generator_features: Features | pa.Schema) -> Features:
    """Every column of a row: id/split, the generator's (and labelers') features, then provenance.

    A plain Arrow schema (generators written before typed features) is inferred column by column."""
    if isinstance(generator_features, pa.Schema):
        generator_features = Features.from_arrow_schema(generator_features)
    taken = [name for name in COMMON_HEAD + COMMON_TAIL if name in generator_features]
    if taken:
        raise FeatureError(f"generator declares reserved column(s) {taken}; the writer adds them")
    return Features({**{name: Value("string") for name in COMMON_HEAD}, **generator_features,
                     **{name: Value("string") for name in COMMON_TAIL}})


# -- writing -----------------------------------------------------------------------------------
def rows_to_table(rows: list[dict[str, Any]], features: Features | pa.Schema) -> pa.Table:
    """Encode rows column by column; the schema carries the `huggingface` and `synthloom` feature
    metadata, so every shard written from it describes itself."""
    if isinstance(features, pa.Schema):
        features = Features.from_arrow_schema(features)
    return features.encode_table(rows)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with file_named(path), open(tmp, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def write_parquet(table: pa.Table, where) -> None:
    """The one way a shard is encoded (a path or a writable stream: the same bytes either way)."""
    row_bytes = max(1, table.nbytes // max(1, table.num_rows))
    row_group = max(1, min(table.num_rows, TARGET_ROW_GROUP_BYTES // row_bytes))
    # Dictionary-encode only strings: on float point lists it wastes space and halves read speed.
    strings = [f.name for f in table.schema if pa.types.is_string(f.type)]
    pq.write_table(table, where, compression="zstd", row_group_size=row_group, use_dictionary=strings)


def write_shard(table: pa.Table, path: Path) -> dict[str, Any]:
    """Write one Parquet shard atomically; return its record for the manifest."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with file_named(path):
            write_parquet(table, tmp)
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return {"file": f"{path.parent.name}/{path.name}", "rows": table.num_rows, "bytes": path.stat().st_size,
            "sha256": sha256_file(path)}


def write_text(path: Path, text: str) -> None:
    """A small text file (the dataset card); a failed write names the file."""
    with file_named(path):
        path.write_text(text)


def staging_dir(version_dir: Path) -> Path:
    return version_dir.parent / f".staging-{version_dir.name}"


def check_writable(folder: Path) -> None:
    """Fail early, naming the folder, when the output cannot be written (read-only, full, not a folder)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # A unique probe name: two builds checking the same folder at once must not delete each other's.
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".synthloom-write-test-") as handle:
            handle.write(b"\0" * 4096)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        raise DatasetError(f"{folder}: output is not writable ({error.strerror or error})") from None


def commit(staging: Path, final: Path, manifest: dict[str, Any], overwrite: bool = False) -> Path:
    """Turn a complete staging folder into the version folder; manifest.json appears last.

    The staging folder's resume state (hidden files) is kept until manifest.json is in place, so a
    crash at any instant before that still resumes from the finished shards."""
    for path in sorted(staging.rglob("*")):
        if path.is_file() and not _is_build_state(path.relative_to(staging)):
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    write_json_atomic(staging / PENDING_MANIFEST, manifest)
    crash_point("commit:pending-written")
    if final.exists():
        if not overwrite:
            raise DatasetError(f"{final}: already exists")
        os.rename(final, final.parent / f".trash-{final.name}-{os.getpid()}")
    os.rename(staging, final)
    _fsync_dir(final.parent)
    crash_point("commit:renamed")
    finish_commit(final)
    return final


def _is_build_state(relative: Path) -> bool:
    """Hidden top-level entries of a staging folder are resume state, not dataset content."""
    return relative.parts[0].startswith(".") and relative.parts[0] != PENDING_MANIFEST


def finish_commit(final: Path) -> bool:
    """Complete a commit interrupted between the folder rename and the manifest rename."""
    pending = final / PENDING_MANIFEST
    if not pending.exists():
        return False
    os.replace(pending, final / MANIFEST)
    _fsync_dir(final)
    return True


def remove_build_state(final: Path) -> None:
    """After the commit: drop the resume state that travelled with the folder, and any trash of an
    overwritten version (idempotent, so a rerun after a crash here finishes it)."""
    for leftover in final.glob(".*"):
        if leftover.name != PENDING_MANIFEST:
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    for trash in final.parent.glob(f".trash-{final.name}-*"):
        shutil.rmtree(trash, ignore_errors=True)


def has_finished_shards(staging: Path) -> bool:
    """Whether a staging folder holds shards worth resuming from: generated or labelled."""
    return any((staging / folder).is_dir() and any((staging / folder).glob("*.parquet"))
               for folder in (DATA_DIR, RAW_DIR))


@contextmanager
def version_lock(final: Path) -> Iterator[None]:
    """Hold an exclusive OS lock for building `final`; a second build fails at once naming the holder.

    flock is released by the kernel when the holder dies, so a killed build never leaves a stale lock.
    The lock file itself is never deleted (deleting it would let two builds lock different files)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    path = final.parent / f".lock-{final.name}"
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise DatasetError(f"{final}: being built by {holder}; wait for it to finish") from None
        handle.seek(0)
        handle.truncate()
        since = datetime.now(timezone.utc).isoformat(timespec="seconds")
        handle.write(f"process {os.getpid()} on host {socket.gethostname()} since {since}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            handle.flush()
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        handle.close()


def check_not_locked(final: Path) -> None:
    """Fail fast, before any flow run, when another build holds the version's lock."""
    if final.parent.is_dir():
        with version_lock(final):
            pass


def set_latest(dataset_root: Path, version: str) -> None:
    tmp = dataset_root / (LATEST + ".tmp")
    tmp.write_text(version + "\n")
    os.replace(tmp, dataset_root / LATEST)


def rows_per_split(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """split -> {split, rows, shards, bytes}, in the manifest's split order."""
    splits: dict[str, dict[str, Any]] = {}
    for shard in manifest["shards"]:
        entry = splits.setdefault(shard["split"], {"split": shard["split"], "rows": 0, "shards": 0, "bytes": 0})
        entry["rows"] += shard["rows"]
        entry["shards"] += 1
        entry["bytes"] += shard["bytes"]
    return splits


# -- reading -----------------------------------------------------------------------------------
def read_manifest(version_dir: Path) -> dict[str, Any]:
    path = version_dir / MANIFEST
    if not path.exists():
        if (version_dir / PENDING_MANIFEST).exists():
            raise DatasetError(f"{version_dir}: commit was interrupted; run the build again to finish it")
        if version_dir.is_dir():
            raise DatasetError(f"{version_dir}: not a complete synthloom dataset (no {MANIFEST})")
        raise DatasetError(f"{version_dir}: dataset not found")
    return parse_manifest(path.read_bytes(), path)


def parse_manifest(data: bytes, where: Path | str) -> dict[str, Any]:
    """A manifest's bytes (from a folder or an object store) checked: a JSON object with shard records."""
    manifest = parse_json_object(data, where, "manifest")
    path = where
    shards = manifest.get("shards")
    if not isinstance(shards, list) or not all(isinstance(s, dict) and _is_shard_record(s) for s in shards):
        raise DatasetError(f"{path}: corrupt manifest ('shards' must be a list of {{file, split, rows, sha256}})")
    return manifest


def _is_shard_record(shard: dict[str, Any]) -> bool:
    return (all(isinstance(shard.get(key), str) for key in ("file", "split", "sha256"))
            and isinstance(shard.get("rows"), int) and not isinstance(shard.get("rows"), bool))


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """A JSON file that must hold an object (a manifest, pending or committed): anything else is a
    DatasetError naming the file, never an AttributeError further on."""
    return parse_json_object(path.read_bytes(), path, what)


def parse_json_object(raw: bytes, path: Path | str, what: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        where = f" at line {error.lineno}" if isinstance(error, json.JSONDecodeError) else ""
        reason = error.msg if isinstance(error, json.JSONDecodeError) else "not UTF-8 text"
        raise DatasetError(f"{path}: corrupt {what} ({reason}{where})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: corrupt {what} (a JSON {_json_type(data)}, not an object)")
    return data


def _json_type(value: Any) -> str:
    names = {list: "array", str: "string", bool: "boolean", int: "number", float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def resolve_version_dir(path: str | os.PathLike) -> Path:
    """Accept a version folder, or a dataset folder whose `latest` names the version to use.

    A URL (`s3://…`) is resolved on its store and mirrored locally (storage.materialize); the
    returned folder is the mirror's."""
    from . import storage

    if storage.is_url(path):
        return storage.materialize(str(path))
    path = storage.local_path(path)
    if (path / MANIFEST).exists() or (path / PENDING_MANIFEST).exists():
        return path
    latest = path / LATEST
    if latest.exists():
        return path / latest.read_text().strip()
    if path.is_dir():
        versions = sorted(p for p in path.iterdir() if (p / MANIFEST).exists())
        if len(versions) == 1:
            return versions[0]
        if versions:
            names = ", ".join(p.name for p in versions)
            raise DatasetError(f"{path}: several versions ({names}) and no 'latest'; name one")
    return path  # read_manifest reports what is wrong with it


def find_version(path: str | os.PathLike) -> tuple[Path, dict[str, Any]] | None:
    """(version folder, manifest) when `path` is a synthloom dataset or version, else None: for inputs
    that may be a dataset or something else (a folder of images or meshes)."""
    try:
        version_dir = resolve_version_dir(path)
        return version_dir, read_manifest(version_dir)
    except DatasetError:
        return None


def shard_files(version_dir: Path, manifest: dict[str, Any], split: str | None) -> list[Path]:
    shards = manifest["shards"]
    if split is not None:
        splits = sorted({s["split"] for s in shards})
        if split not in splits:
            raise DatasetError(f"{version_dir}: no split '{split}' (splits: {', '.join(splits)})")
        shards = [s for s in shards if s["split"] == split]
    return [version_dir / s["file"] for s in shards]


def read_table(version_dir: Path, manifest: dict[str, Any], split: str | None = None,
               columns: list[str] | None = None) -> pa.Table:
    tables = [read_shard(file, columns) for file in shard_files(version_dir, manifest, split)]
    return pa.concat_tables(tables) if tables else pa.table({})


# Readers (inspect, load, label, evaluate) trust the manifest's hashes and never rehash a shard, which
# would read every byte twice; `verify` does. A shard that is gone or unreadable is still one line.
def read_shard(file: Path, columns: list[str] | None = None) -> pa.Table:
    with _readable_shard(file):
        return pq.read_table(file, columns=columns)


def read_shard_schema(file: Path) -> pa.Schema:
    with _readable_shard(file):
        return pq.read_schema(file)


@contextmanager
def _readable_shard(file: Path) -> Iterator[None]:
    if not file.is_file():
        raise DatasetError(f"{file}: shard listed in the manifest is missing (run `synthloom verify`)")
    try:
        yield
    except (pa.ArrowException, OSError) as error:
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DatasetError(f"{file}: cannot read the shard ({detail}; run `synthloom verify`)") from None


def read_features(table_or_schema: pa.Table | pa.Schema, manifest: dict[str, Any] | None = None) -> Features:
    """The typed features of a shard (or table read from shards); older shards are inferred."""
    schema = table_or_schema.schema if isinstance(table_or_schema, pa.Table) else table_or_schema
    return Features.from_arrow_schema(schema, class_names=(manifest or {}).get("classes"))


def fixed_list_to_numpy(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(values (total, k), offsets (rows+1,)) of a point column: list<list<T>> (`Points`) or
    list<fixed_size_list<T, k>> (shards written before typed features)."""
    arrow = column.type.storage_type if isinstance(column.type, pa.ExtensionType) else column.type
    rows = Array((None, None), leaf_dtype(arrow)).decode(column)
    widths = rows.shapes[rows.valid & (rows.shapes[:, 0] > 0), 1]
    fixed = arrow.value_type.list_size if pa.types.is_fixed_size_list(arrow.value_type) else 3
    width = int(widths[0]) if len(widths) else fixed
    if (widths != width).any():
        raise FeatureError(f"point column has rows of different widths ({sorted(set(widths.tolist()))})")
    return rows.values.reshape(-1, width), rows.starts // width


# -- verifying ---------------------------------------------------------------------------------
def verify(path: str | os.PathLike) -> dict[str, Any]:
    """Recheck every shard's hash, row count and schema against the manifest.

    Returns a report; raises DatasetError naming the first bad shard.
    """
    from . import storage

    # A URL is checked on a fresh copy of the store's bytes, never on an older mirror.
    version_dir = storage.materialize(str(path), fresh=True) if storage.is_url(path) else resolve_version_dir(path)
    manifest = read_manifest(version_dir)
    expected_schema = manifest.get("schema")
    listed = set()
    total_rows = 0
    for shard in manifest["shards"]:
        file = version_dir / shard["file"]
        listed.add(file.name)
        if not file.exists():
            raise DatasetError(f"{file}: shard is missing")
        digest = sha256_file(file)
        if digest != shard["sha256"]:
            raise DatasetError(f"{file}: sha256 mismatch (manifest {shard['sha256'][:12]}…, file {digest[:12]}…)")
        try:
            meta = pq.read_metadata(file)
        except Exception as error:
            raise DatasetError(f"{file}: not a readable Parquet file ({error})") from None
        if meta.num_rows != shard["rows"]:
            raise DatasetError(f"{file}: {meta.num_rows} rows, manifest says {shard['rows']}")
        if expected_schema is not None and schema_text(meta.schema.to_arrow_schema()) != expected_schema:
            raise DatasetError(f"{file}: schema differs from the manifest's")
        total_rows += meta.num_rows
    data_dir = version_dir / DATA_DIR
    extra = sorted(p.name for p in data_dir.glob("*.parquet") if p.name not in listed) if data_dir.exists() else []
    if extra:
        raise DatasetError(f"{data_dir / extra[0]}: shard not listed in the manifest")
    where = str(path) if storage.is_url(path) else str(version_dir)
    return {"path": where, "shards": len(manifest["shards"]), "rows": total_rows, "ok": True}


def schema_text(schema: pa.Schema) -> str:
    """The schema as the manifest records it and `verify` compares it: the Arrow types (HF extension
    types as their storage and list children named alike, so a process that imported `datasets`
    agrees with one that did not), then the synthloom feature records, so a shard that declares
    other features (class names, shapes) is caught too. Shards without feature records give the
    text they gave before typed features."""
    fields = [pa.field(f.name, _canonical_type(f.type), f.nullable) for f in schema]
    text = pa.schema(fields).to_string(show_field_metadata=False)
    features = (schema.metadata or {}).get(SYNTHLOOM_KEY)
    if features:
        text += "\n-- synthloom features --\n" + json.dumps(json.loads(features), sort_keys=True)
    return text


def _canonical_type(arrow: pa.DataType) -> pa.DataType:
    if isinstance(arrow, pa.ExtensionType):
        return _canonical_type(arrow.storage_type)
    if pa.types.is_list(arrow) or pa.types.is_large_list(arrow) or pa.types.is_fixed_size_list(arrow):
        child = pa.field("element", _canonical_type(arrow.value_type), arrow.value_field.nullable)
        if pa.types.is_fixed_size_list(arrow):
            return pa.list_(child, arrow.list_size)
        return pa.large_list(child) if pa.types.is_large_list(arrow) else pa.list_(child)
    if pa.types.is_struct(arrow):
        return pa.struct([pa.field(f.name, _canonical_type(f.type), f.nullable) for f in arrow])
    return arrow


def update_manifest(version_dir: Path, changes: dict[str, Any]) -> dict[str, Any]:
    """Merge `changes` into a committed manifest, atomically (evaluation results, status)."""
    manifest = read_manifest(version_dir)
    manifest.update(changes)
    write_json_atomic(version_dir / MANIFEST, manifest)
    return manifest
