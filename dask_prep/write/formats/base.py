"""The shard format contract: what a format fills in; the writer owns the loop.

The partition writer (:mod:`dask_prep.write.partition`) groups records, cuts
exact shards, names them, writes them atomically and hashes them. A format
fills the hooks: turn records into a batch (and say which exceptions mean a
record it cannot hold), concatenate and slice batches, write one batch as a
shard file, and read a shard back. Subclass :class:`ShardFormat`, set
``name`` and ``suffix``, and register it with
:func:`dask_prep.register_format`; that is all a new format costs::

    import json
    import dask_prep as dp

    class JsonLines(dp.ShardFormat):
        name, suffix = "jsonl", ".jsonl"

        def write(self, batch, path):
            with open(path, "w", encoding="utf-8") as f:
                f.writelines(json.dumps(r) + "\\n" for r in batch)

        def decode(self, shard):
            return [json.loads(line) for line in shard.read().splitlines()]

    dp.register_format(JsonLines)

The defaults treat a batch as a Python list of records, which suits any format
that stores records one by one. A columnar format (Parquet) overrides
:meth:`~ShardFormat.batch`, :meth:`~ShardFormat.concat` and
:meth:`~ShardFormat.slice`, and :meth:`~ShardFormat.table` for fast column reads.
"""
from __future__ import annotations

import hashlib
import itertools
import pickle
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, ClassVar

__all__ = ["ShardFormat", "ShardFile"]


@dataclass(frozen=True)
class ShardFile:
    """One shard of a dataset, as a format reads it: ``name`` is its main file
    (``shard-00000.parquet``) in the output folder ``out``; ``companion`` files
    of the same shard differ by their suffix (``.idx`` beside ``.bin``).

    ``expect`` holds the manifest's ``(file, bytes, sha256)`` of each file:
    :meth:`read` then checks the size and sha256 of what it read, and
    :meth:`open` and :meth:`local_path` (partial reads) the size, raising
    :class:`~dask_prep.errors.CorruptShardError`. Empty while writing.
    """

    out: object  # an OutputDir
    name: str
    expect: tuple = ()

    def _file(self, suffix: str | None) -> str:
        if suffix is None:
            return self.name
        return self.name[: self.name.rindex(".")] + suffix

    def read(self, suffix: str | None = None) -> bytes:
        """The bytes of the main file, or of the companion with ``suffix``."""
        name = self._file(suffix)
        data = self.out.read_bytes(name)
        for file, size, sha256 in self.expect:
            if file == name:
                if len(data) != size:
                    raise self._wrong_size(name, len(data), size)
                if hashlib.sha256(data).hexdigest() != sha256:
                    raise self.corrupt("its sha256 differs from the manifest's: it changed after it "
                                       "was written (a bad disk or copy)", suffix)
        return data

    def open(self, suffix: str | None = None) -> IO[bytes]:
        return self.out.fs.open(self._checked_size(suffix), "rb")

    def local_path(self, suffix: str | None = None) -> str | None:
        """A local path, for readers that map files into memory (``None`` remotely)."""
        return self._checked_size(suffix) if self.out.local else None

    def corrupt(self, problem: str, suffix: str | None = None) -> Exception:
        """The error for this shard's file: one line naming it and the way to check them all."""
        from ...errors import CorruptShardError
        return CorruptShardError(f"{self.out.url_of(self._file(suffix))}: {problem}; "
                                 f"`dask-prep verify {self.out.url}` checks every shard")

    def _checked_size(self, suffix: str | None) -> str:
        name = self._file(suffix)
        path = self.out.path(name)
        for file, size, _ in self.expect:
            if file == name and (got := self.out.size(name)) != size:
                raise self._wrong_size(name, got, size)
        return path

    def _wrong_size(self, name: str, got: int, size: int) -> Exception:
        return self.corrupt(f"{got:,} bytes, the manifest says {size:,}: truncated or replaced after "
                            "it was written", None if name == self.name else name[name.rindex("."):])


