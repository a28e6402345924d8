"""Packing: the pure arithmetic that places documents' ids into shards.

The dataset's token stream is every document's ids (with BOS/EOS), in source
order: partition 0's documents, then partition 1's, ... Packed, sequence
``s`` is tokens ``[s * L, (s + 1) * L)`` of that stream and shard ``k`` holds
sequences ``[k * S, (k + 1) * S)``; unpacked, shard ``k`` holds documents
``[k * S, (k + 1) * S)``. So the shards depend only on the stream, never on
how many workers made it or how the sources were split into partitions.

A :class:`Planner` takes the partitions' counts in partition order and says
which shards are fixed as soon as they are (a shard needs only the partitions
its tokens come from, and the counts of those before them), so shards are
written while later partitions still tokenize.

>>> p = Planner(seq_len=4, shard_size=2)
>>> [s.tokens for s in p.add(5, 2)]   # 5 tokens: no shard of 8 yet
[]
>>> [(s.k, s.start, s.stop, s.slices) for s in p.add(6, 1)]
[(0, 0, 8, [(0, 0, 5, 0), (1, 0, 3, 5)])]
>>> [(s.k, s.start, s.stop, s.pad) for s in p.finish("pad")]
[(1, 8, 11, 1)]
>>> with_specials([[5, 6], [], [7]], bos=None, eos=0)
(array([5, 6, 0, 7, 0], dtype=uint32), array([3, 2]), 1)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain

import numpy as np

__all__ = ["ShardPlan", "Planner", "with_specials", "doc_starts_in"]


def with_specials(ids: list, bos: int | None, eos: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    """``(tokens, lengths, empty)``: the documents' ids joined, each with ``bos``
    before and ``eos`` after it, as one ``uint32`` array; each document's length
    (specials included); and how many documents had no ids (left out)."""
    lens = np.fromiter(map(len, ids), np.int64, len(ids))
    flat = np.fromiter(chain.from_iterable(ids), np.uint32, int(lens.sum()))
    kept = lens[lens > 0]
    empty = len(lens) - len(kept)
    extra = (bos is not None) + (eos is not None)
    if not extra:
        return flat, kept, empty
    lens = kept + extra
    out = np.empty(int(lens.sum()), np.uint32)
    starts = np.cumsum(lens) - lens
    body = np.ones(len(out), bool)
    if bos is not None:
        out[starts] = bos
        body[starts] = False
    if eos is not None:
        out[starts + lens - 1] = eos
        body[starts + lens - 1] = False
    out[body] = flat
    return out, lens, empty


def doc_starts_in(lengths: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Positions, relative to ``start``, of the documents of a partition (its
    ``lengths``) that begin within its tokens ``[start, stop)``."""
    starts = np.cumsum(lengths) - lengths
    return starts[(starts >= start) & (starts < stop)] - start


@dataclass
class ShardPlan:
    """What shard ``k`` is made of.

    Packed: tokens ``[start, stop)`` of the stream, then ``pad`` padding
    tokens; ``slices`` are ``(partition, first, stop, at)``: that partition's
    tokens ``[first, stop)`` go to position ``at`` of the shard. Unpacked:
    ``slices`` are ``(partition, first_doc, stop_doc, 0)``.
    """

    k: int
    start: int
    stop: int
    slices: list = field(default_factory=list)
    pad: int = 0

    @property
    def tokens(self) -> int:
        return self.stop - self.start + self.pad

    def to_json(self) -> list:
        return [self.k, self.start, self.stop, [list(s) for s in self.slices], self.pad]


class Planner:
    """Shards planned as partitions' counts come in partition order.

    ``seq_len=None`` plans shards of ``shard_size`` documents; else of
    ``shard_size`` sequences of ``seq_len`` tokens. :meth:`add` takes the next
    partition's ``(tokens, documents)`` and returns the shards it completed;
    :meth:`finish` the last one (a partial shard, the partial sequence dropped
    or padded as ``last`` says).
    """

    def __init__(self, *, seq_len: int | None, shard_size: int):
        self.seq_len, self.shard_size = seq_len, shard_size
        self.firsts: tuple[list, list] = ([], [])  # each partition's first token, first document
        self.tokens = self.docs = 0
        self.k = self.lo = 0  # the next shard; the first partition it may take from
        self.dropped = 0

    @property
    def _unit(self) -> int:  # the stream position one shard spans
        return self.shard_size * (self.seq_len or 1)

    def _position(self) -> int:
        return self.tokens if self.seq_len else self.docs

    def add(self, tokens: int, documents: int) -> list[ShardPlan]:
        self.firsts[0].append(self.tokens)
        self.firsts[1].append(self.docs)
        self.tokens += tokens
        self.docs += documents
        done = []
        while (self.k + 1) * self._unit <= self._position():
            done.append(self._plan(self.k * self._unit, (self.k + 1) * self._unit))
        return done

    def finish(self, last: str = "drop") -> list[ShardPlan]:
        start, end = self.k * self._unit, self._position()
        if not self.seq_len:
            return [self._plan(start, end)] if end > start else []
        whole, rest = divmod(end - start, self.seq_len)
        if last == "pad" and rest:
            return [self._plan(start, end, pad=self.seq_len - rest)]
        self.dropped = rest
        return [self._plan(start, start + whole * self.seq_len)] if whole else []

    def _plan(self, start: int, stop: int, pad: int = 0) -> ShardPlan:
        firsts = self.firsts[0 if self.seq_len else 1]
        slices, i = [], self.lo
        while i < len(firsts) and firsts[i] < stop:
            end = firsts[i + 1] if i + 1 < len(firsts) else self._position()
            lo, hi = max(start, firsts[i]), min(stop, end)
            if lo < hi:
                slices.append((i, lo - firsts[i], hi - firsts[i], lo - start if self.seq_len else 0))
            if end <= stop:  # later shards start after this partition
                self.lo = i + 1
            i += 1
        plan = ShardPlan(self.k, start, stop, slices, pad)
        self.k += 1
        return plan
