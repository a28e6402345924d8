"""Run an iterator in a background thread, a bounded number of items ahead.

The producer thread fills a :class:`queue.Queue` of ``size`` items and blocks
when it is full (backpressure: memory stays bounded); the consumer takes items
as it needs them, so it does not wait as long as the producer keeps up. An
exception in the producer is raised in the consumer. ``close()`` (also called
when the prefetcher is garbage-collected) stops the thread and joins it.

>>> p = Prefetcher(lambda: iter(range(5)), size=2)
>>> list(p), p.alive
([0, 1, 2, 3, 4], False)
"""
from __future__ import annotations

import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator

__all__ = ["Prefetcher"]

_END = object()


class _Raised:
    def __init__(self, exc: BaseException):
        self.exc = exc


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    """Put ``item`` unless asked to stop first; True if it went in."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def _produce(make_iter: Callable[[], Iterator], q: queue.Queue, stop: threading.Event) -> None:
    it = None
    try:
        it = make_iter()
        for item in it:
            if not _put(q, item, stop):
                return
        _put(q, _END, stop)
    except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
        _put(q, _Raised(exc), stop)
    finally:
        close = getattr(it, "close", None)
        if close:
            close()


def _shutdown(stop: threading.Event, q: queue.Queue, thread: threading.Thread) -> None:
    stop.set()
    while thread.is_alive():
        try:
            while True:
                q.get_nowait()
        except queue.Empty:
            pass
        thread.join(timeout=0.05)


class Prefetcher:
    """Iterate ``make_iter()`` in a daemon thread, at most ``size`` items ahead."""

    def __init__(self, make_iter: Callable[[], Iterator], *, size: int, name: str = "dask-prep-prefetch"):
        if size < 1:
            raise ValueError(f"prefetch size must be >= 1, not {size}")
        self._queue: queue.Queue = queue.Queue(maxsize=size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=_produce, args=(make_iter, self._queue, self._stop),
                                        name=name, daemon=True)
        self._thread.start()
        self._finalizer = weakref.finalize(self, _shutdown, self._stop, self._queue, self._thread)
        self._done = False
        self.waited = 0.0  # seconds the consumer spent waiting for an item

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self):
        if self._done:
            raise StopIteration
        t0 = time.perf_counter()
        item = self._get()
        self.waited += time.perf_counter() - t0
        if item is _END or isinstance(item, _Raised):
            self._done = True
            self.close()
            if isinstance(item, _Raised):
                raise item.exc
            raise StopIteration
        return item

    def _get(self):
        while True:
            try:
                return self._queue.get(timeout=0.5)
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    return _Raised(RuntimeError("the prefetch thread ended without a result"))

    def close(self) -> None:
        """Stop the producer and join its thread (idempotent)."""
        self._done = True
        self._finalizer()
