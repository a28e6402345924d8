"""The ``dask-prep`` command: parse arguments, call the library, format the result.

Exit codes: 0 success, 1 the run or check failed, 2 bad usage.
"""
from __future__ import annotations

import dataclasses
import errno
import functools
import json
import contextlib
import logging
import os
import signal
import sys
import sysconfig
import threading
import time

import click

from ._version import __version__
from .errors import ConverterNotFoundError, DaskPrepError, OutputExistsError, TokenizerError
from .ingest.converters import converter_names
from .options import ClusterOptions, ConvertOptions, TokenOptions, WriteOptions
from .write.formats import format_names

SUFFIXES_HELP = "keep only files with this suffix (repeatable; .txt also keeps .txt.gz)"


class _Fail(click.ClickException):
    exit_code = 1

    def show(self, file=None):
        click.echo(f"dask-prep: error: {self.format_message()}", err=True)


class _Usage(_Fail):
    exit_code = 2


class _Interrupted(_Fail):
    exit_code = 130


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread: a run stops as on Ctrl-C (exit 143)."""


def _on_sigterm(signum, frame):
    raise _Terminated


def _stopped(exc: KeyboardInterrupt, what: str) -> _Interrupted:
    """Ctrl-C (exit 130) or SIGTERM (exit 143), in one line."""
    # (The run has stopped and its cluster is closed: a Ctrl-C still pending, or
    # a second one, while the interpreter exits no longer changes how it ends.)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    stop = _Interrupted(f"{'terminated (SIGTERM)' if isinstance(exc, _Terminated) else 'interrupted'}{what}")
    if isinstance(exc, _Terminated):
        stop.exit_code = 128 + signal.SIGTERM
    return stop


class _Progress:
    """The run's progress on stderr, in bytes of sources (the work), not files.

    On a terminal: a tqdm bar, then the commit as its own step. Elsewhere (CI,
    Kubernetes logs, a file): one line every ``interval`` seconds (dask config
    ``dask-prep.progress-interval``, default 5s), never carriage returns.
    """

    def __init__(self, quiet: bool, interval: float | None = None, tty: bool | None = None):
        import dask
        from dask.utils import parse_timedelta
        self.quiet = quiet
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.interval = interval if interval is not None else parse_timedelta(
            dask.config.get("dask-prep.progress-interval", "5s"))
        self.bar = self.ticker = None
        self.total = self.bytes = self.records = self.shards = self.errors = 0
        self.done = self.parts = 0
        self.t0 = self.t_commit = None
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def on_start(self, session, sources, npartitions):
        if self.quiet:
            return
        from dask.utils import format_bytes
        click.echo(f"dashboard: {session.dashboard_link or 'not available'}", err=True)
        click.echo(f"{len(sources):,} sources ({format_bytes(sources.total_bytes)}) in {npartitions} "
                   f"partitions on {session.workers} worker(s)", err=True)
        self.total, self.parts, self.t0 = sources.total_bytes, npartitions, time.monotonic()
        if self.tty:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=self.total, unit="B", unit_scale=True, unit_divisor=1024,
                            desc="convert", file=sys.stderr, dynamic_ncols=True)
        else:
            self.ticker = threading.Thread(target=self._tick, name="dask-prep-progress", daemon=True)
            self.ticker.start()

    def on_partition(self, result, done, total):
        if self.quiet or self.t0 is None:
            return
        with self.lock:
            self.bytes += getattr(result, "bytes", 0)
            self.records += result.records
            self.shards += len(result.shards)
            self.errors += len(result.errors)
            self.done, self.parts = done, total
            if done >= total:
                self.bytes = max(self.bytes, self.total)  # partitions done before a resume
        if self.bar is not None:
            self.bar.set_postfix(parts=f"{done}/{total}", records=f"{self.records:,}",
                                 errors=self.errors, refresh=False)
            self.bar.update(self.bytes - self.bar.n)
        if done >= total:
            self._commit_starts()

    def _line(self) -> str:
        from dask.utils import format_bytes, format_time
        elapsed = time.monotonic() - self.t0
        share = self.bytes / self.total if self.total else 0.0
        rate = self.bytes / elapsed if elapsed > 0 else 0.0
        left = f", {format_time((self.total - self.bytes) / rate)} left" if 0 < rate and share < 1 else ""
        return (f"progress: {share:.0%} of {format_bytes(self.total)} ({self.done}/{self.parts} "
                f"partitions), {self.records:,} records, {self.errors:,} errors, "
                f"{format_bytes(int(rate))}/s{left}")

    def _tick(self):
        while not self.stop.wait(self.interval):
            with self.lock:
                if self.t_commit is not None:
                    return
                line = self._line()
            click.echo(line, err=True)

    def _commit_starts(self):
        with self.lock:
            if self.t_commit is not None:
                return
            self.t_commit = time.monotonic()
            line = None if self.bar is not None else self._line()
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        else:
            click.echo(line, err=True)
        click.echo("commit: merging the leftover records into the last shards, writing the manifest",
                   err=True)

    def close(self, ok: bool = False):
        self.stop.set()
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if ok and self.t_commit is not None and not self.quiet:
            from dask.utils import format_time
            click.echo(f"commit: done in {format_time(time.monotonic() - self.t_commit)}", err=True)


def _run(inputs, output, *, quiet=False, **options):
    from .runner import run
    progress = _Progress(quiet)
    ok = False
    try:
        result = run(list(inputs), output, on_start=progress.on_start,
                     on_partition=progress.on_partition, **options)
        ok = True
    except KeyboardInterrupt as exc:
        raise _stopped(exc, f"; finished partitions are kept in {output}/.dask-prep: "
                            "run the same command again to resume") from None
    except (ConverterNotFoundError, OutputExistsError, TokenizerError) as exc:
        raise _Usage(str(exc)) from None
    except OSError as exc:
        logging.getLogger(__name__).debug("the run failed", exc_info=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _Fail(f"{output}: no space left on its device ({_one_line(exc)}); free some space and "
                        "run the same command again to resume: finished partitions are kept") from None
        raise _Fail(f"{type(exc).__name__}: {_one_line(exc)}") from None
    except Exception as exc:  # one line, never a traceback (-vv logs it)
        logging.getLogger(__name__).debug("the run failed", exc_info=True)
        raise _Fail(f"{type(exc).__name__}: {_one_line(exc)}") from None
    finally:
        progress.close(ok)
    click.echo(result.summary())
    return result


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or repr(exc)
    return text if len(text) <= 1000 else text[:1000] + " ..."


def _size(value, name: str, least: int = 0):
    """Bytes from ``64MB``, ``2GiB`` or ``65536`` (Dask's ``parse_bytes``)."""
    if value is None:
        return None
    from .options import parse_size
    try:
        n = parse_size(name, value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if n < least:
        raise click.BadParameter(f"{value!r} is less than {least:,} bytes")
    return n


def _existing_file(ctx, param, value):
    """A local file that must exist (a URL is checked when it is read)."""
    if value is not None and "://" not in value and not os.path.isfile(value):
        what = "is a directory" if os.path.isdir(value) else "does not exist"
        raise click.BadParameter(f"{value!r} {what}; give a file of paths, basenames or globs, "
                                 "one a line")
    return value


def _group(key: str, build, *options):
    """Add the click ``options`` to a command and hand it their values as one
    object, ``build(**values)``, under ``key``; a value it refuses is bad usage."""
    names = [o(lambda: None).__click_params__[0].name for o in options]

    def decorate(f):
        @functools.wraps(f)
        def command(*args, **kwargs):
            values = {n: kwargs.pop(n) for n in names}
            try:
                kwargs[key] = build(**values)
            except (ValueError, TypeError) as exc:
                raise _Usage(str(exc)) from None
            return f(*args, **kwargs)
        for option in reversed(options):
            command = option(command)
        return command
    return decorate


def _given(**values) -> dict:
    """The options given (on the command line, in a --config file, by --like);
    the rest default to dask config (``dask_prep.config``)."""
    return {k: v for k, v in values.items() if v is not None and v != ()}


def _convert(converter, exclude, suffixes, on_error, encoding_errors, partition_size, max_decompressed,
             segmenter, word_segmenter):
    given = _given(converter=converter, exclude=exclude, suffixes=suffixes, on_error=on_error,
                   encoding_errors=encoding_errors, partition_size=partition_size,
                   max_decompressed=max_decompressed, segmenter=segmenter, word_segmenter=word_segmenter)
    if max_decompressed is not None and str(max_decompressed).strip().lower() in ("none", "0", "off"):
        given["max_decompressed"] = None
    return ConvertOptions(**given)


def _default(key: str) -> str:
    return f"default: dask config dask-prep.{key}, else "


convert_options = functools.partial(
    _group, "convert", _convert,
    click.option("--converter",
                 help=f"{'|'.join(converter_names())}, module:func or file.py:func "
                      f"({_default('converter')}text)"),
    click.option("--exclude", callback=_existing_file, help="file of paths, basenames or globs to skip"),
    click.option("--suffix", "suffixes", multiple=True, help=SUFFIXES_HELP),
    click.option("--on-error", type=click.Choice(["skip", "raise"]), help=f"({_default('on-error')}skip)"),
    click.option("--encoding-errors", type=click.Choice(["strict", "replace"]),
                 help=f"invalid UTF-8: fail the file, or replace bad bytes ({_default('encoding-errors')}strict)"),
    click.option("--partition-size", callback=lambda ctx, p, v: _size(v, "--partition-size", 8192),
                 help=f"input bytes per task, e.g. 64MB ({_default('partition-size')}automatic)"),
    click.option("--max-decompressed",
                 help="fail a compressed source that decompresses past RATIOx its size (at least "
                      "64 MiB) or past a SIZE such as 20GiB (a compression bomb); 'none': no limit "
                      f"({_default('max-decompressed')}100x)"),
    click.option("--segmenter", default=None, metavar="rules|pysbd[:LANG]",
                 help="sentences converter: how sentences are found (pysbd: pip install pysbd) "
                      "[default: rules]"),
    click.option("--word-segmenter", type=click.Choice(["rules", "jieba"]), default=None,
                 help="sentences converter: how words are found (jieba: Chinese words; pip install "
                      "jieba) [default: rules]"))


def _write(format_, shard_size, overwrite, max_errors, allow_empty):
    return WriteOptions(**_given(format=format_, shard_size=shard_size, max_errors=max_errors),
                        overwrite=overwrite, allow_empty=allow_empty)


write_options = functools.partial(
    _group, "write", _write,
    click.option("--format", "format_", type=click.Choice(format_names()),
                 help=f"({_default('format')}parquet)"),
    click.option("--shard-size", type=click.IntRange(min=1),
                 help=f"records per shard, all but the last exact ({_default('shard-size')}10000)"),
    click.option("--overwrite", is_flag=True,
                 help="write into a folder holding other files, or replace a dataset"),
    click.option("--max-errors", callback=lambda ctx, p, v: _max_errors(v),
                 help="fail when more sources than this fail: a count (10) or a fraction (0.05); "
                      "default: fail only if every source failed"),
    click.option("--allow-empty", is_flag=True,
                 help="accept finding no sources, or no records, and write an empty dataset"))


def _special(value):
    """``--eos``/``--bos``: a token, an id, or none."""
    if value is None or value in ("auto", "none"):
        return None if value == "none" else value
    return int(value) if value.isdigit() else value


def _tokens(tokenizer, text_field, bos, eos, seq_len, last, doc_starts):
    return TokenOptions(tokenizer=tokenizer, text_field=text_field, bos=_special(bos),
                        eos=_special(eos), seq_len=seq_len, last=last, doc_starts=doc_starts)


token_options = functools.partial(
    _group, "tokens", _tokens,
    click.option("--tokenizer", help="local tokenizer.json, tokenizer folder or sentencepiece .model: "
                                     "records become token ids (nothing is downloaded)"),
    click.option("--text-field", default="text", show_default=True,
                 help="field of dict records to tokenize (str records are taken as they are)"),
    click.option("--bos", help="token or id put before each document (default: none)"),
    click.option("--eos", default="auto", show_default=True,
                 help="token or id put after each document; auto: the tokenizer's end-of-text "
                      "token; none: no EOS"),
    click.option("--seq-len", type=click.IntRange(min=1),
                 help="pack the documents' ids into sequences of exactly this many tokens"),
    click.option("--last", type=click.Choice(["drop", "pad"]), default="drop", show_default=True,
                 help="tokens after the last whole sequence: drop them, or pad one sequence "
                      "(with EOS; the record's 'pad' says how many)"),
    click.option("--doc-starts", is_flag=True,
                 help="each packed sequence lists where its documents start ('doc_starts')"))


def _cluster(scheduler, scheduler_file, workers, memory_limit, report, tls_ca_file, tls_cert, tls_key):
    if scheduler and scheduler_file:
        raise ValueError("give --scheduler or --scheduler-file, not both")
    if (scheduler or scheduler_file) and (workers or memory_limit):
        flag = "--scheduler" if scheduler else "--scheduler-file"
        raise ValueError(f"--workers and --memory-limit are for local workers; not with {flag}")
    from .runtime.cluster import default_workers, local_memory_limit, scheduler_from_file
    if scheduler_file:  # read now: a missing or foreign file is bad usage
        scheduler = scheduler_from_file(scheduler_file)
    elif not scheduler:  # dask config's local defaults checked now: bad usage too
        default_workers(), local_memory_limit(memory_limit or "auto")
    return ClusterOptions(scheduler=scheduler, workers=workers, memory_limit=memory_limit or "auto",
                          report=report, security=_security(tls_ca_file, tls_cert, tls_key))


cluster_options = functools.partial(
    _group, "cluster", _cluster,
    click.option("--scheduler", help="address of a running Dask scheduler, e.g. tcp://host:8786 "
                                     "(default: dask config scheduler-address, DASK_SCHEDULER_ADDRESS, "
                                     "unless --workers is given)"),
    click.option("--scheduler-file", help="the JSON file 'dask scheduler --scheduler-file' writes "
                                          "(HPC: on a shared file system)"),
    click.option("--workers", type=click.IntRange(min=1),
                 help="local worker processes (default: dask config dask-prep.workers, else "
                      "dask.system.CPU_COUNT, which respects container CPU limits)"),
    click.option("--memory-limit", help="memory limit of each local worker, e.g. 500MB or 2GiB "
                                        "(default: the machine's memory shared among the workers)"),
    click.option("--report", type=click.Path(dir_okay=False),
                 help="write Dask's performance report (HTML) here"),
    click.option("--tls-ca-file", type=click.Path(exists=True, dir_okay=False),
                 help="CA certificate of a TLS scheduler"),
    click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="client certificate (TLS)"),
    click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="client private key (TLS)"))


