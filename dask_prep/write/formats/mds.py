"""MosaicML MDS shards, read by ``streaming.StreamingDataset(local="OUT")``.

Records are the token contract (``{"input_ids": [...]}``, packed sequences
with ``"doc_starts"`` and ``"pad"``, or bare lists of ids). Each shard is one
MDS file as ``streaming``'s ``MDSWriter`` writes it (version 2, no
compression)::

    u32 samples N   u32 offsets[N + 1] (from the file's start)   the config (JSON)
    each sample: u32 sizes of its variable-size columns, then the columns in name order

Columns: ``input_ids`` (``ndarray:uint16`` or ``ndarray:uint32``: a dtype
byte-free, shape-prefixed array), and ``doc_starts`` (``ndarray:int64``) and
``pad`` (``int64``) when the shard's records have them. MDS cannot hold an
empty array, so an empty sequence is a record the format cannot hold (its
source is left out and reported). The dtype follows the ``tokens`` format's
rule: ``uint16`` if ``format_options`` give ``vocab_size <= 65536``, else
``uint32``.

The dataset-level ``index.json`` that ``streaming`` reads is written at
commit, once every shard has its final name, before the manifest, which stays
the proof that the dataset is complete.

>>> from dask_prep.write.formats import get_format
>>> fmt = get_format("mds", vocab_size=100)
>>> data = fmt.encode(fmt.batch([[1, 2], [3]]))
>>> int.from_bytes(data[:4], "little"), [r["input_ids"] for r in parse(data)[1]]
(2, [[1, 2], [3]])
"""
from __future__ import annotations

import json

import numpy as np

from .base import ShardFile, ShardFormat
from .tokens import TokenBatch, to_token_batch, token_dtype

__all__ = ["MDSFormat", "parse", "INDEX"]

INDEX = "index.json"
_SHAPE_U8, _SHAPE_U16, _SHAPE_U32 = 0, 1, 2  # MDS NDArray shape dtypes (uint8/16/32)


def _config(columns: list[tuple[str, str, int | None]]) -> dict:
    names, encodings, sizes = zip(*columns)
    return {"column_encodings": list(encodings), "column_names": list(names), "column_sizes": list(sizes),
            "compression": None, "format": "mds", "hashes": [], "size_limit": None, "version": 2}


def _columns(batch: TokenBatch, dtype: str) -> list:
    cols = []
    if batch.flags & 1:
        cols.append(("doc_starts", "ndarray:int64", None))
    cols.append(("input_ids", f"ndarray:{dtype}", None))
    if batch.flags & 2:
        cols.append(("pad", "int64", 8))
    return cols  # in name order, as MDSWriter sorts them


def _shape(n: int) -> bytes:
    """A 1-d NDArray's shape prefix: ``(ndim << 2) | shape dtype``, then the length."""
    if n < 1 << 8:
        return bytes([(1 << 2) | _SHAPE_U8, n])
    if n < 1 << 16:
        return bytes([(1 << 2) | _SHAPE_U16]) + n.to_bytes(2, "little")
    return bytes([(1 << 2) | _SHAPE_U32]) + n.to_bytes(4, "little")


def encode_shard(batch: TokenBatch, dtype: str) -> bytes:
    cols = _columns(batch, dtype)
    config = json.dumps(_config(cols), sort_keys=True).encode()
    ids, off, starts, doff = batch.ids, batch.offsets, batch.doc_starts, batch.doc_offsets
    samples = []
    for i in range(len(batch)):
        sizes, parts = [], []
        for name, _, _ in cols:
            if name == "pad":
                parts.append(np.int64(batch.pads[i]).tobytes())
                continue
            values = ids[off[i]:off[i + 1]] if name == "input_ids" else starts[doff[i]:doff[i + 1]].astype("<i8")
            datum = _shape(len(values)) + values.tobytes()
            sizes.append(len(datum))
            parts.append(datum)
        samples.append(np.array(sizes, "<u4").tobytes() + b"".join(parts))
    n = len(samples)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum([len(s) for s in samples], out=offsets[1:])
    offsets += 4 + 4 * (n + 1) + len(config)
    if offsets[-1] >= 1 << 32:
        raise ValueError(f"an MDS shard holds at most 4 GiB; these {n} records take {offsets[-1]:,} bytes")
    return np.uint32(n).tobytes() + offsets.astype("<u4").tobytes() + config + b"".join(samples)


