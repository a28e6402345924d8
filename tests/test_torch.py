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


def test_persistent_workers_reshuffle_each_epoch(ds):
    data = ds.to_torch(8, columns=("id",), shuffle=3)
    loader = DataLoader(data, batch_size=None, num_workers=2, persistent_workers=True)
    orders = [[int(i) for b in loader for i in b["id"]] for _ in range(2)]
    assert sorted(orders[0]) == sorted(orders[1]) == list(range(N))
    assert orders[0] != orders[1]


def test_text_and_list_columns_from_pickle_shards(tmp_path):
    recs = [{"token_ids": [i, i + 1], "text": f"t{i}", "words": ["w"] * (i % 3)} for i in range(10)]
    dp.write_shards(db.from_sequence(recs, npartitions=2), tmp_path, shard_size=4, format="pickle")
    ds = dp.open(tmp_path, allow_pickle=True)
    batch = next(iter(ds.iter_batches(10, columns=("text", "words"))))
    assert batch["text"].dtype == object and sorted(batch["text"]) == sorted(r["text"] for r in recs)
    assert sorted(map(len, batch["words"])) == sorted(len(r["words"]) for r in recs)
    [tb] = list(DataLoader(ds.to_torch(10, columns=("text",)), batch_size=None))
    assert sorted(tb["text"]) == sorted(r["text"] for r in recs)


def test_stateful_dataloader_with_workers_resumes_mid_epoch_exactly(ds):
    stateful = pytest.importorskip("torchdata.stateful_dataloader")

    def loader():
        return stateful.StatefulDataLoader(ds.to_torch(8, columns=("id",), shuffle=2),
                                           batch_size=None, num_workers=2)
    whole = [b["id"].tolist() for b in loader()]
    first = loader()
    it, before = iter(first), []
    for _ in range(5):
        before.append(next(it)["id"].tolist())
    state = first.state_dict()
    del it
    # the workers' positions come from the dataset's own state_dict, so the resume
    # starts there instead of reading the epoch again and throwing batches away
    workers = state["_snapshot"]["_worker_snapshots"].values()
    assert all(w["dataset_state"]["batches"]["batches"] > 0 for w in workers), state
    again = loader()
    again.load_state_dict(state)
    after = [b["id"].tolist() for b in again]
    assert before + after == whole, "the resumed loader continues the uninterrupted epoch"
    assert Counter(i for b in before + after for i in b) == Counter(range(N))
