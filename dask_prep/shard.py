"""Shard and commit: a bag of records -> exact fixed-size shards and a manifest.

How records move
----------------
Each partition task streams its records into full shards of exactly
``shard_size`` records and writes them itself; only its last ``< shard_size``
records (the remainder) go to a small staging file. When every partition is
done, the client plans the merge of the remainders, in partition order, into
full shards plus one final partial shard, and workers write those. Records
never travel to the client, each record is serialized once (remainder records
twice), and a worker holds at most one partition's current source plus one
shard in memory.

Shard order: every full shard of partition 0, of partition 1, ..., then the
merged remainder shards. Within a shard, records follow source order. The
layout depends only on the inputs and options, never on the number of workers.

Every partition also leaves a small JSON marker; a run that is killed and
started again with the same inputs and options skips the partitions that have
one (see ``docs/architecture.md``).
"""
from __future__ import annotations

import base64
import contextvars
import hashlib
import json
import logging
import pickle
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import dask
import dask.bag as db
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from . import _tracking
from ._tracking import SourceError
from .convert import CONVERT_PREFIX
from .errors import (ConversionError, OutputExistsError, SchemaMismatchError,
                     TooManyErrorsError)
from .formats import (get_format, schema_from_bytes, schema_to_bytes, schema_to_json,
                      unify)
from .lock import LOCK, RunLock
from .output import ERRORS, MANIFEST, WORK, OutputDir, check_writable, read_manifest

__all__ = ["write_shards", "ShardInfo", "PartResult", "write_partition"]

logger = logging.getLogger(__name__)

ON_ERROR = ("skip", "raise")


@dataclass
class ShardInfo:
    file: str
    records: int
    bytes: int
    sha256: str


@dataclass
class PartResult:
    """What a partition task reports: counts and file names, never records."""

    index: int
    records: int = 0
    shards: list = field(default_factory=list)
    remainder: ShardInfo | None = None
    schema: object = None
    errors: list = field(default_factory=list)
    seconds: float = 0.0
    fatal: tuple | None = None  # (error class name, message) when on_error="raise" stopped it

    def to_json(self) -> dict:
        return {
            "index": self.index, "records": self.records, "seconds": self.seconds,
            "shards": [asdict(s) for s in self.shards],
            "remainder": asdict(self.remainder) if self.remainder else None,
            "schema": base64.b64encode(schema_to_bytes(self.schema)).decode() if self.schema else None,
            "errors": [e.to_dict() for e in self.errors],
        }

    @classmethod
    def from_json(cls, d: dict) -> PartResult:
        return cls(
            d["index"], d["records"], [ShardInfo(**s) for s in d["shards"]],
            ShardInfo(**d["remainder"]) if d["remainder"] else None,
            schema_from_bytes(base64.b64decode(d["schema"])) if d["schema"] else None,
            [SourceError(**e) for e in d["errors"]], d.get("seconds", 0.0))


@dataclass(frozen=True)
class WriteSpec:
    out: OutputDir
    format: str
    shard_size: int
    schema: object
    on_error: str
    convert_layers: tuple
    schema_is_hint: bool = False  # start from ``schema`` but let records widen it


def _marker(index: int) -> str:
    return f"{WORK}/p{index:05d}.json"


def _write_shard(out: OutputDir, name: str, fmt, batch, stage: bool = False) -> ShardInfo:
    try:
        data = fmt.encode_stage(batch) if stage else fmt.encode(batch)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise SchemaMismatchError(f"cannot encode a {fmt.name} shard: {exc}") from exc
    out.write_atomic(name, data)
    return ShardInfo(name, fmt.length(batch), len(data), hashlib.sha256(data).hexdigest())


class _PartitionWriter:
    """Cuts one partition's records into exact shards as they arrive."""

    def __init__(self, spec: WriteSpec, index: int):
        self.spec, self.index = spec, index
        self.fmt = get_format(spec.format, spec.schema)
        if spec.schema_is_hint:
            self.fmt.fixed = False
        self.result = PartResult(index)
        self.pending: list = []
        self.npending = 0

    def add(self, group: list, source: str | None) -> None:
        try:
            batch = self.fmt.batch(group)
        except SchemaMismatchError as exc:
            where = source or f"<partition {self.index}>"
            if self.spec.on_error == "raise":
                raise SchemaMismatchError(f"{where}: {exc}") from None
            self.result.errors.append(SourceError(where, "SchemaMismatchError", str(exc)))
            return
        self.pending.append(batch)
        self.npending += len(group)
        while self.npending >= self.spec.shard_size:
            self._emit_full()

    def _emit_full(self) -> None:
        n, fmt = self.spec.shard_size, self.fmt
        batch = fmt.concat(self.pending)
        rest = fmt.slice(batch, n, fmt.length(batch))
        self.pending, self.npending = ([rest] if fmt.length(rest) else []), self.npending - n
        name = f"{WORK}/p{self.index:05d}-{len(self.result.shards):05d}{fmt.suffix}"
        self.result.shards.append(_write_shard(self.spec.out, name, fmt, fmt.slice(batch, 0, n)))

    def finish(self, conversion_errors: list) -> PartResult:
        res = self.result
        if self.npending:
            name = f"{WORK}/p{self.index:05d}-rem{self.fmt.stage_suffix or self.fmt.suffix}"
            res.remainder = _write_shard(self.spec.out, name, self.fmt, self.fmt.concat(self.pending),
                                         stage=True)
        res.records = sum(s.records for s in res.shards) + (res.remainder.records if res.remainder else 0)
        res.schema = self.fmt.schema if res.records else None
        res.errors = conversion_errors + res.errors
        return res


