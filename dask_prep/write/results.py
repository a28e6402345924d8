"""What partition tasks report, and the markers that make them survive a kill.

A partition task returns a :class:`PartResult` (counts, file names, sha256,
schema, errors; never records) and saves the same as a JSON marker in the
work folder, so a run that is killed and started again skips it.
"""
from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, field

from ..errors import SourceError
from .output import WORK, OutputDir
from .schema import schema_from_bytes, schema_to_bytes

__all__ = ["FileInfo", "ShardInfo", "PartResult", "save_marker", "load_marker", "marker_name"]


@dataclass
class FileInfo:
    """One file in the output folder: its name, size and sha256."""

    file: str
    bytes: int
    sha256: str


@dataclass
class ShardInfo:
    """One shard: its main file, its records, and the companion files, if any."""

    file: str
    records: int
    bytes: int
    sha256: str
    companions: list = field(default_factory=list)  # [FileInfo]

    def files(self) -> list[str]:
        return [self.file, *(c.file for c in self.companions)]

    def entry(self, name: str) -> dict:
        """The manifest's entry for this shard once renamed to ``name``."""
        out = {"file": name, "records": self.records, "bytes": self.bytes, "sha256": self.sha256}
        if self.companions:
            stem = name[: name.rindex(".")]
            out["companions"] = [{"file": stem + c.file[c.file.rindex("."):], "bytes": c.bytes,
                                  "sha256": c.sha256} for c in self.companions]
        return out

    @classmethod
    def from_json(cls, d: dict) -> ShardInfo:
        return cls(d["file"], d["records"], d["bytes"], d["sha256"],
                   [FileInfo(**c) for c in d.get("companions", ())])


@dataclass
class PartResult:
    """What a partition task reports: counts and file names, never records."""

    index: int
    records: int = 0
    shards: list = field(default_factory=list)  # [ShardInfo]
    remainder: ShardInfo | None = None
    schema: object = None
    errors: list = field(default_factory=list)  # [SourceError]
    seconds: float = 0.0
    fatal: tuple | None = None  # (error class name, message) when on_error="raise" stopped it
    sources: int = 0  # set by run() for its progress hook; not saved
    #: What the partition was made from (:func:`dask_prep.write.job.partition_keys`):
    #: a resume keeps the partition only if its key is still the same.
    key: str | None = None

    @property
    def failed_sources(self) -> int:
        """Sources that failed whole (bad items inside a source, with a line, do not count)."""
        return sum(1 for e in self.errors if e.line is None)

    def files(self) -> list[str]:
        parts = self.shards + ([self.remainder] if self.remainder else [])
        return [f for s in parts for f in s.files()]

    def to_json(self) -> dict:
        return {
            "index": self.index, "key": self.key, "records": self.records, "seconds": self.seconds,
            "shards": [asdict(s) for s in self.shards],
            "remainder": asdict(self.remainder) if self.remainder else None,
            "schema": base64.b64encode(schema_to_bytes(self.schema)).decode() if self.schema else None,
            "errors": [e.to_dict() for e in self.errors],
        }

    @classmethod
    def from_json(cls, d: dict) -> PartResult:
        return cls(
            d["index"], d["records"], [ShardInfo.from_json(s) for s in d["shards"]],
            ShardInfo.from_json(d["remainder"]) if d["remainder"] else None,
            schema_from_bytes(base64.b64decode(d["schema"])) if d["schema"] else None,
            [SourceError(**e) for e in d["errors"]], d.get("seconds", 0.0), key=d.get("key"))


def marker_name(index: int) -> str:
    return f"{WORK}/p{index:05d}.json"


def save_marker(out: OutputDir, result: PartResult) -> None:
    """What makes a finished partition survive a killed run (the cost of resuming)."""
    out.write_json(marker_name(result.index), result.to_json())


def load_marker(out: OutputDir, index: int, key: str | None = None) -> PartResult | None:
    """The saved result of partition ``index``, if it and all its files exist and
    it was made from what ``key`` says (the same sources, unchanged)."""
    try:
        res = PartResult.from_json(json.loads(out.read_bytes(marker_name(index))))
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None
    if res.index != index or (key is not None and res.key != key):
        return None
    return res if all(out.exists(f) for f in res.files()) else None
