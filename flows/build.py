"""The build flow: recipe -> prepared generator -> one cached task per shard -> committed dataset.

Thin orchestration only: model and format code live in generators/ and synthloom/.
Each shard task is cached by (recipe fingerprint, prepared-asset hash, shard), with
results stored in the staging folder, so rerunning a killed build skips every shard
that was finished and regenerates the rest: same seeds, same bytes.
"""

from __future__ import annotations

import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, \
    update_progress_artifact
from prefect.context import TaskRunContext
from prefect.futures import as_completed
from prefect.task_runners import ProcessPoolTaskRunner

from synthloom import dataset as ds
from synthloom.card import dataset_card
from synthloom.croissant import croissant_metadata
from synthloom.errors import DatasetError
from synthloom.generators.base import BuildContext, ShardSpec
from synthloom.planning import plan_shards
from synthloom.preview import write_preview
from synthloom.provenance import git_sha, package_versions, sha256_file
from synthloom.recipe import Recipe, load_recipe, parse_recipe
from synthloom.registry import make_generator

from .evaluate import evaluate_dataset

RECIPE_MARK = ".recipe_sha256"


def _shard_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    shard: ShardSpec = parameters["shard"]
    return "shard-{}-{}-{}-{:05d}".format(
        parameters["recipe_sha256"][:16], parameters["prepared"]["assets_sha256"][:16], shard.split, shard.index
    )


@task(name="prepare-generator")
def prepare_generator(recipe_json: dict[str, Any], cache_dir: str, recipe_dir: str) -> dict[str, Any]:
    recipe = parse_recipe(recipe_json)
    generator = make_generator(recipe.generator.kind, recipe.generator.params)
    ctx = BuildContext(cache_dir=Path(cache_dir), on_error=recipe.on_error, reference=recipe.reference,
                       recipe_dir=Path(recipe_dir))
    return generator.prepare(ctx)


@task(name="generate-shard", cache_key_fn=_shard_cache_key, persist_result=True)
def generate_shard(recipe_json: dict[str, Any], recipe_sha256: str, prepared: dict[str, Any], shard: ShardSpec,
                   staging: str) -> dict[str, Any]:
    """Generate one shard and write it into the staging folder; return its manifest record."""
    recipe = parse_recipe(recipe_json)
    generator = make_generator(recipe.generator.kind, recipe.generator.params)
    generator.prepared = prepared
    features = ds.dataset_schema(generator.features())
    rows = []
    for offset, row in enumerate(generator.generate(shard)):
        row["id"] = f"{shard.split}-{shard.start + offset:08d}"
        row["split"] = shard.split
        row["generator"] = recipe.generator.kind
        row["recipe_sha256"] = recipe_sha256
        rows.append(row)
    table = ds.rows_to_table(rows, features)
    record = ds.write_shard(table, Path(staging) / ds.DATA_DIR / shard.filename)
    return {**record, "split": shard.split, "index": shard.index, "written_at": time.time()}


def _staging_for(final: Path, fingerprint: str) -> Path:
    staging = ds.staging_dir(final)
    mark = staging / RECIPE_MARK
    if staging.exists() and (not mark.exists() or mark.read_text().strip() != fingerprint):
        shutil.rmtree(staging)  # staged shards of another recipe: useless here
    (staging / ds.DATA_DIR).mkdir(parents=True, exist_ok=True)
    mark.write_text(fingerprint + "\n")
    return staging


def _existing_version(final: Path, fingerprint: str, overwrite: bool) -> dict[str, Any] | None:
    """The manifest of an identical finished build, None to build, or an error on conflict."""
    if not final.exists():
        return None
    ds.finish_commit(final)  # a commit killed after its rename is completed, not redone
    try:
        manifest = ds.read_manifest(final)
    except DatasetError:
        if overwrite:
            return None
        raise DatasetError(f"{final}: exists but is not a complete dataset; remove it or pass --overwrite") from None
    if manifest.get("recipe_sha256") == fingerprint and not overwrite:
        return manifest
    if overwrite:
        return None
    raise DatasetError(
        f"{final}: already built from a different recipe (sha256 {manifest.get('recipe_sha256', '?')[:12]}…); "
        "bump `version` in the recipe or pass --overwrite"
    )


