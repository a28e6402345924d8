"""Shard formats, by name: each is one module of this package (or your own class).

Built-in formats are known by the dotted path of their class and imported on
first use, as fsspec's registry does; :func:`register_format` adds a class of
your own and refuses a name that is taken unless ``overwrite=True``.

>>> from dask_prep.write.formats import format_names, get_format
>>> format_names()[2:4], get_format("pickle").suffix
(['parquet', 'pickle'], '.pkl')
"""
from __future__ import annotations

import importlib
import re

from .base import ShardFile, ShardFormat

__all__ = ["ShardFormat", "ShardFile", "register_format", "get_format", "format_class",
           "format_names", "shard_file_pattern", "dataset_file_names"]

#: Built-in formats: name -> "module:Class", imported when first asked for.
_BUILTIN = {
    "mds": "dask_prep.write.formats.mds:MDSFormat",
    "megatron": "dask_prep.write.formats.megatron:MegatronFormat",
    "parquet": "dask_prep.write.formats.parquet:ParquetFormat",
    "pickle": "dask_prep.write.formats.pickle:PickleFormat",
    "tokens": "dask_prep.write.formats.tokens:TokensFormat",
}
_CLASSES: dict[str, type[ShardFormat]] = {}


def register_format(cls: type[ShardFormat], *, overwrite: bool = False) -> None:
    """Make ``cls`` (a :class:`ShardFormat` subclass) available as ``format=cls.name``."""
    if not (isinstance(cls, type) and issubclass(cls, ShardFormat)) or not cls.name or not cls.suffix:
        raise TypeError(f"{cls!r} is not a ShardFormat subclass with a name and a suffix")
    if cls.name in format_names() and not overwrite:
        raise ValueError(f"format {cls.name!r} is already registered; pass overwrite=True to replace it")
    _CLASSES[cls.name] = cls


def format_names() -> list[str]:
    return sorted({*_BUILTIN, *_CLASSES})


def format_class(name: str) -> type[ShardFormat]:
    if name not in _CLASSES:
        if name not in _BUILTIN:
            raise ValueError(f"unknown format {name!r}; use one of {', '.join(format_names())}")
        module, _, attr = _BUILTIN[name].partition(":")
        _CLASSES[name] = getattr(importlib.import_module(module), attr)
    return _CLASSES[name]


def get_format(name: str, schema=None, **options) -> ShardFormat:
    """A fresh instance of format ``name`` (one per partition task or merge)."""
    cls = format_class(name)
    if schema is not None and not cls.has_schema:
        raise ValueError(f"format {name!r} takes no schema")
    return cls(schema, **options)


def dataset_file_names() -> set[str]:
    """The dataset-level files every registered format may write (``index.json``)."""
    return {n for name in format_names() for n in format_class(name).dataset_files}


def shard_file_pattern() -> re.Pattern:
    """The names of every registered format's shard files."""
    parts = [format_class(n).shard_pattern().pattern[1:-1] for n in format_names()]
    return re.compile("^(?:" + "|".join(parts) + ")$")
