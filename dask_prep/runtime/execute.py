"""Execute: compute delayed tasks on the current Dask client, in order, with progress."""
from __future__ import annotations

import contextvars
from collections.abc import Callable

import dask

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
    try:         # a worker afterwards is not recomputed
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
    finally:
        for _, f in pending.values():
            f.cancel()
        for f in extra.values():
            f.cancel()
    return results
