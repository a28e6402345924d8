"""Parquet shards: records are dicts; a shard is one Parquet file written by pyarrow.

With no schema given, each partition infers one and widens it when later
records need it (int -> double, null -> any); the writer unifies the
partitions' schemas at the end. A value that fits no common type is an error
naming the field.

>>> from dask_prep.write.formats import get_format
>>> fmt = get_format("parquet")
>>> fmt.batch([{"n": 1}, {"n": 2}]).num_rows, str(fmt.schema)
(2, 'n: int64')
"""
from __future__ import annotations

from contextlib import contextmanager

import pyarrow as pa
import pyarrow.parquet as pq

from ...errors import SchemaMismatchError
from ..schema import conform, to_table, unify
from .base import ShardFile, ShardFormat

__all__ = ["ParquetFormat"]


class ParquetFormat(ShardFormat):
    name, suffix, has_schema = "parquet", ".parquet", True
    record_errors = (SchemaMismatchError,)
    #: Leftovers wait as uncompressed Arrow IPC: cheap to write and read, so
    #: each record is Parquet-encoded once, at the merge.
    stage_suffix = ".arrow"

    def __init__(self, schema: pa.Schema | None = None):
        super().__init__(schema)
        self.fixed = schema is not None  # records must fit it, never widen it
        if schema is not None:
            _check_depth(schema)

    def widening(self) -> ParquetFormat:
        """Start from the schema but let records widen it (a hint, not a rule)."""
        self.fixed = False
        return self

    def batch(self, records: list) -> pa.Table:
        if not records:
            return pa.table({}) if self.schema is None else self.schema.empty_table()
        if self.fixed:
            return to_table(records, self.schema)
        table = to_table(records, None)
        _check_depth(table.schema)
        if self.schema is None:
            self.schema = table.schema
        elif table.schema != self.schema:
            self.schema = unify([self.schema, table.schema])
        return table

    def concat(self, batches) -> pa.Table:
        return pa.concat_tables([conform(t, self.schema) for t in batches])

    def length(self, batch: pa.Table) -> int:
        return batch.num_rows

    def slice(self, batch: pa.Table, start: int, stop: int) -> pa.Table:
        return batch.slice(start, stop - start)

    def write(self, batch: pa.Table, path: str) -> None:
        # straight to the file: no shard-sized buffers to fault in and copy
        pq.write_table(conform(batch, self.schema), path, write_page_checksum=True)

    def encode(self, batch: pa.Table) -> bytes:
        sink = pa.BufferOutputStream()
        pq.write_table(conform(batch, self.schema), sink, write_page_checksum=True)
        return sink.getvalue().to_pybytes()

    def unify(self, schemas: list):
        return unify(schemas) if schemas else None

    def write_stage(self, batch: pa.Table, path: str) -> None:
        with pa.OSFile(path, "wb") as f, pa.ipc.new_stream(f, batch.schema) as writer:
            writer.write_table(batch)

    def encode_stage(self, batch: pa.Table) -> bytes:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_table(batch)
        return sink.getvalue().to_pybytes()

    def decode_stage(self, data: bytes) -> pa.Table:
        return pa.ipc.open_stream(pa.BufferReader(data)).read_all()

    def decode(self, shard: ShardFile) -> pa.Table:
        data = shard.read()
        with _unreadable_is_corrupt(shard):
            return pq.read_table(pa.BufferReader(data), page_checksum_verification=True)

    def records(self, batch: pa.Table) -> list:
        return batch.to_pylist()

    def count(self, shard: ShardFile) -> int:
        with shard.open() as f:
            return pq.ParquetFile(f).metadata.num_rows

    def read_schema(self, shard: ShardFile) -> pa.Schema:
        with shard.open() as f:
            return pq.read_schema(f)

    def table(self, shard: ShardFile, columns: list) -> pa.Table:
        """Only ``columns``: the sizes and the page checksums of what is read are
        checked, not the file's sha256 (that would read all of it)."""
        path = shard.local_path()
        with _unreadable_is_corrupt(shard):
            if path is not None:
                return pq.read_table(path, columns=columns, page_checksum_verification=True)
            with shard.open() as f:
                return pq.read_table(f, columns=columns, page_checksum_verification=True)


#: How deep a column may nest: Arrow IPC (leftovers wait in it) writes at
#: most 63 levels, and Parquet readers (pyarrow's, and those built on it)
#: refuse a schema of more than 100 levels. A shard of deeper records would be
#: written and never read back.
MAX_ARROW_DEPTH, MAX_PARQUET_LEVELS = 63, 100


def _depths(t: pa.DataType) -> tuple[int, int]:
    """Arrow nesting depth and Parquet schema levels of a column of type ``t``
    (a Parquet list takes two levels, its group and the repeated element)."""
    if pa.types.is_struct(t):
        inner = [_depths(t.field(i).type) for i in range(t.num_fields)] or [(0, 1)]
        return 1 + max(a for a, _ in inner), 1 + max(p for _, p in inner)
    if pa.types.is_map(t):
        inner = [_depths(t.key_type), _depths(t.item_type)]
        return 1 + max(a for a, _ in inner), 2 + max(p for _, p in inner)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        a, p = _depths(t.value_type)
        return 1 + a, 2 + p
    return 0, 1


def _check_depth(schema: pa.Schema) -> None:
    """Records nested deeper than Arrow and Parquet store are the source's error, named."""
    for f in schema:
        arrow, levels = _depths(f.type)
        if arrow > MAX_ARROW_DEPTH or 1 + levels > MAX_PARQUET_LEVELS:
            raise SchemaMismatchError(
                f"field {f.name!r} is nested {arrow} levels deep ({1 + levels} Parquet levels): more "
                f"than Arrow stores ({MAX_ARROW_DEPTH}) or Parquet readers read ({MAX_PARQUET_LEVELS}; "
                "49 nested lists at most); flatten it (e.g. store it as a JSON string) or use "
                "format='pickle'")


@contextmanager
def _unreadable_is_corrupt(shard: ShardFile):
    """A shard dask-prep wrote and the manifest lists that pyarrow cannot read
    (a page checksum, a broken page) is corrupt; a missing file is not."""
    try:
        yield
    except (FileNotFoundError, PermissionError):
        raise
    except (OSError, pa.ArrowException) as exc:
        if not shard.expect:
            raise
        raise shard.corrupt(f"unreadable Parquet ({str(exc).strip().splitlines()[0]})") from exc
