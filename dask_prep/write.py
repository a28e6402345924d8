"""write_shards: orchestrate a run over any bag (prepare, lock, resume, execute, commit)."""
from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable

import dask.bag as db

from .commit import EarlyMerges, Merged, check_errors, commit, raise_fatal, redo_conflicts
from .convert import CONVERT_PREFIX
from .errors import OutputExistsError
from .execute import execute
from .formats import get_format
from .lock import LOCK, RunLock
from .output import ERRORS, MANIFEST, WORK, OutputDir, check_writable, read_manifest
from .shard import ON_ERROR, PartResult, WriteSpec, load_marker, write_tasks

__all__ = ["write_shards"]

logger = logging.getLogger(__name__)


def _fingerprint(bag: db.Bag, fmt: str, shard_size: int, schema) -> str:
    ident = {"bag": bag.name, "npartitions": bag.npartitions, "format": fmt,
             "shard_size": shard_size, "schema": str(schema) if schema is not None else None,
             "layout": 1}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def _prepare(out: OutputDir, fingerprint: str, overwrite: bool) -> dict | None:
    """Make ``out`` ready; return the existing manifest when this exact job is complete."""
    if out.exists(MANIFEST):
        try:
            old = read_manifest(out)
        except Exception:
            old = {}
        if old.get("fingerprint") == fingerprint and not overwrite:
            return old
        if not overwrite:
            raise OutputExistsError(
                f"{out.url} already holds a dask-prep dataset made from other inputs or options; "
                "choose another directory or pass --overwrite to replace it")
        out.remove(MANIFEST)
        for s in old.get("shards", []):
            out.remove(s["file"])
        out.remove(ERRORS)
    if out.exists(f"{WORK}/run.json"):
        try:
            previous = json.loads(out.read_bytes(f"{WORK}/run.json")).get("fingerprint")
        except ValueError:
            previous = None
        if previous != fingerprint:
            if not overwrite:
                raise OutputExistsError(
                    f"{out.url} holds an unfinished run with other inputs or options; "
                    "run that command again to resume it, or pass --overwrite to start afresh")
            for name in out.listdir(WORK):
                if f"{WORK}/{name}" != LOCK:
                    out.remove(f"{WORK}/{name}")
    out.write_json(f"{WORK}/run.json", {"fingerprint": fingerprint})
    return None


def _finished_parts(out: OutputDir, n: int) -> dict[int, PartResult]:
    names = set(out.listdir(WORK))
    found = (load_marker(out, i) for i in range(n) if f"p{i:05d}.json" in names)
    return {res.index: res for res in found if res is not None}


def write_shards(bag: db.Bag, output, *, shard_size: int = 10_000, format: str = "parquet",
                 schema=None, on_error: str = "skip", overwrite: bool = False,
                 storage_options: dict | None = None, metadata: dict | None = None,
                 max_errors: int | None = None, on_partition: Callable | None = None) -> dict:
    """Write the records of ``bag`` to ``output`` as exact shards; return the manifest.

    Every shard holds exactly ``shard_size`` records except the last one. The
    work runs on the current Dask client if there is one (else on Dask's default
    scheduler); records never reach this process.

    Parameters
    ----------
    bag
        Any :class:`dask.bag.Bag` of records (dicts for Parquet).
    output
        A local folder or fsspec URL.
    format
        ``"parquet"`` (default) or ``"pickle"`` (one ``pickle.dump`` of a list per shard).
    schema
        A :class:`pyarrow.Schema` for Parquet; inferred and unified when omitted.
    on_error
        ``"skip"``: failed sources and records that do not fit the schema are left
        out and listed in ``errors.jsonl``. ``"raise"``: the first one stops the run.
    overwrite
        Allow a folder holding files dask-prep did not write (they are never
        deleted), or replace an earlier dataset.
    metadata
        Extra manifest fields (``run`` passes ``sources`` and ``converter``).
    max_errors
        Stop with :class:`~dask_prep.errors.TooManyErrorsError` as soon as more
        than this many sources have failed (bad items inside a source, reported
        with a line number, do not count). Finished partitions are kept, so the
        same call with a higher limit resumes.
    on_partition
        Called with each :class:`PartResult` as partitions finish (progress).

    Examples
    --------
    >>> import dask.bag as db, dask_prep as dp, tempfile
    >>> out = tempfile.mkdtemp()
    >>> bag = db.from_sequence([{"x": i} for i in range(25)], npartitions=3)
    >>> m = dp.write_shards(bag, out, shard_size=10, overwrite=True)
    >>> [s["records"] for s in m["shards"]]
    [10, 10, 5]
    """
    if not isinstance(shard_size, int) or isinstance(shard_size, bool) or shard_size < 1:
        raise ValueError(f"shard_size must be a positive integer, not {shard_size!r}")
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, not {on_error!r}")
    get_format(format, schema)  # validates format and schema early
    t0 = time.perf_counter()
    out = OutputDir(output, storage_options)
    fingerprint = _fingerprint(bag, format, shard_size, schema)
    check_writable(out, overwrite)
    with RunLock(out):
        existing = _prepare(out, fingerprint, overwrite)
        if existing is not None:
            logger.info("%s is already complete; nothing to do", out.url)
            return existing
        return _write(bag, out, fingerprint, format, shard_size, schema, on_error, metadata,
                      max_errors, on_partition, t0)


def _write(bag, out, fingerprint, format, shard_size, schema, on_error, metadata, max_errors,
           on_partition, t0) -> dict:
    layers = tuple(k for k in bag.dask.layers if k.startswith(CONVERT_PREFIX))
    spec = WriteSpec(out, format, shard_size, schema, on_error, layers)
    n = bag.npartitions
    done = _finished_parts(out, n)
    if done:
        logger.info("resuming: %d of %d partitions were already done", len(done), n)
    parts = write_tasks(bag, spec)
    todo = [i for i in range(n) if i not in done]
    early, merged = EarlyMerges(spec), {}

    def record(result):
        if isinstance(result, Merged):
            merged[result.k] = result
            return []
        res = result[0]
        raise_fatal(res)
        done[res.index] = res
        if max_errors is not None:
            check_errors(out, [done[i] for i in sorted(done)], max_errors)
        if on_partition:
            on_partition(res, len(done), n)
        return early.ready(done) if len(done) < n else []

    if max_errors is not None:
        check_errors(out, [done[i] for i in sorted(done)], max_errors)
    execute([parts[i] for i in todo], record)
    t_commit = time.perf_counter()
    if redo_conflicts(bag, spec, done):
        merged = {}  # their slices may have moved
    results = [done[i] for i in range(n)]
    manifest = commit(spec, results, fingerprint, merged)
    manifest.update(metadata or {})
    t_end = time.perf_counter()
    manifest["run"] = {"elapsed_seconds": round(t_end - t0, 3),
                       "commit_seconds": round(t_end - t_commit, 3),
                       "resumed_partitions": n - len(todo)}
    out.write_json(MANIFEST, manifest)
    out.remove(WORK)
    return manifest
