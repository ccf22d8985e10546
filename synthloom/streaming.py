"""Stream a synthloom dataset for (distributed) training: a torch `IterableDataset` over Parquet row groups.

The unit of work is one row group of one shard. Every epoch all units are put in one order that every
process agrees on (a permutation seeded by `seed` and the epoch), and unit i goes to the global worker
i mod W, where W = world size x DataLoader workers per rank and a worker's global index is
rank x workers + worker id: torch's own conventions (`torch.distributed.get_rank/get_world_size` when
initialised, `torch.utils.data.get_worker_info()`; or `rank=`/`world_size=` given). So across all ranks and workers each row is read
exactly once per epoch. Within a worker a seeded shuffle buffer mixes rows across its units.

Ranks may get a few rows more or fewer than each other (whole units are dealt out; nothing is padded or
dropped, so "exactly once" holds): a DDP loop should stop on the shortest rank, or use `Join`.

Rows decode exactly as `synthloom.load` decodes them (the shards' feature records). The files are read
through fsspec, so `s3://…` URLs stream straight from the store.
"""

from __future__ import annotations

import os
import posixpath
from typing import Any, Iterator

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from . import dataset as ds
from . import storage
from .errors import DatasetError
from .features import ClassLabel, Features, feature_of


class StreamingDataset(IterableDataset):
    """Rows of one split, streamed: `for row in StreamingDataset(...)` yields the dicts `load` returns.

    - `shuffle`: order units and rows by `seed` and the epoch (`set_epoch(n)` before each epoch, as with
      `DistributedSampler`); False reads units in manifest order and rows in file order.
    - `buffer_size`: rows held by each worker's shuffle buffer (memory: that many decoded rows).
    """

    def __init__(self, path: str | os.PathLike, split: str | None = "train", columns: list[str] | None = None,
                 image_format: str = "uint8", shuffle: bool = True, buffer_size: int = 1000, seed: int = 0,
                 rank: int | None = None, world_size: int | None = None):
        self.url = os.fspath(path)
        self._rank, self._world = rank, world_size
        self._fixed_rank = rank is not None and world_size is not None
        self._capture_rank()
        self.fs, version, self.version_url = _open_version(self.url)
        self.manifest = storage.read_manifest(self.fs, version, self.version_url)
        self.split, self.columns, self.image_format = split, columns, image_format
        self.shuffle, self.buffer_size, self.seed, self.epoch = shuffle, max(1, int(buffer_size)), int(seed), 0
        records = _split_records(self.manifest, split, self.version_url)
        self.units: list[tuple[str, int, int]] = []  # (shard path, row group, rows)
        schema = None
        with storage.storage_errors(self.version_url, self.fs):
            for record in records:
                file = storage.join(version, record["file"])
                metadata = _read_metadata(self.fs, file, self.version_url, record["file"])
                schema = schema or metadata.schema.to_arrow_schema()
                self.units += [(file, group, metadata.row_group(group).num_rows)
                               for group in range(metadata.num_row_groups)]
        self.num_rows = sum(rows for _, _, rows in self.units)
        if schema is not None and columns is not None:
            missing = [c for c in columns if c not in schema.names]
            if missing:
                raise DatasetError(f"{self.version_url}: no column(s) {missing} (columns: {schema.names})")
            schema = _select(schema, columns)
        self.features: Features = ds.read_features(schema, self.manifest) if schema is not None else Features()
        label = feature_of(self.features, ClassLabel)
        self.class_names: list[str] = (list(self.features[label].names) if label
                                       else list(self.manifest.get("classes", [])))

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose order the next iteration uses (call it on the dataset in every rank; with
        `persistent_workers=True` workers keep the copy they started with, so leave that off)."""
        self.epoch = int(epoch)
        self._capture_rank()

    def _capture_rank(self) -> None:
        """Rank and world size as `DistributedSampler` takes them: from the initialised process group,
        read in the training process (at construction and at `set_epoch`), because DataLoader worker
        processes do not see the process group (torch.distributed.is_initialized() is False there)."""
        if not self._fixed_rank and torch.distributed.is_available() and torch.distributed.is_initialized():
            self._rank, self._world = torch.distributed.get_rank(), torch.distributed.get_world_size()

    def __len__(self) -> int:
        """Rows of the whole split (not of one rank)."""
        return self.num_rows

    def units_for(self, worker: int, workers: int) -> list[tuple[str, int, int]]:
        """The units global worker `worker` of `workers` reads this epoch, in reading order."""
        order = (np.random.default_rng([self.seed, self.epoch]).permutation(len(self.units)) if self.shuffle
                 else np.arange(len(self.units)))
        return [self.units[i] for i in order[worker::workers]]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if get_worker_info() is None:
            self._capture_rank()
        worker, workers = global_worker(self._rank, self._world)
        rows = self._rows(self.units_for(worker, workers))
        if not self.shuffle:
            yield from rows
            return
        yield from shuffle_buffer(rows, self.buffer_size, np.random.default_rng([self.seed, self.epoch, worker]))

    def _rows(self, units: list[tuple[str, int, int]]) -> Iterator[dict[str, Any]]:
        # A fresh filesystem in each worker process: fsspec instances are not shared across fork.
        fs, _ = storage.filesystem(self.url) if storage.is_url(self.url) else (self.fs, None)
        for file, group, _ in units:
            with storage.storage_errors(self.version_url, fs), fs.open(file, "rb") as handle:
                table = pq.ParquetFile(handle, pre_buffer=True).read_row_group(group, columns=self.columns)
            decoded = self.features.decode_table(table, image_format=self.image_format)
            for index in range(table.num_rows):
                yield {name: column[index] for name, column in decoded.items()}

    def __repr__(self) -> str:
        return (f"StreamingDataset({self.version_url!r}, split={self.split!r}, rows={self.num_rows}, "
                f"units={len(self.units)}, shuffle={self.shuffle}, seed={self.seed}, epoch={self.epoch})")


def global_worker(rank: int | None, world: int | None) -> tuple[int, int]:
    """(this worker's index, number of workers) over all ranks and DataLoader workers."""
    rank, world = (rank, world) if rank is not None and world is not None else (0, 1)
    if not 0 <= rank < world:
        raise DatasetError(f"rank {rank} is not in a world of {world} processes")
    info = get_worker_info()
    worker, per_rank = (info.id, info.num_workers) if info is not None else (0, 1)
    return rank * per_rank + worker, world * per_rank


def shuffle_buffer(items: Iterator[Any], size: int, rng: np.random.Generator) -> Iterator[Any]:
    """Yield `items` in a random order: keep `size` of them, emit a random one as each new one arrives."""
    buffer: list[Any] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        index = int(rng.integers(size))
        yield buffer[index]
        buffer[index] = item
    for index in rng.permutation(len(buffer)):
        yield buffer[index]


def _open_version(url: str):
    if storage.is_url(url):
        return storage.resolve_version(url)
    from fsspec.implementations.local import LocalFileSystem

    version = ds.resolve_version_dir(url)
    return LocalFileSystem(), str(version), str(version)


def _split_records(manifest: dict[str, Any], split: str | None, where: str) -> list[dict[str, Any]]:
    shards = manifest["shards"]
    if split is None:
        return shards
    splits = sorted({s["split"] for s in shards})
    if split not in splits:
        raise DatasetError(f"{where}: no split '{split}' (splits: {', '.join(splits)})")
    return [s for s in shards if s["split"] == split]


def _read_metadata(fs, file: str, where: str, name: str):
    try:
        with fs.open(file, "rb") as handle:
            return pq.read_metadata(handle)
    except FileNotFoundError:
        raise DatasetError(f"{where}/{name}: shard listed in the manifest is missing (run `synthloom verify`)") from None


def _select(schema, columns: list[str]):
    import pyarrow as pa

    return pa.schema([schema.field(c) for c in columns], metadata=schema.metadata)
