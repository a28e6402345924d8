"""Convert: sources -> a Dask bag of records, one task per planned partition.

>>> import dask_prep as dp, pathlib, tempfile
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "a.txt").write_text("One sentence. Another one!")
>>> bag = dp.to_bag(dp.discover(d), converter="sentences")
>>> bag.compute(scheduler="sync")
[{'text': 'One sentence.', 'words': ['One', 'sentence']}, {'text': 'Another one!', 'words': ['Another', 'one']}]
>>> bag.map(lambda r: len(r["words"])).compute(scheduler="sync")
[2, 2]
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from itertools import islice

import dask.bag as db
import fsspec.config
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from . import _tracking
from .converters import Converter, resolve_converter
from .errors import ConversionError
from .plan import Piece, plan_partitions
from .sources import Sources, discover

__all__ = ["to_bag", "bag_of", "convert_partition", "Converted", "CONVERT_PREFIX"]

logger = logging.getLogger(__name__)

#: Name prefix of the bag layer ``to_bag`` builds; the shard writer looks for it.
CONVERT_PREFIX = "dask-prep-convert-"

ON_ERROR = ("skip", "raise")


def to_bag(sources: Sources | str | os.PathLike | Iterable, converter="text", *,
           on_error: str = "skip", partition_size: int | None = None,
           encoding_errors: str = "strict", storage_options: dict | None = None) -> db.Bag:
    """A :class:`dask.bag.Bag` of the records ``converter`` makes from ``sources``.

    Parameters
    ----------
    sources
        What :func:`dask_prep.discover` returned, or inputs to give it.
    converter
        A built-in name, ``"module:func"``, ``"file.py:func"`` or a callable
        ``fn(path) -> iterable of records``.
    on_error
        ``"skip"``: a source that fails is left out whole and reported (logged,
        and listed in ``errors.jsonl`` by :func:`dask_prep.write_shards`).
        ``"raise"``: the first failure stops the computation with
        :class:`~dask_prep.errors.ConversionError` naming the file.
    partition_size
        Bytes of input a partition (one task) should hold; automatic by default.
    encoding_errors
        ``"strict"`` or ``"replace"``, for invalid UTF-8 in built-in converters.
    storage_options
        For remote sources (default: those ``discover`` was given). They are set
        as fsspec's defaults for the sources' protocol inside each task, so a
        converter that simply calls ``fsspec.open(path)`` reaches the store too.
    """
    conv = resolve_converter(converter, encoding_errors=encoding_errors)
    if not isinstance(sources, Sources):
        sources = discover(sources, storage_options=storage_options)
    options = dict(storage_options or sources.storage_options or {})
    parts = plan_partitions(sources, partition_size=partition_size, splittable=conv.splittable)
    return bag_of(parts, conv, on_error=on_error, storage_options=options)


def bag_of(parts: list[tuple[Piece, ...]], conv: Converter, *, on_error: str = "skip",
           storage_options: dict | None = None) -> db.Bag:
    """The bag of an existing plan (:func:`~dask_prep.plan.plan_partitions`): one task a partition."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, not {on_error!r}")
    options = dict(storage_options or {})
    # Each partition's pieces travel as one JSON string: Dask neither walks nor
    # pickles 80,000 tuples one by one (a graph of 50,000 dataclass instances
    # reached the workers ~0.4 s later), and the plan is tokenized in one go.
    plan = [json.dumps(pieces) for pieces in parts]
    name = CONVERT_PREFIX + tokenize(plan, conv, on_error, options)
    dsk = {(name, i): (convert_partition, pieces, conv, on_error, name, i, options)
           for i, pieces in enumerate(plan)}
    return db.Bag(HighLevelGraph.from_collections(name, dsk, dependencies=[]), name, len(parts))


def convert_partition(pieces: str | list[Piece], conv: Converter, on_error: str,
                      name: str, index: int, storage_options: dict | None = None) -> Converted:
    """The records of every piece that converts (an iterator); the ones that fail are reported.

    A piece's records are yielded only after its conversion finished without
    error, so a file contributes all its records or none (the shard writer
    takes them as they come, with :meth:`Converted.by_piece`, and cuts a failed
    piece back out itself). ``pieces`` may be
    the JSON list of ``[path, start, end]`` that :func:`bag_of` ships.
    """
    if isinstance(pieces, str):
        pieces = [Piece(*p) for p in json.loads(pieces)]
    return Converted(pieces, conv, on_error, (name, index), storage_options)


class Converted(Iterator):
    """One partition's records, converted lazily: an iterator of records, or,
    for the shard writer, of ``(piece, records)`` with :meth:`by_piece` (no
    per-record bookkeeping)."""

    def __init__(self, pieces: list[Piece], conv: Converter, on_error: str, tag: tuple,
                 storage_options: dict | None):
        self.pieces, self.conv, self.on_error, self.tag = pieces, conv, on_error, tag
        self.storage_options = storage_options
        self._records: Iterator | None = None

    def by_piece(self, chunk: int | None) -> Iterator[tuple[Piece, Iterator[list | None]]]:
        """Each piece with its records in lists of at most ``chunk`` (``None``:
        one list), converted as they are taken. A ``None`` after them means the
        piece failed (it is reported): drop what it gave."""
        _tracking.start_partition(self.tag)
        _use_storage_options(self.pieces, self.storage_options)
        for piece in self.pieces:
            yield piece, _convert_chunks(piece, self.conv, self.on_error, self.tag, chunk)

    def _each_record(self) -> Iterator:
        try:
            for piece, chunks in self.by_piece(None):
                whole = list(chunks)  # [records], [] or [None] (it failed, and is reported)
                if whole and whole[0] is not None:  # a piece's records only once it converted
                    _tracking.set_piece(piece)
                    yield from whole[0]
                    _tracking.set_piece(None)
        finally:
            _tracking.set_piece(None)

    def __next__(self):
        if self._records is None:
            self._records = self._each_record()
        return next(self._records)

    @property
    def started(self) -> bool:
        return self._records is not None


def _use_storage_options(pieces: list[Piece], storage_options: dict | None) -> None:
    if not storage_options:
        return
    for protocol in {p.path.split("://", 1)[0] for p in pieces if "://" in p.path}:
        fsspec.config.conf[protocol] = {**fsspec.config.conf.get(protocol, {}), **storage_options}


def _convert_chunks(piece: Piece, conv: Converter, on_error: str, tag: tuple,
                    chunk: int | None) -> Iterator[list | None]:
    records, ctx, failed = None, None, False
    while not failed:
        # the source's context is set only while its converter runs, not while we wait
        with _tracking.source_context(piece.path, on_error, ctx) as ctx:
            try:
                if records is None:
                    records = iter(conv(piece.path, piece.start, piece.end))
                batch = list(islice(records, chunk))
            except ConversionError:
                raise
            except Exception as exc:
                if on_error == "raise":
                    raise ConversionError(f"{piece.path}: {_tracking.error_name(exc)}: {exc}") from exc
                ctx.errors.append(_tracking.SourceError.from_exception(piece.path, exc))
                failed, batch = True, []
        if not batch:
            break
        yield batch
    if ctx.errors:
        for err in ctx.errors:
            logger.info("skipped %s: %s: %s", err.path, err.error, err.message)
        _tracking.add_errors(tag, ctx.errors)
    if failed:
        yield None
