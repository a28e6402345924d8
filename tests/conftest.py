"""Shared fixtures: one real LocalCluster of processes for the session (helpers: helpers.py)."""
from __future__ import annotations

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
