"""Per-thread bookkeeping that lets conversion errors reach the shard writer.

Dask fuses a bag's chain of per-partition steps into one task, which runs in one
thread. The conversion step records its per-source errors here, tagged with its
layer token and partition index; the writer, later in the same task, drains them.
Whether the chain is lazy (records stream from the converter into the writer) or
reified (Dask materialised the partition first), the errors are waiting when the
writer finishes.

The module also tracks which piece of a source (a :class:`~dask_prep.plan.Piece`)
the record being pulled came from, so the writer can take records piece by piece
and blame a schema error on the right file. That is exact only while the records
stream lazily; after the conversion finishes it is ``None``.
"""
from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field

logger = logging.getLogger("dask_prep")

_local = threading.local()


@dataclass
class SourceError:
    """One failed source (or one bad item inside a source)."""

    path: str
    error: str
    message: str
    line: int | None = None

    def to_dict(self) -> dict:
        out = {"path": self.path, "error": self.error, "message": self.message}
        if self.line is not None:
            out["line"] = self.line
        return out

    @classmethod
    def from_exception(cls, path: str, exc: BaseException, line: int | None = None):
        return cls(path, error_name(exc), str(exc) or repr(exc), line)


def error_name(exc: BaseException) -> str:
    """``UnicodeDecodeError`` for builtins and ours, ``zlib.error`` for the rest."""
    cls = type(exc)
    module = cls.__module__.split(".")[0]
    return cls.__name__ if module in ("builtins", "dask_prep") else f"{module}.{cls.__name__}"


@dataclass
class _Buffer:
    tag: tuple = ()
    errors: list = field(default_factory=list)


def _buffer() -> _Buffer:
    buf = getattr(_local, "buffer", None)
    if buf is None:
        buf = _local.buffer = _Buffer()
    return buf


def start_partition(tag: tuple) -> None:
    """Called when a conversion partition starts: drop stale, undrained errors."""
    buf = _buffer()
    buf.tag, buf.errors = tag, []
    _local.source = None


def add_errors(tag: tuple, errors: list[SourceError]) -> None:
    buf = _buffer()
    if buf.tag != tag:
        buf.tag, buf.errors = tag, []
    buf.errors.extend(errors)


def drain(tags: set) -> list[SourceError]:
    """Return and forget the errors recorded by the partitions tagged ``tags``."""
    buf = _buffer()
    if buf.tag in tags:
        out, buf.errors, buf.tag = buf.errors, [], ()
        return out
    return []


def set_piece(piece) -> None:
    _local.piece = piece


def current_piece():
    return getattr(_local, "piece", None)


# -- per-source context, for converters that report bad items and go on -------


@dataclass
class _SourceContext:
    path: str
    on_error: str
    errors: list = field(default_factory=list)


@contextmanager
def source_context(path: str, on_error: str, ctx: _SourceContext | None = None):
    """Set while a source's converter runs (``ctx``: go on with an earlier one)."""
    prev = getattr(_local, "context", None)
    ctx = _local.context = ctx or _SourceContext(path, on_error)
    try:
        yield ctx
    finally:
        _local.context = prev


def report_bad_item(message: str, *, line: int | None = None, error: str = "BadItem") -> None:
    """Report one bad item (e.g. a malformed line) of the source being converted.

    Converters call this to skip an item and go on: the item is listed in
    ``errors.jsonl`` with the line number, and the rest of the source is kept.
    With ``on_error="raise"`` it raises :class:`~dask_prep.errors.ConversionError`.
    Outside a dask-prep conversion it logs a warning.

    Examples
    --------
    >>> from dask_prep import report_bad_item
    >>> report_bad_item("not JSON", line=3)   # outside a run: a logged warning
    """
    from .errors import ConversionError

    ctx = getattr(_local, "context", None)
    if ctx is None:
        where = f"line {line}: " if line is not None else ""
        logger.warning("bad item: %s%s", where, message)
        return
    if ctx.on_error == "raise":
        where = f", line {line}" if line is not None else ""
        raise ConversionError(f"{ctx.path}{where}: {error}: {message}")
    ctx.errors.append(SourceError(ctx.path, error, message, line))
