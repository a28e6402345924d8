"""Faults, on real processes: a worker SIGKILLed mid-run (LocalCluster and
`dask scheduler` + `dask worker`), the CLI SIGKILLed and run again (with another
number of workers), changed options on an unfinished run, and Ctrl-C.

The promise under test: nothing lost, nothing half-done, nothing done twice.
Every faulty run is compared byte for byte with a clean run of the same job and
with the ground truth (what the converter yields for every file).

The corpus is built so the plan is known exactly: 40 files of 5,000 bytes and
``--partition-size 20000`` give 20 partitions of 2 files (a file weighs its size
plus 4,096 bytes), so partition ``i`` holds files ``2i`` and ``2i+1`` and a
marker ``.dask-prep/pNNNNN.json`` tells exactly which files are finished.
Each converter call appends ``"<pid> <path>"`` to a calls log and sleeps, so a
run lasts a few seconds and the log shows where and how often each file ran.
"""
from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import dask_prep as dp
from helpers import dask_prep_cli, dask_processes, env_without_client, write

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="uses /proc and process groups")]

N_FILES = 40
FILE_BYTES = 5_000
PARTITION_SIZE = 20_000          # 2 files per partition (5,000 + 4,096 bytes each)
FILES_PER_PART = 2
N_PARTS = N_FILES // FILES_PER_PART
SHARD_SIZE = 10                  # 14 records per partition: 1 full shard + a remainder of 4
RECORDS_PER_FILE = 7
BAD = "f013.txt"                 # the converter fails on this one: .errors.jsonl is not empty
SLEEP = 0.06                     # seconds per file: a run takes ~1.2 s of work on 2 workers
KILL_AFTER = 4                   # markers (finished partitions) before a kill
FILES = [f"f{i:03d}.txt" for i in range(N_FILES)]
N_RECORDS = (N_FILES - 1) * RECORDS_PER_FILE   # the ground truth: every file but BAD

CONVERTER_FILE = '''
import os, time

def convert(path):
    with open(os.environ["FAULTS_CALLS_LOG"], "a") as f:
        f.write(f"{os.getpid()} {path}\\n")
    time.sleep(float(os.environ.get("FAULTS_SLEEP", "0.1")))
    name = os.path.basename(path)
    if name == "f013.txt":
        raise ValueError("broken on purpose")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return [{"name": name, "i": i, "text": text[50 * i:50 * (i + 1)]} for i in range(7)]
'''


# -- the job ---------------------------------------------------------------------


def _records(path: str) -> list[dict]:
    """What both converters yield for a file (the ground truth)."""
    name = os.path.basename(path)
    if name == BAD:
        raise ValueError("broken on purpose")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return [{"name": name, "i": i, "text": text[50 * i:50 * (i + 1)]}
            for i in range(RECORDS_PER_FILE)]


def make_converter(log: Path, sleep: float = SLEEP):
    """A converter defined here (workers cannot import it: it is shipped by value)."""
    log = str(log)

    def convert(path):
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {path}\n")
        time.sleep(sleep)
        return _records(path)

    return convert


def part_of(name: str) -> int:
    return FILES.index(name) // FILES_PER_PART


def files_of(parts) -> list[str]:
    return [name for name in FILES if part_of(name) in set(parts)]


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """The corpus, the converter file, and a clean CLI run of the job (the reference)."""
    root = tmp_path_factory.mktemp("faults")
    for i, name in enumerate(FILES):
        write(root / "in" / name, (f"file {i:03d} says hello. " * 300)[:FILE_BYTES])
    assert all((root / "in" / n).stat().st_size == FILE_BYTES for n in FILES)
    write(root / "conv.py", CONVERTER_FILE)
    job = Job(root)
    t0 = time.perf_counter()
    clean = job.start(root / "clean", workers=2, log=root / "clean-calls.log")
    assert clean.wait(90) == 0, clean.stderr()
    job.clean_seconds = time.perf_counter() - t0
    assert_complete(root / "clean", root / "in")
    assert json.loads((root / "clean" / ".manifest.json").read_text())["partitions"] == N_PARTS
    assert sorted(n for _, n in calls(root / "clean-calls.log")) == FILES
    report(f"clean CLI run (2 workers): {job.clean_seconds:.2f} s wall")
    return job


class Job:
    def __init__(self, root: Path):
        self.root, self.inputs, self.conv = root, root / "in", root / "conv.py"
        self.clean = root / "clean"
        self.clean_seconds = 0.0

    def command(self, out: Path, workers: int, shard_size: int = SHARD_SIZE, extra=()) -> list:
        return dask_prep_cli() + [
            "run", str(self.inputs), "-o", str(out), "--converter", f"{self.conv}:convert",
            "--workers", str(workers), "--partition-size", str(PARTITION_SIZE),
            "--shard-size", str(shard_size), "-q", *extra]

    def start(self, out: Path, workers: int, log: Path, **kw) -> CliRun:
        return CliRun(self.command(out, workers, **kw), log, cwd=self.root)


