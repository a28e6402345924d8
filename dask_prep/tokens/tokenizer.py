"""Tokenizers: resolved once on the client from a local file, loaded once per worker process.

A tokenizer is named by a local path (never downloaded): a Hugging Face
``tokenizer.json``, a ``transformers`` tokenizer folder (with ``transformers``
installed), or a ``sentencepiece`` ``.model`` (with ``sentencepiece``
installed); from Python also a :class:`tokenizers.Tokenizer`. The client
resolves it to a :class:`TokenizerRef` (kind, path, sha256 of its serialized
form, vocabulary size, BOS/EOS ids) that travels with the tasks; each worker
process loads it on first use and keeps it, keyed by the sha256, for every
later task (:func:`loads` says how often a process loaded it).

>>> from tokenizers import Tokenizer, models, pre_tokenizers
>>> tok = Tokenizer(models.WordLevel({"a": 0, "b": 1, "<|endoftext|>": 2, "[UNK]": 3}, unk_token="[UNK]"))
>>> tok.pre_tokenizer = pre_tokenizers.Whitespace()
>>> ref = resolve_tokenizer(tok)
>>> ref.kind, ref.vocab_size, ref.eos_id
('tokenizers', 4, 2)
>>> ref.encode(["a b", "b c"])
[[0, 1], [1, 3]]
"""
from __future__ import annotations

import hashlib
import os
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass

from ..errors import TokenizerError

__all__ = ["TokenizerRef", "resolve_tokenizer", "loads", "EOS_CANDIDATES"]

#: End-of-text tokens looked for, in this order, when ``eos="auto"``.
EOS_CANDIDATES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|eos|>")
#: Files of a ``transformers`` tokenizer folder that decide its ids.
_FOLDER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                 "vocab.json", "merges.txt", "vocab.txt", "tokenizer.model", "spiece.model",
                 "added_tokens.json")


@dataclass(frozen=True)
class TokenizerRef:
    """What workers need to load a tokenizer and what the manifest says about it.

    ``kind`` is ``"tokenizers"`` (a ``tokenizer.json``), ``"transformers"`` (a
    folder) or ``"sentencepiece"``; ``path`` the local file or folder, or
    ``None`` with ``data`` the serialized JSON of an in-memory tokenizer;
    ``sha256`` of its serialized form; ``bos_id``/``eos_id`` the ids added
    before/after each document (``None``: none).
    """

    kind: str
    path: str | None
    sha256: str
    vocab_size: int
    bos_id: int | None = None
    eos_id: int | None = None
    data: str | None = None

    @property
    def pad_id(self) -> int:
        """The id that pads a last sequence (``last="pad"``): EOS, else 0."""
        return self.eos_id if self.eos_id is not None else 0

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Each text's ids (no special tokens added), through the process's cached tokenizer."""
        return _encoder(self)(texts)

    def info(self) -> dict:
        """The manifest's description of the tokenizer."""
        return {"kind": self.kind, "path": self.path, "sha256": self.sha256,
                "vocab_size": self.vocab_size, "bos_id": self.bos_id, "eos_id": self.eos_id}


def _not_local(spec: str) -> TokenizerError:
    return TokenizerError(
        f"tokenizer {spec!r} is not a local file or folder; dask-prep never downloads anything: "
        "give the path of a tokenizer.json, a transformers tokenizer folder or a sentencepiece .model")


def resolve_tokenizer(spec, *, bos=None, eos="auto") -> TokenizerRef:
    """A :class:`TokenizerRef` for ``spec`` (a path, a :class:`tokenizers.Tokenizer`
    or a ref), with ``bos``/``eos`` as a token, an id, ``None``, or for ``eos``
    ``"auto"``: the tokenizer's own end-of-text token if it has one.

    Raises :class:`~dask_prep.errors.TokenizerError` (one line naming the path)
    for a name that is not a local path, a file that is not a tokenizer, or a
    BOS/EOS token the vocabulary lacks.
    """
    if isinstance(spec, TokenizerRef):
        return spec
    if _is_hf_tokenizer(spec):
        data = spec.to_str()
        kind, path, sha = "tokenizers", None, hashlib.sha256(data.encode()).hexdigest()
        enc = _HFEncoder(spec)
    else:
        if not isinstance(spec, (str, os.PathLike)):
            raise TokenizerError(f"tokenizer must be a path or a tokenizers.Tokenizer, not {type(spec).__name__}")
        path = os.path.abspath(os.fspath(spec))
        if not os.path.exists(path):
            raise _not_local(os.fspath(spec))
        kind, data = _kind(path), None
        sha = _sha256_of(kind, path)
        enc = _load(kind, path, None)
    ref = TokenizerRef(kind, path, sha, enc.vocab_size, data=data)
    _remember(sha, enc)
    return TokenizerRef(kind, path, sha, enc.vocab_size, _special_id(enc, bos, "bos", path),
                        _special_id(enc, eos, "eos", path) if eos != "auto" else enc.eos_id(),
                        data=ref.data)


def _is_hf_tokenizer(obj) -> bool:
    return type(obj).__module__.startswith("tokenizers") and hasattr(obj, "encode_batch")


def _kind(path: str) -> str:
    if os.path.isdir(path):
        return "transformers"
    if path.endswith(".model"):
        return "sentencepiece"
    return "tokenizers"


