"""The partition task: one partition's records cut into exact shards, on its worker.

Each partition task streams its records into full shards of exactly
``shard_size`` records and writes them itself; only its last ``< shard_size``
records (the leftovers) go to a small staging file. When every partition is
done, :mod:`dask_prep.write.commit` plans the merge of the leftovers, in
partition order, into full shards plus one final partial shard. Records never
travel to the client, each record is encoded once (leftovers twice), and a
worker holds at most ``CHUNK`` records as Python objects, plus the batches of
the current source and one shard.

Every partition also leaves a small JSON marker; a run that is killed and
started again with the same inputs and options skips the partitions that have
one (:mod:`dask_prep.write.results`).
"""
from __future__ import annotations

import gc
import threading
import time
from contextlib import contextmanager

from ..errors import ConversionError, SchemaMismatchError, SourceError
from ..ingest import side_channel
from ..ingest.convert import Conversion
from .output import WORK
from .results import PartResult, load_marker, save_marker
from .shards import WriteSpec, rewrite_shard, write_shard

__all__ = ["write_partition", "fewer_collections", "CHUNK"]


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
        self.fmt = spec.new_format()
        self.result = PartResult(index)
        self.rows: list = []      # records not yet converted ...
        self.groups: list = []    # ... as [source, count] runs
        self.pending: list = []   # converted batches, not yet written
        self.npending = 0
        self.open: str | None = None  # the source being added:
        self.open_rows = 0            # its records at the end of ``rows``,
        self.open_batches = 0         # its batches at the end of ``pending``,
        self.open_state = None        # the format's state before them,
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
        except self.fmt.record_errors:
            at = 0
            for source, count in groups:
                group, at = rows[at:at + count], at + count
                try:
                    batch = self.fmt.batch(group)
                except self.fmt.record_errors as exc:
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
            self.open_state = self.fmt.snapshot()
        try:
            batch = self.fmt.batch(rows)
        except self.fmt.record_errors as exc:
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
            self.fmt.restore(self.open_state)

    def _report(self, source: str | None, exc: Exception) -> None:
        where = source or f"<partition {self.index}>"
        if self.spec.on_error == "raise":
            raise SchemaMismatchError(f"{where}: {exc}") from None
        self.result.errors.append(SourceError(where, "SchemaMismatchError", str(exc)))

    def _rewrite_narrower_shards(self) -> None:
        """Full shards written before a later record widened the schema (an int
        column that turned out to hold floats, a field that appeared) are
        written again with the partition's final schema, which the client
        unifies across partitions: every shard ends up with the same one."""
        if not self.fmt.has_schema:
            return
        final = self.fmt.schema
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
        self.result.shards.append(write_shard(self.spec.out, name, fmt, fmt.slice(batch, 0, n)))
        self.shard_schemas.append(fmt.schema)

    def finish(self, conversion_errors: list) -> PartResult:
        self._convert_waiting()
        self._emit_ready()
        self._rewrite_narrower_shards()
        res = self.result
        if self.npending:
            name = f"{WORK}/p{self.index:05d}-rem{self.fmt.stage_suffix}"
            res.remainder = write_shard(self.spec.out, name, self.fmt, self.fmt.concat(self.pending),
                                        stage=True)
        res.records = sum(s.records for s in res.shards) + (res.remainder.records if res.remainder else 0)
        res.schema = self.fmt.schema if res.records else None
        res.errors = conversion_errors + res.errors
        return res


def write_partition(records, index: int, key: str | None, spec: WriteSpec) -> PartResult:
    """The task run for each partition (module-level, so it pickles by reference).

    ``records`` is the partition's :class:`~dask_prep.ingest.convert.Conversion`
    (straight from :func:`dask_prep.to_bag`) or, after a user's steps, its
    records. A failure that ``on_error="raise"`` asked for comes back as data
    (``fatal``), so the client raises it as one clear error instead of a
    worker traceback. ``key`` says what the partition is made from; a marker
    left by another key (a source changed since) is done again.
    """
    if not spec.schema_is_hint:
        done = load_marker(spec.out, index, key)
        if done is not None:  # finished before: a retry after a lost worker, or a resume
            return done       # the records (a lazy conversion) are never pulled
    try:
        with fewer_collections():
            return _write_partition(records, index, key, spec)
    except (ConversionError, SchemaMismatchError) as exc:
        return PartResult(index, fatal=(type(exc).__name__, str(exc)), key=key)


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


def _write_partition(records, index: int, key: str | None, spec: WriteSpec) -> PartResult:
    t0 = time.perf_counter()
    writer = _PartitionWriter(spec, index)
    if isinstance(records, Conversion) and not records.started:  # straight from to_bag
        _add_pieces(writer, records)
        errors = records.errors
    else:
        _add_records(writer, records, spec.shard_size)
        errors = side_channel.drain({(layer, index) for layer in spec.conversion_layers})
    result = writer.finish(errors)
    result.seconds, result.key = round(time.perf_counter() - t0, 3), key
    save_marker(spec.out, result)
    return result


def _add_pieces(writer: _PartitionWriter, conversion: Conversion) -> None:
    """Each piece's records as the converter yields them, a chunk at a time."""
    for piece, chunks in conversion.pieces(CHUNK):
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


def _add_records(writer: _PartitionWriter, records, shard_size: int) -> None:
    """Records after other bag steps: grouped by the piece they came from while
    they stream lazily, else a shard's worth at a time."""
    lazy = not isinstance(records, (list, tuple))
    if lazy:
        side_channel.set_piece(None)
    group: list = []
    group_src = None
    for rec in records:  # taken piece by piece (or a shard's worth at a time)
        src = side_channel.current_piece() if lazy else None
        if group and (src != group_src or (src is None and len(group) >= shard_size)):
            writer.add_source(group, group_src and group_src.path)
            group = []
        group_src = src
        group.append(rec)
    if group:
        writer.add_source(group, group_src and group_src.path)


def dask_setup(worker=None) -> None:
    """Run by each local worker as it starts (the cluster preloads this module).

    Converting the first records to Arrow imports pandas and more inside
    pyarrow (~0.2 s); doing it here overlaps that with discovery and planning
    instead of delaying every worker's first task.
    """
    from .formats import get_format
    fmt = get_format("parquet")
    fmt.encode(fmt.batch([{"text": "warm-up", "words": ["warm", "up"]}]))
