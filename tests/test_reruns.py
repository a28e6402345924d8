"""A rerun never serves stale data: sources edited, appended to, added or
deleted between two runs, or between an interrupted run and its resume."""
import json
import os
import subprocess
import sys

import pytest

import dask_prep as dp
from dask_prep.errors import OutputExistsError
from helpers import dask_prep_cli, write


class Stop(Exception):
    """Raised from the progress hook: the run stops as if killed after some partitions."""


def corpus(root, n=12):
    for i in range(n):
        write(root / f"f{i:03d}.txt", "".join(f"Doc {i} sentence {j}. " for j in range(40)))
    return root


def run(src, out, client, **kw):
    kw.setdefault("partition_size", 8192)
    return dp.run([src], out, client=client, converter="sentences", shard_size=50, **kw)


def records(out):
    return [r["text"] for r in dp.open(out)]


def stop_after(k):
    def hook(result, done, total):
        if done >= k:
            raise Stop
    return hook


def test_an_appended_or_same_size_edit_is_never_served_as_complete(tmp_path, client):
    src, out = corpus(tmp_path / "in"), tmp_path / "out"
    run(src, out, client)
    with open(src / "f003.txt", "a") as f:
        f.write("A new sentence. ")
    with pytest.raises(OutputExistsError, match=r"sources changed since: 1 changed \(.*f003.txt\)"):
        run(src, out, client)
    edited = (src / "f007.txt").read_text().replace("Doc 7", "Doc X")  # the same size
    (src / "f007.txt").write_text(edited)
    os.utime(src / "f007.txt", ns=(1, 1))  # even a clock set back is a change
    with pytest.raises(OutputExistsError, match=r"2 changed"):
        run(src, out, client)
    write(src / "new.txt", "Brand new. ")
    (src / "f000.txt").unlink()
    with pytest.raises(OutputExistsError, match=r"2 changed .*1 added \(.*new.txt\), 1 gone \(.*f000.txt\)"):
        run(src, out, client)
    run(src, out, client, overwrite=True)
    run(src, tmp_path / "fresh", client)
    assert records(out) == records(tmp_path / "fresh")
    assert "A new sentence." in records(out) and "Doc X sentence 1." in records(out)
    assert not any(r.startswith("Doc 0 ") for r in records(out))


@pytest.mark.slow
@pytest.mark.parametrize("change", ["append", "same-size", "delete", "add"])
def test_a_resume_after_a_source_changed_redoes_only_its_partitions(tmp_path, client, change, caplog):
    src, out = corpus(tmp_path / "in"), tmp_path / "out"
    with pytest.raises(Stop):
        run(src, out, client, on_partition=stop_after(3))
    target = src / "f001.txt"  # in a partition that finished before the stop
    if change == "append":
        target.write_text(target.read_text() + "Appended later. ")
    elif change == "same-size":
        target.write_text(target.read_text().replace("Doc 1 ", "Doc Z "))
        os.utime(target, ns=(2, 2))
    elif change == "delete":
        target.unlink()
    else:
        write(src / "f001a.txt", "Added between. ")
    result = run(src, out, client)
    run(src, tmp_path / "fresh", client)
    assert records(out) == records(tmp_path / "fresh")
    fresh = json.loads((tmp_path / "fresh" / ".manifest.json").read_text())
    assert [s["sha256"] for s in result.manifest["shards"]] == [s["sha256"] for s in fresh["shards"]]
    resumed = result.manifest["run"]["resumed_partitions"]
    assert 0 < resumed < result.manifest["partitions"], "unchanged partitions are kept, changed redone"


@pytest.mark.slow  # a real CLI run or several: seconds
def test_the_fingerprint_never_comes_from_dask_tokenize(tmp_path):
    """Dask's tokenize changes with installed packages (xxhash); the run's fingerprint
    must not: computed with tokenize broken, and in a process where xxhash cannot
    be imported, it is the same."""
    corpus(tmp_path / "in", n=3)
    code = (
        "import sys, json\n"
        "if sys.argv[1] == 'no-xxhash': sys.modules['xxhash'] = None\n"
        "import dask.base, dask_prep as dp\n"
        "from dask_prep.write.job import job_fingerprint\n"
        "from dask_prep.options import WriteOptions\n"
        "def broken(*a, **k): raise AssertionError('tokenize called')\n"
        "dask.base.tokenize = broken\n"
        f"bag = dp.to_bag([{str(tmp_path / 'in')!r}], 'sentences')\n"
        "print(json.dumps(job_fingerprint(bag, WriteOptions())[:2]))\n")
    prints = [subprocess.run([sys.executable, "-c", code, how], capture_output=True, text=True,
                             check=True).stdout for how in ("plain", "no-xxhash")]
    assert prints[0] == prints[1] and len(json.loads(prints[0])[1]) == 64


