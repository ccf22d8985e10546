"""Reading a dataset in a training loop: `synthloom.load` vs a folder of .npy files.

The same clouds are written once as a synthloom dataset (through the same writer the
build flow uses) and once as one `.npy` per cloud. Each side is then read through a
torch DataLoader (batch 32, shuffled, one epoch); our timing includes opening the
Parquet shards. Prints samples/s for both and the ratio ours/npy.

    python benchmarks/bench_loading.py [--clouds 3000] [--points 1024]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).parent))
from _common import best_of, environment  # noqa: E402

import synthloom  # noqa: E402
from synthloom import dataset as ds  # noqa: E402
from synthloom.generators.base import BuildContext, ShardSpec  # noqa: E402
from synthloom.generators.pointcloud import PointCloudGenerator  # noqa: E402


class NpyFolder(Dataset):
    """The baseline: what a user without synthloom typically writes."""

    def __init__(self, folder: Path):
        self.files = sorted(folder.glob("*.npy"))

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        label = int(self.files[i].stem.split("_")[1])
        return {"points": torch.from_numpy(np.load(self.files[i])), "label": torch.tensor(label)}


def collate(batch):
    return torch.stack([b["points"] for b in batch]), torch.stack([b["label"] for b in batch])


def write_both(root: Path, clouds: int, points: int) -> tuple[Path, Path]:
    generator = PointCloudGenerator({"num_points": points, "rotation": "so3"})
    generator.prepare(BuildContext(cache_dir=root))
    schema = ds.dataset_schema(generator.features())
    version_dir, npy_dir = root / "synth" / "1.0.0", root / "npy"
    npy_dir.mkdir(parents=True)
    shard_size = 500
    specs = [ShardSpec("train", i, -(-clouds // shard_size), i * shard_size,
                       min(shard_size, clouds - i * shard_size), 0) for i in range(-(-clouds // shard_size))]
    records = []
    for spec in specs:
        rows = []
        for offset, row in enumerate(generator.generate(spec)):
            index = spec.start + offset
            row.update(id=f"train-{index:08d}", split="train", generator="pointcloud", recipe_sha256="bench")
            rows.append(row)
            np.save(npy_dir / f"{index:08d}_{row['label']}.npy", row["points"])
        record = ds.write_shard(ds.rows_to_table(rows, schema), version_dir / "data" / spec.filename)
        records.append({**record, "split": "train"})
    manifest = {"shards": records, "recipe": {"name": "bench"}, "version": "1.0.0", "classes": generator.class_names()}
    ds.write_json_atomic(version_dir / "manifest.json", manifest)
    return version_dir, npy_dir


def epoch(dataset: Dataset) -> int:
    seen = 0
    for points, _ in DataLoader(dataset, batch_size=32, shuffle=True, collate_fn=collate,
                                generator=torch.Generator().manual_seed(0)):
        seen += len(points)
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clouds", type=int, default=3000)
    parser.add_argument("--points", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        version_dir, npy_dir = write_both(Path(tmp), args.clouds, args.points)
        t_npy = best_of(args.repeats, lambda: epoch(NpyFolder(npy_dir)))
        t_ours = best_of(args.repeats, lambda: epoch(synthloom.load(version_dir, split="train",
                                                                    columns=["points", "label"])))
        t_ours_all = best_of(args.repeats, lambda: epoch(synthloom.load(version_dir, split="train")))
    print(environment())
    print(f"{args.clouds} clouds x {args.points} points, DataLoader batch 32 shuffled, best of {args.repeats}; "
          "our times include opening the Parquet shards")
    print(f".npy folder (np.load per item): {args.clouds / t_npy:,.0f} samples/s")
    print(f"synthloom.load(columns=[points, label]): {args.clouds / t_ours:,.0f} samples/s")
    print(f"synthloom.load(all columns): {args.clouds / t_ours_all:,.0f} samples/s")
    print(f"ratio ours/npy: {t_npy / t_ours:.2f} (all columns: {t_npy / t_ours_all:.2f})")


if __name__ == "__main__":
    main()
