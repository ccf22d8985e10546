"""Small real generators for testing the generator lifecycle: they log what happens (prepare, train,
load, shard start/end) to a file, so tests can count loads per process and see task overlap.

Registered per test with `synthloom.registry.register`, which worker processes see too (they need
this folder on PYTHONPATH, which the `toy_generators` fixture sets).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from synthloom.generators.base import Asset, BuildContext, Generator, GeneratorParams, Prepared, ShardSpec, \
    input_fingerprint
from synthloom.features import ClassLabel, Features, Value
from synthloom.models import load_pretrained_state, save_pretrained

# torch is imported where the model generator uses it: cluster workers of the plain toy generator start
# without it (2.5 s of imports per worker process here).


class ToyParams(GeneratorParams):
    events: str  # a file each lifecycle event is appended to, as one JSON line
    sleep: float = 0.0  # seconds per shard, to make overlap visible
    fail_on_shard: int | None = None
    hold_while: str | None = None  # shards wait while this file exists: a build that is surely running
    # The worker process generating this shard kills itself (SIGKILL, mid-shard) the first time: a lost
    # cluster worker. The marker file records that it did, so the retry generates the shard.
    kill_on_shard: int | None = None
    kill_marker: str | None = None


def log_event(path: str, kind: str, **fields: Any) -> None:
    with open(path, "a") as handle:
        handle.write(json.dumps({"event": kind, "pid": os.getpid(), "time": time.time(), **fields}) + "\n")


def read_events(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


class ToyGenerator(Generator):
    """Rows of (label, value): no model, counts loads."""

    name = "toy"
    Params = ToyParams

    def features(self) -> Features:
        return Features({"label": ClassLabel(names=["a", "b"]), "value": Value("float64"), "seed": Value("int64")})

    def prepare(self, ctx: BuildContext) -> Prepared:
        log_event(self.params.events, "prepare")
        return Prepared(generator=self.name, classes=["a", "b"],
                        input_fingerprint=input_fingerprint(self.name, self.params, self.code_version, []))

    def load(self, prepared: Prepared, device: str = "cpu") -> None:
        super().load(prepared, device)
        log_event(self.params.events, "load", device=device)

    def generate(self, shard: ShardSpec) -> Iterable[dict[str, Any]]:
        if shard.index == self.params.fail_on_shard:
            raise RuntimeError(f"toy generator fails on shard {shard.index}")
        log_event(self.params.events, "start", shard=f"{shard.split}-{shard.index}")
        if shard.index == self.params.kill_on_shard and not Path(self.params.kill_marker).exists():
            Path(self.params.kill_marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(self.params.sleep)
        while self.params.hold_while and Path(self.params.hold_while).exists():
            time.sleep(0.05)
        for offset in range(shard.size):
            seed = shard.sample_seed(offset)
            yield {"label": (shard.start + offset) % 2, "value": float(np.random.default_rng(seed).normal()),
                   "seed": seed}
        log_event(self.params.events, "end", shard=f"{shard.split}-{shard.index}")


class ToyModelGenerator(ToyGenerator):
    """Trains a tiny linear model in `prepare` through the model store and declares a GPU: what the
    DCGAN and diffusion generators do, at test size."""

    name = "toy-model"
    resources = {"gpu": 1}

    def prepare(self, ctx: BuildContext) -> Prepared:
        import torch

        def train(folder: Path) -> None:
            log_event(self.params.events, "train")
            torch.manual_seed(0)
            model = torch.nn.Linear(4, 2)
            save_pretrained(model, {"in_features": 4, "out_features": 2}, folder)

        fingerprint = input_fingerprint(self.name, self.params.model_copy(update={"events": ""}),
                                        self.code_version, [])
        stored = ctx.models.get_or_build({"generator": self.name, "inputs": fingerprint}, train)
        return Prepared(generator=self.name, classes=["a", "b"], input_fingerprint=fingerprint,
                        outputs=[Asset(path=str(stored.path), sha256=stored.sha256, role="weights")])

    def load(self, prepared: Prepared, device: str = "cpu") -> None:
        import torch

        super().load(prepared, device)
        log_event(self.params.events, "model", weights=prepared.outputs[0].path)  # which copy of the weights
        config, state = load_pretrained_state(prepared.outputs[0].path)
        self.model = torch.nn.Linear(config["in_features"], config["out_features"])
        self.model.load_state_dict(state)

    def generate(self, shard: ShardSpec) -> Iterable[dict[str, Any]]:
        import torch

        for row in super().generate(shard):
            generator = torch.Generator().manual_seed(row["seed"])  # per-sample generator from the sample seed
            with torch.no_grad():
                logits = self.model(torch.randn(1, 4, generator=generator))
            row["label"] = int(logits.argmax())
            yield row
