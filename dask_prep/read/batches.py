"""Padded training batches from ragged id sequences stored in shards.

Sequences are stored ragged (Parquet ``list<int32>``, lists in pickle shards)
and padded per batch, to the longest row of the batch. How an epoch is read:

1. **Shard order**: manifest order, or a permutation seeded by
   ``(shuffle, epoch)``, the same in every process.
2. **Rank part**: the records of the epoch, in that order, form one stream;
   rank ``r`` of ``world_size`` reads the contiguous range
   ``[r*N//W, (r+1)*N//W)`` of it. Parts are disjoint, cover every record,
   and differ by at most one record; a rank opens only the shards its range
   touches (at most two of them shared with a neighbour). With
   ``drop_last=True`` every part holds ``N//W`` records, so every rank gets
   the same number of batches.
3. **Blocks**: a part is read in blocks of ``shuffle_buffer`` records (rounded
   up to a multiple of ``batch_size``; by default one shard's worth). A block's
   rows are permuted with a generator seeded by ``(shuffle, epoch, position)``;
   with ``bucket_by_length`` they are then sorted by length, cut into batches
   and the batches' order shuffled. Every block but the last holds whole
   batches, so batches never straddle blocks.

So the batches of an epoch are a pure function of the dataset and options,
and resuming at batch ``k`` (``load_state_dict``) reads only from the block
holding it.

**Elastic resume.** Training is synchronous: when a state is saved every rank
has consumed the same ``k`` batches. The state records that history as
``[[world_size, k], ...]``, not a buffer. Resumed at the same world size, the
epoch simply goes on. At another world size, the records not yet consumed by
any rank (each old rank's part minus its first ``k`` batches, in stream
order, ranks in order) form the stream of a new *generation*, split among the
new ranks as above and read in blocks shuffled with the generation in the
seed. Every record of the epoch is then seen exactly once, before plus
after; the order after the resume is a function of the seed, epoch, dataset,
history and the new world size; the state of any one rank resumes every rank. Loading and padding run in a background thread at most
``prefetch`` batches ahead of the consumer; memory holds one block, one shard
and the queued batches, whatever the dataset size.

>>> import dask.bag as db, dask_prep as dp, numpy as np, tempfile
>>> recs = [{"token_ids": np.arange(i % 4, dtype=np.int32) + 1} for i in range(10)]
>>> out = tempfile.mkdtemp()
>>> _ = dp.write_shards(db.from_sequence(recs), out, shard_size=4, overwrite=True)
>>> batches = list(dp.open(out).iter_batches(4))
>>> batches[0]["token_ids"].tolist(), batches[0]["lengths"].tolist()
([[0, 0, 0], [1, 0, 0], [1, 2, 0], [1, 2, 3]], [0, 1, 2, 3])
>>> [len(b["lengths"]) for b in batches]
[4, 4, 2]
"""
from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np
import pyarrow as pa

from ..write.formats import ShardFile, get_format
from ..write.output import OutputDir
from .prefetch import Prefetcher
from .ragged import Ragged

__all__ = ["BatchOptions", "BatchIterator", "iter_batches", "EpochPlan", "plan_epoch", "rank_plan",
           "next_generation", "default_column"]

STATE_VERSION = 2


def _positive(name: str, value, *, zero: bool = False) -> None:
    low = 0 if zero else 1
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, not {value!r}")


@dataclass(frozen=True)
class PadOptions:
    """How batches are cut and padded: shared by :func:`iter_batches` and ``stream``."""

    batch_size: int
    column: str = "token_ids"
    columns: tuple = ()
    pad_value: int = 0
    max_len: int | None = None
    drop_last: bool = False

    def __post_init__(self):
        object.__setattr__(self, "columns", tuple(self.columns))
        _positive("batch_size", self.batch_size)
        if self.max_len is not None:
            _positive("max_len", self.max_len)


