"""Megatron-LM indexed datasets: each shard a ``.bin`` and ``.idx`` pair that
``megatron.core.datasets.indexed_dataset.IndexedDataset("OUT/shard-00000")`` reads.

Records are the token contract (``{"input_ids": [...]}`` or a bare list of
ids); each record is one sequence and one document. ``doc_starts`` and
``pad`` of packed sequences have no place in this layout and are not kept
(the ``tokens`` and ``mds`` formats keep them). The layout, as Megatron's
``_IndexWriter`` writes it (``megatron/core/datasets/indexed_dataset.py``)::

    .bin  the ids of every sequence end to end (no header)
    .idx  b"MMIDIDX\\x00\\x00"  u64 version 1  u8 dtype code
          u64 sequence count N  u64 document count N + 1
          i32 sequence lengths[N]  i64 sequence byte pointers[N]
          i64 document indices[N + 1] (0, 1, ..., N)

The dtype is ``uint16`` (code 8) when ``format_options`` give
``vocab_size <= 65536``, else ``int32`` (code 4), as Megatron's
``preprocess_data.py`` chooses; never from the data, so every partitioning
writes the same. The manifest's ``format_info`` lists the shards' path
prefixes for ``--data-path``.

>>> from dask_prep.write.formats import get_format
>>> fmt = get_format("megatron", vocab_size=32_000)
>>> idx = fmt.companion_bytes(fmt.batch([[1, 2, 3], [4]]))[".idx"]
>>> idx[:9], idx[17], len(idx)
(b'MMIDIDX\\x00\\x00', 8, 82)
"""
from __future__ import annotations

import struct

import numpy as np

from .base import ShardFile
from .tokens import TokenBatch, TokenIdsFormat, seq_len, to_token_batch, token_dtype

__all__ = ["MegatronFormat", "index_bytes", "read_index"]

HEADER = b"MMIDIDX\x00\x00"
#: Megatron's ``DType`` codes for the dtypes written here.
CODES = {"uint16": 8, "int32": 4}
_NUMPY = {8: np.dtype("<u2"), 4: np.dtype("<i4")}


def index_bytes(lengths: np.ndarray, dtype: str) -> bytes:
    """The ``.idx`` file of sequences of ``lengths`` (one document each)."""
    n = len(lengths)
    pointers = np.zeros(n, np.int64)
    if n:
        np.cumsum(lengths[:-1] * _NUMPY[CODES[dtype]].itemsize, out=pointers[1:])
    return b"".join([HEADER, struct.pack("<Q", 1), struct.pack("<B", CODES[dtype]),
                     struct.pack("<Q", n), struct.pack("<Q", n + 1),
                     lengths.astype("<i4").tobytes(), pointers.astype("<i8").tobytes(),
                     np.arange(n + 1, dtype="<i8").tobytes()])


def read_index(data: bytes) -> tuple[np.dtype, np.ndarray, np.ndarray, np.ndarray]:
    """``(dtype, lengths, pointers, document indices)`` of an ``.idx`` file."""
    if data[:9] != HEADER or struct.unpack_from("<Q", data, 9)[0] != 1:
        raise ValueError("not a Megatron index (version 1)")
    code = data[17]
    if code not in _NUMPY:
        raise ValueError(f"Megatron dtype code {code} is not one dask-prep writes")
    n, docs = struct.unpack_from("<QQ", data, 18)
    lengths = np.frombuffer(data, "<i4", n, 34)
    pointers = np.frombuffer(data, "<i8", n, 34 + 4 * n)
    documents = np.frombuffer(data, "<i8", docs, 34 + 12 * n)
    return _NUMPY[code], lengths, pointers, documents


class MegatronFormat(TokenIdsFormat):
    """Megatron-LM ``.bin`` + ``.idx`` shards (see the module)."""

    name, suffix, companions = "megatron", ".bin", (".idx",)
    record_errors = (ValueError, TypeError)

    def __init__(self, schema=None, *, vocab_size: int | None = None, dtype: str | None = None):
        super().__init__(schema)
        self.vocab_size = vocab_size
        self.dtype = token_dtype(vocab_size, dtype, wide="int32")

    def batch(self, records: list) -> TokenBatch:
        b = to_token_batch(records, self.dtype, self.vocab_size)
        return TokenBatch(b.ids, b.offsets, np.zeros(len(b) + 1, np.int64), np.zeros(0, np.int64),
                          np.zeros(len(b), np.int64))  # one document a sequence, no padding kept

    def concat(self, batches) -> TokenBatch:
        return TokenBatch.concat(list(batches), _NUMPY[CODES[self.dtype]])

    def companion_bytes(self, batch: TokenBatch) -> dict:
        return {".idx": index_bytes(batch.lengths, self.dtype)}

    def finalize(self, out, shards: list) -> dict:
        itemsize = _NUMPY[CODES[self.dtype]].itemsize
        tokens = [s["bytes"] // itemsize for s in shards]
        return {"dtype": self.dtype, "vocab_size": self.vocab_size, "total_tokens": sum(tokens),
                "tokens_per_shard": tokens,
                "seq_len": seq_len(out, shards, lambda idx: read_index(idx)[1]),
                "path_prefixes": [s["file"][: -len(self.suffix)] for s in shards]}

    def decode(self, shard: ShardFile) -> TokenBatch:
        dtype, lengths, pointers, _ = read_index(shard.read(".idx"))
        data = shard.read()
        ids = np.frombuffer(data, dtype)
        offsets = np.zeros(len(lengths) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        if int(offsets[-1]) * dtype.itemsize != len(data) or \
                not np.array_equal(pointers, offsets[:-1] * dtype.itemsize):
            raise ValueError(f"{shard.name}: its .idx does not describe its {len(data)} bytes")
        n = len(lengths)
        return TokenBatch(ids, offsets, np.zeros(n + 1, np.int64), np.zeros(0, np.int64), np.zeros(n, np.int64))

    def records(self, batch: TokenBatch) -> list:
        return batch.records()

    def count(self, shard: ShardFile) -> int:
        return len(self.decode(shard))

    def table(self, shard: ShardFile, columns: list):
        import pyarrow as pa
        if columns is not None and set(columns) - {"input_ids"}:
            return None
        b = self.decode(shard)
        ids = pa.ListArray.from_arrays(pa.array(b.offsets.astype(np.int32)), pa.array(b.ids.astype(np.int32)))
        return pa.table({"input_ids": ids})