class _Plain(logging.Formatter):
    """``dask-prep: warning: 2 input(s) not found: ...``"""

    def format(self, record):
        return f"dask-prep: {record.levelname.lower()}: {record.getMessage()}"


@contextlib.contextmanager
def _usage_in_one_line():
    """Click's usage errors as one line (``dask-prep: error: ...``), exit 2."""
    try:
        yield
    except click.UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            raise
        hint = f" (see '{exc.ctx.command_path} -h')" if exc.ctx is not None else ""
        origin = _origin(exc)
        if origin:
            hint = f" (from {origin})"
        raise _Usage(f"{exc.format_message()}{hint}") from None


def _origin(exc: click.UsageError) -> str | None:
    """The --config file or --like dataset a bad value came from, if it did."""
    param, ctx = getattr(exc, "param", None), exc.ctx
    if param is None or ctx is None or param.name is None:
        return None
    if ctx.get_parameter_source(param.name) is not click.core.ParameterSource.DEFAULT_MAP:
        return None
    return ctx.meta.get("dask_prep.origin", {}).get(param.name)


class _Group(click.Group):
    def make_context(self, *args, **kwargs):
        with _usage_in_one_line():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        try:
            with _usage_in_one_line():
                return super().invoke(ctx)
        except KeyboardInterrupt as exc:  # not in a run (there it says how to resume)
            raise _stopped(exc, "") from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dask-prep")
