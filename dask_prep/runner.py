"""Run: the whole job (discover, plan, convert, shard, commit) on a Dask cluster."""
from __future__ import annotations

import ast
import html
import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from .ingest.convert import bag_of, find_poison
from .ingest.converters import resolve_converter
from .ingest.plan import plan_partitions
from .errors import ConversionError, NoSourcesError, UnguardedScriptError, WorkerKilledError
from .ingest.sources import Sources, discover
from .paths import absolute, is_url
from .options import ClusterOptions, ConvertOptions, TokenOptions, WriteOptions, split
from .runtime.cluster import dask_session, starts_local_cluster, tokenizer_threads
from .runtime.execute import ON_SUBMIT
from .write.job import WriteJob
from .write.output import OutputDir, check_writable
from .write.partition import fewer_collections

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
    #: True when the dataset was complete before this run (nothing was converted).
    already_complete: bool = False

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
        from dask.utils import format_bytes, format_time
        m = self.manifest
        nbytes = m.get("sources", {}).get("bytes", 0)
        rows = [
            ("output", self.output),
            ("sources", f"{self.sources:,} files ({format_bytes(nbytes)})"),
            ("records", f"{self.records:,}"),
            ("shards", f"{shard_counts(m)} ({m['format']})"),
            ("errors", describe_errors(m)),
        ]
        if m.get("tokens"):
            t = m["tokens"]
            packed = f", sequences of {t['seq_len']:,}" if t.get("seq_len") else ""
            rows.insert(3, ("tokens", f"{t['total_tokens']:,} from {t['documents']:,} documents{packed}, "
                                      f"padding {t['padding']:,}, dropped {t.get('dropped_tokens', 0):,}"))
        if self.already_complete:
            rows.append(("status", f"already complete: nothing converted (checked in "
                                   f"{format_time(self.elapsed)}; --overwrite rebuilds it)"))
        else:
            rate = nbytes / self.elapsed if self.elapsed else 0.0
            rows += [("elapsed", f"{format_time(self.elapsed)} on {self.workers} worker(s)"),
                     ("throughput", f"{self.records_per_second:,.0f} records/s, {format_bytes(int(rate))}/s")]
        if self.missing:
            shown = ", ".join(self.missing[:3]) + (" ..." if len(self.missing) > 3 else "")
            rows.insert(2, ("missing", f"{len(self.missing)} input(s) not found: {shown}"))
        if self.excluded:
            rows.insert(2, ("excluded", f"{self.excluded:,} files"))
        if m.get("run", {}).get("resumed_partitions") and not self.already_complete:
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


def shard_counts(manifest: dict) -> str:
    """The shards as they are: ``"14 x 10,000 + 1 x 4,434 records"``.

    >>> shard_counts({"shards": [{"records": 10}] * 3 + [{"records": 4}]})
    '3 x 10 + 1 x 4 records'
    >>> shard_counts({"shards": []})
    '0 records'
    """
    runs: list[list[int]] = []
    for shard in manifest["shards"]:
        if runs and runs[-1][1] == shard["records"]:
            runs[-1][0] += 1
        else:
            runs.append([1, shard["records"]])
    return (" + ".join(f"{n:,} x {size:,}" for n, size in runs) or "0") + " records"


def describe_errors(manifest: dict) -> str:
    """``"32 (EmptyFileError 28, UnicodeDecodeError 4; see .errors.jsonl)"``."""
    n = manifest["errors"]
    if not n:
        return "0"
    kinds = ", ".join(f"{k} {v:,}" for k, v in list(manifest.get("error_types", {}).items())[:4])
    return f"{n:,} ({kinds + '; ' if kinds else ''}see .errors.jsonl)"


def _input_names(inputs) -> list[str] | None:
    """The inputs as the manifest records them, local ones absolute, so that
    ``dask-prep verify --sources`` finds the sources again from anywhere."""
    if isinstance(inputs, Sources):
        return None
    return [absolute(os.fsdecode(i))
            for i in ([inputs] if isinstance(inputs, (str, bytes, os.PathLike)) else inputs)]




def _exclude_name(exclude):
    if isinstance(exclude, (str, os.PathLike)):
        return absolute(os.fspath(exclude))
    return list(exclude) if exclude is not None else None


def _converter_name(spec) -> str | None:
    """The converter as a later run can name it: ``file.py:func`` with an absolute path."""
    if callable(spec) and not isinstance(spec, str):
        return None
    target, sep, func = str(spec).rpartition(":")
    if sep and (target.endswith(".py") or "/" in target) and os.path.isfile(target):
        return f"{os.path.abspath(target)}:{func}"
    return str(spec)


