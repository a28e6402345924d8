"""Stream: convert on the cluster and hand over padded batches, storing nothing.

For data too large to keep: each partition task converts its sources and packs
the id sequences into compact arrays (:class:`~dask_prep.ragged.Ragged`: one
int32 array and its offsets, no Python objects), which the client cuts into
batches and pads as partitions finish. At most ``max_in_flight`` partitions are
submitted and not yet consumed (backpressure): a slow consumer stops new work
from starting, so memory does not grow with the corpus. ``ordered=True`` hands
partitions over in partition order, so the batches are the same on every run;
by default they come as they finish (faster when partitions differ in cost).

An ordered stream resumes: :meth:`BatchStream.state_dict`, taken after the
batches the consumer has committed, says where the next batch starts
(partition and row); a new stream given it (:meth:`BatchStream.load_state_dict`)
converts nothing before that partition and yields the batches an
uninterrupted stream would have yielded from there.

>>> import dask_prep as dp, pathlib, tempfile
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "a.txt").write_text("One two. Three four five. Six.")
>>> vocab = dp.Vocab(["<pad>", "<unk>", "One", "two"])
>>> with dp.stream(d, converter=dp.with_token_ids("sentences", vocab), batch_size=2,
...                ordered=True, workers=1) as batches:
...     [b["token_ids"].tolist() for b in batches]
[[[2, 3, 0], [1, 1, 1]], [[1]]]
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field, replace

import dask.bag as db
import numpy as np
from dask.delayed import Delayed

from ..errors import ConversionError
from ..ingest import side_channel
from ..ingest.convert import Conversion, to_bag
from ..options import ClusterOptions, ConvertOptions, TokenOptions, split
from ..runtime.cluster import dask_session, tokenizer_threads
from ..runtime.graph import conversion_layers, culled, fused_tasks
from .batches import PadOptions, _positive
from .ragged import Ragged
from .token_stream import TokenCutter, TokenStreamSpec, token_spec, tokenize_for_stream

__all__ = ["stream", "BatchStream", "StreamOptions", "pack_partition"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamOptions(PadOptions):
    """How :func:`stream` batches and how much it lets run ahead; validated once."""

    ordered: bool = False
    max_in_flight: int | None = None
    rank: int = 0
    world_size: int = 1

    def __post_init__(self):
        super().__post_init__()
        if self.max_in_flight is not None:
            _positive("max_in_flight", self.max_in_flight)
        _positive("world_size", self.world_size)
        if not isinstance(self.rank, int) or not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must be in 0..{self.world_size - 1} for world_size="
                             f"{self.world_size}, not {self.rank!r}")
        if self.world_size > 1 and not self.ordered:
            raise ValueError("a stream shared by several ranks is ordered: pass ordered=True")


@dataclass(frozen=True)
class _PackSpec:
    column: str
    columns: tuple
    convert_layers: tuple


@dataclass
class Packed:
    """What a partition task sends back: compact rows and the sources that failed."""

    index: int
    rows: Ragged | None = None
    errors: list = field(default_factory=list)
    fatal: str | None = None  # message of the error that on_error="raise" stops on

    records = property(lambda self: len(self.rows))
    tokens = property(lambda self: self.rows.tokens)


def pack_partition(records, index: int, spec: _PackSpec) -> Packed:
    """The task run for each partition: records -> :class:`Packed` (module-level, pickles)."""
    try:
        rows = Ragged.from_records(records, spec.column, spec.columns, where=f"partition {index}")
    except ConversionError as exc:
        return Packed(index, fatal=str(exc))
    if isinstance(records, Conversion):
        return Packed(index, rows, records.errors)
    return Packed(index, rows, side_channel.drain({(layer, index) for layer in spec.convert_layers}))


def _pack_tasks(bag: db.Bag, fn, spec) -> list[Delayed]:
    """One delayed ``fn(records, index, spec)`` per partition, fused with the bag's
    chain (records never leave the task).

    Each carries only its own part of the graph: submitting one partition at a
    time with the whole graph would cost time in proportion to the partitions
    (measured: 0.13 s per submit at 200 partitions, 0.46 s at 1,000; 13 ms culled).
    """
    name = f"dask-prep-{fn.__name__}-" + hashlib.sha256(f"{bag.name}{spec}".encode()).hexdigest()[:32]
    return culled(fused_tasks(bag, fn, name, [(i,) for i in range(bag.npartitions)], spec))


def _finished(client, tasks: list, limit: int, ordered: bool, start: int = 0) -> Iterator[Packed]:
    """Results of ``tasks[start:]``, at most ``limit`` submitted and not yet handed over."""
    from distributed import as_completed

    todo, pending, running, index = iter(range(start, len(tasks))), as_completed(), {}, {}

    def submit() -> None:
        i = next(todo, None)
        if i is not None:
            running[i] = client.compute(tasks[i], optimize_graph=False)
            index[running[i].key] = i
            pending.add(running[i])

    def hand_over(i: int) -> Packed:
        result = running.pop(i).result()
        submit()  # its slot is free: the next partition starts while this one is consumed
        return result
    try:
        for _ in range(limit):
            submit()
        done, want = set(), start
        for fut in pending:
            done.add(index.pop(fut.key))
            while done and (not ordered or want in done):
                i = want if ordered else done.pop()
                done.discard(i)
                want += 1
                yield hand_over(i)
    finally:
        # released, not cancelled: another stream (another rank, or a resumed one on
        # the same client) may want the same keys; the scheduler drops what no one wants
        for fut in running.values():
            fut.release()


def _cut(rows: Ragged, size: int) -> tuple[list, Ragged]:
    """Index arrays of the full batches in ``rows``, and the rows left over."""
    full = len(rows) // size * size
    return [np.arange(i, i + size) for i in range(0, full, size)], rows.slice(full, len(rows))


@dataclass
class _Tally:
    """What a stream has received; shared by the stream and its generator."""

    errors: list = field(default_factory=list)
    partitions: int = 0
    records: int = 0
    tokens: int = 0
    batches: int = 0               # handed over (before a resume included)
    position: tuple = (0, 0)       # where the next batch of the whole stream starts: (partition, row)
    cut: int = 0                   # batches of the whole stream (all ranks) before it
    round_end: tuple = (0, 0)      # where the round of the last batch handed over ends

    def received(self, packed):
        """``packed`` (a :class:`Packed` or :class:`~dask_prep.read.token_stream.Tokens`), counted."""
        if packed.fatal:
            raise ConversionError(packed.fatal)
        for err in packed.errors:
            logger.info("skipped %s: %s: %s", err.path, err.error, err.message)
            self.errors.append(err.to_dict())
        self.partitions += 1
        self.records += packed.records
        self.tokens += packed.tokens
        return packed


class _RowCutter:
    """Partitions' rows, as they are handed over, cut into padded batches:
    ``(make, after)`` as :class:`~dask_prep.read.token_stream.TokenCutter` gives."""

    def __init__(self, o: StreamOptions, first: int = 0, skip: int = 0):
        self.o, self.first, self.skip = o, first, skip
        self.pad = dict(column=o.column, pad_value=o.pad_value, max_len=o.max_len)
        self.carry, self.held = Ragged.empty(o.columns), _Held()

    def add(self, packed: Packed) -> Iterator[tuple]:
        new = packed.rows
        start = self.skip if packed.index == self.first else 0
        new = new.slice(min(start, len(new)), len(new)) if start else new
        self.held.add(packed.index, start, len(new))
        rows = Ragged.concat([self.carry, new])
        ready, self.carry = _cut(rows, self.o.batch_size)
        for idx in ready:
            yield (lambda idx=idx: rows.pad(idx, **self.pad)), self.held.take(self.o.batch_size)

    def finish(self, end: tuple) -> Iterator[tuple]:
        carry = self.carry
        if len(carry) and not self.o.drop_last:
            yield (lambda: carry.pad(np.arange(len(carry)), **self.pad)), end


def _batches(bag: db.Bag, o: StreamOptions, session_options: ClusterOptions, tally: _Tally,
             tokens: TokenStreamSpec | None = None) -> Iterator[dict]:
    """The stream's work. It holds no reference to the BatchStream, so a stream
    dropped after ``break`` is freed at once, and this generator with it: its
    ``finally`` cancels the partitions in flight and closes a cluster it started."""
    layers = tuple(conversion_layers(bag))
    first, skip = tally.position
    if tokens is None:
        tasks = _pack_tasks(bag, pack_partition, _PackSpec(o.column, o.columns, layers))
        cutter = _RowCutter(o, first, skip)
    else:
        tasks = _pack_tasks(bag, tokenize_for_stream, replace(tokens, convert_layers=layers))
        cutter = TokenCutter(tokens, batch_size=o.batch_size, column=o.column, max_len=o.max_len,
                             drop_last=o.drop_last, first=first, skip=skip)
    ranks, end = _Ranks(o, tally), (len(tasks), 0)
    with ExitStack() as stack:
        with tokenizer_threads(tokens is not None):
            session = stack.enter_context(dask_session(session_options))
        # a cluster whose workers have not joined yet still gets work to wait for
        limit = o.max_in_flight or max(2 * session.workers, 2)
        for packed in _finished(session.client, tasks, limit, o.ordered, start=first):
            for make, after in cutter.add(tally.received(packed)):
                yield from ranks.cut(make, after)
        for make, after in cutter.finish(end):
            yield from ranks.cut(make, after)
        yield from ranks.end(end)


class _Ranks:
    """Which batches of the whole stream are this rank's: batch ``j`` goes to rank
    ``j % world_size``. A batch is handed over once every rank has one in its
    round, so with ``drop_last`` all ranks get the same number; without it the
    last round goes to the ranks it reaches."""

    def __init__(self, o: StreamOptions, tally: _Tally):
        self.o, self.tally, self.mine = o, tally, None
        self.j = tally.cut  # the whole stream's batches cut so far

    def cut(self, make, after: tuple) -> Iterator[dict]:
        """The next batch of the whole stream was cut; ``after``: where the one after it starts."""
        j, w = self.j, self.o.world_size
        self.j += 1
        if j % w == self.o.rank:
            self.mine = (make(), after, j + 1)  # padded only if it is this rank's
        if j % w == w - 1:
            yield from self._hand_over(after)

    def _hand_over(self, round_end: tuple) -> Iterator[dict]:
        if self.mine is not None:
            batch, self.tally.position, self.tally.cut = self.mine
            self.tally.round_end = round_end
            self.tally.batches += 1
            self.mine = None
            yield batch

    def end(self, after: tuple) -> Iterator[dict]:
        if not self.o.drop_last:
            yield from self._hand_over(after)


class _Held:
    """Where the rows not yet handed over come from: ``[partition, first row, rows]`` runs."""

    def __init__(self):
        self.runs: list = []
        self.after = 0  # the partition after the last one received

    def add(self, partition: int, first: int, rows: int) -> None:
        self.after = partition + 1
        if rows:
            self.runs.append([partition, first, rows])

    def take(self, n: int) -> tuple[int, int]:
        """Hand over ``n`` rows; where the next one starts."""
        while n:
            run = self.runs[0]
            used = min(n, run[2])
            run[1], run[2], n = run[1] + used, run[2] - used, n - used
            if not run[2]:
                self.runs.pop(0)
        return (self.runs[0][0], self.runs[0][1]) if self.runs else (self.after, 0)


class BatchStream:
    """Padded batches as the cluster makes them; iterate once, then it is closed.

    ``errors`` lists the sources that failed so far (dicts as in
    ``.errors.jsonl``); ``partitions``, ``records`` (documents, for a
    tokenizing stream) and ``tokens`` count what arrived.
    """

    def __init__(self, bag: db.Bag, options: StreamOptions, session: ClusterOptions,
                 tokens: TokenStreamSpec | None = None):
        self.bag, self.options, self._session, self._tokens = bag, options, session, tokens
        self._tally = _Tally()
        self._gen = None

    errors = property(lambda self: self._tally.errors)
    partitions = property(lambda self: self._tally.partitions)
    records = property(lambda self: self._tally.records)
    tokens = property(lambda self: self._tally.tokens)

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> dict:
        if self._gen is None:
            self._gen = _batches(self.bag, self.options, self._session, self._tally, self._tokens)
        return next(self._gen)

    def state_dict(self) -> dict:
        """Where the stream is after the batches handed over so far (small, JSON):
        take it once the consumer has committed them. Needs ``ordered=True``.
        ``row`` is a row of the partition, or for a tokenizing stream a token of it."""
        if not self.options.ordered:
            raise ValueError("only an ordered stream resumes (stream(..., ordered=True)): "
                             "unordered, the batches depend on which partition finished first")
        partition, row = self._tally.position
        return {"version": 1, "batches": self._tally.batches, "partition": partition, "row": row,
                "cut": self._tally.cut, "round": list(self._tally.round_end),
                "bag": self.bag.name, "partitions": self.bag.npartitions,
                "batch_size": self.options.batch_size, "drop_last": self.options.drop_last,
                "rank": self.options.rank, "world_size": self.options.world_size,
                **({"tokens": self._tokens.identity()} if self._tokens else {})}

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state`` (:meth:`state_dict` of the same stream); call before iterating.

        At the saved world size each rank goes on exactly. At another one
        (elastic: the state of any rank, all having consumed the same number of
        batches, as in synchronous training) the stream after the last whole
        round is shared among the new ranks, so no batch is lost or repeated."""
        if self._gen is not None:
            raise RuntimeError("load_state_dict must be called before iterating the stream")
        position = ("batches", "partition", "row", "cut", "round", "rank", "world_size")
        saved = self.state_dict()
        differ = sorted(k for k in saved if k not in position and state.get(k) != saved[k])
        if state.get("version") != 1 or differ:
            raise ValueError(f"cannot resume this stream from that state: {', '.join(differ) or 'version'} "
                             "differ; resume the same inputs, converter, tokenizer and batch options")
        self._tally.batches = state["batches"]
        if state["world_size"] == self.options.world_size:  # each rank goes on exactly
            self._tally.position, self._tally.cut = (state["partition"], state["row"]), state["cut"]
        else:  # elastic: the stream after the last whole round is shared anew, batch 0 to rank 0
            self._tally.position, self._tally.cut = tuple(state["round"]), 0

    def close(self) -> None:
        """Cancel the partitions in flight and close the cluster this stream started."""
        if self._gen is not None:
            self._gen.close()

    def __enter__(self) -> BatchStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def stream(data, *, batch_size: int, options: ConvertOptions | None = None,
           cluster: ClusterOptions | None = None, **fields) -> BatchStream:
    """Convert ``data`` on the cluster and yield padded batches, without writing shards.

    Parameters
    ----------
    data
        A :class:`dask.bag.Bag` of records, or inputs/:class:`~dask_prep.Sources`
        to convert (the fields of :class:`~dask_prep.options.ConvertOptions`, as
        for :func:`dask_prep.to_bag`: ``converter``, ``suffixes``, ``exclude``,
        ``on_error``, ``partition_size``, ``encoding_errors``, ``storage_options``).
    batch_size
        Records per batch; batches span partitions, only the last may be smaller.
    options, cluster, **fields
        Conversion and cluster options (``client``, ``scheduler``, ``workers``,
        ``memory_limit``, ``security``, as in :func:`dask_prep.run`: a
        LocalCluster is started, and closed with the stream, when there is no
        client), and the fields of :class:`StreamOptions`:
        ``column="token_ids"``, ``columns=()``, ``pad_value=0``,
        ``max_len=None``, ``drop_last=False``, ``ordered=False``,
        ``max_in_flight=None`` (2 per worker), ``rank=0``, ``world_size=1``;
        and to pack token ids, the fields of :class:`~dask_prep.options.TokenOptions`
        (``tokenizer``, ``seq_len``, ``text_field``, ``bos``, ``eos``, ``last``).

    Several trainer ranks can stream from one cluster: each calls ``stream``
    with its ``rank`` and the same ``world_size`` (and ``ordered=True``) on a
    ``scheduler=`` address. The tasks have the same keys in every rank, so the
    scheduler converts a partition once for all ranks while they are within
    ``max_in_flight`` partitions of one another (a rank further behind converts
    it again); batch ``j`` of the whole stream goes to rank ``j % world_size``,
    so the ranks' streams are disjoint and deterministic, and with
    ``drop_last=True`` of equal length. Each rank has its own backpressure.

    Batches are ``{column: int32[B, L], "lengths": int32[B], **columns}``
    as from :meth:`dask_prep.ShardSet.iter_batches`.

    With ``tokenizer=T, seq_len=L`` the workers encode each document's text
    and the stream packs the token ids, in source order, into sequences of
    ``L``: batches are dense ``{"input_ids": int32[B, L], "lengths": int32[B]}``
    (``column`` renames ``input_ids``), ordered, exactly the sequences
    ``dp.run(..., tokenizer=T, seq_len=L)`` writes (see
    :mod:`dask_prep.read.token_stream`; unordered, what still holds). Local
    workers tokenize in one thread each, as in ``run``.
    """
    given = {ConvertOptions: options, ClusterOptions: cluster}
    if fields.get("tokenizer") is not None:
        fields = {"column": "input_ids", **fields}
    conv, where, o, tok = split({**fields, "batch_size": batch_size}, ConvertOptions, ClusterOptions,
                                StreamOptions, TokenOptions,
                                given={k: v for k, v in given.items() if v is not None})
    tokens = token_spec(tok, columns=o.columns) if tok.tokenizer is not None else None
    if not isinstance(data, db.Bag):
        data = to_bag(data, options=conv)
    return BatchStream(data, o, where, tokens)
