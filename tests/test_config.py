"""Defaults from dask config, runs described in a file (--config), runs repeated
from a dataset (--like): through the real command, with real files."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dask
import pytest

import dask_prep as dp
from dask_prep.options import ConvertOptions, WriteOptions

from helpers import env_without_client, one_line, write

LAUNCHER = 'import sys\nfrom dask_prep.cli import main\nif __name__ == "__main__":\n    sys.exit(main())\n'


def cli(tmp_path: Path, *args, env: dict | None = None, timeout=240) -> subprocess.CompletedProcess:
    """The command as a user runs it, with ``env`` added to the environment."""
    launcher = tmp_path / "bin" / "dask-prep"
    if not launcher.exists():
        write(launcher, LAUNCHER)
    return subprocess.run([sys.executable, str(launcher), *map(str, args)], capture_output=True,
                          text=True, cwd=tmp_path, env={**env_without_client(), **(env or {})},
                          timeout=timeout)


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "my corpus ü"
    for i in range(5):
        write(root / f"doc {i} é.txt", f"Hello world {i}. Second sentence {i}. Third {i}.")
    return root


def shards(out: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(out.glob("shard-*"))}


# -- dask config -------------------------------------------------------------------------


def test_python_defaults_come_from_dask_config():
    with dask.config.set({"dask-prep.shard-size": 7, "dask-prep.format": "pickle",
                          "dask-prep.partition-size": "64MB", "dask-prep.converter": "lines"}):
        w, c = WriteOptions(), ConvertOptions()
        assert (w.shard_size, w.format) == (7, "pickle")
        assert (c.partition_size, c.converter) == (64_000_000, "lines")
        assert WriteOptions(shard_size=3).shard_size == 3  # an explicit argument wins
    assert WriteOptions().shard_size == 10_000 and ConvertOptions().partition_size is None


def test_a_bad_dask_config_value_names_its_setting():
    with dask.config.set({"dask-prep.shard-size": "many"}):
        with pytest.raises(ValueError, match=r"dask-prep.shard-size \(DASK_DASK_PREP__SHARD_SIZE\)"):
            WriteOptions()


def test_default_workers_follow_dask_cpu_count_and_config():
    from dask.system import CPU_COUNT

    from dask_prep.runtime.cluster import default_workers
    assert default_workers() == CPU_COUNT
    with dask.config.set({"dask-prep.workers": 3}):
        assert default_workers() == 3


@pytest.mark.slow  # real CLI runs
def test_cli_defaults_from_environment_and_yaml(tmp_path, corpus):
    r = cli(tmp_path, "run", corpus, "-o", tmp_path / "env", "--workers", "1", "-q",
            env={"DASK_DASK_PREP__SHARD_SIZE": "2"})
    assert r.returncode == 0, r.stderr
    assert dp.open(tmp_path / "env").manifest["shard_size"] == 2
    conf = write(tmp_path / "dask conf" / "dask-prep.yaml",
                 "dask-prep:\n  shard-size: 4\n  converter: sentences\n  partition-size: 16KiB\n")
    r = cli(tmp_path, "run", corpus, "-o", tmp_path / "yaml", "--workers", "1", "-q",
            env={"DASK_CONFIG": str(conf.parent)})
    assert r.returncode == 0, r.stderr
    m = dp.open(tmp_path / "yaml").manifest
    assert (m["shard_size"], m["converter"], m["options"]["partition_size"]) == (4, "sentences", 16384)
    assert m["total_records"] == 15
    r = cli(tmp_path, "run", corpus, "-o", tmp_path / "given", "--workers", "1", "-q",
            "--shard-size", "5", env={"DASK_CONFIG": str(conf.parent)})
    assert r.returncode == 0 and dp.open(tmp_path / "given").manifest["shard_size"] == 5


@pytest.mark.parametrize("name, value, expected", [
    ("DASK_DASK_PREP__SHARD_SIZE", "abc", "dask-prep.shard-size"),
    ("DASK_DASK_PREP__FORMAT", "nope", "dask-prep.format"),
    ("DASK_DASK_PREP__PARTITION_SIZE", "lots", "dask-prep.partition-size"),
    ("DASK_DASK_PREP__WORKERS", "0", "dask-prep.workers"),
    ("DASK_DASK_PREP__MEMORY_LIMIT", "lots", "dask-prep.memory-limit"),
])
@pytest.mark.slow
def test_a_bad_setting_is_one_line_and_exit_2(tmp_path, corpus, name, value, expected):
    r = cli(tmp_path, "run", corpus, "-o", tmp_path / "o", env={name: value})
    line = one_line(r)
    assert r.returncode == 2 and expected in line and name in line and value in line, line
    assert not (tmp_path / "o").exists()


# -- --config FILE --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["toml", "yaml"])
def test_a_run_described_in_a_file(tmp_path, corpus, kind):
    if kind == "toml":
        text = ('inputs = ["my corpus ü"]\noutput = "out ü"\nconverter = "sentences"\n'
                'shard-size = 4\nworkers = 1\npartition_size = "16KiB"\nquiet = true\n')
    else:
        text = ("inputs: [my corpus ü]\noutput: out ü\nconverter: sentences\n"
                "shard_size: 4\nworkers: 1\npartition-size: 16KiB\nquiet: true\n")
    run_file = write(tmp_path / f"my run é.{kind}", text)
    r = cli(tmp_path, "run", "--config", run_file)
    assert r.returncode == 0, r.stderr
    m = dp.open(tmp_path / "out ü").manifest  # relative to the file's folder
    assert (m["shard_size"], m["converter"], m["total_records"]) == (4, "sentences", 15)
    # an option on the command line wins over the file's
    r = cli(tmp_path, "run", "--config", run_file, "--shard-size", "5", "-o", tmp_path / "other")
    assert r.returncode == 0, r.stderr
    assert dp.open(tmp_path / "other").manifest["shard_size"] == 5


def test_an_unknown_key_in_a_run_file_is_one_line_exit_2(tmp_path, corpus):
    run_file = write(tmp_path / "run ü.toml", 'inputs = ["my corpus ü"]\nshard_sise = 4\n')
    r = cli(tmp_path, "run", "--config", run_file, "-o", tmp_path / "o")
    line = one_line(r)
    assert r.returncode == 2 and "'shard-sise'" in line and "run ü.toml" in line, line
    assert "did you mean 'shard-size'" in line


@pytest.mark.parametrize("text, expected", [
    ("inputs = [", "is not valid TOML"),
    ("shard-size = 0", "--shard-size"),
    ("partition-size = 'lots'", "'lots'"),
])
@pytest.mark.slow
def test_a_bad_run_file_is_one_line_exit_2(tmp_path, corpus, text, expected):
    run_file = write(tmp_path / "bad run.toml", text + "\n")
    r = cli(tmp_path, "run", corpus, "--config", run_file, "-o", tmp_path / "o")
    line = one_line(r)
    assert r.returncode == 2 and expected in line and "bad run.toml" in line, line


def test_one_value_for_a_repeatable_option(tmp_path, corpus):
    write(corpus / "notes.md", "Not text.")
    run_file = write(tmp_path / "run.yaml", "suffix: .txt\n")
    r = cli(tmp_path, "plan", corpus, "--config", run_file)
    assert r.returncode == 0, r.stderr
    assert "5 files" in r.stdout


def test_a_missing_run_file_is_one_line_exit_2(tmp_path, corpus):
    r = cli(tmp_path, "run", corpus, "--config", tmp_path / "no such.toml", "-o", tmp_path / "o")
    assert r.returncode == 2 and "no such.toml" in one_line(r)


# -- --like OUT ----------------------------------------------------------------------------


@pytest.mark.slow
def test_the_manifest_records_the_inputs_and_options(tmp_path, corpus):
    dp.run([corpus], tmp_path / "out", converter="sentences", shard_size=4, partition_size="16KiB",
           suffixes=[".txt"], workers=1)
    m = dp.open(tmp_path / "out").manifest
    assert m["inputs"] == [str(corpus)]
    assert m["options"] == {"converter": "sentences", "on_error": "skip", "encoding_errors": "strict",
                            "max_decompressed": ["x", 100.0], "suffixes": [".txt"], "exclude": None,
                            "partition_size": 16384, "format": "parquet", "shard_size": 4,
                            "max_errors": None, "allow_empty": False}


@pytest.mark.slow
def test_like_reproduces_a_dataset_byte_for_byte(tmp_path, corpus):
    conv = write(tmp_path / "my conv ü.py",
                 "def upper(path):\n    yield {'text': open(path, encoding='utf-8').read().upper()}\n")
    skip = write(tmp_path / "skip list.txt", "doc 4 é.txt\n")
    r = cli(tmp_path, "run", corpus, "-o", tmp_path / "first", "--converter", f"{conv.name}:upper",
            "--shard-size", "2", "--exclude", skip, "--partition-size", "9KiB", "--workers", "1", "-q")
    assert r.returncode == 0, r.stderr
    other = tmp_path / "elsewhere"
    other.mkdir()
    r = cli(other, "run", "--like", tmp_path / "first", "-o", tmp_path / "second", "-q")
    assert r.returncode == 0, r.stderr
    first, second = shards(tmp_path / "first"), shards(tmp_path / "second")
    assert first and first == second
    assert dp.open(tmp_path / "second").manifest["total_records"] == 4
    r = cli(other, "run", "--like", tmp_path / "first", "-o", tmp_path / "third", "--shard-size", "3",
            "-q")
    assert r.returncode == 0, r.stderr
    assert [s["records"] for s in dp.open(tmp_path / "third").manifest["shards"]] == [3, 1]


def test_like_of_a_folder_that_is_no_dataset_is_one_line_exit_2(tmp_path, corpus):
    r = cli(tmp_path, "run", "--like", corpus, "-o", tmp_path / "o")
    line = one_line(r)
    assert r.returncode == 2 and "not a dask-prep dataset" in line, line


def test_like_of_a_dataset_made_with_a_python_function_is_one_line_exit_2(tmp_path, corpus):
    """Its converter cannot be named on a command line: refused, never swapped for the default."""
    def upper(path):
        return [{"text": open(path, encoding="utf-8").read().upper()}]
    dp.run([corpus], tmp_path / "made", converter=upper, workers=1)
    r = cli(tmp_path, "run", "--like", tmp_path / "made", "-o", tmp_path / "o")
    line = one_line(r)
    assert r.returncode == 2 and "converter given in Python as a function" in line, line
    assert not (tmp_path / "o").exists()


def test_options_of_a_manifest_feed_the_command_line():
    from dask_prep.runfile import options_of_manifest
    got = options_of_manifest(json.loads(json.dumps({
        "inputs": ["/d/in"], "format": "pickle", "shard_size": 3,
        "options": {"converter": "/d/c.py:f", "max_decompressed": ["bytes", 1024],
                    "exclude": "/d/skip.txt", "allow_empty": True, "max_errors": 0.5}})))
    assert got == {"inputs": ["/d/in"], "format": "pickle", "shard-size": 3, "converter": "/d/c.py:f",
                   "max-decompressed": "1024", "exclude": "/d/skip.txt", "allow-empty": True,
                   "max-errors": 0.5}


@pytest.mark.slow
def test_like_repeats_a_packed_token_run(tmp_path, corpus):
    from test_tokens import make_tokenizer
    tok = make_tokenizer(tmp_path / "my tok ü.json")
    r = cli(tmp_path, "run", corpus, "-o", tmp_path / "first", "--tokenizer", tok, "--seq-len", "8",
            "--format", "tokens", "--shard-size", "3", "--bos", "none", "--workers", "1", "-q")
    assert r.returncode == 0, r.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = cli(elsewhere, "run", "--like", tmp_path / "first", "-o", tmp_path / "second", "-q")
    assert r.returncode == 0, r.stderr
    first, second = (dp.open(tmp_path / n).manifest for n in ("first", "second"))
    assert first["fingerprint"] == second["fingerprint"]
    assert [s["sha256"] for s in first["shards"]] == [s["sha256"] for s in second["shards"]]
    assert first["tokens"]["seq_len"] == 8
