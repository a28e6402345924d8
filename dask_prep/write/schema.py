"""Arrow schemas: infer records' types, widen and unify them, conform tables.

>>> import pyarrow as pa
>>> from dask_prep.write.schema import unify
>>> unify([pa.schema([("n", pa.int64())]), pa.schema([("n", pa.float64())])])
n: double
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence

import pyarrow as pa

from ..errors import SchemaMismatchError

__all__ = ["to_table", "unify", "conform", "schema_to_json", "schema_to_bytes", "schema_from_bytes"]

_ARROW_ERRORS = (pa.ArrowException, TypeError, ValueError, OverflowError)


def to_table(records: list, schema: pa.Schema | None) -> pa.Table:
    """Dict records as a table (of ``schema``, or inferred); a record that does
    not fit is a :class:`SchemaMismatchError` naming the field."""
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
    except _ARROW_ERRORS as exc:
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
    except (KeyError, *_ARROW_ERRORS):
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
        except _ARROW_ERRORS as field_exc:
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
