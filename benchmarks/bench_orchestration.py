"""Orchestration overhead: a 20-shard build through the Prefect flow vs the same generator
and writer called in a plain Python loop, in the same run.

The flow side runs `build_dataset` (shard tasks with result persistence and caching,
progress artifact, preview, card, Croissant, commit, verify) against a Prefect server
that is already up (`synthloom server start`, in a PREFECT_HOME of this run). Prints the extra wall
time in % against two baselines: the shards alone in a plain loop, and the same dataset (shards plus
manifest, preview, card, Croissant, commit and verify, the flow's own functions) built in a plain loop
without Prefect.

Then the fixed cost per command (`--command-repeats`, 0 skips it): fresh processes, interleaved, each
building a tiny dataset (one shard of 8 small clouds, a new version each time):
  - plain: the same dataset steps without a Prefect flow run, in a fresh Python (it imports the same
    modules, Prefect included, so importing is not counted as Prefect's fixed cost);
  - `synthloom build`, ephemeral: no server recorded, so Prefect starts its ephemeral one (warm home);
  - `synthloom build`, background: reusing the server of `synthloom server start`;
  - an empty `@flow` in a fresh process under `one_off_run()` (as synthloom runs its flows), ephemeral
    and background, and its imports alone.
Fixed cost = median(command) - median(plain). Medians and spreads (min-max) over the repeats.

    python benchmarks/bench_orchestration.py [--shards 20] [--shard-size 8] [--points 2048] [--command-repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from _common import environment  # noqa: E402

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


SYNTHLOOM = str(Path(sys.executable).with_name("synthloom"))
# An empty flow run as synthloom's one-off commands run theirs (flows/run_settings.one_off_run: no heartbeat
# thread to join, the background server found through $PREFECT_HOME), and the imports it needs alone.
IMPORTS = "from prefect import flow\nfrom synthloom.flows.run_settings import one_off_run\n"
EMPTY_FLOW = IMPORTS + "@flow\ndef f(): return 1\nwith one_off_run(): f()"


def home_env(home: Path) -> dict:
    """A user's environment without PREFECT_API_URL, with its own PREFECT_HOME."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(home)
    return env


def start_server(home: Path) -> str:
    """`synthloom server start` in `home` on a free port; returns its API URL."""
    subprocess.run([SYNTHLOOM, "server", "start", "--port", "0"], env=home_env(home), check=True,
                   capture_output=True, text=True)
    return read_api_url(home)


def timed(command: list[str], env: dict) -> float:
    start = time.perf_counter()
    out = subprocess.run(command, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"{command} failed: {out.stderr.strip()[-500:]}")
    return elapsed


def command_costs(tmp: Path, home: Path, repeats: int) -> dict[str, list[float]]:
    """Seconds of fresh-process commands, interleaved over `repeats` rounds (see the module doc).
    `home` has the background server up; a second, warmed PREFECT_HOME has none (ephemeral)."""
    recipe = {"name": "tiny", "seed": 1, "output": str(tmp / "out"),
              "generator": {"kind": "pointcloud", "params": {"num_points": 256, "sampler": "uniform"}},
              "count": {"train": 8}, "shard_size": 8}
    recipe_path = tmp / "tiny.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    ephemeral = home_env(tmp / "prefect-home-ephemeral")
    background = home_env(home)
    build = [SYNTHLOOM, "build", str(recipe_path), "--no-progress", "--version"]
    timed(build + ["warm-ephemeral"], ephemeral)  # migrates the ephemeral home's database once
    timed(build + ["warm-background"], background)
    plain = [sys.executable, str(Path(__file__).resolve()), "--plain-build", str(recipe_path)]
    sides = {
        "plain: same steps, no flow run": lambda r: timed(plain + [f"plain{r}"], background),
        "synthloom build, ephemeral server": lambda r: timed(build + [f"eph{r}"], ephemeral),
        "synthloom build, background server": lambda r: timed(build + [f"bg{r}"], background),
        "import prefect (+ run_settings)": lambda r: timed([sys.executable, "-c", IMPORTS], background),
        "empty flow, ephemeral server": lambda r: timed([sys.executable, "-c", EMPTY_FLOW], ephemeral),
        "empty flow, background server": lambda r: timed([sys.executable, "-c", EMPTY_FLOW], background),
    }
    times: dict[str, list[float]] = {name: [] for name in sides}
    for repeat in range(repeats):
        for name, run in sides.items():
            times[name].append(run(repeat))
    return times


