"""Padded batches from real shards: padding, shuffling, rank parts, bucketing, prefetch, resume."""
import gc
import threading
import time

import dask.bag as db
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import dask_prep as dp
from dask_prep.read.batches import BatchOptions, plan_epoch

N = 203  # records; shards of 20 -> 11 shards, the last one of 3


def length(i: int) -> int:
    return (i * 7) % 23 + (i % 5 == 0) * 40  # 0..62, some long outliers


def ids_of(i: int) -> np.ndarray:
    return (np.arange(length(i), dtype=np.int32) * 3 + i) % 1000 + 2


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    recs = [{"id": i, "token_ids": ids_of(i), "words": ["w"] * length(i)} for i in range(N)]
    dp.write_shards(db.from_sequence(recs, npartitions=4), out / "pq", shard_size=20,
                    schema=None)
    plain = [{"id": i, "token_ids": ids_of(i).tolist()} for i in range(N)]
    dp.write_shards(db.from_sequence(plain, npartitions=4), out / "pkl", shard_size=20, format="pickle")
    return out


@pytest.fixture
def ds(shards):
    return dp.open(shards / "pq")


def collect(it) -> list[dict]:
    with it:
        return list(it)


def stored_order(ds) -> list[int]:
    """Record ids in manifest order (full shards per partition, then merged leftovers)."""
    return [r["id"] for r in ds]


def ids(batches) -> list[int]:
    return [int(i) for b in batches for i in b["id"]]


def check_padding(batch, pad_value=0, max_len=None):
    lengths = [min(length(i), max_len or 10**9) for i in batch["id"]]
    assert batch["lengths"].tolist() == lengths and batch["lengths"].dtype == np.int32
    assert batch["token_ids"].dtype == np.int32 and batch["token_ids"].shape == (len(lengths), max(lengths))
    for row, i, n in zip(batch["token_ids"], batch["id"], lengths):
        assert row[:n].tolist() == ids_of(i)[:n].tolist()
        assert (row[n:] == pad_value).all()


def test_in_order_padding_to_the_longest_row(ds):
    batches = collect(ds.iter_batches(16, columns=("id",)))
    assert ids(batches) == stored_order(ds) and sorted(stored_order(ds)) == list(range(N))
    assert [len(b["id"]) for b in batches] == [16] * 12 + [11]
    for b in batches:
        check_padding(b)


def test_max_len_truncates_pad_value_and_drop_last(ds):
    batches = collect(ds.iter_batches(16, columns=("id",), max_len=10, pad_value=-1, drop_last=True))
    assert len(batches) == 12 and ids(batches) == stored_order(ds)[:192]
    for b in batches:
        check_padding(b, pad_value=-1, max_len=10)
        assert b["token_ids"].shape[1] <= 10


def test_pickle_shards_give_the_same_batches(shards, ds):
    pkl = dp.open(shards / "pkl", allow_pickle=True)
    a = collect(pkl.iter_batches(32, columns=("id",), shuffle=3))
    b = collect(ds.iter_batches(32, columns=("id",), shuffle=3))
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert all(np.array_equal(x[k], y[k]) for k in ("id", "token_ids", "lengths"))


def test_shuffle_is_deterministic_per_seed_and_epoch(ds):
    def order(**kw):
        return ids(collect(ds.iter_batches(10, columns=("id",), shuffle_buffer=40, **kw)))
    first = order(shuffle=7)
    assert sorted(first) == list(range(N)) and first != stored_order(ds)
    assert order(shuffle=7) == first
    assert order(shuffle=8) != first and order(shuffle=7, epoch=1) != first
    assert sorted(order(shuffle=7, epoch=1)) == list(range(N))


