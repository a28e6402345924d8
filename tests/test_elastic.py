"""Elastic resume: a state saved at world size W1 resumes at W2, and every record
of the epoch is seen exactly once, before plus after; ranks do equal work."""
import json

import dask.bag as db
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dask_prep as dp


@pytest.fixture(scope="module", params=[(37, 8), (100, 16), (5, 2)])
def ds(request, tmp_path_factory):
    n, shard = request.param
    out = tmp_path_factory.mktemp(f"elastic{n}")
    records = [{"token_ids": [i + 1] * (i % 5 + 1), "id": i} for i in range(n)]
    dp.write_shards(db.from_sequence(records, npartitions=3), out, shard_size=shard)
    return dp.open(out)


def ids(batch) -> list:
    return [int(i) for i, n in zip(batch["id"], batch["lengths"]) if n > 0]


def take(it, k) -> list:
    got = []
    for _ in range(k):
        got += ids(next(it))
    return got


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(w1=st.integers(1, 5), w2=st.integers(1, 5), b=st.integers(1, 7), frac=st.floats(0, 1),
       shuffle=st.sampled_from([None, 3]), bucket=st.booleans(), buffer=st.sampled_from([None, 12]),
       via=st.integers(0, 4), w3=st.integers(1, 4))
@pytest.mark.slow
def test_any_world_size_resumes_with_every_record_once(ds, w1, w2, b, frac, shuffle, bucket, buffer,
                                                        via, w3):
    opts = dict(columns=("id",), shuffle=shuffle, bucket_by_length=bucket and shuffle is not None,
                shuffle_buffer=buffer, prefetch=0)
    first = [ds.iter_batches(b, rank=r, world_size=w1, **opts) for r in range(w1)]
    k = int(frac * min(len(it) for it in first))  # synchronous training: every rank took k
    seen = [i for it in first for i in take(it, k)]
    state = json.loads(json.dumps(first[via % w1].state_dict()))  # any rank's state, as JSON
    assert len(json.dumps(state)) < 600, "the state is a position, not a buffer"
    second = [ds.iter_batches(b, rank=r, world_size=w2, **opts) for r in range(w2)]
    for it in second:
        it.load_state_dict(state)
    k2 = int(frac / 2 * min(len(it) - k for it in second))
    seen += [i for it in second for i in take(it, k2)]
    # and once more, to a third world size
    state = second[0].state_dict()
    third = [ds.iter_batches(b, rank=r, world_size=w3, **opts) for r in range(w3)]
    rest = []
    for it in third:
        it.load_state_dict(state)
        got = [i for batch in it for i in ids(batch)]
        assert it.batches == len(it), "len() counts the batches of the whole epoch"
        rest += got
    seen += rest
    assert sorted(seen) == list(range(len(ds))), "each record exactly once over the epoch"
    again = [ds.iter_batches(b, rank=r, world_size=w3, **opts) for r in range(w3)]
    for it in again:
        it.load_state_dict(state)
    assert [i for it in again for batch in it for i in ids(batch)] == rest, "deterministic"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(w=st.integers(1, 5), b=st.integers(1, 7), mode=st.sampled_from(["drop_last", "pad_to_equal"]),
       shuffle=st.sampled_from([None, 1]))
def test_every_rank_yields_the_same_number_of_batches(ds, w, b, mode, shuffle):
    if len(ds) < w:
        return  # fewer records than ranks: nothing to share equally
    its = [ds.iter_batches(b, rank=r, world_size=w, shuffle=shuffle, prefetch=0, columns=("id",),
                           **{mode: True}) for r in range(w)]
    batches = [list(it) for it in its]
    assert len({len(x) for x in batches}) == 1 and [len(it) for it in its] == [len(x) for x in batches]
    got = sorted(i for x in batches for batch in x for i in ids(batch))
    if mode == "pad_to_equal":
        assert got == list(range(len(ds))), "padding adds empty rows, never loses a record"
        empty = sum(int((batch["lengths"] == 0).sum()) for x in batches for batch in x)
        assert empty == w * -(-len(ds) // w) - len(ds), "one empty row for each rank a record short"
    else:
        assert len(got) == len(set(got)) and len(got) >= len(ds) - w * b


def test_same_world_size_resume_is_the_uninterrupted_epoch(ds):
    whole = [ids(x) for x in ds.iter_batches(3, shuffle=2, rank=1, world_size=2, prefetch=0, columns=("id",))]
    it = ds.iter_batches(3, shuffle=2, rank=1, world_size=2, prefetch=0, columns=("id",))
    k = len(whole) // 2
    take(it, k)
    resumed = ds.iter_batches(3, shuffle=2, rank=1, world_size=2, prefetch=0, columns=("id",))
    resumed.load_state_dict(it.state_dict())
    assert [ids(x) for x in resumed] == whole[k:] and whole[k:]


def test_a_state_saved_by_the_previous_version_still_loads(ds):
    it = ds.iter_batches(4, rank=0, world_size=2, prefetch=0, columns=("id",))
    take(it, 1)
    old = {"version": 1, "epoch": 0, "seed": None, "batches": 1, "records": 4, "block": 0, "shard": 0,
           "options": {"batch_size": 4, "drop_last": False, "shuffle": None, "shuffle_buffer": None,
                       "bucket_by_length": False, "rank": 0, "world_size": 2},
           "dataset": it.state_dict()["dataset"]}
    resumed = ds.iter_batches(4, rank=0, world_size=2, prefetch=0, columns=("id",))
    resumed.load_state_dict(old)
    assert resumed.batches == 1 and [ids(x) for x in resumed] == [ids(x) for x in it]
