"""Helpers the tests share: real files, the serial reference loop, the CLI,
and real `dask scheduler`/`dask worker` processes. (Fixtures live in conftest.)"""
from __future__ import annotations

import contextlib
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode() if isinstance(text, str) else text
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path


def make_corpus(root: Path, n: int = 40, sentences: int = 30) -> list[Path]:
    """``n`` text files of varied size; file i holds ``sentences * (1 + i % 5)`` sentences."""
    paths = []
    for i in range(n):
        body = " ".join(f"Doc {i} sentence {j} has words." for j in range(sentences * (1 + i % 5)))
        name = f"d{i:03d}.txt.gz" if i % 7 == 0 else f"d{i:03d}.txt"
        paths.append(write(root / f"sub{i % 3}" / name, body))
    return paths


def serial_records(paths, converter) -> list:
    """The plain loop dask-prep must agree with."""
    out = []
    for p in sorted(map(str, paths)):
        try:
            out.extend(converter(p))
        except Exception:
            pass
    return out


def dask_prep_cli() -> list[str]:
    return [sys.executable, "-m", "dask_prep.cli"]


def env_without_client() -> dict:
    env = dict(os.environ)
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    return env


@contextlib.contextmanager
def dask_processes(d: Path, *, nworkers: int = 2, tls: tuple = ()):
    """`dask scheduler` + `dask worker --nworkers N --nthreads 1` processes on loopback.

    Yields the scheduler address once the workers are in (for plain TCP). Torn
    down even when the test fails: workers first, while their scheduler answers.
    """
    sfile = d / "scheduler.json"
    proto = ["--protocol", "tls"] if tls else []
    procs = [subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port",
         "0", "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(sfile), *proto, *tls],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        deadline = time.time() + 60
        while not sfile.exists():
            if time.time() > deadline:
                raise TimeoutError("dask scheduler did not write its scheduler file in 60 s")
            time.sleep(0.05)
        address = json.loads(sfile.read_text())["address"]
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file", str(sfile),
             "--nworkers", str(nworkers), "--nthreads", "1", "--host", "127.0.0.1",
             "--no-dashboard", *tls],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=d))
        if not tls:
            from distributed import Client
            with Client(address, timeout=30, set_as_default=False) as c:
                c.wait_for_workers(nworkers, timeout=60)
        yield address
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def one_line(r) -> str:
    """The one ``dask-prep: error: ...`` line a failed CLI run prints, and nothing else."""
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("dask-prep: error: "), lines[0]
    return lines[0]