@pytest.mark.slow  # a real CLI run or several: seconds
def test_verify_sources_lists_what_changed_was_added_or_disappeared(tmp_path):
    src, out = corpus(tmp_path / "in", n=4), tmp_path / "out"
    cli = dask_prep_cli()
    ran = subprocess.run([*cli, "run", str(src), "-o", str(out), "--workers", "1", "-q"],
                         capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    same = subprocess.run([*cli, "verify", "--sources", str(out)], capture_output=True, text=True)
    assert same.returncode == 0 and "sources: unchanged" in same.stderr + same.stdout
    (src / "f001.txt").write_text("Changed. ")
    (src / "f002.txt").unlink()
    write(src / "zz new.txt", "New. ")
    diff = subprocess.run([*cli, "verify", "--sources", str(out)], capture_output=True, text=True)
    assert diff.returncode == 1
    lines = diff.stdout.splitlines()
    assert f"changed  {src / 'f001.txt'}" in lines and f"  added  {src / 'zz new.txt'}" in lines
    assert f"   gone  {src / 'f002.txt'}" in lines
    assert "1 changed, 1 added, 1 gone" in diff.stderr


@pytest.mark.parametrize("inputs", ["typo", "empty-dir", "missing-list"])
@pytest.mark.slow  # a real CLI run or several: seconds
def test_nothing_found_fails_with_one_line_and_no_manifest(tmp_path, inputs):
    (tmp_path / "empty").mkdir()
    arg = {"typo": str(tmp_path / "corpsu"), "empty-dir": str(tmp_path / "empty"),
           "missing-list": "@" + str(tmp_path / "list.txt")}[inputs]
    out = tmp_path / "out"
    r = subprocess.run([*dask_prep_cli(), "run", arg, "-o", str(out), "--workers", "1", "-q"],
                       capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("dask-prep: error: NoSourcesError: no sources found: ")
    assert "Traceback" not in r.stderr and not (out / ".manifest.json").exists()
    ok = subprocess.run([*dask_prep_cli(), "run", arg, "-o", str(out), "--workers", "1", "-q",
                         "--allow-empty"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert json.loads((out / ".manifest.json").read_text())["total_records"] == 0


def test_sources_that_give_no_records_fail_unless_allowed(tmp_path, client):
    write(tmp_path / "in" / "a.jsonl", "\n\n")
    with pytest.raises(dp.errors.EmptyDatasetError, match="no records"):
        dp.run([tmp_path / "in"], tmp_path / "out", client=client, converter="jsonl")
    assert not (tmp_path / "out" / ".manifest.json").exists()


def test_an_output_that_is_an_input_is_refused_up_front(tmp_path):
    corpus(tmp_path / "in", n=2)
    with pytest.raises(ValueError, match="is also an input"):
        dp.run([tmp_path / "in"], tmp_path / "in", overwrite=True, workers=1)


@pytest.mark.slow  # waits for a converter that sleeps
def test_a_stopped_run_leaves_no_task_running_that_writes_into_the_output(tmp_path, client):
    """Dask cannot stop a running task. When a run stops early (Ctrl-C in a notebook,
    an error), the partitions already running are waited for and the rest cancelled,
    so the next run on the same cluster never races a task of the old one writing an
    older plan's files under the same names (that once lost a partition's records)."""
    src, out = corpus(tmp_path / "in", n=4), tmp_path / "out"
    (tmp_path / "slow.py").write_text(
        "import time\n"
        "def convert(path):\n"
        "    if path.endswith('f000.txt'):\n"
        "        time.sleep(2)\n"
        "    with open(path) as f:\n"
        "        return [{'text': s} for s in f.read().split('. ')]\n")
    with pytest.raises(Stop):
        dp.run([src], out, client=client, converter=f"{tmp_path / 'slow.py'}:convert", shard_size=50,
               partition_size=4097, on_partition=stop_after(1))
    assert not any(client.processing().values()), "a task of the stopped run is still running"
    assert (out / ".dask-prep" / "p00000.json").exists(), "the running partition finished and saved"
