"""Flat token files: every record's token ids end to end, as nanoGPT-style loaders read them.

A record is ``{"input_ids": [int, ...]}`` (a packed sequence may add
``"doc_starts": [...]``, the positions where its documents start, and
``"pad": n``, its padding tokens at the end) or a bare list of ids. Each shard is

- ``shard-00000.tokens``: the ids, little-endian ``uint16`` or ``uint32``, no
  header: ``numpy.memmap(path, dtype=manifest["format_info"]["dtype"], mode="r")``;
- ``shard-00000.idx``: ``int64`` offsets, one more than records: record ``i``
  is ``tokens[idx[i]:idx[i + 1]]`` (document or sequence boundaries);
- ``shard-00000.docs``: ``doc_starts`` and ``pad`` of each record (``int64``:
  ``[flags, n]``, ``n + 1`` offsets into the starts, the starts, ``n`` pads).

The dtype is the same for every shard of a dataset, whatever the partitioning:
``uint16`` if the options give ``vocab_size <= 65536`` (or ``dtype="uint16"``),
else ``uint32``. An id that does not fit (negative, ``>= vocab_size``, or past
the dtype) is a record the format cannot hold: its source is left out and
reported. The manifest's ``format_info`` gives the dtype, the token count of
each shard and in all, and the sequence length when every record has the same.

>>> from dask_prep.write.formats import get_format
>>> fmt = get_format("tokens", vocab_size=50_257)
>>> b = fmt.batch([{"input_ids": [1, 2, 3]}, [4, 5]])
>>> fmt.dtype, b.ids.tolist(), b.offsets.tolist()
('uint16', [1, 2, 3, 4, 5], [0, 3, 5])
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .base import ShardFile, ShardFormat

__all__ = ["TokensFormat", "TokenIdsFormat", "TokenBatch", "token_dtype", "to_token_batch", "seq_len"]

_DTYPES = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4"), "int32": np.dtype("<i4")}
_HAS_DOCS, _HAS_PAD = 1, 2


def token_dtype(vocab_size: int | None = None, dtype: str | None = None, *,
                wide: str = "uint32") -> str:
    """The dtype of a dataset's ids: ``dtype`` if given, else ``uint16`` when
    ``vocab_size <= 65536``, else ``wide``. Never from the data itself, so every
    partition of a run decides the same."""
    if dtype is not None:
        if dtype not in ("uint16", wide):
            raise ValueError(f"dtype must be 'uint16' or {wide!r}, not {dtype!r}")
        if vocab_size is not None and dtype == "uint16" and vocab_size > 65536:
            raise ValueError(f"vocab_size {vocab_size} does not fit dtype uint16")
        return dtype
    if vocab_size is not None:
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
            raise ValueError(f"vocab_size must be a positive integer, not {vocab_size!r}")
        return "uint16" if vocab_size <= 65536 else wide
    return wide


@dataclass
class TokenBatch:
    """Records as flat arrays: ``ids`` of every record end to end, ``offsets``
    (``n + 1``), and each record's ``doc_starts`` (flat, with ``doc_offsets``)
    and ``pads``; ``flags`` say which of those the records carried."""

    ids: np.ndarray
    offsets: np.ndarray
    doc_offsets: np.ndarray
    doc_starts: np.ndarray
    pads: np.ndarray
    flags: int = 0

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @classmethod
    def empty(cls, dtype) -> TokenBatch:
        z = np.zeros(1, np.int64)
        return cls(np.zeros(0, dtype), z, z.copy(), np.zeros(0, np.int64), np.zeros(0, np.int64))

    @classmethod
    def concat(cls, batches: Sequence[TokenBatch], dtype) -> TokenBatch:
        if not batches:
            return cls.empty(dtype)
        if len(batches) == 1:
            return batches[0]
        return cls(np.concatenate([b.ids for b in batches]),
                   _join_offsets([b.offsets for b in batches]),
                   _join_offsets([b.doc_offsets for b in batches]),
                   np.concatenate([b.doc_starts for b in batches]),
                   np.concatenate([b.pads for b in batches]),
                   _or(b.flags for b in batches))

    def slice(self, start: int, stop: int) -> TokenBatch:
        a, b = self.offsets[start], self.offsets[stop]
        da, db = self.doc_offsets[start], self.doc_offsets[stop]
        return TokenBatch(self.ids[a:b], self.offsets[start:stop + 1] - a,
                          self.doc_offsets[start:stop + 1] - da, self.doc_starts[da:db],
                          self.pads[start:stop], self.flags)

    def records(self) -> list:
        ids, off = self.ids.tolist(), self.offsets.tolist()
        starts, doff, pads = self.doc_starts.tolist(), self.doc_offsets.tolist(), self.pads.tolist()
        out = []
        for i in range(len(self)):
            rec = {"input_ids": ids[off[i]:off[i + 1]]}
            if self.flags & _HAS_DOCS:
                rec["doc_starts"] = starts[doff[i]:doff[i + 1]]
            if self.flags & _HAS_PAD:
                rec["pad"] = pads[i]
            out.append(rec)
        return out

    # -- the companion holding doc_starts and pads ----------------------------------

    def docs_bytes(self) -> bytes:
        head = np.array([self.flags, len(self)], np.int64)
        return b"".join(a.astype("<i8", copy=False).tobytes()
                        for a in (head, self.doc_offsets, self.doc_starts, self.pads))

    @classmethod
    def from_files(cls, ids: np.ndarray, offsets: np.ndarray, docs: np.ndarray) -> TokenBatch:
        flags, n = int(docs[0]), int(docs[1])
        doc_offsets = docs[2:n + 3]
        nstarts = int(doc_offsets[-1])
        starts = docs[n + 3:n + 3 + nstarts]
        pads = docs[n + 3 + nstarts:n + 3 + nstarts + n]
        if len(offsets) != n + 1 or len(pads) != n or int(offsets[-1]) != len(ids):
            raise ValueError("the shard's token, offset and document files disagree")
        return cls(ids, offsets, doc_offsets, starts, pads, flags)


def _join_offsets(parts: list) -> np.ndarray:
    out, base = [np.zeros(1, np.int64)], 0
    for p in parts:
        out.append(p[1:] + base)
        base += int(p[-1])
    return np.concatenate(out)


def _or(flags) -> int:
    f = 0
    for x in flags:
        f |= x
    return f


def _ints(values, what: str, i: int) -> np.ndarray:
    try:
        a = np.asarray(values)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"record {i}: {what} is not a list of integers ({exc})") from None
    if a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
        if a.size == 0 and a.ndim == 1:
            return a.astype(np.int64)
        raise ValueError(f"record {i}: {what} is not a flat list of integers")
    return a.astype(np.int64) if a.dtype.kind == "i" and a.dtype != np.int64 else a


def to_token_batch(records: list, dtype: str, vocab_size: int | None = None) -> TokenBatch:
    """Records of the token contract as a :class:`TokenBatch` of ``dtype`` ids;
    ``ValueError`` for a record that is not one or an id that does not fit."""
    np_dtype = _DTYPES[dtype]
    limit = int(np.iinfo(np_dtype).max) + 1
    if vocab_size is not None:
        limit = min(limit, vocab_size)
    ids, lengths, starts, nstarts, pads, flags = [], [], [], [], [], 0
    for i, rec in enumerate(records):
        if isinstance(rec, dict):
            if "input_ids" not in rec:
                raise ValueError(f"record {i} has no 'input_ids' (fields: {', '.join(map(str, rec))})")
            a = _ints(rec["input_ids"], "input_ids", i)
            d = rec.get("doc_starts")
            p = rec.get("pad")
            if d is not None:
                flags |= _HAS_DOCS
                d = _ints(d, "doc_starts", i)
                if d.size and (d.min() < 0 or d.max() >= max(len(a), 1)):
                    raise ValueError(f"record {i}: doc_starts outside its {len(a)} tokens")
                starts.append(d)
                nstarts.append(len(d))
            else:
                nstarts.append(0)
            if p is not None:
                flags |= _HAS_PAD
                if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or not 0 <= p <= len(a):
                    raise ValueError(f"record {i}: pad is {p!r}, not a count within its {len(a)} tokens")
            pads.append(int(p or 0))
        elif isinstance(rec, (str, bytes)):
            raise ValueError(f"record {i} is {type(rec).__name__}, not token ids")
        else:
            a = _ints(rec, "the record", i)
            nstarts.append(0)
            pads.append(0)
        if a.size and (int(a.min()) < 0 or int(a.max()) >= limit):
            bad = int(a.max()) if int(a.max()) >= limit else int(a.min())
            what = f"vocab_size {vocab_size}" if vocab_size is not None and limit == vocab_size else dtype
            raise ValueError(f"record {i}: token id {bad} does not fit {what}")
        ids.append(a)
        lengths.append(len(a))
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    doc_offsets = np.zeros(len(nstarts) + 1, np.int64)
    np.cumsum(nstarts, out=doc_offsets[1:])
    return TokenBatch(np.concatenate(ids).astype(np_dtype) if ids else np.zeros(0, np_dtype), offsets,
                      doc_offsets, np.concatenate(starts) if starts else np.zeros(0, np.int64),
                      np.array(pads, np.int64), flags)


class TokenIdsFormat(ShardFormat):
    """What the formats of raw token ids share: a shard is its ids' bytes, as
    one :class:`TokenBatch`, plus companions (``companion_bytes``)."""

    ids_column = "input_ids"

    def length(self, batch: TokenBatch) -> int:
        return len(batch)

    def slice(self, batch: TokenBatch, start: int, stop: int) -> TokenBatch:
        return batch.slice(start, stop)

    def write(self, batch: TokenBatch, path: str) -> dict:
        with open(path, "wb") as f:
            f.write(memoryview(np.ascontiguousarray(batch.ids)).cast("B"))
        return self.companion_bytes(batch)

    def encode(self, batch: TokenBatch) -> bytes:
        return np.ascontiguousarray(batch.ids).tobytes()


class TokensFormat(TokenIdsFormat):
    """Flat ``uint16``/``uint32`` token files with ``int64`` offsets (see the module)."""

    name, suffix, companions = "tokens", ".tokens", (".docs", ".idx")
    record_errors = (ValueError, TypeError)
    #: The dtype when no vocabulary size says the ids fit in 16 bits.
    wide = "uint32"

    def __init__(self, schema=None, *, vocab_size: int | None = None, dtype: str | None = None):
        super().__init__(schema)
        self.vocab_size = vocab_size
        self.dtype = token_dtype(vocab_size, dtype, wide=self.wide)

    # -- writing ------------------------------------------------------------------

    def batch(self, records: list) -> TokenBatch:
        return to_token_batch(records, self.dtype, self.vocab_size)

    def concat(self, batches) -> TokenBatch:
        return TokenBatch.concat(list(batches), _DTYPES[self.dtype])

    def companion_bytes(self, batch: TokenBatch) -> dict:
        return {".idx": batch.offsets.astype("<i8", copy=False).tobytes(), ".docs": batch.docs_bytes()}

    def finalize(self, out, shards: list) -> dict:
        """The manifest's ``format_info``: dtype, tokens per shard and in all,
        and the sequence length if every record has the same."""
        itemsize = _DTYPES[self.dtype].itemsize
        tokens = [s["bytes"] // itemsize for s in shards]
        return {"dtype": self.dtype, "vocab_size": self.vocab_size, "total_tokens": sum(tokens),
                "tokens_per_shard": tokens, "seq_len": seq_len(out, shards, _lengths),
                "files": {"tokens": self.suffix, "offsets": ".idx", "offsets_dtype": "int64"}}

    # -- reading --------------------------------------------------------------------

    def decode(self, shard: ShardFile) -> TokenBatch:
        offsets = np.frombuffer(shard.read(".idx"), "<i8")
        data = shard.read()
        ntok = int(offsets[-1]) if len(offsets) else 0
        if ntok == 0:
            ids = np.zeros(0, _DTYPES[self.dtype])
        elif len(data) % ntok or len(data) // ntok not in (2, 4):
            raise ValueError(f"{shard.name}: {len(data)} bytes do not hold {ntok} token ids")
        else:
            ids = np.frombuffer(data, "<u2" if len(data) // ntok == 2 else "<u4")
        return TokenBatch.from_files(ids, offsets, np.frombuffer(shard.read(".docs"), "<i8"))

    def records(self, batch: TokenBatch) -> list:
        return batch.records()

    def count(self, shard: ShardFile) -> int:
        return len(self.decode(shard))

    def table(self, shard: ShardFile, columns: list):
        import pyarrow as pa
        if columns is not None and set(columns) - {"input_ids"}:
            return None  # doc_starts and pad come through records
        b = self.decode(shard)
        ids = pa.ListArray.from_arrays(pa.array(b.offsets.astype(np.int32)), pa.array(b.ids.astype(np.int32)))
        return pa.table({"input_ids": ids})


def _lengths(idx: bytes) -> np.ndarray:
    return np.diff(np.frombuffer(idx, "<i8"))


def seq_len(out, shards: list, lengths) -> int | None:
    """The one length every record has, or ``None``: ``lengths(data)`` of each
    shard's ``.idx`` companion (a few bytes a record, read at commit)."""
    seen: set = set()
    for s in shards:
        idx = next((c["file"] for c in s.get("companions", ()) if c["file"].endswith(".idx")), None)
        if idx is None or not s["records"]:
            continue
        seen.update(np.unique(lengths(out.read_bytes(idx))).tolist())
        if len(seen) > 1:
            return None
    return int(seen.pop()) if len(seen) == 1 else None
