"""One contract for every shard format: the built-in ones and toy formats
registered from this test (a six-line JSON-lines format, and one whose shards
are two files). Each must write, rerun, verify, open, iterate and batch through
the same code paths, asking the format, never testing its name.
"""
from __future__ import annotations

import json

import dask.bag as db
import numpy as np
import pytest

import dask_prep as dp
from dask_prep.write import formats as registry


class JsonLines(dp.ShardFormat):
    """The six lines the README promises a new format costs."""

    name, suffix = "toy-jsonl", ".jsonl"

    def write(self, batch, path):
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in batch)

    def decode(self, shard):
        return [json.loads(line) for line in shard.read().splitlines()]


class JsonLinesIndexed(JsonLines):
    """Records in ``.jsonl`` and their byte offsets in a companion ``.idx``."""

    name, companions = "toy-indexed", (".idx",)

    def write(self, batch, path):
        super().write(batch, path)
        return {".idx": self._index(batch)}

    def companion_bytes(self, batch):
        return {".idx": self._index(batch)}

    @staticmethod
    def _index(batch) -> bytes:
        sizes = [len((json.dumps(r) + "\n").encode()) for r in batch]
        return np.cumsum([0] + sizes, dtype=np.uint64).tobytes()

    def decode(self, shard):
        data, offsets = shard.read(), np.frombuffer(shard.read(".idx"), np.uint64)
        return [json.loads(data[a:b]) for a, b in zip(offsets[:-1], offsets[1:])]


@pytest.fixture(autouse=True)
def toy_formats(monkeypatch):
    monkeypatch.setattr(registry, "_CLASSES", dict(registry._CLASSES))
    dp.register_format(JsonLines)
    dp.register_format(JsonLinesIndexed)


FORMATS = ["parquet", "pickle", "toy-jsonl", "toy-indexed", "tokens", "megatron", "mds"]
#: Formats that hold token ids only: their records are ``{"input_ids": [...]}``.
TOKEN_FORMATS = {"tokens", "megatron", "mds"}
RECORDS = [{"text": f"doc {i}", "token_ids": list(range(1, i % 7 + 2))} for i in range(53)]
TOKEN_RECORDS = [{"input_ids": [i, *range(1, i % 7 + 2)]} for i in range(53)]


def test_every_registered_format_is_in_the_contract_suite():
    assert set(registry.format_names()) <= set(FORMATS)


def records_of(fmt):
    return TOKEN_RECORDS if fmt in TOKEN_FORMATS else RECORDS


def column_of(fmt):
    return "input_ids" if fmt in TOKEN_FORMATS else "token_ids"


def canonical(fmt, records):
    """Records as comparable tuples, in the order they were made."""
    if fmt in TOKEN_FORMATS:
        return sorted(tuple(int(x) for x in r["input_ids"]) for r in records)
    got = sorted(records, key=lambda r: int(r["text"].split()[1]))
    return [(r["text"], list(r["token_ids"])) for r in got]


def write(tmp_path, fmt, **kwargs):
    bag = db.from_sequence(records_of(fmt), npartitions=4)
    return dp.write_shards(bag, tmp_path / "out", format=fmt, shard_size=10, **kwargs)


def opened(path, fmt):
    return dp.open(path, allow_pickle=registry.format_class(fmt).needs_trust)


@pytest.mark.parametrize("fmt", FORMATS)
def test_write_verify_open_iterate(tmp_path, fmt):
    m = write(tmp_path, fmt)
    assert [s["records"] for s in m["shards"]] == [10, 10, 10, 10, 10, 3]
    assert dp.verify(tmp_path / "out").ok
    ds = opened(tmp_path / "out", fmt)
    assert len(ds) == 53
    assert canonical(fmt, list(ds)) == canonical(fmt, records_of(fmt))
    assert len(ds.to_bag().compute(scheduler="sync")) == 53


@pytest.mark.parametrize("fmt", FORMATS)
def test_rerun_returns_the_complete_dataset(tmp_path, fmt):
    first = write(tmp_path, fmt)
    assert write(tmp_path, fmt) == first


@pytest.mark.parametrize("fmt", FORMATS)
def test_verify_sees_a_changed_byte_and_a_stray_shard(tmp_path, fmt):
    m = write(tmp_path, fmt)
    last = m.files[-1]  # the manifest names every file, companions included
    path = tmp_path / "out" / last
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    assert any(last in p for p in dp.verify(tmp_path / "out").problems)
    stray = tmp_path / "out" / f"shard-99999{registry.format_class(fmt).suffix}"
    stray.write_bytes(b"")
    assert any("not listed in the manifest" in p for p in dp.verify(tmp_path / "out").problems)


@pytest.mark.parametrize("fmt", FORMATS)
def test_batches_of_token_ids(tmp_path, fmt):
    write(tmp_path, fmt)
    column = column_of(fmt)
    batches = list(opened(tmp_path / "out", fmt).iter_batches(8, column=column))
    assert sum(len(b["lengths"]) for b in batches) == 53
    lengths = sorted(int(n) for b in batches for n in b["lengths"])
    assert lengths == sorted(len(r[column]) for r in records_of(fmt))


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_on_a_cluster_the_format_travels_with_the_tasks(client, tmp_path, fmt):
    """Workers never imported this test module, nor registered its formats."""
    m = write(tmp_path, fmt)
    assert m["total_records"] == 53 and dp.verify(tmp_path / "out").ok


def test_a_taken_name_is_refused_and_names_are_checked():
    with pytest.raises(ValueError, match="already registered"):
        dp.register_format(JsonLines)
    with pytest.raises(TypeError, match="not a ShardFormat subclass"):
        dp.register_format(dict)
