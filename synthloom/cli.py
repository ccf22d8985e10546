"""The `synthloom` command line: build, inspect, verify, export and serve datasets.

Every failure ends in one line on stderr, `synthloom: error: <what and where>`,
and a non-zero exit code; `--verbose` shows Prefect's logs and full tracebacks.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from .settings import apply_defaults

EPILOG = """examples:
  synthloom build configs/demo-pointclouds.yaml
  synthloom inspect datasets/demo-pointclouds/1.0.0
  synthloom verify datasets/demo-pointclouds/1.0.0
  synthloom evaluate datasets/cgal-meshes/1.0.0 --reference data/cgal-meshes
  synthloom export datasets/demo-pointclouds/1.0.0 --format ply --out exported/
  synthloom label datasets/shoes/1.0.0 --labeler owlv2 --param model=models/owlv2 \\
      --param 'ontology={"a photo of a sneaker": sneaker}' --labeler blip --param model=models/blip
  synthloom serve configs/demo-pointclouds.yaml --cron "0 3 * * *"
  synthloom server start     # once: later build/evaluate/label commands skip Prefect's ~6 s server start
  synthloom gc s3://bucket/datasets          # list what killed builds left on the store; --delete removes it
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="synthloom",
        description="Build synthetic training datasets from YAML recipes as Prefect flows, "
                    "written as verified Parquet datasets with provenance.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="show Prefect logs and full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    build = sub.add_parser("build", help="build the dataset a recipe describes (resumes a killed build)",
                           description="Run the build flow: plan shards, generate each shard as a cached Prefect "
                                       "task, then commit <output>/<name>/<version>/ with manifest, Croissant "
                                       "metadata, dataset card and preview. Rerunning a killed build reuses every "
                                       "finished shard. " + SERVER_NOTE)
    build.add_argument("recipe", help="path to a recipe YAML file (see configs/)")
    build.add_argument("--overwrite", action="store_true",
                       help="replace an existing version built from a different recipe")
    build.add_argument("--version", help="override the recipe's version (a new folder)")
    build.add_argument("--seed", type=int, help="override the recipe's root seed")
    build.add_argument("--output", help="override the recipe's `output:`: a folder or an object-store URL "
                                        "(s3://bucket/prefix; credentials and endpoint from AWS_* variables)")
    build.add_argument("--force-unlock", action="store_true",
                       help="on an object store: take over the version's lock object from a build known to be dead "
                            "(a lock whose heartbeat is older than SYNTHLOOM_LOCK_STALE_SECONDS, default 3600, is "
                            "taken over without it)")
    build.add_argument("--no-progress", action="store_true", help="no progress bar")
    build.add_argument("--workers", type=int, default=1,
                       help="shards generated in parallel, one process each (default 1: in the flow's process)")
    build.add_argument("--device", help="auto | cpu | cuda | cuda:N (default: the recipe's `device`, auto)")
    build.add_argument("--runner", choices=("local", "processes", "ray", "dask"),
                       help="where shard tasks run (default: the recipe's `runner`, else local for --workers 1 and "
                            "processes for more); ray and dask need `pip install 'synthloom[cluster]'`")
    build.add_argument("--address", help="a running Ray or Dask cluster (ray://head:10001, tcp://scheduler:8786); "
                                         "without it ray/dask start a local one with --workers processes")

    inspect = sub.add_parser("inspect", help="summarize a dataset: splits, columns, labels, provenance",
                             description="Summarize a dataset from its manifest and shards. Like "
                                         "synthloom.load, it does not rehash the shards (a missing or unreadable "
                                         "one is still an error): pass --verify, or run `synthloom verify`.")
    inspect.add_argument("dataset", help="a version folder, or a dataset folder (uses 'latest')")
    inspect.add_argument("--json", action="store_true", help="print the summary as JSON")
    inspect.add_argument("--verify", action="store_true",
                         help="first rehash every shard and check rows and schema, as `synthloom verify` does")

    verify = sub.add_parser("verify", help="rehash every shard and check rows and schema against the manifest")
    verify.add_argument("dataset", help="a version folder, or a dataset folder (uses 'latest')")

    evaluate = sub.add_parser("evaluate", help="score a dataset against real data (FID/KID/IS/PR or COV/MMD/1-NNA, "
                                                "CAS, memorization, diversity, attributes) and apply its gates",
                              description="Run the evaluation flow: metrics go into manifest.json, the dataset "
                                          "card and eval/report.html; the recipe's gates decide whether the "
                                          "version is accepted (and becomes `latest`) or rejected (exit 1).")
    evaluate.add_argument("dataset", help="a version folder, or a dataset folder (uses 'latest')")
    evaluate.add_argument("--reference", help="real data: a synthloom dataset, a folder of mesh classes, a folder of "
                                              "image classes, idx:<folder> (MNIST format) or sklearn:digits "
                                              "(default: the recipe's `reference`)")
    evaluate.add_argument("--split", default="train", help="which synthetic split to score (default train)")
    evaluate.add_argument("--extractor", help="image features: inception (comparable with published FIDs), "
                                              "domain (a CNN trained on the reference; default), or a saved "
                                              "extractor folder")
    evaluate.add_argument("--only", nargs="+", metavar="EVALUATOR",
                          help="run only these: fidelity cas memorization diversity attributes labels clip_score")
    evaluate.add_argument("--clip-model", metavar="FOLDER",
                          help="a local CLIP model folder: adds the clip_score evaluator (images vs their prompts)")

    export = sub.add_parser("export", help="export a dataset to another format")
    export.add_argument("dataset", help="a version folder, or a dataset folder (uses 'latest')")
    export.add_argument("--format", required=True, choices=["ply", "coco", "yolo", "imagefolder"],
                        help="ply: one PLY file per point cloud; coco: COCO detection JSON + images; yolo: "
                             "Ultralytics labels + images + data.yaml; imagefolder: one folder per class")
    export.add_argument("--out", required=True, help="output folder (created)")
    export.add_argument("--split", help="only this split")
    export.add_argument("--column", help="coco/yolo: the boxes column (default: the first BoundingBoxes column, "
                                         "e.g. ground truth rather than auto-labels); imagefolder: the class column")

    label = sub.add_parser("label", help="auto-label a dataset version into a new version (owlv2 boxes, blip "
                                         "captions, attributes)",
                           description="Run labelers on every shard of a committed version and commit the result "
                                       "as a new version beside it (default name <version>+<labelers>); the "
                                       "source is not changed. Each --param KEY=VALUE (VALUE read as YAML) "
                                       "belongs to the --labeler before it. Rerunning a killed run resumes it: "
                                       "labelled shards are reused and an interrupted commit is finished.")
    label.add_argument("dataset", help="a version folder, or a dataset folder (uses 'latest')")
    label.add_argument("--labeler", action=_LabelerAction, dest="labelers", metavar="KIND", required=True,
                       help="a registered labeler: owlv2, blip, attributes, ... (repeat for a chain)")
    label.add_argument("--param", action=_LabelerAction, dest="labelers", metavar="KEY=VALUE",
                       help="a param of the preceding --labeler, e.g. threshold=0.2")
    label.add_argument("--version", help="name of the new version (default: <source version>+<labelers>)")
    label.add_argument("--overwrite", action="store_true", help="replace that version if it exists")
    label.add_argument("--device", help="auto | cpu | cuda | cuda:N (default auto)")
    label.add_argument("--workers", type=int, default=1, help="shards labelled in parallel, one process each")

    serve = sub.add_parser("serve", help="run scheduled builds of recipes (each run writes a new version)",
                           description="Register each recipe as a Prefect deployment with a schedule and run it "
                                       "until interrupted. Uses the Prefect server at $PREFECT_API_URL, or starts "
                                       "a local one (UI at http://127.0.0.1:PORT) when that is unset.")
    serve.add_argument("recipes", nargs="+", help="recipe YAML files")
    when = serve.add_mutually_exclusive_group()
    when.add_argument("--cron", help='cron schedule, e.g. "0 3 * * *" (default: the recipe\'s `schedule`)')
    when.add_argument("--interval", type=float, help="run every N seconds instead of a cron schedule")
    serve.add_argument("--port", type=int, default=4200, help="port of the local Prefect server (default 4200)")
    serve.add_argument("--limit", type=int, default=1, help="max concurrent runs (default 1)")

    deploy = sub.add_parser("deploy", help="register scheduled builds on a Prefect process work pool, for "
                                           "`prefect worker start` to run",
                            description="Register each recipe as a deployment of the scheduled-build flow on a "
                                        "process work pool (created if missing) and exit; a worker "
                                        "(`prefect worker start --pool POOL`) runs the scheduled runs, each in "
                                        "its own process, each writing a new version as `synthloom serve` does. "
                                        "Needs a Prefect server that outlives this command: $PREFECT_API_URL or "
                                        "`synthloom server start` (README, 'Scheduled builds on a Prefect worker').")
    deploy.add_argument("recipes", nargs="+", help="recipe YAML files")
    deploy.add_argument("--pool", required=True, help="name of the process work pool the worker serves")
    deploy_when = deploy.add_mutually_exclusive_group()
    deploy_when.add_argument("--cron", help='cron schedule, e.g. "0 3 * * *" (default: the recipe\'s `schedule`)')
    deploy_when.add_argument("--interval", type=float, help="run every N seconds instead of a cron schedule")

    gc = sub.add_parser("gc", help="list (or --delete) objects on an object store that no commit references",
                        description="On an object store, a build killed and never rerun leaves its staged shards "
                                    "and lock object under a version prefix without manifest.json, and a model-store "
                                    "upload killed before its marker leaves files no entry names: no reader sees "
                                    "them, they cost storage. gc lists what is older than --grace-hours and, with "
                                    "--delete, deletes it: an uncommitted version only under its own lock (a live "
                                    "build's version is skipped); a committed version loses only resume state "
                                    "that a killed clean-up left in it, a committed model entry nothing.")
    gc.add_argument("url", nargs="?", help="an output URL (s3://bucket/datasets: the `output:` of recipes); with "
                                           "--models, a model store URL (default: $SYNTHLOOM_MODEL_STORE)")
    gc.add_argument("--models", action="store_true", help="the model store's layout instead of datasets'")
    gc.add_argument("--grace-hours", type=float, default=24.0,
                    help="leave anything whose newest object is younger than this (default 24: builds and uploads "
                         "in progress are never touched)")
    gc.add_argument("--delete", action="store_true", help="delete what is listed (default: only list it)")

    server = sub.add_parser("server", help="start, stop or show a local Prefect server that later commands reuse",
                            description="A one-off build, evaluate or label command without PREFECT_API_URL "
                                        "starts Prefect's ephemeral server, ~6 s per command. `synthloom server "
                                        "start` starts `prefect server start` on 127.0.0.1 once, in the "
                                        "background (recorded in $PREFECT_HOME/synthloom-server.json, log "
                                        "beside it); while it answers, later commands use it and their runs "
                                        "show in its UI. Commands never start it by themselves. A "
                                        "PREFECT_API_URL you set always wins: then this server is not used "
                                        "and `start` refuses.")
    server.add_argument("action", choices=["start", "stop", "status"],
                        help="start: in the background (returns when it answers); stop: end it; status: say "
                             "whether it runs and where its UI is (exit 1 when it does not)")
    server.add_argument("--port", type=int, default=4200,
                        help="start: port on 127.0.0.1 (default 4200; 0 picks a free one)")
    return parser


