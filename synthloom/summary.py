"""`synthloom inspect`: what is in a dataset, as data (the CLI renders it)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from . import dataset as ds
from .features import ClassLabel, feature_of


def summarize(path: str | Path) -> dict[str, Any]:
    version_dir = ds.resolve_version_dir(path)
    manifest = ds.read_manifest(version_dir)
    splits: dict[str, dict[str, Any]] = {}
    labels: dict[str, Counter] = {}
    features = ds.read_features(ds.read_shard_schema(version_dir / manifest["shards"][0]["file"]), manifest)
    label_column = feature_of(features, ClassLabel)  # the histogram follows the type, not a column name
    for shard in manifest["shards"]:
        entry = splits.setdefault(shard["split"], {"rows": 0, "shards": 0, "bytes": 0})
        entry["rows"] += shard["rows"]
        entry["shards"] += 1
        entry["bytes"] += shard["bytes"]
        if label_column:
            names = features[label_column].names
            values = ds.read_shard(version_dir / shard["file"], columns=[label_column]).column(label_column)
            labels.setdefault(shard["split"], Counter()).update(
                names[v] if v is not None and 0 <= v < len(names) else "(none)" for v in values.to_pylist())
    return {
        "path": str(version_dir),
        "name": manifest["recipe"]["name"],
        "version": manifest["version"],
        "status": manifest.get("status", "accepted"),
        "splits": splits,
        "columns": [(name, feature.describe()) for name, feature in features.items()],
        "features": features.to_json(),
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
