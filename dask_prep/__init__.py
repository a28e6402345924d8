"""dask-prep: turn document corpora into exact fixed-size training shards on Dask.

>>> import dask_prep as dp
>>> sorted(dp.converter_names())
['csv', 'jsonl', 'lines', 'sentences', 'text']
"""
from ._tracking import report_bad_item
from .converters import (Converter, converter_names, register_converter, resolve_converter,
                         split_sentences, words)
from .convert import to_bag
from .errors import (ConversionError, ConverterNotFoundError, DaskPrepError, ManifestError,
                     OutputExistsError, PickleNotAllowedError, SchemaMismatchError)
from .formats import register_format
from .plan import plan_partitions
from .runner import RunResult, run
from .write import write_shards
from .shardset import ShardSet, VerifyReport, open, verify
from .sources import Source, Sources, discover
from .batches import BatchIterator
from .stream import BatchStream, stream
from .vocab import Vocab, build_vocab, token_ids, with_token_ids
from .report import Report, report

__version__ = "0.1.0"

__all__ = [
    "discover", "Source", "Sources", "plan_partitions", "to_bag", "write_shards", "run",
    "RunResult", "open", "ShardSet", "verify", "VerifyReport", "Converter",
    "register_converter", "resolve_converter", "converter_names", "register_format",
    "split_sentences", "words", "report_bad_item", "DaskPrepError", "ConversionError",
    "ConverterNotFoundError", "ManifestError", "OutputExistsError", "PickleNotAllowedError",
    "SchemaMismatchError", "build_vocab", "Vocab", "token_ids", "with_token_ids",
    "BatchIterator", "stream", "BatchStream", "report", "Report", "__version__",
]
