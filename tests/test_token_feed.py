"""The training feed on token ids: packed shards and the tokenizing stream give dense [B, L] batches.

The reference is the serial loop of ``test_tokens``: ``encode_batch`` over the
documents in source order, each followed by EOS, chopped into sequences of L.
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import dask.bag as db
import numpy as np
import pytest
from tokenizers import Tokenizer

import dask_prep as dp
from test_tokens import corpus, make_tokenizer, serial_stream, texts_of

L = 16


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Path:
    return make_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.json")


def sequences(serial: list, seq_len: int = L) -> np.ndarray:
    """The serial stream chopped into whole sequences (the tail dropped)."""
    whole = len(serial) // seq_len * seq_len
    return np.array(serial[:whole], np.int32).reshape(-1, seq_len)


def rows(batches, column: str = "input_ids") -> np.ndarray:
    return np.concatenate([np.asarray(b[column]) for b in batches])


@pytest.mark.parametrize("fmt", ["parquet", "tokens", "megatron", "mds"])
@pytest.mark.slow
def test_packed_shards_give_dense_batches_without_naming_the_column(client, tmp_path, tok, fmt):
    paths = corpus(tmp_path / "in", n=10)
    dp.run([tmp_path / "in"], tmp_path / "out", tokenizer=tok, seq_len=L, shard_size=5,
           partition_size=5000, format=fmt)
    ds = dp.open(tmp_path / "out")
    want = sequences(serial_stream(tok, texts_of(paths)))
    assert len(want) % 4, "the corpus must leave a partial last batch"
    with ds.iter_batches(4) as it:  # the column is input_ids for a token dataset
        batches = list(it)
    assert [b["input_ids"].shape for b in batches] == [(4, L)] * (len(want) // 4) + [(len(want) % 4, L)]
    assert all(b["input_ids"].dtype == np.int32 and (b["lengths"] == L).all() for b in batches)
    assert np.array_equal(rows(batches), want)
    with ds.iter_batches(4, drop_last=True, shuffle=0) as it:
        shuffled = list(it)
    assert {b["input_ids"].shape for b in shuffled} == {(4, L)}
    got = rows(shuffled)
    assert len(got) == len(want) // 4 * 4 and {tuple(r) for r in got} <= {tuple(r) for r in want}
    torch = pytest.importorskip("torch")
    tensors = list(ds.to_torch(4, drop_last=True))
    assert all(t["input_ids"].shape == (4, L) and t["input_ids"].dtype == torch.int32 for t in tensors)
    assert np.array_equal(np.concatenate([t["input_ids"].numpy() for t in tensors]), want[:len(want) // 4 * 4])


# -- stream(tokenizer=, seq_len=): packed on the cluster, no shards ---------------------------


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
    root = tmp_path_factory.mktemp("docs")
    return root, corpus(root, n=24)


def streamed(root, tok, **options) -> tuple[list, dp.BatchStream]:
    options = {"batch_size": 4, "ordered": True, "partition_size": 5000, **options}
    with dp.stream(root, tokenizer=tok, seq_len=L, **options) as st:
        return list(st), st


def eos_of(tok) -> int:
    return Tokenizer.from_file(str(tok)).token_to_id("<|endoftext|>")


def partition_tokens(root, tok, partition_size: int) -> list[int]:
    """Each partition's tokens (the serial loop over its documents), as the stream's tasks see them."""
    bag = dp.to_bag(dp.discover(root), "text", partition_size=partition_size)
    return bag.map_partitions(lambda recs: [len(serial_stream(tok, [r["text"] for r in recs]))]) \
        .compute(scheduler="sync")


@pytest.mark.parametrize("last", ["drop", "pad"])
@pytest.mark.slow
def test_stream_yields_the_sequences_run_writes_and_the_serial_loop_makes(client, tmp_path, tok, docs, last):
    root, paths = docs
    serial = serial_stream(tok, texts_of(paths))
    pad = -len(serial) % L if last == "pad" else 0
    want = sequences(serial + [eos_of(tok)] * pad)
    counts = partition_tokens(root, tok, 5000)
    assert len(counts) > 3 and sum(counts) == len(serial)
    assert sum(c % L != 0 for c in counts) > 2, "sequences must cross partitions for this to test the remainder"
    batches, st = streamed(root, tok, last=last)
    assert st.partitions == len(counts) and st.records == len(paths) and st.tokens == len(serial)
    assert [b["input_ids"].shape for b in batches] == [(4, L)] * (len(want) // 4) + [(len(want) % 4, L)]
    assert all(b["input_ids"].dtype == np.int32 and (b["lengths"] == L).all() for b in batches)
    assert np.array_equal(rows(batches), want)
    # the shards dp.run writes from the same inputs, tokenizer and seq_len, read back B at a time
    dp.run([root], tmp_path / "out", tokenizer=tok, seq_len=L, shard_size=7, partition_size=9000, last=last)
    with dp.open(tmp_path / "out").iter_batches(4) as it:
        written = list(it)
    assert len(written) == len(batches)
    assert all(np.array_equal(a["input_ids"], b["input_ids"]) for a, b in zip(written, batches))


@pytest.mark.slow
def test_stream_is_the_same_for_any_worker_count_and_partitioning(client, tok, docs):
    root, _ = docs
    two, st = streamed(root, tok, partition_size=5000)
    other, st2 = streamed(root, tok, partition_size=12000, max_in_flight=1)
    assert st.partitions != st2.partitions
    with dp.stream(root, tokenizer=tok, seq_len=L, batch_size=4, ordered=True, workers=1) as one:
        single = list(one)
    for got in (other, single):
        assert len(got) == len(two) and all(np.array_equal(a["input_ids"], b["input_ids"])
                                            for a, b in zip(two, got))


def test_unordered_stream_has_every_token_once_each_document_whole(client, tok, docs):
    root, paths = docs
    serial, eos = serial_stream(tok, texts_of(paths)), eos_of(tok)
    batches, _ = streamed(root, tok, ordered=False, drop_last=True)
    got = rows(batches).ravel().tolist()
    assert len(got) == len(serial) // L // 4 * 4 * L and Counter(got) <= Counter(serial)
    # partitions join in the order they finish, so documents come whole (only the end is cut)
    bodies = {tuple(serial_stream(tok, [t])[:-1]) for t in texts_of(paths)}
    pieces = " ".join(map(str, got)).split(f" {eos} ")
    assert all(tuple(map(int, p.split())) in bodies for p in pieces[:-1]) and len(pieces) > 10


@pytest.mark.parametrize("drop_last", [True, False])
@pytest.mark.slow
def test_ranks_take_every_world_size_th_batch_of_the_packed_stream(client, tok, docs, drop_last):
    root, _ = docs
    whole, _ = streamed(root, tok, batch_size=3)
    ranks = [streamed(root, tok, batch_size=3, rank=r, world_size=2, drop_last=drop_last)[0] for r in (0, 1)]
    if drop_last:  # every rank the same number of batches, all of them full
        assert len(ranks[0]) == len(ranks[1]) and {b["input_ids"].shape for r in ranks for b in r} == {(3, L)}
        whole = [b for b in whole if len(b["lengths"]) == 3][:2 * len(ranks[0])]
    assert sum(map(len, ranks)) == len(whole)
    for j, batch in enumerate(whole):
        assert np.array_equal(ranks[j % 2][j // 2]["input_ids"], batch["input_ids"])


@pytest.mark.slow
def test_a_packed_stream_resumes_mid_partition_converting_nothing_before(client, tok, docs):
    root, _ = docs
    whole, st = streamed(root, tok)
    states = []
    for k in (5, 23, len(whole) - 1):
        with dp.stream(root, tokenizer=tok, seq_len=L, batch_size=4, ordered=True, partition_size=5000) as s:
            for _ in range(k):
                next(s)
            states.append(s.state_dict())
        with dp.stream(root, tokenizer=tok, seq_len=L, batch_size=4, ordered=True, partition_size=5000) as s:
            s.load_state_dict(states[-1])
            rest = list(s)
        assert len(rest) == len(whole) - k
        assert all(np.array_equal(a["input_ids"], b["input_ids"]) for a, b in zip(rest, whole[k:]))
        assert s.partitions == st.partitions - states[-1]["partition"]
    assert any(s["partition"] > 0 and s["row"] > 0 for s in states), "no resume began inside a partition"
    with dp.stream(root, tokenizer=tok, seq_len=2 * L, batch_size=4, ordered=True, partition_size=5000) as s:
        with pytest.raises(ValueError, match="tokens differ"):
            s.load_state_dict(states[0])


def test_stream_tokenizer_options_are_checked_before_a_cluster_starts(tmp_path, tok, docs):
    root, _ = docs
    with pytest.raises(ValueError, match="give seq_len=L"):
        dp.stream(root, tokenizer=tok, batch_size=4)
    with pytest.raises(ValueError, match="input_ids only"):
        dp.stream(root, tokenizer=tok, seq_len=L, batch_size=4, columns=("path",))
    with pytest.raises(ValueError, match="need a tokenizer"):
        dp.stream(root, seq_len=L, batch_size=4)
    with pytest.raises(dp.errors.TokenizerError, match="never downloads"):
        dp.stream(root, tokenizer="gpt2", seq_len=L, batch_size=4)


def test_the_streams_own_workers_tokenize_in_one_thread_and_the_caller_is_left_alone(tmp_path, tok):
    (tmp_path / "threads.py").write_text(
        "import os\n"
        "def threads(path):\n"
        "    yield {'text': 'threads=' + os.environ.get('RAYON_NUM_THREADS', 'unset')}\n")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("x")
    before = dict(os.environ)
    with dp.stream(tmp_path / "in", converter=f"{tmp_path / 'threads.py'}:threads", tokenizer=tok,
                   seq_len=2, last="pad", batch_size=64, workers=1) as st:
        got = rows(list(st)).ravel().tolist()
    text = Tokenizer.from_file(str(tok)).decode(got)
    assert "threads=1" in text and dict(os.environ) == before


def test_a_packed_stream_resumed_at_another_world_size_yields_every_batch_once(client, tok, docs):
    root, _ = docs
    whole, _ = streamed(root, tok)
    with dp.stream(root, tokenizer=tok, seq_len=L, batch_size=4, ordered=True, partition_size=5000,
                   rank=0, world_size=2) as s:
        for _ in range(7):
            next(s)
        state = s.state_dict()  # ranks 0 and 1 consumed 7 batches each: whole[:14]
    with dp.stream(root, tokenizer=tok, seq_len=L, batch_size=4, ordered=True, partition_size=5000) as s:
        s.load_state_dict(state)
        rest = list(s)
    assert len(rest) == len(whole) - 14
    assert all(np.array_equal(a["input_ids"], b["input_ids"]) for a, b in zip(rest, whole[14:]))


def test_a_bag_of_strings_is_packed_too(client, tok):
    texts = [f"document {i} " + " ".join(f"w{j % 17}" for j in range(3 + 5 * i)) for i in range(30)]
    bag = db.from_sequence(texts, npartitions=4)
    with dp.stream(bag, tokenizer=tok, seq_len=L, batch_size=4, ordered=True) as st:
        got = rows(list(st))
    assert st.partitions == 4 and np.array_equal(got, sequences(serial_stream(tok, texts)))
