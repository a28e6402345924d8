"""The write job: one owner for writing a bag to a folder, from start to manifest.

:class:`WriteJob` runs the stages in order: prepare the folder (lock it, check
what it holds, decide whether this is a resume), take the partitions already
finished, run the rest (merging leftovers into shards as soon as their place
is known), redo the partitions whose types clash with earlier ones, and
commit. Each finished partition costs the client constant work, however many
there are.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import dask
import dask.bag as db

from ..ingest.sources import Sources
from .._version import __version__
from ..errors import (ConversionError, EmptyDatasetError, ManifestError, OutputExistsError,
                      SchemaMismatchError)
from ..options import WriteOptions, split
from ..runtime.execute import execute
from ..runtime.graph import conversion_layers, fused_tasks, is_conversion
from ..runtime.shipping import shippable
from . import commit
from .formats import format_class, shard_file_pattern
from .lock import LOCK, RunLock
from .manifest import VERSION, Manifest
from .output import ERRORS, EXCLUDED, MANIFEST, OLD_SOURCES, WORK, OutputDir, check_writable
from .partition import write_partition
from .results import PartResult, ShardInfo, load_marker
from .sources_file import SOURCES, read_sources, source_changes, write_sources
from .schema import schema_to_json
from .shards import WriteSpec, merge_shard, rewrite_shard

__all__ = ["write_shards", "WriteJob"]

logger = logging.getLogger(__name__)

RUN_STATE = f"{WORK}/run.json"


def write_shards(bag: db.Bag, output, *, options: WriteOptions | None = None,
                 storage_options: dict | None = None, metadata: dict | None = None,
                 sources: int | None = None, on_partition: Callable | None = None,
                 **fields) -> Manifest:
    """Write the records of ``bag`` to ``output`` as exact shards; return the manifest.

    Every shard holds exactly ``shard_size`` records except the last one. The
    work runs on the current Dask client if there is one (else on Dask's default
    scheduler); records never reach this process.

    Parameters
    ----------
    bag
        Any :class:`dask.bag.Bag` of records (dicts for Parquet).
    output
        A local folder or fsspec URL (``storage_options`` for fsspec).
    options, **fields
        A :class:`~dask_prep.options.WriteOptions`, or its fields as keywords:
        ``format`` (``"parquet"``, ``"pickle"`` or a registered format),
        ``shard_size`` (10,000), ``schema`` (a :class:`pyarrow.Schema`; inferred
        and unified when omitted), ``on_error`` (``"skip"``: sources whose
        records do not fit are left out and listed in ``.errors.jsonl``;
        ``"raise"``: the first one stops the run), ``overwrite`` (allow a
        folder holding other files, never deleting them, or replace an earlier
        dataset), ``max_errors`` (stop with
        :class:`~dask_prep.errors.TooManyErrorsError` as soon as more sources
        failed; finished partitions are kept, so a higher limit resumes).
    metadata
        Extra manifest fields (``run`` passes ``sources`` and ``converter``).
    sources
        How many sources the bag converts, for a ``max_errors`` fraction.
    on_partition
        Called with each :class:`~dask_prep.write.results.PartResult`, the
        number done and the total, as partitions finish (progress).

    Examples
    --------
    >>> import dask.bag as db, dask_prep as dp, tempfile
    >>> out = tempfile.mkdtemp()
    >>> bag = db.from_sequence([{"x": i} for i in range(25)], npartitions=3)
    >>> m = dp.write_shards(bag, out, shard_size=10, overwrite=True)
    >>> [s["records"] for s in m["shards"]]
    [10, 10, 5]
    """
    (opts,) = split(fields, WriteOptions, given={WriteOptions: options} if options else None)
    job = WriteJob(bag, OutputDir(output, storage_options), opts, metadata=metadata,
                   sources=sources, on_partition=on_partition)
    return job.run()


def _sha256(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=True).encode()).hexdigest()


def partition_keys(bag: db.Bag) -> tuple[str, list[str]]:
    """What the bag is (the converter and options) and what each partition is made from.

    For a bag straight from :func:`dask_prep.to_bag` both are dask-prep's own
    sha256 (:func:`~dask_prep.ingest.convert.bag_of`): the converter's
    identity, and per partition its pieces with each source's size and
    modification stamp; never Dask's ``tokenize``, whose hashes change with
    the packages installed. Any other bag is known only by Dask's key names.
    """
    layers = conversion_layers(bag)
    if is_conversion(bag) and len(layers[bag.name].get("partitions", ())) == bag.npartitions:
        meta = layers[bag.name]
        return meta["identity"], list(meta["partitions"])
    return bag.name, [_sha256([bag.name, i]) for i in range(bag.npartitions)]


def job_fingerprint(bag: db.Bag, opts: WriteOptions) -> tuple[str, str, list[str]]:
    """``(command, dataset, keys)``: the sha256 of what makes two writes the same
    command (the bag's converter and the write options), of
    the dataset that command makes from today's sources, and the partition keys.

    A resume keeps the finished partitions whose key is unchanged; a complete
    dataset is returned as it is only when the dataset fingerprint matches.
    """
    identity, keys = partition_keys(bag)
    what = {"bag": identity, "format": opts.format, "shard_size": opts.shard_size, "layout": VERSION,
            "schema": str(opts.schema) if opts.schema is not None else None}
    if opts.format_options:  # absent when empty: earlier datasets keep their fingerprint
        what["format_options"] = opts.format_options
    command = _sha256(what)
    return command, _sha256([command, keys]), keys


@dataclass
class _Merged:
    """A merge of leftovers done while partitions were still converting."""

    k: int
    slices: list
    schema: object
    info: ShardInfo


def _merge_early(spec: WriteSpec, k: int, slices: list, schema) -> _Merged:
    name = f"{WORK}/m{k:05d}{spec.new_format(schema).suffix}"
    return _Merged(k, slices, schema, merge_shard(spec, slices, name, schema))


class _EarlyMerges:
    """Merge leftovers into full shards as soon as their place in the dataset is known.

    Merged shard ``k`` is fixed once the partitions whose leftovers fill it,
    and all partitions before them, are done; merging it then, while other
    partitions still convert, keeps the end of the run short. The merge uses
    the schema of the partitions done so far; commit redoes it if the final
    schema differs (or partitions were redone). Constant work per partition.
    """

    def __init__(self, spec: WriteSpec):
        self.spec, self.fmt = spec, spec.new_format()
        self.plan, self.next = commit.MergePlan(spec.shard_size), 0
        self.schema, self.clash = spec.schema, False

    def ready(self, res: PartResult, done: dict) -> list:
        """Delayed merges that became possible now that ``res`` is done."""
        self._note(res)
        full = []
        while self.next in done:
            self._note(done[self.next])  # (done before res, in an earlier attempt: not seen yet)
            full += self.plan.add(done[self.next].remainder)
            self.next += 1
        if self.clash:
            return []
        return [dask.delayed(_merge_early)(self.spec, k, self.plan.groups[k], self.schema) for k in full]

    def _note(self, res: PartResult) -> None:
        """The schema of the partitions seen so far (a merge's records need it)."""
        if self.fmt.has_schema and self.spec.schema is None and res.schema is not None \
                and res.schema != self.schema:
            self.schema = commit.unify_or_none(self.fmt, [s for s in (self.schema, res.schema) if s])
            self.clash = self.clash or self.schema is None  # commit redoes what clashes


def killed_partition(exc: BaseException) -> int | None:
    """The partition whose write task ``exc`` (Dask's ``KilledWorker``) names."""
    if type(exc).__name__ != "KilledWorker":
        return None
    key = getattr(exc, "task", None)
    if isinstance(key, tuple) and len(key) == 2 and str(key[0]).startswith("dask-prep-write-") \
            and isinstance(key[1], int):
        return key[1]
    return None


def _raise_fatal(res: PartResult) -> None:
    if res.fatal:
        kind, message = res.fatal
        raise {"ConversionError": ConversionError}.get(kind, SchemaMismatchError)(message)


def _dataset_files(m: Manifest) -> list[str]:
    """Every file of the complete dataset ``m``: its manifest first, then its
    shards, its format's dataset files, its error list and its list of sources."""
    names = [m.name, *m.files, *format_class(m.format).dataset_files, m.errors_file]
    if m.get("sources", {}).get("file") in (SOURCES, OLD_SOURCES):
        names.append(m["sources"]["file"])
    if m.get("sources", {}).get("excluded_file") == EXCLUDED:
        names.append(EXCLUDED)
    return names


class WriteJob:
    """Write one bag to one folder: prepare, resume, run, redo, commit."""

    def __init__(self, bag: db.Bag, out: OutputDir, opts: WriteOptions, *,
                 metadata: dict | None = None, sources: int | None = None,
                 on_partition: Callable | None = None, source_files: Sources | None = None,
                 isolate: Callable | None = None):
        self.bag, self.out, self.opts = bag, out, opts
        self.isolate, self.attempt = isolate, 0
        self.source_files = source_files
        self.metadata, self.on_partition = metadata or {}, on_partition
        self.limit = opts.error_limit(sources) if (sources is not None or opts.max_errors is not None) else None
        self.command, self.fingerprint, self.keys = job_fingerprint(bag, opts)
        self.spec = WriteSpec(out, opts.format, opts.shard_size, opts.schema, opts.on_error,
                              tuple(conversion_layers(bag)),
                              format_class=shippable(format_class(opts.format)),
                              format_options=tuple(sorted(opts.format_options.items())))
        self.n = bag.npartitions
        self.done: dict[int, PartResult] = {}
        self.merged: dict[int, _Merged] = {}
        self.failed = 0
        self.t0 = time.perf_counter()

    def run(self) -> Manifest:
        check_writable(self.out, self.opts.overwrite)
        with RunLock(self.out) as self.lock:
            existing = self._prepare()
            commit.remove_temporaries(self.out)
            self.already_complete = existing is not None
            if existing is not None:
                logger.info("%s is already complete; nothing to do", self.out.url)
                self.out.remove_work(keep=LOCK)  # left by a run killed after its manifest
                return existing
            commit.undo_renames(self.out)  # a commit killed part way: its shards go back
            self._resume()
            self._convert_isolating()
            t_commit = time.perf_counter()
            self._redo_conflicts()
            return self._commit(t_commit)

    # -- prepare and resume -----------------------------------------------------

    def _prepare(self) -> Manifest | None:
        """Make the folder ready; return the existing manifest when this exact job is complete.

        Only files dask-prep can show it wrote are ever replaced or deleted: the
        files a valid manifest lists, and those an unfinished run recorded in
        :data:`~dask_prep.write.commit.OWNED` before writing them. Any other file
        bearing one of dask-prep's names stops the run, untouched.
        """
        out, overwrite = self.out, self.opts.overwrite
        old = self._old_manifest()
        if (old is not None and old.fingerprint == self.fingerprint and old["version"] == VERSION
                and not overwrite):
            return old
        if old is not None and not overwrite:
            raise OutputExistsError(self._why_not(old))
        owned = set(commit.claimed(out)) | (set(_dataset_files(old)) if old is not None else set())
        self._refuse_foreign(owned)
        if old is not None:  # --overwrite: the manifest goes first, so no one sees half a dataset
            commit.claim(out, _dataset_files(old))
            for name in _dataset_files(old):
                out.remove(name)
        if out.exists(RUN_STATE):
            try:
                previous = json.loads(out.read_bytes(RUN_STATE)).get("command")
            except ValueError:
                previous = None
            if previous != self.command:
                if not overwrite:
                    raise OutputExistsError(
                        f"{out.url} holds an unfinished run with other inputs or options; "
                        "run that command again to resume it, or pass --overwrite to start afresh")
                for name in commit.claimed(out):  # what its commit had renamed or written
                    out.remove(name)
                for name in out.listdir(WORK):
                    if f"{WORK}/{name}" != LOCK:
                        out.remove(f"{WORK}/{name}")
        out.write_json(RUN_STATE, {"command": self.command, "fingerprint": self.fingerprint})
        return None

    def _old_manifest(self) -> Manifest | None:
        """The folder's valid manifest, ``None`` if it has none; a manifest that is not
        valid stops the run (nothing it names can be trusted to be dask-prep's)."""
        if Manifest.name_in(self.out) is None:
            return None
        try:
            return Manifest.read(self.out)
        except ManifestError as exc:
            raise OutputExistsError(
                f"{exc}; dask-prep replaces or deletes only what a valid manifest lists: "
                "repair it, or remove the dataset yourself") from None

    def _refuse_foreign(self, owned: set) -> None:
        """Stop at a file bearing one of dask-prep's names that it did not write."""
        fixed = {MANIFEST, ERRORS, SOURCES, EXCLUDED, *format_class(self.opts.format).dataset_files}
        shard = shard_file_pattern()
        for name in self.out.listdir():
            if (name in fixed or shard.match(name)) and name not in owned:
                raise OutputExistsError(
                    f"{self.out.path(name)} was not written by dask-prep (no manifest or unfinished "
                    f"run in {self.out.url} lists it); move it away: dask-prep never overwrites or "
                    "deletes a file it did not write")

    def _why_not(self, old: Manifest) -> str:
        """The one line that refuses to replace a complete dataset."""
        url = self.out.url
        if old["version"] < VERSION:
            return (f"{url} holds a dask-prep dataset of layout version {old['version']} "
                    f"({old.name}); pass --overwrite to write it again as version {VERSION}")
        if old.get("command") != self.command:
            return (f"{url} already holds a dask-prep dataset made from other inputs or options; "
                    "choose another directory or pass --overwrite to replace it")
        what = "its sources changed since"
        if self.source_files is not None:
            change = source_changes(read_sources(self.out, old), self.source_files)
            what = f"its sources changed since: {change.describe()}" if change else what
        return (f"{url} is a complete dataset, but {what}; pass --overwrite to rebuild it from "
                f"the sources as they are now ('dask-prep verify --sources {url}' lists the changes)")

    def _resume(self) -> None:
        names = set(self.out.listdir(WORK))
        markers = [i for i in range(self.n) if f"p{i:05d}.json" in names]
        found = (load_marker(self.out, i, self.keys[i]) for i in markers)
        self.done = {res.index: res for res in found if res is not None}
        if len(self.done) < len(markers):
            logger.warning("%d finished partition(s) are converted again: their sources changed "
                           "since the interrupted run", len(markers) - len(self.done))
        if self.done:
            logger.info("resuming: %d of %d partitions were already done", len(self.done), self.n)
        self.failed = sum(r.failed_sources for r in self.done.values())
        self._check_errors()

    # -- run ------------------------------------------------------------------------

    def _convert_isolating(self) -> None:
        """Convert; when a partition's task kills its workers (Dask's
        ``KilledWorker``), ask ``isolate(index)`` for the bag to go on with (its
        sources that kill a worker on their own become their errors) and
        convert again: the partitions done are kept, the rest completes."""
        while True:
            try:
                return self._convert()
            except Exception as exc:
                index = killed_partition(exc)
                bag = self.isolate(index) if index is not None and self.isolate else None
                if bag is None:
                    raise
                logger.info("partition %d killed its workers: its sources were isolated", index)
                self._use(bag)

    def _use(self, bag: db.Bag) -> None:
        """Go on with ``bag``: the same partitions and keys, new task names."""
        self.bag, self.attempt = bag, self.attempt + 1
        self.spec = replace(self.spec, conversion_layers=tuple(conversion_layers(bag)))

    def _tasks(self, spec: WriteSpec) -> list:
        name = "dask-prep-write-" + hashlib.sha256(
            f"{self.fingerprint}{spec.schema}{spec.schema_is_hint}{self.attempt}".encode()).hexdigest()[:32]
        return fused_tasks(self.bag, write_partition, name, [(i, self.keys[i]) for i in range(self.n)], spec)

    def _convert(self) -> None:
        todo = [i for i in range(self.n) if i not in self.done]
        if not self.attempt:  # (on a later attempt, done in this run)
            self.resumed = self.n - len(todo)
        self.early = _EarlyMerges(self.spec)
        merges = [t for i in sorted(self.done) for t in self.early.ready(self.done[i], self.done)]
        tasks = self._tasks(self.spec)
        if todo:
            execute(merges + [tasks[i] for i in todo], self._finished)

    def _finished(self, result) -> list:
        """One partition (or early merge) finished: constant work, more tasks maybe."""
        if isinstance(result, _Merged):
            self.merged[result.k] = result
            return []
        _raise_fatal(result)
        self.done[result.index] = result
        self.failed += result.failed_sources
        self._check_errors()
        if self.on_partition:
            self.on_partition(result, len(self.done), self.n)
        return self.early.ready(result, self.done) if len(self.done) < self.n else []

    def _check_errors(self) -> None:
        if self.limit is not None and self.failed > self.limit:
            raise commit.too_many_errors(self.out, self._results_so_far(), self.limit)

    def _results_so_far(self) -> list[PartResult]:
        return [self.done[i] for i in sorted(self.done)]

    def _redo_conflicts(self) -> None:
        """Redo the partitions whose records' types clash with earlier partitions'.

        Within a partition a clashing source is dropped as it arrives; across
        partitions the clash shows only now. Walking the partitions in order, the
        first schema wins (deterministic); each clashing partition is converted
        again starting from it, so only its offending sources are dropped.
        """
        fmt = self.spec.new_format()
        if not fmt.has_schema or self.spec.schema is not None:
            return
        accumulated, redo = None, []
        for i in range(self.n):
            schema = self.done[i].schema
            if schema is None:
                continue
            try:
                accumulated = schema if accumulated is None else fmt.unify([accumulated, schema])
            except SchemaMismatchError:
                redo.append(i)  # with on_error="raise", the redo stops at the source, by name
        if not redo:
            return
        logger.info("redoing %d partition(s) whose types clash with earlier ones", len(redo))
        tasks = self._tasks(replace(self.spec, schema=accumulated, schema_is_hint=True))
        for res in execute([tasks[i] for i in redo]):
            _raise_fatal(res)
            self.done[res.index] = res
        self.merged = {}  # their slices may have moved

    # -- commit -----------------------------------------------------------------------

    def _commit(self, t_commit: float) -> Manifest:
        results = [self.done[i] for i in range(self.n)]
        if not self.opts.allow_empty and not any(r.records for r in results):
            failed = sum(r.failed_sources for r in results)
            raise EmptyDatasetError(
                f"no records: the sources gave none ({failed:,} failed); nothing was written to "
                f"{self.out.url} (pass --allow-empty to write an empty dataset)")
        fmt = self.spec.new_format()
        schema = commit.final_schema(fmt, self.spec.schema, results)
        full = [s for r in results for s in r.shards]
        stale = commit.stale_shards(fmt, results, schema)
        groups = commit.plan_merges(results, self.spec.shard_size)
        merged = {k: m.info for k, m in self.merged.items()
                  if k < len(groups) and m.slices == groups[k] and m.schema == schema}
        todo = [k for k in range(len(groups)) if k not in merged]
        tasks = [dask.delayed(rewrite_shard)(self.spec, full[i], schema) for i in stale]
        tasks += [dask.delayed(merge_shard)(self.spec, groups[k], f"{WORK}/m{k:05d}{fmt.suffix}", schema)
                  for k in todo]
        new = execute(tasks)
        for i, info in zip(stale, new):
            full[i] = info
        merged.update(zip(todo, new[len(stale):]))
        return self._write_dataset(fmt, full + [merged[k] for k in range(len(groups))], results,
                                   schema, t_commit)

    def _write_dataset(self, fmt, shards: list[ShardInfo], results: list, schema, t_commit: float,
                       **fields) -> Manifest:
        """Give the shards their final names, write the dataset's other files, delete
        what an earlier dataset or interrupted run left, and write the manifest (with
        ``fields`` added) last. Every name is claimed before it is written."""
        commit.claim(self.out, [ERRORS, *fmt.dataset_files,
                                *([SOURCES, EXCLUDED] if self.source_files is not None else [])])
        entries = commit.rename_shards(self.out, shards, fmt.suffix)
        error_types = commit.write_errors(self.out, results)
        format_info = fmt.finalize(self.out, entries)
        if self.source_files is not None:
            self.metadata.setdefault("sources", {}).update(write_sources(self.out, self.source_files))
        keep = {f for s in entries for f in (s["file"], *(c["file"] for c in s.get("companions", ())))}
        keep |= {ERRORS, *fmt.dataset_files, *([SOURCES] if self.source_files is not None else []),
                 *([EXCLUDED] if getattr(self.source_files, "excluded_files", ()) else [])}
        for name in commit.claimed(self.out):  # an earlier dataset's or interrupted run's leftovers
            if name not in keep:
                self.out.remove(name)
        t_end = time.perf_counter()
        fopts = self.opts.format_options
        manifest = Manifest({
            "version": VERSION, "format": self.opts.format, "shard_size": self.opts.shard_size,
            "total_records": sum(s["records"] for s in entries), "shards": entries,
            "schema": schema_to_json(schema), "errors": sum(error_types.values()),
            "error_types": error_types, "partitions": self.n, "fingerprint": self.fingerprint,
            "command": self.command,
            **({"format_options": fopts} if fopts else {}),
            **({"format_info": format_info} if format_info else {}),
            "created_by": f"dask-prep {__version__}", **self.metadata, **fields,
            "run": {"elapsed_seconds": round(t_end - self.t0, 3),
                    "commit_seconds": round(t_end - t_commit, 3),
                    "resumed_partitions": self.resumed},
        }, self.out.path(MANIFEST))
        self.lock.check()  # still this run's folder: no run took the lock over
        manifest.write(self.out)
        self.out.remove_work(keep=LOCK)  # the lock goes last, when the run lets it go
        return manifest
