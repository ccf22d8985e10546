"""The generator lifecycle for real models (issue 13 §2, §4, §5): typed Prepared record, model store,
load once per worker, device slots, generation fingerprint, what the Prefect UI shows, recipes as users
write them."""

import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO, SYNTHLOOM, build_runs, run_cli, write_recipe
from synthloom import dataset as ds
from synthloom.errors import ModelError, RecipeError
from synthloom.flows.build import build_dataset
from synthloom.models import ModelStore, load_pretrained_state, save_pretrained
from synthloom.recipe import load_recipe
from toygen import read_events


def _toy(events, kind="toy", **params):
    return {"kind": kind, "params": {"events": str(events), **params}}


# -- model store -------------------------------------------------------------------------------
def test_model_store_builds_once_then_reuses_and_names_a_damaged_entry(tmp_path):
    store = ModelStore(tmp_path / "store")
    calls = []

    def train(folder):
        calls.append(folder)
        save_pretrained(torch.nn.Linear(3, 2), {"in": 3}, folder)

    first = store.get_or_build({"data": "abc", "lr": 0.1}, train)
    second = store.get_or_build({"lr": 0.1, "data": "abc"}, train)  # same inputs, any key order
    assert len(calls) == 1 and not first.reused and second.reused
    assert first.path == second.path and first.sha256 == second.sha256
    assert set(first.files) == {"config.json", "model.safetensors"}
    config, state = load_pretrained_state(first.path)
    assert config == {"in": 3} and state["weight"].shape == (2, 3)
    other = store.get_or_build({"data": "abc", "lr": 0.2}, train)
    assert len(calls) == 2 and other.path != first.path

    weights = first.path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4])
    with pytest.raises(ModelError, match="model.safetensors: model store entry is damaged"):
        store.get_or_build({"data": "abc", "lr": 0.1}, train)
    with pytest.raises(ModelError, match="not a saved model"):
        load_pretrained_state(tmp_path / "nowhere")


def test_two_processes_needing_one_model_train_it_once(tmp_path):
    script = f"""
import sys, time, torch
sys.path.insert(0, {str(REPO)!r})
from synthloom.models import ModelStore, save_pretrained
def train(folder):
    open({str(tmp_path / 'trainings')!r}, 'a').write('x')
    time.sleep(1.0)
    save_pretrained(torch.nn.Linear(2, 2), {{}}, folder)
print(ModelStore({str(tmp_path / 'store')!r}).get_or_build({{'k': 1}}, train).path)
"""
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    paths = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(paths) == 1 and (tmp_path / "trainings").read_text() == "x"


def test_a_trained_model_is_reused_by_the_next_version(tmp_path, toy_generators):
    path = write_recipe(tmp_path, generator=_toy(toy_generators, "toy-model"), count={"train": 8}, shard_size=4)
    build_dataset(str(path))
    build_dataset(str(path), version="2.0.0")
    kinds = [e["event"] for e in read_events(toy_generators)]
    assert kinds.count("train") == 1, kinds
    manifests = [ds.read_manifest(tmp_path / "out" / "tiny" / v) for v in ("1.0.0", "2.0.0")]
    weights = [m["generator"]["outputs"][0] for m in manifests]
    assert weights[0] == weights[1] and weights[0]["role"] == "weights" and len(weights[0]["sha256"]) == 64


# -- load once per worker, device slots --------------------------------------------------------
def test_generator_is_loaded_once_per_worker_process(tmp_path, toy_generators):
    path = write_recipe(tmp_path, generator=_toy(toy_generators), count={"train": 16}, shard_size=2)
    build_dataset(str(path))
    events = read_events(toy_generators)
    assert [e["event"] for e in events].count("load") == 1
    assert [e["event"] for e in events].count("start") == 8

    toy_generators.unlink()
    build_dataset(str(path), version="2.0.0", workers=2)
    events = read_events(toy_generators)
    loads = [e for e in events if e["event"] == "load"]
    shard_pids = {e["pid"] for e in events if e["event"] == "start"}
    assert len(loads) == len({e["pid"] for e in loads}) <= 2, "one load per worker process"
    assert shard_pids <= {e["pid"] for e in loads}


