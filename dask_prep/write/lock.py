"""One writer at a time: a lock file in the output's work folder.

The lock names the process and host that holds it. Another run refuses to start
while the holder is alive: on the same host, the pid is checked; for a holder on
another host (a shared file system), the lock counts as live while its heartbeat
(the file's modification time, refreshed every 30 s) is recent. A lock left by a
killed run is stale and is taken over, so it never blocks a resume.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time

from ..errors import OutputInUseError
from .output import WORK, OutputDir

__all__ = ["RunLock"]

LOCK = f"{WORK}/lock"
HEARTBEAT = 30.0
STALE_AFTER = 4 * HEARTBEAT


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """Context manager holding ``OUT/.dask-prep/lock`` for the life of a run."""

    def __init__(self, out: OutputDir):
        self.out = out
        self.me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self) -> RunLock:
        holder = self._holder()
        if holder is not None:
            raise OutputInUseError(
                f"{self.out.url} is being written by another run (pid {holder.get('pid')} on "
                f"{holder.get('host')}, started {time.ctime(holder.get('started', 0))}); "
                "wait for it to finish or stop it")
        self.out.makedirs(WORK)
        self.out.write_json(LOCK, self.me)
        if not self.out.local:
            self._thread = threading.Thread(target=self._beat, daemon=True, name="dask-prep-lock")
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._holder(include_self=True) == self.me:
            self.out.remove(LOCK)
        if self.out.exists(WORK) and not self.out.listdir(WORK):
            self.out.remove_work()  # empty

    def _holder(self, include_self: bool = False) -> dict | None:
        """The live holder of the lock, or None if it is free or stale."""
        try:
            holder = json.loads(self.out.read_bytes(LOCK))
        except (FileNotFoundError, ValueError):
            return None
        if holder == self.me:
            return holder if include_self else None
        if holder.get("host") == self.me["host"]:
            return holder if _alive(int(holder.get("pid", -1))) else None
        age = time.time() - self.out.fs.modified(self.out.path(LOCK)).timestamp()
        return holder if age < STALE_AFTER else None

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            self.out.write_json(LOCK, self.me)
