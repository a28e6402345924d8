"""Reading checks what it reads: a shard whose bytes are not what the manifest
recorded (a flipped bit, a truncated copy, a replaced or missing file) raises
one line naming it, and is never returned as if it were data."""
from __future__ import annotations

import random
import shutil
import subprocess

import dask.bag as db
import pytest

import dask_prep as dp

from helpers import dask_prep_cli

RECORDS = [{"text": f"record {i} " + "w " * (i % 9), "words": ["w"] * (i % 9), "n": i} for i in range(300)]


@pytest.fixture
def dataset(tmp_path):
    out = tmp_path / "clean"
    dp.write_shards(db.from_sequence(RECORDS, npartitions=3), out, shard_size=100)
    return out


def damaged(dataset, tmp_path, name, change) -> tuple:
    """A copy of the dataset with ``change(bytes) -> bytes`` applied to shard file ``name``."""
    copy = tmp_path / f"copy-{random.getrandbits(32):08x}"
    shutil.copytree(dataset, copy)
    path = copy / name
    path.write_bytes(change(path.read_bytes()))
    return copy, path


def flip(offset: int, bit: int):
    def change(data: bytes) -> bytes:
        b = bytearray(data)
        b[offset] ^= 1 << bit
        return bytes(b)
    return change


def test_a_single_flipped_bit_anywhere_is_never_read_as_data(dataset, tmp_path):
    clean = dp.open(dataset)
    whole, column = clean.read_shard(1), clean.column_bag("text").compute()
    size = (dataset / "shard-00001.parquet").stat().st_size
    rng = random.Random(7)
    caught_in_columns = 0
    for _ in range(40):
        copy, path = damaged(dataset, tmp_path, "shard-00001.parquet",
                             flip(rng.randrange(size), rng.randrange(8)))
        ds = dp.open(copy)  # the size is right: opening cannot tell
        with pytest.raises(dp.CorruptShardError, match=r"shard-00001\.parquet: .*dask-prep verify") as exc:
            ds.read_shard(1)
        assert "\n" not in str(exc.value) and ds.read_shard(0) == clean.read_shard(0)
        assert not dp.verify(copy).ok
        # a column read checks the pages it reads: it raises, or returns exactly the data
        try:
            got = ds.column_bag("text").compute()
        except dp.CorruptShardError as e:
            assert "shard-00001.parquet" in str(e) and "\n" not in str(e)
            caught_in_columns += 1
        else:
            assert got == column
        shutil.rmtree(copy)
    assert len(whole) == 100
    assert caught_in_columns >= 5  # the text column's pages are a good part of the file


@pytest.mark.parametrize("change,problem", [
    (lambda data: data[:-100], r"[\d,]+ bytes, the manifest says [\d,]+"),
    (lambda data: data + b"\0", r"[\d,]+ bytes, the manifest says [\d,]+"),
    (lambda data: b"", r"0 bytes, the manifest says [\d,]+"),
], ids=["truncated", "grown", "emptied"])
def test_a_shard_of_the_wrong_size_is_refused_on_open_in_one_line(dataset, tmp_path, change, problem):
    copy, _ = damaged(dataset, tmp_path, "shard-00002.parquet", change)
    with pytest.raises(dp.CorruptShardError, match=rf"shard-00002\.parquet: {problem}") as exc:
        dp.open(copy)
    assert "\n" not in str(exc.value) and f"dask-prep verify {copy}" in str(exc.value)
    # without the check, opening works and the damage shows only where it is read
    ds = dp.open(copy, check=False)
    assert ds.read_shard(0) == dp.open(dataset).read_shard(0)


def test_a_missing_shard_is_refused_on_open(dataset, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy)
    (copy / "shard-00001.parquet").unlink()
    with pytest.raises(dp.CorruptShardError, match=r"shard-00001\.parquet: missing"):
        dp.open(copy)


def test_a_shard_replaced_by_another_of_the_same_size_is_caught_on_read(dataset, tmp_path):
    same_size = (dataset / "shard-00000.parquet").read_bytes()
    swapped = lambda data: (same_size + b"\0" * len(data))[:len(data)]  # noqa: E731
    copy, _ = damaged(dataset, tmp_path, "shard-00001.parquet", swapped)
    ds = dp.open(copy)
    with pytest.raises(dp.CorruptShardError, match="sha256 differs"):
        list(ds)
    with pytest.raises(dp.CorruptShardError):
        ds.to_bag().compute()


def test_token_shards_check_both_files(tmp_path):
    docs = [{"input_ids": list(range(i % 50, i % 50 + 1 + i % 13))} for i in range(120)]
    out = tmp_path / "tok"
    dp.write_shards(db.from_sequence(docs, npartitions=2), out, shard_size=40, format="tokens")
    assert [r["input_ids"] for r in dp.open(out)] != []
    for name in ("shard-00001.tokens", "shard-00001.idx"):
        copy, _ = damaged(out, tmp_path, name, flip(5, 3))
        with pytest.raises(dp.CorruptShardError, match=name.replace(".", r"\.")):
            list(dp.open(copy))
        copy, _ = damaged(out, tmp_path, name, lambda data: data[:-8])
        with pytest.raises(dp.CorruptShardError, match=name.replace(".", r"\.") + ": .* bytes"):
            dp.open(copy)


def test_the_training_feed_refuses_a_damaged_shard(dataset, tmp_path):
    docs = [{"input_ids": list(range(1 + i % 13))} for i in range(120)]
    out = tmp_path / "tok"
    dp.write_shards(db.from_sequence(docs, npartitions=2), out, shard_size=40, format="tokens")
    copy, _ = damaged(out, tmp_path, "shard-00002.tokens", flip(3, 0))
    with pytest.raises(dp.CorruptShardError, match=r"shard-00002\.tokens"):
        for _ in dp.open(copy).iter_batches(4, column="input_ids"):
            pass


@pytest.mark.slow  # a real CLI process
def test_the_cli_says_one_line_and_fails(dataset, tmp_path):
    copy, _ = damaged(dataset, tmp_path, "shard-00000.parquet", lambda data: data[:-1])
    res = subprocess.run(dask_prep_cli() + ["report", str(copy), "-o", str(tmp_path / "r.html")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and res.stderr.count("\n") == 1, res.stderr
    assert "CorruptShardError" in res.stderr and "shard-00000.parquet" in res.stderr
    res = subprocess.run(dask_prep_cli() + ["verify", str(copy)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "shard-00000.parquet" in res.stdout + res.stderr