def test_a_gpu_generator_holds_one_device_slot_at_a_time(tmp_path, toy_generators):
    from prefect.client.orchestration import get_client

    path = write_recipe(tmp_path, generator=_toy(toy_generators, "toy-model", sleep=0.4), count={"train": 8},
                        shard_size=2, device="cpu")
    build_dataset(str(path), workers=2)
    events = read_events(toy_generators)
    starts = sorted((e["time"], e["shard"]) for e in events if e["event"] == "start")
    ends = {e["shard"]: e["time"] for e in events if e["event"] == "end"}
    assert len(starts) == 4 and len({e["pid"] for e in events if e["event"] == "start"}) == 2
    for (start, shard), (next_start, _) in zip(starts, starts[1:]):
        assert ends[shard] <= next_start, "two shards used the device at once"
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name("synthloom-device-cpu")
    assert limit.limit == 1


def test_device_option_is_validated(tmp_path, recipe_factory):
    with pytest.raises(RecipeError, match="'device'"):
        load_recipe(recipe_factory(device="tpu"))
    out = run_cli("build", str(recipe_factory()), "--device", "cuda:1")
    assert out.returncode == 1
    assert out.stderr.strip() == ("synthloom: error: device 'cuda:1': no CUDA device is visible here; "
                                  "use `device: cpu` or auto")


# -- generation fingerprint --------------------------------------------------------------------
def test_editing_description_or_gates_regenerates_nothing(tmp_path, cgal_meshes):
    args = dict(count={"train": 12}, shard_size=6)
    path = write_recipe(tmp_path, **args)
    assert run_cli("build", str(path), env={"SYNTHLOOM_CRASH_AT": "build:shards-done"}).returncode == -9
    staged = {p.name: p.stat().st_mtime_ns for p in (ds.staging_dir(load_recipe(path).version_dir()) / "data").iterdir()}
    path = write_recipe(tmp_path, description="edited while half built", **args)
    assert run_cli("build", str(path)).returncode == 0
    final = load_recipe(path).version_dir()
    assert {p.name: p.stat().st_mtime_ns for p in (final / "data").iterdir()} == staged

    # A committed version: new description, evaluators and gates update its metadata and re-evaluate it.
    path = write_recipe(tmp_path, description="a better description", reference=str(cgal_meshes),
                        evaluators=["diversity"], gates={"min_per_class": 1}, **args)
    out = run_cli("build", str(path))
    assert out.returncode == 0 and "nothing regenerated" in out.stdout, out.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (final / "data").iterdir()} == staged
    manifest = ds.read_manifest(final)
    assert manifest["recipe"]["description"] == "a better description"
    assert manifest["recipe_sha256"] == load_recipe(path).fingerprint()
    assert manifest["status"] == "accepted" and manifest["gates"]["passed"]
    assert "a better description" in (final / "README.md").read_text()

    path = write_recipe(tmp_path, **{**args, "seed": 99})  # a change that makes other rows is refused
    out = run_cli("build", str(path))
    assert out.returncode == 1 and "already built from a different recipe" in out.stderr


# -- what the Prefect UI shows -----------------------------------------------------------------
def test_prefect_ui_gets_named_shard_runs_logs_and_an_embedded_preview(tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, LogFilter, LogFilterFlowRunId

    path = write_recipe(tmp_path, name="uirun", count={"train": 8, "test": 4}, shard_size=4)
    # Grouping is decided by timing the first shard; a minimum task length of 1000 s makes it certain
    # on a loaded machine too.
    assert run_cli("build", str(path), env={"SYNTHLOOM_MIN_TASK_SECONDS": "1000"}).returncode == 0
    run = build_runs(path)[0]
    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [run.id]}))
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
        artifact = client.read_latest_artifacts()
    # The first shard (the recipe's YAML lists `test` first) runs alone and is timed; the rest are one group.
    names = sorted(t.name for t in tasks if t.name.startswith("shard"))
    assert names == ["shard-test-00000-of-00001", "shards-train-00000-to-00001-of-00002"], names
    assert "prepare-pointcloud" in {t.name for t in tasks}, [t.name for t in tasks]  # not "prepare-generator-dde"
    assert any("committed" in log.message for log in logs), [log.message for log in logs]
    summary = [a for a in artifact if a.key == "dataset-uirun-summary"][0]
    assert "](data:image/png;base64," in summary.data and "file://" not in summary.data


