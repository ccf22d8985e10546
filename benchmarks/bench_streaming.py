"""Samples/s of synthloom's streaming reader vs a WebDataset tar of the same PNGs and vs HF `datasets`
streaming of the same Parquet shards, each read from local disk and from a real S3 server (SeaweedFS,
started here on 127.0.0.1). Every reader decodes each PNG to a uint8 CHW tensor and yields it with its
label; one process, no DataLoader workers (the readers' own cost, not the machine's parallelism).

    .venv/bin/python benchmarks/bench_streaming.py --images 2000 --epochs 3

Images: the tests' `squares` generator (64x64 RGB PNGs) built through the real build flow.
Prints per reader and location: samples/s per epoch, the mean, the spread (min-max), and the ratio of
synthloom's mean to each baseline's mean measured in this same run.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tests"), str(REPO / "benchmarks")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def build_images(folder: Path, count: int) -> Path:
    import yaml

    from synthloom.flows.build import build_dataset
    from synthloom.registry import register

    register("generators", "squares", "squares_generator:SquaresGenerator")
    recipe = {"name": "bench-images", "version": "1.0.0", "seed": 0, "output": str(folder / "out"),
              "generator": {"kind": "squares", "params": {"height": 64, "width": 64}},
              "count": {"train": count}, "shard_size": max(1, count // 8)}
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return Path(build_dataset(str(path))["path"])


def write_tar(version: Path, tar_path: Path) -> int:
    """The same PNG bytes and labels as a WebDataset tar (key.png, key.cls)."""
    import pyarrow.parquet as pq

    n = 0
    with tarfile.open(tar_path, "w") as tar:
        for shard in sorted((version / "data").glob("*.parquet")):
            table = pq.read_table(shard, columns=["id", "image", "label"])
            for key, image, label in zip(*(table.column(c).to_pylist() for c in ("id", "image", "label"))):
                for suffix, data in (("png", image["bytes"]), ("cls", str(label).encode())):
                    info = tarfile.TarInfo(f"{key}.{suffix}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                n += 1
    return n


def read_synthloom(url: str):
    import synthloom

    data = synthloom.load(url, split="train", streaming=True, columns=["image", "label"], shuffle=False)
    return ((row["image"], row["label"]) for row in data)


def read_webdataset(url: str):
    import webdataset as wds

    # As webdataset's docs recommend: shards by URL (a `pipe:` command for object stores), decode by key.
    return iter(wds.WebDataset(url, shardshuffle=False).decode("torchrgb8").to_tuple("png", "cls"))


def read_hf(data_files: list[str], storage_options: dict | None):
    import datasets
    import numpy as np
    import torch

    stream = datasets.load_dataset("parquet", data_files=data_files, split="train", streaming=True,
                                   storage_options=storage_options, columns=["image", "label"])
    return ((torch.from_numpy(np.asarray(row["image"])).permute(2, 0, 1), row["label"]) for row in stream)


def epoch_rate(make_iter, expected: int) -> float:
    start = time.perf_counter()
    n = 0
    for image, _ in make_iter():
        assert image.shape[0] == 3
        n += 1
    elapsed = time.perf_counter() - start
    assert n == expected, (n, expected)
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()

    import torch

    import s3_server
    from _common import environment
    from synthloom import storage

    torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp(prefix="bench-streaming-"))
    version = build_images(folder, args.images)
    tar = folder / "images.tar"
    assert write_tar(version, tar) == args.images
    server, process, data = s3_server.start(bucket="bench")
    try:
        os.environ.update(server.env)
        os.environ["SYNTHLOOM_CACHE_DIR"] = str(folder / "cache")
        fs, _ = storage.filesystem("s3://bench/x")
        fs.put(str(version) + "/", "bench/images/1.0.0/", recursive=True)
        fs.put_file(str(tar), "bench/images.tar")
        shards = sorted(str(p) for p in (version / "data").glob("*.parquet"))
        s3_shards = [f"s3://bench/images/1.0.0/data/{Path(p).name}" for p in shards]
        hf_options = {"key": server.access_key, "secret": server.secret_key,
                      "client_kwargs": {"endpoint_url": server.endpoint}}
        cat = (f"pipe:{sys.executable} -c \"import s3fs,sys; sys.stdout.buffer.write("
               f"s3fs.S3FileSystem().cat_file('bench/images.tar'))\"")
        readers = {
            ("synthloom", "local"): lambda: read_synthloom(str(version)),
            ("webdataset", "local"): lambda: read_webdataset(str(tar)),
            ("hf-datasets", "local"): lambda: read_hf(shards, None),
            ("synthloom", "s3"): lambda: read_synthloom("s3://bench/images/1.0.0"),
            ("webdataset", "s3"): lambda: read_webdataset(cat),
            ("hf-datasets", "s3"): lambda: read_hf(s3_shards, hf_options),
        }
        rates = {key: [] for key in readers}
        for _ in range(args.epochs):  # interleaved: machine load drifts hit every reader alike
            for key, make in readers.items():
                rates[key].append(epoch_rate(make, args.images))
    finally:
        s3_server.stop(process, data)
    print(environment())
    print(f"{args.images} PNGs 64x64, {args.epochs} epochs each, interleaved; samples/s per epoch")
    mean = {key: sum(v) / len(v) for key, v in rates.items()}
    for (reader, where), values in rates.items():
        base = mean[("synthloom", where)]
        print(f"{where:5s} {reader:12s} mean {mean[(reader, where)]:8.0f}  min {min(values):8.0f}  "
              f"max {max(values):8.0f}  synthloom/this {base / mean[(reader, where)]:.2f}x  "
              f"epochs {[round(v) for v in values]}")
    print(json.dumps({f"{r}@{w}": v for (r, w), v in rates.items()}))


if __name__ == "__main__":
    main()
