"""The worker side of synthloom's worker-generator protocol (see `synthloom.generators.worker`).

This file runs inside ANOTHER Python environment (e.g. `.venv-render` with bpy), where synthloom is not
installed: it may import only the standard library and numpy. The main process puts this folder on the
worker's PYTHONPATH, so a worker script does:

    import synthloom_worker

    def render(request, writer):
        for offset, seed in enumerate(request["seeds"]):
            writer.add({"image": uint8_array, "depth": float32_array, "label": 2, "params": "{...}"})

    if __name__ == "__main__":
        synthloom_worker.main(render, packages=("bpy", "blenderproc"))

Protocol (version 1):
- argv[1] is `request.json`: {"protocol", "generator", "params", "prepared", "shard", "seeds", "out_dir",
  "features"}.
- The worker writes each numpy array of a row as `<out_dir>/<row>-<column>.npy` (`np.save`, no pickle)
  and replaces it in the row by {"$array": file name}; a `bytes` value (an encoded PNG) becomes
  {"$file": file name}. Everything else must be JSON.
- When every row is written it writes `<out_dir>/rows.json` = {"protocol", "rows", "environment"}
  atomically (a temporary name, then a rename): a crashed worker leaves no rows.json.
- On a failure it can explain (bad input, a camera that sees nothing), it writes `<out_dir>/error.json`
  = {"message": one line} and exits with status 3; the main process raises that line.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import traceback
from importlib.metadata import PackageNotFoundError, version

import numpy as np

PROTOCOL = 1
ROWS_FILE = "rows.json"
ERROR_FILE = "error.json"
EXIT_REPORTED = 3


class WorkerFailure(Exception):
    """A failure the worker explains in one line (written to error.json), not a crash."""


def environment(packages: tuple[str, ...] = ()) -> dict:
    """The worker's interpreter and the versions of the packages that make its output (provenance)."""
    found = {}
    for name in ("numpy", *packages):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return {"python": platform.python_version(), "executable": sys.executable, "packages": found}


class ShardWriter:
    """Writes a shard's rows as the protocol says: arrays to .npy files, the rest to rows.json."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.rows: list[dict] = []

    def _store(self, row_index: int, column: str, value):
        if isinstance(value, np.ndarray):
            name = f"{row_index:05d}-{column}.npy"
            np.save(os.path.join(self.out_dir, name), value, allow_pickle=False)
            return {"$array": name}
        if isinstance(value, (bytes, bytearray)):
            name = f"{row_index:05d}-{column}.bin"
            with open(os.path.join(self.out_dir, name), "wb") as handle:
                handle.write(value)
            return {"$file": name}
        if isinstance(value, np.generic):
            return value.item()
        return value

    def add(self, row: dict) -> None:
        index = len(self.rows)
        self.rows.append({column: self._store(index, column, value) for column, value in row.items()})

    def finish(self, env: dict) -> None:
        path = os.path.join(self.out_dir, ROWS_FILE)
        with open(path + ".tmp", "w") as handle:
            json.dump({"protocol": PROTOCOL, "rows": self.rows, "environment": env}, handle)
        os.replace(path + ".tmp", path)


def read_request(path: str) -> dict:
    with open(path) as handle:
        request = json.load(handle)
    if request.get("protocol") != PROTOCOL:
        raise WorkerFailure(f"{path}: protocol {request.get('protocol')!r}, this worker speaks {PROTOCOL}")
    return request


def report(out_dir: str, message: str) -> None:
    with open(os.path.join(out_dir, ERROR_FILE), "w") as handle:
        json.dump({"message": " ".join(str(message).split())}, handle)


def main(produce, packages: tuple[str, ...] = ()) -> None:
    """Run `produce(request, writer)` on the request named by argv[1]; exit 0, or 3 with error.json."""
    if len(sys.argv) == 2 and sys.argv[1] == "--environment":
        print(json.dumps(environment(packages)))
        return
    request = read_request(sys.argv[1])
    writer = ShardWriter(request["out_dir"])
    try:
        produce(request, writer)
        writer.finish(environment(packages))
        code = 0
    except WorkerFailure as failure:
        report(request["out_dir"], str(failure))
        code = EXIT_REPORTED
    except Exception:
        traceback.print_exc()  # the main process quotes the last line of the output
        code = 1
    # os._exit: embedded interpreters (bpy) can crash while tearing down; the result is on disk already.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