SERVER_NOTE = ("Prefect: uses $PREFECT_API_URL if set; else the background server of `synthloom server "
               "start` if it answers; else Prefect's ephemeral server, started in this process (~6 s). "
               "A build never starts a background server by itself.")


class _LabelerAction(argparse.Action):
    """`--labeler KIND` starts a labeler spec; `--param KEY=VALUE` adds to the last one (VALUE parsed as
    YAML, so numbers, booleans, lists and mappings work)."""

    def __call__(self, parser, namespace, value, option_string=None):
        specs = getattr(namespace, self.dest, None) or []
        if option_string == "--labeler":
            specs.append((value, {}))
        else:
            import yaml

            if not specs:
                parser.error(f"--param {value}: comes before any --labeler")
            key, sep, text = value.partition("=")
            if not sep or not key:
                parser.error(f"--param {value}: expected KEY=VALUE")
            try:
                specs[-1][1][key.strip()] = yaml.safe_load(text)
            except yaml.YAMLError as error:
                parser.error(f"--param {value}: VALUE is not valid YAML ({str(error).splitlines()[0]})")
        setattr(namespace, self.dest, specs)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    apply_defaults(verbose=args.verbose)
    from .errors import SynthloomError

    try:
        return COMMANDS[args.command](args)
    except SynthloomError as error:
        return _fail(str(error), args)
    except OSError as error:  # full disk, permissions, ... name the file
        where = error.filename or ""
        return _fail(f"{where}: {error.strerror or error}" if where else str(error), args)
    except KeyboardInterrupt:
        print("synthloom: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as error:  # a bug, not bad input: still one line, the traceback on request
        hint = "" if args.verbose else " (rerun with --verbose for the traceback)"
        return _fail(f"internal error: {type(error).__name__}: {error}{hint}", args)


def _fail(message: str, args) -> int:
    if args.verbose:
        import traceback

        traceback.print_exc()
    print(f"synthloom: error: {message}", file=sys.stderr)
    return 1


def cmd_build(args) -> int:
    from synthloom.flows.plan import plan_build  # no Prefect import: a refused build fails in well under a second

    if args.workers < 1:
        from .errors import SynthloomError

        raise SynthloomError(f"--workers must be at least 1, got {args.workers}")
    # A bad recipe, bad generator params or inputs, an absurd size, a conflicting version, a build of
    # the same version in progress or an unwritable output fails here, in a second, before any flow run.
    plan = plan_build(args.recipe, args.overwrite, args.version, args.seed, args.device, args.runner, args.address,
                      args.workers, args.output, args.force_unlock)
    _say_which_server()
    if plan.recipe.evaluators or plan.recipe.gates:
        _leave_a_core_for_prefect()
    from synthloom.flows.build import build_dataset

    result = build_dataset(args.recipe, overwrite=args.overwrite, version=args.version, seed=args.seed,
                           progress=not args.no_progress and sys.stderr.isatty(), workers=args.workers,
                           device=args.device, runner=args.runner, address=args.address, output=args.output,
                           force_unlock=args.force_unlock)
    if result["status"] == "exists":
        print(f"{result['path']}: already built from this recipe ({result['rows']} rows); "
              "finished the steps after the commit, nothing regenerated")
    else:
        skipped = f", {result['skipped']} inputs skipped" if result.get("skipped") else ""
        # On a store each shard object's sha256 metadata and size were checked, not its bytes re-read
        # (`synthloom verify URL` does that).
        stored = (f"; {result['uploaded']} shards uploaded, {result['reused']} already on the store"
                  if "uploaded" in result else "")
        checked = "checked on the store (sha256, size)" if stored else "verified"
        print(f"{result['path']}: {result['rows']} rows in {result['shards']} shards, {checked}{skipped}{stored}")
    if result.get("metrics"):  # evaluated by this run: the headline numbers, details in the report
        numbers = ", ".join(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
                            for key, value in result["metrics"].items() if isinstance(value, (int, float)))
        print(f"metrics: {numbers}  (details: {result['path']}/eval/report.html)")
    return 0


def cmd_inspect(args) -> int:
    from .summary import summarize

    if args.verify:
        from .dataset import verify

        verify(args.dataset)
    summary = summarize(args.dataset)
    from .storage import is_url

    if is_url(args.dataset):  # summarised from its local mirror; name the store's location
        summary["path"] = args.dataset
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{summary['name']} {summary['version']}[/bold]  {summary['path']}  ({summary['status']})")
    splits = Table("split", "rows", "shards", "MB", title="splits")
    for split, info in summary["splits"].items():
        splits.add_row(split, str(info["rows"]), str(info["shards"]), f"{info['bytes'] / 1e6:.1f}")
    console.print(splits)
    columns = Table("column", "type", title="columns")
    for name, kind in summary["columns"]:
        columns.add_row(name, kind)
    console.print(columns)
    if summary["labels"]:
        names = sorted({n for counts in summary["labels"].values() for n in counts})
        labels = Table("label", *summary["labels"].keys(), title="labels")
        for name in names:
            labels.add_row(name, *(str(c.get(name, 0)) for c in summary["labels"].values()))
        console.print(labels)
    provenance = Table("field", "value", title="provenance")
    for key, value in summary["provenance"].items():
        provenance.add_row(key, json.dumps(value) if isinstance(value, dict) else str(value))
    console.print(provenance)
    if summary["metrics"]:
        metrics = Table("metric", "value", title="metrics (details: eval/report.html)")
        for key, value in summary["metrics"].items():
            metrics.add_row(key, f"{value:.6g}" if isinstance(value, float) else str(value))
        console.print(metrics)
    for line in summary["gates"]:
        console.print(f"gate {line}")
    return 0


def cmd_gc(args) -> int:
    from . import gc
    from .errors import StorageError

    url = args.url or (os.environ.get("SYNTHLOOM_MODEL_STORE") if args.models else None)
    if not url:
        raise StorageError("gc: give an output URL (or --models with a URL or SYNTHLOOM_MODEL_STORE set)")
    if args.grace_hours < 0:
        raise StorageError(f"gc: --grace-hours {args.grace_hours:g} is negative")
    if args.delete:
        collect = gc.collect_models if args.models else gc.collect_datasets
        found = collect(url, args.grace_hours)
    else:
        found = (gc.model_garbage if args.models else gc.dataset_garbage)(url, args.grace_hours)
    for garbage in found:
        print(("deleted " if args.delete else "would delete ") + garbage.describe())
    total = sum(g.bytes for g in found)
    verb = "deleted" if args.delete else "to delete (rerun with --delete)"
    print(f"{url}: {len(found)} unreferenced item{'s' if len(found) != 1 else ''}, {total:,} bytes {verb}"
          if found else f"{url}: nothing unreferenced older than {args.grace_hours:g} h")
    return 0


def cmd_verify(args) -> int:
    from .dataset import verify

    report = verify(args.dataset)
    print(f"{report['path']}: OK, {report['shards']} shards, {report['rows']} rows, hashes and schema match")
    return 0


def _leave_a_core_for_prefect() -> None:
    """Torch's intra-op threads beside the Prefect server oversubscribe small machines (measured 4-10x
    slower on 2 cores); keep one core free unless the user set OMP_NUM_THREADS."""
    if "OMP_NUM_THREADS" not in os.environ:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))


