"""The PyTorch adapter with real DataLoader worker processes."""
import pickle
from collections import Counter

import dask.bag as db
import numpy as np
import pytest

import dask_prep as dp

torch = pytest.importorskip("torch")
from torch.utils.data import DataLoader  # noqa: E402

N = 157


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    out = tmp_path_factory.mktemp("torch")
    recs = [{"id": i, "token_ids": np.arange(i % 9 + 1, dtype=np.int32)} for i in range(N)]
    dp.write_shards(db.from_sequence(recs, npartitions=3), out, shard_size=16)
    return dp.open(out)


def seen(loader) -> Counter:
    return Counter(int(i) for batch in loader for i in batch["id"])


def test_dataloader_workers_each_read_their_own_part(ds):
    data = ds.to_torch(8, columns=("id",), shuffle=3)
    batches = list(DataLoader(data, batch_size=None, num_workers=2))
    assert Counter(int(i) for b in batches for i in b["id"]) == Counter(range(N))
    b = batches[0]
    assert b["token_ids"].dtype == torch.int32 and b["lengths"].dtype == torch.int32
    assert b["token_ids"].shape == (8, int(b["lengths"].max()))


def test_ranks_and_workers_together_cover_every_record_once(ds):
    total = Counter()
    for rank in range(2):
        data = ds.to_torch(5, columns=("id",), shuffle=1, rank=rank, world_size=2)
        total += seen(DataLoader(data, batch_size=None, num_workers=2))
    assert total == Counter(range(N))


def test_set_epoch_reshuffles(ds):
    data = ds.to_torch(10, columns=("id",), shuffle=2)
    first = [int(i) for b in data for i in b["id"]]
    data.set_epoch(1)
    second = [int(i) for b in data for i in b["id"]]
    assert first != second and sorted(first) == sorted(second) == list(range(N))


def test_pickles_for_spawned_workers(ds):
    data = ds.to_torch(10, columns=("id",), shuffle=2)
    again = pickle.loads(pickle.dumps(data))
    assert isinstance(again, torch.utils.data.IterableDataset)
    assert [b["id"].tolist() for b in again] == [b["id"].tolist() for b in data]
