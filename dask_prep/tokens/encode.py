"""The worker side of tokenizing: one partition's records -> its token stream.

Shared by the token job (which saves the stream in the work folder) and the
tokenizing stream (which hands it to the client): the text of each record
(``text_field``; ``str`` records as they are), encoded in chunks by the
process's cached tokenizer, BOS/EOS added (:func:`~dask_prep.tokens.pack.with_specials`),
joined in record order. A piece that fails leaves no tokens (a file
contributes all its documents or none); a record without text is a bad item.
"""
from __future__ import annotations

import numpy as np

from ..errors import ConversionError, SourceError
from ..ingest.convert import Conversion
from ..write.partition import CHUNK, fewer_collections
from .pack import with_specials
from .tokenizer import TokenizerRef

__all__ = ["encode_partition", "IDS", "DOCS"]

#: The dtypes of a token stream and of its documents' lengths.
IDS, DOCS = np.dtype("<u4"), np.dtype("<i8")


class _Texts:
    """The text of each record of one piece; records without one are bad items."""

    def __init__(self, field_name: str, path: str | None, errors: list):
        self.field, self.path, self.errors, self.n = field_name, path, errors, 0

    def __call__(self, records: list) -> list[str]:
        texts = []
        for rec in records:
            self.n += 1
            text = rec if isinstance(rec, str) else rec.get(self.field) if isinstance(rec, dict) else None
            if isinstance(text, str):
                texts.append(text)
            else:
                what = f"a {type(rec).__name__} record" if not isinstance(rec, dict) else (
                    f"no text field {self.field!r}" if self.field not in rec else
                    f"field {self.field!r} holds {type(rec[self.field]).__name__}, not text")
                self.errors.append(SourceError(self.path or "<records>", "TextFieldError",
                                               f"record {self.n}: {what}", self.n))
        return texts


def _pieces(records):
    """``(path, chunks)`` of a conversion's pieces, or of records after other steps."""
    if isinstance(records, Conversion) and not records.started:
        yield from ((piece.path, chunks) for piece, chunks in records.pieces(CHUNK))
        return
    records = list(records)
    yield None, iter([records[i:i + CHUNK] for i in range(0, len(records), CHUNK)])


def _encode_piece(chunks, texts_of: _Texts, tok: TokenizerRef, part) -> list | None:
    """``[(ids, lengths), ...]`` of one piece's chunks; ``None`` if the piece failed
    (a ``None`` chunk: its error is in the conversion's errors)."""
    out = []
    for chunk in chunks:
        if chunk is None:
            return None
        texts = texts_of(chunk)
        if texts:
            flat, lens, empty = with_specials(tok.encode(texts), tok.bos_id, tok.eos_id)
            out.append((flat, lens))
            part.empty += empty
    return out


def encode_partition(records, part, tok: TokenizerRef, text_field: str) -> tuple:
    """``(part, ids, lengths)``: a partition's token stream (``uint32``) and its
    documents' lengths (specials included), ``part`` (a
    :class:`~dask_prep.tokens.job.TokenPart`) given its counts and errors, or
    its ``fatal`` error (``on_error="raise"``) and no tokens."""
    encoded = []
    try:
        with fewer_collections():
            for path, chunks in _pieces(records):
                empty, errors = part.empty, len(part.errors)
                got = _encode_piece(chunks, _Texts(text_field, path, part.errors), tok, part)
                if got is None:
                    del part.errors[errors:]
                    part.empty = empty
                else:
                    encoded += got
    except ConversionError as exc:
        part.fatal = ("ConversionError", str(exc))
        return part, np.empty(0, IDS), np.empty(0, DOCS)
    if isinstance(records, Conversion):
        part.errors = records.errors + part.errors
    ids = np.concatenate([e[0] for e in encoded]) if encoded else np.empty(0, IDS)
    lens = np.concatenate([e[1] for e in encoded]) if encoded else np.empty(0, DOCS)
    part.tokens, part.documents = len(ids), len(lens)
    return part, ids, lens