# -- processes -------------------------------------------------------------------


#: Start a command as a shell starts a job in a terminal: with Ctrl-C's default
#: action, even where this test runs with SIGINT ignored (a non-interactive
#: shell's background job inherits it ignored). It execs the command: same pid.
AS_A_TERMINAL_JOB = [sys.executable, "-c", "import os, signal, sys; signal.signal(signal.SIGINT, "
                     "signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"]


class CliRun:
    """The CLI in its own process group (like a job in a terminal), output to files."""

    _all: list[CliRun] = []

    def __init__(self, cmd: list, log: Path, cwd: Path, extra_env: dict | None = None):
        env = env_without_client()
        env.update(FAULTS_CALLS_LOG=str(log), FAULTS_SLEEP=str(SLEEP), **(extra_env or {}))
        self.err_path = log.with_suffix(".stderr")
        self.out_path = log.with_suffix(".stdout")
        self.t0 = time.perf_counter()
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(AS_A_TERMINAL_JOB + list(cmd), stdout=out, stderr=err, cwd=cwd, env=env,
                                         start_new_session=True)
        self.pgid = self.proc.pid
        CliRun._all.append(self)

    def wait(self, timeout: float) -> int:
        rc = self.proc.wait(timeout=timeout)
        self.seconds = time.perf_counter() - self.t0
        return rc

    def stdout(self) -> str:
        return self.out_path.read_text()

    def stderr(self) -> str:
        return self.err_path.read_text()

    def signal_group(self, sig) -> None:
        os.killpg(self.pgid, sig)

    @classmethod
    def cleanup_all(cls) -> None:
        while cls._all:
            run = cls._all.pop()
            for pid in group_members(run.pgid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                run.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


@pytest.fixture(autouse=True)
def _no_process_left_behind():
    yield
    CliRun.cleanup_all()


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``, from /proc."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def wait_until(predicate, timeout: float, what: str, proc: CliRun | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.proc.poll() is not None:
            pytest.fail(f"the run ended (rc {proc.proc.returncode}) before {what}:\n{proc.stderr()}")
        time.sleep(0.01)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def markers(out: Path) -> set[int]:
    """Indices of the partitions whose marker exists."""
    return {int(m.group(1)) for p in (out / ".dask-prep").glob("p*.json")
            if (m := re.fullmatch(r"p(\d{5})\.json", p.name))}


def work_state(out: Path) -> dict:
    work = out / ".dask-prep"
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in work.iterdir()} if work.exists() else {}


def kill_once_markers(run: CliRun, out: Path, sig=signal.SIGKILL, group: bool = True,
                      at_least: int = KILL_AFTER) -> set[int]:
    """Send ``sig`` once ``at_least`` partitions are finished; return the markers then."""
    before = wait_until(lambda: m if len(m := markers(out)) >= at_least else None, 60,
                        f"{at_least} partition markers in {out}", run)
    if group:
        run.signal_group(sig)
    else:
        os.kill(run.proc.pid, sig)
    return before


def assert_dead_and_quiet(run: CliRun, out: Path, settle: float = 1.0) -> float:
    """Every process of the killed run exits, and nothing writes into OUT afterwards."""
    t0 = time.perf_counter()
    run.proc.wait(timeout=30)
    wait_until(lambda: not group_members(run.pgid), 15, f"processes of group {run.pgid} to exit")
    gone_after = time.perf_counter() - t0
    before = work_state(out)
    time.sleep(settle)
    assert work_state(out) == before, "something kept writing into OUT/.dask-prep after the kill"
    assert not (out / ".manifest.json").exists()
    return gone_after


# -- logs and output -------------------------------------------------------------


def calls(log: Path) -> list[tuple[int, str]]:
    """(pid, file name) per converter call, in call order."""
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        pid, _, path = line.partition(" ")
        if path:  # a line cut by a SIGKILL has no path
            out.append((int(pid), os.path.basename(path)))
    return out


def assert_no_stray_files(out: Path) -> None:
    names = sorted(os.listdir(out))
    stray = [n for n in names if not (re.fullmatch(r"shard-\d{5}\.parquet", n)
                                      or n in (".manifest.json", ".errors.jsonl", ".sources.jsonl"))]
    assert not stray, f"stray entries in {out}: {stray}"
    tmp = [str(p) for p in out.rglob("*") if ".tmp-" in p.name]
    assert not tmp, f"temporary files left: {tmp}"


