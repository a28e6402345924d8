"""Where the work runs: a given client, a scheduler address or scheduler file, a
notebook's client, Dask's configured ``scheduler-address``, or an embedded
``LocalCluster`` bound to 127.0.0.1 (dashboard included).

Precedence, first match wins: ``client``; ``scheduler`` (``--scheduler``);
``scheduler_file`` (``--scheduler-file``, as ``dask scheduler
--scheduler-file`` writes it); ``workers`` (``--workers``: a local cluster of
that many); the current default client (a notebook's); dask config
``scheduler-address`` (``DASK_SCHEDULER_ADDRESS``); a local cluster of dask
config ``dask-prep.workers`` workers, by default ``dask.system.CPU_COUNT``
(which respects a container's CPU limit).
"""
from __future__ import annotations

import asyncio
import functools
import logging
import os
import sys
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["Session", "dask_session", "default_workers", "configured_scheduler", "scheduler_from_file",
           "starts_local_cluster", "tokenizer_threads"]

logger = logging.getLogger(__name__)


@dataclass
class Session:
    client: object
    dashboard_link: str | None
    workers: int


def default_workers() -> int:
    """Local workers when none are asked for: dask config ``dask-prep.workers``,
    else Dask's ``CPU_COUNT`` (the CPU count, capped by a cgroup's CPU quota)."""
    from .. import config
    n = config.get("workers")
    if n is None:
        from dask.system import CPU_COUNT
        return CPU_COUNT
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"{config.source('workers')} must be a positive integer, not {n!r}")
    return n


def local_memory_limit(given):
    """``given``, or dask config ``dask-prep.memory-limit`` when it is ``"auto"``."""
    from .. import config
    from ..options import parse_size
    value = given if given != "auto" else config.get("memory-limit")
    if value in ("auto", None):
        return "auto"
    try:
        return parse_size("memory_limit", value)
    except ValueError as exc:
        raise ValueError(f"{config.source('memory-limit')}: {exc}") from None


def configured_scheduler() -> str | None:
    """Dask's own ``scheduler-address`` setting (``DASK_SCHEDULER_ADDRESS``)."""
    import dask
    return dask.config.get("scheduler-address", None) or None


def scheduler_from_file(path) -> str:
    """The address in a scheduler file written by ``dask scheduler --scheduler-file``."""
    import json
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            address = json.load(f)["address"]
    except FileNotFoundError:
        raise ValueError(f"scheduler file {path!r} does not exist; start the scheduler with "
                         f"'dask scheduler --scheduler-file {path}' (on a file system the "
                         "workers and this machine share)") from None
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError(f"scheduler file {path!r} is not as 'dask scheduler --scheduler-file' "
                         "writes it (a JSON object with the scheduler's 'address')") from None
    if not isinstance(address, str):
        raise ValueError(f"scheduler file {path!r} has address {address!r}, not a string")
    return address


def current_client():
    from ..runtime.execute import current_client
    return current_client()


def starts_local_cluster(opts) -> bool:
    """Whether :func:`dask_session` would start a LocalCluster for ``opts``."""
    if opts.client is not None or opts.scheduler is not None or opts.scheduler_file is not None:
        return False
    if opts.workers is not None:
        return True
    return current_client() is None and configured_scheduler() is None


def _nworkers(client) -> int:
    try:
        return len(client.scheduler_info(n_workers=-1)["workers"])
    except TypeError:
        return len(client.scheduler_info()["workers"])


