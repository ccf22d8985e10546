"""The worker side of tests/toy_worker_generator.py: runs in another interpreter with numpy only."""

import json
import time

import numpy as np

import synthloom_worker

SIZE = 8


def produce(request, writer):
    fault = request["params"]["fault"]
    seeds = request["seeds"][:-1] if fault == "too_few_rows" else request["seeds"]
    if fault == "hang":
        time.sleep(3600)
    if fault == "report":
        raise synthloom_worker.WorkerFailure("camera saw nothing after 3 tries (seed %d)" % seeds[0])
    for offset, seed in enumerate(seeds):
        if fault == "crash" and offset == 1:
            raise ZeroDivisionError("toy worker divided by zero")
        rng = np.random.default_rng(seed)
        depth = (rng.random((SIZE, SIZE)) * 5).astype(np.float32)
        image = (depth[:, :, None] * 50).astype(np.uint8).repeat(3, axis=2)
        label = (request["shard"]["start"] + offset) % 2
        box = [1.0, 2.0, 3.0, 4.0] if fault != "bad_box" else [6.0, 6.0, 5.0, 5.0]
        row = {"image": image, "depth": depth, "label": label, "seed": seed,
               "objects": [{"bbox": box, "category": label, "score": None}],
               "params": json.dumps({"numpy": np.__version__})}
        if fault == "wrong_shape":
            row["depth"] = depth[:4, :4]
        elif fault == "wrong_dtype":
            row["depth"] = depth.astype(np.float64)
        elif fault == "missing_column":
            del row["label"]
        elif fault == "out_of_range":
            row["depth"] = depth + 100
        writer.add(row)


if __name__ == "__main__":
    synthloom_worker.main(produce, packages=("numpy",))