def ground_truth(inputs: Path) -> list[tuple]:
    """(name, i, text) of every record the converter yields for the corpus."""
    out = []
    for name in FILES:
        try:
            out.extend((r["name"], r["i"], r["text"]) for r in _records(str(inputs / name)))
        except ValueError:
            assert name == BAD
    assert len(out) == N_RECORDS
    return sorted(out)


def assert_complete(out: Path, inputs: Path, shard_size: int = SHARD_SIZE) -> dict:
    """A complete dataset holding exactly the ground truth, nothing else in OUT."""
    assert_no_stray_files(out)
    verdict = dp.verify(out)
    assert verdict.ok, str(verdict)
    ds = dp.open(out)
    got = sorted((r["name"], r["i"], r["text"]) for r in ds)
    want = ground_truth(inputs)
    lost = set(want) - set(got)
    dupes = [k for k, c in collections.Counter(got).items() if c > 1]
    assert got == want, f"{len(lost)} records lost, {len(dupes)} duplicated, {len(got)} read"
    sizes = [s["records"] for s in ds.shards]
    assert all(s == shard_size for s in sizes[:-1]) and 0 < sizes[-1] <= shard_size, sizes
    assert [(Path(e["path"]).name, e["error"]) for e in ds.errors()] == [(BAD, "ValueError")]
    return ds.manifest


def snapshot(out: Path) -> dict:
    """Everything a clean run fixes: each shard's and .errors.jsonl's bytes, the manifest
    without its "run" key (timings)."""
    snap = {p.name: p.read_bytes() for p in sorted(out.iterdir())
            if p.name.startswith("shard-") or p.name == ".errors.jsonl"}
    manifest = json.loads((out / ".manifest.json").read_text())
    manifest.pop("run", None)
    snap[".manifest.json"] = manifest
    return snap


def assert_same_output(out: Path, clean: Path) -> None:
    got, want = snapshot(out), snapshot(clean)
    assert sorted(got) == sorted(want), "different files"
    differ = [name for name in want if got[name] != want[name]]
    assert not differ, f"differ from the clean run: {differ}"


def report(line: str) -> None:
    """Timings and observations for the release note (shown with -rA or -s)."""
    print(f"FAULTS: {line}")


# -- 1 and 2: a worker SIGKILLed mid-run -------------------------------------------


def finished_held_by(client) -> dict[str, int]:
    """How many finished partition results each worker holds in memory."""
    def is_write(key) -> bool:
        name = key[0] if isinstance(key, tuple) else str(key)
        return str(name).startswith("dask-prep-write-")
    return {addr: sum(map(is_write, keys)) for addr, keys in client.has_what().items()}


def kill_a_busy_worker_after(client, log: Path, after: int = KILL_AFTER):
    """An ``on_partition`` hook that SIGKILLs, once ``after`` partitions are done, a
    worker in the middle of converting a file of an unfinished partition that also
    holds finished results (it waits for one: while the hook runs the client takes
    no results, so finished ones stay on the workers)."""
    addr_of = {pid: addr for addr, pid in client.run(os.getpid).items()}
    state: dict = {"done": set()}

    def on_partition(result, done, total):
        state["done"].add(result.index)
        if "pid" in state or done < after:
            return
        # the result may arrive while both workers are between tasks: wait for
        # the next conversion to start (the workers go on meanwhile)
        deadline = time.monotonic() + 20
        while True:
            busy = [(pid, name) for pid, name in calls(log) if part_of(name) not in state["done"]]
            held = finished_held_by(client)
            victims = [c for c in reversed(busy) if held.get(addr_of.get(c[0]), 0) > 0]
            if victims or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        assert busy, "no file of an unfinished partition was being converted"
        assert {pid for pid, _ in busy} <= set(addr_of), "conversion ran outside the workers"
        assert victims, "no busy worker came to hold a finished result"
        pid, name = victims[0]
        os.kill(pid, signal.SIGKILL)
        state.update(pid=pid, file=name, done_at_kill=set(state["done"]),
                     held=held.get(addr_of[pid], 0))

    return on_partition, state


