"""Ragged id sequences held compactly (offsets + values), padded only per batch.

A :class:`Ragged` is what an Arrow ``list<int32>`` column is: one flat int32
array of every sequence's values and an offsets array saying where each
sequence starts. Taking rows, concatenating and padding are vectorized numpy
(no Python loop per token), so padding a batch costs one gather and one masked
assignment.

>>> import numpy as np
>>> from dask_prep.read.ragged import Ragged
>>> r = Ragged.from_sequences([[5, 6, 7], [8], []], extras={"label": np.array([1, 0, 1])})
>>> len(r), r.lengths.tolist()
(3, [3, 1, 0])
>>> batch = r.pad([0, 1, 2], column="ids", pad_value=0, max_len=2)
>>> batch["ids"].tolist(), batch["lengths"].tolist(), batch["label"].tolist()
([[5, 6], [8, 0], [0, 0]], [2, 1, 0], [1, 0, 1])
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

__all__ = ["Ragged", "ranges", "as_int32"]


def ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + n)`` for every (s, n), without a Python loop.

    >>> ranges(np.array([10, 0]), np.array([2, 3])).tolist()
    [10, 11, 0, 1, 2]
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    shift = np.asarray(starts, dtype=np.int64) - (np.cumsum(lengths) - lengths)
    return np.repeat(shift, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)


def as_int32(values: np.ndarray) -> np.ndarray:
    """``values`` as int32, refusing (not wrapping) ids that do not fit.

    >>> as_int32(np.array([1, 2**31]))
    Traceback (most recent call last):
    ...
    OverflowError: id 2147483648 does not fit int32 (batches hold int32 ids); keep ids below 2**31
    """
    if values.dtype == np.int32:
        return values
    if not np.issubdtype(values.dtype, np.integer) and values.size:
        raise TypeError(f"ids must be integers, got {values.dtype} values like {values.flat[0]!r}")
    info = np.iinfo(np.int32)
    if values.size and (values.min() < info.min or values.max() > info.max):
        bad = values.max() if values.max() > info.max else values.min()
        raise OverflowError(f"id {bad} does not fit int32 (batches hold int32 ids); keep ids below 2**31")
    return values.astype(np.int32)


@dataclass(frozen=True)
class Ragged:
    """Rows of variable-length int32 sequences plus per-row ``extras`` columns.

    ``offsets`` has one more entry than there are rows and points into
    ``values`` (it need not start at 0: slices of Arrow arrays keep theirs).
    """

    offsets: np.ndarray
    values: np.ndarray
    extras: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def tokens(self) -> int:
        return int(self.offsets[-1] - self.offsets[0])

    @classmethod
    def empty(cls, extras: Sequence[str] = ()) -> Ragged:
        return cls(np.zeros(1, np.int64), np.zeros(0, np.int32), {k: np.zeros(0) for k in extras})

    @classmethod
    def from_sequences(cls, seqs: Sequence, extras: dict | None = None) -> Ragged:
        """From lists (or arrays) of ints; values must fit int32."""
        lengths = np.fromiter(map(len, seqs), np.int64, count=len(seqs))
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        if not offsets[-1]:
            values = np.zeros(0, np.int32)
        elif all(isinstance(s, np.ndarray) for s in seqs):
            values = as_int32(np.concatenate(seqs))
        else:  # through a numpy array, so floats are refused rather than truncated
            values = as_int32(np.array(list(itertools.chain.from_iterable(seqs))))
        return cls(offsets, values, dict(extras or {}))

    @classmethod
    def from_records(cls, records, column: str, extras: Sequence[str] = (), *,
                     where: str = "records") -> Ragged:
        """From dict records (any iterable, read once): ``column`` ids plus ``extras`` fields."""
        seqs: list = []
        cols: dict = {k: [] for k in extras}
        try:
            for rec in records:
                seqs.append(rec[column])
                for k, values in cols.items():
                    values.append(rec[k])
        except (KeyError, TypeError, IndexError) as exc:
            raise ValueError(f"{where}: records need the fields {[column, *extras]} "
                             f"(dicts); failed with {type(exc).__name__}: {exc}") from None
        return cls.from_sequences(seqs, {k: _column(v) for k, v in cols.items()})

    @classmethod
    def from_arrow(cls, table: pa.Table, column: str, extras: Sequence[str] = ()) -> Ragged:
        """From a table whose ``column`` is a list of integers (``list<int32>`` on disk)."""
        arr = table.column(column).combine_chunks()
        if not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)) or \
                not pa.types.is_integer(arr.type.value_type):
            raise TypeError(f"column {column!r} is {arr.type}, not a list of integer ids; "
                            "turn words into ids first (dask_prep.with_token_ids or token_ids)")
        values = arr.values
        if values.null_count:
            raise ValueError(f"column {column!r} has null ids inside sequences; "
                             "every id must be an integer")
        values = as_int32(values.to_numpy(zero_copy_only=False))
        return cls(arr.offsets.to_numpy().astype(np.int64), values,
                   {k: table.column(k).to_numpy() for k in extras})

    def _lengths(self, idx: np.ndarray) -> np.ndarray:
        return self.offsets[idx + 1] - self.offsets[idx]

    def take(self, idx) -> Ragged:
        """A compact copy holding rows ``idx`` in that order."""
        idx = np.asarray(idx, dtype=np.int64)
        lengths = self._lengths(idx)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        values = self.values[ranges(self.offsets[idx], lengths)]
        return Ragged(offsets, values, {k: v[idx] for k, v in self.extras.items()})

    def slice(self, start: int, stop: int) -> Ragged:
        """Rows ``start:stop`` (a view, no copy)."""
        return Ragged(self.offsets[start:stop + 1], self.values,
                      {k: v[start:stop] for k, v in self.extras.items()})

    @staticmethod
    def concat(parts: Sequence[Ragged]) -> Ragged:
        """One compact Ragged of all rows of ``parts``, in order."""
        parts = [p for p in parts if len(p)] or list(parts[:1])
        if len(parts) == 1:
            return parts[0]
        compact = [p.take(np.arange(len(p))) if p.offsets[0] else p for p in parts]
        lengths = np.concatenate([p.lengths for p in compact])
        values = np.concatenate([p.values[:p.offsets[-1]] for p in compact])
        extras = {k: np.concatenate([p.extras[k] for p in compact]) for k in compact[0].extras}
        return Ragged(np.concatenate([[0], np.cumsum(lengths)]), values, extras)

    def pad(self, idx, *, column: str, pad_value: int = 0, max_len: int | None = None) -> dict:
        """Rows ``idx`` as ``{column: int32[B, L], "lengths": int32[B], **extras}``.

        ``L`` is the longest selected row, capped at ``max_len`` (longer rows
        keep their first ``max_len`` ids).
        """
        idx = np.asarray(idx, dtype=np.int64)
        lengths = self._lengths(idx)
        if max_len is not None:
            lengths = np.minimum(lengths, max_len)
        width = int(lengths.max()) if len(lengths) else 0
        out = np.full((len(idx), width), pad_value, dtype=np.int32)
        out[np.arange(width) < lengths[:, None]] = self.values[ranges(self.offsets[idx], lengths)]
        batch = {column: out, "lengths": lengths.astype(np.int32)}
        batch.update((k, v[idx]) for k, v in self.extras.items())
        return batch


def _column(values: list) -> np.ndarray:
    """Numbers as a numeric array; anything else (text, lists) as a 1-D object
    array, as Parquet columns come out of Arrow."""
    try:
        arr = np.asarray(values)
    except ValueError:  # ragged lists
        arr = None
    if arr is not None and arr.ndim == 1 and arr.dtype.kind in "biuf":
        return arr
    out = np.empty(len(values), object)
    out[:] = values
    return out
