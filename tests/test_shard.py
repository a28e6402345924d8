"""write_shards on any bag: exact sizes, order, schema, errors, formats."""
import json
import pickle
import tempfile
from collections import Counter

import dask
import dask.bag as db
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dask import delayed
from hypothesis import example, given, settings, strategies as st

import dask_prep as dp
from dask_prep.write.output import WORK
from helpers import make_corpus, serial_records, write


def bag_of_partitions(sizes):
    """A bag whose partition i holds ``sizes[i]`` records numbered in order."""
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return db.from_delayed([delayed(lambda a, n: [{"i": k} for k in range(a, a + n)])(a, n)
                            for a, n in zip(starts, sizes)])


def read_shards(out, manifest):
    return [pq.read_table(f"{out}/{s['file']}").column("i").to_pylist() for s in manifest["shards"]]


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(0, 60), min_size=1, max_size=8), n=st.integers(1, 25),
       fmt=st.sampled_from(["parquet", "pickle"]))
@pytest.mark.slow
def test_every_shard_exact_but_the_last(sizes, n, fmt):
    with tempfile.TemporaryDirectory() as out:
        m = dp.write_shards(bag_of_partitions(sizes), out, shard_size=n, format=fmt, allow_empty=True)
        counts = [s["records"] for s in m["shards"]]
        total = sum(sizes)
        assert m["total_records"] == total == sum(counts)
        assert all(c == n for c in counts[:-1]) and (not counts or 0 < counts[-1] <= n)
        assert len(counts) == -(-total // n)
        if fmt == "parquet":
            shards = read_shards(out, m)
        else:
            shards = [pickle.load(open(f"{out}/{s['file']}", "rb")) for s in m["shards"]]
            shards = [[r["i"] for r in shard] for shard in shards]
        assert sorted(i for s in shards for i in s) == list(range(total))
        assert all(s == sorted(s) for s in shards), "record order within a shard follows the input"
        assert sorted(p.name for p in __import__("pathlib").Path(out).iterdir()) == \
            [".errors.jsonl", ".manifest.json"] + [s["file"] for s in m["shards"]]


def test_full_shards_come_first_then_merged_remainders(tmp_path):
    m = dp.write_shards(bag_of_partitions([25, 25]), tmp_path, shard_size=10)
    assert read_shards(tmp_path, m) == [list(range(0, 10)), list(range(10, 20)),
                                        list(range(25, 35)), list(range(35, 45)),
                                        list(range(20, 25)) + list(range(45, 50))]


def test_records_match_a_serial_loop(tmp_path):
    paths = make_corpus(tmp_path / "in", n=30)
    bag = dp.to_bag(dp.discover(tmp_path / "in"), "sentences", partition_size=20_000)
    assert bag.npartitions > 3
    m = dp.write_shards(bag, tmp_path / "out", shard_size=97)
    got = list(dp.open(tmp_path / "out"))
    from dask_prep.ingest.converters import sentences
    want = serial_records(paths, sentences)
    key = lambda r: (r["text"], tuple(r["words"]))  # noqa: E731
    assert Counter(map(key, got)) == Counter(map(key, want)) and m["total_records"] == len(want)


def test_schema_widened_across_partitions_and_shards_rewritten(tmp_path):
    bag = db.from_sequence([{"x": 1, "y": None}, {"x": 2, "y": None},
                            {"x": 2.5, "y": "s"}, {"x": 3, "y": "t", "z": [1]}], npartitions=3)
    m = dp.write_shards(bag, tmp_path, shard_size=1)
    types = {f["name"]: f["type"] for f in m["schema"]}
    assert types == {"x": "double", "y": "string", "z": "list<item: int64>"}
    for s in m["shards"]:
        assert str(pq.read_schema(tmp_path / s["file"]).field("x").type) == "double"
    assert dp.verify(tmp_path).ok


@pytest.mark.parametrize("partition_size", [None, 5000], ids=["same-partition", "own-partitions"])
def test_conflicting_types_are_an_error_naming_the_file_and_field(tmp_path, partition_size):
    write(tmp_path / "in" / "a.jsonl", '{"n": 1}\n{"n": 2}\n')
    write(tmp_path / "in" / "b.jsonl", '{"n": "two"}\n')
    write(tmp_path / "in" / "c.jsonl", '{"n": 3}\n')
    bag = dp.to_bag(dp.discover(tmp_path / "in"), "jsonl", partition_size=partition_size)
    assert bag.npartitions == (1 if partition_size is None else 3)
    m = dp.write_shards(bag, tmp_path / "out", shard_size=10)
    assert m["total_records"] == 3
    errors = dp.open(tmp_path / "out").errors()
    assert len(errors) == 1 and errors[0]["path"].endswith("b.jsonl")
    assert "'n'" in errors[0]["message"] and errors[0]["error"] == "SchemaMismatchError"
    with pytest.raises(dp.SchemaMismatchError, match=r"b\.jsonl.*'n'"):
        dp.write_shards(dp.to_bag(dp.discover(tmp_path / "in"), "jsonl", partition_size=partition_size),
                        tmp_path / "out2", shard_size=10, on_error="raise")
    assert not (tmp_path / "out2" / ".manifest.json").exists()


def test_integer_too_large_for_arrow_is_an_error_naming_the_field(tmp_path):
    write(tmp_path / "in" / "a.jsonl", '{"n": 1, "s": "a"}\n')
    write(tmp_path / "in" / "b.jsonl", '{"n": 18446744073709551616, "s": "b"}\n')
    m = dp.write_shards(dp.to_bag(tmp_path / "in", "jsonl"), tmp_path / "out")
    assert m["total_records"] == 1
    (err,) = dp.open(tmp_path / "out").errors()
    assert err["path"].endswith("b.jsonl") and err["error"] == "SchemaMismatchError" and "'n'" in err["message"]


def test_given_schema_refuses_unknown_fields_and_bad_values(tmp_path):
    write(tmp_path / "in" / "a.jsonl", '{"n": 1}\n')
    write(tmp_path / "in" / "b.jsonl", '{"n": 2, "extra": 1}\n')
    write(tmp_path / "in" / "c.jsonl", '{"n": "x"}\n')
    schema = pa.schema([("n", pa.int32())])
    m = dp.write_shards(dp.to_bag(tmp_path / "in", "jsonl"), tmp_path / "out", schema=schema)
    assert m["total_records"] == 1 and m["schema"] == [{"name": "n", "type": "int32", "nullable": True}]
    errs = {e["path"].rsplit("/", 1)[1]: e["message"] for e in dp.open(tmp_path / "out").errors()}
    assert "'extra' is not in the schema" in errs["b.jsonl"]
    assert "'n' (schema type int32)" in errs["c.jsonl"]


def test_non_dict_records_need_pickle(tmp_path):
    bag = db.from_sequence(["a", "b"])
    with pytest.raises(dp.errors.EmptyDatasetError, match="no records"):
        dp.write_shards(bag, tmp_path / "pq", shard_size=5)
    assert not (tmp_path / "pq" / ".manifest.json").exists()
    m = dp.write_shards(bag, tmp_path / "pq", shard_size=5, allow_empty=True)
    assert m["total_records"] == 0 and "must be dicts" in dp.open(tmp_path / "pq").errors()[0]["message"]
    m = dp.write_shards(bag, tmp_path / "pk", shard_size=5, format="pickle")
    assert pickle.load(open(tmp_path / "pk" / "shard-00000.pkl", "rb")) == ["a", "b"]


def test_conversion_errors_reach_errors_jsonl_through_user_map_and_filter(tmp_path):
    paths = make_corpus(tmp_path / "in", n=12)
    write(tmp_path / "in" / "bad.txt", b"\xff\xfe not utf8")
    write(tmp_path / "in" / "bin.txt", b"\x00\x01\x02")
    bag = dp.to_bag(tmp_path / "in", "sentences", partition_size=10_000)
    bag = bag.map(lambda r: {**r, "n": len(r["words"])}).filter(lambda r: r["n"] > 0)
    m = dp.write_shards(bag, tmp_path / "out", shard_size=50)
    errors = dp.open(tmp_path / "out").errors()
    assert [(e["path"].rsplit("/", 1)[1], e["error"]) for e in errors] == [
        ("bad.txt", "UnicodeDecodeError"), ("bin.txt", "BinaryFileError")]
    from dask_prep.ingest.converters import sentences
    assert m["total_records"] == len(serial_records(paths, sentences))


def test_on_error_raise_names_the_file_and_writes_no_manifest(tmp_path):
    make_corpus(tmp_path / "in", n=5)
    write(tmp_path / "in" / "zz.txt", b"\xff")
    with pytest.raises(dp.ConversionError, match=r"zz\.txt: UnicodeDecodeError"):
        dp.write_shards(dp.to_bag(tmp_path / "in", "text", on_error="raise"), tmp_path / "out")
    assert not (tmp_path / "out" / ".manifest.json").exists()


def test_manifest_fields(tmp_path):
    m = dp.write_shards(bag_of_partitions([3]), tmp_path, shard_size=2)
    on_disk = json.loads((tmp_path / ".manifest.json").read_text())
    assert on_disk == m
    assert {"version", "format", "shard_size", "total_records", "shards", "schema", "errors",
            "fingerprint", "created_by", "run"} <= m.keys()
    assert m["shards"][0].keys() == {"file", "records", "bytes", "sha256"}
    assert not (tmp_path / WORK).exists()


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_shard_size(tmp_path, bad):
    with pytest.raises(ValueError, match="shard_size must be a positive integer"):
        dp.write_shards(bag_of_partitions([1]), tmp_path, shard_size=bad)


def test_empty_bag_gives_empty_complete_dataset_only_when_allowed(tmp_path):
    with pytest.raises(dp.errors.EmptyDatasetError):
        dp.write_shards(dp.to_bag(dp.discover([]), "text"), tmp_path)
    m = dp.write_shards(dp.to_bag(dp.discover([]), "text"), tmp_path, allow_empty=True)
    assert m["total_records"] == 0 and m["shards"] == [] and len(dp.open(tmp_path)) == 0


def test_leftovers_merged_during_the_run_give_the_same_bytes(client, tmp_path, monkeypatch):
    """Early merges (while partitions convert) produce what merging at the end does,
    and a schema that widens later (null -> string) makes commit redo them."""
    from dask_prep.write import job as job_mod
    sizes = [7, 13, 9, 11, 5, 17, 8, 12, 6, 10, 14, 9]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    bag = db.from_delayed([delayed(lambda a, n: [{"i": k, "s": None if a < 40 else f"v{k}"}
                                                  for k in range(a, a + n)])(a, n)
                           for a, n in zip(starts, sizes)])
    ready, early = job_mod._EarlyMerges.ready, []

    def counting(self, res, done):
        tasks = ready(self, res, done)
        early.extend(tasks)
        return tasks

    monkeypatch.setattr(job_mod._EarlyMerges, "ready", counting)
    m1 = dp.write_shards(bag, tmp_path / "early", shard_size=10)
    assert early, "no leftovers were merged during the run"
    monkeypatch.setattr(job_mod._EarlyMerges, "ready", lambda self, res, done: [])
    m2 = dp.write_shards(bag, tmp_path / "late", shard_size=10)
    assert [s["sha256"] for s in m1["shards"]] == [s["sha256"] for s in m2["shards"]]
    table = pa.concat_tables(pq.read_table(tmp_path / "early" / s["file"]) for s in m1["shards"])
    assert table.schema.field("s").type == pa.string()
    assert sorted(table.column("i").to_pylist()) == list(range(sum(sizes)))


def test_a_partition_is_converted_and_written_by_one_task(tmp_path):
    """Straight from to_bag, each write task calls its conversion inline: one
    task a partition for the scheduler. After another bag step, Bag's fusion
    also makes one task of the chain, plus an alias under the write's name."""
    from dask_prep.runtime.graph import fused_tasks
    from dask_prep.write.output import OutputDir
    from dask_prep.write.partition import write_partition
    from dask_prep.write.shards import WriteSpec

    def write_tasks(bag, spec):
        return fused_tasks(bag, write_partition, "w", [(i, None) for i in range(bag.npartitions)], spec)
    make_corpus(tmp_path / "in", n=12)
    bag = dp.to_bag([tmp_path / "in"], "sentences", partition_size=8192)
    (tmp_path / "out" / WORK).mkdir(parents=True)
    spec = WriteSpec(OutputDir(str(tmp_path / "out")), "parquet", 50, None, "skip", (bag.name,))
    tasks = write_tasks(bag, spec)
    assert len(tasks) == bag.npartitions > 2
    assert len(tasks[0].dask) == bag.npartitions
    assert len(write_tasks(bag.map(dict), spec)[0].dask) == 2 * bag.npartitions
    with dask.config.set(scheduler="sync"):
        results = dask.compute(*tasks)
    assert sum(r.records for r in results) == len(serial_records(
        list((tmp_path / "in").rglob("*.txt*")), dp.ingest.converters.sentences))


def _spec_converter(path):
    """Records ``base, base+1, ...`` as the file says; then a failure or a string."""
    spec = json.load(open(path))
    for k in range(spec["n"]):
        if k == spec["fail_at"]:
            raise ValueError(f"broken at record {k}")
        yield {"i": "x" if k == spec["clash_at"] else spec["base"] + k}


@settings(max_examples=80, deadline=None)
@example(sources=[(0, "ok", 0)] * 4 + [(17, "clash", 16), (3, "ok", 0)], chunk=2, shard_size=1,
         partition_size=8306, fmt="parquet")  # a clash cut out of a chunk moves the next source's records
@given(sources=st.lists(st.tuples(st.integers(0, 40), st.sampled_from(["ok", "ok", "fail", "clash"]),
                                  st.integers(0, 39)), min_size=1, max_size=12),
       chunk=st.integers(1, 12), shard_size=st.integers(1, 15), partition_size=st.integers(4200, 30_000),
       fmt=st.sampled_from(["parquet", "parquet", "pickle"]))
@pytest.mark.slow  # a real CLI run or several: seconds
def test_a_source_that_fails_or_clashes_part_way_is_cut_out_whole(sources, chunk, shard_size,
                                                                  partition_size, fmt):
    """Records are converted a few at a time as the converter yields them, and
    full shards are written as soon as possible; yet a source that raises, or
    yields a record of another type, after some of its records were converted
    contributes none, and every record of the other sources arrives, in order
    within each shard."""
    from pathlib import Path
    from unittest import mock

    from dask_prep.write import partition as shard
    want, bad = [], set()
    with tempfile.TemporaryDirectory() as tmp, mock.patch.object(shard, "CHUNK", chunk), \
            dask.config.set(scheduler="sync"):
        for j, (n, kind, at) in enumerate(sources):
            if fmt == "pickle" and kind == "clash":
                kind = "ok"  # (a pickle has no schema to clash with)
            fault = kind != "ok" and 0 < at < n  # the first record is always an int
            spec = {"n": n, "base": 1000 * j, "fail_at": at if fault and kind == "fail" else None,
                    "clash_at": at if fault and kind == "clash" else None}
            write(Path(tmp, "in", f"s{j:02d}.json"), json.dumps(spec))
            if fault:
                bad.add(f"s{j:02d}.json")
            else:
                want += range(1000 * j, 1000 * j + n)
        bag = dp.to_bag(dp.discover(f"{tmp}/in", suffixes=[".json"]), _spec_converter,
                        partition_size=partition_size)
        m = dp.write_shards(bag, f"{tmp}/out", shard_size=shard_size, format=fmt, allow_empty=True)
        if fmt == "parquet":
            shards = read_shards(f"{tmp}/out", m)
        else:
            shards = [[r["i"] for r in pickle.load(open(f"{tmp}/out/{s['file']}", "rb"))]
                      for s in m["shards"]]
        errors = [json.loads(line) for line in open(f"{tmp}/out/.errors.jsonl")]
    assert sorted(i for s in shards for i in s) == want  # (full shards come before merged leftovers)
    assert all(s == sorted(s) for s in shards) and m["total_records"] == len(want)
    assert {e["path"].rsplit("/", 1)[1] for e in errors} == bad and len(errors) == len(bad)


def _listed_converter(path):
    spec = json.load(open(path))
    yield from spec["records"]
    if spec["fail"]:
        raise EOFError("truncated")


def test_a_source_cut_out_leaves_no_trace_in_the_schema_and_is_reported_once(tmp_path):
    """A source converted in batches of its own, then failing, must not widen
    the schema for the others; one that clashes and then fails is one error."""
    write(tmp_path / "in" / "a.json", json.dumps({"records": [{"id": "x", "extra": 1.5}] * 1500,
                                                   "fail": True}))
    write(tmp_path / "in" / "b.json", json.dumps({"records": [{"id": 1}, {"id": 2}], "fail": False}))
    write(tmp_path / "in" / "c.json", json.dumps({"records": [{"id": 3}] * 1000 + [{"id": "x"}] * 1000,
                                                   "fail": True}))
    write(tmp_path / "in" / "d.json", json.dumps({"records": [{"id": 4}], "fail": False}))
    bag = dp.to_bag(dp.discover(tmp_path / "in", suffixes=[".json"]), _listed_converter)
    m = dp.write_shards(bag, tmp_path / "out", shard_size=10, max_errors=2)
    assert len(m["shards"]) == 1
    assert pq.read_table(tmp_path / "out" / m["shards"][0]["file"]).to_pylist() == [{"id": 1}, {"id": 2}, {"id": 4}]
    assert [f["name"] for f in m["schema"]] == ["id"] and m["schema"][0]["type"] == "int64"
    assert [(e["path"].rsplit("/", 1)[1], e["error"]) for e in dp.open(tmp_path / "out").errors()] == [
        ("a.json", "EOFError"), ("c.json", "SchemaMismatchError")]


def test_shards_written_before_a_partition_widens_its_schema_are_rewritten(tmp_path):
    write(tmp_path / "in" / "a.jsonl", "".join(json.dumps({"n": i}) + "\n" for i in range(1500)))
    write(tmp_path / "in" / "b.jsonl", json.dumps({"n": 0.5, "tag": "t"}) + "\n")
    bag = dp.to_bag(dp.discover(tmp_path / "in"), "jsonl")
    assert bag.npartitions == 1
    m = dp.write_shards(bag, tmp_path / "out", shard_size=500)
    assert [s["records"] for s in m["shards"]] == [500, 500, 500, 1]
    schemas = {pq.read_schema(tmp_path / "out" / s["file"]) for s in m["shards"]}
    assert len(schemas) == 1
    assert str(schemas.pop()) == str(dp.open(tmp_path / "out").schema)
    assert {f["name"]: f["type"] for f in m["schema"]} == {"n": "double", "tag": "string"}
    assert dp.verify(tmp_path / "out").ok
