"""`synthloom inspect`: what is in a dataset, as data (the CLI renders it)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from . import dataset as ds


def summarize(path: str | Path) -> dict[str, Any]:
    version_dir = ds.resolve_version_dir(path)
    manifest = ds.read_manifest(version_dir)
    splits: dict[str, dict[str, Any]] = {}
    labels: dict[str, Counter] = {}
    for shard in manifest["shards"]:
        entry = splits.setdefault(shard["split"], {"rows": 0, "shards": 0, "bytes": 0})
        entry["rows"] += shard["rows"]
        entry["shards"] += 1
        entry["bytes"] += shard["bytes"]
        file = version_dir / shard["file"]
        columns = pq.read_schema(file).names
        label_column = "label_name" if "label_name" in columns else ("label" if "label" in columns else None)
        if label_column:
            values = pq.read_table(file, columns=[label_column]).column(label_column).to_pylist()
            labels.setdefault(shard["split"], Counter()).update(str(v) for v in values)
    first = version_dir / manifest["shards"][0]["file"]
    schema = pq.read_schema(first)
    return {
        "path": str(version_dir),
        "name": manifest["recipe"]["name"],
        "version": manifest["version"],
        "status": manifest.get("status", "accepted"),
        "splits": splits,
        "columns": [(f.name, str(f.type)) for f in schema],
        "labels": {split: dict(sorted(c.items())) for split, c in labels.items()},
        "provenance": {
            "generator": manifest["generator"]["kind"],
            "recipe_sha256": manifest["recipe_sha256"],
            "seed": manifest["seed"],
            "created_at": manifest["created_at"],
            "git_sha": manifest.get("git_sha"),
            "packages": manifest["packages"],
            "input_fingerprint": manifest["generator"].get("input_fingerprint"),
            "skipped_inputs": manifest.get("skipped", {}).get("count", 0),
        },
        # The headline numbers; per-evaluator details stay in manifest.json and eval/report.html.
        "metrics": (manifest.get("metrics") or {}).get("summary", {}),
        "gates": [r["message"] for r in (manifest.get("gates") or {}).get("results", [])],
    }
