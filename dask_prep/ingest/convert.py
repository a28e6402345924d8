"""Convert: sources -> a Dask bag of records, one task per planned partition.

Each task returns a :class:`Conversion`: the partition's records as a lazy
iterator, or, for the shard writer, piece by piece (:meth:`Conversion.pieces`),
with the errors of the sources that failed on the object itself.

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

import hashlib
import json
import logging
import os
import threading
import uuid
from dataclasses import replace
from collections.abc import Iterable, Iterator
from itertools import islice

import dask.bag as db

from ..errors import ConversionError, SourceError
from ..options import ConvertOptions, split
from ..runtime.graph import conversion_bag
from . import side_channel
from .bad_items import SourceContext, converting
from .converters import Converter, resolve_converter
from .plan import Piece, plan_partitions
from .sources import Sources, discover

__all__ = ["to_bag", "bag_of", "convert_partition", "Conversion", "conversion_identity"]

logger = logging.getLogger(__name__)


def to_bag(sources: Sources | str | os.PathLike | Iterable, converter=None, *,
           options: ConvertOptions | None = None, **fields) -> db.Bag:
    """A :class:`dask.bag.Bag` of the records a converter makes from ``sources``.

    Parameters
    ----------
    sources
        What :func:`dask_prep.discover` returned, or inputs to give it.
    converter
        A built-in name, ``"module:func"``, ``"file.py:func"`` or a callable
        ``fn(path) -> iterable of records`` (default ``"text"``).
    options, **fields
        A :class:`~dask_prep.options.ConvertOptions`, or its fields as keywords:
        ``on_error`` (``"skip"``: a failed source is left out whole and reported;
        ``"raise"``: the first failure stops with
        :class:`~dask_prep.errors.ConversionError` naming the file),
        ``partition_size`` (bytes of input per task; automatic by default),
        ``encoding_errors`` (``"strict"`` or ``"replace"``), ``suffixes``,
        ``exclude``, ``storage_options`` (passed to the readers of remote
        sources in every task), and for ``sentences`` ``segmenter``
        (``"pysbd"``) and ``word_segmenter`` (``"jieba"``).
    """
    if converter is not None:
        fields["converter"] = converter
    (opts,) = split(fields, ConvertOptions, given={ConvertOptions: options} if options else None)
    conv = resolve_converter(opts.converter, encoding_errors=opts.encoding_errors,
                             segmenter=opts.segmenter, word_segmenter=opts.word_segmenter)
    if not isinstance(sources, Sources):
        sources = discover(sources, suffixes=opts.suffixes or None, exclude=opts.exclude,
                           storage_options=opts.storage_options)
    if not opts.storage_options and sources.storage_options:
        opts = replace(opts, storage_options=sources.storage_options)
    parts = plan_partitions(sources, partition_size=opts.partition_size, splittable=conv.splittable)
    return bag_of(parts, conv, opts, sources)


def conversion_identity(conv: Converter, opts: ConvertOptions) -> str:
    """What decides the records a source gives: the converter and the options
    that change its output (never credentials). A sha256 of canonical JSON."""
    ident = {"converter": conv.identity, "encoding_errors": opts.encoding_errors,
             "on_error": opts.on_error}
    if opts.max_decompressed != ConvertOptions().max_decompressed:  # keeps older keys as they were
        ident["max_decompressed"] = list(opts.max_decompressed or ())
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def bag_of(parts: list[tuple[Piece, ...]], conv: Converter, opts: ConvertOptions | None = None,
           sources: Sources | None = None, skip: dict | None = None) -> db.Bag:
    """The bag of an existing plan (:func:`~dask_prep.ingest.plan.plan_partitions`): one task a partition.

    Each partition's key is a sha256 over the converter's identity and each of
    its pieces with its source's size and modification stamp (from ``sources``),
    so the key of a partition changes exactly when one of its sources does.
    ``skip`` maps sources known to kill the worker converting them
    (:func:`find_poison`) to why: they are their errors, never converted (a
    fact about the source and converter, so not part of the key).
    """
    opts = opts or ConvertOptions()
    identity = conversion_identity(conv, opts)
    stamps = {s.path: (s.size, s.modified) for s in sources} if sources is not None else {}
    keys = [_partition_key(identity, part, stamps) for part in parts]
    skip = skip or {}
    name = "dask-prep-convert-" + hashlib.sha256(
        ("".join(keys) + json.dumps(sorted(skip.items()))).encode()).hexdigest()[:32]
    # Each partition's pieces travel as one JSON string: Dask neither walks nor
    # pickles 80,000 tuples one by one (a graph of 50,000 dataclass instances
    # reached the workers ~0.4 s later).
    reading = (opts.on_error, opts.storage_options, opts.max_decompressed)
    tasks = {(name, i): (convert_partition, json.dumps(pieces), conv,
                         reading + (_skipped(pieces, skip),) if skip else reading, name, i)
             for i, pieces in enumerate(parts)}
    return conversion_bag(name, tasks, len(parts), {"identity": identity, "partitions": keys})


def _skipped(pieces, skip: dict) -> dict:
    return {piece.path: skip[piece.path] for piece in pieces if piece.path in skip}


def find_poison(client, pieces, conv: Converter, opts: ConvertOptions) -> dict:
    """The sources among ``pieces`` that kill the worker converting them: each
    converted alone, one task at a time (a dying worker takes the blame for
    every task it holds), its records dropped.

    Returns ``{path: why}``. A source whose task ends in Dask's ``KilledWorker``
    (a crash in native code, ``os._exit``, or more memory than a worker has)
    is one; a source that merely fails is not (its conversion reports it).
    """
    reading = (opts.on_error, opts.storage_options, opts.max_decompressed)
    poison = {}
    for piece in pieces:
        if piece.path in poison:
            continue
        future = client.submit(_probe, json.dumps([piece]), conv, reading, pure=False,
                               key=f"dask-prep-probe-{uuid.uuid4().hex}")
        try:
            future.result()
        except Exception as exc:
            if type(exc).__name__ == "KilledWorker":
                poison[piece.path] = (
                    "killed the worker process converting it, every time it was tried (a crash "
                    "in native code, os._exit, or more memory than a worker has: see --memory-limit)")
        finally:
            future.release()
    return poison


def _probe(pieces: str, conv: Converter, reading: tuple) -> int:
    """Convert pieces and count their records (a probe for :func:`find_poison`)."""
    conversion = convert_partition(pieces, conv, reading, "dask-prep-probe", 0)
    return sum(len(chunk) for _, chunks in conversion.pieces(10_000) for chunk in chunks if chunk)


def _partition_key(identity: str, part, stamps: dict) -> str:
    pieces = [[*piece, *stamps.get(piece.path, (None, None))] for piece in part]
    return hashlib.sha256(json.dumps([identity, pieces], ensure_ascii=True).encode()).hexdigest()


def convert_partition(pieces: str | list, conv: Converter, reading: tuple, layer: str,
                      index: int) -> Conversion:
    """The task of one partition: its :class:`Conversion` (nothing runs until it is pulled).

    ``pieces`` is the JSON list of ``[path, start, end]`` that :func:`bag_of`
    ships; ``reading`` is ``(on_error, storage_options, max_decompressed)``; ``layer`` and
    ``index`` name the partition in the graph (a key tuple would be read by
    Dask as a dependency).
    """
    if isinstance(pieces, str):
        pieces = [Piece(*p) for p in json.loads(pieces)]
    on_error, storage_options, *more = reading
    return Conversion(pieces, conv, on_error, storage_options, (layer, index), *more)


class Conversion(Iterator):
    """One partition's conversion, pulled lazily.

    Iterate it for the records of every piece that converted (a piece's
    records come only once it converted whole, so a file contributes all its
    records or none), or take :meth:`pieces` to get each piece's records as
    they are converted. :attr:`errors` lists the sources that failed and the
    bad items reported, as they are met.
    """

    def __init__(self, pieces: list[Piece], conv: Converter, on_error: str,
                 storage_options: dict | None, tag: tuple, max_decompressed=("x", 100.0),
                 skip: dict | None = None):
        self.piece_list, self.conv, self.on_error, self.tag = pieces, conv, on_error, tag
        self.skip = skip or {}  # {path: why}: sources never converted (bag_of)
        self.storage_options = storage_options or None
        self.max_decompressed = max_decompressed
        self.errors: list[SourceError] = []
        self._records: Iterator | None = None

    @property
    def started(self) -> bool:
        """Whether records were pulled already (then :meth:`pieces` is no longer available)."""
        return self._records is not None

    def pieces(self, chunk: int | None) -> Iterator[tuple[Piece, Iterator[list | None]]]:
        """Each piece with its records in lists of at most ``chunk`` (``None``:
        one list), converted as they are taken. A ``None`` after them means the
        piece failed (it is in :attr:`errors`): drop what it gave."""
        for piece in self.piece_list:
            yield piece, self._convert(piece, chunk)

    def _convert(self, piece: Piece, chunk: int | None) -> Iterator[list | None]:
        if piece.path in self.skip:
            if not piece.start:  # once for a source split in byte ranges
                self.errors.append(SourceError(piece.path, "WorkerKilled", self.skip[piece.path]))
            yield None
            return
        ctx, records, failed = SourceContext(piece.path, self.on_error,
                                                     max_decompressed=self.max_decompressed), None, False
        while not failed:
            with converting(ctx):  # set only while the converter runs, not while we wait
                try:
                    if records is None:
                        records = iter(self.conv(piece.path, piece.start, piece.end,
                                                 storage_options=self.storage_options))
                    batch = list(islice(records, chunk))
                except ConversionError:
                    raise
                except (Exception, SystemExit, KeyboardInterrupt) as exc:
                    err = _source_error(piece.path, exc)  # a real Ctrl-C is raised again
                    if self.on_error == "raise":
                        raise ConversionError(f"{piece.path}: {err.error}: {err.message}") from exc
                    ctx.errors.append(err)
                    failed, batch = True, []
            if not batch:
                break
            yield batch
        for err in ctx.errors:
            logger.info("skipped %s: %s: %s", err.path, err.error, err.message)
        self.errors.extend(ctx.errors)
        if failed:
            yield None

    def __next__(self):
        if self._records is None:
            self._records = self._each_record()
        return next(self._records)

    def _each_record(self) -> Iterator:
        """Records for a user's ``.map``/``.filter``: errors and the current
        piece go through :mod:`~dask_prep.ingest.side_channel`."""
        side_channel.start(self.tag)
        try:
            for piece, chunks in self.pieces(None):
                seen = len(self.errors)
                whole = list(chunks)  # [records], [] or [None] (it failed)
                side_channel.publish(self.tag, self.errors[seen:])
                if whole and whole[0] is not None:
                    side_channel.set_piece(piece)
                    yield from whole[0]
                    side_channel.set_piece(None)
        finally:
            side_channel.set_piece(None)


def _source_error(path: str, exc: BaseException) -> SourceError:
    """The source's error. A converter's ``sys.exit()`` or ``KeyboardInterrupt``
    is one too: it must not end the worker or the run. A ``KeyboardInterrupt``
    in the main thread may be the user's Ctrl-C (in-process schedulers): raised."""
    if isinstance(exc, Exception):
        return SourceError.from_exception(path, exc)
    if isinstance(exc, SystemExit):
        return SourceError(path, "SystemExit", f"the converter called sys.exit({exc.code!r})")
    if threading.current_thread() is threading.main_thread():
        raise exc
    return SourceError(path, "KeyboardInterrupt", "the converter raised KeyboardInterrupt")
