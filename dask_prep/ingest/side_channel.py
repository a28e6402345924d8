"""The one side channel: what a conversion tells the writer past a user's ``.map``.

A bag straight from :func:`dask_prep.to_bag` hands each partition's writer a
:class:`~dask_prep.ingest.convert.Conversion`, which carries its pieces and
its errors in the open. After a user's ``.map``/``.filter`` the writer gets
plain records instead, so the conversion leaves two things here, in the thread
that runs the fused task (Dask fuses a bag's per-partition chain into one
task): the errors of its failed sources, tagged with its layer and partition,
and the piece whose records are being pulled, so the writer can keep a
source's records together and blame a schema error on the right file. Read by
:func:`dask_prep.write.partition.write_partition` and the stream's packer.
"""
from __future__ import annotations

import threading

from ..errors import SourceError

__all__ = ["start", "publish", "drain", "set_piece", "current_piece"]

_local = threading.local()


def start(tag: tuple) -> None:
    """A conversion (``tag``: layer name, partition index) starts in this thread."""
    _local.tag, _local.errors, _local.piece = tag, [], None


def publish(tag: tuple, errors: list[SourceError]) -> None:
    if getattr(_local, "tag", None) != tag:
        _local.tag, _local.errors = tag, []
    _local.errors.extend(errors)


def drain(tags: set) -> list[SourceError]:
    """The errors published by the conversions tagged ``tags``, forgotten here."""
    if getattr(_local, "tag", None) in tags:
        out, _local.errors, _local.tag = _local.errors, [], None
        return out
    return []


def set_piece(piece) -> None:
    _local.piece = piece


def current_piece():
    return getattr(_local, "piece", None)
