"""`dask-prep plan`: what a run would do, without a cluster and without converting."""
from __future__ import annotations

import pytest

import dask_prep as dp

from helpers import write
from test_config import cli, one_line


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "my corpus ü"
    for i in range(5):
        write(root / f"doc {i} [{i}].txt", f"Hello world {i}. Second sentence {i}.")
    write(root / "sub" / "big.txt.gz", "Compressed. " * 100)
    return root


@pytest.mark.slow
def test_plan_matches_the_run(tmp_path, corpus):
    plan = dp.plan_run([corpus], converter="text", shard_size=2, partition_size="9KiB")
    assert len(plan.sources) == 6 and plan.expected_shards == 3
    result = dp.run([corpus], tmp_path / "out", converter="text", shard_size=2, partition_size="9KiB",
                    workers=1)
    assert result.shards == plan.expected_shards
    assert result.manifest["partitions"] == len(plan.partitions)
    assert result.manifest["sources"]["bytes"] == plan.sources.total_bytes


def test_plan_cli_prints_the_plan_without_a_cluster(tmp_path, corpus):
    skip = write(tmp_path / "skip list.txt", "big.txt.gz\n")
    r = cli(tmp_path, "plan", corpus, tmp_path / "not here ü", "--exclude", skip, "--shard-size", "2",
            "--partition-size", "9KiB", "-o", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    rows = dict(line.strip().split("  ", 1) for line in r.stdout.splitlines())
    assert rows["sources"].startswith("5 files (")
    assert rows["excluded"] == "1 files"
    assert rows["missing"].strip().startswith(str(tmp_path / "not here ü"))
    assert rows["converter"].strip() == "text" and rows["format"].strip() == "parquet"
    assert rows["shards"].strip().startswith("3 (5 records if every source converts")
    parts = len(dp.plan_run([corpus], exclude=skip, partition_size="9KiB").partitions)
    assert parts > 1 and rows["partitions"].strip() == f"{parts} (partition size 9.00 kiB)"
    assert "dashboard" not in r.stderr and not (tmp_path / "out").exists()


def test_plan_says_when_shards_are_known_only_after_converting(tmp_path, corpus):
    r = cli(tmp_path, "plan", corpus, "--converter", "sentences")
    assert r.returncode == 0, r.stderr
    assert "unknown before converting" in r.stdout and "total records / 10,000" in r.stdout


def test_plan_reads_a_run_file(tmp_path, corpus):
    run_file = write(tmp_path / "run ü.toml", 'inputs = ["my corpus ü"]\nshard-size = 5\nworkers = 2\n')
    r = cli(tmp_path, "plan", "--config", run_file)
    assert r.returncode == 0, r.stderr
    assert "2 (6 records" in r.stdout


@pytest.mark.slow
def test_plan_bad_usage_is_one_line_exit_2(tmp_path, corpus):
    r = cli(tmp_path, "plan", corpus, "--converter", "nope")
    assert r.returncode == 2 and "unknown converter 'nope'" in one_line(r)
    r = cli(tmp_path, "plan")
    assert r.returncode == 2 and "no INPUT given" in one_line(r)


def test_run_dry_run_prints_the_plan_and_writes_nothing(tmp_path, corpus):
    r = cli(tmp_path, "run", corpus, "-o", tmp_path / "out ü", "--dry-run", "--shard-size", "4")
    assert r.returncode == 0, r.stderr
    assert "2 (6 records if every source converts" in r.stdout
    assert "dashboard" not in r.stderr and not (tmp_path / "out ü").exists()


def test_packed_sequences_are_known_only_after_tokenizing(corpus):
    plan = dp.plan_run([corpus], seq_len=128)
    assert plan.expected_shards is None and "sequences of 128 tokens" in plan.summary()