def _say_which_server() -> None:
    """One stderr line when a one-off command will use the background server (run_settings.one_off_run
    points the flow at it), so the user knows where to watch the run."""
    from .server import attach

    state = attach()
    if state is not None:
        print(f"Prefect: background server at {state['ui_url']} (watch runs at {state['ui_url']}/runs)",
              file=sys.stderr)


def cmd_evaluate(args) -> int:
    _leave_a_core_for_prefect()
    _say_which_server()
    from synthloom.flows.evaluate import evaluate_dataset
    from synthloom.flows.run_settings import one_off_run

    from . import dataset as ds
    from . import storage

    version_dir = ds.resolve_version_dir(args.dataset)
    recipe = ds.read_manifest(version_dir)["recipe"]
    evaluators = {spec["kind"]: spec.get("params", {}) for spec in recipe.get("evaluators", [])}
    if args.only:
        from .registry import available

        known = sorted(available("evaluators"))
        unknown = sorted(set(args.only) - set(known))
        if unknown:
            from .errors import SynthloomError

            raise SynthloomError(f"--only: unknown evaluator(s) {unknown}; registered: {known}")
        evaluators = {kind: evaluators.get(kind, {}) for kind in args.only}
    if (args.extractor or args.clip_model) and not evaluators:
        from .registry import evaluator_classes

        evaluators = {kind: {} for kind, cls in evaluator_classes().items() if cls.default and cls.needs_reference}
    if args.extractor:  # every evaluator measuring in a feature space (fidelity, memorization, diversity)
        from .registry import load

        for kind in evaluators:
            if "extractor" in load("evaluators", kind).Params.model_fields:
                evaluators[kind] = {**evaluators[kind], "extractor": args.extractor}
    if args.clip_model:
        evaluators.setdefault("clip_score", {})["model"] = args.clip_model
    with one_off_run():  # no Prefect heartbeats unless asked (flows/run_settings.py)
        # A URL is evaluated on its mirror and the results written back to the store (flows/evaluate.py).
        target = args.dataset if storage.is_url(args.dataset) else str(version_dir)
        result = evaluate_dataset(target, reference=args.reference, evaluators=evaluators or None,
                                  split=args.split)
    for key, value in result["summary"].items():
        print(f"{key}: {value:.6g}" if isinstance(value, float) else f"{key}: {value}")
    print(f"{result['path']}: {result['status']}; report at {result['report']}")
    return 0