def _sha256_of(kind: str, path: str) -> str:
    h = hashlib.sha256()
    if kind == "transformers":
        for name in _FOLDER_FILES:
            full = os.path.join(path, name)
            if os.path.isfile(full):
                h.update(name.encode() + b"\0")
                with open(full, "rb") as f:
                    h.update(f.read())
        return h.hexdigest()
    with open(path, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


def _special_id(enc, token, what: str, path) -> int | None:
    if token is None or token == "none":
        return None
    if isinstance(token, int) and not isinstance(token, bool):
        if not 0 <= token < enc.vocab_size:
            raise TokenizerError(f"{what} id {token} is outside the vocabulary of {path or 'the tokenizer'} "
                                 f"(size {enc.vocab_size})")
        return token
    found = enc.token_to_id(str(token))
    if found is None:
        raise TokenizerError(f"{what} token {token!r} is not in the vocabulary of {path or 'the tokenizer'}")
    return found


# -- the encoders, one per kind -------------------------------------------------


class _HFEncoder:
    """A Hugging Face ``tokenizers.Tokenizer``: ``encode_batch`` without offsets."""

    def __init__(self, tok):
        self.tok = tok
        self.vocab_size = tok.get_vocab_size(with_added_tokens=True)
        self._batch = getattr(tok, "encode_batch_fast", tok.encode_batch)

    def __call__(self, texts):
        return [e.ids for e in self._batch(texts, add_special_tokens=False)]

    def token_to_id(self, token):
        return self.tok.token_to_id(token)

    def eos_id(self):
        for token in EOS_CANDIDATES:
            found = self.tok.token_to_id(token)
            if found is not None:
                return found
        return None


class _TransformersEncoder:
    """A ``transformers`` tokenizer folder; a fast one encodes through its Rust tokenizer."""

    def __init__(self, tok):
        self.tok = tok
        self.vocab_size = len(tok)
        self.fast = _HFEncoder(tok.backend_tokenizer) if getattr(tok, "is_fast", False) else None

    def __call__(self, texts):
        if self.fast is not None:
            return self.fast(texts)
        return self.tok(list(texts), add_special_tokens=False)["input_ids"]

    def token_to_id(self, token):
        found = self.tok.convert_tokens_to_ids(token)
        return None if found is None or found == self.tok.unk_token_id and token != self.tok.unk_token else found

    def eos_id(self):
        return self.tok.eos_token_id


class _SentencePieceEncoder:
    def __init__(self, sp):
        self.sp = sp
        self.vocab_size = sp.get_piece_size()

    def __call__(self, texts):
        return self.sp.encode(list(texts), out_type=int)

    def token_to_id(self, token):
        found = self.sp.piece_to_id(token)
        return None if found == self.sp.unk_id() and token != self.sp.id_to_piece(found) else found

    def eos_id(self):
        found = self.sp.eos_id()
        return found if found >= 0 else None


def _load(kind: str, path: str | None, data: str | None):
    """The encoder of a tokenizer; one line naming the file when it is not one."""
    if data is not None:
        from tokenizers import Tokenizer
        return _HFEncoder(Tokenizer.from_str(data))
    try:
        if kind == "transformers":
            try:
                from transformers import AutoTokenizer
            except ImportError:
                raise TokenizerError(f"{path} is a folder: reading a transformers tokenizer folder needs "
                                     "'pip install transformers' (or give its tokenizer.json)") from None
            return _TransformersEncoder(AutoTokenizer.from_pretrained(path, local_files_only=True))
        if kind == "sentencepiece":
            try:
                import sentencepiece
            except ImportError:
                raise TokenizerError(f"{path}: reading a sentencepiece .model needs "
                                     "'pip install sentencepiece'") from None
            return _SentencePieceEncoder(sentencepiece.SentencePieceProcessor(model_file=path))
        from tokenizers import Tokenizer
        return _HFEncoder(Tokenizer.from_file(path))
    except TokenizerError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise TokenizerError(f"{path} is not a {kind} tokenizer: {first}") from None


# -- the per-process cache ----------------------------------------------------------

_CACHE: OrderedDict = OrderedDict()
_CACHE_SIZE = 4
_LOADS: Counter = Counter()
_LOCK = threading.Lock()


def _remember(sha: str, enc) -> None:
    with _LOCK:
        _CACHE[sha] = enc
        _CACHE.move_to_end(sha)
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)


def _encoder(ref: TokenizerRef):
    enc = _CACHE.get(ref.sha256)
    if enc is not None:
        return enc
    with _LOCK:
        enc = _CACHE.get(ref.sha256)
        if enc is None:
            if ref.path is not None and _sha256_of(ref.kind, ref.path) != ref.sha256:
                raise TokenizerError(f"{ref.path} changed since the run started (its sha256 differs); "
                                     "run again to use the new tokenizer")
            enc = _load(ref.kind, ref.path, ref.data)
            _LOADS[ref.sha256] += 1
            _CACHE[ref.sha256] = enc
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
    return enc


def loads(sha256: str | None = None) -> int:
    """How many times this process loaded a tokenizer (``sha256``: that one) for tasks."""
    return _LOADS[sha256] if sha256 else sum(_LOADS.values())
