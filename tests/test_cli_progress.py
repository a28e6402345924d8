"""The CLI's progress and summary tell the truth: bytes of work, the commit as
its own step, lines (not carriage returns) off a terminal, the shards as they are."""
from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

import pytest

from dask_prep.runner import RunResult, shard_counts

from helpers import dask_prep_cli, env_without_client, write


def test_shard_counts_name_the_last_shard():
    m = {"shards": [{"records": 10_000}] * 14 + [{"records": 4_434}]}
    assert shard_counts(m) == "14 x 10,000 + 1 x 4,434 records"
    assert shard_counts({"shards": [{"records": 7}]}) == "1 x 7 records"


def test_summary_of_an_already_complete_dataset_has_no_throughput():
    m = {"total_records": 3, "shards": [{"records": 3}], "shard_size": 5, "format": "parquet",
         "errors": 0, "sources": {"bytes": 2048}}
    rows = dict(RunResult("out", m, 1, elapsed=0.5, workers=1, already_complete=True).rows())
    assert "already complete" in rows["status"] and "throughput" not in rows
    rows = dict(RunResult("out", m, 1, elapsed=0.5, workers=1).rows())
    assert rows["throughput"] == "6 records/s, 4.00 kiB/s" and rows["sources"] == "1 files (2.00 kiB)"


@pytest.fixture
def corpus(tmp_path):
    """Many small files and one big one (split into byte ranges: most of the work)."""
    root = tmp_path / "corpus #ü"
    for i in range(40):
        write(root / f"-small {i}::[{i}].txt", f"Small doc {i}. ")
    paragraph = "A sentence here. " * 30 + "\n\n"
    write(root / "zz big.txt", paragraph * 4_000)  # 1.95 MiB, 120,000 sentences
    return root


def _run(args, env=None, **kw):
    return subprocess.run([*dask_prep_cli(), "run", *map(str, args)], capture_output=True, text=True,
                          env={**env_without_client(), **(env or {})}, timeout=240, **kw)


@pytest.mark.slow
def test_off_a_terminal_progress_is_lines_in_bytes_and_commit_is_a_step(tmp_path, corpus):
    out = tmp_path / "out"
    args = [corpus, "-o", out, "--converter", "sentences", "--shard-size", "50000",
            "--partition-size", "256kB", "--workers", "2"]
    r = _run(args, env={"DASK_DASK_PREP__PROGRESS_INTERVAL": "0.1s"})
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr
    lines = r.stderr.splitlines()
    progress = [ln for ln in lines if ln.startswith("progress: ")]
    assert progress and all(" MiB (" in ln or " kiB (" in ln for ln in progress), r.stderr
    assert progress[-1].startswith("progress: 100% of 1.95 MiB"), r.stderr
    commit = [i for i, ln in enumerate(lines) if ln.startswith("commit: ")]
    assert len(commit) == 2 and commit[0] > lines.index(progress[-1]), r.stderr
    assert "shards  2 x 50,000 + 1 x 20,040 records (parquet)" in r.stdout, r.stdout
    assert "throughput" in r.stdout and "already complete" not in r.stdout
    again = _run(args)
    assert again.returncode == 0, again.stderr
    assert "already complete" in again.stdout and "throughput" not in again.stdout, again.stdout
    assert "2 x 50,000 + 1 x 20,040 records" in again.stdout


def _on_a_terminal(cmd, env) -> str:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen(cmd, stderr=slave, stdout=subprocess.PIPE, env=env)
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert proc.wait(timeout=240) == 0, seen.decode(errors="replace")
    return seen.decode(errors="replace")


@pytest.mark.slow
def test_on_a_terminal_the_bar_counts_bytes(tmp_path, corpus):
    cmd = [*dask_prep_cli(), "run", str(corpus), "-o", str(tmp_path / "out"), "--converter",
           "sentences", "--partition-size", "256kB", "--workers", "2"]
    seen = _on_a_terminal(cmd, env_without_client())
    bars = [part for part in seen.replace("\n", "\r").split("\r") if part.startswith("convert:")]
    assert bars and all("src/s" not in b for b in bars), seen
    assert "1.95M/1.95M" in bars[-1] and "B/s" in bars[-1], bars[-1]
    assert "commit: done in" in seen
    assert sys.stderr is not None
