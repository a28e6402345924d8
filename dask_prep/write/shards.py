"""Shard files, written on the workers: atomically, hashed, companions included.

Every shard is written to a temporary name in its folder and renamed (object
stores: one PUT), so a reader never sees half a file and a retried task
overwrites its own output. Local shards go straight into their file and are
hashed from the page cache; no shard-sized buffer is made.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ..errors import SchemaMismatchError
from ..runtime.shipping import loaded
from .formats import ShardFile, ShardFormat, format_class
from .output import OutputDir
from .results import FileInfo, ShardInfo

__all__ = ["WriteSpec", "write_shard", "rewrite_shard", "merge_shard"]


@dataclass(frozen=True)
class WriteSpec:
    """What every partition task of one write needs (it travels in the graph)."""

    out: OutputDir
    format: str
    shard_size: int
    schema: object = None
    on_error: str = "skip"
    conversion_layers: tuple = ()  # their errors come through the side channel after a .map
    schema_is_hint: bool = False   # start from ``schema`` but let records widen it
    #: The format's class, for workers that do not have it registered (a user's own
    #: format travels with the tasks, by value if workers cannot import it).
    format_class: object = None
    format_options: tuple = ()  # (name, value) pairs given to the format

    def new_format(self, schema=None) -> ShardFormat:
        cls = loaded(self.format_class) if self.format_class is not None else format_class(self.format)
        fmt = cls(schema if schema is not None else self.schema, **dict(self.format_options))
        return fmt.widening() if self.schema_is_hint else fmt


def write_shard(out: OutputDir, name: str, fmt: ShardFormat, batch, stage: bool = False) -> ShardInfo:
    """Write ``batch`` as the shard (or staged leftovers) ``name``; its info."""
    try:
        if stage:
            main, companions = _write_stage(out, name, fmt, batch), {}
        elif out.local:
            got: dict = {}
            out.write_local_atomic(name, lambda path: got.update(fmt.write(batch, path) or {}))
            main, companions = out.size_and_sha256(name), got
        else:
            data = fmt.encode(batch)
            out.write_atomic(name, data)
            main, companions = (len(data), hashlib.sha256(data).hexdigest()), fmt.companion_bytes(batch)
    except fmt.record_errors as exc:
        raise SchemaMismatchError(f"cannot encode a {fmt.name} shard: {exc}") from exc
    return ShardInfo(name, fmt.length(batch), *main, _write_companions(out, name, companions))


def _write_stage(out: OutputDir, name: str, fmt: ShardFormat, batch) -> tuple[int, str]:
    if out.local:
        out.write_local_atomic(name, lambda path: fmt.write_stage(batch, path))
        return out.size_and_sha256(name)
    data = fmt.encode_stage(batch)
    out.write_atomic(name, data)
    return len(data), hashlib.sha256(data).hexdigest()


def _write_companions(out: OutputDir, name: str, companions: dict) -> list[FileInfo]:
    stem, infos = name[: name.rindex(".")], []
    for suffix, data in sorted(companions.items()):
        out.write_atomic(stem + suffix, data)
        infos.append(FileInfo(stem + suffix, len(data), hashlib.sha256(data).hexdigest()))
    return infos


def rewrite_shard(spec: WriteSpec, info: ShardInfo, schema) -> ShardInfo:
    """Write a full shard again with ``schema`` (a wider one than it has)."""
    fmt = spec.new_format(schema)
    return write_shard(spec.out, info.file, fmt, fmt.decode(ShardFile(spec.out, info.file)))


def merge_shard(spec: WriteSpec, slices: list, name: str, schema) -> ShardInfo:
    """One shard of the staged leftovers ``slices`` (``(file, start, stop)``, in order)."""
    fmt = spec.new_format(schema)
    stages = [(spec.out.read_bytes(f), a, b) for f, a, b in slices]
    data = fmt.merge_stages(stages)
    if data is not None:  # the format joins the staged bytes itself
        spec.out.write_atomic(name, data)
        return ShardInfo(name, sum(b - a for _, a, b in stages), len(data), hashlib.sha256(data).hexdigest())
    parts = [fmt.slice(fmt.decode_stage(d), a, b) for d, a, b in stages]
    return write_shard(spec.out, name, fmt, fmt.concat(parts))
