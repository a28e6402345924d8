"""The sources a dataset was made from, kept beside it to tell when they change.

``.sources.jsonl`` holds one ``[path, size, modified]`` line per source (the
``.`` keeps it out of the data for Parquet readers; version 1 folders named it
``_sources.jsonl``); the manifest records its
sha256. ``.excluded.jsonl`` beside it lists the files the exclude list left out. A later run of the same command compares today's sources with it, and
``dask-prep verify --sources`` lists what changed, was added or disappeared.

>>> from dask_prep.ingest.sources import Source
>>> old = [("a.txt", 3, 1), ("b.txt", 4, 1)]
>>> source_changes(old, [Source("a.txt", 5, 2), Source("c.txt", 1, 1)]).describe()
'1 changed (a.txt), 1 added (c.txt), 1 gone (b.txt)'
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

from .output import EXCLUDED, OLD_SOURCES, SOURCES, OutputDir

__all__ = ["SOURCES", "SourceChanges", "write_sources", "read_sources", "source_changes",
           "check_sources"]


def write_sources(out: OutputDir, sources: Iterable) -> dict:
    """Write the list, and when the exclude list left files out, the list of
    those (``.excluded.jsonl``: one ``{"path", "entry"}`` line per file, the
    entry as written); the manifest's record of them."""
    data = "".join(json.dumps([s.path, s.size, s.modified]) + "\n" for s in sources).encode()
    out.write_atomic(SOURCES, data)
    record = {"file": SOURCES, "sha256": hashlib.sha256(data).hexdigest()}
    excluded = getattr(sources, "excluded_files", ())
    if excluded:
        out.write_atomic(EXCLUDED, "".join(json.dumps({"path": path, "entry": entry}) + "\n"
                                           for path, entry in excluded).encode())
        record["excluded_file"] = EXCLUDED
    return record


def read_sources(out: OutputDir, manifest) -> list[tuple] | None:
    """The sources the manifest's dataset was made from, or ``None`` if it kept
    no list (an older dataset, a bag not made by ``run``) or the list was altered."""
    record = manifest.get("sources") or {}
    name = record.get("file")
    if name not in (SOURCES, OLD_SOURCES):
        return None
    try:
        data = out.read_bytes(name)
    except FileNotFoundError:
        return None
    if hashlib.sha256(data).hexdigest() != record.get("sha256"):
        return None
    return [tuple(json.loads(line)) for line in data.decode().splitlines()]


@dataclass(frozen=True)
class SourceChanges:
    """Paths whose size or modification stamp changed, that are new, or that went."""

    changed: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    gone: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.changed or self.added or self.gone)

    def describe(self, most: int = 3) -> str:
        parts = []
        for label, paths in (("changed", self.changed), ("added", self.added), ("gone", self.gone)):
            if paths:
                shown = ", ".join(paths[:most]) + (", ..." if len(paths) > most else "")
                parts.append(f"{len(paths):,} {label}" + (f" ({shown})" if most else ""))
        return ", ".join(parts) or "no changes"

    def to_dict(self) -> dict:
        return {"changed": list(self.changed), "added": list(self.added), "gone": list(self.gone)}


def source_changes(old: list[tuple] | None, new: Iterable) -> SourceChanges:
    """Compare the recorded list with today's :class:`~dask_prep.ingest.sources.Source` s."""
    before = {path: (size, modified) for path, size, modified in old or ()}
    now = {s.path: (s.size, s.modified) for s in new}
    return SourceChanges(
        tuple(p for p in now if p in before and tuple(before[p]) != now[p]),
        tuple(p for p in now if p not in before),
        tuple(p for p in before if p not in now))


def check_sources(output, storage_options: dict | None = None) -> SourceChanges:
    """Find the dataset's inputs again, as the manifest recorded them, and compare."""
    from ..errors import ManifestError
    from ..ingest.sources import discover
    from .manifest import Manifest

    out = OutputDir(output, storage_options)
    manifest = Manifest.read(out)
    old, inputs = read_sources(out, manifest), manifest.get("inputs")
    if old is None or not inputs:
        raise ManifestError(f"{out.url} keeps no list of its sources (made by an older version, "
                            "or from a bag of your own): nothing to compare")
    options = manifest.get("options", {})
    now = discover(inputs, suffixes=options.get("suffixes") or None, exclude=options.get("exclude"),
                   storage_options=storage_options, outside=out.url_of(""))
    return source_changes(old, now)
