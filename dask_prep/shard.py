"""Shard: the task each partition runs, cutting its records into exact shards.

How records move
----------------
Each partition task streams its records into full shards of exactly
``shard_size`` records and writes them itself; only its last ``< shard_size``
records (the leftovers) go to a small staging file. When every partition is
done, :mod:`dask_prep.commit` merges the leftovers, in partition order, into
full shards plus one final partial shard. Records never travel to the client,
each record is encoded once, and a worker holds at most ``CHUNK`` records as
Python objects, plus the Arrow batches of the current source and one shard.

Every partition also leaves a small JSON marker; a run that is killed and
started again with the same inputs and options skips the partitions that have
one (see ``docs/architecture.md``).
"""
from __future__ import annotations

import base64
import gc
import hashlib
import json
import logging
import pickle
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import dask
import dask.bag as db
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from . import _tracking
from ._tracking import SourceError
from .convert import CONVERT_PREFIX, Converted
from .errors import ConversionError, SchemaMismatchError
from .formats import get_format, schema_from_bytes, schema_to_bytes
from .output import WORK, OutputDir

__all__ = ["ShardInfo", "PartResult", "WriteSpec", "write_partition", "save_marker", "write_tasks",
           "rewrite_shard"]

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
    sources: int = 0  # filled in by run() for progress; not saved

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
    write, encode = (fmt.write_stage, fmt.encode_stage) if stage else (fmt.write, fmt.encode)
    try:
        if out.local:  # straight into the file; hashed from the page cache
            out.write_local_atomic(name, lambda path: write(batch, path))
            size, digest = out.size_and_sha256(name)
        else:
            data = encode(batch)
            out.write_atomic(name, data)
            size, digest = len(data), hashlib.sha256(data).hexdigest()
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise SchemaMismatchError(f"cannot encode a {fmt.name} shard: {exc}") from exc
    return ShardInfo(name, fmt.length(batch), size, digest)


def rewrite_shard(spec: WriteSpec, info: ShardInfo, schema) -> ShardInfo:
    """Write a full shard again with ``schema`` (a wider one than it has)."""
    fmt = get_format(spec.format, schema)
    return _write_shard(spec.out, info.file, fmt, fmt.decode(spec.out.read_bytes(info.file)))


#: Records converted to a batch at a time. Few enough (a few hundred KiB to a
#: few MiB of Python objects) that they are still in the CPU's cache when
#: pyarrow reads them, and freed before the converter makes the next ones:
#: converting a shard's worth (10,000) at once took a third more time per
#: record, and whole multi-MB sources as Python objects faulted in fresh memory
#: (``benchmarks/``; measured on a 2-core VM with 1 MiB of L2 per core).
CHUNK = 1000


