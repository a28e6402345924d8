"""Vocabulary: count words on the cluster, keep the top ones, map words to int32 ids.

Counting runs as a tree reduction of per-partition :class:`collections.Counter`
objects on the workers; the selection (``min_freq``, then the ``size`` most
frequent, ties broken by the word itself) runs in the last task, so only the
chosen words reach the client. Ids: the ``specials`` first, in the order given,
then words by descending count.

>>> import dask.bag as db, dask_prep as dp
>>> bag = db.from_sequence([{"words": ["a", "b", "a"]}, {"words": ["c", "b", "a"]}], npartitions=2)
>>> vocab = dp.build_vocab(bag, min_freq=2)
>>> vocab.tokens
('<pad>', '<unk>', 'a', 'b')
>>> vocab.ids(["a", "b", "zzz"]).tolist()
[2, 3, 1]
>>> dp.token_ids(bag, vocab).pluck("token_ids").compute()[1].tolist()
[1, 3, 2]
"""
from __future__ import annotations

import functools
import hashlib
import heapq
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from itertools import repeat

import dask.bag as db
import numpy as np

from ..ingest.converters import Converter, resolve_converter
from ..write.output import OutputDir

__all__ = ["Vocab", "build_vocab", "token_ids", "with_token_ids"]

SPECIALS = ("<pad>", "<unk>")
_FORMAT = "dask-prep-vocab"