def cmd_export(args) -> int:
    from rich.progress import Progress

    from . import dataset as ds
    from .registry import load

    exporter = load("exporters", args.format)
    version_dir = ds.resolve_version_dir(args.dataset)
    manifest = ds.read_manifest(version_dir)
    total = sum(s["rows"] for s in manifest["shards"] if args.split in (None, s["split"]))
    options = {} if args.column is None else {"column": args.column}
    if args.format == "ply" and options:
        from .errors import SynthloomError

        raise SynthloomError("--column applies to --format coco, yolo and imagefolder")
    with Progress(disable=not sys.stderr.isatty()) as progress:
        task = progress.add_task(f"export {args.format}", total=total)
        count = exporter(version_dir, args.out, split=args.split, on_file=lambda: progress.advance(task), **options)
    what = "PLY files" if args.format == "ply" else f"images ({args.format})"
    print(f"{args.out}: wrote {count} {what}")
    return 0


def cmd_label(args) -> int:
    from synthloom.flows.label import label_dataset, plan_label
    from synthloom.flows.run_settings import one_off_run

    if args.workers < 1:
        from .errors import SynthloomError

        raise SynthloomError(f"--workers must be at least 1, got {args.workers}")
    # Bad labeler params, columns a labeler needs, a taken version name: one line before any flow run.
    plan_label(args.dataset, args.labelers, args.version, args.device, args.overwrite)
    _say_which_server()
    with one_off_run():
        result = label_dataset(args.dataset, args.labelers, version=args.version, device=args.device,
                               overwrite=args.overwrite, workers=args.workers)
    if result["status"] == "exists":
        print(f"{result['path']}: already labelled by {', '.join(result['labelers'])} from {result['source']} "
              f"({result['rows']} rows); finished the steps after the commit, nothing labelled again")
    else:
        print(f"{result['path']}: {result['rows']} rows in {result['shards']} shards labelled by "
              f"{', '.join(result['labelers'])} from {result['source']}, verified")
    return 0