def _tokenizer_name(tokenizer):
    return absolute(tokenizer) if isinstance(tokenizer, str) else None


def recorded_options(conv: ConvertOptions, write: WriteOptions, tokens: TokenOptions) -> dict:
    """The options of a run as its manifest records them (``dask-prep run --like``
    repeats them): every field that decides the records and the shards, in
    keyword names. Storage options are not recorded (they may hold secrets)."""
    out = {"converter": _converter_name(conv.converter), "on_error": conv.on_error,
           "encoding_errors": conv.encoding_errors,
           "max_decompressed": list(conv.max_decompressed or ()) or None,
           "suffixes": list(conv.suffixes or ()), "exclude": _exclude_name(conv.exclude),
           "partition_size": conv.partition_size, "format": write.format,
           "shard_size": write.shard_size, "max_errors": write.max_errors,
           "allow_empty": write.allow_empty, **_segmenters(conv)}
    if tokens.tokenizer is not None:
        out["tokens"] = {"tokenizer": _tokenizer_name(tokens.tokenizer), "text_field": tokens.text_field,
                         "bos": tokens.bos, "eos": tokens.eos, "seq_len": tokens.seq_len,
                         "last": tokens.last, "doc_starts": tokens.doc_starts}
    return out


def _check_not_an_input(out: OutputDir, inputs) -> None:
    """Refuse an output folder that is one of the input folders: the run would
    read its own shards (an output *inside* an input folder is skipped by discovery)."""
    if not out.local or isinstance(inputs, Sources):
        return
    here = os.path.realpath(out.url)
    for name in _input_names(inputs) or ():
        if not name.startswith("@") and not is_url(name) and os.path.realpath(name) == here:
            raise ValueError(f"the output {out.url} is also an input; write the shards to another folder")


def _nothing_found(inputs, sources: Sources) -> str:
    names = _input_names(inputs) or []
    shown = ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")
    why = f"{len(sources.missing)} not found" if sources.missing else "they hold no files"
    if sources.excluded and not sources.missing:
        why = f"all {sources.excluded:,} files are excluded"
    return f"no sources found: {shown or 'no inputs given'} ({why}); pass --allow-empty to accept that"


def _counting_sources(on_partition: Callable, parts: list, sources: Sources) -> Callable:
    """Wrap the progress hook so each result says how many sources, and how many
    bytes of them, it covered."""
    counts = [sum(1 for piece in part if not piece.start) for part in parts]
    sizes = {s.path: s.size for s in sources}
    nbytes = [sum((p.end - (p.start or 0)) if p.end is not None else sizes.get(p.path, 0) or 0
                  for p in part) for part in parts]

    def hook(result, done, total):
        result.sources, result.bytes = counts[result.index], nbytes[result.index]
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


def _guard_lines(path: str) -> list[tuple[int, int]]:
    """The line ranges of ``if __name__ == "__main__":`` blocks in the script at ``path``."""
    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, ValueError):
        return []
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test) \
                and "__name__" in ast.unparse(node.test):
            out.append((node.lineno, node.end_lineno or node.lineno))
    return out


def check_guarded_main() -> None:
    """Refuse to start worker processes from the unguarded top level of a script.

    Worker processes (spawn or forkserver, Dask's default) import the main
    script again; called from its top level without ``if __name__ ==
    "__main__":``, each would start a run of its own and the cluster would
    never start (Dask's "Nanny failed to start", after a long traceback).
    """
    import dask
    import distributed  # noqa: F401  (its config defaults)
    if dask.config.get("distributed.worker.multiprocessing-method") == "fork":
        return
    main = sys.modules.get("__main__")
    script = getattr(main, "__file__", None)
    if script is None or getattr(main, "__spec__", None) is not None:
        return  # python -c, an interactive session, a notebook, or python -m (imported by name)
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals.get("__name__") == "__main__":
            break
        frame = frame.f_back
    if frame is None:
        return
    line = frame.f_lineno
    if not os.path.isfile(script):
        raise UnguardedScriptError(
            f"dask_prep.run starts worker processes, which cannot re-import a script read from "
            f"{script}: save it to a file and put the call under 'if __name__ == \"__main__\":'")
    if any(a <= line <= b for a, b in _guard_lines(script)):
        return
    raise UnguardedScriptError(
        f"{script} line {line} calls dask_prep.run at the top level of the script: the local "
        "cluster's worker processes re-import the script, so put the call under "
        "'if __name__ == \"__main__\":' (or pass scheduler=/client= for a running cluster)")


