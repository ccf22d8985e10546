"""Point clouds as typed features: what plain Hugging Face `datasets` and `synthloom.load` read.

The same clouds are written twice: with the layout synthloom used before typed features
(`list<fixed_size_list<float32, 3>>`, no feature metadata) and through today's writer (`Points`,
declared to `datasets` as `Array2D((num_points, 3))`). Each is read for one epoch through a torch
DataLoader (batch 32, shuffled) by `datasets.load_dataset("parquet", ...).with_format("torch")`
(the one-time Arrow cache conversion is not timed) and by `synthloom.load` (opening included).
`datasets` stays imported, so synthloom reads the typed column as HF's extension type: the worst case.

    python benchmarks/bench_hf_loading.py [--clouds 480] [--points 1024]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).parent))
from _common import best_of, environment  # noqa: E402

import synthloom  # noqa: E402
from synthloom import dataset as ds  # noqa: E402
from synthloom.features import ClassLabel, Features, Points  # noqa: E402


def legacy_table(rows: list[dict], points: int) -> pa.Table:
    """The pre-features layout, built the way the old writer did (no metadata)."""
    flat = np.concatenate([r["points"] for r in rows]).reshape(-1)
    inner = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), 3)
    offsets = pa.array(np.arange(len(rows) + 1, dtype=np.int32) * points)
    return pa.table({"id": [r["id"] for r in rows], "split": ["train"] * len(rows),
                     "label": pa.array([r["label"] for r in rows], pa.int64()),
                     "points": pa.ListArray.from_arrays(offsets, inner)})


def write(root: Path, clouds: int, points: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    classes = [f"c{i}" for i in range(6)]
    rows = [{"id": f"train-{i:08d}", "split": "train", "label": i % 6,
             "points": rng.standard_normal((points, 3)).astype(np.float32)} for i in range(clouds)]
    typed = ds.dataset_schema(Features({"label": ClassLabel(classes), "points": Points(3, "float32", size=points)}))
    dirs = []
    for name, table in (("legacy", legacy_table(rows, points)),
                        ("typed", ds.rows_to_table([{**r, "generator": "bench", "recipe_sha256": "x"} for r in rows],
                                                   typed))):
        version_dir = root / name / "1.0.0"
        record = ds.write_shard(table, version_dir / "data" / "train-00000-of-00001.parquet")
        ds.write_json_atomic(version_dir / "manifest.json", {"shards": [{**record, "split": "train"}],
                                                              "classes": classes})
        dirs.append(version_dir)
    return dirs[0], dirs[1]


def epoch(dataset, collate=None) -> int:
    seen = 0
    for batch in DataLoader(dataset, batch_size=32, shuffle=True, collate_fn=collate,
                            generator=torch.Generator().manual_seed(0)):
        assert batch["points"].shape[1:] == (dataset[0]["points"].shape)
        seen += len(batch["points"])
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clouds", type=int, default=480)
    parser.add_argument("--points", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    import datasets

    with tempfile.TemporaryDirectory() as tmp:
        legacy, typed = write(Path(tmp), args.clouds, args.points)
        results = {}
        for name, version_dir in (("legacy", legacy), ("typed", typed)):
            hf = datasets.load_dataset("parquet", data_dir=str(version_dir / "data"), split="train",
                                       cache_dir=str(Path(tmp) / f"hf-{name}")).with_format("torch", columns=["points",
                                                                                                      "label"])
            results[f"hf {name}"] = (type(hf.features["points"]).__name__,
                                     best_of(args.repeats, lambda: epoch(hf)))
            results[f"synthloom {name}"] = ("", best_of(args.repeats, lambda: epoch(
                synthloom.load(version_dir, columns=["points", "label"]), synthloom.collate_fn)))
    print(environment() + f", datasets {datasets.__version__}")
    print(f"{args.clouds} clouds x {args.points} points, DataLoader batch 32 shuffled, best of {args.repeats}")
    for key, (feature, seconds) in results.items():
        print(f"{key:18s} {feature:8s} {args.clouds / seconds:10,.0f} samples/s")
    speed = {k: args.clouds / v[1] for k, v in results.items()}
    print(f"ratio datasets typed/legacy: {speed['hf typed'] / speed['hf legacy']:.1f}")
    print(f"ratio synthloom.load typed/legacy: {speed['synthloom typed'] / speed['synthloom legacy']:.2f}")


if __name__ == "__main__":
    main()
