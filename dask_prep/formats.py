"""Shard formats: how a batch of records becomes the bytes of one shard.

The shard writer owns the loop (grouping, cutting exact shards, naming, atomic
writes); a format fills the hooks: turn records into a batch, concatenate and
slice batches, encode a batch to bytes and decode it back. Register a new one
with :func:`register_format`.
"""
from __future__ import annotations

import itertools
import pickle
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import SchemaMismatchError

__all__ = ["ShardFormat", "ParquetFormat", "PickleFormat", "get_format", "register_format",
           "conform", "unify", "schema_to_json"]


class ShardFormat:
    """Base class. A format instance lives for one partition and may keep state."""

    name = ""
    suffix = ""
    has_schema = False

    def __init__(self, schema: pa.Schema | None = None):
        self.schema = schema

    def batch(self, records: list):
        """Turn a list of records (one source's, or a chunk) into a batch."""
        raise NotImplementedError

    def concat(self, batches: Sequence):
        raise NotImplementedError

    def length(self, batch) -> int:
        return len(batch)

    def slice(self, batch, start: int, stop: int):
        raise NotImplementedError

    def encode(self, batch) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes):
        raise NotImplementedError

    def write(self, batch, path: str) -> None:
        """Write the encoded batch to a new local file (formats may stream it)."""
        with open(path, "wb") as f:
            f.write(self.encode(batch))

    def records(self, data: bytes) -> list:
        raise NotImplementedError

    # Staging: how a partition's leftover records wait for the merge. Defaults to
    # the shard encoding; a format may pick something cheaper to write and read.
    stage_suffix = None

    def encode_stage(self, batch) -> bytes:
        return self.encode(batch)

    def write_stage(self, batch, path: str) -> None:
        with open(path, "wb") as f:
            f.write(self.encode_stage(batch))

    def decode_stage(self, data: bytes):
        return self.decode(data)


class ParquetFormat(ShardFormat):
    """Records are dicts; a shard is one Parquet file written by pyarrow.

    With no schema given, each partition infers one and widens it when later
    records need it (int -> double, null -> any); the writer unifies the
    partitions' schemas at the end. A value that fits no common type is an error
    naming the field.
    """

    name, suffix, has_schema = "parquet", ".parquet", True

    def __init__(self, schema: pa.Schema | None = None):
        super().__init__(schema)
        self.fixed = schema is not None

    def batch(self, records: list) -> pa.Table:
        if not records:
            return pa.table({}) if self.schema is None else self.schema.empty_table()
        if self.fixed:
            return _to_table(records, self.schema)
        table = _to_table(records, None)
        if self.schema is None:
            self.schema = table.schema
        elif table.schema != self.schema:
            self.schema = unify([self.schema, table.schema])
        return table

    def concat(self, batches) -> pa.Table:
        return pa.concat_tables([conform(t, self.schema) for t in batches])

    def slice(self, batch, start, stop):
        return batch.slice(start, stop - start)

    def encode(self, batch: pa.Table) -> bytes:
        sink = pa.BufferOutputStream()
        pq.write_table(conform(batch, self.schema), sink)
        return sink.getvalue().to_pybytes()

    def write(self, batch: pa.Table, path: str) -> None:
        # straight to the file: no shard-sized buffers to fault in and copy
        pq.write_table(conform(batch, self.schema), path)

    def decode(self, data: bytes) -> pa.Table:
        return pq.read_table(pa.BufferReader(data))

    def records(self, data: bytes) -> list:
        return self.decode(data).to_pylist()

    stage_suffix = ".arrow"

    def encode_stage(self, batch: pa.Table) -> bytes:
        """Arrow IPC, uncompressed: leftovers are Parquet-encoded once, at the merge."""
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_table(batch)
        return sink.getvalue().to_pybytes()

    def write_stage(self, batch: pa.Table, path: str) -> None:
        with pa.OSFile(path, "wb") as f, pa.ipc.new_stream(f, batch.schema) as writer:
            writer.write_table(batch)

    def decode_stage(self, data: bytes) -> pa.Table:
        return pa.ipc.open_stream(pa.BufferReader(data)).read_all()


class PickleFormat(ShardFormat):
    """Any picklable records; a shard is one ``pickle.dump`` of a list (protocol 5)."""

    name, suffix = "pickle", ".pkl"

    def batch(self, records):
        return records

    def concat(self, batches):
        return list(itertools.chain.from_iterable(batches))

    def slice(self, batch, start, stop):
        return batch[start:stop]

    def encode(self, batch) -> bytes:
        return pickle.dumps(list(batch), protocol=5)

    def decode(self, data: bytes) -> list:
        return pickle.loads(data)  # only ever called on data the caller trusts

    def records(self, data: bytes) -> list:
        return self.decode(data)