def run_with_worker_kill(client, job: Job, d: Path) -> dict:
    """A clean run, then the same run with a worker SIGKILLed mid-run, on ``client``."""
    log = d / "calls.log"
    convert = make_converter(log)
    opts = dict(converter=convert, client=client, shard_size=SHARD_SIZE,
                partition_size=PARTITION_SIZE)
    pids = set(client.run(os.getpid).values())
    assert len(pids) == 2 and os.getpid() not in pids

    t0 = time.perf_counter()
    clean = dp.run([job.inputs], d / "clean", **opts)
    clean_seconds = time.perf_counter() - t0
    assert clean.manifest["partitions"] == N_PARTS
    clean_calls = calls(log)
    assert {pid for pid, _ in clean_calls} <= pids, "conversion did not run on the cluster's workers"
    assert sorted(n for _, n in clean_calls) == FILES
    log.unlink()

    hook, killed = kill_a_busy_worker_after(client, log)
    t0 = time.perf_counter()
    res = dp.run([job.inputs], d / "out", on_partition=hook, **opts)
    seconds = time.perf_counter() - t0
    assert "pid" in killed, "the kill never happened: the test proves nothing"
    wait_until(lambda: not os.path.exists(f"/proc/{killed['pid']}"), 10, "the killed worker to go")
    client.wait_for_workers(2, timeout=60)  # the nanny starts a new worker process
    new_pids = set(client.run(os.getpid).values())
    faulty_calls = calls(log)
    counts = collections.Counter(n for _, n in faulty_calls)
    report(f"worker kill after {len(killed['done_at_kill'])}/{N_PARTS} partitions "
           f"(victim held {killed['held']} finished results): clean {clean_seconds:.2f} s, "
           f"with kill {seconds:.2f} s (+{seconds - clean_seconds:.2f} s); records "
           f"{res.records}/{N_RECORDS}; {len(faulty_calls)} converter calls for "
           f"{N_FILES} files, converted again: {sorted(n for n, c in counts.items() if c > 1)}")
    return dict(dir=d, result=res, killed=killed, counts=counts, new_pids=new_pids,
                calls=faulty_calls)


@pytest.fixture(scope="module", params=["LocalCluster", "dask-worker-processes"])
def worker_kill(request, job, tmp_path_factory):
    from distributed import Client, LocalCluster
    d = tmp_path_factory.mktemp(request.param)
    with contextlib.ExitStack() as stack:
        if request.param == "LocalCluster":
            cluster = stack.enter_context(LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                dashboard_address="127.0.0.1:0"))
            client = stack.enter_context(Client(cluster))
        else:
            client = stack.enter_context(Client(stack.enter_context(dask_processes(d)), timeout=30))
            client.wait_for_workers(2, timeout=60)
        return run_with_worker_kill(client, job, d)


@pytest.mark.timeout(120)
def test_worker_killed_mid_run_loses_nothing_and_matches_a_clean_run(worker_kill, job):
    d, res, killed, counts = (worker_kill[k] for k in ("dir", "result", "killed", "counts"))
    assert set(counts) == set(FILES), "a file was never converted"
    # the file its worker was converting when killed ran again elsewhere (at-least-once)
    assert counts[killed["file"]] >= 2, (killed, counts[killed["file"]])
    assert res.records == N_RECORDS and res.errors == 1
    assert res.manifest["run"]["resumed_partitions"] == 0
    assert_complete(d / "out", job.inputs)
    assert_same_output(d / "out", d / "clean")
    assert killed["pid"] not in worker_kill["new_pids"] and len(worker_kill["new_pids"]) == 2


@pytest.mark.timeout(120)
def test_worker_kill_does_not_convert_finished_partitions_again(worker_kill):
    killed, counts = worker_kill["killed"], worker_kill["counts"]
    assert killed["held"], "the kill was meant for a worker holding finished results"
    finished = killed["done_at_kill"]
    again = sorted(n for n, c in counts.items() if c > 1 and part_of(n) in finished)
    assert not again, (f"files of partitions finished (and reported to the client) before "
                       f"the kill were converted again: {again}")


# -- 3 and 4: the CLI killed, then run again -----------------------------------------


@pytest.mark.timeout(120)
def test_killed_cli_resumes_without_converting_finished_partitions(job, tmp_path):
    out = tmp_path / "out"

    # run 1: 2 workers, the whole process group SIGKILLed once a few partitions are done
    first = job.start(out, workers=2, log=tmp_path / "calls1.log")
    kill_once_markers(first, out)
    gone = assert_dead_and_quiet(first, out)
    done1 = markers(out)
    assert 0 < len(done1) < N_PARTS, done1
    assert {n for _, n in calls(tmp_path / "calls1.log")} >= set(files_of(done1))

    # run 2: the same command on 1 worker, killed again after a few more partitions
    second = job.start(out, workers=1, log=tmp_path / "calls2.log")
    kill_once_markers(second, out, at_least=len(done1) + 3)
    assert_dead_and_quiet(second, out)
    done2 = markers(out)
    assert done1 < done2 and len(done2) < N_PARTS, (done1, done2)
    again = {n for _, n in calls(tmp_path / "calls2.log")} & set(files_of(done1))
    assert not again, f"files of finished partitions converted again: {sorted(again)}"

    # run 3: the same command on 2 workers, to the end
    third = job.start(out, workers=2, log=tmp_path / "calls3.log")
    assert third.wait(90) == 0, third.stderr()
    converted = collections.Counter(n for _, n in calls(tmp_path / "calls3.log"))
    todo = [n for n in FILES if part_of(n) not in done2]
    assert converted == collections.Counter(todo), (
        "the resumed run must convert exactly the files of the unfinished partitions, once each")
    assert re.search(rf"^\s*resumed\s+{len(done2)} partition\(s\) were already done$",
                     third.stdout(), re.M), third.stdout()
    manifest = assert_complete(out, job.inputs)
    assert manifest["run"]["resumed_partitions"] == len(done2)
    assert_same_output(out, job.clean)
    report(f"CLI SIGKILL (process group): processes gone {gone:.2f} s after the kill; "
           f"{len(done1)} then {len(done2)}/{N_PARTS} partitions kept; final resumed run "
           f"{third.seconds:.2f} s for {len(todo)} files vs clean run {job.clean_seconds:.2f} s "
           f"for {N_FILES}; records {manifest['total_records']}/{N_RECORDS}")