@dataclass(frozen=True)
class BatchOptions(PadOptions):
    """How :func:`iter_batches` reads, shuffles, splits and pads; validated once."""

    shuffle: int | None = None
    shuffle_buffer: int | None = None
    bucket_by_length: bool = False
    rank: int = 0
    world_size: int = 1
    prefetch: int = 2
    epoch: int = 0
    pad_to_equal: bool = False

    def __post_init__(self):
        super().__post_init__()
        _positive("world_size", self.world_size)
        _positive("prefetch", self.prefetch, zero=True)
        _positive("epoch", self.epoch, zero=True)
        if self.shuffle_buffer is not None:
            _positive("shuffle_buffer", self.shuffle_buffer)
        if self.shuffle is not None and (isinstance(self.shuffle, bool) or not isinstance(self.shuffle, int)):
            raise ValueError(f"shuffle must be None or an integer seed, not {self.shuffle!r}; "
                             "a seed makes the order reproducible (e.g. shuffle=0)")
        if not isinstance(self.rank, int) or not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must be in 0..{self.world_size - 1} for world_size={self.world_size}, "
                             f"not {self.rank!r}")
        clash = {"lengths", self.column} & set(self.columns) or ({"lengths"} & {self.column})
        if clash:
            raise ValueError(f"column name {sorted(clash)[0]!r} is used twice in a batch; "
                             "'lengths' is reserved and columns must differ from column")

        if self.pad_to_equal and self.drop_last:
            raise ValueError("pad_to_equal and drop_last both make ranks equal; choose one")

    def ordering(self) -> dict:
        """The options that decide which records form which batch (checked on resume;
        the world size may change, see the module's notes)."""
        keep = ("batch_size", "drop_last", "shuffle", "shuffle_buffer", "bucket_by_length")
        return {k: v for k, v in asdict(self).items() if k in keep}


# -- the plan of an epoch ------------------------------------------------------


@dataclass(frozen=True)
class EpochPlan:
    """Which rows of which shards a rank reads, block by block, in one epoch."""

    order: np.ndarray   # shard indices in reading order
    starts: np.ndarray  # stream position of each ordered shard's first record (+ total)
    begin: int          # this rank's part of the generation's stream: [begin, end)
    end: int
    block: int          # records per block, a multiple of batch_size
    epoch: int = 0
    gen: int = 0        # resumes at another world size so far (the stream's generation)
    stream: np.ndarray | None = None  # generation > 0: its stream positions, in order
    target: int = 0     # pad_to_equal: the records every rank's part is padded to

    @property
    def nrows(self) -> int:
        return self.end - self.begin

    @property
    def nblocks(self) -> int:
        return math.ceil(self.nrows / self.block)

    def positions(self, k: int) -> np.ndarray:
        """The stream positions of block ``k``'s rows."""
        lo, hi = self.begin + k * self.block, min(self.begin + (k + 1) * self.block, self.end)
        return np.arange(lo, hi) if self.stream is None else self.stream[lo:hi]

    def slices(self, k: int) -> list[tuple[int, int, int]]:
        """``(shard index, first row, stop row)`` of every shard piece in block ``k``."""
        if self.stream is None:
            lo, hi = self.begin + k * self.block, min(self.begin + (k + 1) * self.block, self.end)
            return self._run(lo, hi)
        pos = self.positions(k)
        cuts = np.flatnonzero(np.diff(pos) != 1) + 1  # runs of consecutive positions
        return [s for run in np.split(pos, cuts) if len(run)
                for s in self._run(int(run[0]), int(run[-1]) + 1)]

    def _run(self, lo: int, hi: int) -> list[tuple[int, int, int]]:
        pos, out = int(np.searchsorted(self.starts, lo, side="right")) - 1, []
        while lo < hi:
            stop = min(hi, int(self.starts[pos + 1]))
            out.append((int(self.order[pos]), lo - int(self.starts[pos]), stop - int(self.starts[pos])))
            lo, pos = stop, pos + 1
        return out


def plan_epoch(counts, opts: BatchOptions, *, shard_size: int, epoch: int) -> EpochPlan:
    """The :class:`EpochPlan` for shards of ``counts`` records (pure: same inputs, same plan).

    >>> p = plan_epoch([4, 4, 2], BatchOptions(2, rank=1, world_size=2), shard_size=4, epoch=0)
    >>> p.begin, p.end, p.slices(0)
    (5, 10, [(1, 1, 4), (2, 0, 1)])
    """
    n = len(counts)
    order = np.arange(n) if opts.shuffle is None else \
        np.random.default_rng([opts.shuffle, epoch, 0]).permutation(n)
    starts = np.concatenate([[0], np.cumsum(np.asarray(counts, dtype=np.int64)[order])])
    b = opts.batch_size
    block = math.ceil(max(opts.shuffle_buffer or shard_size, b) / b) * b
    base = EpochPlan(order, starts, 0, int(starts[-1]), block, epoch)
    return rank_plan(base, opts, opts.world_size, opts.rank)