def write_partition(records, index: int, spec: WriteSpec) -> list[PartResult]:
    """The task run for each partition (module-level, so it pickles by reference).

    A failure that ``on_error="raise"`` asked for comes back as data (``fatal``),
    so the client raises it as one clear error instead of a worker traceback.
    """
    try:
        return _write_partition(records, index, spec)
    except (ConversionError, SchemaMismatchError) as exc:
        return [PartResult(index, fatal=(type(exc).__name__, str(exc)))]


def _write_partition(records, index: int, spec: WriteSpec) -> list[PartResult]:
    t0 = time.perf_counter()
    lazy = not isinstance(records, (list, tuple))
    if lazy:
        _tracking.set_source(None)
    writer = _PartitionWriter(spec, index)
    group: list = []
    group_src = None
    for rec in records:
        src = _tracking.current_source() if lazy else None
        if group and (src != group_src or (src is None and len(group) >= spec.shard_size)):
            writer.add(group, group_src)
            group = []
        group_src = src
        group.append(rec)
    if group:
        writer.add(group, group_src)
    errors = _tracking.drain({(layer, index) for layer in spec.convert_layers})
    result = writer.finish(errors)
    result.seconds = round(time.perf_counter() - t0, 3)
    save_marker(spec.out, result)
    return [result]


def save_marker(out: OutputDir, result: PartResult) -> None:
    """What makes a finished partition survive a killed run (the cost of resuming)."""
    out.write_json(_marker(result.index), result.to_json())


def _rewrite(spec: WriteSpec, info: ShardInfo, schema) -> ShardInfo:
    fmt = get_format(spec.format, schema)
    return _write_shard(spec.out, info.file, fmt, fmt.decode(spec.out.read_bytes(info.file)))


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


def _current_client():
    try:
        from distributed import default_client
        return default_client()
    except (ImportError, ValueError):
        return None


#: Called with the futures ``execute`` submits (e.g. to show a progress widget).
ON_SUBMIT: contextvars.ContextVar = contextvars.ContextVar("dask_prep_on_submit", default=None)


def execute(tasks: list, on_result: Callable | None = None) -> list:
    """Compute delayed ``tasks`` on the current Dask client (or scheduler); keep order.

    With a distributed client, results are handed to ``on_result`` as they
    finish (for progress), and a failure cancels the rest.
    """
    if not tasks:
        return []
    client = _current_client()
    if client is None:
        results = list(dask.compute(*tasks))
        for r in results:
            if on_result:
                on_result(r)
        return results
    from distributed import as_completed
    futures = client.compute(tasks)
    if ON_SUBMIT.get() is not None:
        ON_SUBMIT.get()(futures)
    index = {f.key: i for i, f in enumerate(futures)}
    results = [None] * len(futures)
    try:
        for fut, res in as_completed(futures, with_results=True):
            results[index[fut.key]] = res
            if on_result:
                on_result(res)
    finally:
        for f in futures:
            if not f.done():
                f.cancel()
    return results


def _fingerprint(bag: db.Bag, fmt: str, shard_size: int, schema) -> str:
    ident = {"bag": bag.name, "npartitions": bag.npartitions, "format": fmt,
             "shard_size": shard_size, "schema": str(schema) if schema is not None else None,
             "layout": 1}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def _prepare(out: OutputDir, fingerprint: str, overwrite: bool) -> dict | None:
    """Make ``out`` ready; return the existing manifest when this exact job is complete."""
    if out.exists(MANIFEST):
        try:
            old = read_manifest(out)
        except Exception:
            old = {}
        if old.get("fingerprint") == fingerprint and not overwrite:
            return old
        if not overwrite:
            raise OutputExistsError(
                f"{out.url} already holds a dask-prep dataset made from other inputs or options; "
                "choose another directory or pass --overwrite to replace it")
        out.remove(MANIFEST)
        for s in old.get("shards", []):
            out.remove(s["file"])
        out.remove(ERRORS)
    if out.exists(f"{WORK}/run.json"):
        try:
            previous = json.loads(out.read_bytes(f"{WORK}/run.json")).get("fingerprint")
        except ValueError:
            previous = None
        if previous != fingerprint:
            if not overwrite:
                raise OutputExistsError(
                    f"{out.url} holds an unfinished run with other inputs or options; "
                    "run that command again to resume it, or pass --overwrite to start afresh")
            for name in out.listdir(WORK):
                if f"{WORK}/{name}" != LOCK:
                    out.remove(f"{WORK}/{name}")
    out.write_json(f"{WORK}/run.json", {"fingerprint": fingerprint})
    return None