def _header(data: bytes) -> tuple[int, np.ndarray, dict]:
    n = int(np.frombuffer(data, "<u4", 1)[0])
    offsets = np.frombuffer(data, "<u4", n + 1, 4)
    start = 4 + 4 * (n + 1)
    return n, offsets, json.loads(bytes(data[start:int(offsets[0])]))


def parse(data: bytes) -> tuple[dict, list]:
    """``(config, records)`` of an MDS shard that this module wrote."""
    n, offsets, config = _header(data)
    if len(data) != int(offsets[-1]):
        raise ValueError(f"an MDS shard of {len(data)} bytes whose offsets end at {int(offsets[-1])}")
    names, encodings, fixed = config["column_names"], config["column_encodings"], config["column_sizes"]
    nvar = sum(s is None for s in fixed)
    records = []
    for i in range(n):
        at = int(offsets[i])
        sizes = iter(np.frombuffer(data, "<u4", nvar, at).tolist())
        at += 4 * nvar
        rec = {}
        for name, enc, size in zip(names, encodings, fixed):
            size = next(sizes) if size is None else size
            datum = data[at:at + size]
            at += size
            if enc == "int64":
                rec[name] = int(np.frombuffer(datum, "<i8", 1)[0])
                continue
            code = datum[0] & 3
            width = 1 << code
            length = int.from_bytes(datum[1:1 + width], "little")
            rec[name] = np.frombuffer(datum, enc.split(":")[1], length, 1 + width).tolist()
        records.append(rec)
    return config, records


class MDSFormat(ShardFormat):
    """MosaicML MDS shards and their ``index.json`` (see the module)."""

    name, suffix, dataset_files = "mds", ".mds", (INDEX,)
    ids_column = "input_ids"
    record_errors = (ValueError, TypeError)

    def __init__(self, schema=None, *, vocab_size: int | None = None, dtype: str | None = None):
        super().__init__(schema)
        self.vocab_size = vocab_size
        self.dtype = token_dtype(vocab_size, dtype)

    def batch(self, records: list) -> TokenBatch:
        b = to_token_batch(records, self.dtype, self.vocab_size)
        if len(b) and b.lengths.min() == 0:
            raise ValueError(f"record {int(np.argmin(b.lengths))} has no token ids: MDS cannot hold an empty array")
        if b.flags & 1 and len(b) and np.diff(b.doc_offsets).min() == 0:
            raise ValueError("a record has an empty doc_starts: MDS cannot hold an empty array")
        return b

    def concat(self, batches) -> TokenBatch:
        return TokenBatch.concat(list(batches), np.dtype(self.dtype))

    def length(self, batch: TokenBatch) -> int:
        return len(batch)

    def slice(self, batch: TokenBatch, start: int, stop: int) -> TokenBatch:
        return batch.slice(start, stop)

    def encode(self, batch: TokenBatch) -> bytes:
        return encode_shard(batch, self.dtype)

    def write(self, batch: TokenBatch, path: str) -> None:
        with open(path, "wb") as f:
            f.write(self.encode(batch))

    def finalize(self, out, shards: list) -> dict:
        """Write ``index.json`` (each shard's columns read from its header) and
        give the manifest's ``format_info``."""
        entries, columns = [], set()
        for s in shards:
            with out.fs.open(out.path(s["file"]), "rb") as f:
                head = f.read(4)
                n = int(np.frombuffer(head, "<u4", 1)[0])
                offsets = f.read(4 * (n + 1))
                first = int(np.frombuffer(offsets, "<u4", 1)[0])
                _, _, config = _header(head + offsets + f.read(first - len(head) - len(offsets)))
            entries.append({**config, "samples": n, "zip_data": None,
                            "raw_data": {"basename": s["file"], "bytes": s["bytes"], "hashes": {}}})
            columns.update(zip(config["column_names"], config["column_encodings"]))
        out.write_atomic(INDEX, json.dumps({"version": 2, "shards": entries}, sort_keys=True).encode())
        return {"dtype": self.dtype, "vocab_size": self.vocab_size, "index": INDEX,
                "columns": dict(sorted(columns))}

    def decode(self, shard: ShardFile) -> TokenBatch:
        config, records = parse(shard.read())
        encoding = dict(zip(config["column_names"], config["column_encodings"]))["input_ids"]
        return to_token_batch(records, encoding.split(":")[1])

    def records(self, batch: TokenBatch) -> list:
        return batch.records()

    def count(self, shard: ShardFile) -> int:
        with shard.open() as f:
            return int(np.frombuffer(f.read(4), "<u4", 1)[0])
