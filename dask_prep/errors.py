"""Exceptions raised by dask-prep.

Each class subclasses the builtin a caller would expect, so ``except ValueError``
still works, and each message says the value, the reason and the fix.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DaskPrepError",
    "ConversionError",
    "TokenizerError",
    "SchemaMismatchError",
    "OutputExistsError",
    "NoSourcesError",
    "EmptyDatasetError",
    "OutputInUseError",
    "ManifestError",
    "CorruptShardError",
    "PickleNotAllowedError",
    "BinaryFileError",
    "DecompressionLimitError",
    "EmptyFileError",
    "TooManyErrorsError",
    "ConverterNotFoundError",
    "SegmenterNotInstalledError",
    "SourceError",
    "UnguardedScriptError",
    "WorkerKilledError",
    "error_name",
]


class DaskPrepError(Exception):
    """Base class of every dask-prep error."""


class ConversionError(DaskPrepError, RuntimeError):
    """A source failed to load or convert and ``on_error="raise"`` was asked for.

    The message names the file (and the line, where known) and the cause.
    """


class SchemaMismatchError(DaskPrepError, TypeError):
    """Records do not fit the Parquet schema (the message names the field)."""


class OutputExistsError(DaskPrepError, FileExistsError):
    """The output directory holds files dask-prep did not write."""


class OutputInUseError(DaskPrepError, RuntimeError):
    """Another live run is writing to the same output directory."""


class ManifestError(DaskPrepError, ValueError):
    """``.manifest.json`` is missing, unreadable or inconsistent."""


class CorruptShardError(DaskPrepError, ValueError):
    """A shard's bytes are not what the manifest recorded (a bad disk, a bad
    copy, an edit): it is never read as if it were data. The message names the
    file; ``dask-prep verify OUT`` checks every shard."""


class DecompressionLimitError(DaskPrepError, ValueError):
    """A compressed source decompresses past its ``max_decompressed`` limit."""


class PickleNotAllowedError(DaskPrepError, PermissionError):
    """Pickle shards were opened without ``allow_pickle=True``."""


class BinaryFileError(DaskPrepError, ValueError):
    """A text converter was given a file that is not text."""


class EmptyFileError(DaskPrepError, ValueError):
    """A document has no content (0 bytes, after decompression)."""


class TooManyErrorsError(DaskPrepError, RuntimeError):
    """More sources failed than ``max_errors`` allows (or every one did)."""


class NoSourcesError(DaskPrepError, FileNotFoundError):
    """The inputs named no file to convert (a typo, an empty folder, a missing
    ``@list``); ``allow_empty=True`` (``--allow-empty``) accepts that."""


class EmptyDatasetError(DaskPrepError, RuntimeError):
    """Every source converted to no records at all; ``allow_empty=True`` accepts that."""


class TokenizerError(DaskPrepError, ValueError):
    """A tokenizer that is not a local path, not a tokenizer, or lacks a token asked for."""


class ConverterNotFoundError(DaskPrepError, LookupError):
    """A converter name, ``module:func`` or ``file.py:func`` cannot be resolved."""


class SegmenterNotInstalledError(DaskPrepError, ImportError):
    """An optional segmenter was asked for (``segmenter="pysbd"``,
    ``word_segmenter="jieba"``) but its package is not installed; the message
    names the package and the ``pip install`` command."""


@dataclass
class SourceError:
    """One failed source, or one bad item inside a source, as ``.errors.jsonl`` lists it."""

    path: str
    error: str
    message: str
    line: int | None = None

    def to_dict(self) -> dict:
        out = {"path": self.path, "error": self.error, "message": self.message}
        if self.line is not None:
            out["line"] = self.line
        return out

    @classmethod
    def from_exception(cls, path: str, exc: BaseException, line: int | None = None) -> SourceError:
        return cls(path, error_name(exc), str(exc) or repr(exc), line)


def error_name(exc: BaseException) -> str:
    """``UnicodeDecodeError`` for builtins and ours, ``zlib.error`` for the rest.

    >>> import zlib
    >>> error_name(ValueError("x")), error_name(zlib.error("x"))
    ('ValueError', 'zlib.error')
    """
    cls = type(exc)
    module = cls.__module__.split(".")[0]
    return cls.__name__ if module in ("builtins", "dask_prep") else f"{module}.{cls.__name__}"


class UnguardedScriptError(DaskPrepError, RuntimeError):
    """``run`` was called at the top level of a script without
    ``if __name__ == "__main__":``, which the local cluster's worker processes
    would run again when they start."""


class WorkerKilledError(DaskPrepError, RuntimeError):
    """A task killed every worker that ran it (out of memory, a crash in native
    code); the message names the partition and its sources."""
