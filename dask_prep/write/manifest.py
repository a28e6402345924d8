"""The manifest: written last, the only proof that a dataset is complete.

:class:`Manifest` is what :func:`dask_prep.write_shards` returns and what
reading (``open``, ``verify``, ``info``) loads: a read-only mapping over the
manifest's JSON, validated when it is made, so a malformed manifest is one
clear :class:`~dask_prep.errors.ManifestError`, never a traceback later, and
no name in it can point outside the dataset's folder.

>>> m = Manifest({"version": 2, "format": "parquet", "shard_size": 2, "total_records": 1,
...               "shards": [{"file": "shard-00000.parquet", "records": 1, "bytes": 10,
...                           "sha256": "0" * 64}]})
>>> m.total_records, m.files
(1, ['shard-00000.parquet'])
>>> Manifest({**m, "shards": [{**m["shards"][0], "file": "../x.parquet"}]})
Traceback (most recent call last):
...
dask_prep.errors.ManifestError: manifest: shard 0 names '../x.parquet', not a shard file of format 'parquet'
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping

from ..errors import ManifestError
from .formats import format_class
from .output import ERRORS, MANIFEST, OLD_ERRORS, OLD_MANIFEST, WORK, OutputDir

__all__ = ["Manifest", "VERSION"]

#: The layout version this dask-prep writes, and the ones it reads. Version 2
#: names every file that is not a shard with a leading ``.`` (``.manifest.json``,
#: ``.errors.jsonl``, ``.sources.jsonl``) so that Parquet readers skip them;
#: version 1 used ``manifest.json``, ``errors.jsonl`` and ``_sources.jsonl``.
VERSION = 2
READS = (1, 2)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_REQUIRED = ("version", "format", "shard_size", "total_records", "shards")


class Manifest(Mapping):
    """A complete dataset's manifest (a read-only mapping of its JSON fields)."""

    def __init__(self, data: dict, where: str = "manifest", name: str = MANIFEST):
        self._data = data
        self.name = name  # the file it was read from (version 1: manifest.json)
        self._check(where)

    # -- the mapping ----------------------------------------------------------------

    def __getitem__(self, key):
        return self._data[key]

    def __iter__(self) -> Iterator:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return (f"Manifest({self.total_records:,} records in {len(self.shards)} "
                f"{self.format} shards of {self.shard_size:,})")

    def to_json(self) -> dict:
        return dict(self._data)

    # -- typed access ---------------------------------------------------------------

    format = property(lambda self: self._data["format"])
    shard_size = property(lambda self: self._data["shard_size"])
    total_records = property(lambda self: self._data["total_records"])
    shards = property(lambda self: self._data["shards"])
    fingerprint = property(lambda self: self._data.get("fingerprint"))

    @property
    def errors_file(self) -> str:
        """The name of the dataset's error list (version 1: ``errors.jsonl``)."""
        return OLD_ERRORS if self._data["version"] == 1 else ERRORS

    @property
    def files(self) -> list[str]:
        """Every file the shards are made of, main files and companions, in order."""
        return [f for s in self.shards for f in (s["file"], *(c["file"] for c in s.get("companions", ())))]

    # -- reading and writing -------------------------------------------------------

    @staticmethod
    def name_in(out: OutputDir) -> str | None:
        """The manifest's name in ``out`` (``.manifest.json``, or ``manifest.json``
        in a version 1 folder), or ``None`` if there is none."""
        for name in (MANIFEST, OLD_MANIFEST):
            if out.exists(name):
                return name
        return None

    @classmethod
    def read(cls, out: OutputDir) -> Manifest:
        """The manifest of the complete dataset in ``out``, or a one-line
        :class:`ManifestError` saying why there is none."""
        name = cls.name_in(out)
        if name is None:
            if out.exists(WORK):
                raise ManifestError(f"{out.url} holds an unfinished run (no {MANIFEST} yet); "
                                    "run the same command again to resume it")
            raise ManifestError(f"{out.url} is not a dask-prep dataset: no {MANIFEST}")
        if not out.isfile(name):
            raise ManifestError(f"{out.path(name)} is not a file")
        try:
            data = json.loads(out.read_bytes(name))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{out.path(name)} is corrupt: {exc}") from None
        return cls(data, out.path(name), name)

    def write(self, out: OutputDir) -> None:
        """Commit: the shards' renames are made durable first, then the manifest."""
        out.sync()
        out.write_json(self.name, self._data)
        out.sync()

    # -- validation -----------------------------------------------------------------

    def _check(self, where: str) -> None:
        d = self._data
        if not isinstance(d, dict):
            raise ManifestError(f"{where}: not a JSON object")
        missing = [k for k in _REQUIRED if k not in d]
        if missing:
            raise ManifestError(f"{where} lacks {', '.join(missing)}")
        if d["version"] not in READS:
            raise ManifestError(f"{where} has version {d['version']!r}; this dask-prep reads "
                                f"version {', '.join(map(str, READS))}")
        try:
            pattern = format_class(d["format"]).shard_pattern()
        except (ValueError, TypeError):
            raise ManifestError(f"{where}: unknown format {d['format']!r}") from None
        _count(where, "shard_size", d["shard_size"], low=1)
        _count(where, "total_records", d["total_records"])
        if not isinstance(d["shards"], list):
            raise ManifestError(f"{where}: shards is not a list")
        for i, s in enumerate(d["shards"]):
            _check_entry(where, f"shard {i}", s, pattern, d["format"])
            for c in s.get("companions", ()):
                _check_entry(where, f"shard {i}'s companion", c, pattern, d["format"], records=False)


def _count(where: str, what: str, value, low: int = 0) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ManifestError(f"{where}: {what} is {value!r}, not an integer >= {low}")


def _check_entry(where: str, what: str, entry, pattern: re.Pattern, fmt: str,
                 records: bool = True) -> None:
    if not isinstance(entry, dict):
        raise ManifestError(f"{where}: {what} is {type(entry).__name__}, not an object")
    name = entry.get("file")
    if not isinstance(name, str) or not pattern.match(name):
        raise ManifestError(f"{where}: {what} names {name!r}, not a shard file of format {fmt!r}")
    for key in ("records", "bytes") if records else ("bytes",):
        if key not in entry:
            raise ManifestError(f"{where}: {what} ({name}) lacks {key}")
        _count(where, f"{what} ({name}) {key}", entry[key])
    if not isinstance(entry.get("sha256"), str) or not _SHA256.match(entry["sha256"]):
        raise ManifestError(f"{where}: {what} ({name}) has no valid sha256")