@pytest.mark.parametrize("world_size", [1, 2, 3, 5, 16])
@pytest.mark.parametrize("shuffle", [None, 11])
def test_rank_parts_are_disjoint_and_cover_everything(ds, world_size, shuffle):
    parts = [ids(collect(ds.iter_batches(8, columns=("id",), shuffle=shuffle, rank=r,
                                         world_size=world_size))) for r in range(world_size)]
    assert sorted(i for p in parts for i in p) == list(range(N))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_drop_last_gives_every_rank_the_same_number_of_batches(ds):
    its = [ds.iter_batches(8, rank=r, world_size=3, drop_last=True, shuffle=1) for r in range(3)]
    counts = [len(collect(it)) for it in its]
    assert counts == [len(its[0])] * 3 == [N // 3 // 8] * 3


@settings(max_examples=200, deadline=None)
@given(counts=st.lists(st.integers(0, 30), min_size=0, max_size=12), world=st.integers(1, 7),
       batch=st.integers(1, 9), buffer=st.none() | st.integers(1, 50), seed=st.none() | st.integers(0, 5))
def test_plans_cover_each_record_once(counts, world, batch, buffer, seed):
    seen = []
    for rank in range(world):
        opts = BatchOptions(batch, rank=rank, world_size=world, shuffle=seed, shuffle_buffer=buffer)
        plan = plan_epoch(counts, opts, shard_size=20, epoch=0)
        assert plan.block % batch == 0
        seen += [(s, row) for k in range(plan.nblocks) for s, lo, hi in plan.slices(k) for row in range(lo, hi)]
    assert sorted(seen) == [(s, row) for s, n in enumerate(counts) for row in range(n)]


def waste(batches) -> float:
    return sum(b["token_ids"].size for b in batches) / sum(int(b["lengths"].sum()) for b in batches)


def test_bucketing_cuts_padding_and_keeps_every_record(ds):
    plain = collect(ds.iter_batches(8, columns=("id",), shuffle=2))
    bucketed = collect(ds.iter_batches(8, columns=("id",), shuffle=2, bucket_by_length=True,
                                       shuffle_buffer=80))
    assert sorted(ids(bucketed)) == list(range(N))
    assert waste(bucketed) < 1.2 and waste(plain) > 1.5  # measured 1.17 and 2.66
    for b in bucketed:
        check_padding(b)
    # the batches of a block are not served from short to long
    widths = [b["token_ids"].shape[1] for b in bucketed[:10]]
    assert widths != sorted(widths)


@pytest.mark.parametrize("options", [{}, {"shuffle": 4, "bucket_by_length": True, "shuffle_buffer": 48},
                                     {"shuffle": 5, "rank": 1, "world_size": 2, "drop_last": True}])
def test_resume_mid_epoch_gives_exactly_the_remaining_batches(ds, options):
    whole = collect(ds.iter_batches(8, columns=("id",), **options))
    for stop in (0, 1, 5, 6, 7, len(whole) - 1, len(whole)):
        with ds.iter_batches(8, columns=("id",), **options) as it:
            for _ in range(stop):
                next(it)
            state = it.state_dict()
        assert state["batches"] == stop and state["records"] == sum(len(b["id"]) for b in whole[:stop])
        resumed = ds.iter_batches(8, columns=("id",), **options)
        resumed.load_state_dict(state)
        rest = collect(resumed)
        assert len(rest) == len(whole) - stop
        for x, y in zip(rest, whole[stop:]):
            assert np.array_equal(x["id"], y["id"]) and np.array_equal(x["token_ids"], y["token_ids"])


def test_resume_refuses_other_options_and_late_loading(ds):
    state = ds.iter_batches(8, shuffle=1).state_dict()
    with pytest.raises(ValueError, match="batch_size: saved 8, now 16"):
        ds.iter_batches(16, shuffle=1).load_state_dict(state)
    it = ds.iter_batches(8, shuffle=1)
    next(it)
    with pytest.raises(RuntimeError, match="before iterating"):
        it.load_state_dict(state)
    it.close()


def prefetch_threads() -> list:
    return [t for t in threading.enumerate() if t.name == "dask-prep-prefetch"]


def test_loader_runs_ahead_within_a_bounded_queue_and_leaves_no_thread(ds):
    it = ds.iter_batches(4, prefetch=3)
    next(it)
    time.sleep(0.3)  # a slow training step: the loader fills the queue and waits
    assert it._it._queue.qsize() == 3 and len(prefetch_threads()) == 1
    t0 = time.perf_counter()
    next(it)
    assert time.perf_counter() - t0 < 0.05
    it.close()
    assert prefetch_threads() == []
    it = ds.iter_batches(4)
    next(it)
    del it  # dropped without close(): the thread stops when the iterator is collected
    gc.collect()
    time.sleep(0.2)
    assert prefetch_threads() == []
    assert len(collect(ds.iter_batches(50))) == 5 and prefetch_threads() == []


def test_loader_errors_reach_the_consumer(shards, tmp_path):
    import shutil
    shutil.copytree(shards / "pq", tmp_path / "copy")
    ds = dp.open(tmp_path / "copy")
    (tmp_path / "copy" / "shard-00003.parquet").unlink()
    it = ds.iter_batches(20)
    with pytest.raises(FileNotFoundError):
        list(it)
    assert prefetch_threads() == []


def test_prefetch_zero_loads_in_the_callers_thread(ds):
    batches = collect(ds.iter_batches(16, columns=("id",), prefetch=0))
    assert ids(batches) == stored_order(ds) and prefetch_threads() == []


def test_wrong_column_or_options_say_what_to_do(ds):
    with pytest.raises(ValueError, match=r"column 'ids' is not in .* \(columns: id, token_ids, words\)"):
        ds.iter_batches(8, column="ids")
    with pytest.raises(TypeError, match="list<element: string>, not a list of integer ids.*with_token_ids"):
        ds.iter_batches(8, column="words")
    with pytest.raises(ValueError, match="shuffle must be None or an integer seed"):
        ds.iter_batches(8, shuffle=True)
    with pytest.raises(ValueError, match="rank must be in 0..1 for world_size=2, not 2"):
        ds.iter_batches(8, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, not 0"):
        ds.iter_batches(0)
    with pytest.raises(ValueError, match="'lengths' is reserved"):
        ds.iter_batches(8, columns=("lengths",))


def test_empty_dataset_gives_no_batches(tmp_path):
    dp.write_shards(db.from_sequence([], npartitions=1), tmp_path, allow_empty=True)
    it = dp.open(tmp_path).iter_batches(4)
    assert len(it) == 0 and collect(it) == []