def _isolating(client, parts: list, conv, conv_opts: ConvertOptions, sources) -> Callable:
    """For a job: given a partition that killed its workers, find the sources
    that do so on their own and return the bag that skips them. A worker's
    death is blamed on every task it held, so a partition none of whose sources
    kills a worker alone is tried again, once; the second time the partition
    as a whole needs more memory than a worker has: ``None``."""
    poison: dict = {}
    innocent: set = set()
    pieces = Counter(p.path for part in parts for p in part)

    def isolate(index: int):
        if index >= len(parts):
            return None
        found = find_poison(client, [p for p in parts[index] if p.path not in poison], conv, conv_opts)
        if not found:
            if index in innocent:
                return None
            innocent.add(index)
        else:
            innocent.clear()  # (blamed beside a culprit: another chance)
        if any(pieces[path] > 1 for path in found):
            # a file read in byte ranges by several partitions: some may be done
            # already, so it cannot be left out whole; the run stops naming it
            return None
        for path, why in found.items():
            if conv_opts.on_error == "raise":
                raise ConversionError(f"{path}: WorkerKilled: {why}")
            logger.warning("%s %s: listed as its error; the rest goes on", path, why)
        poison.update(found)
        return bag_of(parts, conv, conv_opts, sources, skip=poison)
    return isolate


def _killed(exc: BaseException, parts: list) -> WorkerKilledError:
    """One line for Dask's ``KilledWorker``: which partition, which sources, what to try."""
    from .write.job import killed_partition
    key = getattr(exc, "task", None)
    index = killed_partition(exc)
    if index is not None and index < len(parts):
        paths = list(dict.fromkeys(piece.path for piece in parts[index]))
        shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3:,} more" if len(paths) > 3 else "")
        what = f"partition {index} ({len(paths):,} source(s): {shown})"
    else:
        what = f"task {key!r}"
    tries = getattr(exc, "allowed_failures", 3) + 1
    return WorkerKilledError(
        f"{what} killed {tries} workers in turn (out of memory, or a crash in native code): "
        "give each worker more memory (--memory-limit), make tasks smaller (--partition-size), "
        "or --exclude the file")


def _segmenters(opts: ConvertOptions) -> dict:
    """The segmenters the manifest names: only those chosen (older manifests stay as they were)."""
    chosen = {"segmenter": opts.segmenter, "word_segmenter": opts.word_segmenter}
    return {k: v for k, v in chosen.items() if v != "rules"}