class _PartitionWriter:
    """Cuts one partition's records into exact shards as they arrive.

    Records come source by source: :meth:`begin`, :meth:`add` (in chunks, as
    the converter yields them), :meth:`end`. Whole small sources wait and are
    converted together, ``CHUNK`` records or more in one call; a source that
    grows past ``CHUNK`` records while it is open is converted in batches of
    its own. So a source contributes all its records or none: if it fails part
    way, or its records do not fit the schema, its own batches are dropped and
    the schema is put back as it was before them; and shards are written (at
    :meth:`end`) only from sources that ended and were converted whole.
    """

    def __init__(self, spec: WriteSpec, index: int):
        self.spec, self.index = spec, index
        self.fmt = get_format(spec.format, spec.schema)
        if spec.schema_is_hint:
            self.fmt.fixed = False
        self.result = PartResult(index)
        self.rows: list = []      # records not yet converted ...
        self.groups: list = []    # ... as [source, count] runs
        self.pending: list = []   # converted batches, not yet written
        self.npending = 0
        self.open: str | None = None  # the source being added:
        self.open_rows = 0            # its records at the end of ``rows``,
        self.open_batches = 0         # its batches at the end of ``pending``,
        self.open_schema = None       # the schema before them,
        self.dropped = False          # and whether it was left out
        self.shard_schemas: list = []  # the schema each full shard was written with

    def begin(self, source: str | None) -> None:
        self.open, self.open_rows, self.open_batches, self.dropped = source, 0, 0, False

    def add(self, records: list) -> None:
        """Take some of the open source's records."""
        if self.dropped or not records:
            return
        if self.open_rows:
            self.groups[-1][1] += len(records)
        else:
            self.groups.append([self.open, len(records)])
        self.rows.extend(records)
        self.open_rows += len(records)
        if self.open_rows >= CHUNK:
            self._convert_open()

    def end(self, ok: bool = True) -> None:
        """The open source is complete (``ok``), or failed: then drop its records."""
        if not ok or self.dropped:
            self._cut_open()
        elif self.open_batches and self.open_rows:  # converted in batches of its own: finish it
            self._convert_open()
        self.open, self.open_rows = None, 0
        if len(self.rows) >= CHUNK:
            self._convert_waiting()
        self._emit_ready()

    def add_source(self, records: list, source: str | None) -> None:
        self.begin(source)
        self.add(records)
        self.end()

    def _convert_waiting(self) -> None:
        """Convert the waiting whole sources in one call (per-call overhead
        dominates for small sources), or, if they do not fit one schema, source
        by source, leaving out the ones that clash."""
        rows, groups = self.rows, self.groups
        self.rows, self.groups = [], []
        if not rows:
            return
        try:
            self._pend(self.fmt.batch(rows), len(rows))
        except SchemaMismatchError:
            at = 0
            for source, count in groups:
                group, at = rows[at:at + count], at + count
                try:
                    batch = self.fmt.batch(group)
                except SchemaMismatchError as exc:
                    self._report(source, exc)
                    continue
                self._pend(batch, count)

    def _convert_open(self) -> None:
        """Convert the open source's waiting records as a batch of its own
        (after the whole sources waiting before them)."""
        n = self.open_rows
        rows = self.rows[-n:]
        del self.rows[-n:]
        self.groups.pop()
        self.open_rows = 0
        self._convert_waiting()
        if not self.open_batches:
            self.open_schema = self.fmt.schema
        try:
            batch = self.fmt.batch(rows)
        except SchemaMismatchError as exc:
            self._report(self.open, exc)
            self._cut_open()
            self.dropped = True
            return
        self._pend(batch, n)
        self.open_batches += 1

    def _cut_open(self) -> None:
        """Forget the open source's records, and what they did to the schema."""
        if self.open_rows:
            del self.rows[-self.open_rows:]
            self.groups.pop()
            self.open_rows = 0
        if self.open_batches:
            for _ in range(self.open_batches):
                self.npending -= self.fmt.length(self.pending.pop())
            self.open_batches = 0
            self.fmt.schema = self.open_schema

    def _report(self, source: str | None, exc: SchemaMismatchError) -> None:
        where = source or f"<partition {self.index}>"
        if self.spec.on_error == "raise":
            raise SchemaMismatchError(f"{where}: {exc}") from None
        self.result.errors.append(SourceError(where, "SchemaMismatchError", str(exc)))

    def _rewrite_narrower_shards(self) -> None:
        """Full shards written before a later record widened the schema (an int
        column that turned out to hold floats, a field that appeared) are
        written again with the partition's final schema, which the client
        unifies across partitions: every shard ends up with the same one."""
        final = self.fmt.schema
        if not self.fmt.has_schema:
            return
        for k, written in enumerate(self.shard_schemas):
            if written != final:
                self.result.shards[k] = rewrite_shard(self.spec, self.result.shards[k], final)
                self.shard_schemas[k] = final

    def _pend(self, batch, n: int) -> None:
        self.pending.append(batch)
        self.npending += n

    def _emit_ready(self) -> None:
        """Write every full shard pending (called with no source open: all complete)."""
        while self.npending >= self.spec.shard_size:
            self._emit_full()

    def _emit_full(self) -> None:
        n, fmt = self.spec.shard_size, self.fmt
        take, count = 0, 0
        while count < n:
            count += fmt.length(self.pending[take])
            take += 1
        batch = fmt.concat(self.pending[:take])
        rest = fmt.slice(batch, n, count)
        self.pending[:take] = [rest] if count > n else []
        self.npending -= n
        name = f"{WORK}/p{self.index:05d}-{len(self.result.shards):05d}{fmt.suffix}"
        self.result.shards.append(_write_shard(self.spec.out, name, fmt, fmt.slice(batch, 0, n)))
        self.shard_schemas.append(fmt.schema)

    def finish(self, conversion_errors: list) -> PartResult:
        self._convert_waiting()
        self._emit_ready()
        self._rewrite_narrower_shards()
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
    if not spec.schema_is_hint:
        done = load_marker(spec.out, index)
        if done is not None:  # finished before: a retry after a lost worker, or a resume
            return [done]     # the records (a lazy generator) are never pulled: no conversion
    try:
        return _write_partition(records, index, spec)
    except (ConversionError, SchemaMismatchError) as exc:
        return [PartResult(index, fatal=(type(exc).__name__, str(exc)))]


_gc_lock = threading.Lock()
_gc_depth = 0
_gc_saved: tuple = ()


