"""Streaming batches from a real LocalCluster: content, order, backpressure, errors, closing."""
import time
from collections import Counter

import dask.bag as db
import numpy as np
import pytest

import dask_prep as dp
from dask_prep.ingest.converters import sentences
from helpers import make_corpus, serial_records


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    paths = make_corpus(root, n=16, sentences=12)
    return root, paths


@pytest.fixture(scope="module")
def vocab(corpus):
    words = Counter(w for r in serial_records(corpus[1], sentences) for w in r["words"])
    return dp.Vocab(["<pad>", "<unk>", *sorted(w for w in words if not w.isdigit())])


def rows(batches) -> list[list[int]]:
    return [row[:n].tolist() for b in batches for row, n in zip(b["token_ids"], b["lengths"])]


def test_ordered_stream_yields_the_serial_records_in_order(client, corpus, vocab):
    root, paths = corpus
    conv = dp.with_token_ids("sentences", vocab)
    runs = []
    for _ in range(2):
        with dp.stream(root, converter=conv, batch_size=7, ordered=True, partition_size=8192) as st:
            runs.append(list(st))
    want = [vocab.ids(r["words"]).tolist() for r in serial_records(paths, sentences)]
    assert rows(runs[0]) == want and st.records == len(want) and st.partitions > 3
    assert [len(b["lengths"]) for b in runs[0]] == [7] * (len(want) // 7) + [len(want) % 7]
    assert all(np.array_equal(a["token_ids"], b["token_ids"]) for a, b in zip(*runs))
    assert all(b["token_ids"].dtype == np.int32 and b["token_ids"].shape[1] == b["lengths"].max()
               for b in runs[0])


def test_unordered_stream_from_a_bag_has_the_same_rows(client, corpus, vocab):
    root, paths = corpus
    bag = dp.token_ids(dp.to_bag(dp.discover(root), "sentences", partition_size=8192), vocab)
    with dp.stream(bag, batch_size=16, max_len=5, drop_last=True) as st:
        got = rows(st)
    want = [vocab.ids(r["words"]).tolist()[:5] for r in serial_records(paths, sentences)]
    assert len(got) == len(want) // 16 * 16
    assert Counter(map(tuple, got)) <= Counter(map(tuple, want))


@pytest.mark.slow
def test_backpressure_bounds_the_partitions_started(client, tmp_path):
    def mark(part):
        (tmp_path / f"p{part[0]['p']:02d}").touch()
        return part
    recs = [{"p": i // 10, "token_ids": [i, i]} for i in range(200)]
    bag = db.from_sequence(recs, npartitions=20).map_partitions(mark)
    with dp.stream(bag, batch_size=10, max_in_flight=2, ordered=True) as st:
        first = next(st)
        time.sleep(0.5)  # a slow consumer: no more than 2 partitions may run ahead
        started = len(list(tmp_path.glob("p*")))
        rest = list(st)
    assert first["token_ids"][:, 0].tolist() == list(range(10))
    assert started <= 3 and len(rest) == 19 and len(list(tmp_path.glob("p*"))) == 20


def test_failed_sources_are_reported_and_the_rest_streamed(client, corpus, tmp_path, vocab):
    root, paths = corpus
    broken = tmp_path / "broken.txt.gz"
    broken.write_bytes(b"\x1f\x8b\x08\x00 not gzip")
    inputs = [root, broken]
    conv = dp.with_token_ids("sentences", vocab)
    with dp.stream(inputs, converter=conv, batch_size=50) as st:
        got = rows(st)
    assert len(got) == len(serial_records(paths, sentences))
    assert [e["path"] for e in st.errors] == [str(broken)] and st.errors[0]["error"] == "EOFError"
    with pytest.raises(dp.ConversionError, match="broken.txt.gz"):
        list(dp.stream(inputs, converter=conv, batch_size=50, on_error="raise"))


def test_closing_early_cancels_the_work_in_flight(client, corpus, vocab):
    root, _ = corpus
    st = dp.stream(root, converter=dp.with_token_ids("sentences", vocab), batch_size=4,
                   partition_size=8192, max_in_flight=3)
    next(st)
    st.close()
    deadline = time.monotonic() + 5
    while client.futures and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not client.futures


def test_options_are_checked_at_once():
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, not -1"):
        dp.stream(db.from_sequence([]), batch_size=-1)
    with pytest.raises(ValueError, match="max_in_flight must be an integer >= 1"):
        dp.stream(db.from_sequence([]), batch_size=2, max_in_flight=0)


def _wait_until_no_futures(client, seconds=5):
    deadline = time.monotonic() + seconds
    while client.futures and time.monotonic() < deadline:
        time.sleep(0.05)
    return not client.futures


def test_breaking_out_without_close_cancels_the_work_in_flight(client):
    import gc
    gc.disable()  # freed by reference counting alone, not by a later cycle collection
    try:
        bag = db.from_sequence([{"token_ids": [i, i + 1]} for i in range(200)], npartitions=20)
        for _ in dp.stream(bag, batch_size=3, max_in_flight=4):
            break
        assert _wait_until_no_futures(client)
    finally:
        gc.enable()


def test_stream_waits_for_workers_that_have_not_joined_yet():
    from distributed import Client, LocalCluster
    with LocalCluster(n_workers=0, processes=False, dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster) as c:
        cluster.scale(1)
        bag = db.from_sequence([{"token_ids": [i]} for i in range(50)], npartitions=5)
        batches = list(dp.stream(bag, batch_size=10, client=c))
        assert sum(len(b["lengths"]) for b in batches) == 50


@pytest.mark.slow
def test_an_ordered_stream_resumes_at_the_next_batch_converting_nothing_before_it(client, corpus, vocab):
    import json
    root, _ = corpus
    conv = dp.with_token_ids("sentences", vocab)

    def make():
        return dp.stream(root, converter=conv, batch_size=7, ordered=True, partition_size=8192)
    with make() as st:
        whole, total = list(st), st.partitions
    for stop in (0, 1, len(whole) // 2, len(whole) - 1, len(whole)):
        with make() as st:
            for _ in range(stop):
                next(st)
            state = json.loads(json.dumps(st.state_dict()))  # the consumer commits it somewhere
        assert state["batches"] == stop
        with make() as again:
            again.load_state_dict(state)
            rest = list(again)
        assert len(rest) == len(whole) - stop
        assert all(np.array_equal(a["token_ids"], b["token_ids"]) for a, b in zip(rest, whole[stop:]))
        if stop >= len(whole) // 2 and stop:
            assert again.partitions < total, "partitions already consumed are not converted again"
    with pytest.raises(ValueError, match="batch_size"):
        dp.stream(root, converter=conv, batch_size=8, ordered=True,
                  partition_size=8192).load_state_dict(state)
    with pytest.raises(ValueError, match="ordered=True"):
        dp.stream(root, converter=conv, batch_size=7).state_dict()
