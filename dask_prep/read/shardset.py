"""Open and verify a shard directory.

>>> import dask.bag as db, dask_prep as dp, tempfile
>>> out = tempfile.mkdtemp()
>>> _ = dp.write_shards(db.from_sequence([{"x": i} for i in range(5)]), out, shard_size=2, overwrite=True)
>>> ds = dp.open(out)
>>> len(ds), ds.format, [r["x"] for r in ds]
(5, 'parquet', [0, 1, 2, 3, 4])
>>> dp.verify(out).ok
True
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import dask.bag as db
import pyarrow as pa
from dask import delayed

from ..errors import CorruptShardError, ManifestError, PickleNotAllowedError
from ..write.formats import ShardFile, format_class, get_format
from ..write.manifest import Manifest
from ..write.output import OutputDir

__all__ = ["ShardSet", "open", "verify", "VerifyReport"]

_TRUST_WARNING = ("reading them runs arbitrary code: load them only from a source "
                  "you trust, with allow_pickle=True")


class ShardSet:
    """A complete dataset written by dask-prep: its manifest and its shards."""

    def __init__(self, output, *, allow_pickle: bool = False, storage_options: dict | None = None,
                 check: bool = True):
        self.out = OutputDir(output, storage_options)
        self.manifest = Manifest.read(self.out)
        if format_class(self.format).needs_trust and not allow_pickle:
            raise PickleNotAllowedError(f"{self.out.url} holds {self.format} shards; {_TRUST_WARNING}")
        self.check = check
        if check:
            self._check_sizes()

    def _expect(self, s: dict) -> tuple:
        """The ``(file, bytes, sha256)`` a read of shard entry ``s`` checks."""
        if not self.check:
            return ()
        return tuple((e["file"], e["bytes"], e["sha256"]) for e in (s, *s.get("companions", ())))

    def _check_sizes(self) -> None:
        """Every shard file is there with the size the manifest says: one listing."""
        sizes = self.out.sizes()
        for s in self.shards:
            for file, size, _ in self._expect(s):
                got = sizes.get(file)
                if got != size:
                    problem = "missing" if got is None else f"{got:,} bytes, the manifest says {size:,}"
                    raise CorruptShardError(
                        f"{self.out.url_of(file)}: {problem}: the dataset changed after it was written; "
                        f"`dask-prep verify {self.out.url}` checks every shard")

    @property
    def format(self) -> str:
        return self.manifest["format"]

    @property
    def shards(self) -> list[dict]:
        return self.manifest["shards"]

    @property
    def files(self) -> list[str]:
        """Full paths (or URLs) of the shards, in order."""
        return [self.out.url_of(s["file"]) for s in self.shards]

    def __len__(self) -> int:
        return self.manifest["total_records"]

    def __repr__(self) -> str:
        return (f"ShardSet({self.out.url!r}, {len(self):,} records in {len(self.shards)} "
                f"{self.format} shards of {self.manifest['shard_size']:,})")

    @property
    def schema(self) -> pa.Schema | None:
        """The Arrow schema of the shards (formats that have one)."""
        if not self.shards:
            return None
        return get_format(self.format).read_schema(self.shard_file(0))

    def shard_file(self, i: int) -> ShardFile:
        return ShardFile(self.out, self.shards[i]["file"], self._expect(self.shards[i]))

    def read_shard(self, i: int) -> list:
        """The records of shard ``i``."""
        return _load(self.shard_file(i), self.format)

    def __iter__(self) -> Iterator:
        for i in range(len(self.shards)):
            yield from self.read_shard(i)

    def errors(self) -> list[dict]:
        """The failed sources and bad items listed in ``.errors.jsonl``."""
        name = self.manifest.errors_file
        if not self.out.exists(name):
            return []
        return [json.loads(line) for line in self.out.read_bytes(name).decode().splitlines() if line]

    def to_bag(self) -> db.Bag:
        """A Dask bag with one partition per shard."""
        if not self.shards:
            return db.from_sequence([], npartitions=1)
        return db.from_delayed([delayed(_load)(self.shard_file(i), self.format) for i in range(len(self.shards))])

    def column_bag(self, column: str) -> db.Bag:
        """A Dask bag of one column's values, one partition per shard (columnar
        formats read only that column)."""
        if not self.shards:
            return db.from_sequence([], npartitions=1)
        return db.from_delayed([delayed(_column)(self.shard_file(i), self.format, column)
                                for i in range(len(self.shards))])

    def to_dataframe(self):
        """A Dask DataFrame with one partition per shard (Parquet datasets)."""
        import dask.dataframe as dd
        if self.format != "parquet":  # Dask reads Parquet itself; other formats go through records
            return self.to_bag().to_dataframe()
        return dd.read_parquet(self.files, storage_options=self.out.storage_options or None,
                               split_row_groups=False, aggregate_files=False)

    def to_table(self) -> pa.Table:
        """All records as one :class:`pyarrow.Table` (columnar formats; loads everything)."""
        fmt = get_format(self.format)
        tables = [fmt.table(self.shard_file(i), None) for i in range(len(self.shards))]
        if any(t is None for t in tables):
            raise TypeError(f"{self.format} shards are not columnar; use to_bag() or iterate")
        return pa.concat_tables(tables) if tables else pa.table({})

    def iter_batches(self, batch_size: int, **options):
        """Padded numpy batches ``{column: int32[B, L], "lengths": int32[B], ...}``.

        Shuffling (``shuffle=seed``), length bucketing, ``rank``/``world_size``
        parts, background prefetch and resuming (``state_dict``): see
        :func:`dask_prep.batches.iter_batches` for the options.
        """
        from .batches import iter_batches
        return iter_batches(self, batch_size, **options)

    def to_torch(self, batch_size: int, **options):
        """The padded batches as a ``torch.utils.data.IterableDataset`` (needs torch).

        Options as for :meth:`iter_batches`; each DataLoader worker reads its own part.
        """
        from .torch import to_torch
        return to_torch(self, batch_size, **options)


def _column(shard: ShardFile, fmt: str, column: str) -> list:
    f = get_format(fmt)
    table = f.table(shard, [column])
    if table is not None:
        return table.column(column).to_pylist()
    return [r[column] for r in f.records(f.decode(shard))]


def _load(shard: ShardFile, fmt: str) -> list:
    f = get_format(fmt)
    return f.records(f.decode(shard))


def open(output, *, allow_pickle: bool = False, storage_options: dict | None = None,  # noqa: A001
         check: bool = True) -> ShardSet:
    """Open a dataset written by dask-prep (see :class:`ShardSet`).

    Pickle datasets need ``allow_pickle=True``: unpickling runs code.

    Reading checks what it reads (``check=False`` does not): on open, that
    every shard file has the size the manifest says (one listing); each shard
    read whole, its sha256; Parquet column reads, the page checksums of the
    pages read. A shard that fails raises
    :class:`~dask_prep.errors.CorruptShardError` naming it; ``dask-prep
    verify`` checks everything.
    """
    return ShardSet(output, allow_pickle=allow_pickle, storage_options=storage_options, check=check)


@dataclass
class VerifyReport:
    """What :func:`verify` found. ``ok`` only if every shard matches the manifest."""

    output: str
    checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        if self.ok:
            return f"OK: {self.checked} shards in {self.output} match the manifest"
        return "\n".join([f"FAILED: {len(self.problems)} problem(s) in {self.output}"]
                         + [f"  {p}" for p in self.problems])


def verify(output, *, storage_options: dict | None = None) -> VerifyReport:
    """Re-check every shard file's existence, size, sha256 and record count against the manifest."""
    out = OutputDir(output, storage_options)
    report = VerifyReport(out.url)
    try:
        manifest = Manifest.read(out)
    except ManifestError as exc:
        report.problems.append(str(exc))
        return report
    shards, size, fmt = manifest.shards, manifest.shard_size, get_format(manifest.format)
    for i, s in enumerate(shards):
        report.checked += 1
        report.problems.extend(_check_shard(out, fmt, s))
        if i < len(shards) - 1 and s["records"] != size:
            report.problems.append(f"{s['file']}: manifest says {s['records']} records; "
                                   f"every shard but the last must hold {size}")
    total = sum(s["records"] for s in shards)
    if total != manifest.total_records:
        report.problems.append(f"manifest total_records {manifest.total_records} != "
                               f"sum of shard records {total}")
    listed, pattern = set(manifest.files), fmt.shard_pattern()
    for name in out.listdir():
        if pattern.match(name) and name not in listed:
            report.problems.append(f"{name}: shard-like file not listed in the manifest")
    return report


def _check_file(out: OutputDir, entry: dict) -> list[str]:
    name = entry["file"]
    if not out.isfile(name):
        return [f"{name}: missing"]
    size = out.size(name)
    if size != entry["bytes"]:
        return [f"{name}: {size} bytes, manifest says {entry['bytes']} (truncated or replaced)"]
    if out.sha256(name) != entry["sha256"]:
        return [f"{name}: sha256 differs from the manifest (content changed)"]
    return []


def _check_shard(out: OutputDir, fmt, s: dict) -> list[str]:
    problems = [p for e in (s, *s.get("companions", ())) for p in _check_file(out, e)]
    if problems:
        return problems
    try:
        rows = fmt.count(ShardFile(out, s["file"]))
    except Exception as exc:  # a format's reader: whatever it raises, the shard is unreadable
        return [f"{s['file']}: unreadable {fmt.name} shard: {exc}"]
    if rows != s["records"]:
        return [f"{s['file']}: {rows} records, manifest says {s['records']}"]
    return []