@pytest.mark.timeout(120)
def test_unfinished_run_refuses_other_options_until_overwrite(job, tmp_path):
    """Other write options are another command: refused. (Other inputs are not:
    the partitions whose sources changed are redone, see test_reruns.py.)"""
    out = tmp_path / "out"
    # the run is killed the way an OOM killer would: the main process only; its
    # worker processes must notice and stop on their own
    first = job.start(out, workers=2, log=tmp_path / "calls1.log")
    kill_once_markers(first, out, group=False)
    gone = assert_dead_and_quiet(first, out)
    kept = markers(out)
    assert 0 < len(kept) < N_PARTS
    state = work_state(out)

    for label, kw in [("shard size", dict(shard_size=SHARD_SIZE + 1)),
                      ("format", dict(extra=("--format", "pickle")))]:
        refused = job.start(out, workers=1, log=tmp_path / f"refused-{label[0]}.log", **kw)
        assert refused.wait(60) == 2, (label, refused.stderr())
        report(f"refused ({label} changed): exit 2 after {refused.seconds:.2f} s")
        lines = refused.stderr().splitlines()
        assert len(lines) == 1, (label, lines)
        assert "unfinished run" in lines[0] and "--overwrite" in lines[0], (label, lines)
        assert not calls(tmp_path / f"refused-{label[0]}.log"), f"{label}: converted files"
        assert markers(out) == kept and not (out / ".manifest.json").exists()
        assert {k: v for k, v in work_state(out).items() if k != "lock"} == {
            k: v for k, v in state.items() if k != "lock"}, f"{label}: the resume state changed"

    fresh = job.start(out, workers=2, log=tmp_path / "calls-overwrite.log",
                      shard_size=SHARD_SIZE + 1, extra=("--overwrite",))
    assert fresh.wait(90) == 0, fresh.stderr()
    assert "resumed" not in fresh.stdout()
    assert sorted(n for _, n in calls(tmp_path / "calls-overwrite.log")) == FILES
    manifest = assert_complete(out, job.inputs, shard_size=SHARD_SIZE + 1)
    assert manifest["run"]["resumed_partitions"] == 0
    report(f"CLI main process SIGKILLed alone: worker processes gone {gone:.2f} s later, "
           f"nothing written after; {len(kept)}/{N_PARTS} partitions kept")


# -- 5: Ctrl-C ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def interrupted(job, tmp_path_factory):
    """The CLI interrupted like a terminal's Ctrl-C: SIGINT to its whole process group."""
    d = tmp_path_factory.mktemp("sigint")
    out = d / "out"
    run = job.start(out, workers=2, log=d / "calls1.log")
    try:
        kill_once_markers(run, out, sig=signal.SIGINT)
        t0 = time.perf_counter()
        rc = run.wait(60)
        stopped = time.perf_counter() - t0
        wait_until(lambda: not group_members(run.pgid), 15, "the interrupted run's processes to exit")
    finally:
        CliRun.cleanup_all()
    stderr = run.stderr()
    report(f"Ctrl-C stderr: {len(stderr.splitlines())} lines, {stderr.count('Traceback')} "
           f"tracebacks, {sum('WARNING' in ln for ln in stderr.splitlines())} WARNING lines")
    return dict(dir=d, out=out, rc=rc, stderr=stderr, stopped=stopped,
                markers=markers(out), manifest=(out / ".manifest.json").exists())


