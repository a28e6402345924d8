"""Bad items inside a source: what a converter reports while it runs.

A converter that meets one bad item (a malformed line) calls
:func:`report_bad_item` and goes on; the conversion of that source collects
the report, and the source's other records are kept. The source being
converted is known from a context that is set only while its converter runs.

>>> from dask_prep import report_bad_item
>>> report_bad_item("not JSON", line=3)   # outside a conversion: a logged warning
"""
from __future__ import annotations

import contextvars
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field

from ..errors import ConversionError, SourceError

__all__ = ["report_bad_item", "SourceContext", "converting"]

logger = logging.getLogger("dask_prep")


@dataclass
class SourceContext:
    """The source a converter is converting, and the bad items it reported."""

    path: str
    on_error: str
    errors: list = field(default_factory=list)
    max_decompressed: tuple | None = None  # ConvertOptions.max_decompressed, for the readers


_current: contextvars.ContextVar = contextvars.ContextVar("dask_prep_source", default=None)


@contextmanager
def converting(ctx: SourceContext):
    """Make ``ctx`` the current source while the block (one step of its converter) runs."""
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


def current_source() -> SourceContext | None:
    """The source being converted in this context, if any."""
    return _current.get()


def report_bad_item(message: str, *, line: int | None = None, error: str = "BadItem") -> None:
    """Report one bad item (e.g. a malformed line) of the source being converted.

    Converters call this to skip an item and go on: the item is listed in
    ``.errors.jsonl`` with the line number, and the rest of the source is kept.
    With ``on_error="raise"`` it raises :class:`~dask_prep.errors.ConversionError`.
    Outside a dask-prep conversion it logs a warning.
    """
    ctx = _current.get()
    if ctx is None:
        where = f"line {line}: " if line is not None else ""
        logger.warning("bad item: %s%s", where, message)
        return
    if ctx.on_error == "raise":
        where = f", line {line}" if line is not None else ""
        raise ConversionError(f"{ctx.path}{where}: {error}: {message}")
    ctx.errors.append(SourceError(ctx.path, error, message, line))
