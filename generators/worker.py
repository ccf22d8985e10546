"""Worker generators: a shard made by a process running in ANOTHER Python environment.

Why another environment: some generators' dependencies cannot share synthloom's. The BlenderProc
renderer is the first: `bpy==4.2.0` (the pip build of Blender) is compiled against numpy 1.x and needs
`numpy<2`, while pandas 3.x (and the rest of the main environment) needs `numpy>=2.0.2`; and BlenderProc
2.8 does not work with `bpy` 5.x (`scene.node_tree` is gone), so a newer bpy is no way out either. So the
renderer lives in its own environment (`.venv-render`, `make render-env`), as BlenderProc's own design
runs scripts inside Blender's Python and Kubric runs one worker per shard.

The contract, for any generator of this kind:

1. The main process writes a shard request (`request.json`: params, prepared classes/assets/info, the
   shard and its sample seeds, the output folder, the declared features) and starts ONE worker process
   per shard (`<interpreter> <worker_script> request.json`). One process per shard also bounds memory:
   BlenderProc's memory grows over long loops, and a fresh process returns all of it to the system.
2. The worker (stdlib + numpy only on its side: `workers/synthloom_worker.py`) writes the shard's arrays
   (`.npy`) and encoded files, then `rows.json` last.
3. The main process validates every row against the declared features (required columns, shape, dtype,
   value ranges, box bounds), naming the file and column of a bad value, and yields the rows for the
   build flow to encode and commit. A crash, a hang (timeout) or an explained failure (`error.json`)
   is one line naming the shard.
4. The worker's interpreter version and the versions of its packages (e.g. bpy, blenderproc) go into
   provenance (`Prepared.info["worker"]`, hence the manifest) and into the input fingerprint: another bpy
   may render other pixels.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any, ClassVar, Iterable

import numpy as np
from pydantic import Field

from synthloom.errors import FeatureError, GeneratorError
from synthloom.features import Array, BoundingBoxes, ClassLabel, Features, Image, Points, decode_image

from .base import Generator, GeneratorParams, ShardSpec

WORKERS_DIR = Path(__file__).resolve().parent / "workers"  # on the worker's PYTHONPATH: synthloom_worker.py
PROTOCOL = 1
ROWS_FILE = "rows.json"
ERROR_FILE = "error.json"
EXIT_REPORTED = 3
REPO_ROOT = Path(__file__).resolve().parent.parent  # the source checkout, for an editable install


class WorkerError(GeneratorError):
    """A worker process crashed, hung, or wrote rows that do not match the declared features."""


class WorkerParams(GeneratorParams):
    python: str | None = Field(default=None, description="The worker environment's interpreter; default: the "
                                                          "generator's environment variable, then its venv folder.")
    timeout_s: float = Field(default=900.0, gt=0, description="Wall-clock limit of one shard's worker process.")


def _worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The worker's environment: ours, minus what would make it import the main environment's packages."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    env["PYTHONPATH"] = str(WORKERS_DIR)
    env["PYTHONNOUSERSITE"] = "1"
    env.update(extra or {})
    return env


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def probe_environment(python: Path, script: Path, timeout: float = 60.0) -> dict[str, Any]:
    """The worker environment's interpreter and package versions, asked without importing the heavy
    packages (`script --environment` reads package metadata only)."""
    try:
        done = subprocess.run([str(python), str(script), "--environment"], capture_output=True, text=True,
                              timeout=timeout, env=_worker_env())
    except (OSError, subprocess.TimeoutExpired) as error:
        raise WorkerError(f"{python}: cannot run the worker interpreter ({type(error).__name__}: {error})") from None
    if done.returncode != 0:
        raise WorkerError(f"{python} {script.name} --environment failed: {_last_line(done.stderr)}")
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise WorkerError(f"{python} {script.name} --environment printed no JSON: {_last_line(done.stdout)}") from None


class WorkerGenerator(Generator):
    """Base of generators whose shards a worker process in another environment makes.

    Subclasses set `worker_script` (run by the worker interpreter), `worker_packages` (whose versions
    go into provenance, and which must be installed), `python_env_var`/`default_venv` (where the
    interpreter is found) and `install_hint` (the one line a user needs when it is missing), and may
    override `worker_request` (extra request fields), `value_ranges` and `check_row`.
    """

    worker_script: ClassVar[Path]
    worker_packages: ClassVar[tuple[str, ...]] = ()
    python_env_var: ClassVar[str] = "SYNTHLOOM_WORKER_PYTHON"
    default_venv: ClassVar[str | None] = None
    install_hint: ClassVar[str] = "set generator.params.python to an interpreter that has the worker's packages"
    params: WorkerParams

    # -- the worker environment -----------------------------------------------------------------
    def interpreter(self) -> Path:
        """params.python, else $<python_env_var>, else <repo>/<default_venv>/bin/python, else ./<default_venv>."""
        if self.params.python:
            return Path(self.params.python).expanduser()
        if os.environ.get(self.python_env_var):
            return Path(os.environ[self.python_env_var]).expanduser()
        if self.default_venv:
            for root in (REPO_ROOT, Path.cwd()):
                candidate = root / self.default_venv / "bin" / "python"
                if candidate.exists():
                    return candidate
            return REPO_ROOT / self.default_venv / "bin" / "python"
        raise WorkerError(f"{self.name}: no worker interpreter; {self.install_hint}")

    def worker_environment(self) -> dict[str, Any]:
        """Probe the interpreter once per generator object; missing interpreter or packages: one line."""
        if getattr(self, "_environment", None) is None:
            python = self.interpreter()
            if not python.exists():
                raise WorkerError(f"{self.name}: worker interpreter {python} not found; {self.install_hint}")
            environment = probe_environment(python, self.worker_script)
            missing = [name for name in self.worker_packages if not environment["packages"].get(name)]
            if missing:
                raise WorkerError(f"{self.name}: {', '.join(missing)} not installed for {python}; {self.install_hint}")
            self._environment = environment
        return self._environment

    def worker_provenance(self) -> dict[str, Any]:
        """What goes into Prepared.info["worker"] and the input fingerprint."""
        environment = self.worker_environment()
        return {"python": environment["python"], "executable": environment["executable"],
                "packages": environment["packages"], "protocol": PROTOCOL}

    # -- one shard ------------------------------------------------------------------------------
    def worker_request(self, shard: ShardSpec) -> dict[str, Any]:
        """Extra request fields a subclass needs (e.g. mesh files); merged into the request."""
        return {}

    def value_ranges(self) -> dict[str, tuple[float, float]]:
        """column -> (low, high): every value of the column's arrays must lie inside (NaN is refused)."""
        return {}

    def check_row(self, row: dict[str, Any], where: str) -> None:
        """Generator-specific checks of one decoded row; raise WorkerError naming `where`."""

    def generate(self, shard: ShardSpec) -> Iterable[dict[str, Any]]:
        if self.prepared is None:
            raise GeneratorError(f"{self.name}: generate() called before load()")
        features = self.features()
        work = Path(tempfile.mkdtemp(prefix=f"synthloom-{self.name}-{shard.split}-{shard.index:05d}-"))
        try:
            request = {
                "protocol": PROTOCOL, "generator": self.name,
                "params": self.params.model_dump(mode="json"),
                "prepared": {"classes": self.prepared.classes, "info": self.prepared.info,
                             "assets": [a.model_dump() for a in self.prepared.assets]},
                "shard": {"split": shard.split, "index": shard.index, "num_shards": shard.num_shards,
                          "start": shard.start, "size": shard.size, "root_seed": shard.root_seed},
                "seeds": [shard.sample_seed(offset) for offset in range(shard.size)],
                "out_dir": str(work), "features": features.to_json(), "device": self.device,
                **self.worker_request(shard),
            }
            (work / "request.json").write_text(json.dumps(request))
            payload = self._run_worker(shard, work)
            rows = self.validate_rows(payload, features, work, shard)
        except WorkerError:
            raise  # keep the folder: its worker.log and files are what the error names
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        shutil.rmtree(work, ignore_errors=True)
        yield from rows

    def _shard_name(self, shard: ShardSpec) -> str:
        return f"{self.name}: shard {shard.split}-{shard.index:05d}"

    def _run_worker(self, shard: ShardSpec, work: Path) -> dict[str, Any]:
        python = self.interpreter()
        command = [str(python), str(self.worker_script), str(work / "request.json")]
        name = self._shard_name(shard)
        with open(work / "worker.log", "w+") as log:
            try:
                # Own session: on a timeout the whole process group (the renderer's threads and any
                # children) is killed, not only the interpreter.
                process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=_worker_env(),
                                           start_new_session=True)
            except OSError as error:
                raise WorkerError(f"{name}: cannot start {python} ({error}); {self.install_hint}") from None
            try:
                code = process.wait(timeout=self.params.timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                raise WorkerError(f"{name}: worker gave no result within timeout_s={self.params.timeout_s:g} s "
                                  f"and was killed ({python} {self.worker_script.name})") from None
            except BaseException:
                os.killpg(process.pid, signal.SIGKILL)  # interrupted: never leave a renderer behind
                process.wait()
                raise
            log.seek(0)
            output = log.read()
        if code == EXIT_REPORTED and (work / ERROR_FILE).exists():
            message = json.loads((work / ERROR_FILE).read_text()).get("message", "?")
            raise WorkerError(f"{name}: {message}")
        if code != 0:
            how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
            raise WorkerError(f"{name}: worker crashed ({how}): {_last_line(output)} (log: {work / 'worker.log'})")
        rows_file = work / ROWS_FILE
        if not rows_file.exists():
            raise WorkerError(f"{name}: worker exited 0 without writing {ROWS_FILE}")
        try:
            payload = json.loads(rows_file.read_text())
        except ValueError as error:
            raise WorkerError(f"{name}: {rows_file.name} is not JSON ({error})") from None
        return payload

    # -- validation -----------------------------------------------------------------------------
    def validate_rows(self, payload: dict[str, Any], features: Features, work: Path,
                      shard: ShardSpec) -> list[dict[str, Any]]:
        """Rows with arrays loaded, each value checked against its declared feature. Raises WorkerError
        naming the row, column and file of the first bad value."""
        name = self._shard_name(shard)
        if payload.get("protocol") != PROTOCOL or not isinstance(payload.get("rows"), list):
            raise WorkerError(f"{name}: {ROWS_FILE} is not protocol {PROTOCOL} (needs 'protocol' and a 'rows' list)")
        environment = payload.get("environment") or {}
        expected = (self.prepared.info or {}).get("worker", {}).get("packages")
        if expected is not None and environment.get("packages") != expected:
            raise WorkerError(f"{name}: the worker environment changed since prepare "
                              f"({environment.get('packages')} != {expected}); rebuild")
        rows = payload["rows"]
        if len(rows) != shard.size:
            raise WorkerError(f"{name}: worker wrote {len(rows)} rows, the shard has {shard.size}")
        ranges = self.value_ranges()
        decoded = []
        for index, raw in enumerate(rows):
            where = f"{name} row {index}"
            if not isinstance(raw, dict):
                raise WorkerError(f"{where}: not a JSON object")
            missing = [column for column in features if column not in raw]
            unknown = [column for column in raw if column not in features]
            if missing or unknown:
                raise WorkerError(f"{where}: " + "; ".join(
                    ([f"missing required column(s) {missing}"] if missing else []) +
                    ([f"undeclared column(s) {unknown}"] if unknown else [])))
            row = {column: self._decode_value(raw[column], features[column], work, f"{where} column '{column}'",
                                              ranges.get(column))
                   for column in features}
            self._check_boxes_inside(row, features, where)
            self.check_row(row, where)
            decoded.append(row)
        return decoded

    def _decode_value(self, value: Any, feature, work: Path, where: str, value_range) -> Any:
        if isinstance(value, dict) and ("$array" in value or "$file" in value):
            file = self._worker_file(work, value.get("$array") or value.get("$file"), where)
            where = f"{where} ({file})"
            if "$array" in value:
                try:
                    value = np.load(file, allow_pickle=False)
                except Exception as error:  # numpy raises several types for a bad file
                    raise WorkerError(f"{where}: unreadable array ({type(error).__name__}: {error})") from None
            else:
                value = file.read_bytes()
        try:
            if isinstance(feature, (Array, Points)):
                self._check_array(value, feature, where, value_range)
            elif isinstance(feature, Image):
                self._check_image(value, where)
            elif isinstance(feature, BoundingBoxes):
                self._check_boxes(value, feature, where)
            elif isinstance(feature, ClassLabel) and value is not None:
                feature.index(value)
            else:
                feature.encode([value])  # scalars, text: the feature's own check
        except FeatureError as error:
            raise WorkerError(f"{where}: {error}") from None
        return value

    @staticmethod
    def _check_boxes_inside(row: dict[str, Any], features: Features, where: str) -> None:
        """Boxes must lie inside the row's image (COCO xywh in pixels), and have a positive area."""
        images, boxes = features.columns_of(Image), features.columns_of(BoundingBoxes)
        if not images or not boxes or row[images[0]] is None:
            return
        image = row[images[0]]
        height, width = (decode_image(bytes(image)) if isinstance(image, (bytes, bytearray))
                         else np.asarray(image)).shape[:2]
        for column in boxes:
            for k, item in enumerate(row[column] or []):
                x, y, w, h = item["bbox"]
                if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > width + 1e-3 or y + h > height + 1e-3:
                    raise WorkerError(f"{where} column '{column}' object {k}: bbox {item['bbox']} is empty or "
                                      f"outside the {width}x{height} image")

    @staticmethod
    def _worker_file(work: Path, name: Any, where: str) -> Path:
        file = (work / str(name)).resolve()
        if file.parent != work.resolve():  # a worker names only files of its own folder
            raise WorkerError(f"{where}: file {name!r} is outside the worker's output folder")
        if not file.exists():
            raise WorkerError(f"{where}: file {file} named in {ROWS_FILE} does not exist")
        return file

    @staticmethod
    def _check_array(value: Any, feature: Array | Points, where: str, value_range) -> None:
        if value is None:
            return
        if not isinstance(value, np.ndarray):
            raise WorkerError(f"{where}: expected an array file ($array), got {type(value).__name__}")
        if value.dtype != np.dtype(feature.dtype):  # no silent casts: a float64 depth is a worker bug
            raise WorkerError(f"{where}: dtype {value.dtype}, declared {feature.dtype}")
        shape = feature.shape
        if value.ndim != len(shape) or any(d is not None and d != s for d, s in zip(shape, value.shape)):
            declared = "(" + ", ".join("n" if d is None else str(d) for d in shape) + ")"
            raise WorkerError(f"{where}: shape {value.shape}, declared {declared}")
        if value_range is not None and value.size:
            low, high = value_range
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                raise WorkerError(f"{where}: non-finite values (declared range [{low}, {high}])")
            if value.min() < low or value.max() > high:
                raise WorkerError(f"{where}: values in [{value.min()}, {value.max()}] outside [{low}, {high}]")

    @staticmethod
    def _check_image(value: Any, where: str) -> None:
        if value is None:
            return
        if isinstance(value, (bytes, bytearray)):
            decode_image(bytes(value))  # raises FeatureError on bytes that are not an image
            return
        array = np.asarray(value)
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] not in (1, 3, 4):
            raise WorkerError(f"{where}: image must be uint8 (H, W, 1|3|4), got {array.dtype} {array.shape}")

    @staticmethod
    def _check_boxes(value: Any, feature: BoundingBoxes, where: str) -> None:
        if value is None:
            return
        if not isinstance(value, list):
            raise WorkerError(f"{where}: expected a list of objects, got {type(value).__name__}")
        feature.encode([value])  # finite, non-negative sizes, known categories


__all__ = ["WorkerError", "WorkerGenerator", "WorkerParams", "probe_environment", "WORKERS_DIR"]