def _finished_parts(out: OutputDir, n: int) -> dict[int, PartResult]:
    done = {}
    for name in out.listdir(WORK):
        if name.startswith("p") and name.endswith(".json"):
            try:
                res = PartResult.from_json(json.loads(out.read_bytes(f"{WORK}/{name}")))
            except (ValueError, KeyError, TypeError):
                continue
            files = [s.file for s in res.shards] + ([res.remainder.file] if res.remainder else [])
            if res.index < n and all(out.exists(f) for f in files):
                done[res.index] = res
    return done


def _write_tasks(bag: db.Bag, spec: WriteSpec) -> list:
    """One delayed write per partition, fused with the bag's chain into one task.

    The partition index is a literal argument, so each write task depends only
    on its partition: a linear chain that Bag's optimizer fuses. The records
    then stream from the converter into the writer in one thread and never
    leave the worker (a generator could not be sent anyway).
    """
    name = "dask-prep-write-" + tokenize(bag.name, spec)
    dsk = {(name, i): (write_partition, (bag.name, i), i, spec) for i in range(bag.npartitions)}
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[bag])
    return db.Bag(graph, name, bag.npartitions).to_delayed(optimize_graph=True)


def write_shards(bag: db.Bag, output, *, shard_size: int = 10_000, format: str = "parquet",
                 schema=None, on_error: str = "skip", overwrite: bool = False,
                 storage_options: dict | None = None, metadata: dict | None = None,
                 max_errors: int | None = None, on_partition: Callable | None = None) -> dict:
    """Write the records of ``bag`` to ``output`` as exact shards; return the manifest.

    Every shard holds exactly ``shard_size`` records except the last one. The
    work runs on the current Dask client if there is one (else on Dask's default
    scheduler); records never reach this process.

    Parameters
    ----------
    bag
        Any :class:`dask.bag.Bag` of records (dicts for Parquet).
    output
        A local folder or fsspec URL.
    format
        ``"parquet"`` (default) or ``"pickle"`` (one ``pickle.dump`` of a list per shard).
    schema
        A :class:`pyarrow.Schema` for Parquet; inferred and unified when omitted.
    on_error
        ``"skip"``: failed sources and records that do not fit the schema are left
        out and listed in ``errors.jsonl``. ``"raise"``: the first one stops the run.
    overwrite
        Allow a folder holding files dask-prep did not write (they are never
        deleted), or replace an earlier dataset.
    metadata
        Extra manifest fields (``run`` passes ``sources`` and ``converter``).
    max_errors
        Stop with :class:`~dask_prep.errors.TooManyErrorsError` as soon as more
        than this many sources have failed (bad items inside a source, reported
        with a line number, do not count). Finished partitions are kept, so the
        same call with a higher limit resumes.
    on_partition
        Called with each :class:`PartResult` as partitions finish (progress).

    Examples
    --------
    >>> import dask.bag as db, dask_prep as dp, tempfile
    >>> out = tempfile.mkdtemp()
    >>> bag = db.from_sequence([{"x": i} for i in range(25)], npartitions=3)
    >>> m = dp.write_shards(bag, out, shard_size=10, overwrite=True)
    >>> [s["records"] for s in m["shards"]]
    [10, 10, 5]
    """
    if not isinstance(shard_size, int) or isinstance(shard_size, bool) or shard_size < 1:
        raise ValueError(f"shard_size must be a positive integer, not {shard_size!r}")
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, not {on_error!r}")
    get_format(format, schema)  # validates format and schema early
    t0 = time.perf_counter()
    out = OutputDir(output, storage_options)
    fingerprint = _fingerprint(bag, format, shard_size, schema)
    check_writable(out, overwrite)
    with RunLock(out):
        existing = _prepare(out, fingerprint, overwrite)
        if existing is not None:
            logger.info("%s is already complete; nothing to do", out.url)
            return existing
        return _write(bag, out, fingerprint, format, shard_size, schema, on_error, metadata,
                      max_errors, on_partition, t0)


