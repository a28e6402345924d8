"""Commit: the pure work that turns finished partitions into the final dataset.

Plan the merge of the leftovers into full shards, pick the final schema and
the full shards that must be written again with it, then rename everything to
its final name, write ``.errors.jsonl`` and build the manifest's fields. The
write job (:mod:`dask_prep.write.job`) runs the merges on the workers and
writes the manifest last.

>>> from dask_prep.write.results import PartResult, ShardInfo
>>> rem = lambda n: ShardInfo("r", n, 0, "")
>>> plan_merges([PartResult(0, remainder=rem(3)), PartResult(1, remainder=rem(4))], 5)
[[('r', 0, 3), ('r', 0, 2)], [('r', 2, 4)]]
"""
from __future__ import annotations

import json
from collections import Counter

from ..errors import SchemaMismatchError, TooManyErrorsError
from .formats import ShardFormat
from .formats import dataset_file_names, shard_file_pattern
from .output import (ERRORS, EXCLUDED, MANIFEST, OLD_ERRORS, OLD_MANIFEST, OLD_SOURCES, SOURCES,
                     TEMPORARY, WORK, OutputDir)
from .results import PartResult, ShardInfo

__all__ = ["MergePlan", "plan_merges", "final_schema", "stale_shards", "rename_shards", "undo_renames",
           "remove_temporaries", "write_errors", "too_many_errors", "claim", "claimed", "OWNED", "RENAMES"]

#: The names in the folder's root that a run wrote (or took over from the dataset
#: it replaces) and that no manifest lists yet, recorded before they are written:
#: what a later run may reuse, replace or remove, and nothing else.
OWNED = f"{WORK}/owned.json"

#: The ``[work name, final name]`` renames a commit is about to do, recorded
#: before the first: a run resuming after a kill puts back what was renamed.
RENAMES = f"{WORK}/renames.json"


class MergePlan:
    """Groups of leftovers that fill one shard each, planned as partitions come
    in order: :meth:`add` takes the next partition's leftovers and returns the
    groups it completed."""

    def __init__(self, shard_size: int):
        self.shard_size, self.groups, self.current, self.size = shard_size, [], [], 0

    def add(self, remainder: ShardInfo | None) -> list[int]:
        done, start, count = [], 0, remainder.records if remainder else 0
        while start < count:
            take = min(self.shard_size - self.size, count - start)
            self.current.append((remainder.file, start, start + take))
            self.size, start = self.size + take, start + take
            if self.size == self.shard_size:
                self.groups.append(self.current)
                done.append(len(self.groups) - 1)
                self.current, self.size = [], 0
        return done

    def all_groups(self) -> list[list[tuple]]:
        """Every group, the last partial one included (once all partitions are in)."""
        return self.groups + ([self.current] if self.current else [])


def plan_merges(results: list[PartResult], shard_size: int) -> list[list[tuple]]:
    """``(file, start, stop)`` slices of each merged shard, in partition order."""
    plan = MergePlan(shard_size)
    for r in results:
        plan.add(r.remainder)
    return plan.all_groups()


def final_schema(fmt: ShardFormat, given, results: list[PartResult]):
    """The given schema, or the partitions' schemas unified (formats that have one)."""
    if not fmt.has_schema or given is not None:
        return given
    return fmt.unify([r.schema for r in results if r.schema is not None])


def stale_shards(fmt: ShardFormat, results: list[PartResult], schema) -> list[int]:
    """Positions (among all full shards, in order) of the ones written with
    another schema than ``schema``: they are written again with it."""
    if not fmt.has_schema:
        return []
    owners = [r.schema for r in results for _ in r.shards]
    return [i for i, s in enumerate(owners) if s != schema]


def _own_work_name(name) -> bool:
    return (isinstance(name, str) and name.startswith(f"{WORK}/") and "/" not in name[len(WORK) + 1:]
            and name[len(WORK) + 1:] not in ("", ".", ".."))


