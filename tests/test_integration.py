"""The whole job on real Dask clusters of processes, and the CLI end to end."""
import json
import subprocess
import textwrap
from collections import Counter
from pathlib import Path

import pytest

import dask_prep as dp
from dask_prep.ingest.converters import jsonl, sentences
from helpers import dask_prep_cli, make_corpus, serial_records, write


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    paths = make_corpus(root, n=60, sentences=40)
    (root / "broken.txt.gz").write_bytes(b"\x1f\x8b\x08\x00 truncated, not gzip")
    write(root / "latin1.txt", "déjà vu. encore.".encode("latin-1"))
    return root, paths


def shard_bytes(out: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(out.glob("shard-*"))}


def manifest_without_timings(out: Path) -> dict:
    m = json.loads((out / ".manifest.json").read_text())
    m.pop("run")
    return m


@pytest.mark.slow
def test_run_on_cluster_matches_serial_loop(client, corpus, tmp_path):
    root, paths = corpus
    res = dp.run([root], tmp_path / "out", converter="sentences", shard_size=500,
                 partition_size=64 * 1024, client=client)
    want = serial_records(paths, sentences)
    got = list(dp.open(tmp_path / "out"))
    assert Counter(r["text"] for r in got) == Counter(r["text"] for r in want)
    sizes = [s["records"] for s in res.manifest["shards"]]
    assert all(n == 500 for n in sizes[:-1]) and sum(sizes) == len(want) == res.records
    assert res.manifest["partitions"] > 4
    assert {Path(e["path"]).name: e["error"] for e in dp.open(tmp_path / "out").errors()} == {
        "broken.txt.gz": "zlib.error", "latin1.txt": "UnicodeDecodeError"}
    assert res.manifest["error_types"] == {"UnicodeDecodeError": 1, "zlib.error": 1}
    assert "2 (UnicodeDecodeError 1, zlib.error 1; see .errors.jsonl)" in res.summary()
    assert "records" in res.summary() and "<table>" in res._repr_html_()


@pytest.mark.slow  # a real CLI run or several: seconds
def test_byte_identical_with_one_worker_or_two(corpus, tmp_path):
    root, _ = corpus
    opts = dict(converter="sentences", shard_size=333, partition_size=48 * 1024)
    one = dp.run([root], tmp_path / "one", workers=1, **opts)
    two = dp.run([root], tmp_path / "two", workers=2, **opts)
    assert one.workers == 1 and two.workers == 2
    assert shard_bytes(tmp_path / "one") == shard_bytes(tmp_path / "two")
    assert manifest_without_timings(tmp_path / "one") == manifest_without_timings(tmp_path / "two")
    assert (tmp_path / "one" / ".errors.jsonl").read_bytes() == (tmp_path / "two" / ".errors.jsonl").read_bytes()
    assert one.dashboard_link.startswith("http://127.0.0.1:")


def test_user_file_converter_reaches_workers_without_install(client, tmp_path):
    conv = write(tmp_path / "user_code" / "myconv.py", textwrap.dedent("""
        def lengths(path):
            with open(path, encoding="utf-8") as f:
                for line in f:
                    yield {"chars": len(line.rstrip())}
    """))
    for i in range(5):
        write(tmp_path / "in" / f"{i}.txt", "ab\nabcd\n" * (i + 1))
    res = dp.run([tmp_path / "in"], tmp_path / "out", converter=f"{conv}:lengths", shard_size=4,
                 client=client)
    assert res.records == 30 and res.errors == 0
    assert res.manifest["converter"] == f"{conv}:lengths"
    assert sorted(r["chars"] for r in dp.open(tmp_path / "out")) == [2] * 15 + [4] * 15


def test_big_jsonl_file_split_into_byte_ranges(client, tmp_path):
    lines = [json.dumps({"i": i, "t": "x" * (i % 50)}) for i in range(20_000)]
    lines[7] = "{broken"
    big = write(tmp_path / "big.jsonl", "\n".join(lines) + "\n")
    res = dp.run([big], tmp_path / "out", converter="jsonl", shard_size=1000,
                 partition_size=100_000, client=client)
    assert res.manifest["partitions"] >= 5
    want = serial_records([big], jsonl)
    assert sorted(r["i"] for r in dp.open(tmp_path / "out")) == sorted(r["i"] for r in want)
    assert res.records == 19_999
    [err] = dp.open(tmp_path / "out").errors()
    assert err["line"] == 8 and err["error"] == "JSONDecodeError"


def cli(*args, cwd=None):
    return subprocess.run(dask_prep_cli() + list(map(str, args)), capture_output=True, text=True,
                          cwd=cwd, timeout=240)


@pytest.mark.slow  # a real CLI run or several: seconds
def test_cli_run_verify_info_and_exit_codes(corpus, tmp_path):
    root, _ = corpus
    out = tmp_path / "out"
    r = cli("run", root, "-o", out, "--converter", "sentences", "--workers", "2",
            "--shard-size", "700", "--suffix", ".txt", tmp_path / "missing.txt")
    assert r.returncode == 0, r.stderr
    assert "dashboard: http://127.0.0.1:" in r.stderr
    assert "1 input(s) not found" in r.stderr and "missing" in r.stdout
    assert "records" in r.stdout and "shards" in r.stdout and "records/s" in r.stdout
    assert cli("verify", out).returncode == 0
    info = cli("info", out)
    assert info.returncode == 0 and "sentences" in info.stdout and "700" in info.stdout
    shard = out / "shard-00000.parquet"
    shard.write_bytes(shard.read_bytes()[:-1] + b"\x00")
    bad = cli("verify", out)
    assert bad.returncode == 1 and "sha256" in bad.stderr + bad.stdout


@pytest.mark.slow  # a real CLI run or several: seconds
def test_cli_usage_errors_exit_2_and_failures_exit_1(corpus, tmp_path):
    root, _ = corpus
    r = cli("run", root, "-o", tmp_path / "o1", "--converter", "nope")
    assert r.returncode == 2 and r.stderr.strip().startswith("dask-prep: error: unknown converter")
    assert cli("run", root).returncode == 2
    (tmp_path / "o2").mkdir()
    (tmp_path / "o2" / "keep.txt").write_text("x")
    r = cli("run", root, "-o", tmp_path / "o2", "--workers", "1")
    assert r.returncode == 2 and "did not write" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = cli("run", root, "-o", tmp_path / "o3", "--workers", "1", "--on-error", "raise", "-q")
    assert r.returncode == 1 and ("broken.txt.gz" in r.stderr or "latin1.txt" in r.stderr)
    assert "Traceback" not in r.stderr and not (tmp_path / "o3" / ".manifest.json").exists()


@pytest.mark.slow  # a real CLI run or several: seconds
def test_cli_demo_on_the_standard_library(tmp_path):
    r = cli("demo", tmp_path / "demo", "--workers", "2")
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "demo" / ".manifest.json").read_text())
    assert m["converter"] == "sentences" and m["total_records"] > 50_000
    assert m["sources"]["count"] > 500
    assert "warning" not in r.stderr, r.stderr  # the demo's own exclude list matches
    listed = (tmp_path / "demo" / ".sources.jsonl").read_text()
    assert "site-packages" not in listed and "dist-packages" not in listed  # only the standard library
    assert all(s["records"] == 10_000 for s in m["shards"][:-1])
    assert cli("verify", tmp_path / "demo").returncode == 0
