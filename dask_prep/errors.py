"""Exceptions raised by dask-prep.

Each class subclasses the builtin a caller would expect, so ``except ValueError``
still works, and each message says the value, the reason and the fix.
"""
from __future__ import annotations

__all__ = [
    "DaskPrepError",
    "ConversionError",
    "SchemaMismatchError",
    "OutputExistsError",
    "OutputInUseError",
    "ManifestError",
    "PickleNotAllowedError",
    "BinaryFileError",
    "EmptyFileError",
    "TooManyErrorsError",
    "ConverterNotFoundError",
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
    """``manifest.json`` is missing, unreadable or inconsistent."""


class PickleNotAllowedError(DaskPrepError, PermissionError):
    """Pickle shards were opened without ``allow_pickle=True``."""


class BinaryFileError(DaskPrepError, ValueError):
    """A text converter was given a file that is not text."""


class EmptyFileError(DaskPrepError, ValueError):
    """A document has no content (0 bytes, after decompression)."""


class TooManyErrorsError(DaskPrepError, RuntimeError):
    """More sources failed than ``max_errors`` allows (or every one did)."""


class ConverterNotFoundError(DaskPrepError, LookupError):
    """A converter name, ``module:func`` or ``file.py:func`` cannot be resolved."""
