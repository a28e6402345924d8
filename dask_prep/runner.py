"""Run: the whole job (discover, plan, convert, shard, commit) on a Dask cluster."""
from __future__ import annotations

import html
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from collections.abc import Callable
from dataclasses import dataclass, field

from .cluster import dask_session
from .convert import bag_of
from .converters import resolve_converter
from .output import OutputDir, check_writable
from .plan import plan_partitions
from .execute import ON_SUBMIT
from .write import write_shards
from .shard import fewer_collections
from .sources import Sources, discover

__all__ = ["run", "RunResult"]

logger = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a run produced; ``summary()`` is the one-screen report the CLI prints."""

    output: str
    manifest: dict
    sources: int
    missing: list = field(default_factory=list)
    excluded: int = 0
    elapsed: float = 0.0
    workers: int = 0
    dashboard_link: str | None = None

    @property
    def records(self) -> int:
        return self.manifest["total_records"]

    @property
    def shards(self) -> int:
        return len(self.manifest["shards"])

    @property
    def errors(self) -> int:
        return self.manifest["errors"]

    @property
    def records_per_second(self) -> float:
        return self.records / self.elapsed if self.elapsed else 0.0

    def rows(self) -> list[tuple[str, str]]:
        m = self.manifest
        rows = [
            ("output", self.output),
            ("sources", f"{self.sources:,} files ({m.get('sources', {}).get('bytes', 0):,} bytes)"),
            ("records", f"{self.records:,}"),
            ("shards", f"{self.shards:,} x {m['shard_size']:,} records ({m['format']})"),
            ("errors", describe_errors(m)),
            ("elapsed", f"{self.elapsed:.1f} s on {self.workers} worker(s)"),
            ("throughput", f"{self.records_per_second:,.0f} records/s"),
        ]
        if self.missing:
            shown = ", ".join(self.missing[:3]) + (" ..." if len(self.missing) > 3 else "")
            rows.insert(2, ("missing", f"{len(self.missing)} input(s) not found: {shown}"))
        if self.excluded:
            rows.insert(2, ("excluded", f"{self.excluded:,} files"))
        if m.get("run", {}).get("resumed_partitions"):
            rows.append(("resumed", f"{m['run']['resumed_partitions']} partition(s) were already done"))
        return rows

    def summary(self) -> str:
        width = max(len(k) for k, _ in self.rows())
        return "\n".join(f"{k:>{width}}  {v}" for k, v in self.rows())

    def _repr_html_(self) -> str:
        body = "".join(f"<tr><th style='text-align:right'>{html.escape(k)}</th>"
                       f"<td style='text-align:left'>{html.escape(v)}</td></tr>" for k, v in self.rows())
        return f"<table>{body}</table>"

    def __repr__(self) -> str:
        return (f"RunResult({self.records:,} records in {self.shards} shards, "
                f"{self.errors} errors, {self.elapsed:.1f}s)")


def describe_errors(manifest: dict) -> str:
    """``"32 (EmptyFileError 28, UnicodeDecodeError 4; see errors.jsonl)"``."""
    n = manifest["errors"]
    if not n:
        return "0"
    kinds = ", ".join(f"{k} {v:,}" for k, v in list(manifest.get("error_types", {}).items())[:4])
    return f"{n:,} ({kinds + '; ' if kinds else ''}see errors.jsonl)"


def _counting_sources(on_partition: Callable, parts: list) -> Callable:
    """Wrap the progress hook so each result says how many sources it covered."""
    counts = [sum(1 for piece in part if not piece.start) for part in parts]

    def hook(result, done, total):
        result.sources = counts[result.index]
        on_partition(result, done, total)
    return hook


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


@contextmanager
def _notebook_progress():
    """Show Dask's progress widget for the futures ``execute`` submits."""
    from distributed import progress

    def show(futures):
        try:
            from IPython.display import display
            display(progress(futures, notebook=True, multi=False))
        except Exception as exc:  # no ipywidgets: the run goes on without a widget
            logger.info("no progress widget: %s", exc)

    token = ON_SUBMIT.set(show)
    try:
        yield
    finally:
        ON_SUBMIT.reset(token)


