"""An order-free fingerprint of the records in a folder of Parquet shards.

``fingerprint(folder)`` reads every ``*.parquet`` file batch by batch and returns
``Fingerprint(records, columns, digest, shard_sizes)``. ``digest`` is the sum,
modulo 2**64, of a 64-bit hash of every record: equal for two folders holding
the same multiset of records however they are split into files or ordered, and
doubled (``twice``) for a folder holding every record twice. Hashes are
computed with numpy on the Arrow buffers, so a few GB of shards take seconds.

A record's hash covers its column names and values; integers are compared as
int64, floats as float64 and strings as UTF-8 bytes, so ``int32`` vs ``int64``
or ``string`` vs ``large_string`` (a matter of the writer) do not differ.
"""
from __future__ import annotations

import zlib
from hashlib import blake2b
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

U64 = np.uint64
K_POS, K_LEN, K_NULL = U64(0x9E3779B97F4A7C15), U64(0xC2B2AE3D27D4EB4F), U64(0x165667B19E3779F9)


class Fingerprint(NamedTuple):
    records: int
    columns: tuple[str, ...]
    digest: int
    shard_sizes: tuple[int, ...]

    def same_records(self, other: "Fingerprint") -> bool:
        return (self.records, self.columns, self.digest) == (other.records, other.columns, other.digest)

    def twice(self) -> "Fingerprint":
        """The fingerprint of a folder holding every record of this one twice."""
        return self._replace(records=2 * self.records, digest=2 * self.digest % 2**64)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer, element-wise on uint64 (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> U64(30))
        x = x * U64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> U64(27))
        x = x * U64(0x94D049BB133111EB)
        return x ^ (x >> U64(31))


def _segments(element_hashes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """One hash per segment ``[offsets[i], offsets[i+1])`` of ``element_hashes``, position-aware."""
    lengths = np.diff(offsets)
    starts = np.repeat(offsets[:-1], lengths)
    with np.errstate(over="ignore"):
        position = (np.arange(offsets[0], offsets[-1], dtype=np.int64) - starts).astype(U64)
        h = _mix(element_hashes + position * K_POS)
        sums = np.concatenate([np.zeros(1, U64), np.cumsum(h, dtype=U64)])
        base = offsets - offsets[0]
        return _mix(sums[base[1:]] - sums[base[:-1]] + lengths.astype(U64) * K_LEN)


def _hash(arr: pa.Array, top: bool = True) -> np.ndarray:
    """A uint64 hash per element of ``arr`` (nulls hash to a constant).

    Strings in a record's own fields (often long) are hashed one by one with
    BLAKE2b, ~1 GB/s; strings inside lists (short words) with numpy, per byte.
    """
    t = arr.type
    if pa.types.is_dictionary(t):
        arr = arr.dictionary_decode()
        t = arr.type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) \
            or pa.types.is_large_binary(t):
        arr = arr.cast(pa.large_binary())
        offsets = np.frombuffer(arr.buffers()[1], np.int64)[arr.offset:arr.offset + len(arr) + 1]
        if top:
            data = memoryview(arr.buffers()[2]) if len(arr) else memoryview(b"")
            bounds = offsets.tolist()
            digests = b"".join([blake2b(data[a:b], digest_size=8).digest()
                                for a, b in zip(bounds, bounds[1:])])
            h = np.frombuffer(digests, U64).copy()
        else:
            data = np.frombuffer(arr.buffers()[2], np.uint8) if len(arr) else np.zeros(0, np.uint8)
            values = data[offsets[0]:offsets[-1]].astype(U64) + U64(1)
            h = _segments(values, offsets)
    elif pa.types.is_list(t) or pa.types.is_large_list(t):
        arr = arr.cast(pa.large_list(t.value_type))
        offsets = np.asarray(arr.offsets, dtype=np.int64)
        inner = _hash(arr.values.slice(offsets[0], offsets[-1] - offsets[0]), top=False)
        h = _segments(inner, offsets - offsets[0]) if len(arr) else np.zeros(0, U64)
    elif pa.types.is_integer(t) or pa.types.is_boolean(t):
        h = _mix(pc.fill_null(arr.cast(pa.int64()), 0).to_numpy(zero_copy_only=False).view(U64))
    elif pa.types.is_floating(t):
        h = _mix(pc.fill_null(arr.cast(pa.float64()), 0.0).to_numpy(zero_copy_only=False).view(U64))
    else:
        raise TypeError(f"no record hash for Arrow type {t}")
    if arr.null_count:
        h = np.where(arr.is_null().to_numpy(zero_copy_only=False), K_NULL, h)
    return h


def record_hashes(batch: pa.RecordBatch | pa.Table) -> np.ndarray:
    """A uint64 hash per record of ``batch``, independent of column order."""
    total = np.zeros(batch.num_rows, U64)
    with np.errstate(over="ignore"):
        for name, col in zip(batch.column_names, batch.columns):
            col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
            total += _mix(_hash(col) + U64(zlib.crc32(name.encode())) * K_POS)
    return _mix(total)


def fingerprint(folder) -> Fingerprint:
    """The :class:`Fingerprint` of every ``*.parquet`` file under ``folder``."""
    digest, records, columns, sizes = 0, 0, None, []
    for path in sorted(Path(folder).rglob("*.parquet")):
        f = pq.ParquetFile(path)
        sizes.append(f.metadata.num_rows)
        names = tuple(sorted(f.schema_arrow.names))
        if columns is not None and names != columns and f.metadata.num_rows:
            raise ValueError(f"{path} has columns {names}, other files {columns}")
        columns = columns or names
        for batch in f.iter_batches(batch_size=65_536):
            digest = (digest + int(record_hashes(batch).sum(dtype=U64))) % 2**64
            records += batch.num_rows
    return Fingerprint(records, columns or (), digest, tuple(sizes))
