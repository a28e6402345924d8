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
    finish (for progress), and a failure cancels the rest.
    """
    if not tasks:
        return []
    client = current_client()
    if client is None:
        results = list(dask.compute(*tasks))
        for r in results:
            if on_result:
                on_result(r)
        return results
    from distributed import as_completed
    futures = client.compute(tasks)
    if ON_SUBMIT.get() is not None:
        ON_SUBMIT.get()(futures)
    pending = {f.key: (i, f) for i, f in enumerate(futures)}
    results = [None] * len(futures)
    done = as_completed(futures, with_results=True)
    del futures  # hold each future only until its result is in: a result lost with
    try:         # a worker afterwards is not recomputed
        for fut, res in done:
            i, _ = pending.pop(fut.key)
            results[i] = res
            del fut
            if on_result:
                on_result(res)
    finally:
        for _, f in pending.values():
            f.cancel()
    return results
