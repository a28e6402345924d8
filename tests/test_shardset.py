import json
import pickle

import dask.bag as db
import pandas as pd
import pyarrow.parquet as pq
import pytest

import dask_prep as dp


@pytest.fixture
def dataset(tmp_path):
    recs = [{"id": i, "words": ["w"] * (i % 4)} for i in range(23)]
    dp.write_shards(db.from_sequence(recs, npartitions=3), tmp_path, shard_size=5)
    return tmp_path, recs


def test_open_len_iter_and_readers(dataset):
    out, recs = dataset
    ds = dp.open(out)
    assert len(ds) == 23 and len(ds.shards) == 5 and "23 records in 5 parquet shards" in repr(ds)
    assert sorted(r["id"] for r in ds) == list(range(23))
    assert sorted(ds.to_bag().pluck("id").compute()) == list(range(23))
    df = ds.to_dataframe().compute()
    assert sorted(df["id"]) == list(range(23)) and ds.to_dataframe().npartitions == 5
    # a different reader than the writer: pandas on each file
    assert sum(len(pd.read_parquet(f)) for f in ds.files) == 23
    assert ds.to_table().num_rows == 23 and str(ds.schema.field("id").type) == "int64"


def test_pickle_needs_allow_pickle_and_loads_with_plain_pickle(tmp_path):
    dp.write_shards(db.from_sequence([("a", 1), ("b", 2), ("c", 3)]), tmp_path, shard_size=2,
                    format="pickle")
    with pytest.raises(dp.PickleNotAllowedError, match="allow_pickle=True"):
        dp.open(tmp_path)
    ds = dp.open(tmp_path, allow_pickle=True)
    assert list(ds) == [("a", 1), ("b", 2), ("c", 3)]
    with open(tmp_path / "shard-00000.pkl", "rb") as f:
        assert pickle.load(f) == [("a", 1), ("b", 2)]


def test_verify_detects_each_kind_of_damage(dataset):
    out, _ = dataset
    assert dp.verify(out).ok
    shard = out / "shard-00001.parquet"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    (out / "shard-00002.parquet").unlink()
    third = out / "shard-00003.parquet"
    third.write_bytes(third.read_bytes()[:-10])
    (out / "shard-00099.parquet").write_bytes(b"stray")
    problems = "\n".join(dp.verify(out).problems)
    assert "shard-00001.parquet: sha256 differs" in problems
    assert "shard-00002.parquet: missing" in problems
    assert "shard-00003.parquet: " in problems and "truncated" in problems
    assert "shard-00099.parquet: shard-like file not listed" in problems


def test_verify_checks_record_counts_against_parquet_footer(dataset):
    out, _ = dataset
    m = json.loads((out / ".manifest.json").read_text())
    m["shards"][0]["records"] = 4
    m["total_records"] = 22
    (out / ".manifest.json").write_text(json.dumps(m))
    problems = dp.verify(out).problems
    assert any("shard-00000.parquet: 5 records, manifest says 4" in p for p in problems)
    assert any("every shard but the last must hold 5" in p for p in problems)


def test_corrupt_or_missing_manifest(dataset, tmp_path_factory):
    out, _ = dataset
    (out / ".manifest.json").write_text("{not json")
    report = dp.verify(out)
    assert not report.ok and ".manifest.json is corrupt" in report.problems[0]
    with pytest.raises(dp.ManifestError, match="corrupt"):
        dp.open(out)
    empty = tmp_path_factory.mktemp("empty")
    assert "not a dask-prep dataset" in dp.verify(empty).problems[0]


def test_parquet_shards_readable_by_plain_pyarrow(dataset):
    out, recs = dataset
    rows = [r for f in sorted(out.glob("shard-*.parquet")) for r in pq.read_table(f).to_pylist()]
    assert sorted(rows, key=lambda r: r["id"]) == recs