class Vocab:
    """Words and their int32 ids; ``unk`` stands for every word not in it.

    >>> v = Vocab(["<pad>", "<unk>", "the", "cat"], counts=[0, 0, 9, 4])
    >>> v["cat"], v["dog"], len(v), v.pad_id, v.unk_id
    (3, 1, 4, 0, 1)
    >>> v.words([2, 3, 0])
    ['the', 'cat', '<pad>']
    """

    def __init__(self, tokens: Sequence[str], *, counts: Sequence[int] | None = None,
                 specials: Sequence[str] = SPECIALS, unk: str = "<unk>", pad: str | None = "<pad>"):
        self.tokens, self.specials = tuple(tokens), tuple(specials)
        self.counts = tuple(counts) if counts is not None else (0,) * len(self.tokens)
        self.unk, self.pad = unk, pad
        self._index = {t: i for i, t in enumerate(self.tokens)}
        _check(self)
        self.unk_id = self._index[unk]
        self.pad_id = self._index[pad] if pad is not None else None

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: str) -> bool:
        return token in self._index

    def __getitem__(self, token: str) -> int:
        return self._index.get(token, self.unk_id)

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocab) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"Vocab({len(self):,} tokens, unk={self.unk!r}, pad={self.pad!r})"

    def __reduce__(self):
        return _from_dict, (self.to_dict(),)

    def __dask_tokenize__(self):
        return ("dask-prep-vocab", self.digest)

    @functools.cached_property
    def digest(self) -> str:
        """sha256 of the saved form: equal vocabularies, equal digests."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def ids(self, words: Sequence[str]) -> np.ndarray:
        """``words`` as an int32 array; unknown words get ``unk_id``."""
        return np.fromiter(map(self._index.get, words, repeat(self.unk_id)), np.int32,
                           count=len(words))

    def words(self, ids: Iterable[int]) -> list[str]:
        return [self.tokens[i] for i in ids]

    def to_dict(self) -> dict:
        return {"format": _FORMAT, "version": 1, "tokens": list(self.tokens),
                "counts": list(self.counts), "specials": list(self.specials),
                "unk": self.unk, "pad": self.pad}

    def save(self, path, *, storage_options: dict | None = None) -> None:
        """Write the vocabulary as JSON (atomically: a temporary name, then renamed)."""
        parent, name = os.path.split(os.fspath(path))
        data = json.dumps(self.to_dict(), ensure_ascii=False, indent=0).encode()
        OutputDir(parent or ".", storage_options).write_atomic(name, data)

    @classmethod
    def load(cls, path, *, storage_options: dict | None = None) -> Vocab:
        """Read a vocabulary written by :meth:`save`."""
        parent, name = os.path.split(os.fspath(path))
        try:
            d = json.loads(OutputDir(parent or ".", storage_options).read_bytes(name))
        except ValueError as exc:
            raise ValueError(f"{path} is not a vocabulary file: {exc}") from None
        if not isinstance(d, dict) or d.get("format") != _FORMAT or d.get("version") != 1:
            raise ValueError(f"{path} is not a version 1 dask-prep vocabulary; "
                             "write one with Vocab.save (or dask_prep.build_vocab)")
        return _from_dict(d)


def _from_dict(d: dict) -> Vocab:
    return Vocab(d["tokens"], counts=d["counts"], specials=d["specials"], unk=d["unk"], pad=d["pad"])


def _check(v: Vocab) -> None:
    if len(v._index) != len(v.tokens):
        dup = next(t for t, n in Counter(v.tokens).items() if n > 1)
        raise ValueError(f"token {dup!r} appears twice; every token needs one id")
    if len(v.counts) != len(v.tokens):
        raise ValueError(f"{len(v.counts)} counts for {len(v.tokens)} tokens; give one count per token")
    for role, tok in (("unk", v.unk), ("pad", v.pad)):
        if tok is not None and tok not in v.specials:
            raise ValueError(f"{role} token {tok!r} is not among specials {v.specials}; "
                             f"add it to specials or pass {role}=<one of them>")
    if v.tokens[:len(v.specials)] != v.specials:
        raise ValueError(f"the first tokens must be the specials {v.specials}, "
                         f"got {v.tokens[:len(v.specials)]}")


# -- counting on the cluster ---------------------------------------------------


def _count(word_lists: Iterable) -> Counter:
    counter: Counter = Counter()
    for words in word_lists:
        if words is not None:
            counter.update(words)
    return counter


def _merge(counters: Iterable[Counter]) -> Counter:
    total: Counter = Counter()
    for c in counters:
        total.update(c)
    return total


def _select(counter: Counter, size: int | None, min_freq: int, specials: tuple) -> list:
    """The (word, count) pairs to keep: by descending count, then by word."""
    kept = ((w, n) for w, n in counter.items() if n >= min_freq and w not in specials)
    key = lambda wn: (-wn[1], wn[0])  # noqa: E731
    if size is None:
        return sorted(kept, key=key)
    return heapq.nsmallest(max(size - len(specials), 0), kept, key=key)


def _word_lists(data, column: str) -> db.Bag:
    """A bag of word lists from a bag of records or a ShardSet (reading one column)."""
    if isinstance(data, db.Bag):
        return data.pluck(column)
    if hasattr(data, "column_bag"):  # a ShardSet
        return data.column_bag(column)
    raise TypeError(f"build_vocab takes a dask bag of records or a ShardSet, "
                    f"not {type(data).__name__}; open a dataset with dask_prep.open(path)")


def build_vocab(data, *, column: str = "words", size: int | None = None, min_freq: int = 1,
                specials: Sequence[str] = SPECIALS, unk: str = "<unk>", pad: str | None = "<pad>",
                split_every: int = 8) -> Vocab:
    """Count the words of ``column`` on the cluster and keep the most frequent.

    Parameters
    ----------
    data
        A :class:`dask.bag.Bag` of records, or a :class:`~dask_prep.ShardSet`
        (Parquet shards are read one column at a time, in tasks).
    size
        Largest vocabulary, specials included; ``None`` keeps every word
        seen at least ``min_freq`` times.
    min_freq
        Words seen fewer times are left out (they map to ``unk``).
    specials
        Tokens with the first ids, in this order; must include ``unk`` and ``pad``.

    The computation runs on the current Dask client if there is one, else on
    Dask's default scheduler. Equal counts are ordered by the word (code
    point order), so the result is the same on any cluster.
    """
    if size is not None and size < len(specials):
        raise ValueError(f"size={size} leaves no room for the {len(specials)} specials {tuple(specials)}; "
                         f"use size >= {len(specials)} or size=None")
    if not isinstance(min_freq, int) or min_freq < 1:
        raise ValueError(f"min_freq must be a positive integer, not {min_freq!r}")
    counts = _word_lists(data, column).reduction(_count, _merge, split_every=split_every)
    chosen = counts.apply(functools.partial(_select, size=size, min_freq=min_freq,
                                            specials=tuple(specials))).compute()
    return Vocab(list(specials) + [w for w, _ in chosen], counts=[0] * len(specials) + [n for _, n in chosen],
                 specials=specials, unk=unk, pad=pad)


# -- words -> ids ---------------------------------------------------------------


class AddTokenIds:
    """``record -> record`` with ``out`` = ids of ``record[column]`` (module-level, so it pickles)."""

    def __init__(self, vocab: Vocab, column: str = "words", out: str = "token_ids",
                 keep: bool = True, as_list: bool = False):
        self.vocab, self.column, self.out, self.keep, self.as_list = vocab, column, out, keep, as_list

    def __call__(self, record: dict) -> dict:
        ids = self.vocab.ids(record[self.column])
        rec = dict(record) if self.keep else {k: v for k, v in record.items() if k != self.column}
        rec[self.out] = ids.tolist() if self.as_list else ids
        return rec

    def __dask_tokenize__(self):
        return ("dask-prep-token-ids", self.vocab.digest, self.column, self.out, self.keep, self.as_list)


def token_ids(bag: db.Bag, vocab: Vocab, *, column: str = "words", out: str = "token_ids",
              keep: bool = True, as_list: bool = False) -> db.Bag:
    """Add ``out``: the int32 ids of each record's ``column`` (a bag map).

    Ids are numpy int32 arrays, stored by Parquet shards as ``list<int32>``;
    ``as_list=True`` gives plain Python lists (for pickle shards read without
    numpy). ``keep=False`` drops the word column.
    """
    return bag.map(AddTokenIds(vocab, column, out, keep, as_list))


class _WithTokenIds:
    def __init__(self, conv: Converter, add: AddTokenIds):
        self.conv, self.add = conv, add

    def __call__(self, path: str, start=None, end=None, *, storage_options=None) -> Iterator[dict]:
        return map(self.add, self.conv(path, start, end, storage_options=storage_options))

    def dask_prep_identity(self) -> str:
        a = self.add
        return (f"with_token_ids({self.conv.identity}, vocab={a.vocab.digest}, column={a.column}, "
                f"out={a.out}, keep={a.keep}, as_list={a.as_list})")


def with_token_ids(converter, vocab: Vocab, *, column: str = "words", out: str = "token_ids",
                   keep: bool = True, as_list: bool = False, encoding_errors: str = "strict") -> Converter:
    """``converter`` followed by :func:`token_ids` on each record, as one converter.

    Use it with :func:`dask_prep.run` or :func:`dask_prep.stream` so records
    stream from the converter into the writer without a separate bag step.

    >>> import dask_prep as dp
    >>> conv = dp.with_token_ids("sentences", dp.Vocab(["<pad>", "<unk>", "Hi"]))
    >>> conv.name, conv.splittable
    ('sentences+token_ids', True)
    """
    conv = resolve_converter(converter, encoding_errors=encoding_errors)
    add = AddTokenIds(vocab, column, out, keep, as_list)
    return Converter(f"{conv.name}+token_ids", _WithTokenIds(conv, add), conv.splittable)