@pytest.mark.timeout(120)
def test_ctrl_c_exits_130_says_how_to_resume_and_resumes(job, interrupted):
    d, out = interrupted["dir"], interrupted["out"]
    assert interrupted["rc"] == 130, interrupted["stderr"]
    line = [ln for ln in interrupted["stderr"].splitlines() if "interrupted" in ln]
    assert len(line) == 1 and "resume" in line[0], interrupted["stderr"]
    assert not interrupted["manifest"]
    kept = interrupted["markers"]
    assert 0 < len(kept) < N_PARTS, kept
    again = job.start(out, workers=2, log=d / "calls2.log")
    assert again.wait(90) == 0, again.stderr()
    converted = collections.Counter(n for _, n in calls(d / "calls2.log"))
    assert converted == collections.Counter(n for n in FILES if part_of(n) not in kept)
    assert re.search(rf"^\s*resumed\s+{len(kept)} partition\(s\)", again.stdout(), re.M)
    assert_complete(out, job.inputs)
    assert_same_output(out, job.clean)
    report(f"Ctrl-C: exit {interrupted['rc']} {interrupted['stopped']:.2f} s after SIGINT; "
           f"{len(kept)}/{N_PARTS} partitions kept; resumed run {again.seconds:.2f} s vs clean "
           f"{job.clean_seconds:.2f} s")


@pytest.mark.timeout(60)
def test_ctrl_c_prints_one_line_and_no_traceback(interrupted):
    stderr = interrupted["stderr"]
    assert "Traceback" not in stderr
    assert len(stderr.splitlines()) == 1, stderr


def stopped_cleanly(run: CliRun, out: Path, rc: int) -> float:
    """The run exits with ``rc``, one line and no traceback; all of it is gone; no manifest."""
    t0 = time.perf_counter()
    # (a rare run ends by SIGINT itself after its line, which a shell reports as 130 too)
    accepted = {rc, -signal.SIGINT} if rc == 130 else {rc}
    assert run.wait(60) in accepted, run.stderr()
    wait_until(lambda: not group_members(run.pgid), 15, "the stopped run's processes to exit")
    stderr = run.stderr()
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert len(stderr.splitlines()) == 1, stderr
    assert ("terminated (SIGTERM)" if rc == 143 else "interrupted") in stderr, stderr
    assert not (out / ".manifest.json").exists()
    return time.perf_counter() - t0


@pytest.mark.timeout(240)
@pytest.mark.parametrize("after", [0.3, 0.8, 1.5])  # the run takes ~2.5 s
def test_ctrl_c_at_any_moment_of_start_up_stops_the_run_with_130(job, tmp_path, after):
    """Cluster start-up included: a Ctrl-C while the workers start is held, not lost."""
    out = tmp_path / "out"
    run = job.start(out, workers=2, log=tmp_path / "calls.log")
    time.sleep(max(0.0, after - (time.perf_counter() - run.t0)))
    run.signal_group(signal.SIGINT)
    stopped = stopped_cleanly(run, out, 130)
    report(f"Ctrl-C {after} s into the run: exit 130 {stopped:.2f} s later, "
           f"{len(markers(out)) if (out / '.dask-prep').exists() else 0} partition(s) kept")


@pytest.mark.timeout(240)
def test_ctrl_c_while_the_worker_processes_start_is_one_line_at_every_moment(job, tmp_path):
    """A sweep through the start of the local cluster: the fork server and its workers
    start as the main process goes on, and a Ctrl-C to the process group reaches them
    too (once, the fork server's import traceback came out beside the one line)."""
    moments = [0.35 + 0.08 * i for i in range(8)]
    for i, after in enumerate(moments):
        out = tmp_path / f"out{i}"
        run = job.start(out, workers=2, log=tmp_path / f"calls{i}.log")
        time.sleep(max(0.0, after - (time.perf_counter() - run.t0)))
        run.signal_group(signal.SIGINT)
        stopped_cleanly(run, out, 130)
    report(f"Ctrl-C at {len(moments)} moments from {moments[0]:.2f} to {moments[-1]:.2f} s: "
           "each exit 130 with one line")


@pytest.mark.timeout(240)
@pytest.mark.parametrize("when", ["start-up", "mid-run"])
def test_sigterm_ends_the_run_like_ctrl_c_with_143_and_it_resumes(job, tmp_path, when):
    """SIGTERM to the main process only, as Kubernetes or a batch scheduler sends it."""
    out = tmp_path / "out"
    run = job.start(out, workers=2, log=tmp_path / "calls1.log")
    if when == "start-up":
        time.sleep(max(0.0, 1.0 - (time.perf_counter() - run.t0)))
        os.kill(run.proc.pid, signal.SIGTERM)
    else:
        kill_once_markers(run, out, sig=signal.SIGTERM, group=False)
    stopped = stopped_cleanly(run, out, 143)
    assert "run the same command again to resume" in run.stderr() or when == "start-up", run.stderr()
    kept = markers(out) if (out / ".dask-prep").exists() else set()
    again = job.start(out, workers=2, log=tmp_path / "calls2.log")
    assert again.wait(90) == 0, again.stderr()
    converted = collections.Counter(n for _, n in calls(tmp_path / "calls2.log"))
    assert converted == collections.Counter(n for n in FILES if part_of(n) not in kept)
    assert_complete(out, job.inputs)
    assert_same_output(out, job.clean)
    report(f"SIGTERM ({when}): exit 143 {stopped:.2f} s later; {len(kept)}/{N_PARTS} partitions "
           f"kept; the resume completed identical to a clean run")


