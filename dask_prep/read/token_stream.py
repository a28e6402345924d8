"""The tokenizing stream: documents -> packed sequences on the cluster -> dense ``[B, L]`` batches.

``stream(..., tokenizer=T, seq_len=L)``. Each partition's task converts and
encodes its documents on a worker, as the token job does
(:func:`~dask_prep.tokens.encode.encode_partition`: the cached tokenizer,
BOS/EOS, source order) and sends back its token stream, one ``uint32`` array.
The client packs those streams with the token job's own
:class:`~dask_prep.tokens.pack.Planner`, batches in place of shards
(``shard_size=B``): batch ``k`` is sequences ``[kB, (k+1)B)`` of the stream,
so a sequence takes the tail of one partition and the head of the next, and
the batches of an ordered stream are exactly the sequences that
``run(..., tokenizer=T, seq_len=L)`` writes, ``B`` at a time (``last`` the
same: the tokens after the last whole sequence dropped, or padded with EOS).
A partition's array is dropped once every batch it feeds is cut.

Unordered (the default), partitions join the stream in the order they
finish: every token still comes once, each document whole and in order, but
the sequences and their order vary from run to run (and do not resume).

Tokens 1..9 in two partitions, ``L=3``, ``B=2``: the first batch's second
sequence joins partition 0's tail to partition 1's head, and the batch after
it starts at token 2 of partition 1:

>>> from dask_prep.tokens.tokenizer import TokenizerRef
>>> spec = TokenStreamSpec(TokenizerRef("tokenizers", None, "0" * 64, 10, eos_id=0), seq_len=3)
>>> cut = TokenCutter(spec, batch_size=2, column="input_ids", max_len=None, drop_last=False)
>>> list(cut.add(Tokens(0, np.arange(1, 5, dtype=np.uint32), records=1)))
[]
>>> [(make()["input_ids"].tolist(), after)
...  for make, after in cut.add(Tokens(1, np.arange(5, 10, dtype=np.uint32), records=1))]
[([[1, 2, 3], [4, 5, 6]], (1, 2))]
>>> [make()["input_ids"].tolist() for make, _ in cut.finish((2, 0))]
[[[7, 8, 9]]]
"""
from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from ..ingest import side_channel
from ..ingest.convert import Conversion
from ..options import TokenOptions
from ..tokens.encode import IDS, encode_partition
from ..tokens.job import TokenPart
from ..tokens.pack import Planner, ShardPlan
from ..tokens.tokenizer import TokenizerRef, resolve_tokenizer

__all__ = ["TokenStreamSpec", "Tokens", "tokenize_for_stream", "TokenCutter", "token_spec"]


@dataclass(frozen=True)
class TokenStreamSpec:
    """What the stream's tokenize tasks and its packing need (it travels in the graph)."""

    tokenizer: TokenizerRef
    seq_len: int
    text_field: str = "text"
    last: str = "drop"
    convert_layers: tuple = ()

    def identity(self) -> dict:
        """What decides the sequences (a resumed stream must have the same)."""
        t = self.tokenizer
        return {"tokenizer": t.sha256, "bos": t.bos_id, "eos": t.eos_id, "text_field": self.text_field,
                "seq_len": self.seq_len, "last": self.last}


def token_spec(opts: TokenOptions, *, columns: tuple) -> TokenStreamSpec:
    """The spec of a stream with tokenizer options ``opts``; one line for what it cannot do."""
    if opts.seq_len is None:
        raise ValueError("stream(tokenizer=...) packs documents into sequences: give seq_len=L "
                         "(or write documents with dp.run(..., tokenizer=...) and read them with iter_batches)")
    if opts.doc_starts or columns:
        raise ValueError("a tokenizing stream's batches hold input_ids only: doc_starts= and columns= "
                         "are for shards (dp.run(..., doc_starts=True), then iter_batches(columns=...))")
    ref = resolve_tokenizer(opts.tokenizer, bos=opts.bos, eos=opts.eos)
    return TokenStreamSpec(ref, opts.seq_len, opts.text_field, opts.last)


@dataclass
class Tokens:
    """What a tokenize task sends back: the partition's token stream and its errors."""

    index: int
    ids: np.ndarray = field(default_factory=lambda: np.empty(0, IDS))
    records: int = 0  # documents
    errors: list = field(default_factory=list)
    fatal: str | None = None

    @property
    def tokens(self) -> int:
        return len(self.ids)


def tokenize_for_stream(records, index: int, spec: TokenStreamSpec) -> Tokens:
    """The task run for each partition (module-level, so it pickles by reference)."""
    part, ids, _ = encode_partition(records, TokenPart(index), spec.tokenizer, spec.text_field)
    if part.fatal:
        return Tokens(index, fatal=part.fatal[1])
    if not isinstance(records, Conversion):
        part.errors += side_channel.drain({(layer, index) for layer in spec.convert_layers})
    return Tokens(index, ids, part.documents, part.errors)


class TokenCutter:
    """Partitions' token streams, as they are handed over, cut into dense batches.

    :meth:`add` and :meth:`finish` yield ``(make, after)``: a function making
    the next batch of the whole stream and where the batch after it starts,
    ``(partition, token)``. A stream resumed at ``(first, skip)`` packs from
    token ``skip`` of partition ``first``.
    """

    def __init__(self, spec: TokenStreamSpec, *, batch_size: int, column: str, max_len: int | None,
                 drop_last: bool, first: int = 0, skip: int = 0):
        self.spec, self.column, self.max_len, self.drop_last = spec, column, max_len, drop_last
        self.planner = Planner(seq_len=spec.seq_len, shard_size=batch_size)
        self.first, self.skip = first, skip
        self.ids: dict = {}                   # arrival number -> the tokens not yet cut
        self.partitions, self.base, self.sizes = [], [], []  # per arrival: index, skipped, tokens

    def add(self, result: Tokens) -> Iterator[tuple]:
        skip = self.skip if result.index == self.first else 0
        n = len(self.partitions)
        self.ids[n] = result.ids[skip:]
        self.partitions.append(result.index)
        self.base.append(skip)
        self.sizes.append(len(self.ids[n]))
        for plan in self.planner.add(len(self.ids[n]), result.records):
            yield (lambda plan=plan: self._batch(plan)), self._after(plan.stop)
        for i in [i for i in self.ids if i < self.planner.lo]:
            del self.ids[i]  # every batch it feeds is cut

    def finish(self, end: tuple) -> Iterator[tuple]:
        """The last, partial batch (unless ``drop_last``); ``end``: the stream's end."""
        for plan in self.planner.finish(self.spec.last):
            if not self.drop_last:
                yield (lambda plan=plan: self._batch(plan)), end

    def _after(self, stop: int) -> tuple:
        """``(partition, token)`` of the packing's position ``stop``."""
        i = bisect.bisect_right(self.planner.firsts[0], stop) - 1
        offset = stop - self.planner.firsts[0][i]
        if offset == self.sizes[i]:
            return self.partitions[i] + 1, 0
        return self.partitions[i], self.base[i] + offset

    def _batch(self, plan: ShardPlan) -> dict:
        L = self.spec.seq_len
        ids = np.concatenate([self.ids[i][a:b] for i, a, b, _ in plan.slices]
                             + [np.full(plan.pad, self.spec.tokenizer.pad_id, IDS)])
        seqs = ids.astype(np.int32).reshape(-1, L)[:, :self.max_len]
        return {self.column: seqs, "lengths": np.full(len(seqs), seqs.shape[1], np.int32)}
