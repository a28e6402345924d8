"""The benchmark suite's smoke test (``python -m benchmarks --quick``: no timing
asserted) and its record check, which must tell different outputs apart."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import pyarrow.parquet as pq

from benchmarks.check import fingerprint
from benchmarks.suite import METHODS, WORKLOADS

ROOT = Path(__file__).parent.parent


@pytest.mark.slow
def test_quick_suite_runs_every_method_on_every_workload_with_the_same_records(tmp_path):
    # every method but datatrove, whose environment of its own would be installed
    # from the package registry on first use (benchmarks/datatrove_env.py)
    methods = [m for m in METHODS if m != "datatrove"]
    r = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--data", str(tmp_path / "data"),
                        "--results", str(tmp_path / "results"), *(f"--method={m}" for m in methods)],
                       cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = (tmp_path / "results" / "suite.md").read_text()
    assert "every method produced the same records in every workload" in report
    for wl in WORKLOADS:
        section = report.split(f"### {wl.name}\n", 1)[1].split("###", 1)[0]
        for method in (wl.methods if wl.name != "bigger-than-memory" else ("1x", "2x")):
            if method == "datatrove":
                continue
            assert f"| {method} | " in section and "failed" not in section, (wl.name, method)
    assert set(methods) <= {m for m in METHODS if f"| {m} | " in report}
    assert "cluster start-up + shutdown" in report and "peak worker RSS" in report
    assert (tmp_path / "results" / "suite.png").read_bytes()[:4] == b"\x89PNG"


def test_fingerprint_sees_records_not_files_or_order(tmp_path):
    records = [{"text": f"sentence {i}", "words": ["w"] * (i % 4), "n": i} for i in range(500)]

    def write(folder, *tables):
        (tmp_path / folder).mkdir()
        for k, t in enumerate(tables):
            pq.write_table(t, tmp_path / folder / f"{k}.parquet")
        return fingerprint(tmp_path / folder)

    whole = write("whole", pa.Table.from_pylist(records))
    split = write("split", pa.Table.from_pylist(records[300:]),
                  pa.Table.from_pylist(records[:300][::-1]).cast(
                      pa.schema([("text", pa.large_string()), ("words", pa.list_(pa.string())),
                                 ("n", pa.int32())])))
    assert split.same_records(whole) and split.shard_sizes == (200, 300)
    changed = [dict(r) for r in records]
    changed[7]["text"] = "sentecne 7"  # same bytes, two swapped
    assert not write("changed", pa.Table.from_pylist(changed)).same_records(whole)
    moved = [dict(r) for r in records]
    moved[7]["words"], moved[8]["words"] = moved[8]["words"], moved[7]["words"]
    assert not write("moved", pa.Table.from_pylist(moved)).same_records(whole)
    assert write("twice", pa.Table.from_pylist(records + records)).same_records(whole.twice())


@pytest.mark.slow
def test_quick_token_benchmark_checks_every_stream_against_the_loop(tmp_path):
    methods = ["loop 1 thread", "hf-datasets", "dask-prep parquet", "dask-prep megatron",
               "dask-prep parquet 2x"]  # datatrove's environment would be installed on first use
    r = subprocess.run([sys.executable, "-m", "benchmarks.tokens", "--quick", "--data", str(tmp_path / "data"),
                        "--results", str(tmp_path / "results"), "--methods", *methods],
                       cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = (tmp_path / "results" / "tokens.md").read_text()
    for method in methods:
        assert f"| {method} | " in report
    assert r.stderr.count("tokens ok") == len(methods)


def test_token_prefix_fingerprint_is_the_packed_streams(tmp_path):
    from benchmarks.tokens import fingerprint as token_fingerprint, prefix_fingerprint

    stream = np.arange(10, dtype=np.uint32)
    stream.tofile(tmp_path / "ref.bin")
    out = tmp_path / "out"
    out.mkdir()
    seqs = pa.table({"input_ids": pa.array([[0, 1, 2, 3], [4, 5, 6, 7]], pa.list_(pa.int32()))})
    pq.write_table(seqs, out / "shard-00000.parquet")
    assert token_fingerprint("dask-prep parquet", out) == prefix_fingerprint(tmp_path / "ref.bin", 8)
    assert prefix_fingerprint(tmp_path / "ref.bin", 8) != prefix_fingerprint(tmp_path / "ref.bin", 7)
    twice = prefix_fingerprint(tmp_path / "ref.bin", 14, copies=2)
    np.concatenate([stream, stream[:4]]).tofile(tmp_path / "twice.bin")
    assert twice == prefix_fingerprint(tmp_path / "twice.bin", 14)