def resolve_build(recipe_path: str, overwrite: bool = False, version: str | None = None,
                  seed: int | None = None) -> tuple[Recipe, Path, dict[str, Any] | None]:
    """Everything a build can refuse before it starts: the recipe, a conflicting version, an
    unwritable output. Returns (recipe, version folder, manifest of an identical finished build)."""
    recipe = load_recipe(recipe_path)
    overrides = {k: v for k, v in {"version": version, "seed": seed}.items() if v is not None}
    if overrides:
        recipe = parse_recipe({**recipe.model_dump(mode="json"), **overrides}, recipe_path)
    final = recipe.version_dir().resolve()
    existing = _existing_version(final, recipe.fingerprint(), overwrite)
    if existing is None:
        ds.check_writable(final.parent)
    return recipe, final, existing


def _publish_artifacts(manifest: dict[str, Any], final: Path) -> None:
    splits: dict[str, dict[str, int]] = {}
    for shard in manifest["shards"]:
        entry = splits.setdefault(shard["split"], {"split": shard["split"], "rows": 0, "shards": 0, "bytes": 0})
        entry["rows"] += shard["rows"]
        entry["shards"] += 1
        entry["bytes"] += shard["bytes"]
    key = "dataset-" + "".join(c if c.isalnum() else "-" for c in manifest["recipe"]["name"].lower())
    create_table_artifact(table=list(splits.values()), key=key + "-splits",
                          description=f"Splits of {final}")
    create_markdown_artifact(
        markdown=f"**{manifest['recipe']['name']} {manifest['version']}** committed at `{final}`\n\n"
                 f"![preview]({(final / 'preview.png').as_uri()})\n\n"
                 f"recipe sha256 `{manifest['recipe_sha256']}`, seed `{manifest['seed']}`",
        key=key + "-summary",
        description="Build summary",
    )


@flow(name="build-dataset")
def build_dataset(recipe_path: str, overwrite: bool = False, version: str | None = None, seed: int | None = None,
                  progress: bool = False, workers: int = 1) -> dict[str, Any]:
    """Build the dataset a recipe describes and commit it; returns a summary dict."""
    logger = get_run_logger()
    recipe, final, existing = resolve_build(recipe_path, overwrite, version, seed)
    fingerprint = recipe.fingerprint()
    if existing is not None:
        logger.info("%s already built from this recipe; nothing to do", final)
        return {"path": str(final), "status": "exists", "rows": sum(s["rows"] for s in existing["shards"])}
    staging = _staging_for(final, fingerprint)
    recipe_json = recipe.model_dump(mode="json")

    prepared = prepare_generator(recipe_json, str(final.parent / ".cache"), str(Path(recipe_path).parent))
    shards = plan_shards(recipe)
    storage = (staging / ".results").resolve()
    shard_task = generate_shard.with_options(result_storage=storage)
    bar = _progress_bar(progress, len(shards), f"{recipe.name} {recipe.version}")
    progress_id = create_progress_artifact(0.0, description=f"Shards of {recipe.name} {recipe.version}")
    records: list[dict[str, Any]] = []
    cached: list[dict[str, Any]] = []
    started, last_update = time.time(), 0.0
    args = (recipe_json, fingerprint, prepared)
    try:
        for done, record in enumerate(_run_shards(shard_task, args, shards, str(staging), workers), start=1):
            # A record written before this run started came from the task cache (an earlier run).
            (cached if record["written_at"] < started else records).append(record)
            bar.advance()
            if time.monotonic() - last_update > 1.0 or done == len(shards):  # one API call a second at most
                update_progress_artifact(progress_id, 100.0 * done / len(shards))
                last_update = time.monotonic()
    finally:
        bar.close()
    if cached:
        logger.info("reused %d finished shards from an earlier run", len(cached))
    records += _recheck_staged(cached, shards, recipe_json, fingerprint, prepared, staging, storage)
    records.sort(key=lambda r: (list(recipe.count).index(r["split"]), r["index"]))

    manifest = _manifest(recipe, fingerprint, prepared, records, staging)
    write_preview(pq.read_table(staging / records[0]["file"]), staging / "preview.png")
    ds.write_json_atomic(staging / "croissant.json", croissant_metadata(manifest, _schema_of(staging, records)))
    (staging / "README.md").write_text(dataset_card(manifest))
    ds.commit(staging, final, manifest, overwrite=overwrite)
    report = ds.verify(final)
    _publish_artifacts(manifest, final)
    logger.info("committed %s: %d rows in %d shards", final, report["rows"], report["shards"])
    summary = {"path": str(final), "status": "built", "rows": report["rows"], "shards": report["shards"],
               "skipped": manifest["skipped"]["count"]}
    if recipe.evaluators or recipe.gates:
        # Only a version that passes its gates becomes `latest`; a failing one raises GateError.
        summary["metrics"] = evaluate_dataset(str(final))["summary"]
    else:
        ds.set_latest(final.parent, final.name)
    return summary


