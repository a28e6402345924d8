"""Output safety: never overwrite or delete what dask-prep did not write."""
import dask.bag as db
import pytest

import dask_prep as dp


def bag(n=7):
    return db.from_sequence([{"i": i} for i in range(n)], npartitions=2)


def test_refuses_a_folder_with_foreign_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(dp.OutputExistsError, match=r"1 file\(s\) dask-prep did not write \(notes.txt\)"):
        dp.write_shards(bag(), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_overwrite_writes_alongside_and_keeps_foreign_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    dp.write_shards(bag(), tmp_path, shard_size=5, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert dp.verify(tmp_path).ok


def test_same_job_again_is_a_no_op_and_other_options_are_refused(tmp_path):
    first = dp.write_shards(bag(), tmp_path, shard_size=5)
    again = dp.write_shards(bag(), tmp_path, shard_size=5)
    assert again == first
    with pytest.raises(dp.OutputExistsError, match="other inputs or options.*--overwrite"):
        dp.write_shards(bag(), tmp_path, shard_size=3)
    replaced = dp.write_shards(bag(), tmp_path, shard_size=3, overwrite=True)
    assert [s["records"] for s in replaced["shards"]] == [3, 3, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".errors.jsonl", ".manifest.json", "shard-00000.parquet", "shard-00001.parquet",
        "shard-00002.parquet"]


def test_output_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(dp.OutputExistsError, match="not a directory"):
        dp.write_shards(bag(), tmp_path / "f")
