"""What a run would do, without a cluster and without converting: ``dask-prep plan``.

:func:`plan_run` finds the sources and plans the partitions as :func:`dask_prep.run`
does (same options, same plan) and says how many shards to expect: exactly
when the converter gives one record per source (``text``), since a source
that fails gives none; otherwise only after converting, as records per source
depend on the converter and the data.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from .ingest.converters import resolve_converter
from .ingest.plan import plan_partitions
from .ingest.sources import discover
from .options import ConvertOptions, WriteOptions, split

__all__ = ["plan_run", "RunPlan"]

#: Converters known to give exactly one record per source that converts.
ONE_PER_SOURCE = ("text",)


@dataclass
class RunPlan:
    """The plan of a run; ``summary()`` is what ``dask-prep plan`` prints."""

    sources: object
    partitions: list
    converter: str
    format: str
    shard_size: int
    partition_size: int | None
    missing: list = field(default_factory=list)
    #: ``seq_len`` when records are packed token sequences (their number is known after tokenizing).
    seq_len: int | None = None

    @property
    def records_known(self) -> bool:
        return self.converter in ONE_PER_SOURCE and self.seq_len is None

    @property
    def expected_shards(self) -> int | None:
        """The shards if every source converts (``None``: known only after converting)."""
        return math.ceil(len(self.sources) / self.shard_size) if self.records_known else None

    def _shards(self) -> str:
        n = self.expected_shards
        if n is not None:
            return (f"{n:,} ({len(self.sources):,} records if every source converts: one record per "
                    f"source; {self.shard_size:,} a shard)")
        why = (f"sequences of {self.seq_len:,} tokens" if self.seq_len else
               f"converter {self.converter!r}: records per source vary")
        return f"unknown before converting ({why}); total records / {self.shard_size:,}, rounded up"

    def rows(self) -> list[tuple[str, str]]:
        from dask.utils import format_bytes
        size = format_bytes(self.partition_size) if self.partition_size else "automatic"
        rows = [("sources", f"{len(self.sources):,} files ({format_bytes(self.sources.total_bytes)})")]
        if self.sources.excluded:
            rows.append(("excluded", f"{self.sources.excluded:,} files"))
        rows += [("missing", f"{path} (not found or unusable)") for path in self.missing]
        rows += [("partitions", f"{len(self.partitions):,} (partition size {size})"),
                 ("converter", self.converter), ("format", self.format), ("shards", self._shards())]
        return rows

    def summary(self) -> str:
        width = max(len(k) for k, _ in self.rows())
        return "\n".join(f"{k:>{width}}  {v}" for k, v in self.rows())


def plan_run(inputs, output=None, *, convert: ConvertOptions | None = None,
             write: WriteOptions | None = None, seq_len: int | None = None, **options) -> RunPlan:
    """The :class:`RunPlan` of ``run(inputs, output, **options)`` (``seq_len``:
    the run packs token sequences); options other than conversion and writing
    ones are refused as ``run`` would."""
    given = {ConvertOptions: convert, WriteOptions: write}
    conv_opts, write_opts = split(options, ConvertOptions, WriteOptions,
                                  given={k: v for k, v in given.items() if v is not None})
    conv = resolve_converter(conv_opts.converter, encoding_errors=conv_opts.encoding_errors,
                             segmenter=conv_opts.segmenter, word_segmenter=conv_opts.word_segmenter)
    outside = None
    if output is not None:
        from .write.output import OutputDir
        outside = OutputDir(os.fspath(output), conv_opts.storage_options).url_of("")
    sources = discover(inputs, suffixes=conv_opts.suffixes or None, exclude=conv_opts.exclude,
                       storage_options=conv_opts.storage_options, outside=outside)
    parts = plan_partitions(sources, partition_size=conv_opts.partition_size, splittable=conv.splittable)
    return RunPlan(sources, parts, conv.name, write_opts.format, write_opts.shard_size,
                   conv_opts.partition_size, list(sources.missing), seq_len)
