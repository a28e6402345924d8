"""One writer at a time, max_errors, and the trust boundary of pickle."""
import json
import os
import pickle
import subprocess
import sys
import time

import dask.bag as db
import pytest

import dask_prep as dp
from dask_prep.errors import OutputInUseError, TooManyErrorsError
from helpers import write


def bag(n=6):
    return db.from_sequence([{"i": i} for i in range(n)], npartitions=2)


def test_live_lock_refuses_a_second_writer(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / ".dask-prep").mkdir()
        (tmp_path / ".dask-prep" / "lock").write_text(json.dumps(
            {"pid": holder.pid, "host": os.uname().nodename, "started": time.time()}))
        with pytest.raises(OutputInUseError, match=f"another run \\(pid {holder.pid}"):
            dp.write_shards(bag(), tmp_path, shard_size=4)
    finally:
        holder.kill()
        holder.wait()
    m = dp.write_shards(bag(), tmp_path, shard_size=4)  # the holder is gone: its lock is stale
    assert m["total_records"] == 6 and not (tmp_path / ".dask-prep").exists()


def test_second_real_run_is_refused_while_the_first_is_live(tmp_path):
    """The first run's converter waits until the second run was refused, so the
    test does not depend on how fast either starts."""
    release = tmp_path / "release"
    write(tmp_path / "slow.py", "import os, time\ndef slow(path):\n"
                                f"    deadline = time.time() + 120\n"
                                f"    while not os.path.exists({str(release)!r}) and time.time() < deadline:\n"
                                "        time.sleep(0.05)\n"
                                "    return [{'p': path}]\n")
    for i in range(20):
        write(tmp_path / "in" / f"{i:02d}.txt", "x" * 5000)
    cmd = [sys.executable, "-m", "dask_prep.cli", "run", str(tmp_path / "in"), "-o",
           str(tmp_path / "out"), "--converter", f"{tmp_path / 'slow.py'}:slow", "--workers", "1",
           "-q"]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not (tmp_path / "out" / ".dask-prep" / "lock").exists():
            assert time.time() < deadline and first.poll() is None, "first run never took the lock"
            time.sleep(0.05)
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert second.returncode == 1 and "being written by another run" in second.stderr
        release.write_text("go")
        assert first.wait(timeout=120) == 0, first.stderr.read()
    finally:
        release.write_text("go")
        if first.poll() is None:
            first.kill()
    assert dp.verify(tmp_path / "out").ok and len(dp.open(tmp_path / "out")) == 20


def test_lock_of_a_killed_run_does_not_block(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".dask-prep").mkdir()
    (tmp_path / ".dask-prep" / "lock").write_text(json.dumps(
        {"pid": dead.pid, "host": os.uname().nodename, "started": time.time()}))
    assert dp.write_shards(bag(), tmp_path, shard_size=4)["total_records"] == 6


def make_inputs(tmp_path, good=6, bad=4):
    for i in range(good):
        write(tmp_path / "in" / f"g{i}.txt", f"good {i}")
    for i in range(bad):
        write(tmp_path / "in" / f"b{i}.txt", b"\xff\xfe")
    return tmp_path / "in"


@pytest.mark.parametrize("limit,fails", [(3, True), (4, False), (0.3, True), (0.4, False)])
def test_max_errors_count_or_fraction(tmp_path, client, limit, fails):
    src = make_inputs(tmp_path)
    if fails:
        with pytest.raises(TooManyErrorsError, match="sources failed, more than max_errors"):
            dp.run([src], tmp_path / "out", max_errors=limit, client=client)
        assert not (tmp_path / "out" / ".manifest.json").exists()
        assert (tmp_path / "out" / ".errors.jsonl").read_text().count("UnicodeDecodeError") >= 1
    else:
        assert dp.run([src], tmp_path / "out", max_errors=limit, client=client).errors == 4


def test_every_source_failing_is_not_a_complete_empty_dataset(tmp_path, client):
    src = make_inputs(tmp_path, good=0, bad=3)
    with pytest.raises(TooManyErrorsError, match="3 sources failed"):
        dp.run([src], tmp_path / "out", client=client)
    write(src / "fixed.txt", "now one works")
    assert dp.run([src], tmp_path / "out", client=client, overwrite=True).records == 1


def test_parquet_path_never_unpickles(tmp_path, monkeypatch):
    dp.write_shards(bag(), tmp_path, shard_size=4)

    def refuse(*a, **k):
        raise AssertionError("pickle.loads called on the Parquet path")
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    ds = dp.open(tmp_path)
    assert sorted(r["i"] for r in ds) == list(range(6)) and dp.verify(tmp_path).ok
    assert len(ds.to_table()) == 6