def _error_limit(max_errors, nsources: int) -> int | None:
    if max_errors is None:
        return nsources - 1 if nsources else None
    if isinstance(max_errors, float):
        if not 0 <= max_errors <= 1:
            raise ValueError(f"max_errors as a fraction must be within 0..1, not {max_errors}")
        return int(max_errors * nsources)
    if max_errors < 0:
        raise ValueError(f"max_errors must be >= 0, not {max_errors}")
    return max_errors


def run(inputs, output, *, converter="text", format: str = "parquet", shard_size: int = 10_000,
        schema=None, exclude=None, suffixes=None, on_error: str = "skip",
        encoding_errors: str = "strict", partition_size: int | None = None,
        scheduler: str | None = None, workers: int | None = None, memory_limit="auto",
        client=None, overwrite: bool = False, storage_options: dict | None = None,
        max_errors: int | float | None = None, security=None, report: str | None = None,
        progress: bool | None = None, on_start: Callable | None = None, on_partition: Callable | None = None) -> RunResult:
    """Discover ``inputs``, convert every file on Dask, and write exact shards to ``output``.

    Runs on ``client`` if given, else on the cluster at ``scheduler``, else on the
    notebook's current client, else on a LocalCluster of ``workers`` processes
    started (on 127.0.0.1) for this run and closed after it, each worker with
    ``memory_limit`` (bytes or a string like ``"500MB"``). Other options are
    those of :func:`discover`, :func:`to_bag` and :func:`write_shards`.
    ``on_start(session, sources, npartitions)`` and ``on_partition(result, done,
    total)`` are progress hooks.

    ``security`` is a :class:`distributed.Security` for a TLS scheduler;
    ``report`` names an HTML file for Dask's performance report of the run;
    ``progress`` shows Dask's progress widget (default: inside a notebook only).

    ``max_errors`` stops the run when more sources than this fail: a count, or a
    fraction of the sources (``0.05``). By default the run fails only when every
    source failed, so a broken converter cannot leave an empty "complete" dataset.

    Running the same call again resumes an interrupted run, or returns at once
    when the dataset is already complete.
    """
    t0 = time.perf_counter()
    check_writable(OutputDir(output, storage_options), overwrite)  # before starting a cluster
    conv = resolve_converter(converter, encoding_errors=encoding_errors)
    with ExitStack() as stack:
        def prepare():
            with fewer_collections():  # one object (or more) per file
                sources = inputs if isinstance(inputs, Sources) else discover(
                    inputs, suffixes=suffixes, exclude=exclude, storage_options=storage_options)
                parts = plan_partitions(sources, partition_size=partition_size, splittable=conv.splittable)
                bag = bag_of(parts, conv, on_error=on_error,
                             storage_options=storage_options or sources.storage_options)
                return sources, sources.summary(), parts, bag

        with ThreadPoolExecutor(1) as pool:
            # find the files and plan the tasks while the cluster's worker processes start
            prepared = pool.submit(prepare)
            session = stack.enter_context(dask_session(
                client=client, scheduler=scheduler, workers=workers, memory_limit=memory_limit,
                security=security))
            sources, summary, parts, bag = prepared.result()
        if sources.missing:
            logger.warning("%d input(s) not found: %s", len(sources.missing),
                           ", ".join(sources.missing[:5]))
        limit = _error_limit(max_errors, len(sources))
        metadata = {"sources": summary, "converter": conv.name,
                    "options": {"on_error": on_error, "encoding_errors": encoding_errors}}
        if on_start:
            on_start(session, sources, bag.npartitions)
        if on_partition:
            on_partition = _counting_sources(on_partition, parts)
        if report:
            from distributed import performance_report
            stack.enter_context(performance_report(filename=os.fspath(report)))
        if progress or (progress is None and _in_notebook()):
            stack.enter_context(_notebook_progress())
        manifest = write_shards(bag, output, shard_size=shard_size, format=format, schema=schema,
                                on_error=on_error, overwrite=overwrite,
                                storage_options=storage_options, metadata=metadata,
                                max_errors=limit, on_partition=on_partition)
    return RunResult(os.fspath(output), manifest, len(sources), list(sources.missing),
                     sources.excluded, time.perf_counter() - t0, session.workers,
                     session.dashboard_link)
