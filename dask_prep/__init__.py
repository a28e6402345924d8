"""dask-prep: turn document corpora into exact fixed-size training shards on Dask.

The package is laid out as the data flows: ``ingest/`` (find sources, plan
partitions, convert), ``tokens/`` (vocabularies and token ids), ``write/``
(exact shards, the write job, commit, the output folder, ``formats/``),
``read/`` (open, verify, batches, stream, torch), and ``runtime/`` (the
cluster, execution, Dask's graphs). :func:`run` and the CLI sit on top.

>>> import dask_prep as dp
>>> sorted(dp.converter_names())
['csv', 'jsonl', 'lines', 'sentences', 'text']
"""
from ._version import __version__
from .errors import (ConversionError, ConverterNotFoundError, CorruptShardError, DaskPrepError, ManifestError,
                     OutputExistsError, PickleNotAllowedError, SchemaMismatchError, TokenizerError)

#: Where each public name lives: imported on first use, so that `import dask_prep`
#: (and the CLI's start, and a Ctrl-C during it) costs milliseconds, not Dask's imports.
_LAZY = {
    ".ingest.bad_items": ("report_bad_item",),
    ".ingest.convert": ("to_bag",),
    ".ingest.converters": ("Converter", "converter_names", "register_converter", "resolve_converter",
                           "split_sentences", "words"),
    ".ingest.plan": ("plan_partitions",),
    ".ingest.sources": ("Source", "Sources", "discover"),
    ".dry_run": ("RunPlan", "plan_run"),
    ".options": ("ClusterOptions", "ConvertOptions", "TokenOptions", "WriteOptions"),
    ".read.batches": ("BatchIterator",),
    ".read.shardset": ("ShardSet", "VerifyReport", "open", "verify"),
    ".read.stream": ("BatchStream", "stream"),
    ".runner": ("RunResult", "run"),
    ".read.report": ("Report", "report"),
    ".tokens.train": ("train_tokenizer",),
    ".tokens.vocab": ("Vocab", "build_vocab", "token_ids", "with_token_ids"),
    ".write.formats": ("ShardFile", "ShardFormat", "register_format"),
    ".write.job": ("write_shards",),
    ".write.manifest": ("Manifest",),
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}

__all__ = [
    "discover", "Source", "Sources", "plan_partitions", "to_bag", "write_shards", "run",
    "RunResult", "open", "ShardSet", "verify", "VerifyReport", "Converter",
    "register_converter", "resolve_converter", "converter_names", "register_format",
    "ShardFormat", "ShardFile", "Manifest", "ConvertOptions", "WriteOptions", "ClusterOptions",
    "split_sentences", "words", "report_bad_item", "DaskPrepError", "ConversionError",
    "ConverterNotFoundError", "CorruptShardError", "ManifestError", "OutputExistsError", "PickleNotAllowedError",
    "SchemaMismatchError", "TokenizerError", "TokenOptions", "build_vocab", "Vocab", "token_ids", "with_token_ids",
    "BatchIterator", "stream", "BatchStream", "report", "Report", "train_tokenizer", "plan_run", "RunPlan",
    "__version__",
]


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'dask_prep' has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_WHERE))