# -- a full disk -------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A real file system of 1 MiB (tmpfs), made bigger by ``grow()``."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"a full disk needs a tmpfs mount (root): {r.stderr.strip()}")
    try:
        yield mnt, lambda: subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def full_disk_corpus(root: Path) -> Path:
    """~3 MiB of text that compresses little: more than the small disk holds."""
    import random
    rng = random.Random(3)
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
             for _ in range(5000)]
    for i in range(24):
        lines = (" ".join(rng.choice(vocab) for _ in range(12)) for _ in range(1600))
        write(root / f"doc{i:02d}.txt", "\n".join(lines) + "\n")
    return root


@pytest.mark.timeout(240)
def test_a_full_disk_is_one_line_naming_the_output_and_the_same_command_resumes(tmp_path, small_disk):
    mnt, grow = small_disk
    corpus = full_disk_corpus(tmp_path / "in")

    def start(out, log):
        return CliRun(dask_prep_cli() + ["run", str(corpus), "-o", str(out), "--converter", "lines",
                                         "--workers", "2", "--shard-size", "2000", "-q"],
                      tmp_path / log, tmp_path)

    out = mnt / "out"
    t0 = time.perf_counter()
    full = start(out, "full.log")
    assert full.wait(90) == 1, full.stderr()
    lines = full.stderr().splitlines()
    assert len(lines) == 1 and "Traceback" not in full.stderr(), full.stderr()
    assert f"{out}: no space left on its device" in lines[0] and "run the same command again" in lines[0]
    assert not (out / ".manifest.json").exists()
    grow()
    again = start(out, "again.log")
    assert again.wait(90) == 0, again.stderr()
    recovered = time.perf_counter() - t0
    reference = start(tmp_path / "reference", "reference.log")
    assert reference.wait(90) == 0, reference.stderr()
    assert_same_output(out, tmp_path / "reference")
    resumed = json.loads((out / ".manifest.json").read_text())["run"]["resumed_partitions"]
    report(f"full disk: exit 1 in one line after {full.seconds:.2f} s; once the disk was bigger the "
           f"same command resumed {resumed} partition(s) and completed identical to a clean run "
           f"({recovered:.2f} s from the first start)")


# -- 6: a kill at each step of the commit ----------------------------------------------

#: Runs the CLI with the whole process group SIGKILLed at one step of the commit,
#: named by FAULTS_KILL_AT: ``rename:K`` (after the K-th shard rename), ``errors``
#: (after the error list is written), ``manifest`` (the manifest written under its
#: temporary name, not yet renamed), ``work:K`` (after K entries of the work folder
#: were deleted), ``remove:K`` (after K files of the dataset an --overwrite
#: replaces were deleted). Only the kill is injected; the run is the real CLI.
KILLING_CLI = [sys.executable, "-c", '''
import os, signal, sys
from fsspec.implementations.local import LocalFileSystem
from dask_prep.write import commit, output
step, _, n = os.environ["FAULTS_KILL_AT"].partition(":")
n, count = int(n or 0), [0]
def die():
    os.killpg(os.getpgid(0), signal.SIGKILL)
def after(cls, name, k, cond=lambda *a: True):
    real = getattr(cls, name)
    def wrapped(*args, **kw):
        result = real(*args, **kw)
        if cond(*args):
            count[0] += 1
            if count[0] == k:
                die()
        return result
    setattr(cls, name, wrapped)
if step == "rename":
    after(output.OutputDir, "replace", n, lambda self, src, dst: src.startswith(".dask-prep/"))
elif step == "errors":
    after(commit, "write_errors", 1)
elif step == "manifest":
    real_replace = os.replace
    def replace(src, dst):
        if os.path.basename(dst) == ".manifest.json":
            die()
        return real_replace(src, dst)
    os.replace = replace
elif step == "work":
    after(LocalFileSystem, "rm", n, lambda self, path, **kw: "/.dask-prep/" in str(path))
elif step == "remove":
    after(output.OutputDir, "remove", n)
from dask_prep.cli import main
sys.argv[0] = "dask-prep"
main()
''']

N_SHARDS = N_RECORDS // SHARD_SIZE + 1  # 20 full shards of the partitions, 8 merged from leftovers


