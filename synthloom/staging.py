"""Where a build's shard tasks write: a local staging folder, or, when the build's `output:` is an object
store, the version's prefix on the store itself.

A shard task gets `staging` as a string: a folder path, or the version URL (`s3://bucket/out/name/1.0.0`).
With a URL a worker needs nothing but the URL and the store's credentials, no folder shared with the flow:
it encodes the shard in memory (the same bytes as a local build: `dataset.write_parquet`), PUTs it under
`data/` (or `.raw/` before labelling) with its sha256 as object metadata, then PUTs its record under
`.records/`. A record therefore names a shard that is complete on the store; a rerun reuses a shard whose
record is there, of the same generation (flows/shards.staged_record), and whose object still carries the
recorded sha256 and size. Nothing reads the prefix as a
dataset until `manifest.json` is written (remote_output.RemoteOutput.publish_staged), so until then the
prefix is the staging area; the hidden resume state (`.records/`, `.raw/`, `.generation_sha256`) is
deleted after that commit.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from . import dataset as ds
from . import storage
from .faults import crash_point
from .provenance import sha256_file

RECORDS_DIR = ".records"  # one JSON record per finished shard


def on_store(staging: str | Path) -> bool:
    return storage.is_url(str(staging))


def _remote(staging: str, relative: str) -> tuple[Any, str]:
    fs, root = storage.filesystem(staging)
    return fs, storage.join(root, relative)


def write_shard(table: pa.Table, staging: str | Path, relative: str) -> dict[str, Any]:
    """Write one shard at `relative` (`data/<file>`, `.raw/<file>`); return its manifest record."""
    if not on_store(staging):
        return ds.write_shard(table, Path(staging) / relative)
    buffer = io.BytesIO()
    ds.write_parquet(table, buffer)
    data = buffer.getvalue()
    sha256 = hashlib.sha256(data).hexdigest()
    fs, path = _remote(str(staging), relative)
    with storage.storage_errors(f"{staging}/{relative}", fs):
        fs.pipe_file(path, data, Metadata={"sha256": sha256})
    return {"file": relative, "rows": table.num_rows, "bytes": len(data), "sha256": sha256}


def read_table(staging: str | Path, relative: str) -> pa.Table:
    if not on_store(staging):
        return pq.read_table(Path(staging) / relative)
    fs, path = _remote(str(staging), relative)
    with storage.storage_errors(f"{staging}/{relative}", fs):
        return pq.read_table(io.BytesIO(fs.cat_file(path)))


def read_schema(staging: str | Path, relative: str) -> pa.Schema:
    if not on_store(staging):
        return pq.read_schema(Path(staging) / relative)
    fs, path = _remote(str(staging), relative)
    with storage.storage_errors(f"{staging}/{relative}", fs), fs.open(path, "rb") as handle:
        return pq.read_schema(handle)


def shard_matches(staging: str | Path, record: dict[str, Any]) -> bool:
    """Whether the shard a record names is there with the recorded sha256 (on a store: the object's
    sha256 metadata, written with its bytes in one PUT, and its size)."""
    if not on_store(staging):
        file = Path(staging) / record["file"]
        return file.exists() and sha256_file(file) == record["sha256"]
    fs, path = _remote(str(staging), record["file"])
    bucket, key, _ = fs.split_path(path)
    with storage.storage_errors(f"{staging}/{record['file']}", fs):
        try:
            head = fs.call_s3("head_object", Bucket=bucket, Key=key)
        except FileNotFoundError:
            return False
    return head.get("Metadata", {}).get("sha256") == record["sha256"] and head["ContentLength"] == record["bytes"]


def write_record(staging: str | Path, name: str, record: dict[str, Any]) -> None:
    """The record of a finished shard, written after the shard itself."""
    if not on_store(staging):
        path = Path(staging) / RECORDS_DIR / (name + ".json")
        path.parent.mkdir(exist_ok=True)
        ds.write_json_atomic(path, record)
        return
    fs, path = _remote(str(staging), f"{RECORDS_DIR}/{name}.json")
    with storage.storage_errors(str(staging), fs):
        fs.pipe_file(path, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
    crash_point("stage:shard-recorded")


def read_record(staging: str | Path, name: str) -> dict[str, Any] | None:
    if not on_store(staging):
        path = Path(staging) / RECORDS_DIR / (name + ".json")
        return json.loads(path.read_text()) if path.exists() else None
    fs, path = _remote(str(staging), f"{RECORDS_DIR}/{name}.json")
    with storage.storage_errors(str(staging), fs):
        try:
            return json.loads(fs.cat_file(path))
        except FileNotFoundError:
            return None
