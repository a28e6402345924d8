"""One writer at a time: a lock file in the output's work folder.

The lock is taken by an exclusive create, so of any number of runs started at
the same instant exactly one gets it: locally (and on NFS) the lock is written
under a unique name and hard-linked to ``.dask-prep/lock``, which fails if the
name exists; on fsspec stores it is a create-if-absent write (``If-None-Match``
on S3), and since not every store makes that atomic, the winner reads the lock
back after a short pause and gives up if another run's token is there.

The lock names the run's token, process and host. Another run refuses to start
while the holder is alive: on the same host (the same pid namespace of the same
boot), the pid is checked; a holder on another host, which a shared file system
allows, counts as live while its heartbeat (the lock's modification time,
refreshed every 30 s by every holder, local or not) is recent. A lock left by a
killed run is stale and is taken over (renamed away, checked to be the very lock
judged stale, then created anew), so it never blocks a resume.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid

from ..errors import OutputInUseError
from .output import WORK, OutputDir

__all__ = ["RunLock", "host_id"]

logger = logging.getLogger(__name__)

LOCK = f"{WORK}/lock"
HEARTBEAT = 30.0
STALE_AFTER = 4 * HEARTBEAT
SETTLE = 0.5  # fsspec stores: seconds before reading a fresh lock back


def host_id() -> str:
    """Who can check a pid: the host name, plus this boot and pid namespace where
    Linux tells them (two containers with one host name are two hosts)."""
    parts = [socket.gethostname()]
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            parts.append(f.read().strip()[:8])
        parts.append(os.readlink("/proc/self/ns/pid").strip("pid:[]"))
    except OSError:
        pass
    return "/".join(parts)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0
    return True


class RunLock:
    """Context manager holding ``OUT/.dask-prep/lock`` for the life of a run."""

    def __init__(self, out: OutputDir):
        self.out = out
        self.me = {"token": uuid.uuid4().hex, "pid": os.getpid(), "host": host_id(),
                   "started": time.time()}
        self._stop = threading.Event()
        self._thread = None
        self.lost = False  # the heartbeat found another run's token in the lock

    def __enter__(self) -> RunLock:
        for _ in range(5):
            try:
                if self._create():
                    break
            except FileNotFoundError:  # the work folder went between making it and writing
                continue
            holder = self._read()
            if holder is not None and self._live(holder):
                raise self._in_use(holder)
            if holder is not None:
                self._take_over(holder)
        else:
            raise self._in_use(self._read() or {})
        self._thread = threading.Thread(target=self._beat, daemon=True, name="dask-prep-lock")
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._mine():
            self.out.remove(LOCK)
        if self.out.exists(WORK) and not self.out.listdir(WORK):
            try:
                self.out.fs.rmdir(self.out.path(WORK))
            except (OSError, NotImplementedError):
                pass  # another run is creating its lock in it

    def check(self) -> None:
        """Raise if another run took the lock over (before committing)."""
        if self.lost or not self._mine():
            raise OutputInUseError(f"{self.out.url}: another run took over this run's lock "
                                   "(its heartbeat had stopped for too long); this run stops")

    # -- the lock file --------------------------------------------------------------

    def _data(self) -> bytes:
        return (json.dumps(self.me) + "\n").encode()

    def _create(self) -> bool:
        """Create the lock if absent; True if this run holds it now."""
        out, path = self.out, self.out.path(LOCK)
        if out.local:
            tmp = f"{path}.{self.me['token']}"
            out.makedirs(WORK)  # again: a run that just finished may have removed it
            with open(tmp, "wb") as f:
                f.write(self._data())
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)  # atomic, fails if the lock exists (NFS too)
                return True
            except (FileExistsError, FileNotFoundError):
                return False
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
        try:
            out.fs.pipe_file(path, self._data(), mode="create")
        except FileExistsError:
            return False
        except (OSError, ValueError) as exc:  # a store refusing the conditional write
            if "precondition" not in str(exc).lower() and "exist" not in str(exc).lower():
                raise
            return False
        time.sleep(SETTLE)  # then re-check: the create may not have been atomic
        return self._mine()

    def _read(self) -> dict | None:
        try:
            holder = json.loads(self.out.fresh().read_bytes(LOCK))
        except (FileNotFoundError, ValueError, UnicodeDecodeError):
            return None if not self.out.exists(LOCK) else {}
        return holder if isinstance(holder, dict) else {}

    def _mine(self) -> bool:
        holder = self._read()
        return bool(holder) and holder.get("token") == self.me["token"]

    def _age(self) -> float:
        try:
            return time.time() - self.out.fresh().fs.modified(self.out.path(LOCK)).timestamp()
        except FileNotFoundError:
            return float("inf")

    def _live(self, holder: dict) -> bool:
        """Whether the run that wrote ``holder`` may still be writing."""
        if holder.get("host") == self.me["host"] and isinstance(holder.get("pid"), int):
            return _alive(holder["pid"])
        return self._age() < STALE_AFTER  # elsewhere, or unreadable: the heartbeat says

    def _take_over(self, stale: dict) -> None:
        """Move a stale lock away, making sure it is the one judged stale."""
        away = f"{LOCK}.stale-{self.me['token']}"
        try:
            self.out.replace(LOCK, away)
        except FileNotFoundError:
            return  # another run moved it first
        try:
            moved = json.loads(self.out.read_bytes(away))
        except (FileNotFoundError, ValueError, UnicodeDecodeError):
            moved = {}
        if moved != stale and self.out.local:  # a fresh lock taken just now: put it back
            try:
                os.link(self.out.path(away), self.out.path(LOCK))
            except FileExistsError:
                pass
        logger.info("%s: took over the stale lock of pid %s on %s", self.out.url,
                    stale.get("pid"), stale.get("host"))
        self.out.remove(away)

    def _in_use(self, holder: dict) -> OutputInUseError:
        return OutputInUseError(
            f"{self.out.url} is being written by another run (pid {holder.get('pid')} on "
            f"{holder.get('host')}, started {time.ctime(holder.get('started', 0))}); "
            "wait for it to finish or stop it")

    def _beat(self) -> None:
        """Refresh the lock's modification time, so runs on other hosts see it live."""
        path = self.out.path(LOCK)
        while not self._stop.wait(HEARTBEAT):
            try:
                if not self._mine():
                    self.lost = True
                    logger.error("%s: another run took over this run's lock", self.out.url)
                    return
                if self.out.local:
                    os.utime(path)
                else:
                    self.out.fs.pipe_file(path, self._data())
            except OSError as exc:  # a store briefly unreachable: try again next beat
                logger.warning("%s: lock heartbeat failed: %s", self.out.url, exc)
