"""README.md dataset card in the Hugging Face layout: YAML header, then what a reader needs."""

from __future__ import annotations

import json
from typing import Any

import yaml

from .features import Features


def size_category(rows: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if rows < limit:
            return label
    return "n>1M"


def features_table(features: Features) -> list[str]:
    """Markdown rows: each column, its synthloom feature and what Hugging Face `datasets` reads it as."""
    lines = ["| column | feature | `datasets` type |", "| --- | --- | --- |"]
    for name, feature in features.items():
        hf = feature.hf_json()
        hf_type = hf["_type"] + (f"({hf['dtype']})" if "dtype" in hf and "shape" not in hf else "")
        if "shape" in hf:
            hf_type += f"(shape={tuple(hf['shape'])}, dtype={hf['dtype']})"
        lines.append(f"| `{name}` | {feature.describe().replace('|', '/')} | {hf_type} |")
    return lines


def markdown_table(rows: list[dict[str, Any]]) -> list[str]:
    """Rows of scalars as a markdown table (columns: every key, in first-seen order)."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    cell = lambda v: "" if v is None else str(v).replace("|", "/")  # noqa: E731
    return (["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
            + ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows])


def dataset_card(manifest: dict[str, Any], features: Features | None = None) -> str:
    """The card's text; `features` default to the manifest's record of them."""
    recipe = manifest["recipe"]
    if features is None and manifest.get("features"):
        features = Features.from_json(manifest["features"])
    splits: dict[str, int] = {}
    for shard in manifest["shards"]:
        splits[shard["split"]] = splits.get(shard["split"], 0) + shard["rows"]
    total = sum(splits.values())
    header = {
        "license": recipe.get("license", "cc-by-4.0"),
        "pretty_name": recipe["name"],
        "size_categories": [size_category(total)],
        "tags": ["synthetic", "synthloom", manifest["generator"]["kind"]],
        "configs": [{
            "config_name": "default",
            "data_files": [{"split": s, "path": f"data/{s}-*.parquet"} for s in splits],
        }],
    }
    lines = ["---", yaml.safe_dump(header, sort_keys=False).strip(), "---", ""]
    lines += [f"# {recipe['name']} {manifest['version']}", ""]
    lines += [recipe.get("description") or "A synthetic dataset built by synthloom.", ""]
    lines += ["![preview](preview.png)", ""]
    lines += ["## Splits", "", "| split | rows |", "| --- | --- |"]
    lines += [f"| {s} | {n} |" for s, n in splits.items()]
    if manifest.get("classes"):
        lines += ["", "## Classes", "", ", ".join(f"`{c}`" for c in manifest["classes"])]
    if features:
        lines += ["", "## Features", ""] + features_table(features)
    lines += ["", "## Load it", "", "```python", "import synthloom, torch",
              f"train = synthloom.load('{recipe['name']}/{manifest['version']}', split='train')  # torch Dataset",
              "loader = torch.utils.data.DataLoader(train, batch_size=32, shuffle=True, collate_fn=synthloom.collate_fn)",
              "", "import datasets  # no synthloom needed: images, class names and arrays are typed",
              f"ds = datasets.load_dataset('parquet', data_dir='{recipe['name']}/{manifest['version']}/data')",
              "```"]
    metrics = manifest.get("metrics") or {}
    if metrics:
        lines += ["", "## Metrics", "",
                  f"Against `{metrics.get('reference')}` (split `{metrics.get('split')}`); "
                  "details and plots in `eval/report.html`.", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {v} |" for k, v in sorted(_flatten(metrics.get("summary", {})).items())]
        lines += [""] + [f"- {note}" for note in metrics.get("notes", [])]
        for name, rows in (metrics.get("tables") or {}).items():
            lines += ["", f"### {name}", ""] + markdown_table(rows)
    gates = manifest.get("gates")
    if gates:
        lines += ["", f"## Quality gates: {'passed' if gates['passed'] else 'REJECTED'}", ""]
        lines += [f"- {'pass' if r['passed'] else 'FAIL'}: {r['message']}" for r in gates["results"]]
    lines += ["", "## Provenance", "",
              f"- generator: `{manifest['generator']['kind']}`",
              *[f"- labeler: `{r['kind']}` wrote {', '.join(f'`{c}`' for c in r.get('columns', []))}"
                for r in manifest.get("labelers") or [] if isinstance(r, dict)],
              f"- recipe sha256: `{manifest['recipe_sha256']}`",
              f"- root seed: `{manifest['seed']}`",
              f"- synthloom git sha: `{manifest.get('git_sha')}`",
              f"- packages: `{json.dumps(manifest['packages'], sort_keys=True)}`",
              f"- skipped inputs: {manifest.get('skipped', {}).get('count', 0)}",
              "", "## Recipe", "", "```yaml", yaml.safe_dump(recipe, sort_keys=False).strip(), "```", ""]
    return "\n".join(lines)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        elif isinstance(value, (int, float, str, bool)) or value is None:
            flat[name] = round(value, 6) if isinstance(value, float) else value
    return flat
