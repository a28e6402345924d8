"""Commit: turn finished partitions into the final dataset.

Redo partitions whose types clash, unify the schema, merge the leftovers into
full shards, rename everything to its final name, write ``errors.jsonl`` (the
manifest itself is written last, by :func:`dask_prep.write.write_shards`).
"""
from __future__ import annotations

import json
from collections import Counter
import logging
from dataclasses import dataclass, replace

import dask
import dask.bag as db

from .errors import ConversionError, SchemaMismatchError, TooManyErrorsError
from .execute import execute
from .formats import get_format, schema_to_json, unify
from .output import ERRORS, WORK, OutputDir
from .shard import PartResult, ShardInfo, WriteSpec, _write_shard, rewrite_shard, write_tasks

__all__ = ["commit", "redo_conflicts", "check_errors", "raise_fatal", "EarlyMerges", "Merged"]

logger = logging.getLogger(__name__)


def _merge(spec: WriteSpec, slices: list, name: str, schema) -> ShardInfo:
    fmt = get_format(spec.format, schema)
    parts = [fmt.slice(fmt.decode_stage(spec.out.read_bytes(f)), a, b) for f, a, b in slices]
    return _write_shard(spec.out, name, fmt, fmt.concat(parts))


def _plan_merges(results: list[PartResult], n: int) -> list[list[tuple]]:
    groups, current, size = [], [], 0
    for r in results:
        if not r.remainder:
            continue
        start, count = 0, r.remainder.records
        while start < count:
            take = min(n - size, count - start)
            current.append((r.remainder.file, start, start + take))
            size, start = size + take, start + take
            if size == n:
                groups.append(current)
                current, size = [], 0
    if current:
        groups.append(current)
    return groups


@dataclass
class Merged:
    """A merge of leftovers done while partitions were still converting."""
    k: int
    slices: list
    schema: object
    info: ShardInfo


def _merge_early(spec: WriteSpec, k: int, slices: list, schema) -> Merged:
    fmt = get_format(spec.format, schema)
    return Merged(k, slices, schema, _merge(spec, slices, f"{WORK}/m{k:05d}{fmt.suffix}", schema))


class EarlyMerges:
    """Merge leftovers into full shards as soon as their place in the dataset is known.

    Shard ``k`` of the merged leftovers is fixed once the partitions whose
    leftovers fill it, and all partitions before them, are done. Merging it then,
    while other partitions still convert, keeps the end of the run short.
    The merge uses the schema of the partitions done so far; :func:`commit`
    redoes it if the final schema differs (or partitions were redone).
    """

    def __init__(self, spec: WriteSpec):
        self.spec, self.submitted = spec, set()
        self.fmt = get_format(spec.format, spec.schema)

    def ready(self, done: dict) -> list:
        """Delayed merge tasks that became possible with the partitions in ``done``."""
        prefix = []
        while len(prefix) in done:
            prefix.append(done[len(prefix)])
        groups = _plan_merges(prefix, self.spec.shard_size)
        full = [g for g in groups if sum(b - a for _, a, b in g) == self.spec.shard_size]
        new = [k for k in range(len(full)) if k not in self.submitted]
        if not new:
            return []
        schema = self.spec.schema
        if self.fmt.has_schema and schema is None:
            schemas = [r.schema for r in done.values() if r.schema is not None]
            schema = unify(schemas) if schemas else None
        self.submitted.update(new)
        return [dask.delayed(_merge_early)(self.spec, k, full[k], schema) for k in new]


def raise_fatal(res: PartResult) -> None:
    if res.fatal:
        kind, message = res.fatal
        raise {"ConversionError": ConversionError}.get(kind, SchemaMismatchError)(message)


