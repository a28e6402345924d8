"""Where the work runs: a given client, a scheduler address, a notebook's client,
or an embedded ``LocalCluster`` bound to 127.0.0.1 (dashboard included)."""
from __future__ import annotations

import logging
import os
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["Session", "dask_session", "default_workers"]

logger = logging.getLogger(__name__)


@dataclass
class Session:
    client: object
    dashboard_link: str | None
    workers: int


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _nworkers(client) -> int:
    try:
        return len(client.scheduler_info(n_workers=-1)["workers"])
    except TypeError:
        return len(client.scheduler_info()["workers"])


@contextmanager
def _sigint_ignored():
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def dask_session(*, client=None, scheduler: str | None = None, workers: int | None = None,
                 memory_limit="auto", timeout: float = 10, security=None):
    """Yield a :class:`Session`; close what it started, never what it was given.

    Order: ``client`` if given; else connect to ``scheduler``; else the current
    default client (e.g. one made in a notebook); else start a LocalCluster of
    ``workers`` processes with one thread each (conversion holds the GIL).
    """
    from distributed import Client, LocalCluster

    if memory_limit != "auto" and (client is not None or scheduler is not None):
        raise ValueError("memory_limit applies to the local workers dask-prep starts, "
                         "not to a given client or scheduler")
    if client is not None:
        yield Session(client, client.dashboard_link, _nworkers(client))
        return
    if scheduler is not None:
        if workers is not None:
            raise ValueError("give either a scheduler address or a number of workers, not both")
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
    try:
        from distributed import default_client
        current = default_client()
    except ValueError:
        current = None
    if current is not None and workers is None:
        yield Session(current, current.dashboard_link, _nworkers(current))
        return
    n = workers or default_workers()
    # Workers import the writer (pyarrow and all) while they start, which
    # overlaps with discovery, instead of inside the first tasks. They start
    # with Ctrl-C ignored: a terminal sends SIGINT to the whole process group,
    # and only this process should react (by closing the cluster).
    with _sigint_ignored():
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address="127.0.0.1:0",
                               memory_limit=memory_limit, preload=["dask_prep.shard"],
                               silence_logs=logging.ERROR)
    try:
        c = Client(cluster)
        port = cluster.scheduler.http_server.port if cluster.scheduler.http_server else None
        link = f"http://127.0.0.1:{port}/status" if port else None
        try:
            yield Session(c, link, n)
        finally:
            c.close()
    finally:
        cluster.close()