@contextmanager
def _signals_held():
    """While the cluster starts, the caller's Python handlers of SIGINT and
    SIGTERM are replaced by one that only notes the signal; then they are
    restored and a signal noted meanwhile is raised again: held, not lost, and
    never raised halfway through starting processes (the workers themselves
    ignore Ctrl-C: ``worker_signals``)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    saved = {sig: signal.signal(sig, lambda signum, frame: held.append(signum))
             for sig in (signal.SIGINT, signal.SIGTERM) if callable(signal.getsignal(sig))}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(held):
            signal.raise_signal(sig)


#: How often the embedded cluster's own timers fire. Dask's defaults (a 20 ms
#: tick, 10 ms profiler samples, memory checks every 100 ms, system samples every
#: 500 ms) wake each worker's event loop hundreds of times a second, and each
#: wake-up takes the GIL from the conversion thread: measured, they made the
#: same partitions 6-8% slower than in plain processes. Coarser timers keep the
#: dashboard (profile page included) and the memory limit, at these periods.
#:
#: Nor does the embedded cluster set ``MALLOC_TRIM_THRESHOLD_`` (Dask sets 64 KiB
#: so that freed memory goes back to the OS at once, for workers that hold data
#: between tasks). dask-prep's workers hold none; with it, every shard-sized
#: allocation was faulted in afresh: twice the system time, 10% of the worker
#: CPU on one big JSON-lines file. Set it in your environment to have it anyway.
LOCAL_SETTINGS = {
    "distributed.admin.tick.interval": "500ms",
    "distributed.worker.profile.interval": "100ms",
    "distributed.worker.memory.monitor-interval": "500ms",
    "distributed.admin.system-monitor.interval": "1s",
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
}

#: What each worker imports as it starts (Dask's worker preload), Ctrl-C's first.
WORKER_PRELOAD = ["dask_prep.runtime.worker_signals", "dask_prep.write.partition"]
#: What the fork server imports once, so each worker starts with it loaded.
WORKER_MODULES = [WORKER_PRELOAD[0], "distributed", "pandas", WORKER_PRELOAD[1]]


def _start_method() -> str:
    """``forkserver`` where it exists and Dask's setting is its default
    (``spawn``); else that setting.

    A spawned worker starts a new interpreter and imports dask, distributed,
    pyarrow and pandas: ~0.3 s more on a 2-core machine, on every run, and
    0.2 s more to close (the interpreter's teardown). A fork server imports
    them once, while the scheduler starts, and forks each worker ready. Unlike
    ``fork``, it never copies the client's threads.
    """
    import multiprocessing

    import dask

    method = dask.config.get("distributed.worker.multiprocessing-method")
    if method != "spawn" or "forkserver" not in multiprocessing.get_all_start_methods():
        return method
    return "forkserver"


def _worker_environ() -> dict:
    """The environment the workers start with: this process's, and what Dask's
    nanny sets before spawning (``OMP_NUM_THREADS``, ..., ``PYTHONHASHSEED``
    as the nanny sets it: the same string hashes in every worker)."""
    import dask

    environ = {k: os.environ.get(k, str(v))
               for k, v in dask.config.get("distributed.nanny.pre-spawn-environ").items() if v is not None}
    if environ.get("PYTHONHASHSEED") in (None, "0"):
        environ["PYTHONHASHSEED"] = "6640"
    return {**os.environ, **environ}


@contextmanager
def _caller_left_alone():
    """Leave the caller's ``os.environ`` and multiprocessing as they were.

    Dask's nanny writes its pre-spawn environment into this process's
    ``os.environ`` before each spawn (``distributed/nanny.py``), and the fork
    server must start with the workers' environment (it keeps the one it
    started with); what either wrote is put back (but ``__DASK_*``, Dask's own
    markers), and so are the fork server's preload list and the default start
    method. The fork server itself keeps running for the next session of this
    process: stopping it costs every later run ~0.7 s more to start and ~0.3 s
    more to close (measured, 2 workers); it serves only workers started by
    Dask with the ``forkserver`` method.
    """
    import multiprocessing
    from multiprocessing import forkserver

    before, method = dict(os.environ), multiprocessing.get_start_method(allow_none=True)
    server = forkserver._forkserver
    preload = list(getattr(server, "_preload_modules", ()))
    try:
        yield
    finally:
        if hasattr(server, "_preload_modules"):
            server._preload_modules = preload
        if multiprocessing.get_start_method(allow_none=True) != method:
            # starting a fork server fixes the default start method (spawn.get_preparation_data)
            multiprocessing.set_start_method(method, force=True)
        for k in [k for k in os.environ if k not in before and not k.startswith("__DASK_")]:
            del os.environ[k]
        for k, v in before.items():
            if os.environ.get(k) != v:
                os.environ[k] = v


def _start_fork_server(environ: dict) -> None:
    """Start the fork server with the workers' environment (it keeps the one
    it starts with, and forks every worker from it)."""
    import multiprocessing
    from multiprocessing import forkserver

    multiprocessing.get_context("forkserver").set_forkserver_preload(WORKER_MODULES)
    if getattr(forkserver._forkserver, "_forkserver_pid", None) is None:
        os.environ.update(environ)  # put back by _caller_left_alone
    # It starts with Ctrl-C blocked: it ignores SIGINT only once its imports are
    # done, and a Ctrl-C to the process group before that printed its traceback.
    # (Blocked, not ignored: the workers it forks ignore it themselves.)
    # (The resource tracker first: starting it unblocks SIGINT again.)
    from multiprocessing import resource_tracker
    resource_tracker.ensure_running()
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        forkserver.ensure_running()  # returns at once; the server imports in the background
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


@contextmanager
def tokenizer_threads(tokenizing: bool):
    """Local workers started meanwhile tokenize in one thread each.

    A LocalCluster runs one single-threaded worker process per core;
    ``encode_batch`` would add a Rust thread pool of one thread per core in
    each of them (oversubscription). ``RAYON_NUM_THREADS=1`` goes into the
    workers' environment only (Dask's ``distributed.nanny.environ``, for the
    workers started inside this block), never into this process's; a value
    already set in the environment wins. Workers of a given cluster keep
    their own environment.
    """
    if not tokenizing:
        yield
        return
    import dask
    import distributed  # noqa: F401  (its defaults load first: the block restores only our key)
    with dask.config.set({"distributed.nanny.environ.RAYON_NUM_THREADS": "1"}):
        yield


@contextmanager
def dask_session(options=None, *, timeout: float | None = None, **fields):
    """Yield a :class:`Session`; close what it started, never what it was given.

    ``options`` is a :class:`~dask_prep.options.ClusterOptions` (or give its
    fields as keywords). Order (the module's docstring): its ``client``; its
    ``scheduler`` or ``scheduler_file``; a local cluster of ``workers`` if
    given; the current default client (e.g. one made in a notebook); dask
    config ``scheduler-address``; else a LocalCluster of
    :func:`default_workers` processes with one thread each (conversion holds
    the GIL).
    """
    from distributed import Client

    from ..options import ClusterOptions, split
    (opts,) = split(fields, ClusterOptions, given={ClusterOptions: options} if options else None)
    client, scheduler, security = opts.client, opts.scheduler, opts.security
    if timeout is None:  # DASK_DASK_PREP__CONNECT_TIMEOUT=2s, or dask config dask-prep.connect-timeout
        from dask.utils import parse_timedelta

        from .. import config
        timeout = parse_timedelta(config.get("connect-timeout"))
    if client is not None:
        yield Session(client, client.dashboard_link, _nworkers(client))
        return
    if scheduler is None and opts.scheduler_file is not None:
        scheduler = scheduler_from_file(opts.scheduler_file)
    current = None if scheduler is not None or opts.workers is not None else current_client()
    if current is not None:
        yield Session(current, current.dashboard_link, _nworkers(current))
        return
    if scheduler is None and opts.workers is None:
        scheduler = configured_scheduler()
    if scheduler is not None:
        if scheduler.startswith("tls://") and security is None:
            raise ValueError(f"the scheduler {scheduler} speaks TLS: pass --tls-ca-file, --tls-cert "
                             "and --tls-key (in Python: security=distributed.Security(...))")
        try:
            c = Client(scheduler, timeout=timeout, security=security)
        except (OSError, TimeoutError) as exc:
            raise ConnectionError(f"cannot reach the Dask scheduler at {scheduler} "
                                  f"within {timeout:g}s: {exc}") from None
        try:
            yield Session(c, c.dashboard_link, _nworkers(c))
        finally:
            c.close()
        return
    with _local_cluster(opts.workers or default_workers(), local_memory_limit(opts.memory_limit)) as session:
        yield session


@functools.cache
def _own_local_cluster():
    """Dask's ``LocalCluster``, except that it never gives a worker up.

    ``SpecCluster`` closes a worker's nanny for good when no worker of its name
    is back ``distributed.deploy.lost-worker-timeout`` (15 s) after one was
    lost: meant for a batch job that vanished. A local nanny is in this process
    and restarts its worker itself; under load, with a file that kills each
    worker it is given, the check could fall between two restarts, close every
    nanny, and leave the run waiting for workers forever.
    """
    from distributed import LocalCluster
    from distributed.deploy.cluster import Cluster

    class OwnLocalCluster(LocalCluster):
        def _update_worker_status(self, op, msg):
            Cluster._update_worker_status(self, op, msg)  # (not SpecCluster's)
    return OwnLocalCluster


#: Seconds to wait for the embedded cluster to close: a worker that will not
#: stop is killed with the process that owns it, never waited for forever.
CLOSE_TIMEOUT = 20


def _close(thing) -> None:
    """Close the embedded client or cluster, waiting at most :data:`CLOSE_TIMEOUT`."""
    try:
        thing.close(timeout=CLOSE_TIMEOUT)
    except (TimeoutError, asyncio.TimeoutError):  # (distinct before Python 3.11)
        # (one a worker's death left restarting: the run's own outcome is what
        # the caller needs to hear, not this)
        logger.info("the local Dask cluster did not close within %ds; its processes end with "
                    "this one", CLOSE_TIMEOUT)


def _settle(client, n: int, timeout: float = 10) -> None:
    """Let a worker the nanny is restarting (one that a task killed) finish
    starting before the cluster closes: one closed halfway through its start
    prints a traceback of Dask's own."""
    try:
        client.wait_for_workers(n, timeout=timeout)
    except Exception:  # (a timeout: close it anyway)
        logger.debug("closing the cluster with fewer than %d workers", n, exc_info=True)


def _worker_log_level() -> int:
    """The workers log errors (a task's failure is also raised to the caller),
    or less if the caller quietened ``distributed`` further (the CLI does, since
    it reports a failed run in one line)."""
    return max(logging.ERROR, logging.getLogger("distributed").getEffectiveLevel())


@contextmanager
def _local_cluster(n: int, memory_limit, tls: bool | None = None):
    """``tls``: the cluster speaks TLS with credentials of its own, made for it
    (``Security.temporary()``), so that no other local user can connect to its
    scheduler and run code as this user; default: dask config
    ``dask-prep.local-tls`` (True)."""
    from distributed import Client
    from distributed.security import Security

    # Workers import the writer (pyarrow and all) while they start, which
    # overlaps with discovery, instead of inside the first tasks. They start
    # with Ctrl-C ignored (worker_signals); this process holds it meanwhile
    # (_signals_held).
    import dask

    cluster = None
    with _caller_left_alone():
        try:
            with _signals_held(), dask.config.set(LOCAL_SETTINGS):
                environ = _worker_environ()
                method = _start_method()
                if method == "forkserver":
                    _start_fork_server(environ)
                if tls is None:
                    tls = dask.config.get("dask-prep.local-tls", True)
                security = Security.temporary() if tls else None
                with dask.config.set({"distributed.worker.multiprocessing-method": method}):
                    cluster = _own_local_cluster()(n_workers=n, threads_per_worker=1, processes=True,
                                           host="127.0.0.1", dashboard_address="127.0.0.1:0",
                                           memory_limit=memory_limit, preload=WORKER_PRELOAD,
                                           env=environ, silence_logs=_worker_log_level(), security=security)
            # a signal held during start-up was raised above: the cluster is closed
            c = Client(cluster)
            port = cluster.scheduler.http_server.port if cluster.scheduler.http_server else None
            link = f"http://127.0.0.1:{port}/status" if port else None
            try:
                yield Session(c, link, n)
            finally:
                if not isinstance(sys.exc_info()[1], KeyboardInterrupt):  # (Ctrl-C: close at once)
                    _settle(c, n)
                _close(c)
        finally:
            if cluster is not None:
                _close(cluster)