def _run_shards(shard_task, args: tuple, shards: list[ShardSpec], staging: str, workers: int):
    """Yield shard records as shards finish.

    One worker: tasks run in this thread. On a worker thread, Python-heavy generators (Poisson
    elimination) fought Prefect's threads for the GIL: +15 to +27 % wall time over a plain loop,
    against +3.6 % here (benchmarks/bench_orchestration.py, see benchmarks/RESULTS.md).
    More workers: a process pool (one generator per process, as Kubric does), reporting to the
    same Prefect server through the propagated run context.
    """
    if workers <= 1:
        for shard in shards:
            yield shard_task(*args, shard, staging)
        return
    with ProcessPoolTaskRunner(max_workers=workers) as runner:
        futures = [runner.submit(shard_task, dict(zip(SHARD_PARAMS, (*args, shard, staging)))) for shard in shards]
        for future in as_completed(futures):
            yield future.result()


SHARD_PARAMS = ("recipe_json", "recipe_sha256", "prepared", "shard", "staging")


def _recheck_staged(records, shards, recipe_json, fingerprint, prepared, staging: Path, storage: Path):
    """A shard reused from the cache whose file went missing or changed is generated again, not trusted."""
    by_key = {(s.split, s.index): s for s in shards}
    checked = []
    for record in records:
        path = staging / record["file"]
        if path.exists() and sha256_file(path) == record["sha256"]:
            checked.append(record)
            continue
        shard = by_key[(record["split"], record["index"])]
        fresh = generate_shard.with_options(result_storage=storage, refresh_cache=True)
        checked.append(fresh(recipe_json, fingerprint, prepared, shard, str(staging)))
    return checked


def _schema_of(staging: Path, records: list[dict[str, Any]]):
    return pq.read_schema(staging / records[0]["file"])


def _manifest(recipe: Recipe, fingerprint: str, prepared: dict[str, Any], records: list[dict[str, Any]],
              staging: Path) -> dict[str, Any]:
    skipped = prepared.get("skipped", [])
    return {
        "format": "synthloom-dataset/1",
        "recipe": recipe.model_dump(mode="json"),
        "recipe_sha256": fingerprint,
        "version": recipe.version,
        "seed": recipe.seed,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "packages": package_versions(),
        "git_sha": git_sha(),
        "generator": {
            "kind": recipe.generator.kind,
            "params": recipe.generator.params,
            "assets_sha256": prepared.get("assets_sha256"),
            "assets": prepared.get("assets", []),
        },
        "classes": prepared.get("classes", []),
        "derived_from": sorted({a["path"] for a in prepared.get("assets", [])}),
        "labelers": [l.kind for l in recipe.labelers],
        "skipped": {"count": len(skipped), "items": skipped},
        "schema": ds.schema_text(_schema_of(staging, records)),
        "features": ds.read_features(_schema_of(staging, records)).to_json(),
        "shards": [{k: r[k] for k in ("file", "split", "rows", "bytes", "sha256")} for r in records],
        "metrics": {},
        "status": "accepted",
    }


class _NoBar:
    def advance(self) -> None: ...

    def close(self) -> None: ...


class _RichBar:
    def __init__(self, total: int, label: str):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
            TimeRemainingColumn

        self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("shards"), TimeElapsedColumn(), TimeRemainingColumn(), transient=False)
        self._progress.start()
        self._task = self._progress.add_task(label, total=total)

    def advance(self) -> None:
        self._progress.advance(self._task)

    def close(self) -> None:
        self._progress.stop()


def _progress_bar(enabled: bool, total: int, label: str):
    return _RichBar(total, label) if enabled else _NoBar()
