"""`synthloom.load(..., streaming=True)`: a torch IterableDataset split across DataLoader workers and
torch.distributed ranks (real gloo process group, 2 spawned processes x 2 workers)."""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader

import synthloom
from synthloom.errors import DatasetError
from synthloom.streaming import StreamingDataset, shuffle_buffer

EPOCHS = (0, 1, 0)  # epoch 0 twice: the same seed and epoch must give the same order


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    """8 shards of 3 rows: more units than the 4 global workers, and not a multiple of them."""
    from conftest import write_recipe
    from synthloom.flows.build import build_dataset

    folder = tmp_path_factory.mktemp("stream")
    path = write_recipe(folder, name="stream", count={"train": 24, "test": 6}, shard_size=3,
                        generator={"kind": "pointcloud", "params": {"num_points": 64, "rotation": "so3"}})
    result = build_dataset(str(path))
    return result["path"]


def _ids(rows) -> list[str]:
    return [row["id"] for row in rows]


def test_rows_decode_as_load_does(dataset_dir):
    eager = synthloom.load(dataset_dir, split="train")
    streamed = synthloom.load(dataset_dir, split="train", streaming=True, seed=5)
    assert isinstance(streamed, torch.utils.data.IterableDataset) and len(streamed) == len(eager) == 24
    by_id = {row["id"]: row for row in streamed}
    assert sorted(by_id) == sorted(eager[i]["id"] for i in range(len(eager)))
    for index in range(len(eager)):
        expected, got = eager[index], by_id[eager[index]["id"]]
        assert expected.keys() == got.keys()
        for key, value in expected.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, got[key]) and value.dtype == got[key].dtype, key
            else:
                assert value == got[key], key
    assert streamed.class_names == eager.class_names


def test_order_is_seeded_by_seed_and_epoch(dataset_dir):
    first = StreamingDataset(dataset_dir, split="train", seed=1, buffer_size=8)
    again = StreamingDataset(dataset_dir, split="train", seed=1, buffer_size=8)
    assert _ids(first) == _ids(again)
    epoch0 = _ids(first)
    first.set_epoch(1)
    assert sorted(_ids(first)) == sorted(epoch0) and _ids(first) != epoch0
    assert _ids(StreamingDataset(dataset_dir, split="train", seed=2, buffer_size=8)) != epoch0
    plain = StreamingDataset(dataset_dir, split="train", shuffle=False)
    assert _ids(plain) == [synthloom.load(dataset_dir)[i]["id"] for i in range(24)]


def test_shuffle_buffer_emits_each_item_once():
    import numpy as np

    out = list(shuffle_buffer(iter(range(100)), 7, np.random.default_rng(0)))
    assert sorted(out) == list(range(100)) and out != list(range(100))


def test_columns_and_bad_split_are_named(dataset_dir):
    only = StreamingDataset(dataset_dir, split="test", columns=["id", "label"], shuffle=False)
    rows = list(only)
    assert len(rows) == 6 and set(rows[0]) == {"id", "label"} and rows[0]["label"].dtype == torch.int64
    with pytest.raises(DatasetError, match="no split 'validation'"):
        StreamingDataset(dataset_dir, split="validation")
    with pytest.raises(DatasetError, match="no column"):
        StreamingDataset(dataset_dir, columns=["nope"])


def _rank_main(rank: int, world: int, init_file: str, dataset_dir: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        data = synthloom.load(dataset_dir, split="train", streaming=True, seed=7, buffer_size=4)
        seen = []
        for epoch in EPOCHS:
            data.set_epoch(epoch)
            # fork: spawned workers would each re-import torch (~25 s an epoch on this 2-core machine)
            loader = DataLoader(data, batch_size=None, num_workers=2, multiprocessing_context="fork")
            seen.append(_ids(loader))
        everyone = [None] * world
        dist.all_gather_object(everyone, seen)  # the process group really carries data between ranks
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as handle:
            json.dump(everyone, handle)
    finally:
        dist.destroy_process_group()


def test_each_row_once_per_epoch_across_2_ranks_x_2_workers(dataset_dir, tmp_path):
    all_ids = sorted(_ids(StreamingDataset(dataset_dir, split="train", shuffle=False)))
    mp.spawn(_rank_main, args=(2, str(tmp_path / "pg-init"), str(dataset_dir), str(tmp_path)), nprocs=2, join=True)
    gathered = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert gathered[0] == gathered[1]  # all_gather_object gave both ranks the same view
    per_rank = gathered[0]
    for run in range(len(EPOCHS)):
        rank0, rank1 = per_rank[0][run], per_rank[1][run]
        assert rank0 and rank1, "both ranks read rows"
        assert sorted(rank0 + rank1) == all_ids, f"run {run}: a row was missed or read twice"
        assert not set(rank0) & set(rank1)
    assert per_rank[0][0] == per_rank[0][2] and per_rank[1][0] == per_rank[1][2]  # same seed and epoch
    assert per_rank[0][0] + per_rank[1][0] != per_rank[0][1] + per_rank[1][1]  # another epoch, another order