def read_api_url(home: Path) -> str:
    import json

    return json.loads((home / "synthloom-server.json").read_text())["api_url"]


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):6.2f} s  ({min(values):.2f}-{max(values):.2f})"


def plain_loop(recipe_path: Path) -> None:
    """Baseline 1, the shards alone without Prefect: prepare, generate and write every shard."""
    from synthloom import dataset as ds
    from synthloom.generators.base import BuildContext
    from synthloom.planning import plan_shards
    from synthloom.recipe import load_recipe
    from synthloom.registry import make_generator

    recipe = load_recipe(recipe_path)
    generator = make_generator(recipe.generator.kind, recipe.generator.params)
    generator.prepare(BuildContext(cache_dir=recipe_path.parent))
    schema = ds.dataset_schema(generator.features())
    out = Path(recipe.output) / "plain"
    for shard in plan_shards(recipe):
        rows = list(generator.generate(shard))
        for offset, row in enumerate(rows):
            row.update(id=f"{shard.split}-{shard.start + offset:08d}", split=shard.split, generator="pointcloud",
                       generation_sha256=recipe.generation_fingerprint())
        ds.write_shard(ds.rows_to_table(rows, schema), out / shard.filename)


def plain_build(recipe_path: Path, version: str) -> None:
    """Baseline 2, the same verified dataset without Prefect: the flow's own steps (preflight, prepare,
    shard writer with its resume records, manifest, preview, card, Croissant, commit, verify) called
    in a plain loop, so that flow minus this is what Prefect itself costs."""
    from synthloom import dataset as ds
    from synthloom.card import dataset_card
    from synthloom.croissant import croissant_metadata
    from synthloom.flows import build as fb
    from synthloom.flows.shards import write_shard
    from synthloom.planning import plan_shards
    from synthloom.preview import write_preview

    plan = fb.plan_build(str(recipe_path), version=version)
    prepared = fb.prepare_generator.fn(plan)
    staging = fb.staging_for(plan.final, plan.generation)
    recipe_json = plan.recipe.model_dump(mode="json")
    records = [write_shard(recipe_json, plan.generation, prepared, shard, str(staging), plan.device, sole_worker=True)
               for shard in plan_shards(plan.recipe)]
    manifest = fb._manifest(plan, prepared, records, staging)
    write_preview(fb.pq.read_table(staging / records[0]["file"]), staging / "preview.png")
    ds.write_json_atomic(staging / "croissant.json", croissant_metadata(manifest, fb._schema_of(staging, records)))
    (staging / "README.md").write_text(dataset_card(manifest))
    ds.commit(staging, plan.final, manifest)
    ds.remove_build_state(plan.final)
    ds.verify(plan.final)
    ds.set_latest(plan.final.parent, plan.final.name)


