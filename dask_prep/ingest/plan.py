"""Plan: sorted sources -> partitions balanced by bytes.

Each partition is a contiguous run of the sorted sources, so record order follows
source order. A partition is weighed as its bytes plus a fixed cost per file, so
100,000 empty files do not become one task and one huge file does not share a
task with thousands of small ones. A file larger than a partition is split into
byte ranges when the converter is splittable (lines, JSON lines, or sentences at
blank lines) and the file is not compressed.

With the automatic size, the last partitions shrink: each holds at most a
quarter of the weight still to plan, down to an eighth of the size. Tasks run
in plan order, so the run ends on short tasks and the workers finish together,
however many there are (33 equal tasks on 2 workers left one worker idle for a
whole task's time at the end).

The plan depends only on the sources and the options, never on the cluster, so
the same inputs give the same shards on 1 worker or 100.

>>> from dask_prep.ingest.sources import Source
>>> from dask_prep.ingest.plan import plan_partitions
>>> srcs = [Source("a", 10), Source("b", 10), Source("c", 100)]
>>> [[p.path for p in part] for part in plan_partitions(srcs, partition_size=8300)]
[['a', 'b'], ['c']]
>>> [(p.start, p.end) for part in plan_partitions([Source("big", 100)], partition_size=4096 + 40, splittable=True) for p in part]
[(0, 33), (33, 67), (67, 100)]
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

from .sources import Source

__all__ = ["Piece", "plan_partitions", "auto_partition_size", "FILE_COST"]

#: Bytes a file weighs on top of its size: opening a file is not free.
FILE_COST = 4096
#: A split file is read in pieces of at most this many bytes, so a piece's
#: records are still in the CPU cache when they are converted to Arrow.
PIECE_SIZE = 8 * 1024 * 1024
#: The automatic partition size aims for this many partitions ...
TARGET_PARTITIONS = 32
#: ... within these bounds.
MIN_PARTITION, MAX_PARTITION = 256 * 1024, 64 * 1024 * 1024
#: With the automatic size, a partition holds at most 1/TAIL of the weight left
#: to plan, and at least 1/SMALLEST of the size (and MIN_PARTITION).
TAIL, SMALLEST = 4, 8


class Piece(NamedTuple):
    """A source, or a byte range ``[start, end)`` of one, converted as a unit
    (a tuple: cheap to build, ship and write as JSON for 100,000 files)."""

    path: str
    start: int | None = None
    end: int | None = None

    @property
    def whole(self) -> bool:
        return self.start is None


def auto_partition_size(total_weight: int) -> int:
    return min(MAX_PARTITION, max(MIN_PARTITION, total_weight // TARGET_PARTITIONS))


def plan_partitions(sources: Sequence[Source], *, partition_size: int | None = None,
                    splittable: bool = False) -> list[tuple[Piece, ...]]:
    """Group sorted ``sources`` into partitions of about ``partition_size`` bytes
    (automatic when ``None``: about 1/32 of the corpus, the last ones smaller)."""
    left = sum(s.size + FILE_COST for s in sources)  # weight not yet in a partition
    shrink = partition_size is None
    if shrink:
        partition_size = auto_partition_size(left)
    if partition_size <= FILE_COST:
        raise ValueError(f"partition_size must be more than {FILE_COST} bytes, not {partition_size}")
    smallest = min(partition_size, max(partition_size // SMALLEST, MIN_PARTITION))

    def limit() -> int:
        """The weight of the next partition."""
        return max(smallest, min(partition_size, left // TAIL)) if shrink else partition_size

    parts: list[tuple[Piece, ...]] = []
    current: list[Piece] = []
    weight, most = 0, limit()
    for src in sources:
        cost = src.size + FILE_COST
        if current and weight + cost > most:
            parts.append(tuple(current))
            left -= weight
            current, weight, most = [], 0, limit()
        if cost > most and splittable and src.compression is None:
            start = 0
            while start < src.size:  # equal byte ranges of at most the limit, which may shrink
                rest = src.size - start
                end = start + round(rest / math.ceil(rest / (limit() - FILE_COST)))
                parts.append(tuple(Piece(src.path, a, b) for a, b in _bounds(start, end, PIECE_SIZE)))
                left -= end - start
                start = end
            left -= FILE_COST
            most = limit()
            continue
        current.append(Piece(src.path))
        weight += cost
    if current or not parts:
        parts.append(tuple(current))
    return parts


def _bounds(start: int, end: int, most: int) -> list[tuple[int, int]]:
    n = math.ceil((end - start) / most)
    cuts = [start + round(i * (end - start) / n) for i in range(n + 1)]
    return list(zip(cuts, cuts[1:]))
