"""The training feed on token ids: packed shards and the tokenizing stream give dense [B, L] batches.

The reference is the serial loop of ``test_tokens``: ``encode_batch`` over the
documents in source order, each followed by EOS, chopped into sequences of L.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

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
