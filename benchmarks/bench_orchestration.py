"""Orchestration overhead: a 20-shard build through the Prefect flow vs the same generator
and writer called in a plain Python loop, in the same run.

The flow side runs `build_dataset` (shard tasks with result persistence and caching,
progress artifact, preview, card, Croissant, commit, verify) against a Prefect server
that is already up, as under `synthloom serve` or a shared `prefect server start`.
The ephemeral server a one-off `synthloom build` starts is timed separately, because
it is a fixed per-process cost, not a per-shard one. Prints the extra wall time in % against two
baselines: the shards alone in a plain loop, and the same dataset (shards plus manifest, preview, card,
Croissant, commit and verify, the flow's own functions) built in a plain loop without Prefect.

    python benchmarks/bench_orchestration.py [--shards 20] [--shard-size 8] [--points 2048]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from _common import environment  # noqa: E402

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(home: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home)}
    env.pop("PREFECT_API_URL", None)
    prefect = str(Path(sys.executable).with_name("prefect"))
    process = subprocess.Popen([prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(240):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2)
            return process, f"http://127.0.0.1:{port}/api"
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("prefect server did not start")


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
    from synthloom.planning import plan_shards
    from synthloom.preview import write_preview

    plan = fb.plan_build(str(recipe_path), version=version)
    prepared = fb.prepare_generator.fn(plan)
    staging = fb._staging_for(plan.final, plan.generation)
    recipe_json = plan.recipe.model_dump(mode="json")
    records = [fb._write_shard(recipe_json, plan.generation, prepared, shard, str(staging), plan.device)
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
    args = parser.parse_args()
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

        start = time.perf_counter()
        server, url = start_server(tmp / "prefect-home")
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
        finally:
            server.terminate()
            server.wait()
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
        env["PREFECT_HOME"] = str(tmp / "prefect-home")
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "from prefect import flow\n@flow\ndef f(): return 1\nf()"],
                       env=env, check=True, capture_output=True)
        t_ephemeral = time.perf_counter() - start
    print(environment())
    print(f"{args.shards} shards x {args.shard_size} clouds x {args.points} points ({args.sampler})")
    print(f"plain loop: {t_plain:.2f} s (best of {args.repeats})")
    print(f"build_dataset flow (server up, {args.workers} worker(s)): {t_flow:.2f} s (best of {args.repeats})")
    print(f"same dataset steps without Prefect: {t_same:.2f} s (best of {args.repeats})")
    print(f"orchestration overhead vs the shards alone: {100 * (t_flow / t_plain - 1):+.1f} % wall time")
    print(f"Prefect's own overhead (flow vs the same steps without it): {100 * (t_flow / t_same - 1):+.1f} % "
          f"wall time, {t_flow - t_same:.2f} s per build")
    print(f"fixed per-process cost of a one-off build's ephemeral server (empty flow, warm PREFECT_HOME): "
          f"{t_ephemeral:.1f} s; a `prefect server start` from cold took {server_start:.1f} s")


if __name__ == "__main__":
    main()