def redo_conflicts(bag: db.Bag, spec: WriteSpec, done: dict) -> bool:
    """Redo the partitions whose records' types clash with earlier partitions'; say if any.

    Within a partition a clashing source is dropped as it arrives; across
    partitions the clash shows only now. Walking the partitions in order, the
    first schema wins (deterministic); each clashing partition is converted
    again starting from it, so only its offending sources are dropped.
    """
    if not get_format(spec.format).has_schema or spec.schema is not None:
        return False
    accumulated, redo = None, []
    for i in sorted(done):
        schema = done[i].schema
        if schema is None:
            continue
        try:
            accumulated = schema if accumulated is None else unify([accumulated, schema])
        except SchemaMismatchError:
            redo.append(i)  # with on_error="raise", the redo stops at the source, by name
    if not redo:
        return False
    logger.info("redoing %d partition(s) whose types clash with earlier ones", len(redo))
    hinted = replace(spec, schema=accumulated, schema_is_hint=True)
    tasks = write_tasks(bag, hinted)
    for res_list in execute([tasks[i] for i in redo]):
        raise_fatal(res_list[0])
        done[res_list[0].index] = res_list[0]
    return True


def check_errors(out: OutputDir, results: list[PartResult], max_errors: int) -> None:
    failed = [e for r in results for e in r.errors if e.line is None]
    if len(failed) <= max_errors:
        return
    _write_errors(out, results)
    first = failed[0]
    raise TooManyErrorsError(
        f"{len(failed)} sources failed, more than max_errors={max_errors} (first: {first.path}: "
        f"{first.error}: {first.message}); see {out.path(ERRORS)}. Finished partitions are kept: "
        "fix the inputs or converter, or allow more errors, and run again to resume")


def _write_errors(out: OutputDir, results: list[PartResult]) -> dict[str, int]:
    """Write ``errors.jsonl``; return how many errors of each type it lists."""
    errors = sorted((e for r in results for e in r.errors), key=lambda e: (e.path, e.line or 0))
    out.write_atomic(ERRORS, "".join(json.dumps(e.to_dict()) + "\n" for e in errors).encode())
    return dict(sorted(Counter(e.error for e in errors).items(), key=lambda kv: (-kv[1], kv[0])))


def commit(spec: WriteSpec, results: list[PartResult], fingerprint: str,
           merged: dict[int, Merged] | None = None) -> dict:
    """Finish the dataset; ``merged`` are leftovers merged early (:class:`EarlyMerges`)."""
    out, fmt = spec.out, get_format(spec.format, spec.schema)
    schema = spec.schema
    if fmt.has_schema and schema is None:
        schemas = [r.schema for r in results if r.schema is not None]
        schema = unify(schemas) if schemas else None
    full = [s for r in results for s in r.shards]
    owner = [r.schema for r in results for _ in r.shards]
    stale = [i for i, part_schema in enumerate(owner) if fmt.has_schema and part_schema != schema]
    merges = _plan_merges(results, spec.shard_size)
    merged = merged or {}
    reuse = {k: merged[k].info for k, g in enumerate(merges)
             if k in merged and merged[k].slices == g and merged[k].schema == schema}
    todo = [k for k in range(len(merges)) if k not in reuse]
    tasks = [dask.delayed(rewrite_shard)(spec, full[i], schema) for i in stale]
    tasks += [dask.delayed(_merge)(spec, merges[k], f"{WORK}/m{k:05d}{fmt.suffix}", schema)
              for k in todo]
    new = execute(tasks)
    for i, info in zip(stale, new):
        full[i] = info
    reuse.update(zip(todo, new[len(stale):]))
    shards = full + [reuse[k] for k in range(len(merges))]
    final = []
    for k, info in enumerate(shards):
        name = f"shard-{k:05d}{fmt.suffix}"
        if out.exists(info.file):
            out.replace(info.file, name)
        final.append({"file": name, "records": info.records, "bytes": info.bytes,
                      "sha256": info.sha256})
    error_types = _write_errors(out, results)
    return {
        "version": 1, "format": spec.format, "shard_size": spec.shard_size,
        "total_records": sum(s["records"] for s in final), "shards": final,
        "schema": schema_to_json(schema), "errors": sum(error_types.values()),
        "error_types": error_types,
        "partitions": len(results), "fingerprint": fingerprint,
        "created_by": f"dask-prep {_version()}",
    }


def _version() -> str:
    from . import __version__
    return __version__