def run(inputs, output, *, convert: ConvertOptions | None = None, write: WriteOptions | None = None,
        cluster: ClusterOptions | None = None, tokens: TokenOptions | None = None,
        progress: bool | None = None,
        on_start: Callable | None = None, on_partition: Callable | None = None,
        **options) -> RunResult:
    """Discover ``inputs``, convert every file on Dask, and write exact shards to ``output``.

    Options come as three objects or as their fields by keyword
    (``dp.run(inputs, out, converter="sentences", shard_size=1000, workers=2)``):

    - :class:`~dask_prep.options.ConvertOptions`: ``converter``, ``suffixes``,
      ``exclude``, ``on_error``, ``encoding_errors``, ``partition_size``,
      ``storage_options``, ``segmenter`` and ``word_segmenter`` (of
      ``sentences``: ``"pysbd"``, ``"jieba"``);
    - :class:`~dask_prep.options.WriteOptions`: ``format``, ``shard_size``,
      ``schema``, ``overwrite``, ``max_errors`` (a count, or a fraction of the
      sources; by default the run fails only when every source failed, so a
      broken converter cannot leave an empty "complete" dataset);
    - :class:`~dask_prep.options.ClusterOptions`: ``client``, ``scheduler``,
      ``workers``, ``memory_limit``, ``security``, ``report``. Runs on ``client``
      if given, else on the cluster at ``scheduler``, else on the notebook's
      current client, else on a LocalCluster of ``workers`` processes started
      (on 127.0.0.1) for this run and closed after it;
    - :class:`~dask_prep.options.TokenOptions`: ``tokenizer`` (a local
      ``tokenizer.json``, tokenizer folder or sentencepiece ``.model``, or a
      :class:`tokenizers.Tokenizer`), ``text_field``, ``bos``, ``eos``,
      ``seq_len`` (pack into sequences of exactly that many tokens), ``last``,
      ``doc_starts``. With a tokenizer the records are token ids
      (``{"input_ids": [...]}``), one per document or, packed, per sequence,
      and the manifest's ``tokens`` counts them
      (:mod:`dask_prep.tokens.job`).

    ``progress`` shows Dask's progress widget (default: inside a notebook only);
    ``on_start(session, sources, npartitions)`` and ``on_partition(result,
    done, total)`` are progress hooks (``result.sources`` says how many
    sources the partition covered).

    Running the same call again resumes an interrupted run, or returns at once
    when the dataset is already complete.
    """
    t0 = time.perf_counter()
    given = {ConvertOptions: convert, WriteOptions: write, ClusterOptions: cluster, TokenOptions: tokens}
    conv_opts, write_opts, where, token_opts = split(
        options, ConvertOptions, WriteOptions, ClusterOptions, TokenOptions,
        given={k: v for k, v in given.items() if v is not None})
    tokenizing = token_opts.tokenizer is not None
    given_tokens = token_opts
    if tokenizing:  # a path that is not a tokenizer fails here, before a cluster starts
        from .tokens.tokenizer import resolve_tokenizer
        token_opts = replace(token_opts, tokenizer=resolve_tokenizer(
            token_opts.tokenizer, bos=token_opts.bos, eos=token_opts.eos))
    if token_opts.doc_starts and token_opts.seq_len and write_opts.format == "mds":
        from .errors import TokenizerError
        raise TokenizerError("doc_starts cannot be written as MDS: a sequence inside a long document "
                         "starts no document, and MDS cannot hold an empty array; use --format "
                         "parquet or tokens for document starts")
    out = OutputDir(output, conv_opts.storage_options)
    _check_not_an_input(out, inputs)
    check_writable(out, write_opts.overwrite)  # before starting a cluster
    conv = resolve_converter(conv_opts.converter, encoding_errors=conv_opts.encoding_errors,
                             segmenter=conv_opts.segmenter, word_segmenter=conv_opts.word_segmenter)
    if starts_local_cluster(where):
        check_guarded_main()
    with ExitStack() as stack:
        def prepare():
            with fewer_collections():  # one object (or more) per file
                sources = inputs if isinstance(inputs, Sources) else discover(
                    inputs, suffixes=conv_opts.suffixes or None, exclude=conv_opts.exclude,
                    storage_options=conv_opts.storage_options, outside=out.url_of(""))
                parts = plan_partitions(sources, partition_size=conv_opts.partition_size,
                                        splittable=conv.splittable)
                return sources, sources.summary(), parts, bag_of(parts, conv, conv_opts, sources)

        with ThreadPoolExecutor(1) as pool:
            # find the files and plan the tasks while the cluster's worker processes start
            prepared = pool.submit(prepare)
            with tokenizer_threads(tokenizing):
                session = stack.enter_context(dask_session(where))
            sources, summary, parts, bag = prepared.result()
        if sources.missing:
            logger.warning("%d input(s) not found: %s", len(sources.missing),
                           ", ".join(sources.missing[:5]))
        if not sources and not write_opts.allow_empty:
            raise NoSourcesError(_nothing_found(inputs, sources))
        metadata = {"sources": summary, "converter": conv.name, "inputs": _input_names(inputs),
                    "options": recorded_options(conv_opts, write_opts, given_tokens)}
        if on_start:
            on_start(session, sources, bag.npartitions)
        if on_partition:
            on_partition = _counting_sources(on_partition, parts, sources)
        if where.report:
            from distributed import performance_report
            stack.enter_context(performance_report(filename=os.fspath(where.report)))
        if progress or (progress is None and _in_notebook()):
            stack.enter_context(_notebook_progress())
        kwargs = dict(metadata=metadata, sources=len(sources), on_partition=on_partition,
                      source_files=sources,
                      isolate=_isolating(session.client, parts, conv, conv_opts, sources))
        if tokenizing:
            from .tokens.job import TokenJob
            job = TokenJob(bag, out, write_opts, token_opts, **kwargs)
        else:
            job = WriteJob(bag, out, write_opts, **kwargs)
        try:
            manifest = job.run()
        except Exception as exc:
            if type(exc).__name__ == "KilledWorker":
                raise _killed(exc, parts) from None
            raise
    return RunResult(os.fspath(output), manifest, len(sources), list(sources.missing),
                     sources.excluded, time.perf_counter() - t0, session.workers,
                     session.dashboard_link, getattr(job, "already_complete", False))