def cmd_serve(args) -> int:
    from .recipe import load_recipe

    for path in args.recipes:  # every recipe must be valid and scheduled before a server starts
        if not (args.cron or args.interval or load_recipe(path).schedule):
            from .errors import RecipeError

            raise RecipeError(f"{path}: no schedule: pass --cron or --interval, or set `schedule:` in the recipe")
    server = None
    from .server import attach

    background = attach()
    if background is not None:  # `synthloom server start`'s server runs the scheduler service too
        os.environ["PREFECT_API_URL"] = background["api_url"]
        print(f"Prefect: background server; watch runs at {background['ui_url']}/runs", file=sys.stderr)
    elif not os.environ.get("PREFECT_API_URL"):
        server = _start_local_server(args.port)
        os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{args.port}/api"
        print(f"Prefect server started; watch runs at http://127.0.0.1:{args.port}/runs", file=sys.stderr)
    try:
        from synthloom.flows.serve import serve_recipes

        serve_recipes(args.recipes, cron=args.cron, interval=args.interval, limit=args.limit)
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
    return 0


def _start_local_server(port: int, timeout: float = 180.0) -> subprocess.Popen:
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            from .errors import SynthloomError

            raise SynthloomError(f"port {port} is in use; set PREFECT_API_URL to that server or pass --port")
    prefect_bin = shutil.which("prefect") or str(Path(sys.executable).with_name("prefect"))
    server = subprocess.Popen([prefect_bin, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            from .errors import SynthloomError

            raise SynthloomError(f"`prefect server start --port {port}` exited with code {server.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as response:
                if response.status == 200:
                    return server
        except OSError:
            time.sleep(1.0)
    server.kill()
    from .errors import SynthloomError

    raise SynthloomError(f"Prefect server on port {port} did not start within {timeout:.0f} s")


def cmd_deploy(args) -> int:
    from .server import attach, user_api_url

    if not user_api_url():  # a deployment on Prefect's ephemeral server would vanish with this command
        background = attach()
        if background is None:
            from .errors import SynthloomError

            raise SynthloomError("deploy needs a Prefect server that workers reach: run `synthloom server start` "
                                 "or set PREFECT_API_URL")
        os.environ["PREFECT_API_URL"] = background["api_url"]
    from synthloom.flows.serve import deploy_recipes

    for name, ident in deploy_recipes(args.recipes, args.pool, cron=args.cron, interval=args.interval):
        print(f"deployment {name} ({ident}) on work pool '{args.pool}'; run it with: "
              f"prefect worker start --pool {args.pool}")
    return 0


def cmd_server(args) -> int:
    from . import server

    if args.action == "start":
        state, started = server.start(args.port)
        what = "started" if started else "already running"
        print(f"Prefect server {what} at {state['ui_url']} (pid {state['pid']}; API {state['api_url']}; "
              f"log {state['log']}). Later build, evaluate and label commands use it; "
              "`synthloom server stop` ends it.")
        return 0
    if args.action == "stop":
        state = server.stop()
        print(f"stopped the Prefect server at {state['ui_url']} (pid {state['pid']})" if state
              else "no background Prefect server was running")
        return 0
    user = os.environ.get("PREFECT_API_URL") or server.user_api_url()
    state = server.running()
    if state is None:
        print(f"not running (no answering server recorded in {server.state_path()})")
    else:
        print(f"running at {state['ui_url']} (pid {state['pid']}, API {state['api_url']}, log {state['log']})")
    if user:
        print(f"PREFECT_API_URL is set ({user}): commands use that server, not this one")
    return 0 if state is not None else 1


COMMANDS = {
    "build": cmd_build,
    "gc": cmd_gc,
    "deploy": cmd_deploy,
    "inspect": cmd_inspect,
    "verify": cmd_verify,
    "evaluate": cmd_evaluate,
    "export": cmd_export,
    "label": cmd_label,
    "serve": cmd_serve,
    "server": cmd_server,
}

if __name__ == "__main__":
    sys.exit(main())