_FORMATS: dict[str, type[ShardFormat]] = {"parquet": ParquetFormat, "pickle": PickleFormat}


def register_format(cls: type[ShardFormat], *, overwrite: bool = False) -> None:
    if cls.name in _FORMATS and not overwrite:
        raise ValueError(f"format {cls.name!r} is already registered; pass overwrite=True to replace it")
    _FORMATS[cls.name] = cls


def get_format(name: str, schema: pa.Schema | None = None) -> ShardFormat:
    try:
        cls = _FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown format {name!r}; use one of {', '.join(sorted(_FORMATS))}") from None
    if schema is not None and not cls.has_schema:
        raise ValueError(f"format {name!r} takes no schema")
    return cls(schema)


def format_names() -> list[str]:
    return sorted(_FORMATS)


# -- Arrow helpers ------------------------------------------------------------


def _to_table(records: list, schema: pa.Schema | None) -> pa.Table:
    first = records[0]
    if not isinstance(first, dict):
        raise SchemaMismatchError(
            f"Parquet records must be dicts, got {type(first).__name__}; "
            "yield dicts from the converter or use format='pickle'")
    if schema is None:
        table = _uniform_to_table(records)
        if table is not None:
            return table
    else:
        extra = dict.fromkeys(itertools.chain.from_iterable(records)).keys() - set(schema.names)
        if extra:
            raise SchemaMismatchError(f"field {sorted(extra)[0]!r} is not in the schema "
                                      f"(fields: {', '.join(schema.names)})")
    try:
        array = pa.array(records, type=None if schema is None else pa.struct(schema))
    except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
        raise SchemaMismatchError(_diagnose(records, schema, exc)) from None
    if not pa.types.is_struct(array.type):
        raise SchemaMismatchError("Parquet records must be dicts; "
                                  "yield dicts from the converter or use format='pickle'")
    table = pa.Table.from_struct_array(array)
    return table if schema is None else table.cast(schema)


def _uniform_to_table(records: list) -> pa.Table | None:
    """Column by column when every record has the first one's keys (a third
    faster than one struct array); ``None`` for anything else, which the
    general path converts or diagnoses."""
    keys = records[0].keys()
    try:  # as many keys as the first, and all of them (a KeyError if not): the same keys
        if not keys or any(n != len(keys) for n in map(len, records)):
            return None
        return pa.table({k: pa.array([r[k] for r in records]) for k in keys})
    except (KeyError, TypeError, pa.ArrowException, ValueError, OverflowError):
        return None


def _diagnose(records: list, schema: pa.Schema | None, exc: Exception) -> str:
    if any(not isinstance(r, dict) for r in records):
        bad = next(r for r in records if not isinstance(r, dict))
        return f"Parquet records must be dicts, got {type(bad).__name__}"
    names = dict.fromkeys(itertools.chain.from_iterable(records))
    for name in names:
        typ = None if schema is None else schema.field(name).type
        try:
            pa.array([r.get(name) for r in records], type=typ)
        except (pa.ArrowException, TypeError, ValueError, OverflowError) as field_exc:
            want = f" (schema type {typ})" if typ is not None else ""
            return f"field {name!r}{want}: {field_exc}"
    return str(exc)


def unify(schemas: Sequence[pa.Schema]) -> pa.Schema:
    """One schema for all: widen types where possible, else name the field."""
    try:
        return pa.unify_schemas(list(schemas), promote_options="permissive")
    except (pa.ArrowException, TypeError) as exc:
        seen: dict[str, pa.DataType] = {}
        for schema in schemas:
            for f in schema:
                if f.name in seen and not _compatible(seen[f.name], f.type):
                    raise SchemaMismatchError(
                        f"field {f.name!r} is {f.type} here but {seen[f.name]} in earlier records; "
                        "pass an explicit schema to say which is right") from None
                seen.setdefault(f.name, f.type)
        raise SchemaMismatchError(f"records disagree on a type: {exc}") from None


def _compatible(a: pa.DataType, b: pa.DataType) -> bool:
    try:
        pa.unify_schemas([pa.schema([("f", a)]), pa.schema([("f", b)])], promote_options="permissive")
        return True
    except (pa.ArrowException, TypeError):
        return False


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with ``schema``'s fields in order: missing ones null, types cast."""
    if table.schema == schema:
        return table
    cols = []
    for field in schema:
        if field.name in table.column_names:
            col = table.column(field.name)
            cols.append(col if col.type == field.type else col.cast(field.type))
        else:
            cols.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(cols, schema=schema)


def schema_to_json(schema: pa.Schema | None) -> list | None:
    if schema is None:
        return None
    return [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in schema]


def schema_to_bytes(schema: pa.Schema) -> bytes:
    return schema.serialize().to_pybytes()


def schema_from_bytes(data: bytes) -> pa.Schema:
    return pa.ipc.read_schema(pa.BufferReader(data))


