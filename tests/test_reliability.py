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
from dask_prep.write.lock import host_id
from helpers import write


def bag(n=6):
    return db.from_sequence([{"i": i} for i in range(n)], npartitions=2)


def test_live_lock_refuses_a_second_writer(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / ".dask-prep").mkdir()
        (tmp_path / ".dask-prep" / "lock").write_text(json.dumps(
            {"pid": holder.pid, "host": host_id(), "started": time.time()}))
        with pytest.raises(OutputInUseError, match=f"another run \\(pid {holder.pid}"):
            dp.write_shards(bag(), tmp_path, shard_size=4)
    finally:
        holder.kill()
        holder.wait()
    m = dp.write_shards(bag(), tmp_path, shard_size=4)  # the holder is gone: its lock is stale
    assert m["total_records"] == 6 and not (tmp_path / ".dask-prep").exists()


@pytest.mark.slow  # a real CLI run or several: seconds
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
        {"pid": dead.pid, "host": host_id(), "started": time.time()}))
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


# -- the lock: an exclusive create, and a heartbeat wherever the holder may be ----

N_RECORDS = 3000


def _concurrent_writer(out, shard_size, barrier, results):
    """One of many writers started at the same instant (a forked process)."""
    import dask
    from dask_prep.errors import OutputExistsError
    dask.config.set(scheduler="sync")
    b = db.from_sequence([{"i": i} for i in range(N_RECORDS)], npartitions=6)
    barrier.wait()
    try:
        m = dp.write_shards(b, out, shard_size=shard_size)
        results.put(("ok", shard_size, m["total_records"]))
    except (OutputInUseError, OutputExistsError) as exc:
        results.put((type(exc).__name__, shard_size, str(exc)))
    except BaseException as exc:  # noqa: BLE001 - reported to the test, which fails on it
        results.put(("crash", shard_size, repr(exc)))


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(3))
def test_twenty_writers_at_the_same_instant_leave_one_exact_dataset(tmp_path, trial):
    """20 processes call write_shards on one folder at once, with different shard
    sizes: one takes the lock, the others are refused with one line (or, once the
    first is done, find a dataset of other options), and the committed dataset
    holds every record exactly once."""
    import multiprocessing as mp
    ctx = mp.get_context("fork")
    out = tmp_path / f"out #{trial} ü"
    barrier, results = ctx.Barrier(20), ctx.Queue()
    sizes = [100 + 37 * k + trial for k in range(20)]
    procs = [ctx.Process(target=_concurrent_writer, args=(out, s, barrier, results)) for s in sizes]
    for p in procs:
        p.start()
    got = [results.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    kinds = [k for k, _, _ in got]
    assert "crash" not in kinds, [g for g in got if g[0] == "crash"]
    assert kinds.count("ok") >= 1 and kinds.count("OutputInUseError") >= 1, kinds
    assert all("\n" not in msg for k, _, msg in got if k != "ok")
    ds = dp.open(out)
    assert dp.verify(out).ok
    assert sorted(r["i"] for r in ds) == list(range(N_RECORDS))
    winners = {s for k, s, _ in got if k == "ok"}
    assert winners == {ds.manifest["shard_size"]}, (winners, ds.manifest["shard_size"])
    assert not (out / ".dask-prep").exists()


HOLDER = '''
import sys, time
import dask_prep.write.lock as lock
from dask_prep.write.output import OutputDir
lock.host_id = lambda: "another-host"
lock.HEARTBEAT = 0.3
with lock.RunLock(OutputDir(sys.argv[1])):
    print("held", flush=True)
    time.sleep(600)
'''


@pytest.mark.slow
def test_a_live_writer_on_another_host_keeps_its_lock_by_heartbeat(tmp_path, monkeypatch):
    """A holder whose pid cannot be checked (another host on a shared file system)
    is live while its heartbeat runs, however long the run; once it is killed the
    lock goes stale and the next run takes it over."""
    import dask_prep.write.lock as lock
    monkeypatch.setattr(lock, "STALE_AFTER", 2.0)
    out = tmp_path / "shared out"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        time.sleep(3 * lock.STALE_AFTER)  # well past STALE_AFTER since the lock was made
        assert json.loads((out / ".dask-prep" / "lock").read_text())["host"] == "another-host"
        with pytest.raises(OutputInUseError, match="another run .* on another-host"):
            dp.write_shards(bag(), out, shard_size=4)
    finally:
        holder.kill()
        holder.wait()
    with pytest.raises(OutputInUseError):  # killed just now: its heartbeat is still recent
        dp.write_shards(bag(), out, shard_size=4)
    time.sleep(lock.STALE_AFTER + 0.5)
    m = dp.write_shards(bag(), out, shard_size=4)
    assert m["total_records"] == 6 and dp.verify(out).ok and not (out / ".dask-prep").exists()


def test_a_stale_lock_of_another_host_is_taken_over_and_a_fresh_one_is_not(tmp_path):
    lock_file = tmp_path / ".dask-prep" / "lock"
    lock_file.parent.mkdir()
    lock_file.write_text(json.dumps({"token": "x", "pid": 1, "host": "another-host",
                                     "started": time.time()}))
    with pytest.raises(OutputInUseError, match="pid 1 on another-host"):
        dp.write_shards(bag(), tmp_path, shard_size=4)
    old = time.time() - 3600
    os.utime(lock_file, (old, old))  # its heartbeat stopped an hour ago
    assert dp.write_shards(bag(), tmp_path, shard_size=4)["total_records"] == 6
