"""Execute: compute delayed tasks on the current Dask client, in order, with progress."""
from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable

import dask

logger = logging.getLogger(__name__)

__all__ = ["execute", "current_client", "ON_SUBMIT"]


def current_client():
    try:
        from distributed import default_client
        return default_client()
    except (ImportError, ValueError):
        return None


#: Called with the futures ``execute`` submits (e.g. to show a progress widget).
ON_SUBMIT: contextvars.ContextVar = contextvars.ContextVar("dask_prep_on_submit", default=None)


def execute(tasks: list, on_result: Callable | None = None) -> list:
    """Compute delayed ``tasks`` on the current Dask client (or scheduler); keep order.

    With a distributed client, results are handed to ``on_result`` as they
    finish (for progress), and a failure cancels the rest. ``on_result`` may
    return more delayed tasks: they run ahead of the waiting ones, their
    results go to ``on_result`` too, and they are not in the returned list.

    When it stops early (an error, ``on_result`` raising, Ctrl-C), the tasks
    not started are cancelled and the ones already running are waited for:
    Dask cannot stop a running task, and one left running would go on
    writing into the output after the call returned and the run's lock was
    let go (a notebook's rerun, or the next run on the same cluster, would
    race it).
    """
    if not tasks:
        return []
    client = current_client()
    if client is None:
        results = list(dask.compute(*tasks))
        batch = results
        while batch and on_result:
            more = [t for r in batch for t in on_result(r) or ()]
            batch = list(dask.compute(*more)) if more else []
        return results
    from distributed import as_completed
    futures = client.compute(tasks)
    if ON_SUBMIT.get() is not None:
        ON_SUBMIT.get()(futures)
    pending = {f.key: (i, f) for i, f in enumerate(futures)}
    extra: dict = {}
    results = [None] * len(futures)
    done = as_completed(futures, with_results=True)
    del futures  # hold each future only until its result is in: a result lost with
    finished = False  # a worker afterwards is not recomputed
    try:
        for fut, res in done:
            if fut.key in extra:
                del extra[fut.key]
            else:
                i, _ = pending.pop(fut.key)
                results[i] = res
            del fut
            more = on_result(res) if on_result else None
            if more:
                for f in client.compute(more, priority=1):  # ahead of queued tasks
                    extra[f.key] = f
                    done.add(f)
        finished = True
    finally:
        left = [f for _, f in pending.values()] + list(extra.values())
        if left and not finished:
            _stop(client, left)
        for f in left:
            f.cancel()
    return results


def _stop(client, futures: list) -> None:
    """Cancel the ``futures`` not running yet; wait for the running ones."""
    from distributed import wait
    try:
        running = {k for keys in client.processing().values() for k in keys}
    except Exception:  # the scheduler is gone: nothing runs there any more
        return
    waiting = [f for f in futures if f.key in running]
    client.cancel([f for f in futures if f.key not in running])
    if waiting:
        logger.info("stopping: waiting for %d running task(s) to finish", len(waiting))
        wait(waiting)