class ShardFormat:
    """Base class of shard formats. An instance lives for one partition task
    (or one merge) and may keep state, such as the schema inferred so far."""

    #: The name users give (``--format NAME``); unique among registered formats.
    name: ClassVar[str] = ""
    #: The suffix of each shard's main file: ``shard-00000{suffix}``.
    suffix: ClassVar[str] = ""
    #: Suffixes of more files that belong to each shard (``(".idx",)``).
    companions: ClassVar[tuple] = ()
    #: Files the format writes once for the whole dataset (``("index.json",)``).
    dataset_files: ClassVar[tuple] = ()
    #: Whether records are checked against an Arrow schema (``schema=``).
    has_schema: ClassVar[bool] = False
    #: Whether reading runs code (pickle): :func:`dask_prep.open` then needs ``allow_pickle``.
    needs_trust: ClassVar[bool] = False
    #: The field of id sequences every record of this format has (the token
    #: formats: ``"input_ids"``); batches read that column unless told otherwise.
    ids_column: ClassVar[str | None] = None
    #: Exceptions of :meth:`batch` or :meth:`write` that mean a record the format
    #: cannot hold (its source is left out and reported, not the run stopped).
    record_errors: ClassVar[tuple] = (TypeError, ValueError, pickle.PicklingError, AttributeError)

    def __init__(self, schema=None, **options):
        if options:
            raise TypeError(f"format {self.name!r} takes no options ({', '.join(options)})")
        self.schema = schema

    # -- the files that are this format's --------------------------------------

    @classmethod
    def shard_pattern(cls) -> re.Pattern:
        """The names of this format's shard files (main file and companions)."""
        ends = "|".join(re.escape(s) for s in (cls.suffix, *cls.companions))
        return re.compile(rf"^shard-\d{{5,}}(?:{ends})$")

    # -- writing ------------------------------------------------------------------

    def batch(self, records: list):
        """Records (a chunk of them) as a batch. Raise one of ``record_errors``
        for a record the format cannot hold."""
        return list(records)

    def concat(self, batches: Sequence):
        return list(itertools.chain.from_iterable(batches))

    def length(self, batch) -> int:
        return len(batch)

    def slice(self, batch, start: int, stop: int):
        return batch[start:stop]

    def write(self, batch, path: str) -> dict | None:
        """Write ``batch`` as a new local file at ``path``. Return the bytes of
        companion files by suffix, if the format has any. Default: :meth:`encode`."""
        with open(path, "wb") as f:
            f.write(self.encode(batch))
        return None

    def encode(self, batch) -> bytes:
        """The shard file's bytes (object stores take a shard in one PUT).
        Default: :meth:`write` to a temporary file."""
        import os
        import tempfile
        fd, tmp = tempfile.mkstemp(suffix=self.suffix)
        os.close(fd)
        try:
            self.write(batch, tmp)
            with open(tmp, "rb") as f:
                return f.read()
        finally:
            os.remove(tmp)

    def companion_bytes(self, batch) -> dict:
        """Companion files' bytes for :meth:`encode` (object stores)."""
        return {}

    def widening(self) -> ShardFormat:
        """Let records widen the given schema instead of having to fit it."""
        return self

    def snapshot(self):
        """State to put back with :meth:`restore` when a source is cut out."""
        return self.schema

    def restore(self, state) -> None:
        self.schema = state

    def unify(self, schemas: list):
        """One schema for shards of the given schemas (formats without one: ``None``)."""
        return None

    def finalize(self, out, shards: list) -> dict | None:
        """Write the dataset-level files (``dataset_files``) once every shard has
        its final name; ``shards`` are the manifest's shard entries. A dict
        returned becomes the manifest's ``format_info`` (dtype, token counts)."""

    # -- staging: a partition's leftover records wait for the merge -------------

    stage_suffix: ClassVar[str] = ".stage.pkl"

    def write_stage(self, batch, path: str) -> None:
        with open(path, "wb") as f:
            f.write(self.encode_stage(batch))

    def encode_stage(self, batch) -> bytes:
        return pickle.dumps(batch, protocol=5)

    def decode_stage(self, data: bytes):
        return pickle.loads(data)  # written by this run's own workers, in its work folder

    def merge_stages(self, stages: list) -> bytes | None:
        """A shard's bytes made straight from staged bytes, for formats that can
        (``stages``: ``(data, start, stop)`` of each staged file, in order): no
        decoding and encoding again. ``None`` (the default): the merge decodes,
        slices, concatenates and writes the batch."""
        return None

    # -- reading --------------------------------------------------------------------

    def decode(self, shard: ShardFile):
        """The batch stored in ``shard``."""
        raise NotImplementedError(f"format {self.name!r} cannot be read back")

    def records(self, batch) -> list:
        """A batch as a list of records."""
        return list(batch)

    def count(self, shard: ShardFile) -> int:
        """How many records ``shard`` holds (for ``verify``); formats that can
        should answer without decoding every record."""
        return self.length(self.decode(shard))

    def read_schema(self, shard: ShardFile):
        """The shard's Arrow schema, for formats that have one (else ``None``)."""
        return None

    def table(self, shard: ShardFile, columns: list):
        """The ``columns`` of ``shard`` as a :class:`pyarrow.Table`, or ``None``
        if the format is not columnar (then records are read)."""
        return None
