"""The label flow: run labelers on a committed dataset version and commit the result as a NEW version.

`synthloom label DATASET --labeler owlv2 --param ...` is the way to auto-label data that already
exists (a build without labelers, or one labelled with older weights). It reuses the build's parts:

- the preflight (`plan_label`) validates labeler params and what they read against the source's
  columns, the new version's name and the output folder, before any flow run: one line on bad input;
- the source shards are hard-linked (copied across file systems) into the new version's staging
  `.raw/` and labelled by the build's own cached `label-shard` tasks, so a killed run resumes;
- the commit protocol, verify, Croissant metadata, card and preview are the build's, and so is its
  promise that every instant is resumable: a rerun of the same command that finds the new version
  already committed, or killed between its folder rename and its manifest, finishes the remaining
  steps (manifest, clean-up, `latest`) instead of refusing the folder as taken. A run that fails
  before labelling any shard removes its staging folder.

The new version's manifest is the source's with: the new `version`, the labelers that ran appended to
`labelers` (each marked with the source version it ran on), `labelled_from` (source path, version,
manifest sha256), and a recipe with those labelers appended, which rebuilds the same rows.
The source version is never changed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from prefect import flow, get_run_logger

from synthloom import dataset as ds
from synthloom.card import dataset_card
from synthloom.croissant import croissant_metadata
from synthloom.devices import resolve_device
from synthloom.errors import DatasetError, LabelerError
from synthloom.faults import crash_point
from synthloom.generators.base import BuildContext, ShardSpec
from synthloom.labelers.base import chain_fingerprint, check_chain
from synthloom.preview import write_preview
from synthloom.provenance import git_sha, package_versions, sha256_file
from synthloom.recipe import FOLDER_NAME, parse_recipe
from synthloom.registry import make_labeler

from .build import staging_for
from .labelling import Labelling, label_shards, prepare_labelers
from .runners import Runner

SHARD_NAME = re.compile(r"^(?P<split>.+)-(?P<index>\d{5})-of-(?P<total>\d{5})\.parquet$")


@dataclass
class LabelPlan:
    source: Path
    manifest: dict[str, Any]
    final: Path
    specs: list[tuple[str, dict[str, Any]]]
    device: str
    existing: dict[str, Any] | None = None  # manifest of this same labelling, committed (or half) at `final`

    def context(self) -> BuildContext:
        return BuildContext(cache_dir=self.source.parent / ".cache", recipe_dir=Path.cwd(), device=self.device)

    @property
    def key(self) -> str:
        """What the staged shards depend on: the source manifest and the labelers asked for."""
        listing = json.dumps([self.manifest.get("shards"), self.specs], sort_keys=True, default=str)
        return chain_fingerprint([("label", {"source": listing}, "", "1")])


def plan_label(dataset: str, specs: list[tuple[str, dict[str, Any]]], version: str | None = None,
               device: str | None = None, overwrite: bool = False) -> LabelPlan:
    """The preflight: everything `label` can refuse before it starts, in well under a second."""
    if not specs:
        raise LabelerError("name at least one labeler (--labeler KIND)")
    source = ds.resolve_version_dir(dataset)
    manifest = ds.read_manifest(source)
    labelers = [make_labeler(kind, params) for kind, params in specs]  # params validated here
    # From here on the validated params, defaults written out: they are what the fingerprint and the
    # manifest record, so `--labeler-params '{"threshold": <the default>}'` is the same labelling as none.
    specs = [(kind, labeler.params.model_dump(mode="json")) for (kind, _), labeler in zip(specs, labelers)]
    first = source / manifest["shards"][0]["file"]
    check_chain(labelers, ds.read_features(ds.read_shard_schema(first), manifest))
    for labeler in labelers:  # model labelers: the folder exists and holds the right architecture
        if hasattr(labeler, "check_model"):
            labeler.check_model(Path.cwd())
    version = version or "+".join([str(manifest["version"])] + [kind for kind, _ in specs])
    if not FOLDER_NAME.match(version):
        raise DatasetError(f"--version {version!r}: not a valid folder name (ASCII letters, digits, . _ + -)")
    final = source.parent / version
    if final.resolve() == source.resolve():
        raise DatasetError(f"{final}: is the source version; label into a new version")
    plan = LabelPlan(source, manifest, final, list(specs), resolve_device(device or "auto"))
    plan.existing = _existing_version(plan, overwrite)
    ds.check_writable(source.parent)
    ds.check_not_locked(final)
    return plan


def _existing_version(plan: LabelPlan, overwrite: bool) -> dict[str, Any] | None:
    """The manifest of `plan.final` when it holds this very labelling (committed, or killed between the
    folder rename and the manifest rename), None when there is nothing to finish, else an error: the
    name is taken by something else. Read-only: the flow finishes the commit under the version lock."""
    final = plan.final
    if not final.exists() or overwrite:
        return None
    for name in (ds.MANIFEST, ds.PENDING_MANIFEST):
        if (final / name).is_file():
            try:
                manifest = ds.read_json_object(final / name, "manifest")
            except DatasetError:
                break
            if _same_labelling(plan, manifest):
                return manifest
            break
    raise DatasetError(f"{final}: already exists; pass --version NAME or --overwrite")


def _same_labelling(plan: LabelPlan, manifest: dict[str, Any]) -> bool:
    """Whether `manifest` records the labelling `plan` asks for: the same labelers with the same params,
    run on the same shards of the same source version."""
    source = plan.manifest
    before = list(source.get("labelers") or [])
    ran = manifest.get("labelers")
    shards = manifest.get("shards")
    if not isinstance(ran, list) or not isinstance(shards, list) or ran[:len(before)] != before:
        return False
    asked = json.loads(json.dumps([[kind, params] for kind, params in plan.specs], default=str))
    added = [[r.get("kind"), r.get("params")] for r in ran[len(before):] if isinstance(r, dict)]
    return ((manifest.get("labelled_from") or {}).get("version") == str(source["version"])
            and added == asked
            and [s.get("generated_sha256") for s in shards if isinstance(s, dict)]
            == [s["sha256"] for s in source["shards"]])


def _link_source_shards(plan: LabelPlan, staging: Path) -> tuple[list[dict[str, Any]], list[ShardSpec]]:
    """Source shards in `<staging>/.raw/` (hard links: no copy of the data) as generated-shard records."""
    raw = staging / ds.RAW_DIR
    raw.mkdir(parents=True, exist_ok=True)
    records, shards, starts = [], [], {}
    for shard in plan.manifest["shards"]:
        name = Path(shard["file"]).name
        match = SHARD_NAME.match(name)
        if match is None or match["split"] != shard["split"]:
            raise DatasetError(f"{plan.source / shard['file']}: shard name is not <split>-NNNNN-of-NNNNN.parquet")
        target = raw / name
        if not (target.exists() and sha256_file(target) == shard["sha256"]):
            target.unlink(missing_ok=True)
            try:
                os.link(plan.source / shard["file"], target)
            except OSError:  # another file system, or links not allowed
                shutil.copyfile(plan.source / shard["file"], target)
        start = starts.get(shard["split"], 0)
        starts[shard["split"]] = start + shard["rows"]
        spec = ShardSpec(shard["split"], int(match["index"]), int(match["total"]), start, shard["rows"],
                         int(plan.manifest.get("seed") or 0))
        shards.append(spec)
        records.append({"file": f"{ds.RAW_DIR}/{name}", "sha256": shard["sha256"], "rows": shard["rows"],
                        "split": spec.split, "index": spec.index})
    return records, shards


def _manifest(plan: LabelPlan, labelling: Labelling, records: list[dict[str, Any]], staging: Path) -> dict[str, Any]:
    source = plan.manifest
    recipe = parse_recipe({**source["recipe"], "version": plan.final.name,
                           "labelers": list(source["recipe"].get("labelers", []))
                           + [{"kind": kind, "params": params} for kind, params in plan.specs]},
                          str(plan.source / ds.MANIFEST))
    schema = pq.read_schema(staging / records[0]["file"])
    ran = [{**record, "source_version": str(source["version"])} for record in labelling.manifest_records()]
    evaluated = bool(recipe.evaluators or recipe.gates)
    return {
        **source,
        "recipe": recipe.model_dump(mode="json"),
        "recipe_sha256": recipe.fingerprint(),
        "version": plan.final.name,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "packages": package_versions(),
        "git_sha": git_sha(),
        "device": plan.device,
        "labelers": list(source.get("labelers") or []) + ran,
        "labeling_sha256": labelling.fingerprint,
        "labelled_from": {"path": str(plan.source), "version": str(source["version"]),
                          "manifest_sha256": sha256_file(plan.source / ds.MANIFEST)},
        "derived_from": sorted(set(source.get("derived_from") or []) | {str(plan.source)}),
        "schema": ds.schema_text(schema),
        "features": ds.read_features(schema).to_json(),
        "shards": [{k: r[k] for k in ("file", "split", "rows", "bytes", "sha256", "generated_sha256") if k in r}
                   for r in records],
        "metrics": {},
        "gates": None,
        "status": "unevaluated" if evaluated else "accepted",
    }


@flow(name="label-dataset")
def label_dataset(dataset: str, labelers: list[tuple[str, dict[str, Any]]], version: str | None = None,
                  device: str | None = None, overwrite: bool = False, workers: int = 1) -> dict[str, Any]:
    """Label every shard of a committed version with `labelers` ([(kind, params)], in order) and commit
    the result as a new version next to it; returns a summary."""
    logger = get_run_logger()
    plan = plan_label(dataset, labelers, version, device, overwrite)
    remote = labelled_remote(dataset, plan.final.name)
    if remote is None:
        return _label_locally(plan, overwrite, workers, logger)
    # A source on a store: label its local mirror, then publish the new version beside the source there
    # (remote_output.py: shards, metadata, manifest.json last, under the version's lock object).
    with remote.lock():
        on_store = None if overwrite else remote.committed_manifest()
        if on_store is not None:
            if not _same_labelling(plan, on_store):
                raise DatasetError(f"{remote.url}: already exists; pass --version NAME or --overwrite")
            return {"path": remote.url, "source": dataset, "rows": sum(s["rows"] for s in on_store["shards"]),
                    "shards": len(on_store["shards"]), "labelers": [kind for kind, _ in plan.specs],
                    "status": "exists"}
        result = _label_locally(plan, overwrite, workers, logger)
        manifest = ds.read_manifest(plan.final)
        counts = remote.publish(plan.final, manifest, set_latest=manifest.get("status") == "accepted")
    return {**result, "path": remote.url, "source": dataset, **counts}


def labelled_remote(dataset: str, version: str):
    """Where a labelled version of a dataset on a store goes: beside its source version."""
    from synthloom import storage
    from synthloom.remote_output import RemoteOutput

    if not storage.is_url(dataset):
        return None
    _, _, source_url = storage.resolve_version(dataset)
    dataset_url, _ = source_url.rsplit("/", 1)
    output_url, name = dataset_url.rsplit("/", 1)
    return RemoteOutput(output_url, name, version)


def _label_locally(plan: LabelPlan, overwrite: bool, workers: int, logger) -> dict[str, Any]:
    with ds.version_lock(plan.final):
        plan.existing = _existing_version(plan, overwrite)  # again, now that no other run can change it
        status = "labelled"
        if plan.existing is not None:
            ds.finish_commit(plan.final)  # killed between its two renames: finish it, label nothing again
            logger.info("%s already labelled this way; finishing the steps after the commit", plan.final)
            manifest, status = ds.read_manifest(plan.final), "exists"
        else:
            staging = staging_for(plan.final, plan.key)
            try:
                manifest = _label_and_commit(plan, staging, overwrite, workers, logger)
            except BaseException:
                if staging.exists() and not _has_labelled_shards(staging):
                    shutil.rmtree(staging, ignore_errors=True)  # only links to the source: nothing to resume
                raise
        report = _finish_label(plan, manifest)
    logger.info("labelled %s into %s", plan.source, plan.final)
    return {"path": str(plan.final), "source": str(plan.source), "rows": report["rows"], "shards": report["shards"],
            "labelers": [kind for kind, _ in plan.specs], "status": status}


def _label_and_commit(plan: LabelPlan, staging: Path, overwrite: bool, workers: int, logger) -> dict[str, Any]:
    first = plan.source / plan.manifest["shards"][0]["file"]
    labelling = prepare_labelers(tuple(plan.specs), ds.read_features(pq.read_schema(first), plan.manifest),
                                 plan.context())
    generated, shards = _link_source_shards(plan, staging)
    storage = (staging / ".results").resolve()
    runner = Runner("processes" if workers > 1 else "local", workers)
    records = label_shards(labelling, generated, shards, staging, storage, plan.device, runner, logger)
    crash_point("label:shards-done")
    manifest = _manifest(plan, labelling, records, staging)
    write_preview(pq.read_table(staging / records[0]["file"]), staging / "preview.png")
    ds.write_json_atomic(staging / "croissant.json",
                         croissant_metadata(manifest, pq.read_schema(staging / records[0]["file"])))
    ds.write_text(staging / "README.md", dataset_card(manifest))
    ds.commit(staging, plan.final, manifest, overwrite=overwrite)
    crash_point("label:committed")
    return manifest


def _finish_label(plan: LabelPlan, manifest: dict[str, Any]) -> dict[str, Any]:
    """Every step after the commit, idempotent: a rerun after a crash anywhere here completes them."""
    ds.remove_build_state(plan.final)
    report = ds.verify(plan.final)
    crash_point("label:before-latest")
    if manifest.get("status") == "accepted":
        ds.set_latest(plan.final.parent, plan.final.name)
    return report


def _has_labelled_shards(staging: Path) -> bool:
    """Labelled shards are worth resuming from; `.raw/` holds only links to the source's shards."""
    return any((staging / ds.DATA_DIR).glob("*.parquet"))
