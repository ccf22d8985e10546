"""A tiny worker generator for the tests: its shards are written by tests/toy_worker.py, run by ANOTHER
interpreter (a venv with numpy<2, like the render environment), and validated by the main process."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from synthloom.features import Array, BoundingBoxes, ClassLabel, Features, Image, Text, Value
from synthloom.generators.base import BuildContext, Prepared, input_fingerprint
from synthloom.generators.worker import WorkerGenerator, WorkerParams

SIZE = 8
CLASSES = ["left", "right"]


class ToyWorkerParams(WorkerParams):
    # What the worker should do wrong (the tests' failure cases), or nothing.
    fault: Literal["none", "wrong_shape", "wrong_dtype", "missing_column", "out_of_range", "bad_box", "crash",
                   "hang", "report", "too_few_rows"] = "none"
    timeout_s: float = 60.0


class ToyWorkerGenerator(WorkerGenerator):
    name = "toyworker"
    Params = ToyWorkerParams
    params: ToyWorkerParams
    worker_script = Path(__file__).resolve().parent / "toy_worker.py"
    worker_packages = ("numpy",)
    python_env_var = "SYNTHLOOM_TOY_WORKER_PYTHON"
    install_hint = "create a venv with numpy and set SYNTHLOOM_TOY_WORKER_PYTHON to its python"

    def check_inputs(self, ctx: BuildContext) -> None:
        self.worker_environment()

    def prepare(self, ctx: BuildContext) -> Prepared:
        worker = self.worker_provenance()
        self.prepared = Prepared(generator=self.name, classes=CLASSES, info={"worker": worker},
                                 input_fingerprint=input_fingerprint(self.name, self.params, self.code_version, [],
                                                                     worker=worker["packages"]))
        return self.prepared

    def features(self) -> Features:
        return Features({"image": Image(), "depth": Array((SIZE, SIZE), "float32"), "label": ClassLabel(CLASSES),
                         "objects": BoundingBoxes(tuple(CLASSES)), "seed": Value("int64"), "params": Text()})

    def value_ranges(self):
        return {"depth": (0.0, 10.0)}