def start_killing(job, out: Path, log: Path, step: str, workers: int = 2, **kw) -> CliRun:
    env_step = {"FAULTS_KILL_AT": step}
    cmd = KILLING_CLI + job.command(out, workers, **kw)[len(dask_prep_cli()):]
    return CliRun(cmd, log, cwd=job.root, extra_env=env_step)


def leftovers(out: Path) -> list[str]:
    """What a crashed commit could leave behind: everything but a complete dataset's files."""
    keep = re.compile(r"shard-\d{5}\.parquet|\.manifest\.json|\.errors\.jsonl|\.sources\.jsonl")
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if not keep.fullmatch(p.name)
                  or p.parent != out)


COMMIT_STEPS = ["rename:1", f"rename:{N_SHARDS // 2}", f"rename:{N_SHARDS}", "errors", "manifest", "work:3"]


@pytest.fixture(scope="module")
def crashed_commit(request, job, tmp_path_factory):
    """The job killed at one step of its commit (every partition done)."""
    d = tmp_path_factory.mktemp("commit-" + request.param.replace(":", "-"))
    out = d / "out"
    run = start_killing(job, out, d / "calls1.log", request.param)
    assert run.wait(90) == -signal.SIGKILL, (request.param, run.stderr())
    wait_until(lambda: not group_members(run.pgid), 15, "the killed run's processes to exit")
    return dict(step=request.param, dir=d, out=out, listing=leftovers(out))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("crashed_commit", COMMIT_STEPS, indirect=True)
def test_a_kill_at_any_step_of_the_commit_resumes_without_converting_again(job, crashed_commit):
    """The same command again: it reuses every partition and every shard already
    renamed, converts nothing, and leaves exactly a clean run's folder."""
    import shutil
    d, step = crashed_commit["dir"], crashed_commit["step"]
    out = d / "resume"
    shutil.copytree(crashed_commit["out"], out, symlinks=True)
    again = job.start(out, workers=2, log=d / "calls-resume.log")
    t0 = time.perf_counter()
    assert again.wait(90) == 0, (step, again.stderr())
    assert not calls(d / "calls-resume.log"), f"{step}: the resume converted files again"
    assert_complete(out, job.inputs)
    assert_same_output(out, job.clean)
    assert not leftovers(out), (step, leftovers(out))
    report(f"killed at commit step {step}: left {len(crashed_commit['listing'])} entries beside "
           f"the dataset; the same command converted 0 files and completed identical to a clean "
           f"run in {time.perf_counter() - t0:.2f} s")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("crashed_commit", [f"rename:{N_SHARDS // 2}", "manifest", "work:3"], indirect=True)
def test_a_kill_at_any_step_of_the_commit_then_overwrite_with_other_options_leaves_no_orphan(
        job, crashed_commit):
    import shutil
    d, step = crashed_commit["dir"], crashed_commit["step"]
    out = d / "overwrite"
    shutil.copytree(crashed_commit["out"], out, symlinks=True)
    other = job.start(out, workers=2, log=d / "calls-overwrite.log", shard_size=SHARD_SIZE + 1,
                      extra=("--overwrite",))
    assert other.wait(90) == 0, (step, other.stderr())
    assert_complete(out, job.inputs, shard_size=SHARD_SIZE + 1)
    assert not leftovers(out), (step, leftovers(out))
    assert len(list(out.glob("shard-*"))) == -(-N_RECORDS // (SHARD_SIZE + 1))
    import pyarrow.dataset as pads
    assert pads.dataset(str(out)).count_rows() == N_RECORDS, step


@pytest.mark.timeout(120)
@pytest.mark.parametrize("removed", [1, N_SHARDS // 2])  # the manifest; it and half the shards
def test_a_kill_while_overwrite_removes_the_old_dataset_leaves_no_orphan(job, tmp_path, removed):
    """--overwrite with other options, killed after some of the old dataset's files are
    deleted; again with other options still: the old shards are all gone."""
    import shutil
    out = tmp_path / "out"
    shutil.copytree(job.clean, out)
    run = start_killing(job, out, tmp_path / "calls1.log", f"remove:{removed}",
                        shard_size=SHARD_SIZE + 2, extra=("--overwrite",))
    assert run.wait(90) == -signal.SIGKILL, run.stderr()
    wait_until(lambda: not group_members(run.pgid), 15, "the killed run's processes to exit")
    again = job.start(out, workers=2, log=tmp_path / "calls2.log", shard_size=SHARD_SIZE + 1,
                      extra=("--overwrite",))
    assert again.wait(90) == 0, again.stderr()
    assert_complete(out, job.inputs, shard_size=SHARD_SIZE + 1)
    assert not leftovers(out), leftovers(out)
    import pyarrow.dataset as pads
    assert pads.dataset(str(out)).count_rows() == N_RECORDS
