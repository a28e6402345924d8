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
holding it. Loading and padding run in a background thread at most
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
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa

from ..write.formats import ShardFile, get_format
from ..write.output import OutputDir
from .prefetch import Prefetcher
from .ragged import Ragged

__all__ = ["BatchOptions", "BatchIterator", "iter_batches", "EpochPlan", "plan_epoch"]

STATE_VERSION = 1


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

    def ordering(self) -> dict:
        """The options that decide which records form which batch (checked on resume)."""
        keep = ("batch_size", "drop_last", "shuffle", "shuffle_buffer", "bucket_by_length",
                "rank", "world_size")
        return {k: v for k, v in asdict(self).items() if k in keep}


# -- the plan of an epoch ------------------------------------------------------


@dataclass(frozen=True)
class EpochPlan:
    """Which rows of which shards a rank reads, block by block, in one epoch."""

    order: np.ndarray   # shard indices in reading order
    starts: np.ndarray  # stream position of each ordered shard's first record (+ total)
    begin: int          # this rank's part of the stream: [begin, end)
    end: int
    block: int          # records per block, a multiple of batch_size
    epoch: int = 0

    @property
    def nblocks(self) -> int:
        return math.ceil((self.end - self.begin) / self.block)

    def slices(self, k: int) -> list[tuple[int, int, int]]:
        """``(shard index, first row, stop row)`` of every shard piece in block ``k``."""
        lo, hi = self.begin + k * self.block, min(self.begin + (k + 1) * self.block, self.end)
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
    total, w, r = int(starts[-1]), opts.world_size, opts.rank
    if opts.drop_last:
        begin, end = r * (total // w), (r + 1) * (total // w)
    else:
        begin, end = r * total // w, (r + 1) * total // w
    b = opts.batch_size
    block = math.ceil(max(opts.shuffle_buffer or shard_size, b) / b) * b
    return EpochPlan(order, starts, begin, end, block, epoch)


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

    @classmethod
    def of(cls, ds) -> ShardSource:
        return cls(ds.out, ds.format, tuple(s["file"] for s in ds.shards),
                   tuple(s["records"] for s in ds.shards), ds.manifest["shard_size"])

    def read(self, i: int, column: str, extras: tuple) -> Ragged:
        """Shard ``i``'s ``column`` ids and ``extras`` (columns only, where the format allows)."""
        fmt, shard = get_format(self.format), ShardFile(self.out, self.files[i])
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
    return np.random.default_rng([opts.shuffle, plan.epoch, 1, plan.begin + k * plan.block])


def _generate(source: ShardSource, opts: BatchOptions, plan: EpochPlan, skip: int) -> Iterator[dict]:
    """The padded batches of ``plan``, from batch number ``skip`` on."""
    reader, per_block = _BlockReader(source, opts), plan.block // opts.batch_size
    for k in range(skip // per_block, plan.nblocks):
        block = reader.block(plan.slices(k))
        first = skip % per_block if k == skip // per_block else 0
        for idx in _block_batches(block.lengths, opts, _block_rng(opts, plan, k))[first:]:
            yield block.pad(idx, column=opts.column, pad_value=opts.pad_value, max_len=opts.max_len)


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
        self.batches = self.records = 0  # consumed so far (skipped ones included)
        self._it = None

    def _plan(self) -> EpochPlan:
        return plan_epoch(self.source.counts, self.options, shard_size=self.source.shard_size,
                          epoch=self.epoch)

    def __len__(self) -> int:
        """Batches in this epoch for this rank (from the manifest; nothing is read)."""
        plan, b = self._plan(), self.options.batch_size
        n = plan.end - plan.begin
        return n // b if self.options.drop_last else math.ceil(n / b)

    def __iter__(self) -> BatchIterator:
        return self

    def __next__(self) -> dict:
        if self._it is None:
            make = functools.partial(_generate, self.source, self.options, self._plan(), self.batches)
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
        """The position: epoch, seed, batches and records consumed, shard and block reached."""
        plan = self._plan()
        block = self.batches // (plan.block // self.options.batch_size)
        shard = int(np.searchsorted(plan.starts, plan.begin + block * plan.block, side="right")) - 1
        return {"version": STATE_VERSION, "epoch": self.epoch, "seed": self.options.shuffle,
                "batches": self.batches, "records": self.records, "block": block,
                "shard": shard, "options": self.options.ordering(),
                "dataset": {"shards": len(self.source.files), "records": sum(self.source.counts)}}

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state`` (from :meth:`state_dict`); call before iterating."""
        if self._it is not None:
            raise RuntimeError("load_state_dict must be called before iterating; "
                               "make a new iterator with ds.iter_batches(...) and load the state into it")
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"state version {state.get('version')!r} is not {STATE_VERSION}; "
                             "it was saved by another dask-prep version")
        _same("options", state["options"], self.options.ordering())
        _same("dataset", state["dataset"], {"shards": len(self.source.files),
                                            "records": sum(self.source.counts)})
        self.epoch, self.batches, self.records = state["epoch"], state["batches"], state["records"]


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
        Keyword-only fields of :class:`BatchOptions`: ``column="token_ids"``,
        ``columns=()`` (more per-record fields to include), ``pad_value=0``,
        ``max_len=None`` (truncate longer rows), ``drop_last=False``,
        ``shuffle=None`` or a seed, ``shuffle_buffer=None`` (records per
        shuffled block; one shard by default), ``bucket_by_length=False``,
        ``rank=0``, ``world_size=1``, ``prefetch=2`` (batches loaded ahead in a
        background thread; 0 loads in the caller's thread), ``epoch=0``.
    """
    opts = BatchOptions(batch_size, **options)
    _check_columns(ds, opts)
    return BatchIterator(ShardSource.of(ds), opts)
