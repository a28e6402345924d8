"""Ragged sequences: vectorized take, concat and padding agree with a plain Python loop."""
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings, strategies as st

from dask_prep.read.ragged import Ragged, as_int32

seqs_st = st.lists(st.lists(st.integers(-2**31, 2**31 - 1), max_size=12), min_size=1, max_size=30)


def naive_pad(seqs, pad_value, max_len):
    cut = [s[:max_len] if max_len is not None else s for s in seqs]
    width = max((len(s) for s in cut), default=0)
    return [s + [pad_value] * (width - len(s)) for s in cut], [len(s) for s in cut]


@settings(max_examples=150, deadline=None)
@given(seqs=seqs_st, data=st.data(), pad=st.integers(-5, 5), max_len=st.none() | st.integers(0, 8))
def test_pad_matches_a_python_loop(seqs, data, pad, max_len):
    idx = data.draw(st.lists(st.integers(0, len(seqs) - 1), max_size=10))
    batch = Ragged.from_sequences(seqs).pad(idx, column="x", pad_value=pad, max_len=max_len)
    rows, lengths = naive_pad([seqs[i] for i in idx], pad, max_len)
    assert batch["x"].dtype == np.int32 and batch["x"].shape == (len(idx), max(lengths, default=0))
    assert batch["x"].tolist() == rows and batch["lengths"].tolist() == lengths


@settings(max_examples=100, deadline=None)
@given(a=seqs_st, b=seqs_st, start=st.integers(0, 5))
def test_arrow_slices_take_and_concat_keep_the_rows(a, b, start):
    arrow = pa.table({"x": pa.array(a + b, type=pa.list_(pa.int32()))}).slice(start)
    r = Ragged.from_arrow(arrow, "x")  # offsets need not start at 0
    want = (a + b)[start:]
    assert [r.values[r.offsets[i]:r.offsets[i + 1]].tolist() for i in range(len(r))] == want
    both = Ragged.concat([r.slice(0, len(r) // 2), r.slice(len(r) // 2, len(r))])
    assert both.offsets[0] == 0 and both.pad(np.arange(len(both)), column="x")["lengths"].tolist() == \
        [len(s) for s in want]
    rev = r.take(np.arange(len(r))[::-1])
    assert rev.pad(np.arange(len(rev)), column="x", pad_value=-9)["x"].tolist() == \
        naive_pad(want[::-1], -9, None)[0]


def test_extras_follow_their_rows():
    r = Ragged.from_records([{"ids": [1], "y": 10}, {"ids": [2, 3], "y": 20}], "ids", ("y",))
    assert r.take([1, 0]).pad([0, 1], column="ids")["y"].tolist() == [20, 10]


def test_ids_that_do_not_fit_int32_are_refused():
    with pytest.raises(OverflowError, match="id 2147483648 does not fit int32"):
        Ragged.from_sequences([np.array([1, 2**31])])
    with pytest.raises(OverflowError):
        Ragged.from_sequences([[1, 2**31]])
    assert as_int32(np.array([5], dtype=np.int64)).dtype == np.int32


def test_records_without_the_column_name_it():
    with pytest.raises(ValueError, match=r"shard-00001.pkl: records need the fields \['ids'\]"):
        Ragged.from_records([{"words": []}], "ids", where="shard-00001.pkl")


def test_non_integer_lists_are_refused_with_the_fix():
    table = pa.table({"words": [["a", "b"]]})
    with pytest.raises(TypeError, match="not a list of integer ids; turn words into ids first"):
        Ragged.from_arrow(table, "words")


def test_float_ids_in_lists_are_refused_not_truncated():
    with pytest.raises(TypeError, match="integers"):
        Ragged.from_sequences([[1.5, 2]])
    assert Ragged.from_sequences([[1, 2], []]).values.tolist() == [1, 2]
    assert Ragged.from_sequences([[], []]).values.dtype == np.int32