@contextmanager
def fewer_collections(gen0: int = 10_000):
    """Run the young-generation garbage collection every ``gen0`` allocations, not 700.

    Converters allocate containers by the million (a dict and a list or two
    a record); with CPython's default threshold the collector scans the young
    ones every 700, and now and then the worker's whole heap: 5% of the
    partition time on the many-small corpus (``benchmarks/``), a fifth when
    a shard's worth of records was held before conversion. Planning 80,000
    files lost a quarter of its time the same way. Nested and concurrent uses
    share one setting, restored when the last one ends.
    """
    global _gc_depth, _gc_saved
    with _gc_lock:
        if _gc_depth == 0:
            _gc_saved = gc.get_threshold()
            gc.set_threshold(max(gen0, _gc_saved[0]), *_gc_saved[1:])
        _gc_depth += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_depth -= 1
            if _gc_depth == 0:
                gc.set_threshold(*_gc_saved)


def _write_partition(records, index: int, spec: WriteSpec) -> list[PartResult]:
    with fewer_collections():
        return _write_partition_records(records, index, spec)


def _write_partition_records(records, index: int, spec: WriteSpec) -> list[PartResult]:
    t0 = time.perf_counter()
    writer = _PartitionWriter(spec, index)
    if isinstance(records, Converted) and not records.started:  # straight from to_bag
        for piece, chunks in records.by_piece(CHUNK):
            writer.begin(piece.path)
            ok = True
            for chunk in chunks:
                if chunk is None:
                    ok = False
                    break
                writer.add(chunk)
                if writer.dropped:  # its records clash: reported once, the rest not converted
                    chunks.close()
                    break
            writer.end(ok)
    else:
        _add_records(writer, records, spec.shard_size)
    errors = _tracking.drain({(layer, index) for layer in spec.convert_layers})
    result = writer.finish(errors)
    result.seconds = round(time.perf_counter() - t0, 3)
    save_marker(spec.out, result)
    return [result]


def _add_records(writer: _PartitionWriter, records, shard_size: int) -> None:
    """Records after other bag steps: grouped by the piece they came from while
    they stream lazily, else a shard's worth at a time."""
    lazy = not isinstance(records, (list, tuple))
    if lazy:
        _tracking.set_piece(None)
    group: list = []
    group_src = None
    for rec in records:  # taken piece by piece (or a shard's worth at a time)
        src = _tracking.current_piece() if lazy else None
        if group and (src != group_src or (src is None and len(group) >= shard_size)):
            writer.add_source(group, group_src and group_src.path)
            group = []
        group_src = src
        group.append(rec)
    if group:
        writer.add_source(group, group_src and group_src.path)


def save_marker(out: OutputDir, result: PartResult) -> None:
    """What makes a finished partition survive a killed run (the cost of resuming)."""
    out.write_json(_marker(result.index), result.to_json())


def load_marker(out: OutputDir, index: int) -> PartResult | None:
    """The saved result of partition ``index``, if it and all its files exist."""
    try:
        res = PartResult.from_json(json.loads(out.read_bytes(_marker(index))))
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None
    files = [s.file for s in res.shards] + ([res.remainder.file] if res.remainder else [])
    return res if res.index == index and all(out.exists(f) for f in files) else None


def write_tasks(bag: db.Bag, spec: WriteSpec) -> list:
    """One delayed write per partition, fused with the bag's chain into one task.

    The records stream from the converter into the writer in one thread and
    never leave the worker (a generator could not be sent anyway). A bag
    straight from :func:`~dask_prep.convert.bag_of` has one task a partition,
    which the write task calls inline. Otherwise the partition index is a
    literal argument, so each write task depends only on its partition: a
    linear chain that Bag's optimizer fuses (leaving an alias task per
    partition under the write task's name, one scheduler round trip more).
    """
    name = "dask-prep-write-" + tokenize(bag.name, spec)
    keys = [(bag.name, i) for i in range(bag.npartitions)]
    inline = bag.name.startswith(CONVERT_PREFIX) and len(bag.dask.layers) == 1
    # each partition's conversion task itself, or its key (then fused by Bag)
    parts = [bag.dask.layers[bag.name][k] for k in keys] if inline else keys
    dsk = {(name, i): (write_partition, part, i, spec) for i, part in enumerate(parts)}
    with dask.annotate(priority=lambda key: -key[1]):
        graph = HighLevelGraph.from_collections(name, dsk, dependencies=[] if inline else [bag])
        return db.Bag(graph, name, len(parts)).to_delayed(optimize_graph=True)


def dask_setup(worker=None) -> None:
    """Run by each local worker as it starts (the cluster preloads this module).

    Converting the first records to Arrow imports pandas and more inside
    pyarrow (~0.2 s); doing it here overlaps that with discovery and planning
    instead of delaying every worker's first task.
    """
    fmt = get_format("parquet")
    fmt.encode(fmt.batch([{"text": "warm-up", "words": ["warm", "up"]}]))
