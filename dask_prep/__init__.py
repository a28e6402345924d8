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
from .ingest.bad_items import report_bad_item
from .ingest.convert import to_bag
from .ingest.converters import (Converter, converter_names, register_converter,
                                resolve_converter, split_sentences, words)
from .ingest.plan import plan_partitions
from .ingest.sources import Source, Sources, discover
from .options import ClusterOptions, ConvertOptions, TokenOptions, WriteOptions
from .read.batches import BatchIterator
from .read.shardset import ShardSet, VerifyReport, open, verify
from .read.stream import BatchStream, stream
from .runner import RunResult, run
from .read.report import Report, report
from .tokens.vocab import Vocab, build_vocab, token_ids, with_token_ids
from .write.formats import ShardFile, ShardFormat, register_format
from .write.job import write_shards
from .write.manifest import Manifest

__all__ = [
    "discover", "Source", "Sources", "plan_partitions", "to_bag", "write_shards", "run",
    "RunResult", "open", "ShardSet", "verify", "VerifyReport", "Converter",
    "register_converter", "resolve_converter", "converter_names", "register_format",
    "ShardFormat", "ShardFile", "Manifest", "ConvertOptions", "WriteOptions", "ClusterOptions",
    "split_sentences", "words", "report_bad_item", "DaskPrepError", "ConversionError",
    "ConverterNotFoundError", "CorruptShardError", "ManifestError", "OutputExistsError", "PickleNotAllowedError",
    "SchemaMismatchError", "TokenizerError", "TokenOptions", "build_vocab", "Vocab", "token_ids", "with_token_ids",
    "BatchIterator", "stream", "BatchStream", "report", "Report", "__version__",
]