@click.option("-v", "--verbose", count=True, help="more log output (-vv for debug)")
def main(verbose):
    """Turn document corpora into exact fixed-size training shards on Dask."""
    # SIGTERM (a scheduler, Kubernetes, kill) ends a run as Ctrl-C does
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s") if verbose
                         else _Plain())
    logging.basicConfig(level=level, handlers=[handler])
    logging.getLogger("dask_prep").setLevel(level)
    # distributed sets its loggers to INFO when imported; a one-screen CLI shows
    # cluster start/stop chatter only when asked (-vv).
    import distributed  # noqa: F401  (so its logging set-up runs before ours)
    # (at the default level not even its errors: a failed run says why in one line)
    dask_level = [logging.CRITICAL, logging.WARNING, logging.DEBUG][min(verbose, 2)]
    for name in ("distributed", "tornado"):
        logging.getLogger(name).setLevel(dask_level)
    # (and its loggers that Dask's config gives levels of their own, distributed.client's
    # "Couldn't gather ... rescheduling" among them)
    handler.addFilter(lambda r: r.levelno >= dask_level or not r.name.startswith(("distributed", "tornado")))
    # bokeh warns that the dashboard accepts any Host header; it listens on 127.0.0.1 only
    logging.getLogger("bokeh").setLevel(logging.DEBUG if verbose >= 2 else logging.ERROR)


