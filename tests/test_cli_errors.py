"""The CLI and scripts fail in one line: the exit code, the file, the fix; never a traceback.

Each test drives the real ``dask-prep`` command (through a launcher like the
installed console script, so the working directory is not on ``sys.path``) or a
real script run by ``python``, in a subprocess.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import dask_prep as dp

from dask_prep.write.output import MANIFEST

from helpers import env_without_client, one_line, write

LAUNCHER = 'import sys\nfrom dask_prep.cli import main\nif __name__ == "__main__":\n    sys.exit(main())\n'


def dask_prep(tmp_path: Path, *args, cwd=None, timeout=240) -> subprocess.CompletedProcess:
    """The command as a user runs it (the console script: cwd is not on sys.path)."""
    launcher = tmp_path / "bin" / "dask-prep"
    if not launcher.exists():
        write(launcher, LAUNCHER)
    return subprocess.run([sys.executable, str(launcher), *map(str, args)], capture_output=True,
                          text=True, cwd=cwd or tmp_path, env=env_without_client(), timeout=timeout)


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "my corpus #ü"
    for i in range(3):
        write(root / f"-doc {i}::ü[{i}].txt", f"Hello world {i}. Second sentence {i}.")
    return root


def _case(tmp_path: Path, name: str) -> tuple[list, str]:
    """Arguments for one bad-usage case and a piece of its expected line."""
    out = tmp_path / "out dir"
    if name == "syntax error":
        write(tmp_path / "conv ü.py", "def convert(path:\n    yield {}\n")
        return ["-o", out, "--converter", f"{tmp_path / 'conv ü.py'}:convert"], "SyntaxError"
    if name == "missing import":
        write(tmp_path / "conv2.py", "import numpyy_not_here\n\ndef convert(path):\n    yield {}\n")
        return ["-o", out, "--converter", "conv2.py:convert"], "No module named 'numpyy_not_here'"
    if name == "syntax error in a module":
        write(tmp_path / "brokenmod.py", "def convert(path:\n")
        return ["-o", out, "--converter", "brokenmod:convert"], "brokenmod.py' line 1: SyntaxError"
    if name == "output is a file":
        write(tmp_path / "out file", "x")
        return ["-o", tmp_path / "out file"], "out file exists and is not a directory"
    if name == "foreign folder":
        write(out / "my notes.txt", "mine")
        return ["-o", out], "my notes.txt"
    if name == "missing exclude file":
        return ["-o", out, "--exclude", tmp_path / "skip me.txt"], "skip me.txt' does not exist"
    if name == "memory limit":
        return ["-o", out, "--memory-limit", "lots"], "'lots'"
    raise AssertionError(name)


BAD_USAGE = ["syntax error", "missing import", "syntax error in a module", "output is a file",
             "foreign folder", "missing exclude file", "memory limit"]


@pytest.mark.parametrize("case", BAD_USAGE)
def test_bad_usage_is_one_line_and_exit_2(tmp_path, corpus, case):
    args, expected = _case(tmp_path, case)
    r = dask_prep(tmp_path, "run", corpus, *args, "--workers", "1")
    line = one_line(r)
    assert r.returncode == 2, line
    assert expected in line, line
    assert "dashboard" not in r.stderr  # refused before a cluster started


@pytest.mark.slow  # a real CLI run or several: seconds
def test_click_usage_errors_are_one_line(tmp_path, corpus):
    r = dask_prep(tmp_path, "run", corpus, "-o", tmp_path / "o", "--shard-size", "0")
    assert r.returncode == 2 and "--shard-size" in one_line(r)
    r = dask_prep(tmp_path, "rnu")
    assert r.returncode == 2 and "Did you mean 'run'" in one_line(r)


UNGUARDED = """\
import dask_prep as dp

result = dp.run([{src!r}], {out!r}, converter="sentences", workers=1)
print(result.records)
"""

GUARDED = """\
import dask_prep as dp


def main():
    result = dp.run([{src!r}], {out!r}, converter="sentences", workers=1)
    print(result.records)


if __name__ == "__main__":
    main()
"""


def test_unguarded_script_fails_with_the_fix(tmp_path, corpus):
    script = write(tmp_path / "my script.py", UNGUARDED.format(src=str(corpus), out=str(tmp_path / "o")))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path,
                       env=env_without_client(), timeout=120)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert "UnguardedScriptError" in last and 'if __name__ == "__main__":' in last, r.stderr
    assert "my script.py line 3" in last
    assert "Nanny failed" not in r.stderr and len(r.stderr.splitlines()) < 12
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_guarded_script_runs(tmp_path, corpus):
    script = write(tmp_path / "ok.py", GUARDED.format(src=str(corpus), out=str(tmp_path / "o")))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path,
                       env=env_without_client(), timeout=240)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "6"


@pytest.mark.slow
def test_converter_module_found_in_the_working_directory(tmp_path, corpus):
    work = tmp_path / "work dir"
    write(work / "myconv.py", "def convert(path):\n    yield {'n': len(open(path).read())}\n")
    r = dask_prep(tmp_path, "run", corpus, "-o", tmp_path / "o", "--converter", "myconv:convert",
                  "--workers", "1", "-q", cwd=work)
    assert r.returncode == 0, r.stderr
    import dask_prep as dp
    assert sorted(rec["n"] for rec in dp.open(tmp_path / "o")) == [33, 33, 33]


@pytest.mark.slow
def test_missing_inputs_warned_once_and_quiet_silences(tmp_path, corpus):
    r = dask_prep(tmp_path, "run", corpus, tmp_path / "not here", "-o", tmp_path / "o", "--workers", "1")
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("input(s) not found") == 1, r.stderr
    assert "not here" in r.stdout  # the summary lists it
    q = dask_prep(tmp_path, "run", corpus, tmp_path / "not here", "-o", tmp_path / "o2",
                  "--workers", "1", "-q")
    assert q.returncode == 0 and q.stderr.strip() == "", q.stderr


HOG = """\
import time


def convert(path):
    if "[1]" in path:
        block = b"x" * 800_000_000
        time.sleep(3)
    yield {"text": open(path).read()}
"""


@pytest.mark.slow
def test_a_file_that_needs_more_memory_than_a_worker_has_is_its_error_naming_the_fix(tmp_path, corpus):
    """Its worker is killed for memory every time it is tried: the file is listed, the
    others arrive; asked to stop at the first failure, one line names the file."""
    write(tmp_path / "hog.py", HOG)
    run = ["run", corpus, "--converter", "hog.py:convert", "--workers", "1", "--memory-limit", "300MB"]
    r = dask_prep(tmp_path, *run, "-o", tmp_path / "o", timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    ds = dp.open(tmp_path / "o")
    assert sorted(rec["text"] for rec in ds) == ["Hello world 0. Second sentence 0.",
                                                 "Hello world 2. Second sentence 2."]
    [error] = ds.errors()
    assert error["path"] == str(corpus / "-doc 1::ü[1].txt") and error["error"] == "WorkerKilled"
    assert "more memory than a worker has" in error["message"] and "--memory-limit" in error["message"]
    strict = dask_prep(tmp_path, *run, "-o", tmp_path / "strict", "--on-error", "raise", timeout=300)
    assert strict.returncode == 1, strict.stderr
    lines = [line for line in strict.stderr.splitlines() if line.startswith("dask-prep: ")]
    assert len(lines) == 1 and "Traceback" not in strict.stderr, strict.stderr
    assert f"{corpus / '-doc 1::ü[1].txt'}: WorkerKilled" in lines[0] and "--memory-limit" in lines[0]
    assert not os.path.exists(tmp_path / "strict" / MANIFEST)