def main() -> None:  # called under __main__: --workers > 1 spawns processes that re-import this module
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=20)
    parser.add_argument("--shard-size", type=int, default=8)
    parser.add_argument("--points", type=int, default=2048)
    parser.add_argument("--sampler", default="poisson")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats; the best of each is kept")
    parser.add_argument("--workers", type=int, default=1, help="shard processes for the flow (the loop has one)")
    parser.add_argument("--command-repeats", type=int, default=3,
                        help="fresh-process rounds of the fixed per-command cost (0: skip it)")
    parser.add_argument("--plain-build", nargs=2, metavar=("RECIPE", "VERSION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_build:  # one side of the fixed-cost measurement, in its own fresh process
        plain_build(Path(args.plain_build[0]), args.plain_build[1])
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        recipe = {
            "name": "bench", "seed": 1, "output": str(tmp / "out"),
            "generator": {"kind": "pointcloud", "params": {"num_points": args.points, "sampler": args.sampler,
                                                           "rotation": "so3"}},
            "count": {"train": args.shards * args.shard_size}, "shard_size": args.shard_size,
        }
        recipe_path = tmp / "bench.yaml"
        recipe_path.write_text(yaml.safe_dump(recipe))

        home = tmp / "prefect-home"
        start = time.perf_counter()
        url = start_server(home)
        server_start = time.perf_counter() - start
        os.environ["PREFECT_API_URL"] = url
        try:
            from synthloom.flows.build import build_dataset

            build_dataset(str(recipe_path), version="warmup", seed=99)  # import + first-flow costs, not per build
            t_plain, t_same, t_flow = [], [], []
            for repeat in range(args.repeats):  # interleaved, so drifting machine load hits both sides
                start = time.perf_counter()
                plain_loop(recipe_path)
                t_plain.append(time.perf_counter() - start)
                start = time.perf_counter()
                plain_build(recipe_path, version=f"plain{repeat}")
                t_same.append(time.perf_counter() - start)
                start = time.perf_counter()
                build_dataset(str(recipe_path), version=f"run{repeat}", workers=args.workers)
                t_flow.append(time.perf_counter() - start)
            t_plain, t_same, t_flow = min(t_plain), min(t_same), min(t_flow)
            commands = command_costs(tmp, home, args.command_repeats) if args.command_repeats > 0 else None
        finally:
            subprocess.run([SYNTHLOOM, "server", "stop"], env=home_env(home), capture_output=True)
    print(environment())
    print(f"{args.shards} shards x {args.shard_size} clouds x {args.points} points ({args.sampler})")
    print(f"plain loop: {t_plain:.2f} s (best of {args.repeats})")
    print(f"build_dataset flow (server up, {args.workers} worker(s)): {t_flow:.2f} s (best of {args.repeats})")
    print(f"same dataset steps without Prefect: {t_same:.2f} s (best of {args.repeats})")
    print(f"orchestration overhead vs the shards alone: {100 * (t_flow / t_plain - 1):+.1f} % wall time")
    print(f"Prefect's own overhead (flow vs the same steps without it): {100 * (t_flow / t_same - 1):+.1f} % "
          f"wall time, {t_flow - t_same:.2f} s per build (goal <= 10 %)")
    print(f"`synthloom server start` from cold (new PREFECT_HOME, database migrated) took {server_start:.1f} s")
    if commands is None:
        return
    plain = statistics.median(commands["plain: same steps, no flow run"])
    floor = statistics.median(commands["import prefect (+ run_settings)"])
    print(f"\nfixed cost per command: fresh processes, tiny build (1 shard x 8 clouds x 256 points), "
          f"median (min-max) of {args.command_repeats} interleaved rounds")
    print(f"| {'command':<36} | {'wall time':<24} | fixed cost |")
    print(f"| {'-' * 36} | {'-' * 24} | ---------- |")
    for name, values in commands.items():
        if name.startswith("plain") or name.startswith("import prefect"):
            cost = "(baseline)"
        elif name.startswith("empty flow"):
            cost = f"{statistics.median(values) - floor:+.2f} s vs the imports"
        else:
            cost = f"{statistics.median(values) - plain:+.2f} s"
        print(f"| {name:<36} | {spread(values):<24} | {cost} |")
    background = statistics.median(commands["synthloom build, background server"]) - plain
    print(f"fixed cost of a command with the background server: {background:+.2f} s (goal <= 1 s); "
          f"with the ephemeral server: "
          f"{statistics.median(commands['synthloom build, ephemeral server']) - plain:+.2f} s")


if __name__ == "__main__":
    main()
