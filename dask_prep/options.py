"""The options of a run, in three frozen objects validated once, at construction.

:class:`ConvertOptions` say how sources become records, :class:`WriteOptions` how
records become shards, :class:`ClusterOptions` where the work runs. ``run``,
``to_bag``, ``write_shards``, ``stream`` and the CLI all take them; the Python
functions also take their fields as keywords, which :func:`split` sorts out.

>>> from dask_prep.options import ConvertOptions, WriteOptions, split
>>> conv, write = split({"converter": "lines", "shard_size": 5, "on_error": "raise"},
...                     ConvertOptions, WriteOptions)
>>> conv.converter, conv.on_error, write.shard_size, write.on_error
('lines', 'raise', 5, 'raise')
>>> ConvertOptions(partition_size="64MB").partition_size
64000000
>>> split({"shard_sise": 5}, WriteOptions)
Traceback (most recent call last):
...
TypeError: unexpected option 'shard_sise'; did you mean 'shard_size'? (options: allow_empty, format, format_options, max_errors, on_error, overwrite, schema, shard_size)
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field, fields, replace

__all__ = ["ConvertOptions", "WriteOptions", "ClusterOptions", "TokenOptions", "split", "ON_ERROR",
           "ENCODING_ERRORS", "SEGMENTERS", "WORD_SEGMENTERS", "parse_size", "check_choice"]

#: What happens when a source fails: leave it out and list it, or stop the run.
ON_ERROR = ("skip", "raise")
#: What happens to invalid UTF-8 in built-in converters.
ENCODING_ERRORS = ("strict", "replace")
#: How the ``sentences`` converter finds sentences (``"pysbd:LANG"`` too) and words.
SEGMENTERS = ("rules", "pysbd")
WORD_SEGMENTERS = ("rules", "jieba")


def check_choice(name: str, value, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, not {value!r}")


def _positive_int(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")


def parse_size(name: str, value) -> int | None:
    """Bytes from an int or a string such as ``"64MB"`` or ``"2GiB"`` (Dask's ``parse_bytes``)."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    from dask.utils import parse_bytes
    try:
        return parse_bytes(value)
    except (ValueError, TypeError):
        raise ValueError(f"{name} must be a number of bytes such as 65536, '64MB' or '2GiB', "
                         f"not {value!r}") from None


#: A ratio limit never stops a source before this many decompressed bytes.
MIN_DECOMPRESSED = 64 << 20


def decompression_limit(value):
    """``"100x"`` (a ratio), ``"20GiB"`` or an int (bytes), or ``None``: as
    ``("x", 100.0)``, ``("bytes", n)`` or ``None``.

    >>> decompression_limit("100x"), decompression_limit("1GiB"), decompression_limit(None)
    (('x', 100.0), ('bytes', 1073741824), None)
    """
    if value is None or isinstance(value, tuple):
        return value
    text = value.strip().lower() if isinstance(value, str) else None
    try:
        if text is not None and text.endswith("x"):
            ratio = float(text[:-1])
            if ratio >= 1:
                return ("x", ratio)
        else:
            size = parse_size("max_decompressed", value)
            if size > 0:
                return ("bytes", size)
    except ValueError:
        pass
    raise ValueError(f"max_decompressed must be a ratio such as '100x' (at least 1x), a size such as "
                     f"'20GiB', or None, not {value!r}")


def _configured(key: str, check=None):
    """A field whose default is dask config ``dask-prep.<key>`` (:mod:`dask_prep.config`),
    checked where it is read, so that a bad setting names itself."""
    def default():
        from . import config
        value = config.get(key)
        if check is not None:
            try:
                check(value)
            except ValueError as exc:
                raise ValueError(f"{config.source(key)}: {exc}") from None
        return value
    return field(default_factory=default)


def _known_format(value) -> None:
    from .write.formats import format_names
    check_choice("format", value, tuple(format_names()))


def _tuple(value) -> tuple:
    if value is None:
        return ()
    if isinstance(value, (str, os.PathLike)):
        return (os.fspath(value),)
    return tuple(os.fspath(v) for v in value)


@dataclass(frozen=True)
class ConvertOptions:
    """How sources are found and turned into records.

    ``converter`` is a built-in name, ``"module:func"``, ``"file.py:func"`` or a
    callable; ``on_error`` ``"skip"`` (list a failed source and go on) or
    ``"raise"``; ``partition_size`` bytes of input per task (``None``:
    automatic); ``suffixes``/``exclude`` filter what discovery finds;
    ``storage_options`` are passed to fsspec for remote sources, explicitly,
    in every task that reads them; ``max_decompressed`` is how far the readers
    decompress one compressed source before failing it (a compression bomb):
    ``"100x"`` (the default) its compressed size 100 times (never less than 64
    MiB), or a size (``"20GiB"``), or ``None`` for no limit. ``segmenter``
    (``"rules"``, ``"pysbd"``, ``"pysbd:LANG"``) and ``word_segmenter``
    (``"rules"``, ``"jieba"``) are options of the ``sentences`` converter
    (:mod:`dask_prep.ingest.segment`).

    ``converter``, ``encoding_errors``, ``on_error``, ``partition_size`` and
    ``max_decompressed`` default to dask config (``dask-prep.converter``, ...;
    :mod:`dask_prep.config`).
    """

    converter: object = _configured("converter")
    encoding_errors: str = _configured("encoding-errors",
                                       lambda v: check_choice("encoding_errors", v, ENCODING_ERRORS))
    on_error: str = _configured("on-error", lambda v: check_choice("on_error", v, ON_ERROR))
    partition_size: int | None = _configured("partition-size", lambda v: parse_size("partition_size", v))
    suffixes: tuple = ()
    exclude: object = None
    storage_options: dict = field(default_factory=dict)
    max_decompressed: object = _configured("max-decompressed", decompression_limit)
    segmenter: str = "rules"
    word_segmenter: str = "rules"

    def __post_init__(self):
        check_choice("encoding_errors", self.encoding_errors, ENCODING_ERRORS)
        check_choice("segmenter", str(self.segmenter).partition(":")[0], SEGMENTERS)
        check_choice("word_segmenter", self.word_segmenter, WORD_SEGMENTERS)
        object.__setattr__(self, "max_decompressed", decompression_limit(self.max_decompressed))
        check_choice("on_error", self.on_error, ON_ERROR)
        object.__setattr__(self, "partition_size", parse_size("partition_size", self.partition_size))
        object.__setattr__(self, "suffixes", _tuple(self.suffixes))
        object.__setattr__(self, "storage_options", dict(self.storage_options or {}))
        if isinstance(self.exclude, (list, set, frozenset)):
            object.__setattr__(self, "exclude", tuple(self.exclude))


@dataclass(frozen=True)
class WriteOptions:
    """How records become shards.

    ``format`` a registered shard format (``"parquet"``, ``"pickle"``, ...);
    ``shard_size`` records per shard (every shard but the last is exact);
    ``schema`` a :class:`pyarrow.Schema` (inferred when ``None``); ``on_error``
    as for conversion, for records that do not fit the schema; ``overwrite``
    replaces an earlier dataset or writes into a folder holding other files;
    ``max_errors`` stops the run when more sources fail: a count, or a fraction
    of the sources; ``allow_empty`` accepts a run that finds no sources or
    whose sources give no records (else it fails and writes no manifest);
    ``format_options`` are the format's own (``{"vocab_size": 50257}`` for the
    token formats), part of what makes two writes the same. ``format``,
    ``shard_size`` and ``on_error`` default to dask config
    (``dask-prep.format``, ``dask-prep.shard-size``, ``dask-prep.on-error``).
    """

    format: str = _configured("format", _known_format)
    shard_size: int = _configured("shard-size", lambda v: _positive_int("shard_size", v))
    schema: object = None
    on_error: str = _configured("on-error", lambda v: check_choice("on_error", v, ON_ERROR))
    overwrite: bool = False
    max_errors: int | float | None = None
    allow_empty: bool = False
    format_options: dict = field(default_factory=dict)

    def __post_init__(self):
        _positive_int("shard_size", self.shard_size)
        object.__setattr__(self, "format_options", dict(self.format_options or {}))
        check_choice("on_error", self.on_error, ON_ERROR)
        m = self.max_errors
        if m is not None and (isinstance(m, bool) or not isinstance(m, (int, float))):
            raise ValueError(f"max_errors must be a count (10) or a fraction (0.05), not {m!r}")
        if isinstance(m, float) and not 0 <= m <= 1:
            raise ValueError(f"max_errors as a fraction must be within 0..1, not {m}")
        if isinstance(m, int) and m < 0:
            raise ValueError(f"max_errors must be >= 0, not {m}")
        from .write.formats import get_format
        # an unknown format, a schema or options it cannot take
        get_format(self.format, self.schema, **self.format_options)

    def error_limit(self, sources: int | None) -> int | None:
        """The most failed sources allowed; by default fewer than all ``sources``."""
        m = self.max_errors
        if m is None:
            return sources - 1 if sources else None
        if isinstance(m, float):
            if sources is None:
                raise ValueError("max_errors as a fraction needs a count of sources; "
                                 "give a count for a bag of your own")
            return int(m * sources)
        return m


#: What happens to the tokens after the last whole sequence: left out, or padded to one.
LAST = ("drop", "pad")


@dataclass(frozen=True)
class TokenOptions:
    """How records become token ids (all off unless ``tokenizer`` is given).

    ``tokenizer`` a local ``tokenizer.json``, ``transformers`` folder or
    sentencepiece ``.model`` (never downloaded), or a
    :class:`tokenizers.Tokenizer`; ``text_field`` the field of dict records
    to encode (plain ``str`` records are encoded as they are); ``bos``/``eos``
    a token or id put before/after each document (``eos="auto"``: the
    tokenizer's end-of-text token if it has one; ``None``: none).
    ``seq_len`` packs the documents' ids into sequences of exactly that many
    tokens (then a record is a sequence); ``last`` says what happens to the
    tokens after the last whole sequence (``"drop"``, or ``"pad"`` with the
    EOS id, the record saying how many with ``"pad"``); ``doc_starts`` adds
    each sequence's document start positions.
    """

    tokenizer: object = None
    text_field: str = "text"
    bos: object = None
    eos: object = "auto"
    seq_len: int | None = None
    last: str = "drop"
    doc_starts: bool = False

    def __post_init__(self):
        if self.seq_len is not None:
            _positive_int("seq_len", self.seq_len)
        check_choice("last", self.last, LAST)
        if not isinstance(self.text_field, str) or not self.text_field:
            raise ValueError(f"text_field must be a field name, not {self.text_field!r}")
        if self.tokenizer is None and (self.seq_len is not None or self.doc_starts):
            raise ValueError("seq_len and doc_starts need a tokenizer (--tokenizer PATH)")
        if isinstance(self.tokenizer, os.PathLike):
            object.__setattr__(self, "tokenizer", os.fspath(self.tokenizer))


@dataclass(frozen=True)
class ClusterOptions:
    """Where the work runs: ``client`` if given, else the scheduler at ``scheduler``
    (or the one a ``scheduler_file`` names, as ``dask scheduler --scheduler-file``
    writes it), else a LocalCluster of ``workers`` if given, else a notebook's
    current client, else dask config ``scheduler-address``
    (``DASK_SCHEDULER_ADDRESS``), else a LocalCluster of dask config
    ``dask-prep.workers`` or ``dask.system.CPU_COUNT`` processes (one thread
    each) with ``memory_limit`` each. ``security`` is a
    :class:`distributed.Security` for a TLS scheduler; ``report`` names an HTML
    file for Dask's performance report."""

    client: object = None
    scheduler: str | None = None
    scheduler_file: str | None = None
    workers: int | None = None
    memory_limit: object = "auto"
    security: object = None
    report: str | None = None

    def __post_init__(self):
        if self.workers is not None:
            _positive_int("workers", self.workers)
        if self.memory_limit != "auto":
            object.__setattr__(self, "memory_limit", parse_size("memory_limit", self.memory_limit))
        if self.scheduler_file is not None:
            object.__setattr__(self, "scheduler_file", os.fspath(self.scheduler_file))
        if self.scheduler is not None and self.scheduler_file is not None:
            raise ValueError("give either a scheduler address or a scheduler file, not both")
        remote = self.scheduler is not None or self.scheduler_file is not None
        if remote and self.workers is not None:
            raise ValueError("give either a scheduler address or a number of workers, not both")
        local = self.client is None and not remote
        if self.memory_limit != "auto" and not local:
            raise ValueError("memory_limit applies to the local workers dask-prep starts, "
                             "not to a given client or scheduler")


def split(options: dict, *classes, given: dict | None = None) -> tuple:
    """One object of each of ``classes`` from keyword ``options`` (a field name
    shared by several classes goes to each); ``given`` maps a class to an object
    to start from."""
    names = {c: {f.name for f in fields(c)} for c in classes}
    known = set().union(*names.values())
    for key in options:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TypeError(f"unexpected option {key!r}{hint} (options: {', '.join(sorted(known))})")
    given = given or {}
    out = []
    for c in classes:
        mine = {k: v for k, v in options.items() if k in names[c]}
        base = given.get(c)
        out.append(replace(base, **mine) if base is not None else c(**mine))
    return tuple(out)