def test_synthloom_log_lines_reach_the_run_logs_in_the_prefect_ui(tmp_path, cgal_meshes):
    """What an evaluator is doing shows in the UI while it runs: synthloom's own loggers are Prefect
    extra loggers (settings.apply_defaults), and the runner logs each evaluator's start and end."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId, LogFilter, \
        LogFilterFlowRunId

    path = write_recipe(tmp_path, name="uilogs", count={"train": 8}, shard_size=8, reference=str(cgal_meshes),
                        evaluators=["diversity"])
    out = run_cli("build", str(path))
    assert out.returncode == 0, out.stderr
    run = build_runs(path)[0]
    with get_client(sync_client=True) as client:  # the evaluation is a subflow of the build
        runs = [run.id] + [r.id for r in client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run.id])))]
        messages = [log.message for log in client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=runs)))]
    assert len(runs) == 2, runs
    assert "evaluator 1/1 diversity on train: started" in messages, messages
    assert any(m.startswith("evaluator diversity: done in ") for m in messages), messages
    assert "evaluator" not in out.stdout + out.stderr  # the console stays quiet


def _flow_run_events(run_id, prefix: str = "prefect.flow-run.") -> list[str]:
    """The event names the server recorded for one flow run (events reach it asynchronously: wait for
    the run's final state event before reading)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        for _ in range(60):
            response = client.request("POST", "/events/filter", json={
                "filter": {"event": {"prefix": [prefix]}, "occurred": {"since": "2000-01-01T00:00:00Z"},
                           "resource": {"id": [f"prefect.flow-run.{run_id}"]}}, "limit": 50})
            names = [event["event"] for event in response.json()["events"]]
            if "prefect.flow-run.Completed" in names:
                return names
            time.sleep(0.5)
    raise AssertionError(f"no Completed event for flow run {run_id}: {names}")


def test_one_off_builds_send_no_heartbeats_unless_the_user_asks(tmp_path):
    """Prefect's heartbeat thread cost each build 0-1 s on exit; heartbeats only serve zombie-run
    automations, so a one-off build leaves them off, and a user's PREFECT_FLOWS_HEARTBEAT_FREQUENCY wins."""
    (tmp_path / "quiet").mkdir(), (tmp_path / "asked").mkdir()
    quiet = write_recipe(tmp_path / "quiet", name="quiet", count={"train": 4}, shard_size=4)
    asked = write_recipe(tmp_path / "asked", name="asked", count={"train": 4}, shard_size=4)
    assert run_cli("build", str(quiet)).returncode == 0
    assert run_cli("build", str(asked), env={"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30"}).returncode == 0
    quiet_events = _flow_run_events(build_runs(tmp_path / "quiet")[0].id)
    asked_events = _flow_run_events(build_runs(tmp_path / "asked")[0].id)
    assert "prefect.flow-run.heartbeat" not in quiet_events, quiet_events
    assert "prefect.flow-run.heartbeat" in asked_events, asked_events


# -- recipes as users write them ---------------------------------------------------------------
def test_a_killed_build_leaves_no_ephemeral_prefect_server_behind(tmp_path):
    """Without a Prefect server, a build starts Prefect's temporary one; SIGKILLed mid-build it used to leave
    that server running (a port, ~200 MB, and the command's stdout/stderr held open, so this very
    `subprocess.run` waited forever). Now its watchdog stops it (synthloom/ephemeral_guard.py)."""
    import os
    import re
    import socket

    recipe = write_recipe(tmp_path, count={"train": 4}, shard_size=4)
    # No server to reuse; Prefect's own INFO lines on the console (other tests' in-process runs may have left
    # PREFECT_LOGGING_* settings in this environment, which the subprocess would inherit).
    env = {key: value for key, value in os.environ.items()
           if key != "PREFECT_API_URL" and not key.startswith("PREFECT_LOGGING_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), SYNTHLOOM_CRASH_AT="build:shards-done")
    killed = subprocess.run([SYNTHLOOM, "-v", "build", str(recipe)], capture_output=True, text=True, timeout=240,
                            env=env)
    assert killed.returncode == -9, killed.stderr[-2000:]
    port = int(re.search(r"Starting temporary server on http://127\.0\.0\.1:(\d+)", killed.stderr)[1])
    deadline = time.monotonic() + 15
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                break  # nothing answers there any more
        assert time.monotonic() < deadline, f"the killed build's Prefect server on port {port} still answers"
        time.sleep(0.2)


def test_a_key_given_twice_is_refused_naming_both_lines(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("name: x\noutput: a\ngenerator: {kind: pointcloud}\ncount: {train: 4}\noutput: b\n")
    with pytest.raises(RecipeError, match=r"twice.yaml: line 5 is not valid YAML: key 'output' is given twice "
                                          r"\(lines 2 and 5\)"):
        load_recipe(path)


def test_bare_names_for_evaluators_and_labelers(recipe_factory, cgal_meshes):
    recipe = load_recipe(recipe_factory(evaluators=["fidelity", "cas"], reference=str(cgal_meshes)))
    from synthloom.registry import load

    # A bare name is {kind: name}, its params the evaluator's defaults, written out (what runs is recorded).
    defaults = {kind: load("evaluators", kind).Params().model_dump(mode="json") for kind in ("fidelity", "cas")}
    assert [(e.kind, e.params) for e in recipe.evaluators] == [("fidelity", defaults["fidelity"]),
                                                               ("cas", defaults["cas"])]
    assert defaults["cas"]["classifier"] == "logreg"
    with pytest.raises(RecipeError, match=r"unknown labeler\(s\) \['owl'\]"):
        load_recipe(recipe_factory(labelers=["owl"]))


def test_misspelled_split_and_non_utf8_recipes(recipe_factory, tmp_path):
    with pytest.raises(RecipeError, match="unknown split 'trian'; did you mean 'train'"):
        load_recipe(recipe_factory(count={"trian": 8}))
    assert load_recipe(recipe_factory(count={"holdout": 8}, custom_splits=["holdout"])).count == {"holdout": 8}
    for name, data in {"garbage.yaml": bytes(range(128, 256)),
                       "utf16.yaml": "name: x\n".encode("utf-16")}.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(RecipeError, match=f"{name}: not a UTF-8 YAML file"):
            load_recipe(tmp_path / name)


def test_absurd_counts_are_refused_up_front_with_the_estimated_size(recipe_factory):
    from synthloom.flows.build import plan_build

    with pytest.raises(RecipeError, match=r"1,000,000,000,000 samples in shards of 12 make [\d,]+ shards"):
        plan_build(str(recipe_factory(count={"train": 10**12})))
    with pytest.raises(RecipeError, match=r"samples need about [\d.,]+ PB \(~3.7 KB each\) but .* free"):
        plan_build(str(recipe_factory(count={"train": 10**12}, shard_size=10**8)))


def test_bad_generator_input_fails_before_any_flow_run(recipe_factory, copy_meshes, tmp_path):
    meshes = copy_meshes()
    (tmp_path / "empty").mkdir()
    (meshes / "sphere" / "broken.off").write_text("OFF\n3 1 0\n0 0 0\n")
    cases = {
        "unknown generator param 'num_pts'": {"kind": "pointcloud", "params": {"num_pts": 3}},
        "generator param 'num_points'": {"kind": "pointcloud", "params": {"num_points": 0}},
        "generator param 'scale'": {"kind": "pointcloud", "params": {"scale": [2, 1]}},
        "unknown generator 'pointclouds'": {"kind": "pointclouds"},
        "mesh folder not found": {"kind": "pointcloud", "params": {"source": str(tmp_path / "none")}},
        "no class sub-folders": {"kind": "pointcloud", "params": {"source": str(tmp_path / "empty")}},
        "broken.off: cannot read mesh": {"kind": "pointcloud", "params": {"source": str(meshes)}},
    }
    for message, generator in cases.items():
        path = recipe_factory(generator=generator)
        out = run_cli("build", str(path))
        assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert message in out.stderr, (message, out.stderr)
        assert not list((tmp_path / "out").glob("*/.staging-*")), message
    assert build_runs(tmp_path) == [], "no flow run was started"