def _part(total: int, w: int, r: int, drop_last: bool) -> tuple[int, int]:
    if drop_last:
        return r * (total // w), (r + 1) * (total // w)
    return r * total // w, (r + 1) * total // w


def rank_plan(gen: EpochPlan, opts: BatchOptions, world_size: int, rank: int) -> EpochPlan:
    """Rank ``rank``'s part of the whole stream of generation ``gen`` (``begin=0``)."""
    total = gen.nrows
    begin, end = _part(total, world_size, rank, opts.drop_last)
    target = -(-total // world_size) if opts.pad_to_equal else 0
    return replace(gen, begin=begin, end=end, target=target)


def next_generation(gen: EpochPlan, opts: BatchOptions, world_size: int, consumed: int,
                    lengths: Callable | None = None) -> EpochPlan:
    """The stream left after every one of ``world_size`` ranks consumed ``consumed``
    batches of generation ``gen`` (``lengths(plan, k)`` reads a block's row
    lengths, needed only when batches are bucketed by length)."""
    left = []
    per_block = gen.block // opts.batch_size
    for r in range(world_size):
        plan = rank_plan(gen, opts, world_size, r)
        full, partial = divmod(consumed, per_block)
        rows = [plan.positions(k) for k in range(plan.nblocks)]
        if full < len(rows) and partial:
            block_lengths = lengths(plan, full) if opts.bucket_by_length else np.zeros(len(rows[full]))
            taken = _block_batches(block_lengths, opts, _block_rng(opts, plan, full))[:partial]
            keep = np.ones(len(rows[full]), bool)
            keep[np.concatenate(taken)] = False
            rows[full] = rows[full][keep]
        left += rows[full:]
    stream = np.concatenate(left) if left else np.zeros(0, np.int64)
    return replace(gen, begin=0, end=len(stream), gen=gen.gen + 1, stream=stream)


def _block_batches(lengths: np.ndarray, opts: BatchOptions, rng) -> list[np.ndarray]:
    """Row indices of each batch of one block."""
    n, b = len(lengths), opts.batch_size
    order = rng.permutation(n) if rng is not None else np.arange(n)
    if opts.bucket_by_length:
        order = order[np.argsort(lengths[order], kind="stable")]
    batches = [order[i:i + b] for i in range(0, n, b)]
    if batches and len(batches[-1]) < b and opts.drop_last:
        batches.pop()
    if opts.bucket_by_length and rng is not None:
        full = sum(len(x) == b for x in batches)
        batches = [batches[i] for i in rng.permutation(full)] + batches[full:]
    return batches


# -- reading shards ------------------------------------------------------------


@dataclass(frozen=True)
class ShardSource:
    """The shards of a dataset and how to read the needed columns of one."""

    out: OutputDir
    format: str
    files: tuple
    counts: tuple
    shard_size: int
    expect: tuple = ()  # per shard, what its reads check (ShardFile.expect)

    @classmethod
    def of(cls, ds) -> ShardSource:
        return cls(ds.out, ds.format, tuple(s["file"] for s in ds.shards),
                   tuple(s["records"] for s in ds.shards), ds.manifest["shard_size"],
                   tuple(ds.shard_file(i).expect for i in range(len(ds.shards))))

    def read(self, i: int, column: str, extras: tuple) -> Ragged:
        """Shard ``i``'s ``column`` ids and ``extras`` (columns only, where the format allows)."""
        fmt = get_format(self.format)
        shard = ShardFile(self.out, self.files[i], self.expect[i] if self.expect else ())
        table = fmt.table(shard, [column, *extras])
        if table is not None:
            return Ragged.from_arrow(table, column, extras)
        return Ragged.from_records(fmt.records(fmt.decode(shard)), column, extras, where=self.files[i])


class _BlockReader:
    """Reads the rows of a block, keeping the last shard: one straddling two blocks is read once."""

    def __init__(self, source: ShardSource, opts: BatchOptions):
        self.source, self.opts = source, opts
        self.shard, self.rows = None, None

    def _shard(self, i: int) -> Ragged:
        if self.shard != i:
            self.shard, self.rows = i, self.source.read(i, self.opts.column, self.opts.columns)
        return self.rows

    def block(self, slices: list) -> Ragged:
        return Ragged.concat([self._shard(i).slice(lo, hi) for i, lo, hi in slices])


def _block_rng(opts: BatchOptions, plan: EpochPlan, k: int):
    if opts.shuffle is None:
        return None
    generation = [plan.gen] if plan.gen else []  # generation 0 keeps the seeds of before
    return np.random.default_rng([opts.shuffle, plan.epoch, 1, *generation, plan.begin + k * plan.block])


def _generate(source: ShardSource, opts: BatchOptions, plan: EpochPlan, skip: int) -> Iterator[dict]:
    """The padded batches of ``plan``, from batch number ``skip`` on."""
    reader, per_block = _BlockReader(source, opts), plan.block // opts.batch_size
    batch = None
    for k in range(skip // per_block, plan.nblocks):
        block = reader.block(plan.slices(k))
        first = skip % per_block if k == skip // per_block else 0
        for idx in _block_batches(block.lengths, opts, _block_rng(opts, plan, k))[first:]:
            if batch is not None:
                yield batch
            batch = block.pad(idx, column=opts.column, pad_value=opts.pad_value, max_len=opts.max_len)
    if batch is None:
        return
    if plan.nrows >= plan.target:
        yield batch
    elif len(batch["lengths"]) < opts.batch_size:  # a rank one record short: an empty row
        yield _with_empty_row(batch, opts, keep=True)
    else:
        yield batch
        yield _with_empty_row(batch, opts, keep=False)


def _with_empty_row(batch: dict, opts: BatchOptions, keep: bool) -> dict:
    """``batch`` and one row of length 0 (all padding) after it, or that row alone."""
    def grow(v):
        row = np.zeros((1, *v.shape[1:]), dtype=v.dtype)
        if v.ndim > 1:
            row[:] = opts.pad_value
        return np.concatenate([v, row]) if keep else row
    return {k: grow(v) for k, v in batch.items()}


# -- the iterator --------------------------------------------------------------


class BatchIterator:
    """One epoch of padded batches for one rank; resumable and closable.

    Iterate it (or use it as a context manager, which closes the background
    thread on exit). ``state_dict()`` gives the position after the batches
    consumed so far; a new iterator with the same options resumes there after
    ``load_state_dict(state)``.
    """

    def __init__(self, source: ShardSource, options: BatchOptions):
        self.source, self.options = source, options
        self.epoch = options.epoch
        self.batches = self.records = 0  # consumed so far this epoch (skipped ones included)
        self.history: list = []  # [world_size, batches] of each generation before this one
        self._it = self._cached = None

    def _plan(self) -> EpochPlan:
        key = (self.epoch, tuple(map(tuple, self.history)))
        if self._cached is None or self._cached[0] != key:
            opts = self.options
            plan = plan_epoch(self.source.counts, opts, shard_size=self.source.shard_size, epoch=self.epoch)
            gen = replace(plan, begin=0, end=int(plan.starts[-1]), target=0)
            for world, consumed in self.history:
                gen = next_generation(gen, opts, world, consumed, self._lengths)
            self._cached = key, rank_plan(gen, opts, opts.world_size, opts.rank)
        return self._cached[1]

    def _lengths(self, plan: EpochPlan, k: int) -> np.ndarray:
        return _BlockReader(self.source, self.options).block(plan.slices(k)).lengths

    @property
    def _done_before(self) -> int:
        """Batches this rank consumed in the generations before the current one."""
        return sum(consumed for _, consumed in self.history)

    def __len__(self) -> int:
        """Batches in this epoch for this rank (from the manifest; nothing is read,
        except after a resume at another world size with length bucketing)."""
        plan, b = self._plan(), self.options.batch_size
        n = max(plan.nrows, plan.target)
        return self._done_before + (n // b if self.options.drop_last else math.ceil(n / b))

    def __iter__(self) -> BatchIterator:
        return self

    def __next__(self) -> dict:
        if self._it is None:
            make = functools.partial(_generate, self.source, self.options, self._plan(),
                                     self.batches - self._done_before)
            prefetch = self.options.prefetch
            self._it = Prefetcher(make, size=prefetch) if prefetch else make()
        batch = next(self._it)
        self.batches += 1
        self.records += len(batch["lengths"])
        return batch

    @property
    def waited(self) -> float:
        """Seconds the consumer waited for the loader (0 if it always kept up)."""
        return getattr(self._it, "waited", 0.0)

    def close(self) -> None:
        """Stop the background loader and join its thread (idempotent)."""
        close = getattr(self._it, "close", None)
        if close:
            close()

    def __enter__(self) -> BatchIterator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def state_dict(self) -> dict:
        """The position, small and JSON-serializable: epoch, seed, batches and
        records consumed by this rank, and the history ``[[world_size, batches],
        ...]`` of the epoch's generations (the last one is the current)."""
        current = self.batches - self._done_before
        return {"version": STATE_VERSION, "epoch": self.epoch, "seed": self.options.shuffle,
                "batches": self.batches, "records": self.records,
                "history": [*map(list, self.history), [self.options.world_size, current]],
                "options": self.options.ordering(),
                "dataset": {"shards": len(self.source.files), "records": sum(self.source.counts)}}

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state`` (from :meth:`state_dict` of any rank, at any
        world size); call before iterating. At the saved world size the epoch goes
        on exactly; at another, the records no rank consumed are shared anew."""
        if self._it is not None:
            raise RuntimeError("load_state_dict must be called before iterating; "
                               "make a new iterator with ds.iter_batches(...) and load the state into it")
        version = state.get("version")
        if version not in (1, STATE_VERSION):
            raise ValueError(f"state version {version!r} is not {STATE_VERSION}; "
                             "it was saved by another dask-prep version")
        options = dict(state["options"])
        if version == 1:  # a fixed world size then: one generation
            history = [[options.pop("world_size"), state["batches"]]]
            options.pop("rank")
        else:
            history = [list(h) for h in state["history"]]
        _same("options", options, self.options.ordering())
        _same("dataset", state["dataset"], {"shards": len(self.source.files),
                                            "records": sum(self.source.counts)})
        if history and history[-1][0] == self.options.world_size:
            *self.history, (_, current) = history  # the same generation goes on
        else:
            self.history, current = history, 0
        self.epoch, self.records = state["epoch"], state["records"]
        self.batches = self._done_before + current


def _same(what: str, saved: dict, now: dict) -> None:
    diff = {k: (saved.get(k), now.get(k)) for k in set(saved) | set(now) if saved.get(k) != now.get(k)}
    if diff:
        shown = ", ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in sorted(diff.items()))
        raise ValueError(f"cannot resume: the {what} differ from the saved state ({shown}); "
                         "resume with the same dataset and the same ordering options")


def _check_columns(ds, opts: BatchOptions) -> None:
    schema = ds.schema
    if schema is None:
        return
    for name in (opts.column, *opts.columns):
        if name not in schema.names:
            raise ValueError(f"column {name!r} is not in {ds.out.url} (columns: "
                             f"{', '.join(schema.names)}); pass column=/columns= from those")
    typ = schema.field(opts.column).type
    if not (pa.types.is_list(typ) or pa.types.is_large_list(typ)) or not pa.types.is_integer(typ.value_type):
        raise TypeError(f"column {opts.column!r} is {typ}, not a list of integer ids; "
                        "turn words into ids first (dask_prep.with_token_ids or token_ids)")


def default_column(ds) -> str:
    """The column batches read when not told: ``input_ids`` for token records
    (a dataset made with a tokenizer, or a token format's), else ``token_ids``."""
    if "tokens" in ds.manifest:
        return "input_ids"
    return get_format(ds.format).ids_column or "token_ids"


def iter_batches(ds, batch_size: int, **options) -> BatchIterator:
    """Padded batches ``{column: int32[B, L], "lengths": int32[B], **columns}`` of ``ds``.

    Parameters
    ----------
    ds
        A :class:`~dask_prep.ShardSet` whose ``column`` holds integer id sequences.
    batch_size
        Records per batch (the last batch of a rank's part may be smaller
        unless ``drop_last``).
    **options
        Keyword-only fields of :class:`BatchOptions`: ``column`` (default
        ``"input_ids"`` for token datasets, else ``"token_ids"``: :func:`default_column`),
        ``columns=()`` (more per-record fields to include), ``pad_value=0``,
        ``max_len=None`` (truncate longer rows), ``drop_last=False``,
        ``shuffle=None`` or a seed, ``shuffle_buffer=None`` (records per
        shuffled block; one shard by default), ``bucket_by_length=False``,
        ``rank=0``, ``world_size=1``, ``prefetch=2`` (batches loaded ahead in a
        background thread; 0 loads in the caller's thread), ``epoch=0``,
        ``pad_to_equal=False`` (a rank one record short gets a row of length 0,
        so every rank yields the same number of batches, as ``drop_last`` does
        by leaving records out).

    Packed sequences (``run(..., tokenizer=, seq_len=L)``) all have ``L``
    tokens, so their batches are dense ``int32[B, L]``: no padding.
    """
    opts = BatchOptions(batch_size, **{"column": default_column(ds), **options})
    _check_columns(ds, opts)
    return BatchIterator(ShardSource.of(ds), opts)