def _own_root_name(name) -> bool:
    fixed = {MANIFEST, ERRORS, SOURCES, EXCLUDED, OLD_MANIFEST, OLD_ERRORS, OLD_SOURCES, *dataset_file_names()}
    return isinstance(name, str) and (name in fixed or bool(shard_file_pattern().match(name)))


def claimed(out: OutputDir) -> list[str]:
    """The root names an unfinished run recorded as its own (see :data:`OWNED`);
    anything that is not a name dask-prep writes is ignored."""
    try:
        names = json.loads(out.read_bytes(OWNED))
    except (FileNotFoundError, ValueError, UnicodeDecodeError):
        return []
    return [n for n in names if _own_root_name(n)] if isinstance(names, list) else []


def claim(out: OutputDir, names) -> None:
    """Record ``names`` as this run's own before writing (or taking over) them."""
    have = claimed(out)
    new = have + [n for n in dict.fromkeys(names) if n not in have]
    if new != have:
        out.write_json(OWNED, new)


def rename_shards(out: OutputDir, shards: list[ShardInfo], suffix: str) -> list[dict]:
    """Give every shard its final name, in order; the manifest's shard entries.

    A shard whose file is gone was renamed by an earlier, interrupted commit.
    The final names are claimed (:data:`OWNED`) before the first rename.
    """
    entries = [info.entry(f"shard-{k:05d}{suffix}") for k, info in enumerate(shards)]
    moves = [(src, dst) for info, entry in zip(shards, entries)
             for src, dst in zip(info.files(), [entry["file"], *(c["file"] for c in entry.get("companions", ()))])]
    claim(out, [dst for _, dst in moves])
    out.write_json(RENAMES, moves)
    for src, dst in moves:
        if out.exists(src):
            out.replace(src, dst)
    return entries


def undo_renames(out: OutputDir) -> int:
    """Put the files an interrupted commit had renamed back into the work folder,
    so that a resume finds its finished partitions whole; how many were moved.
    Only moves between names dask-prep writes are followed."""
    try:
        moves = json.loads(out.read_bytes(RENAMES))
    except (FileNotFoundError, ValueError, UnicodeDecodeError):
        return 0
    undone = 0
    for move in moves if isinstance(moves, list) else ():
        if (isinstance(move, list) and len(move) == 2 and _own_work_name(move[0])
                and _own_root_name(move[1]) and not out.exists(move[0]) and out.exists(move[1])):
            out.replace(move[1], move[0])
            undone += 1
    out.remove(RENAMES)
    return undone


def remove_temporaries(out: OutputDir) -> None:
    """Delete the temporary files that a write killed before its rename left in
    the folder's root (only those of names dask-prep writes)."""
    for name in out.listdir():
        m = TEMPORARY.fullmatch(name)
        if m and _own_root_name(m.group(1)):
            out.remove(name)


def write_errors(out: OutputDir, results: list[PartResult]) -> dict[str, int]:
    """Write ``.errors.jsonl``; return how many errors of each type it lists."""
    errors = sorted((e for r in results for e in r.errors), key=lambda e: (e.path, e.line or 0))
    out.write_atomic(ERRORS, "".join(json.dumps(e.to_dict()) + "\n" for e in errors).encode())
    return dict(sorted(Counter(e.error for e in errors).items(), key=lambda kv: (-kv[1], kv[0])))


def too_many_errors(out: OutputDir, results: list[PartResult], limit: int) -> TooManyErrorsError:
    """The error to stop with (after writing ``.errors.jsonl``) when more than ``limit`` sources failed."""
    claim(out, [ERRORS])
    write_errors(out, results)
    failed = [e for r in results for e in r.errors if e.line is None]
    first = failed[0]
    return TooManyErrorsError(
        f"{len(failed)} sources failed, more than max_errors={limit} (first: {first.path}: "
        f"{first.error}: {first.message}); see {out.path(ERRORS)}. Finished partitions are kept: "
        "fix the inputs or converter, or allow more errors, and run again to resume")


def unify_or_none(fmt: ShardFormat, schemas: list):
    """The unified schema of ``schemas``, or ``None`` if they clash."""
    try:
        return fmt.unify(schemas)
    except SchemaMismatchError:
        return None