def _option_names(command: click.Command) -> dict:
    """``shard-size`` -> the click parameter's name, for every option of ``command``
    (its long flag without ``--``), and ``inputs``."""
    names = {}
    for p in command.params:
        if p.name in ("config_file", "like", "help") or not p.expose_value:
            continue
        flags = [o[2:] for o in p.opts if o.startswith("--")] or [p.name]
        for flag in flags:
            names[flag] = p.name
        if p.name == "suffixes":
            names["suffixes"] = p.name
    return names


def _defaults_from(ctx, param, value):
    """``--config FILE`` and ``--like OUT``: values for the options not given on the
    command line (click's ``default_map``); a --config file's win over --like's."""
    if value is None:
        return value
    from .runfile import options_of_dataset, read_run_file
    try:
        values = read_run_file(value) if param.name == "config_file" else options_of_dataset(value)
    except (ValueError, DaskPrepError, OSError) as exc:
        raise _Usage(_one_line(exc)) from None
    names = _option_names(run_cmd)  # a run's file serves `plan` too
    mine = set(_option_names(ctx.command).values())
    for key in values:
        if key not in names:
            import difflib
            close = difflib.get_close_matches(key, list(names), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise _Usage(f"{value}: unknown option {key!r}; {hint}keys are the options of "
                         "'dask-prep run' (shard-size, suffix, inputs, ...)")
    ctx.meta[param.name] = {names[k]: _listed(ctx.command, names[k], v)
                            for k, v in values.items() if names[k] in mine}
    origin = ctx.meta.setdefault("dask_prep.origin", {})
    for name in ctx.meta[param.name]:
        if param.name == "config_file" or name not in origin:
            origin[name] = value if param.name == "config_file" else f"--like {value}"
    ctx.default_map = {**ctx.meta.get("like", {}), **ctx.meta.get("config_file", {})}
    return value


def _listed(command: click.Command, name: str, value):
    """A single value for an option that takes several (``suffix = ".txt"``) as a list."""
    param = next(p for p in command.params if p.name == name)
    many = getattr(param, "multiple", False) or param.nargs == -1
    return [value] if many and isinstance(value, (str, int, float)) else value


def _check_inputs(inputs, output):
    if not inputs:
        raise _Usage("no INPUT given: name files, folders or globs, or give them as 'inputs' "
                     "in a --config file, or repeat a dataset's with --like OUT")
    if not output:
        raise _Usage("no output given: pass -o OUT (or 'output' in a --config file)")


@main.command("run")
@click.argument("inputs", nargs=-1)
@click.option("-o", "--output", help="output directory (local or fsspec URL)")
@convert_options()
@write_options()
@token_options()
@cluster_options()
@click.option("-q", "--quiet", is_flag=True, help="print only the summary")
@click.option("--dry-run", is_flag=True, help="print the plan ('dask-prep plan') and stop: no cluster, "
                                               "nothing converted or written")
@click.option("--config", "config_file", is_eager=True, expose_value=False, callback=_defaults_from,
              help="TOML or YAML file of this command's options by name (inputs, shard-size, ...); "
                   "options on the command line win")
@click.option("--like", is_eager=True, expose_value=False, callback=_defaults_from, metavar="OUT",
              help="repeat the inputs and options the dataset in OUT was made with (other options "
                   "given win)")
def run_cmd(inputs, output, convert, write, tokens, cluster, quiet, dry_run):
    """Convert INPUT... (files, directories, globs, @lists, URLs) into shards in OUTPUT.

    An option not given comes from --config FILE, then --like OUT, then dask config
    (the dask-prep section: ~/.config/dask/*.yaml, DASK_DASK_PREP__SHARD_SIZE=...),
    then the built-in default."""
    _check_inputs(inputs, output)
    if dry_run:
        _print_plan(inputs, output, convert, write, tokens.seq_len)
        return
    if quiet:  # the summary (or the error) only, no warnings
        logging.getLogger("dask_prep").setLevel(logging.ERROR)
    write = dataclasses.replace(write, on_error=convert.on_error)
    _run(inputs, output, quiet=quiet, convert=convert, write=write, tokens=tokens, cluster=cluster,
         progress=False)


@main.command("plan")
@click.argument("inputs", nargs=-1)
@click.option("-o", "--output", help="the output the run would write (never read as input)")
@convert_options()
@write_options()
@click.option("--config", "config_file", is_eager=True, expose_value=False, callback=_defaults_from,
              help="a run's TOML or YAML file (as 'dask-prep run --config')")
@click.option("--like", is_eager=True, expose_value=False, callback=_defaults_from, metavar="OUT",
              help="the inputs and options the dataset in OUT was made with")
def plan_cmd(inputs, output, convert, write):
    """Print what 'dask-prep run' would do with INPUT...: sources, bytes, partitions,
    missing and excluded inputs, converter, expected shards; starts no cluster and
    converts nothing."""
    if not inputs:
        _check_inputs(inputs, "-")
    _print_plan(inputs, output, convert, write)


def _print_plan(inputs, output, convert, write, seq_len=None):
    from .dry_run import plan_run
    try:
        plan = plan_run(list(inputs), output, convert=convert, write=write, seq_len=seq_len)
    except (ConverterNotFoundError, ValueError) as exc:
        raise _Usage(_one_line(exc)) from None
    except (DaskPrepError, OSError) as exc:
        raise _Fail(f"{type(exc).__name__}: {_one_line(exc)}") from None
    click.echo(plan.summary())


def _security(ca_file, cert, key):
    if not (ca_file or cert or key):
        return None
    if not (ca_file and cert and key):
        raise _Usage("TLS needs all three of --tls-ca-file, --tls-cert and --tls-key")
    from distributed import Security
    return Security(tls_ca_file=ca_file, tls_client_cert=cert, tls_client_key=key,
                    require_encryption=True)


def _max_errors(value: str | None):
    if value is None:
        return None
    try:
        number = float(value) if "." in value else int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither a count (10) nor a fraction (0.05)") from None
    if number < 0 or (isinstance(number, float) and number > 1):
        raise click.BadParameter(f"{value!r}: use a count >= 0 or a fraction within 0..1")
    return number


@main.command()
@click.argument("output")
@click.option("--sources", "check_sources", is_flag=True,
              help="also check the sources against the ones the dataset was made from")
def verify(output, check_sources):
    """Check every shard in OUTPUT against its manifest (exit 0 only if all match).

    With --sources, find the dataset's inputs again and list the sources that
    changed, were added or disappeared since (exit 1 if any did)."""
    from .read.shardset import verify as verify_
    report = verify_(output)
    click.echo(str(report), err=not report.ok)
    ok = report.ok
    if check_sources:
        from .write.sources_file import check_sources as check
        try:
            changes = check(output)
        except (DaskPrepError, OSError, ValueError) as exc:
            raise _Fail(f"{type(exc).__name__}: {exc}") from None
        for label, paths in changes.to_dict().items():
            for path in paths:
                click.echo(f"{label:>7}  {path}")
        click.echo(f"sources: {changes.describe(most=0) if changes else 'unchanged'}", err=bool(changes))
        ok = ok and not changes
    sys.exit(0 if ok else 1)


@main.command()
@click.argument("output")
@click.option("--json", "as_json", is_flag=True, help="print the manifest as JSON")
def info(output, as_json):
    """Summarize the dataset in OUTPUT."""
    from .runner import describe_errors
    from .write.manifest import Manifest
    from .write.output import OutputDir
    try:
        m = Manifest.read(OutputDir(output))
    except DaskPrepError as exc:
        raise _Fail(str(exc)) from None
    if as_json:
        click.echo(json.dumps(m.to_json(), indent=1))
        return
    from dask.utils import format_bytes
    src = m.get("sources", {})
    sizes = sorted({s["records"] for s in m["shards"]})
    nbytes = sum(s["bytes"] for s in m["shards"])
    lines = [
        ("dataset", output),
        ("format", f"{m['format']} (layout version {m['version']})"),
        ("records", f"{m['total_records']:,}"),
        ("shards", f"{len(m['shards']):,} of {m['shard_size']:,} records "
                   f"(record counts seen: {', '.join(map(str, sizes)) or '-'})"),
        ("bytes", f"{format_bytes(nbytes)} ({nbytes:,})"),
        ("sources", f"{src.get('count', '?'):,} files, {format_bytes(src.get('bytes', 0))}"
                    if src else "(written from a bag)"),
        ("converter", str(m.get("converter", "-"))),
        ("errors", describe_errors(m)),
        ("schema", ", ".join(f"{f['name']}: {f['type']}" for f in m["schema"] or []) or "-"),
        ("created by", m.get("created_by", "?")),
    ]
    width = max(len(k) for k, _ in lines)
    click.echo("\n".join(f"{k:>{width}}  {v}" for k, v in lines))


@main.command("report")
@click.argument("output")
@click.option("-o", "--out", "path", type=click.Path(dir_okay=False),
              help="HTML file to write (default: ./<dataset name>-report.html)")
@click.option("--allow-pickle", is_flag=True,
              help="read pickle shards for the length statistics (unpickling runs code: trusted data only)")
@click.option("--sample", type=click.IntRange(min=1), default=1000, show_default=True,
              help="records read from each sampled shard for the length statistics")
@click.option("--shards", type=click.IntRange(min=1), default=200, show_default=True,
              help="shards sampled (evenly spaced) for the length statistics")
def report_cmd(output, path, allow_pickle, sample, shards):
    """Write one self-contained HTML page about the dataset in OUTPUT: shards, lengths,
    errors, partitions, sources and options. Prints the file's name."""
    from .read.report import default_report_path, report
    path = path or default_report_path(output)
    try:
        report(output, path, allow_pickle=allow_pickle, sample_records=sample, sample_shards=shards)
    except (DaskPrepError, OSError, ValueError) as exc:
        raise _Fail(f"{type(exc).__name__}: {exc}") from None
    click.echo(path)


def demo_inputs() -> tuple[str, list[str]]:
    """The Python standard library's own sources: a real corpus on every machine."""
    root = sysconfig.get_paths()["stdlib"]
    # installed packages are not the standard library (only the folders there are named,
    # so the exclude list warns about nothing)
    return root, [name for name in ("site-packages", "dist-packages") if os.path.isdir(os.path.join(root, name))]


@main.command()
@click.argument("output", default="dask-prep-demo")
@click.option("--workers", type=click.IntRange(min=1),
              help="local worker processes (default: dask config dask-prep.workers, else dask.system.CPU_COUNT)")
@click.option("--format", "format_", type=click.Choice(format_names()), default="parquet")
@click.option("--overwrite", is_flag=True, help="replace an earlier demo output")
def demo(output, workers, format_, overwrite):
    """Run the whole job on the Python standard library's sources (sentences converter)."""
    root, exclude = demo_inputs()
    click.echo(f"corpus: the Python standard library's .py files under {root}", err=True)
    _run([root], output, converter="sentences", suffixes=[".py"], exclude=exclude,
         format=format_, workers=workers, overwrite=overwrite)
    if format_ == "parquet":
        from .read.shardset import open as open_
        ds = open_(output)
        click.echo("\nfirst records:")
        for rec in ds.read_shard(0)[:3]:
            click.echo(f"  {json.dumps(rec, ensure_ascii=False)[:110]}")
    click.echo(f"\nnext: dask-prep info {output}   |   dask-prep verify {output}")


@main.group("tokenizer")
def tokenizer_group():
    """Tokenizers for --tokenizer."""


@tokenizer_group.command("train")
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="the tokenizer.json to write")
@click.option("--vocab-size", type=click.IntRange(min=258), required=True, help="tokens in the vocabulary")
@click.option("--sample", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True,
              help="fraction of the documents to train on (chosen by --seed)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--min-frequency", type=click.IntRange(min=1), default=2, show_default=True,
              help="merge only pairs seen at least this often")
@click.option("--special", "specials", multiple=True,
              help="special token (repeatable; default <|endoftext|>, the EOS --tokenizer finds)")
@click.option("--text-field", default="text", show_default=True, help="field of dict records to train on")
@convert_options()
@cluster_options()
def tokenizer_train(inputs, output, vocab_size, sample, seed, min_frequency, specials, text_field,
                    convert, cluster):
    """Train a byte-level BPE tokenizer on INPUT... (read on the cluster)."""
    from .tokens.train import train_tokenizer
    try:
        result = train_tokenizer(list(inputs), output, vocab_size=vocab_size, sample=sample, seed=seed,
                                 min_frequency=min_frequency, special_tokens=specials or ("<|endoftext|>",),
                                 text_field=text_field, convert=convert, cluster=cluster)
    except (ConverterNotFoundError, ValueError) as exc:
        raise _Usage(str(exc)) from None
    except Exception as exc:
        raise _Fail(f"{type(exc).__name__}: {_one_line(exc)}") from None
    click.echo(result.summary())


if __name__ == "__main__":  # pragma: no cover
    main(prog_name="dask-prep")
