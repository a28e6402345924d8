"""The output folder is a Parquet dataset for every common reader, with no glob.

Layout version 2 names every file that is not a shard with a leading ``.``
(``.manifest.json``, ``.errors.jsonl``, ``.sources.jsonl``), the Parquet and
Spark convention for "not data" that Hugging Face ``datasets`` also follows.
Each reader opens a real output made by ``dp.run`` (errors and sources files
present, the errors file not empty) and must give the records ``dp.open`` gives.
Version 1 folders (``manifest.json``, ``errors.jsonl``, ``_sources.jsonl``)
are still read, and ``--overwrite`` replaces them without leaving their files.
"""
from __future__ import annotations

import json
import os

import pytest

import dask_prep as dp
from dask_prep.write.sources_file import check_sources
from helpers import write

pytestmark = pytest.mark.slow


def rows(records) -> list[tuple]:
    return sorted((r["path"], r["text"]) for r in records)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A real output of ``run``: 12 good files, one that fails (a non-empty errors file)."""
    from distributed import Client, LocalCluster
    root = tmp_path_factory.mktemp("readers")
    for i in range(12):
        write(root / "in ü" / f"doc #{i:02d}.txt", f"text {i} " * (i + 1))
    write(root / "in ü" / "bad.txt", b"\xff\xfe not utf-8")
    out = root / "out data ü"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False) as c, Client(c) as client:
        res = dp.run([root / "in ü"], out, converter="text", shard_size=5, client=client)
    assert res.errors == 1
    names = sorted(os.listdir(out))
    assert names == [".errors.jsonl", ".manifest.json", ".sources.jsonl", "shard-00000.parquet",
                     "shard-00001.parquet", "shard-00002.parquet"], names
    assert (out / ".errors.jsonl").stat().st_size > 0
    return out, rows(dp.open(out))


def test_pandas(dataset):
    import pandas as pd
    out, expected = dataset
    assert rows(pd.read_parquet(out).to_dict("records")) == expected


def test_pyarrow_read_table_and_dataset(dataset):
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq
    out, expected = dataset
    assert rows(pq.read_table(out).to_pylist()) == expected
    assert rows(pads.dataset(out, format="parquet").to_table().to_pylist()) == expected


def test_polars_needs_hidden_file_prefix(dataset):
    """Polars refuses any folder holding a file that is not Parquet, whatever its
    name; ``scan_parquet(..., hidden_file_prefix=".")`` skips dask-prep's files
    (``read_parquet`` has no such option in polars 2: a glob)."""
    import polars as pl
    out, expected = dataset
    with pytest.raises(Exception, match="different file extensions"):
        pl.read_parquet(out)
    with pytest.raises(Exception, match="different file extensions"):
        pl.scan_parquet(out).collect()
    assert rows(pl.scan_parquet(out, hidden_file_prefix=".").collect().to_dicts()) == expected
    assert rows(pl.read_parquet(f"{out}/*.parquet").to_dicts()) == expected


def test_dask_dataframe(dataset):
    import dask.dataframe as dd
    out, expected = dataset
    assert rows(dd.read_parquet(out).compute().to_dict("records")) == expected


def test_duckdb(dataset):
    import duckdb
    out, expected = dataset
    con = duckdb.connect()
    got = con.execute("select path, text from read_parquet(?)", [str(out)]).fetchall()
    assert sorted(got) == expected


def test_hugging_face_datasets_data_dir_and_data_files(dataset, tmp_path):
    import datasets
    out, expected = dataset
    by_dir = datasets.load_dataset("parquet", data_dir=str(out), split="train",
                                   cache_dir=str(tmp_path / "a"))
    assert rows(by_dir) == expected
    files = dp.open(out).files
    by_files = datasets.load_dataset("parquet", data_files=files, split="train",
                                     cache_dir=str(tmp_path / "b"))
    assert rows(by_files) == expected


def test_ray_data(dataset):
    import shutil
    import tempfile
    ray = pytest.importorskip("ray")  # in the test extra; skips only where its wheel is missing
    out, expected = dataset
    short = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # its sockets' paths must stay < 108 bytes
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, _temp_dir=short)
    try:
        got = ray.data.read_parquet(str(out)).take_all()
    finally:
        ray.shutdown()
        shutil.rmtree(short, ignore_errors=True)
    assert rows(got) == expected


def as_version_1(out):
    """Rename a version 2 folder's files to version 1's names, as an older dask-prep wrote them."""
    m = json.loads((out / ".manifest.json").read_text())
    m["version"] = 1
    m["sources"]["file"] = "_sources.jsonl"
    (out / ".sources.jsonl").rename(out / "_sources.jsonl")
    (out / ".errors.jsonl").rename(out / "errors.jsonl")
    (out / "manifest.json").write_text(json.dumps(m))
    (out / ".manifest.json").unlink()


def test_a_version_1_folder_is_read_and_replaced(dataset, tmp_path, client):
    import shutil
    src, expected = dataset
    out = tmp_path / "old"
    shutil.copytree(src, out)
    as_version_1(out)
    ds = dp.open(out)
    assert rows(ds) == expected and ds.manifest["version"] == 1
    assert [e["path"].endswith("bad.txt") for e in ds.errors()] == [True]
    assert dp.verify(out).ok
    assert not check_sources(out)  # the version 1 list of sources is found and matches
    inputs = ds.manifest["inputs"]
    with pytest.raises(dp.OutputExistsError, match="version 1.*--overwrite"):
        dp.run(inputs, out, converter="text", shard_size=5, client=client)
    dp.run(inputs, out, converter="text", shard_size=5, client=client, overwrite=True)
    assert sorted(os.listdir(out)) == [".errors.jsonl", ".manifest.json", ".sources.jsonl",
                                       "shard-00000.parquet", "shard-00001.parquet",
                                       "shard-00002.parquet"]
    assert rows(dp.open(out)) == expected and dp.open(out).manifest["version"] == 2
