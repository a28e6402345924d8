"""Shared fixtures: one real LocalCluster of processes for the session, real files."""
from __future__ import annotations

import gzip
import os
import sys
from pathlib import Path

import dask
import pytest

HERE = Path(__file__).parent


@pytest.fixture(autouse=True)
def _sync_by_default():
    """Without a distributed client, run graphs in-process (fast, debuggable)."""
    with dask.config.set(scheduler="sync"):
        yield


@pytest.fixture(scope="session")
def cluster():
    from distributed import LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0", memory_limit="2GiB") as c:
        yield c


@pytest.fixture
def client(cluster):
    """A client on the session cluster, the default for this test only."""
    from distributed import Client
    with Client(cluster, set_as_default=True) as c:
        yield c


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