def _write(bag, out, fingerprint, format, shard_size, schema, on_error, metadata, max_errors,
           on_partition, t0) -> dict:
    layers = tuple(k for k in bag.dask.layers if k.startswith(CONVERT_PREFIX))
    spec = WriteSpec(out, format, shard_size, schema, on_error, layers)
    n = bag.npartitions
    done = _finished_parts(out, n)
    if done:
        logger.info("resuming: %d of %d partitions were already done", len(done), n)
    parts = _write_tasks(bag, spec)
    todo = [i for i in range(n) if i not in done]

    def record(res_list):
        res = res_list[0]
        _raise_fatal(res)
        done[res.index] = res
        if max_errors is not None:
            _check_errors(out, [done[i] for i in sorted(done)], max_errors)
        if on_partition:
            on_partition(res, len(done), n)

    if max_errors is not None:
        _check_errors(out, [done[i] for i in sorted(done)], max_errors)
    execute([parts[i] for i in todo], record)
    _redo_conflicts(bag, spec, done)
    results = [done[i] for i in range(n)]
    manifest = _commit(spec, results, fingerprint)
    manifest.update(metadata or {})
    manifest["run"] = {"elapsed_seconds": round(time.perf_counter() - t0, 3),
                       "resumed_partitions": n - len(todo)}
    out.write_json(MANIFEST, manifest)
    out.remove(WORK)
    return manifest


def _raise_fatal(res: PartResult) -> None:
    if res.fatal:
        kind, message = res.fatal
        raise {"ConversionError": ConversionError}.get(kind, SchemaMismatchError)(message)


def _redo_conflicts(bag: db.Bag, spec: WriteSpec, done: dict) -> None:
    """Redo the partitions whose records' types clash with earlier partitions'.

    Within a partition a clashing source is dropped as it arrives; across
    partitions the clash shows only now. Walking the partitions in order, the
    first schema wins (deterministic); each clashing partition is converted
    again starting from it, so only its offending sources are dropped.
    """
    if not get_format(spec.format).has_schema or spec.schema is not None:
        return
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
        return
    logger.info("redoing %d partition(s) whose types clash with earlier ones", len(redo))
    hinted = replace(spec, schema=accumulated, schema_is_hint=True)
    tasks = _write_tasks(bag, hinted)
    for res_list in execute([tasks[i] for i in redo]):
        _raise_fatal(res_list[0])
        done[res_list[0].index] = res_list[0]


def _check_errors(out: OutputDir, results: list[PartResult], max_errors: int) -> None:
    failed = [e for r in results for e in r.errors if e.line is None]
    if len(failed) <= max_errors:
        return
    _write_errors(out, results)
    first = failed[0]
    raise TooManyErrorsError(
        f"{len(failed)} sources failed, more than max_errors={max_errors} (first: {first.path}: "
        f"{first.error}: {first.message}); see {out.path(ERRORS)}. Finished partitions are kept: "
        "fix the inputs or converter, or allow more errors, and run again to resume")


def _write_errors(out: OutputDir, results: list[PartResult]) -> int:
    errors = sorted((e for r in results for e in r.errors), key=lambda e: (e.path, e.line or 0))
    out.write_atomic(ERRORS, "".join(json.dumps(e.to_dict()) + "\n" for e in errors).encode())
    return len(errors)


def _commit(spec: WriteSpec, results: list[PartResult], fingerprint: str) -> dict:
    out, fmt = spec.out, get_format(spec.format, spec.schema)
    schema = spec.schema
    if fmt.has_schema and schema is None:
        schemas = [r.schema for r in results if r.schema is not None]
        schema = unify(schemas) if schemas else None
    full = [s for r in results for s in r.shards]
    owner = [r.schema for r in results for _ in r.shards]
    stale = [i for i, part_schema in enumerate(owner) if fmt.has_schema and part_schema != schema]
    merges = _plan_merges(results, spec.shard_size)
    tasks = [dask.delayed(_rewrite)(spec, full[i], schema) for i in stale]
    tasks += [dask.delayed(_merge)(spec, g, f"{WORK}/m{k:05d}{fmt.suffix}", schema)
              for k, g in enumerate(merges)]
    new = execute(tasks)
    for i, info in zip(stale, new):
        full[i] = info
    shards = full + new[len(stale):]
    final = []
    for k, info in enumerate(shards):
        name = f"shard-{k:05d}{fmt.suffix}"
        if out.exists(info.file):
            out.replace(info.file, name)
        final.append({"file": name, "records": info.records, "bytes": info.bytes,
                      "sha256": info.sha256})
    nerrors = _write_errors(out, results)
    return {
        "version": 1, "format": spec.format, "shard_size": spec.shard_size,
        "total_records": sum(s["records"] for s in final), "shards": final,
        "schema": schema_to_json(schema), "errors": nerrors,
        "partitions": len(results), "fingerprint": fingerprint,
        "created_by": f"dask-prep {_version()}",
    }


def _version() -> str:
    from . import __version__
    return __version__
